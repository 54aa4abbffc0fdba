"""Passive balancing decisions (bms.balancing): unit tables, properties, a
closed loop with the pack model, and the allocation proof under MicroPython."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bms.afe.bq769x0 import allowed_balance_channels
from bms.balancing import PHASE_BLEEDING, PHASE_IDLE, PHASE_SETTLING, Balancer
from bms.afe.chips import default_cell_channels
from bms.measurements import Measurements
from bms.ticks import TICKS_PERIOD, ticks_add
from conftest import run_mpy

STEP = 250  # control loop period (ms)
ON_MS = 2000
SETTLE_MS = 600
CH4 = 0b10111  # 4 cells: inputs 0, 1, 2, 4
# updates after the mask went to 0 (or the chip last reported bleeding)
# before a reading counts as clean: the first one >= SETTLE_MS later
QUIET = -(-SETTLE_MS // STEP) - 1


def channels_of(cell_channels):
    return [i for i in range(15) if cell_channels >> i & 1]


def cells_to_inputs(cell_channels, mask):
    ch = channels_of(cell_channels)
    return sum(1 << ch[k] for k in range(len(ch)) if mask >> k & 1)


def adjacent_in_group(inputs):
    return any(inputs >> i & 1 and inputs >> (i + 1) & 1 for i in range(14) if i % 5 != 4)


def meas_of(mvs, balance_mask=0):
    m = Measurements(3)
    m.cells = len(mvs)
    for i, v in enumerate(mvs):
        m.cell_mv[i] = v
    m.balance_mask = balance_mask
    m.update_extremes()
    return m


def make(cell_channels=CH4, start_mv=3400, diff_mv=10, at_rest=False, min_idle_ms=0,
         max_cells=0, max_temp_dc=450, on_ms=ON_MS, settle_ms=SETTLE_MS):
    b = Balancer(cell_channels, on_ms=on_ms, settle_ms=settle_ms)
    b.configure(start_mv, diff_mv, at_rest, min_idle_ms, max_cells, max_temp_dc)
    return b


class Loop:
    """Drives a Balancer every 250 ms like the control loop does."""

    def __init__(self, b, t0=0):
        self.b = b
        self.t = t0
        self.log = []  # (t, mask, phase)

    def run(self, ms, mvs, charging=True, resting_ms=0, allowed=True, temp_dc=250, balance_mask=0):
        """Steps for `ms` (meas from mvs: list or callable(mask)); returns the masks."""
        out = []
        for _ in range(ms // STEP):
            v = mvs(self.b.mask) if callable(mvs) else mvs
            m = self.b.update(meas_of(v, balance_mask), self.t, charging, resting_ms, allowed, temp_dc)
            assert m == self.b.mask
            assert (m != 0) == (self.b.phase == PHASE_BLEEDING)
            self.log.append((self.t, m, self.b.phase))
            out.append(m)
            self.t = ticks_add(self.t, STEP)
        return out


def first_set(b, mvs, ms=3000, **kw):
    masks = Loop(b).run(ms, mvs, **kw)
    return next((m for m in masks if m), 0)


HIGH4 = [3300, 3450, 3460, 3470]  # every cell but the lowest is > 10 mV above it


# ------------------------------------------------------------ decisions
@pytest.mark.parametrize("name, mvs, kw, expect_any", [
    ("below start voltage", [3300, 3350, 3390, 3399], {}, False),
    ("at start voltage", [3300, 3350, 3390, 3400], {}, True),
    ("spread equal to diff", [3395, 3400, 3405, 3405], {}, False),
    ("spread below diff", [3400, 3402, 3405, 3409], {}, False),
    ("spread just above diff", [3400, 3402, 3405, 3411], {}, True),
    ("disabled (start 0)", HIGH4, {"start_mv": 0}, False),
])
def test_voltage_conditions(name, mvs, kw, expect_any):
    b = make(**kw)
    assert (first_set(b, mvs) != 0) == expect_any, name


@pytest.mark.parametrize("charging, at_rest, min_idle_ms, resting_ms, expect_any", [
    (True, False, 0, 0, True),
    (False, False, 0, 0, False),
    (False, False, 0, 3600000, False),  # at rest, option off (default)
    (False, True, 60000, 0, False),  # not resting (discharging)
    (False, True, 60000, 59999, False),  # not idle long enough
    (False, True, 60000, 60000, True),
    (False, True, 0, 250, True),
    (True, True, 60000, 0, True),  # charging does not need the idle time
])
def test_charging_and_rest(charging, at_rest, min_idle_ms, resting_ms, expect_any):
    b = make(at_rest=at_rest, min_idle_ms=min_idle_ms)
    got = first_set(b, HIGH4, charging=charging, resting_ms=resting_ms)
    assert (got != 0) == expect_any


@pytest.mark.parametrize("temp_dc, expect_any", [(-100, True), (449, True), (450, True), (451, False), (900, False)])
def test_temperature_cutoff(temp_dc, expect_any):
    assert (first_set(make(max_temp_dc=450), HIGH4, temp_dc=temp_dc) != 0) == expect_any


def test_allowed_false_stops_at_once_even_mid_period():
    b = make()
    lp = Loop(b)
    assert any(lp.run(1500, HIGH4))
    assert b.phase == PHASE_BLEEDING and b.mask
    assert lp.run(STEP, HIGH4, allowed=False) == [0]
    assert b.phase == PHASE_IDLE
    # back to allowed: the next reading was taken while bleeding; wait a settle
    masks = lp.run(2000, HIGH4)
    assert masks[:QUIET] == [0] * QUIET and masks[QUIET] != 0
    # the same for the other conditions, mid-period
    for kw in ({"charging": False}, {"temp_dc": 451}):
        lp.run(2000, HIGH4)
        assert b.mask
        assert lp.run(STEP, HIGH4, **kw) == [0] and b.phase == PHASE_IDLE
    b.configure(0, 10, False, 0, 0, 450)  # disabled mid-period
    lp.run(2000, HIGH4)
    assert b.mask == 0


def test_first_period_needs_clean_reading():
    b = make()
    lp = Loop(b)
    # the chip reports bleeding (e.g. left from before a restart): never decide
    assert lp.run(5000, HIGH4, balance_mask=0b1000) == [0] * 20
    masks = lp.run(2000, HIGH4)
    assert masks[:QUIET] == [0] * QUIET and masks[QUIET] != 0


@pytest.mark.parametrize("mvs, max_cells, expect", [
    # 5 cells on inputs 0..4: even inputs = cells 1, 3, 5; odd = cells 2, 4
    ([3300, 3500, 3450, 3480, 3460], 1, [0b10000, 0b00010]),
    ([3300, 3500, 3450, 3480, 3460], 2, [0b10100, 0b01010]),
    ([3300, 3500, 3450, 3480, 3460], 0, [0b10100, 0b01010]),
    ([3300, 3500, 3470, 3480, 3460], 1, [0b00100, 0b00010]),
    ([3300, 3305, 3450, 3480, 3460], 1, [0b10000, 0b01000]),
    # cells 2 and 4 (odd inputs) within diff of the lowest: not a reason to
    # start, but once a run is going it continues down to diff/2 (5 mV)
    ([3300, 3305, 3450, 3308, 3460], 0, [0b10100, 0b01000]),
    ([3300, 3304, 3450, 3305, 3460], 0, [0b10100, 0b10100]),
])
def test_max_cells_keeps_the_highest(mvs, max_cells, expect):
    b = make(cell_channels=0b11111, max_cells=max_cells, on_ms=1000)
    lp = Loop(b)
    lp.run(6000, mvs)
    assert periods(lp.log)[:2] == expect


def periods(log):
    """The set of every bleeding period, in order."""
    out = []
    prev = 0
    for _, m, _ in log:
        if m and not prev:
            out.append(m)
        prev = m
    return out


LAYOUTS = [(4, CH4), (5, default_cell_channels(5, 1)), (10, default_cell_channels(10, 2)),
           (15, default_cell_channels(15, 3)), (9, default_cell_channels(9, 2)),
           (6, default_cell_channels(6, 2)), (12, default_cell_channels(12, 3))]


@pytest.mark.parametrize("cells, chans", LAYOUTS)
def test_layouts_parity_alternates_and_covers_every_cell(cells, chans):
    assert bin(chans).count("1") == cells
    mvs = [3300] + [3450 + 3 * i for i in range(cells - 1)]
    b = make(cell_channels=chans)
    lp = Loop(b)
    lp.run(20000, mvs)
    sets = periods(lp.log)
    assert len(sets) >= 4
    for m in sets:
        inputs = cells_to_inputs(chans, m)
        assert not adjacent_in_group(inputs)
        assert allowed_balance_channels(inputs) == inputs  # the driver drops nothing
        assert m >> cells == 0
    # two consecutive periods together bleed every cell but the lowest
    full = (1 << cells) - 2
    for a, c in zip(sets, sets[1:]):
        assert a | c == full
        assert a & c == 0
    # and each period's inputs are of one parity, alternating
    par = [channels_of(chans)[(m & -m).bit_length() - 1] & 1 for m in sets]
    assert all(p != q for p, q in zip(par, par[1:]))


def test_phases_and_timing():
    b = make(on_ms=2000, settle_ms=600)
    lp = Loop(b)
    lp.run(8000, HIGH4)
    phases = [p for _, _, p in lp.log]
    # idle while the start-up reading is not yet known clean (settle_ms)
    assert phases[:3] == [PHASE_IDLE] * 3
    s = phases.index(PHASE_BLEEDING)
    run = phases[s:s + 8] + phases[s + 8:s + 11]
    assert run == [PHASE_BLEEDING] * 8 + [PHASE_SETTLING] * 3
    assert phases[s + 11] == PHASE_BLEEDING  # snapshot at 750 ms >= 600 ms, next period
    assert b.snapshot_spread_mv == 170


def test_empty_parity_uses_the_other_at_once():
    # 4 cells: inputs 0,1,2,4 -> only cell 2 (input 1) is odd; make it the only high one
    b = make()
    mvs = [3300, 3450, 3300, 3305]
    lp = Loop(b)
    lp.run(10000, mvs)
    sets = periods(lp.log)
    assert sets and all(m == 0b0010 for m in sets)
    assert b.parity == 1
    # no period wasted: bleeding back to back, with only the settle pause between
    ph = [p for _, _, p in lp.log]
    first = ph.index(PHASE_BLEEDING)
    assert PHASE_IDLE not in ph[first:]


def test_decisions_ignore_readings_taken_while_bleeding():
    b = make(cell_channels=0b11111, on_ms=3000)
    clean = [3300, 3450, 3460, 3470, 3480]

    def measured(mask):  # a bled cell reads 400 mV low: below the lowest cell
        return [v - 400 if mask >> i & 1 else v for i, v in enumerate(clean)]

    lp = Loop(b)
    lp.run(16000, measured)
    sets = periods(lp.log)
    assert sets[:4] == [0b10100, 0b01010, 0b10100, 0b01010]
    # within a period the set never changes, whatever is measured
    for (_, m0, p0), (_, m1, p1) in zip(lp.log, lp.log[1:]):
        if p0 == p1 == PHASE_BLEEDING:
            assert m0 == m1
    assert b.snapshot_spread_mv == 180
    # and a reading at the end of the pause with a cell still reported
    # bleeding by the chip is not taken as the snapshot: the pause goes on
    b2 = make(cell_channels=0b11111, on_ms=1000)
    lp2 = Loop(b2)
    lp2.run(2000, clean)
    while b2.phase != PHASE_SETTLING:
        lp2.run(STEP, clean)
    lp2.run(2000, clean, balance_mask=0b1)
    assert b2.phase == PHASE_SETTLING and b2.mask == 0


def test_ticks_wrap():
    b = make(on_ms=2000)
    lp = Loop(b, t0=TICKS_PERIOD - 3000)
    lp.run(20000, HIGH4)
    assert len(periods(lp.log)) >= 5
    ts = [t for t, _, _ in lp.log]
    assert min(ts) < 5000  # really wrapped


# ------------------------------------------------------------ properties
@st.composite
def scenario(draw):
    cells = draw(st.integers(3, 15))
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if 3 * g <= cells <= 5 * g]))
    chans = default_cell_channels(cells, groups)
    opts = dict(start_mv=draw(st.integers(0, 3600)), diff_mv=draw(st.integers(0, 60)),
                at_rest=draw(st.booleans()), min_idle_ms=draw(st.integers(0, 5000)),
                max_cells=draw(st.integers(0, 16)), max_temp_dc=draw(st.integers(0, 600)))
    on_ms = draw(st.integers(250, 5000))
    settle_ms = draw(st.integers(251, 1500))
    base = draw(st.integers(3200, 3600))
    steps = draw(st.lists(st.tuples(
        st.integers(1, 2000),  # dt
        st.lists(st.integers(-150, 150), min_size=cells, max_size=cells),  # cell offsets
        st.booleans(),  # charging
        st.sampled_from([0, 100, 5000, 100000]),  # resting_ms
        st.integers(0, 20).map(lambda x: x != 0),  # allowed (mostly)
        st.integers(0, 650),  # temperature
        st.booleans(),  # chip reports the applied mask
    ), min_size=1, max_size=60))
    t0 = draw(st.integers(0, TICKS_PERIOD - 1))
    return cells, chans, opts, on_ms, settle_ms, base, steps, t0


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_properties(sc):
    cells, chans, opts, on_ms, settle_ms, base, steps, t0 = sc
    b = make(cell_channels=chans, on_ms=on_ms, settle_ms=settle_ms, **opts)
    t = t0
    applied = 0
    snap = None
    for dt, offs, charging, resting_ms, allowed, temp, report in steps:
        mvs = [base + o for o in offs]
        meas = meas_of(mvs, applied if report else 0)
        started = b.periods
        was_running = b.phase == PHASE_SETTLING
        m = b.update(meas, t, charging, resting_ms, allowed, temp)
        if b.periods != started:
            snap = list(mvs)  # the reading this period's set came from
            # a run starts above diff and, once going, continues down to diff/2
            need = max(1, opts["diff_mv"] >> 1) if was_running else opts["diff_mv"]
        assert m == b.mask
        assert (m != 0) == (b.phase == PHASE_BLEEDING)
        assert m >> cells == 0
        inputs = cells_to_inputs(chans, m)
        assert not adjacent_in_group(inputs)
        assert allowed_balance_channels(inputs) == inputs
        limit = opts["max_cells"] if 0 < opts["max_cells"] < 15 else 15
        assert bin(m).count("1") <= limit
        rest_ok = opts["at_rest"] and resting_ms > 0 and resting_ms >= opts["min_idle_ms"]
        if (not allowed or opts["start_mv"] == 0 or temp > opts["max_temp_dc"]
                or not (charging or rest_ok)):
            assert m == 0
        if m:
            assert snap is not None
            lo = min(snap)
            assert max(snap) >= opts["start_mv"]
            assert max(snap) - lo > need
            assert b.snapshot_spread_mv == max(snap) - lo
            for k in range(cells):
                if m >> k & 1:
                    assert snap[k] - lo > need
        applied = m
        t = ticks_add(t, dt)


# ------------------------------------------------------------ closed loop
def test_closed_loop_with_pack_model(capsys):
    """Top of charge, 4 LFP cells 150 mV apart, CC-CV charger at C/5 (3.45 V
    per cell): the balancer brings the clean spread below diff_mv."""
    from bms_sim.world import World

    cells = 4
    diff_mv = 10
    world = World(cells=cells, chemistry="lfp", capacity_mah=2000, soc_pct=100.0, spread_mv=150)
    pack = world.pack
    charger = world.charger
    charger.set(400, cell_cv_mv=3450)
    b = Balancer(default_cell_channels(cells, 1))
    b.configure(3400, diff_mv, False, 0, 0, 450)
    meas = Measurements(1)
    meas.cells = cells
    applied = 0
    current = 0.0
    last_charge_ms = None
    t = 0
    done_ms = None
    lines = []
    for step in range(6 * 3600 * 4):  # at most 6 h
        mvs = pack.cell_mvs()  # the AFE's reading of the last 250 ms
        for i in range(cells):
            meas.cell_mv[i] = int(round(mvs[i]))
        meas.balance_mask = applied
        meas.update_extremes()
        # the caller's charge detection: above 20 mA, held 60 s (a CV charger
        # only replaces the bleed current, so it falls in the settle pauses)
        if current > 20:
            last_charge_ms = t
        charging = last_charge_ms is not None and t - last_charge_ms < 60000
        mask = b.update(meas, t, charging, 0, True, 250)
        inputs = cells_to_inputs(b.cell_channels, mask)
        assert allowed_balance_channels(inputs) == inputs
        applied = mask
        bleed = [mvs[i] / 33.0 if mask >> i & 1 else 0.0 for i in range(cells)]
        current = charger.output_ma(pack, 0.0, bleed, STEP / 1000.0)
        pack.step(STEP / 1000.0, current, bleed)
        t += STEP
        if t % 600000 == 0:
            ocv = [c.ocv_mv() for c in pack.cells]
            lines.append("%4d min: clean spread %3d mV, OCV spread %5.1f mV, charge %4.0f mA, periods %d"
                         % (t // 60000, b.snapshot_spread_mv, max(ocv) - min(ocv), current, b.periods))
        if b.periods and b.phase == PHASE_IDLE and 0 < b.snapshot_spread_mv <= diff_mv:
            done_ms = t
            break
    with capsys.disabled():
        print()
        for ln in lines:
            print(ln)
        print("spread %d mV <= %d mV after %.0f min, %d periods"
              % (b.snapshot_spread_mv, diff_mv, (done_ms or t) / 60000, b.periods))
    assert done_ms is not None and done_ms < 4 * 3600 * 1000
    assert b.mask == 0
    mvs = pack.cell_mvs()
    assert max(mvs) - min(mvs) <= diff_mv + 2


# ------------------------------------------------------------ MicroPython
@pytest.mark.parametrize("cells", [15, 16])
def test_update_allocates_nothing_under_micropython(micropython, cells):
    """15: every input of a bq76940; 16: every input of a 16-cell AFE, cell 16
    at bit 15 of the masks (a small int on the ESP32 too)."""
    proc = run_mpy(micropython, "mpy_balancing_alloc.py", str(cells))
    assert "OK" in proc.stdout, proc.stdout + proc.stderr
    assert "top=1" in proc.stdout  # the highest cell, the top input, bled
