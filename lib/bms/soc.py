"""State of charge, remaining energy and state of health (pure logic, integers
only, allocation-free update()).

Coulomb counting is the backbone (bms.cc, Soc's base class): it
loses nothing, every reading is counted with carried remainders.

Three kinds of anchor correct the counted charge:

    full    highest cell >= full_cell_mv with 0 <= current < full_tail_ma
            for full_hold_ms -> 100 %
    empty   lowest cell <= empty_cell_mv (not charging) for
            empty_hold_ms -> 0 %
    OCV     after a rest (bms.cc rest(): no current, confirmed by the cells'
            voltage) of relax_after_charge_ms or relax_after_discharge_ms,
            once per rest period: a 1-state
            Kalman blend. The counted SOC's standard deviation grows with
            charge throughput (1 % gain error) and time (the residual CC
            offset); the OCV SOC's is sigma_v / local slope of the OCV
            table. Gain K = P / (P + R): on LFP's plateau the OCV barely
            moves the SOC, on NMC's slope it is trusted. The correction is
            slewed in at 1 % per minute (never a jump).

Between two trustworthy anchors (full, empty, or an OCV point where the
curve is steep) at least 40 % apart, capacity = counted charge / SOC
difference; full_capacity_mah moves a quarter of the way, at most 5 % per
update. Equivalent full cycles count the discharged charge.

The counted charge is clamped to 0..full capacity: the SOC never leaves
0..100 % and never sticks above it.

Integers stay under 2**30 everywhere in update() (small ints on the ESP32):
capacities up to 2,000,000 mAh.
"""
from array import array

from micropython import const

from bms.afe import WINDOW_MS
from bms.cc import MULDIV_MAX, ChargeCounter, cell_mean, div_round, isqrt, muldiv, muldiv_round
from bms.crc import crc16
from bms.params import (CHEM_LFP, CHEM_LTO, CHEM_NMC, OCV_POINTS, P_EMPTY_CELL_MV, P_EMPTY_HOLD_MS, P_FULL_CELL_MV,
                        P_FULL_HOLD_MS, P_FULL_TAIL_MA, P_RELAX_CHG_MS, P_RELAX_DSG_MS, P_REST_CURRENT_MA)
from bms.ticks import ticks_add, ticks_diff

STATE_SIZE = const(24)
STATE_VERSION = const(1)
MAX_CAPACITY_MAH = const(2000000)
NO_TIME = const(0xFFFF)

# OCV tables (mV per cell at SOC 0, 5, ..., 100 %); LFP and NMC: LibreSolar
DEFAULT_OCV = (
    None,
    (2833, 3132, 3177, 3190, 3213, 3226, 3240, 3252, 3262, 3264, 3265,
     3268, 3271, 3275, 3283, 3296, 3304, 3308, 3309, 3314, 3392),
    (2800, 3588, 3684, 3702, 3726, 3745, 3764, 3787, 3803, 3819, 3838,
     3858, 3883, 3924, 3962, 3993, 4026, 4056, 4089, 4135, 4198),
    (1800, 2050, 2150, 2200, 2230, 2250, 2265, 2275, 2285, 2292, 2300,
     2308, 2317, 2327, 2340, 2355, 2375, 2400, 2440, 2520, 2750),
)

# per chemistry (index = CHEM_*): the OCV voltage uncertainty (mV, incl.
# hysteresis). The full and empty voltages, holds and relax times are the
# parameters' (bms.spec.paramtable's chemistry defaults): configure_values().
_SIGMA_V_MV = (5, 10, 5, 5)
# A chemistry's generic table fits a particular cell only to tens of mV
# (makers differ): trust its OCV that much less than the user's own table.
_SIGMA_V_GENERIC_MV = (20, 15, 25, 20)

_SIG_MAX_DPCT = const(500)  # the SOC's standard deviation is capped at 50 %
_CC_WINDOWS_MAX = const(40)  # a reading stands for at most 10 s of windows
_LEARN_MIN_DPCT = const(400)  # anchors at least 40 % apart
_ANCHOR_SIGMA_DPCT = const(20)  # an OCV point this certain is an anchor
_NONE = const(-1)


