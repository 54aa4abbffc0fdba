"""Protection: every diagnosis is one row of a declarative table
(bms.spec.protrules, read here packed: bms.gen.packed).

A row names a measured quantity, how it compares with its thresholds, the
parameters holding the trip threshold, trip delay, release threshold and
release delay, which FETs it switches off, and its level (a warning is
reported and leaves the FETs alone). The engine evaluates every row the
same way each cycle; there is no per-protection code path.

Quantities are filled by the application into `q` (array, one slot per Q_
constant) before `evaluate()`. Flags (sensor and link faults, AFE trips)
are quantities that are 0 or 1.
"""
from array import array

from micropython import const

from bms.crc import crc8
from bms.events import EV_TRIP, EV_RELEASE, EV_LATCH

# Quantities
Q_CELL_MAX_MV = const(0)
Q_CELL_MIN_MV = const(1)
Q_PACK_MV = const(2)
Q_CHG_MA = const(3)  # charge current, 0 when discharging
Q_DSG_MA = const(4)  # discharge current as a positive number, 0 when charging
Q_TEMP_MAX_DC = const(5)  # cell thermistors only
Q_TEMP_MIN_DC = const(6)
Q_FET_TEMP_DC = const(7)
Q_SPREAD_MV = const(8)
Q_AFE_SCD = const(9)
Q_AFE_OCD = const(10)
Q_AFE_OV = const(11)
Q_AFE_UV = const(12)
Q_AFE_COMM = const(13)
Q_AFE_RESET = const(14)
Q_AFE_STALE = const(15)
Q_TEMP_SENSOR = const(16)
Q_CELL_IMPLAUSIBLE = const(17)
Q_UNCONFIGURED = const(18)
Q_AFE_OVRD = const(19)
Q_RESET_LOCKOUT = const(20)  # 1: too many unplanned resets in a row (bms.cycle)
# The SOC, 0.1 %, as the SOC window's rows see it: kept inside 0.1..99.9 %,
# so a limit at 100 % (or 0 %) never trips; UNKNOWN while the SOC is not
# known, and neutral (0 for the high rows, 1000 for the low ones) while the
# rows are not asked for (storage mode off): bms.app fills them.
Q_SOC_HIGH_DPCT = const(21)
Q_SOC_LOW_DPCT = const(22)
Q_STORE_HIGH_DPCT = const(23)
Q_STORE_LOW_DPCT = const(24)
Q_COUNT = const(25)
# A quantity not known yet (the SOC before its first estimate): its rows
# neither trip nor release, so a row kept through a reset holds its FET
UNKNOWN = const(-0x20000000)

# Comparisons
ABOVE = const(0)  # trip at q >= trip, release at q < release
BELOW = const(1)  # trip at q <= trip, release at q > release
ABOVE_H = const(2)  # as ABOVE, release at q < trip - (release param: a hysteresis)
BELOW_H = const(3)  # as BELOW, release at q > trip + hysteresis
FLAG = const(4)  # trip at q != 0, release at q == 0

CHG = const(1)  # the same bits as the AFE's CHG_ON / DSG_ON
DSG = const(2)
BOTH = const(3)

WARN = const(0)
PROT = const(1)

# LED blink codes (bms.led shows them; 0: none)
B_OV = const(1)  # over-voltage
B_UV = const(2)  # under-voltage
B_OC = const(3)  # over-current
B_SC = const(4)  # short circuit
B_T = const(5)  # temperature
B_S = const(6)  # sensor, AFE or wiring

NONE = const(-1)

# The rows themselves: bms.spec.protrules.ROWS (name, quantity, comparison,
# trip, trip delay, release, release delay, fets, level, retries, blink),
# read here packed (bms.gen.packed.PROT_ROWS): the same fields less the name,
# one byte each, NONE as 255.
_RB = const(10)  # bytes per packed row
_QTY = const(0)
_CMP = const(1)
_TRIP = const(2)
_TRIP_DELAY = const(3)
_REL = const(4)
_REL_DELAY = const(5)
_FETS = const(6)
_LEVEL = const(7)
_RETRIES = const(8)
_BLINK = const(9)
_NONE8 = const(255)
ROW_COUNT = const(35)  # at most 63 (the event codes), at most 29 of each level (protect_flags)

# Row indices the application refers to
R_AFE_SCD = const(6)
R_UNCONFIGURED = const(20)

# Event codes: a trip is the row index + 1, its release 64 + that, a latch
# (retries used up) 128 + that. Codes from 200 are the application's.
_RETRY_FORGET_MS = const(600000)
_WAIT_MAX_MS = const(0x10000000)  # the longest release back-off: 2**28 ms (3.1 days), inside the ticks range

_KEPT_MAGIC = const(0xBA)  # a kept() record of this layout (ROW_COUNT rows, the crash)
_KEPT_SIZE = const(9 + 2 * ROW_COUNT)
_IDLE = const(0)
_PENDING = const(1)  # condition met, trip delay running
_ACTIVE = const(2)
_RELEASING = const(3)  # release condition met, release delay running
_LATCHED = const(4)  # retries used up: stays until cleared


