"""Protection: every diagnosis is one row of a declarative table.

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

from bms import params as P

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
Q_COUNT = const(20)

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

# Row: (name, quantity, comparison, trip, trip delay, release, release delay, fets, level, retries,
#       blink)
# trip/delay/release/retries are parameter indices (bms.params), NONE for none;
# blink: the LED bar's fault code while the row holds a FET off (docs/LED.md).
# fmt: off
ROWS = (
    ("cell_ov", Q_CELL_MAX_MV, ABOVE, P.P_CELL_OV_MV, P.P_CELL_OV_DELAY_MS, P.P_CELL_OV_RELEASE_MV, P.P_CELL_OV_RELEASE_MS, CHG, PROT, NONE, B_OV),
    ("cell_uv", Q_CELL_MIN_MV, BELOW, P.P_CELL_UV_MV, P.P_CELL_UV_DELAY_MS, P.P_CELL_UV_RELEASE_MV, P.P_CELL_UV_RELEASE_MS, DSG, PROT, NONE, B_UV),
    ("pack_ov", Q_PACK_MV, ABOVE, P.P_PACK_OV_MV, P.P_PACK_OV_DELAY_MS, P.P_PACK_OV_RELEASE_MV, P.P_PACK_OV_RELEASE_MS, CHG, PROT, NONE, B_OV),
    ("pack_uv", Q_PACK_MV, BELOW, P.P_PACK_UV_MV, P.P_PACK_UV_DELAY_MS, P.P_PACK_UV_RELEASE_MV, P.P_PACK_UV_RELEASE_MS, DSG, PROT, NONE, B_UV),
    ("chg_oc", Q_CHG_MA, ABOVE, P.P_CHG_OC_MA, P.P_CHG_OC_DELAY_MS, P.P_CHG_OC_MA, P.P_CHG_OC_RELEASE_MS, CHG, PROT, NONE, B_OC),
    ("dsg_oc", Q_DSG_MA, ABOVE, P.P_DSG_OC_MA, P.P_DSG_OC_DELAY_MS, P.P_DSG_OC_MA, P.P_DSG_OC_RELEASE_MS, DSG, PROT, NONE, B_OC),
    ("afe_scd", Q_AFE_SCD, FLAG, NONE, NONE, NONE, P.P_SCD_RETRY_MS, DSG, PROT, P.P_SCD_RETRIES, B_SC),
    ("afe_ocd", Q_AFE_OCD, FLAG, NONE, NONE, NONE, P.P_DSG_OC_RELEASE_MS, DSG, PROT, NONE, B_OC),
    ("afe_ov", Q_AFE_OV, FLAG, NONE, NONE, NONE, P.P_CELL_OV_RELEASE_MS, CHG, PROT, NONE, B_OV),
    ("afe_uv", Q_AFE_UV, FLAG, NONE, NONE, NONE, P.P_CELL_UV_RELEASE_MS, DSG, PROT, NONE, B_UV),
    ("chg_ot", Q_TEMP_MAX_DC, ABOVE, P.P_CHG_OT_DC, P.P_TEMP_DELAY_MS, P.P_CHG_OT_RELEASE_DC, P.P_TEMP_RELEASE_MS, CHG, PROT, NONE, B_T),
    ("chg_ut", Q_TEMP_MIN_DC, BELOW, P.P_CHG_UT_DC, P.P_TEMP_DELAY_MS, P.P_CHG_UT_RELEASE_DC, P.P_TEMP_RELEASE_MS, CHG, PROT, NONE, B_T),
    ("dsg_ot", Q_TEMP_MAX_DC, ABOVE, P.P_DSG_OT_DC, P.P_TEMP_DELAY_MS, P.P_DSG_OT_RELEASE_DC, P.P_TEMP_RELEASE_MS, DSG, PROT, NONE, B_T),
    ("dsg_ut", Q_TEMP_MIN_DC, BELOW, P.P_DSG_UT_DC, P.P_TEMP_DELAY_MS, P.P_DSG_UT_RELEASE_DC, P.P_TEMP_RELEASE_MS, DSG, PROT, NONE, B_T),
    ("fet_ot", Q_FET_TEMP_DC, ABOVE, P.P_FET_OT_DC, P.P_TEMP_DELAY_MS, P.P_FET_OT_RELEASE_DC, P.P_TEMP_RELEASE_MS, BOTH, PROT, NONE, B_T),
    ("afe_comm", Q_AFE_COMM, FLAG, NONE, NONE, NONE, P.P_FAULT_RELEASE_MS, BOTH, PROT, NONE, B_S),
    ("afe_reset", Q_AFE_RESET, FLAG, NONE, NONE, NONE, P.P_FAULT_RELEASE_MS, BOTH, PROT, NONE, B_S),
    ("afe_stale", Q_AFE_STALE, FLAG, NONE, NONE, NONE, P.P_FAULT_RELEASE_MS, BOTH, PROT, NONE, B_S),
    ("temp_sensor", Q_TEMP_SENSOR, FLAG, NONE, NONE, NONE, P.P_FAULT_RELEASE_MS, BOTH, PROT, NONE, B_S),
    ("cell_implausible", Q_CELL_IMPLAUSIBLE, FLAG, NONE, NONE, NONE, P.P_FAULT_RELEASE_MS, BOTH, PROT, NONE, B_S),
    ("unconfigured", Q_UNCONFIGURED, FLAG, NONE, NONE, NONE, NONE, BOTH, PROT, NONE, 0),
    ("afe_ovrd", Q_AFE_OVRD, FLAG, NONE, NONE, NONE, P.P_FAULT_RELEASE_MS, BOTH, PROT, NONE, B_S),
    ("cell_ov_warn", Q_CELL_MAX_MV, ABOVE_H, P.P_CELL_OV_WARN_MV, P.P_WARN_DELAY_MS, P.P_WARN_HYST_MV, NONE, 0, WARN, NONE, 0),
    ("cell_uv_warn", Q_CELL_MIN_MV, BELOW_H, P.P_CELL_UV_WARN_MV, P.P_WARN_DELAY_MS, P.P_WARN_HYST_MV, NONE, 0, WARN, NONE, 0),
    ("chg_oc_warn", Q_CHG_MA, ABOVE_H, P.P_CHG_OC_WARN_MA, P.P_WARN_DELAY_MS, P.P_WARN_HYST_MA, NONE, 0, WARN, NONE, 0),
    ("dsg_oc_warn", Q_DSG_MA, ABOVE_H, P.P_DSG_OC_WARN_MA, P.P_WARN_DELAY_MS, P.P_WARN_HYST_MA, NONE, 0, WARN, NONE, 0),
    ("temp_high_warn", Q_TEMP_MAX_DC, ABOVE_H, P.P_TEMP_HIGH_WARN_DC, P.P_WARN_DELAY_MS, P.P_WARN_HYST_DC, NONE, 0, WARN, NONE, 0),
    ("temp_low_warn", Q_TEMP_MIN_DC, BELOW_H, P.P_TEMP_LOW_WARN_DC, P.P_WARN_DELAY_MS, P.P_WARN_HYST_DC, NONE, 0, WARN, NONE, 0),
    ("spread_warn", Q_SPREAD_MV, ABOVE_H, P.P_SPREAD_WARN_MV, P.P_WARN_DELAY_MS, P.P_WARN_HYST_MV, NONE, 0, WARN, NONE, 0),
)
# fmt: on
ROW_COUNT = const(29)  # at most 30: flags stay small ints on the ESP32 (31-bit)

# Row indices the application refers to
R_AFE_SCD = const(6)
R_UNCONFIGURED = const(20)

# Event codes: a trip is the row index + 1, its release 64 + that, a latch
# (retries used up) 128 + that. Codes from 200 are the application's.
EV_TRIP = const(0)
EV_RELEASE = const(64)
EV_LATCH = const(128)
_RETRY_FORGET_MS = const(600000)

_IDLE = const(0)
_PENDING = const(1)  # condition met, trip delay running
_ACTIVE = const(2)
_RELEASING = const(3)  # release condition met, release delay running
_LATCHED = const(4)  # retries used up: stays until cleared


class Protection:
    def __init__(self, values, events=None):
        self.values = values  # the parameter array (bms.params)
        self.events = events  # object with append(code, value, time_s) or None
        self.q = array("l", [0] * Q_COUNT)
        self.state = bytearray(ROW_COUNT)
        self.since = array("l", [0] * ROW_COUNT)  # tick the pending/releasing phase began
        self.retries = bytearray(ROW_COUNT)
        self.protect_flags = 0  # rows of level PROT active (bit = row index)
        self.warn_flags = 0
        self.block = 0  # FETs held off: CHG | DSG
        self.chg_reason = 0  # row index + 1 of the first protection holding CHG off
        self.dsg_reason = 0
        self.time_s = 0

    def evaluate(self, now):
        """One pass over the table. Allocation-free unless an event is logged."""
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
        i = 0
        for row in ROWS:
            x = q[row[1]]
            cmp = row[2]
            s = state[i]
            if unconfigured and cmp != FLAG:
                # no pack, no thresholds: only the fault rows mean anything
                state[i] = _IDLE
                i += 1
                continue
            if cmp == FLAG:
                tripping = x != 0
                releasing = x == 0
            else:
                t = v[row[3]]
                if cmp == ABOVE:
                    tripping = x >= t
                    releasing = x < v[row[5]]
                elif cmp == BELOW:
                    tripping = x <= t
                    releasing = x > v[row[5]]
                elif cmp == ABOVE_H:
                    tripping = x >= t
                    releasing = x < t - v[row[5]]
                else:
                    tripping = x <= t
                    releasing = x > t + v[row[5]]
            if s == _IDLE or s == _PENDING:
                if tripping:
                    if s == _IDLE:
                        state[i] = s = _PENDING
                        since[i] = now
                    d = row[4]
                    if d == NONE or _elapsed(now, since[i]) >= v[d]:
                        state[i] = s = _ACTIVE
                        self._log(EV_TRIP + i + 1, x)
                else:
                    if s == _PENDING:
                        state[i] = s = _IDLE
                        since[i] = now
                    elif self.retries[i] and _elapsed(now, since[i]) >= _RETRY_FORGET_MS:
                        self.retries[i] = 0  # a long clean spell: retries start over
            elif s == _ACTIVE or s == _RELEASING:
                if releasing:
                    if s == _ACTIVE:
                        state[i] = s = _RELEASING
                        since[i] = now
                    if self._release_due(i, row, now):
                        r = row[9]
                        if r != NONE and self.retries[i] >= v[r]:
                            state[i] = s = _LATCHED
                            self._log(EV_LATCH + i + 1, self.retries[i])
                        else:
                            if r != NONE:
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
            if s >= _ACTIVE:
                if row[8] == PROT:
                    prot |= 1 << i
                    f = row[7]
                    if f & CHG and not chg_reason:
                        chg_reason = i + 1
                    if f & DSG and not dsg_reason:
                        dsg_reason = i + 1
                    block |= f
                else:
                    warn |= 1 << i
            i += 1
        self.protect_flags = prot
        self.warn_flags = warn
        self.block = block
        self.chg_reason = chg_reason
        self.dsg_reason = dsg_reason

    def _release_due(self, i, row, now):
        d = row[6]
        if d == NONE:
            return True
        wait = self.values[d]
        if row[9] != NONE:
            wait <<= self.retries[i]  # back-off doubles with every retry
        return _elapsed(now, self.since[i]) >= wait

    def clear_latched(self, load_removed=False):
        """A host's clear (or the load taken away): latched rows may retry."""
        i = 0
        while i < ROW_COUNT:
            if self.state[i] == _LATCHED:
                self.state[i] = _IDLE
                self.retries[i] = 0
                self._log(EV_RELEASE + i + 1, 1 if load_removed else 0)
            i += 1

    def latched(self):
        i = 0
        m = 0
        while i < ROW_COUNT:
            if self.state[i] == _LATCHED:
                m |= 1 << i
            i += 1
        return m

    def _log(self, code, value):
        if self.events is not None:
            self.events.append(code, value, self.time_s)


def _elapsed(now, start):
    # ticks wrap at 2**30 (bms.ticks); inlined to stay allocation-free and fast
    return ((now - start + 0x20000000) & 0x3FFFFFFF) - 0x20000000