class Soc(ChargeCounter):
    def __init__(self, chemistry, cells, capacity_mah, shunt_uohm):
        if not 0 < capacity_mah <= MAX_CAPACITY_MAH:
            raise ValueError("capacity_mah")
        if not 0 < shunt_uohm < 0x4000000:
            raise ValueError("shunt_uohm")
        if chemistry not in (CHEM_LFP, CHEM_NMC, CHEM_LTO):
            raise ValueError("chemistry")
        ChargeCounter.__init__(self, capacity_mah, shunt_uohm)
        self.chemistry = chemistry
        self.cells = cells
        self.rated_capacity_mah = capacity_mah
        self._sigma_v = _SIGMA_V_MV[chemistry]
        self._ocv = array("h", [0] * OCV_POINTS)
        self._cum = array("l", [0] * OCV_POINTS)  # mV x dpct from 0 % to point i
        self.set_ocv_table(None)
        # not configured (no full or empty detection) until configure_values()
        # gives it the parameters: bms.cycle does at once
        self.configure(0, 0, 0, 0, 0, 0, 0, 0)
        self.full_capacity_mah = capacity_mah
        self._set_full(capacity_mah)
        self._pending = 0  # OCV correction still to slew in (mAh)
        self._slew_acc = 0
        self._anchor = _NONE  # SOC (dpct) of the last anchor
        self.learn_count = 0
        self.started_from_state = False
        self._cc_t = 0  # tick of the last counted reading
        self.ocv_soc_dpct = _NONE  # SOC the OCV said at the last correction
        # syncs
        self._full_on = False
        self._full_t = 0
        self._full_synced = False
        self._empty_on = False
        self._empty_t = 0
        self._empty_synced = False
        # results
        self.soc_dpct = 500
        self.remaining_mah = self._q
        self.remaining_dwh = 0
        self.sigma_dpct = _SIG_MAX_DPCT
        self.tte_min = NO_TIME
        self.ttf_min = NO_TIME
        self.current_avg_ma = 0
        self._outputs()

    # -- configuration ----------------------------------------------------

    def set_ocv_table(self, table):
        """21 mV values ascending with SOC 0, 5, ..., 100 % (strictly
        increasing), or None (or all zeros) for the chemistry's default."""
        if table is not None:
            table = tuple(table)
            if len(table) != OCV_POINTS:
                raise ValueError("OCV table needs 21 points")
            zero = True
            for v in table:
                if v:
                    zero = False
            if zero:
                table = None
        generic = table is None
        if generic:
            table = DEFAULT_OCV[self.chemistry]
        prev = 0
        for v in table:
            if not prev < v <= 32767:
                raise ValueError("OCV table must increase strictly (1..32767 mV)")
            prev = v
        self._sigma_v = (_SIGMA_V_GENERIC_MV if generic else _SIGMA_V_MV)[self.chemistry]
        ocv = self._ocv
        cum = self._cum
        i = 0
        while i < OCV_POINTS:
            ocv[i] = table[i]
            i += 1
        cum[0] = 0
        i = 1
        while i < OCV_POINTS:
            cum[i] = cum[i - 1] + (ocv[i - 1] + ocv[i]) * 25  # mV x dpct over 5 %
            i += 1

    def configure_values(self, v):
        """configure() from the parameter values (an array indexed by
        bms.params' P_ indices)."""
        self.configure(v[P_FULL_CELL_MV], v[P_FULL_TAIL_MA], v[P_FULL_HOLD_MS], v[P_EMPTY_CELL_MV],
                       v[P_EMPTY_HOLD_MS], v[P_REST_CURRENT_MA], v[P_RELAX_CHG_MS], v[P_RELAX_DSG_MS])

    def configure(self, full_cell_mv, full_tail_ma, full_hold_ms, empty_cell_mv, empty_hold_ms,
                  rest_current_ma, relax_after_charge_ms, relax_after_discharge_ms):
        self.full_cell_mv = full_cell_mv
        self.full_tail_ma = full_tail_ma
        self.full_hold_ms = full_hold_ms
        self.empty_cell_mv = empty_cell_mv
        self.empty_hold_ms = empty_hold_ms
        self.rest_current_ma = rest_current_ma if rest_current_ma > 0 else 1
        # ticks_diff is good to 2**29 ms (6 days)
        self.relax_chg_ms = relax_after_charge_ms if relax_after_charge_ms < 0x1FFFFFFF else 0x1FFFFFFF
        self.relax_dsg_ms = relax_after_discharge_ms if relax_after_discharge_ms < 0x1FFFFFFF else 0x1FFFFFFF

    def _set_full(self, mah):
        if mah > MULDIV_MAX:
            mah = MULDIV_MAX
        if mah < 1:
            mah = 1
        self.full_capacity_mah = mah
        self.soh_dpct = muldiv_round(mah, 1000, self.rated_capacity_mah)
        self._blh = mah // 1000 if mah >= 2000 else 2  # backlash (mAh)

    # -- OCV table --------------------------------------------------------

    def ocv_to_soc(self, mv):
        """SOC (dpct) of a cell's open-circuit voltage (linear between points)."""
        ocv = self._ocv
        if mv <= ocv[0]:
            return 0
        if mv >= ocv[OCV_POINTS - 1]:
            return 1000
        i = 0
        while ocv[i + 1] <= mv:
            i += 1
        lo = ocv[i]
        return i * 50 + ((mv - lo) * 50 + ((ocv[i + 1] - lo) >> 1)) // (ocv[i + 1] - lo)

    def soc_to_ocv(self, dpct):
        if dpct <= 0:
            return self._ocv[0]
        if dpct >= 1000:
            return self._ocv[OCV_POINTS - 1]
        i = dpct // 50
        f = dpct - i * 50
        lo = self._ocv[i]
        return lo + ((self._ocv[i + 1] - lo) * f + 25) // 50

    def _seg_dv(self, dpct):
        """mV over the 5 % segment holding dpct (>= 1)."""
        i = dpct // 50
        if i > OCV_POINTS - 2:
            i = OCV_POINTS - 2
        if i < 0:
            i = 0
        dv = self._ocv[i + 1] - self._ocv[i]
        return dv if dv > 0 else 1

    def _ocv_sigma_dpct(self, soc_a, soc_b, sigma_mv):
        """Standard deviation (dpct) of an OCV reading around soc_a/soc_b:
        sigma_mv over the flatter of the two local slopes."""
        dv = self._seg_dv(soc_a)
        dv2 = self._seg_dv(soc_b)
        if dv2 < dv:
            dv = dv2
        s = (sigma_mv * 50 + (dv >> 1)) // dv
        return s if s < _SIG_MAX_DPCT else _SIG_MAX_DPCT

    def energy_dwh(self, dpct, full_mah):
        """Energy (0.1 Wh) of the pack from 0 % to dpct on the OCV curve."""
        if dpct <= 0:
            return 0
        if dpct > 1000:
            dpct = 1000
        i = dpct // 50
        f = dpct - i * 50
        ocv = self._ocv
        e = self._cum[i]  # mV x dpct, per cell
        if f:
            lo = ocv[i]
            e += lo * f + ((ocv[i + 1] - lo) * f * f) // 100
        # x cells / 1000 -> mean pack mV x SOC fraction; mAh x mV = uWh
        x = e * self.cells // 1000
        return muldiv(full_mah, x, 100000, 0)

    # -- boot and persistence ---------------------------------------------

    def _parse_state(self, state):
        """(q, full, cycles, offset_dlsb, sig_dpct, learned) or None."""
        if state is None or len(state) < STATE_SIZE:
            return None
        import struct

        if state[0] != STATE_VERSION:
            return None
        crc = state[STATE_SIZE - 2] | (state[STATE_SIZE - 1] << 8)
        if crc16(state, 0, STATE_SIZE - 2) != crc:
            return None
        _, flags, q, full, rated, off, sig, cycles = struct.unpack_from("<BBIIIhHI", state, 0)
        rated_now = self.rated_capacity_mah
        if rated != rated_now or not rated_now * 3 // 10 <= full <= rated_now * 3 // 2:
            # another pack (or capacity setting): keep the SOC fraction only
            if full <= 0 or full > MULDIV_MAX:
                return None
            frac = muldiv_round(q if q <= full else full, 1000, full)
            full = rated_now
            q = muldiv_round(frac, full, 1000)
        if q > full:
            return None
        return q, full, cycles, off, sig, bool(flags & 1)

    def start(self, now_ms, meas, state=None):
        """Boot: from a stored state (bytes from save_state) when its CRC is
        good and its SOC agrees with the cells' OCV (or current flows, so the
        voltage says little); else the SOC from the OCV of the cells (the
        learned capacity, cycles and offset of a good record are kept)."""
        st = self._parse_state(state)
        if st is not None:
            q, full, cycles, off, sig, learned = st
            self._set_full(full)
            self.cycles_dc = cycles
            self.offset_dlsb = off
            self._off256 = off * 16
            self.offset_learned = learned
        full = self.full_capacity_mah
        mv = cell_mean(meas)
        cur = meas.current_ma
        loaded = cur >= self.rest_current_ma or -cur >= self.rest_current_ma
        ocv_soc = self.ocv_to_soc(mv) if mv > 0 else _NONE
        use_state = False
        if st is not None:
            if ocv_soc == _NONE or loaded:
                use_state = True
            else:
                soc = muldiv_round(q, 1000, full)
                tol = 3 * self._sigma_v + 10  # not known to be relaxed
                lo = self.ocv_to_soc(mv - tol) - 30
                hi = self.ocv_to_soc(mv + tol) + 30
                use_state = lo <= soc <= hi
        if use_state:
            self._q = q
            sig_dpct = sig + 10  # + 1 %: time off, self-discharge
        elif ocv_soc != _NONE:
            self._q = muldiv_round(ocv_soc, full, 1000)
            sig_dpct = self._ocv_sigma_dpct(ocv_soc, ocv_soc, 3 * self._sigma_v)
        else:
            self._q = full // 2
            sig_dpct = _SIG_MAX_DPCT
        if sig_dpct > _SIG_MAX_DPCT:
            sig_dpct = _SIG_MAX_DPCT
        self.started_from_state = use_state
        self._sig = muldiv(sig_dpct, full, 1000, 0)
        self._mas = 0
        self._acc = 0
        self._pending = 0
        self._net = 0
        self._anchor = _NONE
        self._thr = 0
        self._tick = 0
        self._i_ma = 0
        self._avg64 = 0
        self._resting = 0
        self._v16 = 0
        self._cc_t = now_ms  # the next reading counts the windows from here
        self._last_dir = 0
        self._full_on = self._full_synced = False
        self._empty_on = self._empty_synced = False
        self._off_settle = 0
        self._ob_n = 0
        self._outputs()

    def sync_full(self):
        """The charge was cut off at the top (over-voltage protection): 100 %."""
        if not self._full_synced:
            self._full_synced = True
            self._anchor_at(1000, self.full_capacity_mah // 200)
            self._hold(self.full_capacity_mah)

    def sync_empty(self):
        """The discharge was cut off (under-voltage protection): 0 %."""
        if not self._empty_synced:
            self._empty_synced = True
            self._anchor_at(0, self.full_capacity_mah // 100)
            self._hold(0)

    def save_state(self, buf):
        """Write the persistent record (STATE_SIZE bytes) into buf; returns
        its length. Layout (little-endian): version u8, flags u8 (bit 0:
        offset learned), charge mAh u32, full capacity mAh u32, rated mAh
        u32, offset 1/16 LSB i16, sigma 0.1 % u16, cycles x 100 u32, CRC-16
        (Modbus) u16."""
        import struct

        sig = muldiv_round(self._sig, 1000, self.full_capacity_mah)
        q = self._q + self._pending
        if q < 0:
            q = 0
        if q > self.full_capacity_mah:
            q = self.full_capacity_mah
        struct.pack_into("<BBIIIhHI", buf, 0, STATE_VERSION, 1 if self.offset_learned else 0,
                         q, self.full_capacity_mah, self.rated_capacity_mah,
                         self.offset_dlsb, sig if sig < 0xFFFF else 0xFFFF, self.cycles_dc)
        crc = crc16(buf, 0, STATE_SIZE - 2)
        buf[STATE_SIZE - 2] = crc & 0xFF
        buf[STATE_SIZE - 1] = crc >> 8
        return STATE_SIZE

    def set_soc(self, dpct):
        """Operator override (e.g. a Modbus write): SOC = dpct, with a large
        uncertainty so the next rested OCV reading corrects it freely."""
        if dpct < 0:
            dpct = 0
        if dpct > 1000:
            dpct = 1000
        full = self.full_capacity_mah
        self._q = muldiv_round(dpct, full, 1000)
        self._mas = 0
        self._acc = 0
        self._pending = 0
        self._anchor = _NONE
        self._sig = muldiv(_SIG_MAX_DPCT, full, 1000, 0)
        self._outputs()

    # -- the control cycle ------------------------------------------------

    def update(self, now_ms, meas, cc_fresh, both_fets_off):
        """Once per control cycle (250 ms); meas.cc_raw is a new coulomb
        counter reading when cc_fresh. Allocation-free."""
        if cc_fresh:
            # A bq769x0 keeps only its newest 250 ms window: when the loop was
            # late (a long Modbus reply, a blocking network call), that one
            # reading stands for every window since (meas.cc_summed: counted once).
            # _cc_t follows the chip's window grid: the newest window ended
            # in (now - 250, now], so whole periods since the last window's
            # end count the windows. _cc_t is never earlier than the true
            # end (it starts at a reading's time and moves to an earlier
            # reading's time when one comes sooner than the grid says), so
            # it settles on the loop's quickest reaction and a late reading
            # neither gains nor loses a window (rounding the time between
            # readings did: a late one after a prompt one counted twice).
            d = ticks_diff(now_ms, self._cc_t)
            n = d // WINDOW_MS
            if n < 1 or n > _CC_WINDOWS_MAX:
                n = 1 if n < 1 else _CC_WINDOWS_MAX
                self._cc_t = now_ms  # sooner than the grid (or lost): the grid starts here
            else:
                self._cc_t = ticks_add(self._cc_t, n * WINDOW_MS)
            self._reading(meas.cc_raw, both_fets_off, n, meas.cc_summed)
        i = self._i_ma
        w = self.rest(now_ms, meas)
        if w:
            self.ocv_count = (self.ocv_count + 1) & 0xFFFF
            self._ocv_correct(self.rested_mv, w)
        # full and empty
        if meas.cells > 0:
            # the tail is the cells' current: at the end of CV the charger
            # also feeds the BMS's own supply, above the shunt (draw_ma); a
            # current the counter cannot tell from its offset is no discharge
            if (meas.cell_max_mv >= self.full_cell_mv and -i < self.rest_ma()
                    and i - self.draw_ma < self.full_tail_ma):
                if not self._full_on:
                    self._full_on = True
                    self._full_t = now_ms
                if self._full_synced:
                    self._hold(self.full_capacity_mah)
                elif ticks_diff(now_ms, self._full_t) >= self.full_hold_ms:
                    self._full_synced = True
                    self._anchor_at(1000, self.full_capacity_mah // 200)
                    self._hold(self.full_capacity_mah)
            else:
                self._full_on = False
                self._full_synced = False
            if meas.cell_min_mv <= self.empty_cell_mv and i < self.rest_current_ma:
                if not self._empty_on:
                    self._empty_on = True
                    self._empty_t = now_ms
                if self._empty_synced:
                    self._hold(0)
                elif ticks_diff(now_ms, self._empty_t) >= self.empty_hold_ms:
                    self._empty_synced = True
                    self._anchor_at(0, self.full_capacity_mah // 100)
                    self._hold(0)
            else:
                self._empty_on = False
                self._empty_synced = False
        # slew a pending OCV correction in
        p = self._pending
        if p:
            # 1 % of the capacity per minute: full / 24000 mAh per update
            s = self._slew_acc + self.full_capacity_mah
            self._slew_acc = s % 24000
            s = s // 24000
            if p > s:
                p = s
            elif p < -s:
                p = -s
            self._pending -= p
            q = self._q + p
            if q < 0:
                q = 0
                self._mas = 0
                self._pending = 0
            elif q >= self.full_capacity_mah and p >= 0:
                q = self.full_capacity_mah
                self._mas = 0
                self._pending = 0
            self._q = q
        self._outputs()

    def _hold(self, q):
        """At an end (full or empty) while its condition lasts."""
        self._q = q
        self._mas = 0
        self._acc = 0
        self._pending = 0
        self._net = 0

    def _anchor_at(self, dpct, sig_mah):
        """A trustworthy SOC point: learn the capacity from the charge
        counted since the previous one, then start counting from here."""
        a = self._anchor
        if a != _NONE:
            ds = dpct - a
            net = self._net
            if ds < 0:
                ds = -ds
                net = -net
            # net and ds of the same sign, 40 % apart, counting uncertainty small
            if ds >= _LEARN_MIN_DPCT and net > 0 and self._sig * 20 <= net:
                if net > MULDIV_MAX:
                    net = MULDIV_MAX
                learned = muldiv_round(net, 1000, ds)
                rated = self.rated_capacity_mah
                if rated * 3 // 10 <= learned <= rated * 3 // 2:
                    full = self.full_capacity_mah
                    step = div_round(learned - full, 4)
                    lim = full // 20
                    if step > lim:
                        step = lim
                    elif step < -lim:
                        step = -lim
                    if step:
                        self._set_full(full + step)
                    self.learn_count += 1
        self._anchor = dpct
        self._net = 0
        self._sig = sig_mah

    def _ocv_correct(self, mv, weight):
        """Once per rest period: blend the counted SOC with the OCV's (weight
        permille, bms.cc rest(): a rest cut short widens the OCV's sigma)."""
        full = self.full_capacity_mah
        q = self._q + self._pending
        if q < 0:
            q = 0
        elif q > full:
            q = full
        prior = muldiv_round(q, 1000, full)
        z = self.ocv_to_soc(mv)
        self.ocv_soc_dpct = z
        so = self._ocv_sigma_dpct(prior, z, (self._sigma_v * 1000 + (weight >> 1)) // weight)
        sc = muldiv_round(self._sig, 1000, full)
        if sc > _SIG_MAX_DPCT:
            sc = _SIG_MAX_DPCT
        if sc < 1:
            sc = 1
        p = sc * sc
        r = so * so
        k = (p * 1000 + ((p + r) >> 1)) // (p + r)  # gain x 1000
        corr = div_round((z - prior) * k, 1000)
        post = isqrt(r * k // 1000)
        if corr:
            if corr > 0:
                dq = muldiv_round(corr, full, 1000)
            else:
                dq = -muldiv_round(-corr, full, 1000)
            self._pending = q + dq - self._q
        if so <= _ANCHOR_SIGMA_DPCT:
            self._anchor_at(z, muldiv(post, full, 1000, 0))
        else:
            self._sig = muldiv(post, full, 1000, 0)

    def _outputs(self):
        full = self.full_capacity_mah
        q = self._q
        self.remaining_mah = q
        soc = muldiv_round(q, 1000, full)
        self.soc_dpct = soc
        self.remaining_dwh = self.energy_dwh(soc, full)
        s = muldiv_round(self._sig, 1000, full)
        self.sigma_dpct = s if s < 1000 else 1000
        a = self._avg64
        avg = (a + 32) >> 6 if a >= 0 else -((-a + 32) >> 6)
        self.current_avg_ma = avg
        m = self.rated_capacity_mah // 1000 if self.rated_capacity_mah >= 1000 else 1
        if avg <= -m:
            t = muldiv(q, 60, -avg, 0)
            self.tte_min = t if t < NO_TIME else NO_TIME - 1
        else:
            self.tte_min = NO_TIME
        if avg >= m:
            t = muldiv(full - q, 60, avg, 0)
            self.ttf_min = t if t < NO_TIME else NO_TIME - 1
        else:
            self.ttf_min = NO_TIME