class Protection:
    def __init__(self, values, events=None):
        from bms.gen import packed

        self.rows = packed.PROT_ROWS  # ROW_COUNT rows of _RB bytes (bms.spec.protrules)
        self.values = values  # the parameter array (bms.params)
        self.events = events  # object with append(code, value, time_s) or None
        self.q = array("l", [0] * Q_COUNT)
        self.state = bytearray(ROW_COUNT)
        self.since = array("l", [0] * ROW_COUNT)  # tick the pending/releasing phase began
        self.retries = bytearray(ROW_COUNT)
        # Active rows as bits, one word per level: bit n is the level's n-th
        # row in table order (bms.spec.protrules BIT), at most 29 a level, so the
        # words stay small ints on the ESP32 (31-bit): no allocation
        self.protect_flags = 0
        self.warn_flags = 0
        self.block = 0  # FETs held off: CHG | DSG
        self.chg_reason = 0  # row index + 1 of the first protection holding CHG off
        self.dsg_reason = 0
        self.time_s = 0
        # what must survive a reset (kept()): set when a row trips, releases,
        # latches or counts a retry; the app stores it (bms.app) and clears it
        self.changed = False
        self._kept = bytearray(_KEPT_SIZE)
        self.resets = 0  # unplanned resets (crash, watchdog) in a row: kept too (bms.app's lockout)
        self.crash = 0  # the guard's crash report (bms.start): kept for the next boot to log
        self.asleep_s = 0  # board.clock_s() at deep-sleep entry (bms.modes): the boot counts the sleep's draw

    def evaluate(self, now, first=False):
        """One pass over the table. Allocation-free unless an event is logged.
        first: the first pass with real measurements since the MCU started:
        a condition that already holds is active at once, its trip delay
        skipped, so a reset never closes a FET into a fault for that delay."""
        q = self.q
        v = self.values
        state = self.state
        since = self.since
        prot = 0
        warn = 0
        block = 0
        chg_reason = 0
        dsg_reason = 0
        unconfigured = q[Q_UNCONFIGURED]
        t = self.rows
        i = 0
        o = 0  # row i's offset in t
        pb = 1  # the next PROT row's bit
        wb = 1  # the next WARN row's bit
        while i < ROW_COUNT:
            x = q[t[o + _QTY]]
            cmp = t[o + _CMP]
            s = state[i]
            if unconfigured and cmp != FLAG:
                # no pack, no thresholds: only the fault rows mean anything
                state[i] = _IDLE
                if t[o + _LEVEL] == PROT:
                    pb <<= 1
                else:
                    wb <<= 1
                i += 1
                o += _RB
                continue
            if x == UNKNOWN:
                tripping = s >= _ACTIVE  # as it is: no news
                releasing = False
            elif cmp == FLAG:
                tripping = x != 0
                releasing = x == 0
            else:
                lim = v[t[o + _TRIP]]
                rel = v[t[o + _REL]]
                if cmp == ABOVE:
                    tripping = x >= lim
                    releasing = x < rel
                elif cmp == BELOW:
                    tripping = x <= lim
                    releasing = x > rel
                elif cmp == ABOVE_H:
                    tripping = x >= lim
                    releasing = x < lim - rel
                else:
                    tripping = x <= lim
                    releasing = x > lim + rel
            if s == _IDLE or s == _PENDING:
                if tripping:
                    if s == _IDLE:
                        state[i] = s = _PENDING
                        since[i] = now
                    d = t[o + _TRIP_DELAY]
                    if first or d == _NONE8 or _elapsed(now, since[i]) >= v[d]:
                        state[i] = s = _ACTIVE
                        self.changed = True
                        self._log(EV_TRIP + i + 1, x)
                else:
                    if s == _PENDING:
                        state[i] = s = _IDLE
                        since[i] = now
                    elif self.retries[i] and _elapsed(now, since[i]) >= _RETRY_FORGET_MS:
                        self.retries[i] = 0  # a long clean spell: retries start over
                        self.changed = True
            elif s == _ACTIVE or s == _RELEASING:
                if releasing:
                    if s == _ACTIVE:
                        state[i] = s = _RELEASING
                        since[i] = now
                    if self._release_due(i, o, now):
                        r = t[o + _RETRIES]
                        self.changed = True
                        if r != _NONE8 and self.retries[i] >= v[r]:
                            state[i] = s = _LATCHED
                            self._log(EV_LATCH + i + 1, self.retries[i])
                        else:
                            if r != _NONE8:
                                self.retries[i] += 1
                            state[i] = s = _IDLE
                            since[i] = now
                            self._log(EV_RELEASE + i + 1, x)
                else:
                    state[i] = s = _ACTIVE
            # _LATCHED stays until clear_latched(), with both FETs off: the
            # chip senses whether the load is still there only with CHG off
            if s == _LATCHED:
                block |= BOTH
            if t[o + _LEVEL] == PROT:
                if s >= _ACTIVE:
                    prot |= pb
                    f = t[o + _FETS]
                    if f & CHG and not chg_reason:
                        chg_reason = i + 1
                    if f & DSG and not dsg_reason:
                        dsg_reason = i + 1
                    block |= f
                pb <<= 1
            else:
                if s >= _ACTIVE:
                    warn |= wb
                wb <<= 1
            i += 1
            o += _RB
        self.protect_flags = prot
        self.warn_flags = warn
        self.block = block
        self.chg_reason = chg_reason
        self.dsg_reason = dsg_reason

    def _release_due(self, i, o, now):
        t = self.rows
        d = t[o + _REL_DELAY]
        if d == _NONE8:
            return True
        wait = self.values[d]
        if t[o + _RETRIES] != _NONE8:
            wait <<= self.retries[i]  # back-off doubles with every retry
            if wait > _WAIT_MAX_MS:
                wait = _WAIT_MAX_MS  # beyond, the tick difference would wrap and it would never fire
        return _elapsed(now, self.since[i]) >= wait

    def set_soc(self, dpct, storage):
        """The SOC window's and storage's quantities from an SOC estimate
        (0.1 %, or UNKNOWN): kept inside 0.1..99.9 % so a limit at 100 % or
        0 % never trips; storage off, its rows see a neutral SOC and release."""
        q = self.q
        hi = lo = dpct
        if dpct != UNKNOWN:
            if hi > 999:
                hi = 999
            if lo < 1:
                lo = 1
        q[Q_SOC_HIGH_DPCT] = hi
        q[Q_SOC_LOW_DPCT] = lo
        q[Q_STORE_HIGH_DPCT] = hi if storage else 0
        q[Q_STORE_LOW_DPCT] = lo if storage else 1000

    def clear_latched(self, load_removed=False):
        """A host's clear (or the load taken away): latched rows may retry."""
        i = 0
        while i < ROW_COUNT:
            if self.state[i] == _LATCHED:
                self.state[i] = _IDLE
                self.retries[i] = 0
                self.changed = True
                self._log(EV_RELEASE + i + 1, 1 if load_removed else 0)
            i += 1

    def kept(self):
        """The rows' state that must survive a reset, as a record for the
        board's keep(): a magic byte, each row's state (active or latched)
        and retry count, a CRC-8. Allocation-free (one buffer, reused)."""
        k = self._kept
        k[0] = _KEPT_MAGIC
        st = self.state
        i = 0
        while i < ROW_COUNT:
            s = st[i]
            k[1 + i] = _LATCHED if s == _LATCHED else (_ACTIVE if s == _ACTIVE or s == _RELEASING else _IDLE)
            k[1 + ROW_COUNT + i] = self.retries[i]
            i += 1
        a = self.asleep_s
        k[_KEPT_SIZE - 8] = (a >> 24) & 0xFF
        k[_KEPT_SIZE - 7] = (a >> 16) & 0xFF
        k[_KEPT_SIZE - 6] = (a >> 8) & 0xFF
        k[_KEPT_SIZE - 5] = a & 0xFF
        k[_KEPT_SIZE - 4] = self.resets
        k[_KEPT_SIZE - 3] = self.crash >> 8
        k[_KEPT_SIZE - 2] = self.crash & 0xFF
        k[_KEPT_SIZE - 1] = crc8(k, 0, _KEPT_SIZE - 1)
        return k

    def restore(self, data, now):
        """At boot, before the first pass: the rows as kept() left them (a
        record from another firmware or a torn write is ignored). Active
        rows start their release delay again; latched rows stay latched.
        True when a record was taken."""
        if len(data) != _KEPT_SIZE or data[0] != _KEPT_MAGIC or crc8(data, 0, _KEPT_SIZE - 1) != data[-1]:
            return False
        i = 0
        while i < ROW_COUNT:
            s = data[1 + i]
            if s == _LATCHED or s == _ACTIVE:
                self.state[i] = s
                self.since[i] = now
            self.retries[i] = data[1 + ROW_COUNT + i]
            i += 1
        self.asleep_s = ((data[_KEPT_SIZE - 8] << 24) | (data[_KEPT_SIZE - 7] << 16) | (data[_KEPT_SIZE - 6] << 8)
                         | data[_KEPT_SIZE - 5])
        self.resets = data[_KEPT_SIZE - 4]
        self.crash = (data[_KEPT_SIZE - 3] << 8) | data[_KEPT_SIZE - 2]
        return True

    def latched(self):
        """The latched rows, as protect_flags bits (only PROT rows latch)."""
        t = self.rows
        i = 0
        b = 1
        m = 0
        while i < ROW_COUNT:
            if t[i * _RB + _LEVEL] == PROT:
                if self.state[i] == _LATCHED:
                    m |= b
                b <<= 1
            i += 1
        return m

    def level(self, i):
        """Row i's level: PROT or WARN."""
        return self.rows[i * _RB + _LEVEL]

    def blink(self, i):
        """Row i's LED fault code (B_, 0 for none)."""
        return self.rows[i * _RB + _BLINK]

    def _log(self, code, value):
        if self.events is not None:
            self.events.append(code, value, self.time_s)


def _elapsed(now, start):
    # ticks wrap at 2**30 (bms.ticks); inlined to stay allocation-free and fast
    return ((now - start + 0x20000000) & 0x3FFFFFFF) - 0x20000000
