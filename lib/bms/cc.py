"""The coulomb counter (CC, as the AFE and the firmware call it): counting
for the state-of-charge estimator, and the integer arithmetic the estimator
shares.

ChargeCounter is bms.soc.Soc's base class: the part that turns
coulomb-counter readings and the board's own draw into counted charge,
learns the counter's offset and counts cycles. It loses nothing: every
250 ms reading of the coulomb counter (minus the learned offset, in 1/16
LSB) is added as integer counts and turned into charge with carried
remainders (1/(8 x shunt) mAs -> mAs -> mAh). Every reading above the
offset's uncertainty counts: the AFE's datasheet offset (+-3 LSB) until the
offset is learned, half an LSB after. The offset is learned only while both
FETs are off (whatever turned them off: low power, sleep, a protection,
storage), when no current can flow, and never beyond the datasheet's bound;
nothing switches the FETs off to learn it. The anchors, the OCV correction
and the outputs are bms.soc's; the counted charge is clamped to
0..full_capacity_mah, which bms.soc sets.

Rest (rest()): the current under max(5 mA, C/1000, the offset's uncertainty
+ 3 LSB) and the cells' mean voltage relaxed, drifting less than 2 mV
over 5 minutes. A steady small load is no rest, however flat the OCV curve
makes its voltage.

muldiv() and the helpers beside it keep every product and quotient under
2**30, the ESP32's small ints, so the control cycle allocates nothing (for
capacities up to 2,000,000 mAh). They live here, not in a module of their
own, because every module costs the device heap (docs/ARCHITECTURE.md,
"Heap"): bms.soc imports them from here. The short module name is one the
firmware has interned already (a new name is a runtime qstr, which can
grow the qstr pool at boot).
"""
from micropython import const

from bms.ticks import ticks_diff

MULDIV_MAX = const(0x1FFFFF)  # 2**21 - 1: bound for muldiv's a and c
_NET_MAX = const(0x1FFFFFFF)
_READINGS_PER_HOUR = const(14400)
_EMA_N = const(256)  # averaged current: 1/256 per 250 ms, ~64 s
_EMA_SCALE = const(64)
_OFF_BLOCK = const(64)  # readings per offset block (16 s)
_OFF_SETTLE = const(4)  # fresh readings with both FETs off before learning
_OFF_SPREAD_LSB = const(6)  # max - min within a block: steady, not a load
_OFF_MAX_LSB = const(3)  # bq769x0 datasheet: offset +-3 LSB max (+-1 typical)
_OFF_ZERO_LSB = const(8)  # FETs off: readings within this are no current
_UNC_LEARNED = const(8)  # 1/16 LSB: a learned offset is good to half an LSB
_REST_MIN_MA = const(5)
_RELAX_WIN_MS = const(300000)  # the voltage drift window of a rest
_RELAX_D16 = const(32)  # 2 mV (x16): a smaller drift over the window is relaxed
_NOT_RESTING = const(0)
_LOW_CURRENT = const(1)  # the current is under the rest threshold
_RESTED = const(2)  # and the voltage confirmed it
_CORRECTED = const(3)  # and the OCV has corrected the SOC (once per rest)


def muldiv(a, b, c, rnd):
    """(a * b + rnd) // c without intermediates >= 2**30 (rnd 0: floor,
    c >> 1: rounded): 0 <= a <= MULDIV_MAX, 0 <= b < 2**30,
    0 < c <= MULDIV_MAX, result < 2**30."""
    q = 0
    r = 0
    s = 24
    while s >= 0:
        t = (r << 8) + a * ((b >> s) & 255)
        if not s:
            t += rnd
        q = (q << 8) + t // c
        r = t % c
        s -= 8
    return q


def muldiv_round(a, b, c):
    return muldiv(a, b, c, c >> 1)


