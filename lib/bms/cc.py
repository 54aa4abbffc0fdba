"""The coulomb counter (CC, as the AFE and the firmware call it): counting
for the state-of-charge estimator, and the integer arithmetic the estimator
shares.

ChargeCounter is bms.soc.Soc's base class: the part that turns
coulomb-counter readings and the board's own draw into counted charge,
learns the counter's offset and counts cycles. It loses nothing: every
250 ms reading of the coulomb counter (minus the learned offset, in 1/16
LSB) is added as integer counts and turned into charge with carried
remainders (1/(8 x shunt) mAs -> mAs -> mAh), so no current is too small to
count and no dead band exists (except with both FETs off, when no current
can flow). The anchors, the OCV correction and the outputs are bms.soc's;
the counted charge is clamped to 0..full_capacity_mah, which bms.soc sets.

muldiv() and the helpers beside it keep every product and quotient under
2**30, the ESP32's small ints, so the control cycle allocates nothing (for
capacities up to 2,000,000 mAh). They live here, not in a module of their
own, because every module costs the device heap (docs/ARCHITECTURE.md,
"Heap"): bms.soc imports them from here. The short module name is one the
firmware has interned already (a new name is a runtime qstr, which can
grow the qstr pool at boot).
"""
from micropython import const

MULDIV_MAX = const(0x1FFFFF)  # 2**21 - 1: bound for muldiv's a and c
_NET_MAX = const(0x1FFFFFFF)
_READINGS_PER_HOUR = const(14400)
_EMA_N = const(256)  # averaged current: 1/256 per 250 ms, ~64 s
_EMA_SCALE = const(64)
_OFF_BLOCK = const(64)  # readings per offset block (16 s)
_OFF_SETTLE = const(4)  # fresh readings with both FETs off before learning
_OFF_SPREAD_LSB = const(6)  # max - min within a block: steady, not a load
_OFF_MAX_LSB = const(40)  # a larger mean is no offset
_OFF_ZERO_LSB = const(8)  # FETs off: readings within this are no current


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


class ChargeCounter:
    def __init__(self, capacity_mah, shunt_uohm):
        self.shunt_uohm = shunt_uohm
        self._d = 8 * shunt_uohm  # acc units: 1/(8 x shunt) mAs
        lsb_ma = -(-8440 // shunt_uohm)  # one LSB in mA, rounded up
        self._lsb_ma = lsb_ma
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
        self.offset_blocks = 0

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
            self._grow(self._lsb_ma // 8 + 1 if self.offset_learned else 2 * self._lsb_ma)
        if not c16:
            return
        if summed:
            self._count(total * 16 - self.offset_dlsb * windows if windows > 1 else c16)
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
        d = self._d
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
        if sm > _OFF_MAX_LSB * _OFF_BLOCK or sm < -_OFF_MAX_LSB * _OFF_BLOCK:
            return  # too large for an offset
        m256 = sm * (256 // _OFF_BLOCK)  # block mean in 1/256 LSB
        if self.offset_learned:
            self._off256 += div_round(m256 - self._off256, 4)
        else:
            self._off256 = m256
            self.offset_learned = True
        self.offset_dlsb = div_round(self._off256, 16)
        self.offset_blocks += 1

    def _grow(self, mah):
        s = self._sig + mah
        cap = self.full_capacity_mah >> 1
        self._sig = s if s < cap else cap
