"""The simulated board's supply current and the charge it draws.

Every simulated ms is "awake", "light_sleep" or "deep_sleep", at an
estimated board current (MCU + network + AFE, the figures below);
PowerMeter.energy() sums them per state and average_ma() averages a
window of simulated time. The same current drains the pack: the board
model sets world.bms_ma = board_draw_ma(...) at every advance (the World
takes it from the cells, not through the shunt).

Estimated currents (mA, from the reference board's figures in bms.boards,
DRAW_*_UA, which the firmware counts against its SOC too):
    MA_AWAKE       40     ESP32 running, radio off (modem-sleep at 160 MHz,
                          27-44 mA) plus the RS485 transceiver (~0.5 mA)
    MA_NETWORK     +80    Wi-Fi on, averaged
    MA_LIGHT_SLEEP 0.8    ESP32 light sleep
    MA_DEEP_SLEEP  0.01   ESP32 deep sleep, RTC timer and memory on
    MA_AFE_NORMAL  0.04   bq769x0 NORMAL mode
    MA_AFE_SHIP    0.001  bq769x0 SHIP mode
"""
from bms.boards import (DRAW_AFE_SHIP_UA, DRAW_AFE_UA, DRAW_AWAKE_UA, DRAW_DEEP_SLEEP_UA, DRAW_LIGHT_SLEEP_UA,
                        DRAW_NETWORK_UA)

# Estimated supply currents in mA, per part and state: the reference
# board's figures (bms.boards DRAW_*_UA, their sources there).
MA_AWAKE = DRAW_AWAKE_UA / 1000.0
MA_NETWORK = DRAW_NETWORK_UA / 1000.0
MA_LIGHT_SLEEP = DRAW_LIGHT_SLEEP_UA / 1000.0
MA_DEEP_SLEEP = DRAW_DEEP_SLEEP_UA / 1000.0
MA_AFE_NORMAL = DRAW_AFE_UA / 1000.0
MA_AFE_SHIP = DRAW_AFE_SHIP_UA / 1000.0
MCU_MA = {"awake": MA_AWAKE, "light_sleep": MA_LIGHT_SLEEP, "deep_sleep": MA_DEEP_SLEEP}
POWER_STATES = ("awake", "light_sleep", "deep_sleep")
# at most this many (start, end, state, mA) segments are kept for
# average_ma(); beyond it the oldest are merged pairwise
SEGMENTS_MAX = 20000


def board_draw_ma(state, network_on, afe_shipped):
    """The board's estimated supply current (mA) in an MCU power state
    ("awake", "light_sleep", "deep_sleep"): the MCU, the network module
    while awake, the AFE (NORMAL or SHIP)."""
    ma = MCU_MA[state]
    if state == "awake" and network_on:
        ma += MA_NETWORK
    return ma + (MA_AFE_SHIP if afe_shipped else MA_AFE_NORMAL)


class PowerMeter:
    """The charge the board drew, per power state and over time. The
    caller holds the simulator's lock around every call."""

    def __init__(self):
        self.segments = []  # [start ms, end ms, state, mA], consecutive same states merged
        self._energy = {st: [0, 0.0] for st in POWER_STATES}  # state: [ms, mA*ms]

    def account(self, t0, ms, state, ma):
        """ms of simulated time from t0 passed in state, drawing ma."""
        e = self._energy[state]
        e[0] += ms
        e[1] += ma * ms
        segs = self.segments
        last = segs[-1] if segs else None
        if last is not None and last[2] == state and last[1] == t0:
            span = last[1] - last[0]
            if last[3] != ma:
                last[3] = (last[3] * span + ma * ms) / (span + ms)
            last[1] = t0 + ms
        else:
            segs.append([t0, t0 + ms, state, ma])
            if len(segs) > SEGMENTS_MAX:
                self._fold_segments()

    def _fold_segments(self):
        """Merge the older half of the segments pairwise (keeping their charge)."""
        segs = self.segments
        half = len(segs) // 2
        merged = []
        for i in range(0, half - 1, 2):
            a, b = segs[i], segs[i + 1]
            da, db = a[1] - a[0], b[1] - b[0]
            ma = (a[3] * da + b[3] * db) / (da + db) if da + db else a[3]
            merged.append([a[0], b[1], a[2] if a[2] == b[2] else "mixed", ma])
        if half % 2:
            merged.append(segs[half - 1])
        segs[:half] = merged

    def energy(self):
        """{state: {"s", "mah", "avg_ma"}} for "awake", "light_sleep",
        "deep_sleep" and "total": simulated seconds in the state, the charge
        the board drew there (mAh) and its average current (mA)."""
        def summary(ms, q):
            return {"s": ms / 1000.0, "mah": q / 3600000.0, "avg_ma": q / ms if ms else 0.0}

        out = {st: summary(*self._energy[st]) for st in POWER_STATES}
        out["total"] = summary(sum(e[0] for e in self._energy.values()),
                               sum(e[1] for e in self._energy.values()))
        return out

    def average_ma(self, t0_ms, t1_ms):
        """The board's average current (mA) over simulated time t0_ms..t1_ms
        (world.now_ms values), or None when no time passed there."""
        if t1_ms <= t0_ms:
            raise ValueError("average_ma needs t0_ms < t1_ms")
        q = 0.0
        covered = 0
        for s0, s1, _, ma in self.segments:
            lo = s0 if s0 > t0_ms else t0_ms
            hi = s1 if s1 < t1_ms else t1_ms
            if hi > lo:
                q += ma * (hi - lo)
                covered += hi - lo
        return q / covered if covered else None