def div_round(n, d):
    if n >= 0:
        return (n + (d >> 1)) // d
    return -((-n + (d >> 1)) // d)


def isqrt(n):
    if n <= 0:
        return 0
    x = n
    y = (x + 1) >> 1
    while y < x:
        x = y
        y = (x + n // x) >> 1
    return x


def cell_mean(meas):
    """The mean of the cells' voltages (mV), 0 without cells."""
    n = meas.cells
    if n <= 0:
        return 0
    v = meas.cell_mv
    s = 0
    i = 0
    while i < n:
        s += v[i]
        i += 1
    return (s + (n >> 1)) // n


class ChargeCounter:
    def __init__(self, capacity_mah, shunt_uohm):
        self.shunt_uohm = shunt_uohm  # acc units: 1/(8 x shunt) mAs
        # learned / persistent
        self.cycles_dc = 0
        self.offset_dlsb = 0
        self.offset_learned = False
        self._off256 = 0
        # counted charge: q mAh + mas mAs + acc / (8 shunt) mAs
        self._q = capacity_mah // 2
        self._mas = 0
        self._acc = 0
        self._sig = capacity_mah // 2  # standard deviation of q (mAh)
        self._thr = 0  # throughput mAh towards the next 1 % sigma step
        self._tick = 0  # readings towards the next hour
        self._pos = 0  # backlash position 0.._blh (throughput without noise)
        self._dsg100 = 0  # discharged mAh x 100 towards the next 0.01 cycle
        self._net = 0  # counted mAh since the last anchor
        # the BMS's own draw (draw()): it never passes the shunt
        self._draw_uams = 0  # uA ms towards the next uA s
        self._draw_uas = 0  # uA s towards the next mA s
        self.drawn_mah = 0  # counted since this estimator started
        self.draw_ma = 0  # the board's draw now, mA (bms.app sets it while it is counted)
        self._drawn_mas = 0
        # currents
        self._i_ma = 0
        self._avg64 = 0
        # offset learning
        self._off_settle = 0
        self._ob_n = 0
        self._ob_sum = 0
        self._ob_min = 0
        self._ob_max = 0
        # rest (rest()): _NOT_RESTING, _LOW_CURRENT, _RESTED, _CORRECTED
        self._resting = _NOT_RESTING
        self._rest_t = 0
        self._last_dir = 0  # +1 charge, -1 discharge, 0 unknown
        self._v16 = 0  # the cells' mean voltage, averaged (1/16 mV)
        self._v_ref16 = 0  # ... at the start of the drift window
        self._v_t = 0
        self.rested_mv = 0  # the voltage of the last rest that may correct (rest())
        self.rest_count = 0  # rests the voltage confirmed
        self.ocv_count = 0  # OCV corrections (bms.soc)

    def charge_mas(self):
        """The counted charge in whole mAs (diagnostics, tests; may be a big
        int under MicroPython: not for the control loop)."""
        return self._q * 3600 + self._mas

    def _reading(self, raw, fets_off, windows=1, summed=0):
        """One coulomb-counter reading, standing for `windows` 250 ms
        windows (summed: the sum of theirs, bms.afe): offset learning and counting."""
        total = raw
        if summed:
            raw //= windows  # one window's, for the current and the offset
        c16 = raw * 16 - self.offset_dlsb
        u = self.offset_unc16()
        if -u <= c16 <= u:
            c16 = 0  # within the offset's uncertainty: not a current
        if fets_off:
            # no current can flow: a steady reading is the offset
            if self._off_settle < _OFF_SETTLE:
                self._off_settle += 1
                self._ob_n = 0
            else:
                self._offset_sample(raw)
                if -_OFF_ZERO_LSB * 16 <= c16 <= _OFF_ZERO_LSB * 16:
                    c16 = 0  # counted as nothing: it cannot be current
        else:
            self._off_settle = 0
            self._ob_n = 0
        shunt = self.shunt_uohm
        if c16 >= 0:
            self._i_ma = (c16 * 1055 + shunt) // (2 * shunt)
        else:
            self._i_ma = -((-c16 * 1055 + shunt) // (2 * shunt))
        # averaged current (for TTE/TTF)
        im = self._i_ma
        if im > MULDIV_MAX:
            im = MULDIV_MAX
        elif im < -MULDIV_MAX:
            im = -MULDIV_MAX
        self._avg64 += div_round(im * _EMA_SCALE - self._avg64, _EMA_N)
        # time: the residual offset's uncertainty grows the SOC's
        self._tick += windows
        if self._tick >= _READINGS_PER_HOUR:
            self._tick -= _READINGS_PER_HOUR
            lsb_ma = -(-8440 // self.shunt_uohm)  # one LSB in mA, rounded up
            self._grow(lsb_ma // 8 + 1 if self.offset_learned else 2 * lsb_ma)
        if not c16:
            return
        if summed:
            # the sum of `windows` windows, counted a window's share at a time,
            # as below: the whole sum x 1055 could pass 2**30 (a late cycle at
            # a high current) and allocate
            t = total * 16 - self.offset_dlsb * windows
            while windows:
                part = t // windows
                t -= part
                windows -= 1
                self._count(part)
            return
        while windows:  # one window at a time: c16 * 1055 * windows could pass 2**30
            windows -= 1
            self._count(c16)

    def draw(self, ua, ms):
        """The BMS board drew ua for ms (its own supply, from the pack, never
        through the shunt): counted against the charge. Allocation-free for
        any interval the loop makes (ms up to an hour at 120 mA)."""
        s = ms // 1000
        r = self._draw_uams + ua * (ms - s * 1000)
        k = r // 1000
        self._draw_uams = r - k * 1000
        self.draw_s(ua, s, k)

    def draw_s(self, ua, seconds, extra_uas=0):
        """As draw(), over whole seconds (a deep sleep: boot-time only, may
        allocate for a sleep of years)."""
        u = self._draw_uas + ua * seconds + extra_uas
        m = u // 1000
        if not m:
            self._draw_uas = u
            return
        self._draw_uas = u - m * 1000
        d = self._drawn_mas + m
        if d >= 3600:
            h = d // 3600
            self.drawn_mah += h
            d -= h * 3600
        self._drawn_mas = d
        mas = self._mas - m
        if mas < 0:
            dq = mas // 3600  # negative: floor division borrows whole mAh
            self._mas = mas - dq * 3600
            self._carry(dq)
        else:
            self._mas = mas

    def _count(self, c16):
        """One window's reading (1/16 LSB, offset removed), counted with carried remainders."""
        acc = self._acc + c16 * 1055
        d = 8 * self.shunt_uohm
        if acc >= d or acc < 0:
            m = acc // d
            acc -= m * d
            mas = self._mas + m
            self._acc = acc
            if mas >= 3600 or mas < 0:
                dq = mas // 3600
                self._mas = mas - dq * 3600
                self._carry(dq)
            else:
                self._mas = mas
        else:
            self._acc = acc

    def _carry(self, dq):
        """dq whole mAh counted (signed)."""
        q = self._q + dq
        full = self.full_capacity_mah
        # clamp the whole mAh only: the remainders (always 0 <= r < one
        # unit) stay, or every negative reading at empty would count as a
        # whole mAh and the charge between anchors would be overstated
        if q < 0:
            q = 0
        elif q >= full:
            q = full
        self._q = q
        net = self._net + dq
        if net > _NET_MAX:
            net = _NET_MAX
        elif net < -_NET_MAX:
            net = -_NET_MAX
        self._net = net
        # throughput with a backlash: noise around a mAh boundary is no charge
        pos = self._pos + dq
        moved = 0
        if pos > self._blh:
            moved = pos - self._blh
            pos = self._blh
        elif pos < 0:
            moved = -pos
            pos = 0
            d100 = self._dsg100 + moved * 100
            if d100 >= full:
                n = d100 // full
                self.cycles_dc += n
                d100 -= n * full
            self._dsg100 = d100
        self._pos = pos
        if moved:
            t = self._thr + moved
            if t >= 100:
                n = t // 100
                t -= n * 100
                self._grow(n)
            self._thr = t

    def _offset_sample(self, raw):
        """Both FETs off and settled: blocks of readings that are steady
        and small enough to be an offset feed a slow average."""
        n = self._ob_n
        if n == 0:
            self._ob_sum = 0
            self._ob_min = raw
            self._ob_max = raw
        elif raw < self._ob_min:
            self._ob_min = raw
        elif raw > self._ob_max:
            self._ob_max = raw
        self._ob_sum += raw
        n += 1
        if n < _OFF_BLOCK:
            self._ob_n = n
            return
        self._ob_n = 0
        sm = self._ob_sum
        if self._ob_max - self._ob_min > _OFF_SPREAD_LSB:
            return  # not steady: something moves
        if sm > 2 * _OFF_MAX_LSB * _OFF_BLOCK or sm < -2 * _OFF_MAX_LSB * _OFF_BLOCK:
            return  # far beyond the datasheet's offset: something flows
        m256 = sm * (256 // _OFF_BLOCK)  # block mean in 1/256 LSB
        if self.offset_learned:
            m256 = self._off256 + div_round(m256 - self._off256, 4)
        self.offset_learned = True
        # bounded by the datasheet: no reading can make a larger offset
        if m256 > _OFF_MAX_LSB * 256:
            m256 = _OFF_MAX_LSB * 256
        elif m256 < -_OFF_MAX_LSB * 256:
            m256 = -_OFF_MAX_LSB * 256
        self._off256 = m256
        self.offset_dlsb = div_round(m256, 16)

    def offset_unc16(self):
        """The offset's uncertainty (1/16 LSB): a reading within it may be
        no current at all."""
        return _UNC_LEARNED if self.offset_learned else _OFF_MAX_LSB * 16

    def rest_ma(self):
        """The current under which the pack may be at rest: a few mA, C/1000,
        or what the counter cannot tell from its offset (its uncertainty and
        3 LSB of a reading's noise), the largest."""
        u = ((self.offset_unc16() + 48) * 1055 + self.shunt_uohm) // (2 * self.shunt_uohm)
        c = self.full_capacity_mah // 1000
        if c < _REST_MIN_MA:
            c = _REST_MIN_MA
        return u if u > c else c

    def rest(self, now_ms, meas):
        """Once per cycle: the rest state. Returns 0, or the weight
        (permille) with which the OCV may correct the SOC, once per rest
        period, at rested_mv (the cells' mean, averaged over ~4 s):

        1000  the pack has rested relax_chg_ms after a charge, relax_dsg_ms
              after a discharge (bms.soc's), with the current under
              rest_ma() and its cells' voltage relaxed (drift under 2 mV
              over 5 minutes);
        <1000 the load came back within the last drift window (5 minutes)
              before that, the voltage already confirmed relaxed: the rest
              is judged a window at a time, so a rest a second short of its
              relax time is not worth nothing. The weight is elapsed /
              needed (bms.soc widens the OCV's uncertainty by its inverse),
              and the voltage is the one before the load came back."""
        v0 = self._v16
        v = v0
        if meas.cells > 0:
            mv16 = cell_mean(meas) * 16
            # averaged over ~4 s: the cells' noise is not drift
            v = mv16 if v <= 0 else v + div_round(mv16 - v, 16)
            self._v16 = v
        i = self._i_ma
        thr = self.rest_ma()
        st = self._resting
        if i >= thr or -i >= thr:
            self._resting = _NOT_RESTING
            w = 0
            if st == _RESTED:
                need = self._relax_need()
                el = ticks_diff(now_ms, self._rest_t)
                if need > 0 and el + _RELAX_WIN_MS >= need:
                    # the voltage before this reading: this one is loaded
                    self.rested_mv = div_round(v0, 16)
                    n = need // 1000  # in s: muldiv's bound
                    w = 1000 if el >= need or n < 1 else muldiv(el // 1000, 1000, n, 0)
            self._last_dir = 1 if i > 0 else -1
            return w
        if st == _CORRECTED:
            return 0
        if st == _NOT_RESTING:
            self._resting = _LOW_CURRENT
            self._rest_t = now_ms
            self._v_t = now_ms
            self._v_ref16 = v
            return 0
        if ticks_diff(now_ms, self._v_t) < _RELAX_WIN_MS:
            return 0
        d = v - self._v_ref16
        self._v_ref16 = v
        self._v_t = now_ms
        if d > _RELAX_D16 or d < -_RELAX_D16 or meas.cells <= 0:
            return 0  # still relaxing
        if st == _LOW_CURRENT:
            self._resting = _RESTED
            self.rest_count = (self.rest_count + 1) & 0xFFFF
        if ticks_diff(now_ms, self._rest_t) < self._relax_need():
            return 0
        self._resting = _CORRECTED
        self.rested_mv = div_round(v, 16)
        return 1000

    def _relax_need(self):
        """The relax time of this rest: after the last charge or discharge."""
        d = self._last_dir
        if d > 0:
            return self.relax_chg_ms
        if d < 0:
            return self.relax_dsg_ms
        return self.relax_chg_ms if self.relax_chg_ms > self.relax_dsg_ms else self.relax_dsg_ms

    def resting(self):
        """The pack is at rest: no current, and the voltage confirmed it."""
        return self._resting >= _RESTED

    def _grow(self, mah):
        s = self._sig + mah
        cap = self.full_capacity_mah >> 1
        self._sig = s if s < cap else cap
