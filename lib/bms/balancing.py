"""Passive balancing decisions (pure logic, no I/O, allocation-free update()).

What a pack builder expects: while charging (optionally also at rest, after
a minimum idle time), once the highest cell has reached the balance start
voltage and the spread (max - min) is above the balance differential, bleed
the cells that are more than the differential above the lowest cell.
Options: a maximum number of cells bleeding at once (the highest first), a
temperature cut-off, and no balancing while the caller reports a protection
fault or doubtful measurements (`allowed` False).

The bleed current pulls the measured voltage of a bleeding cell down, so
decisions are only taken from readings taken with balancing paused. The
balancer runs in periods:

    IDLE     mask 0. When the conditions hold on a clean reading (mask 0 for
             at least settle_ms, and the chip reports no bleeding), choose a
             set from that reading -> BLEEDING.
    BLEEDING mask = the chosen set, for on_ms -> SETTLING.
    SETTLING mask 0 for settle_ms (one 250 ms ADC window plus margin). The
             reading at the end is the clean snapshot; flip the parity and
             choose again from it -> BLEEDING, or -> IDLE when nothing to do.

`allowed` False, the temperature cut-off, leaving charge/rest, or
start_mv = 0 end any period at once (mask 0, -> IDLE).

No two adjacent inputs bleed at once (the bq769x0 forbids it within a
5-input group; the rule is kept for every chip behind bms.afe). A set only
ever holds cells on inputs of one parity (input number = the
cell's channel, bit n of cell_channels = input n+1), so no two inputs in it
are adjacent; the parity alternates across periods so every cell gets its
turn. When the current parity has no candidate but the other one has, the
other one is used at once.
"""
from micropython import const

from bms.afe import cell_count, cell_inputs
from bms.regmap import MAX_CELLS
from bms.ticks import ticks_diff

PHASE_IDLE = const(0)
PHASE_BLEEDING = const(1)
PHASE_SETTLING = const(2)

_MIN_SETTLE_MS = const(251)  # one 250 ms ADC window, plus one


class Balancer:
    def __init__(self, cell_channels, on_ms=10000, settle_ms=600):
        # channel (input 0..15) of every cell, bottom first (as the AFE driver)
        self._ch = cell_inputs(cell_channels)
        self.cell_channels = cell_channels
        self.cells = cell_count(cell_channels)
        self.on_ms = on_ms
        self.settle_ms = settle_ms if settle_ms > _MIN_SETTLE_MS else _MIN_SETTLE_MS
        # options (configure); start_mv 0 = balancing disabled
        self.start_mv = 0
        self.diff_mv = 0
        self.at_rest = False
        self.min_idle_ms = 0
        self.max_cells = MAX_CELLS
        self.max_temp_dc = 0
        # state
        self.mask = 0
        self.phase = PHASE_IDLE
        self.parity = 0
        self.snapshot_spread_mv = 0
        self.snapshot_min_mv = 0
        self.snapshot_max_mv = 0
        self.periods = 0  # bleeding periods started (a new set was chosen)
        self._t = 0  # start of the present phase
        self._quiet = False  # mask 0 for settle_ms: readings are clean
        self._zero_t = 0  # when the mask last went to 0
        self._started = False  # first update() seen

    def configure(self, start_mv, diff_mv, at_rest, min_idle_ms, max_cells, max_temp_dc):
        """start_mv 0 disables balancing; max_cells <= 0 means no limit;
        max_temp_dc: no balancing while any temperature (0.1 degC) is above it."""
        self.start_mv = start_mv
        self.diff_mv = diff_mv
        self.at_rest = bool(at_rest)
        self.min_idle_ms = min_idle_ms
        self.max_cells = max_cells if 0 < max_cells < MAX_CELLS else MAX_CELLS
        self.max_temp_dc = max_temp_dc

    # -- decisions --------------------------------------------------------

    def _enabled(self, charging, resting_ms, allowed, max_temp_dc_now):
        """Everything but the voltages: may a period run now?"""
        if not allowed or self.start_mv <= 0 or max_temp_dc_now > self.max_temp_dc:
            return False
        if charging:
            return True
        return self.at_rest and resting_ms > 0 and resting_ms >= self.min_idle_ms

    def _pick(self, meas, parity, diff):
        """The cells (mask) of one input parity to bleed, from a clean reading:
        more than diff above the lowest, at most max_cells, highest first."""
        n = meas.cells
        if n > self.cells:
            n = self.cells
        v = meas.cell_mv
        ch = self._ch
        limit = meas.cell_min_mv + diff  # candidates are above this
        picked = 0
        k = 0
        while k < self.max_cells:
            best = -1
            best_mv = limit
            i = 0
            while i < n:
                if v[i] > best_mv and (ch[i] & 1) == parity and not (picked & (1 << i)):
                    best = i
                    best_mv = v[i]
                i += 1
            if best < 0:
                break
            picked |= 1 << best
            k += 1
        return picked

    def _choose(self, meas, now_ms, running):
        """Decide from a clean reading: start a period or stay/go idle.

        A run starts above diff_mv and goes on down to half of it, so the
        pack ends under the differential instead of hovering on it."""
        diff = self.diff_mv >> 1 if running else self.diff_mv
        if diff < 1:
            diff = 1
        lo = meas.cell_min_mv
        hi = meas.cell_max_mv
        self.snapshot_min_mv = lo
        self.snapshot_max_mv = hi
        self.snapshot_spread_mv = hi - lo
        m = 0
        if meas.cells > 0 and hi >= self.start_mv and hi - lo > diff:
            m = self._pick(meas, self.parity, diff)
            if not m:
                m = self._pick(meas, self.parity ^ 1, diff)
                if m:
                    self.parity ^= 1
        if m:
            self.phase = PHASE_BLEEDING
            self.periods += 1
        else:
            self.phase = PHASE_IDLE
        self._t = now_ms
        self._set(m, now_ms)

    def _set(self, m, now_ms):
        if self.mask and not m:
            self._zero_t = now_ms
            self._quiet = False
        self.mask = m

    def update(self, meas, now_ms, charging, resting_ms, allowed, max_temp_dc_now):
        """One control-loop step (every 250 ms); returns the cell mask to apply
        now (bit k = cell k+1). meas: after update_extremes()."""
        if not self._started:
            # nothing known about what bled before us: wait for one settle
            self._started = True
            self._zero_t = now_ms
        if meas.balance_mask:
            # the chip says it was bleeding: this reading is not clean
            if not self.mask:
                self._zero_t = now_ms
            self._quiet = False
        elif not self._quiet and not self.mask and ticks_diff(now_ms, self._zero_t) >= self.settle_ms:
            self._quiet = True
        if not self._enabled(charging, resting_ms, allowed, max_temp_dc_now):
            self.phase = PHASE_IDLE
            self._set(0, now_ms)
            return 0
        phase = self.phase
        if phase == PHASE_BLEEDING:
            if ticks_diff(now_ms, self._t) >= self.on_ms:
                self.phase = PHASE_SETTLING
                self._t = now_ms
                self._set(0, now_ms)
        elif phase == PHASE_SETTLING:
            if self._quiet:
                self.parity ^= 1
                self._choose(meas, now_ms, True)
        elif self._quiet:
            self._choose(meas, now_ms, False)
        return self.mask
