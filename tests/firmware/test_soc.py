"""State of charge (bms.soc): exact counting, offset learning, OCV
correction, full/empty syncs, capacity learning, persistence, energy and
times, properties, and the allocation proof under MicroPython."""
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bms import soc as socmod
from bms.measurements import Measurements
from bms import paramload as PL
from bms import params as P
from bms.params import CHEM_LFP, CHEM_LTO, CHEM_NMC, OCV_POINTS
from bms.soc import DEFAULT_OCV, NO_TIME, STATE_SIZE
from bms.soc import Soc as _Soc
from bms.ticks import TICKS_PERIOD, ticks_add
from conftest import run_mpy


def defaults(chem, cells=4, cap=10000):
    """The parameter table's defaults for this pack (bms.paramload), the
    values the firmware configures its SOC estimator with."""
    p = P.Params()
    PL.apply_defaults(p, chem, cells, cap)
    return p.values


def Soc(chem, cells, cap, shunt):
    """A Soc configured as the firmware configures it: from the chemistry's
    defaults for this pack (bms.cycle: configure_values)."""
    s = _Soc(chem, cells, cap, shunt)
    s.configure_values(defaults(chem, cells, cap))
    return s

STEP = 250
MIN = 60000
HOUR = 3600000


def ocv_mv(chem, dpct):
    """Cell OCV at a SOC (0.1 %), linear between the default points."""
    t = DEFAULT_OCV[chem]
    if dpct <= 0:
        return t[0]
    if dpct >= 1000:
        return t[-1]
    i = dpct // 50
    f = dpct - 50 * i
    return t[i] + (t[i + 1] - t[i]) * f // 50


def meas_of(mvs, current_ma=0, cc_raw=0):
    m = Measurements(3)
    m.cells = len(mvs)
    for i, v in enumerate(mvs):
        m.cell_mv[i] = v
    m.pack_mv = sum(mvs)
    m.current_ma = current_ma
    m.cc_raw = cc_raw
    m.update_extremes()
    return m


class Pack:
    """A pack whose cells follow the OCV of a true SOC, with a coulomb
    counter (offset in LSB) driving a Soc every 250 ms."""

    def __init__(self, chem=CHEM_LFP, cells=4, cap=10000, shunt=8440, true_dpct=500,
                 offset_lsb=0, t0=0, state=None, start=True, **cfg):
        self.chem = chem
        self.cells = cells
        self.cap = cap
        self.shunt = shunt
        self.offset_lsb = offset_lsb
        self.true_mas = Fraction(cap * 3600 * true_dpct, 1000)
        self.t = t0
        self.s = Soc(chem, cells, cap, shunt)
        self.mv_err = 0
        d = defaults(chem, cells, cap)
        conf = dict(full_cell_mv=d[P.P_FULL_CELL_MV], full_tail_ma=d[P.P_FULL_TAIL_MA], full_hold_ms=d[P.P_FULL_HOLD_MS],
                    empty_cell_mv=d[P.P_EMPTY_CELL_MV], empty_hold_ms=d[P.P_EMPTY_HOLD_MS],
                    rest_current_ma=d[P.P_REST_CURRENT_MA], relax_after_charge_ms=d[P.P_RELAX_CHG_MS],
                    relax_after_discharge_ms=d[P.P_RELAX_DSG_MS])
        conf.update(cfg)
        self.s.configure(**conf)
        self.m = meas_of([self.cell_mv()] * cells)
        if start:
            self.s.start(self.t, self.m, state)

    @property
    def true_dpct(self):
        return float(self.true_mas * 1000 / (self.cap * 3600))

    def cell_mv(self, ir_ma=0):
        d = int(self.true_dpct)
        return ocv_mv(self.chem, d) + self.mv_err + ir_ma // 1000  # 1 mOhm per cell

    def run(self, ms, current_ma, fets_off=False, noise=0, mvs=None):
        """current_ma flows for ms (0 with the FETs off); noise: alternating
        +/- LSB on the readings."""
        s = self.s
        m = self.m
        n = ms // STEP
        flow = 0 if fets_off else current_ma
        raw_i = round(flow * self.shunt / 8440)
        q = Fraction(raw_i * 2110, self.shunt)  # true mAs per reading
        k = 0
        while k < n:
            self.true_mas += q
            if self.true_mas < 0:
                self.true_mas = Fraction(0)
            if self.true_mas > self.cap * 3600:
                self.true_mas = Fraction(self.cap * 3600)
            if k % 16 == 0:  # voltages move slowly
                if mvs is None:
                    v = self.cell_mv(flow)
                    for c in range(self.cells):
                        m.cell_mv[c] = v
                else:
                    for c in range(self.cells):
                        m.cell_mv[c] = mvs[c]
                m.update_extremes()
            nz = (noise if k & 1 else -noise)
            m.cc_raw = raw_i + self.offset_lsb + nz
            m.current_ma = flow
            self.t = ticks_add(self.t, STEP)
            s.update(self.t, m, True, fets_off)
            k += 1


# ------------------------------------------------------------ OCV tables
def test_default_tables_ascending():
    for chem in (CHEM_LFP, CHEM_NMC, CHEM_LTO):
        t = DEFAULT_OCV[chem]
        assert len(t) == OCV_POINTS
        assert all(a < b for a, b in zip(t, t[1:]))
    assert DEFAULT_OCV[CHEM_LFP][-1] == 3392 and DEFAULT_OCV[CHEM_NMC][0] == 2800
    assert DEFAULT_OCV[CHEM_LTO][0] == 1800 and DEFAULT_OCV[CHEM_LTO][-1] == 2750


def test_set_ocv_table_validation():
    s = Soc(CHEM_NMC, 4, 10000, 1000)
    with pytest.raises(ValueError):
        s.set_ocv_table([3000] * 21)
    with pytest.raises(ValueError):
        s.set_ocv_table(list(range(3000, 3020)))  # 20 points
    with pytest.raises(ValueError):
        s.set_ocv_table(list(range(3020, 3000, -1)) + [3100])
    custom = [3000 + 10 * i for i in range(21)]
    s.set_ocv_table(custom)
    assert s.ocv_to_soc(3100) == 500 and s.soc_to_ocv(500) == 3100
    s.set_ocv_table([0] * 21)  # the parameter block's "unset"
    assert s.soc_to_ocv(1000) == DEFAULT_OCV[CHEM_NMC][-1]
    s.set_ocv_table(None)
    assert s.ocv_to_soc(DEFAULT_OCV[CHEM_NMC][10]) == 500


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([CHEM_LFP, CHEM_NMC, CHEM_LTO]), st.integers(0, 6000), st.integers(0, 6000))
def test_ocv_to_soc_monotonic_and_bounded(chem, a, b):
    s = Soc(chem, 4, 10000, 1000)
    lo, hi = min(a, b), max(a, b)
    sa, sb = s.ocv_to_soc(lo), s.ocv_to_soc(hi)
    assert 0 <= sa <= sb <= 1000


@pytest.mark.parametrize("chem", [CHEM_LFP, CHEM_NMC, CHEM_LTO])
def test_ocv_roundtrip(chem):
    s = Soc(chem, 4, 10000, 1000)
    for d in range(0, 1001, 5):
        # the voltage of a SOC maps back to within the table's resolution
        v = s.soc_to_ocv(d)
        back = s.ocv_to_soc(v)
        dv = s._seg_dv(min(d, 999))
        assert abs(back - d) <= 50 // dv + 1, (d, v, back)


# ------------------------------------------------------------ exact counting
def test_one_million_readings_of_1ma_lose_nothing():
    s = Soc(CHEM_LFP, 4, 100000, 8440)  # 1 LSB = 1 mA
    s.offset_learned = True  # a learned zero: every reading over half an LSB counts
    s.set_soc(0)
    before = s.charge_mas()
    reading = s._reading
    for _ in range(10 ** 6):
        reading(1, False)
    assert s.charge_mas() - before == 10 ** 6 // 4  # exactly 250000 mAs
    assert s._acc == 0
    assert s._q == 250000 // 3600 and s._mas == 250000 % 3600


def test_non_integer_mix_carries_remainders():
    import random

    rnd = random.Random(7)
    shunt = 1000  # 1 LSB = 8.44 mA, one reading = 2.11 mAs
    s = Soc(CHEM_NMC, 4, 200000, shunt)
    s.offset_learned = True
    s.set_soc(500)
    start = s.charge_mas()
    total = 0
    for _ in range(200000):
        raw = rnd.choice((-3, -1, 0, 1, 2, 5, 17, -40, 1000, -999))
        total += raw
        s._reading(raw, False)
    exact = Fraction(total * 2110, shunt)
    got = s.charge_mas() - start + Fraction(s._acc, 8 * shunt)
    assert got == exact


def test_counting_through_update_and_negative():
    p = Pack(CHEM_NMC, cap=20000, shunt=8440, true_dpct=500,
             relax_after_charge_ms=10 ** 8, relax_after_discharge_ms=10 ** 8)
    p.s.offset_learned = True  # a learned zero: 3 LSB are more than its uncertainty
    c0 = p.s.charge_mas()
    p.run(HOUR // 4, -3)  # 3 mA for 15 min
    assert c0 - p.s.charge_mas() == 3 * 15 * 60  # 2700 mAs
    p.run(HOUR // 4, 7)
    assert p.s.charge_mas() - c0 == (7 - 3) * 15 * 60


# ------------------------------------------------------------ bounds
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(-32768, 32767), st.integers(1, 80), st.booleans()),
                min_size=1, max_size=12),
       st.sampled_from([CHEM_LFP, CHEM_NMC, CHEM_LTO]), st.integers(0, 1000))
def test_soc_always_within_bounds(seq, chem, dpct):
    s = Soc(chem, 4, 5000, 1000)
    v = ocv_mv(chem, dpct)
    m = meas_of([v] * 4)
    s.start(0, m)
    s.configure(defaults(chem)[P.P_FULL_CELL_MV], 250, 1000, defaults(chem)[P.P_EMPTY_CELL_MV], 1000, 100, 2000, 2000)
    t = 0
    for raw, n, off in seq:
        m.cc_raw = raw
        for _ in range(n):
            t = ticks_add(t, STEP)
            s.update(t, m, True, off)
            assert 0 <= s.soc_dpct <= 1000
            assert 0 <= s.remaining_mah <= s.full_capacity_mah
            assert 0 <= s.tte_min <= NO_TIME and 0 <= s.ttf_min <= NO_TIME
            assert 0 <= s.sigma_dpct <= 1000


def test_no_stick_above_100_when_overcharged():
    p = Pack(CHEM_LFP, true_dpct=950, full_hold_ms=60000)
    p.run(2 * HOUR, 2000, mvs=[3400] * 4)  # below full_cell_mv: no sync, counting past full
    assert p.s.soc_dpct == 1000 and p.s.remaining_mah == p.s.full_capacity_mah
    p.run(6 * MIN, -1000, mvs=[3300] * 4)  # 100 mAh out: 99 %, not stuck at 100
    assert p.s.soc_dpct == 990


# ------------------------------------------------------------ full / empty
def test_full_sync_needs_the_hold_time():
    p = Pack(CHEM_LFP, true_dpct=800, full_hold_ms=60000, full_tail_ma=500)
    p.s.set_soc(800)
    p.run(30000, 300, mvs=[3460] * 4)  # at full voltage, tail current
    assert p.s.soc_dpct < 1000
    p.run(20000, 800, mvs=[3460] * 4)  # above the tail: restarts the hold
    p.run(50000, 300, mvs=[3460] * 4)
    assert p.s.soc_dpct < 1000
    p.run(15000, 300, mvs=[3460] * 4)
    assert p.s.soc_dpct == 1000
    assert p.s.remaining_mah == p.s.full_capacity_mah
    # negative current (discharge) is no tail
    p2 = Pack(CHEM_LFP, true_dpct=800, full_hold_ms=10000, full_tail_ma=500)
    p2.s.set_soc(800)
    p2.run(60000, -50, mvs=[3460] * 4)
    assert p2.s.soc_dpct < 1000


def test_the_full_tail_is_the_cells_current_not_the_bms_supply():
    """At the end of CV the charger also feeds the BMS's own supply (above
    the shunt): the shunt reads the tail plus that draw. A small pack's tail
    (C/20 of 500 mAh: 25 mA) is under the board's 40 mA."""
    def run(draw_ma):
        p = Pack(CHEM_LFP, cap=500, true_dpct=980, full_hold_ms=10000, full_tail_ma=25)
        p.s.set_soc(980)
        p.s.draw_ma = draw_ma
        p.run(20000, 50, mvs=[3460] * 4)  # the shunt: 10 mA into the cells + 40 mA to the board
        return p.s.soc_dpct

    assert run(0) < 1000, "50 mA through the shunt is above the tail"
    assert run(40) == 1000, "10 mA into the cells is the tail"


def test_the_bms_supply_is_counted_against_the_charge():
    p = Pack(CHEM_LFP, cap=10000, true_dpct=500)
    p.s.set_soc(500)
    q0 = p.s.charge_mas()
    k = 0
    while k < 3600:  # an hour at 40 mA in 1 s intervals, then an hour in one
        p.s.draw(40040, 1000)
        k += 1
    p.s.draw(40040, 3600000)
    assert q0 - p.s.charge_mas() == 2 * 40040 * 3600 // 1000  # 288,288 mAs, to the mAs
    assert p.s.drawn_mah == 80
    p.s.draw_s(11, 30 * 86400)  # a month of deep sleep at 11 uA: 28,512 mAs more
    assert q0 - p.s.charge_mas() == 288288 + 28512 and p.s.drawn_mah == 88


def test_empty_sync_needs_the_hold_time():
    p = Pack(CHEM_NMC, true_dpct=200, empty_hold_ms=10000, empty_cell_mv=3100)
    p.run(8000, -2000, mvs=[3090, 3300, 3300, 3300])
    assert p.s.soc_dpct > 100
    p.run(1000, -2000, mvs=[3200, 3300, 3300, 3300])  # recovers: restarts
    p.run(9000, -2000, mvs=[3090, 3300, 3300, 3300])
    assert p.s.soc_dpct > 100
    p.run(2000, -2000, mvs=[3090, 3300, 3300, 3300])
    assert p.s.soc_dpct == 0 and p.s.remaining_mah == 0 and p.s.tte_min == 0
    # charging lifts it again from exactly 0
    p.run(36000, 1000, mvs=[3300] * 4)  # 10 mAh
    assert p.s.remaining_mah == 10


# ------------------------------------------------------------ OCV correction
def test_nmc_rest_corrects_a_20_percent_error():
    p = Pack(CHEM_NMC, true_dpct=500, relax_after_discharge_ms=30 * MIN)
    p.s.set_soc(700)
    p.run(MIN, -2000)  # a discharge, then rest
    p.run(29 * MIN, 0)
    assert abs(p.s.soc_dpct - 697) <= 5  # not before the relaxation time
    p.run(2 * MIN, 0)
    assert p.s.ocv_soc_dpct != -1
    p.run(30 * MIN, 0)  # slewed in at 1 %/min
    assert abs(p.s.soc_dpct - p.true_dpct) <= 15, (p.s.soc_dpct, p.true_dpct)


def test_correction_is_slewed_not_yanked():
    p = Pack(CHEM_NMC, true_dpct=500, relax_after_discharge_ms=10 * MIN)
    p.s.set_soc(800)
    p.run(MIN, -2000)
    last = p.s.soc_dpct
    worst = 0
    for _ in range(40):
        p.run(MIN, 0)
        worst = max(worst, abs(p.s.soc_dpct - last))
        last = p.s.soc_dpct
    assert worst <= 11  # about 1 % per minute
    assert abs(p.s.soc_dpct - p.true_dpct) <= 15


def test_lfp_plateau_10mv_error_barely_moves():
    p = Pack(CHEM_LFP, true_dpct=500, relax_after_discharge_ms=3 * HOUR, full_hold_ms=1000)
    # a full anchor first (a fresh, well-known SOC), then down to 50 %
    p.true_mas = Fraction(p.cap * 3600)
    p.run(2000, 100, mvs=[3500] * 4)
    assert p.s.soc_dpct == 1000
    p.run(HOUR, -5000)
    before = p.s.soc_dpct
    assert abs(before - 500) <= 2
    p.mv_err = 10  # hysteresis / measurement: the OCV says ~65 %
    p.run(4 * HOUR, 0)
    assert p.s.ocv_soc_dpct >= 600
    assert abs(p.s.soc_dpct - before) <= 20  # under 2 %


def test_lfp_steep_low_end_is_trusted():
    p = Pack(CHEM_LFP, true_dpct=80, relax_after_discharge_ms=HOUR)
    p.s.set_soc(250)
    p.run(MIN, -1000)
    p.run(HOUR + 30 * MIN, 0)
    assert abs(p.s.soc_dpct - p.true_dpct) <= 15


def test_rest_needs_the_relaxation_time_and_low_current():
    p = Pack(CHEM_NMC, true_dpct=500, relax_after_charge_ms=30 * MIN, relax_after_discharge_ms=60 * MIN)
    p.s.set_soc(700)
    p.run(MIN, 2000)  # a charge: 30 min
    p.run(25 * MIN, 50)  # 50 mA < rest_current: rest
    assert p.s.ocv_soc_dpct == -1
    p.run(MIN, 500)  # 500 mA: no rest, the relaxation starts again
    p.run(29 * MIN, 0)
    assert p.s.ocv_soc_dpct == -1
    p.run(2 * MIN, 0)
    assert p.s.ocv_soc_dpct != -1
    # after a discharge the longer time applies
    p2 = Pack(CHEM_NMC, true_dpct=500, relax_after_charge_ms=30 * MIN, relax_after_discharge_ms=60 * MIN)
    p2.run(MIN, -2000)
    p2.run(45 * MIN, 0)
    assert p2.s.ocv_soc_dpct == -1
    p2.run(16 * MIN, 0)
    assert p2.s.ocv_soc_dpct != -1


# ------------------------------------------------------------ offset, small loads
@pytest.mark.slow
def test_offset_learned_with_fets_off_and_c100_counted_for_half_a_day():
    cap = 10000
    p = Pack(CHEM_NMC, cap=cap, shunt=8440, true_dpct=900, offset_lsb=2,
             rest_current_ma=50, relax_after_charge_ms=10 ** 8, relax_after_discharge_ms=10 ** 8)
    p.run(10 * MIN, 0, fets_off=True, noise=1)
    assert p.s.offset_learned and p.s.offset_dlsb == 32  # 2 LSB in 1/16
    start = p.s.soc_dpct
    assert start == 900
    p.run(12 * HOUR, -cap // 100)  # C/100 for 12 h
    drop = start - p.s.soc_dpct
    assert abs(drop - 120) <= 2, drop  # 12 % within 0.2 %
    assert abs(p.s.soc_dpct - p.true_dpct) <= 2


def test_offset_not_learned_from_a_load_or_with_fets_on():
    p = Pack(CHEM_NMC, offset_lsb=2)
    p.run(10 * MIN, 0)  # FETs on: no learning (a load may flow)
    assert not p.s.offset_learned
    # FETs off but the readings swing (not steady): rejected
    s = p.s
    for k in range(2000):
        s._reading(2 + (20 if k % 3 == 0 else 0), True)
    assert not s.offset_learned
    for k in range(2000):
        s._reading(200, True)  # steady but too large for an offset
    assert not s.offset_learned


def test_offset_learning_converges_and_follows():
    s = Soc(CHEM_LFP, 4, 10000, 1000)
    for k in range(64 * 8):
        s._reading(-3 + (k & 1), True)  # mean -2.5 LSB
    assert s.offset_dlsb == -40
    for k in range(64 * 40):
        s._reading(1, True)
    assert s.offset_dlsb == 16


def test_fets_off_readings_are_not_counted():
    p = Pack(CHEM_NMC, offset_lsb=5, relax_after_charge_ms=10 ** 8, relax_after_discharge_ms=10 ** 8)
    c0 = p.s.charge_mas()
    p.run(HOUR, 0, fets_off=True, noise=1)
    # only the first settle readings may count (4 x 5 LSB x 0.25 mAs)
    assert abs(p.s.charge_mas() - c0) <= 8


# ------------------------------------------------------------ capacity learning
def cycle_full_empty(p, cycles, current=5000):
    """Charge to full (CV tail, sync) and discharge to empty (sync)."""
    chem = p.chem
    full_mv = defaults(chem)[P.P_FULL_CELL_MV] + 20
    empty_mv = defaults(chem)[P.P_EMPTY_CELL_MV] - 20
    steps = []
    for _ in range(cycles):
        while p.true_dpct < 999.9:
            p.run(5 * MIN, current)
        p.run(2 * MIN, p.cap // 40, mvs=[full_mv] * p.cells)  # tail: sync
        steps.append(p.s.full_capacity_mah)
        while p.true_dpct > 0.1:
            p.run(5 * MIN, -current)
        p.run(MIN, -100, mvs=[empty_mv] * p.cells)
        steps.append(p.s.full_capacity_mah)
    return steps


@pytest.mark.slow
def test_capacity_learning_converges_with_bounded_steps():
    rated = 10000
    p = Pack(CHEM_NMC, cap=rated, true_dpct=0, relax_after_charge_ms=10 ** 8,
             relax_after_discharge_ms=10 ** 8)
    p.cap = 8000  # the real pack has faded to 80 %
    p.true_mas = Fraction(0)
    caps = [p.s.full_capacity_mah] + cycle_full_empty(p, 6)
    for a, b in zip(caps, caps[1:]):
        assert abs(b - a) <= a // 20 + 1  # never more than 5 % per update
    assert abs(caps[-1] - 8000) <= 160, caps  # within 2 %
    assert p.s.soh_dpct == round(caps[-1] * 1000 / rated)
    assert p.s.learn_count >= 8
    # discharged charge: about 6 x 8 Ah / learned capacity
    assert 500 <= p.s.cycles_dc <= 720


def test_capacity_grows_too_and_cycles_count():
    p = Pack(CHEM_LFP, cap=10000, true_dpct=0, relax_after_charge_ms=10 ** 8,
             relax_after_discharge_ms=10 ** 8)
    p.cap = 10600
    p.true_mas = Fraction(0)
    caps = cycle_full_empty(p, 3, current=8000)
    assert caps[-1] > 10300
    assert 250 <= p.s.cycles_dc <= 330


def test_no_learning_from_close_anchors():
    p = Pack(CHEM_NMC, cap=10000, true_dpct=800, relax_after_discharge_ms=30 * MIN)
    p.true_mas = Fraction(p.cap * 3600)
    p.run(2 * MIN, 400, mvs=[4170] * 4)  # full
    p.run(12 * MIN, -10000)  # 20 % out
    p.run(40 * MIN, 0)  # rested OCV anchor, only 20 % away
    assert p.s.learn_count == 0 and p.s.full_capacity_mah == 10000


# ------------------------------------------------------------ start / persistence
def test_start_from_ocv_without_state():
    for chem, d in ((CHEM_NMC, 370), (CHEM_LFP, 50), (CHEM_LTO, 800)):
        s = Soc(chem, 4, 10000, 1000)
        s.start(0, meas_of([ocv_mv(chem, d)] * 4))
        assert abs(s.soc_dpct - d) <= 3
        assert not s.started_from_state


def test_state_roundtrip_and_rejections():
    p = Pack(CHEM_NMC, true_dpct=600)
    s = p.s
    s.cycles_dc = 1234
    s._set_full(9500)
    s.offset_dlsb = -7
    s.offset_learned = True
    s.set_soc(600)
    buf = bytearray(STATE_SIZE + 4)
    assert s.save_state(buf) == STATE_SIZE
    state = bytes(buf[:STATE_SIZE])
    m = meas_of([ocv_mv(CHEM_NMC, 605)] * 4)
    s2 = Soc(CHEM_NMC, 4, 10000, 1000)
    s2.start(0, m, state)
    assert s2.started_from_state
    assert (s2.soc_dpct, s2.full_capacity_mah, s2.cycles_dc, s2.offset_dlsb) == (600, 9500, 1234, -7)
    assert s2.offset_learned and s2.soh_dpct == 950
    # corrupted: CRC
    bad = bytearray(state)
    bad[3] ^= 0x40
    s3 = Soc(CHEM_NMC, 4, 10000, 1000)
    s3.start(0, m, bytes(bad))
    assert not s3.started_from_state and s3.full_capacity_mah == 10000
    assert abs(s3.soc_dpct - 605) <= 3
    # inconsistent with the OCV (the pack was charged elsewhere): SOC from the OCV,
    # the learned capacity, cycles and offset kept
    m90 = meas_of([ocv_mv(CHEM_NMC, 900)] * 4)
    s4 = Soc(CHEM_NMC, 4, 10000, 1000)
    s4.start(0, m90, state)
    assert not s4.started_from_state
    assert abs(s4.soc_dpct - 900) <= 3
    assert (s4.full_capacity_mah, s4.cycles_dc) == (9500, 1234)
    # truncated / wrong version
    for junk in (b"", state[:10], b"\x02" + state[1:]):
        s5 = Soc(CHEM_NMC, 4, 10000, 1000)
        s5.start(0, m, junk)
        assert not s5.started_from_state
    # under load the voltage is no OCV: the state is kept
    ml = meas_of([ocv_mv(CHEM_NMC, 900)] * 4, current_ma=-5000)
    s6 = Soc(CHEM_NMC, 4, 10000, 1000)
    s6.start(0, ml, state)
    assert s6.started_from_state and s6.soc_dpct == 600


def test_lfp_plateau_state_is_kept():
    # on LFP's plateau any SOC from 30 to 70 % agrees with the voltage
    p = Pack(CHEM_LFP, true_dpct=400)
    p.s.set_soc(400)
    buf = bytearray(STATE_SIZE)
    p.s.save_state(buf)
    s = Soc(CHEM_LFP, 4, 10000, 1000)
    s.start(0, meas_of([ocv_mv(CHEM_LFP, 600)] * 4), bytes(buf))
    assert s.started_from_state and s.soc_dpct == 400


def test_state_from_other_rated_capacity_keeps_fraction():
    s = Soc(CHEM_NMC, 4, 10000, 1000)
    s.start(0, meas_of([ocv_mv(CHEM_NMC, 500)] * 4))
    buf = bytearray(STATE_SIZE)
    s.save_state(buf)
    s2 = Soc(CHEM_NMC, 4, 20000, 1000)
    s2.start(0, meas_of([ocv_mv(CHEM_NMC, 500)] * 4), bytes(buf))
    assert s2.full_capacity_mah == 20000 and abs(s2.soc_dpct - 500) <= 3


# ------------------------------------------------------------ energy and times
def test_remaining_energy_lfp_4s_10ah_half():
    s = Soc(CHEM_LFP, 4, 10000, 1000)
    s.start(0, meas_of([ocv_mv(CHEM_LFP, 500)] * 4))
    assert s.soc_dpct == 500
    assert 620 <= s.remaining_dwh <= 660  # ~64 Wh
    # the exact integral of the table
    t = DEFAULT_OCV[CHEM_LFP]
    wh = sum((t[i] + t[i + 1]) / 2 * 0.05 for i in range(10)) * 4 * 10 / 1000
    assert abs(s.remaining_dwh - wh * 10) <= 1
    assert s.energy_dwh(1000, 10000) >= 2 * s.remaining_dwh - 5 + 0  # the top half holds more


def test_energy_large_pack_no_overflow():
    s = Soc(CHEM_NMC, 15, 2000000, 100)
    wh = s.energy_dwh(1000, 2000000)
    # 15 x ~3.8 V x 2000 Ah ~ 114 kWh
    assert 1_100_000 <= wh <= 1_200_000
    assert wh < 2 ** 30


def test_tte_and_ttf():
    p = Pack(CHEM_LFP, true_dpct=500, relax_after_charge_ms=10 ** 8, relax_after_discharge_ms=10 ** 8)
    assert p.s.tte_min == NO_TIME and p.s.ttf_min == NO_TIME
    p.run(5 * MIN, -5000)
    assert abs(p.s.current_avg_ma + 5000) < 100
    expect = p.s.remaining_mah * 60 / 5000
    assert abs(p.s.tte_min - expect) <= 3 and 50 <= p.s.tte_min <= 60
    assert p.s.ttf_min == NO_TIME
    p.run(5 * MIN, 5000)
    assert p.s.tte_min == NO_TIME
    assert abs(p.s.ttf_min - (10000 - p.s.remaining_mah) * 60 / 5000) <= 3
    p.run(10 * MIN, 0)
    assert p.s.tte_min == NO_TIME and p.s.ttf_min == NO_TIME


def test_ticks_wrap():
    t0 = TICKS_PERIOD - 10 * MIN
    p = Pack(CHEM_NMC, true_dpct=500, t0=t0, relax_after_discharge_ms=30 * MIN)
    p.s.set_soc(700)
    p.run(MIN, -2000)
    p.run(29 * MIN, 0)
    assert p.s.ocv_soc_dpct == -1
    p.run(2 * MIN, 0)
    assert p.s.ocv_soc_dpct != -1


# ------------------------------------------------------------ MicroPython
def test_update_allocates_nothing_under_micropython(micropython):
    proc = run_mpy(micropython, "mpy_soc_alloc.py")
    assert "OK" in proc.stdout


# ------------------------------------------------------------ 31-bit small ints
def test_update_keeps_integers_under_2_30_for_the_largest_pack():
    """The ESP32's small ints are 31-bit: trace every int local and attribute
    in bms.soc and its base class's bms.cc while a 2,000,000 mAh 15S
    pack on a 50 uOhm shunt runs at the counter's full scale through
    counting, syncs, rest and the OCV blend."""
    import sys

    from bms import cc

    worst = [0, None]
    src = (socmod.__file__, cc.__file__)

    def check(d, where):
        for k, v in d.items():
            if type(v) is int and abs(v) >= 2 ** 30 and worst[0] < abs(v):
                worst[0] = abs(v)
                worst[1] = (where, k, v)

    def tracer(frame, event, arg):
        if frame.f_code.co_filename not in src:
            return None
        if event in ("line", "return"):
            check(frame.f_locals, frame.f_code.co_name)
            me = frame.f_locals.get("self")
            if isinstance(me, _Soc):
                check(me.__dict__, frame.f_code.co_name + ".self")
        return tracer

    s = Soc(CHEM_NMC, 15, 2000000, 50)
    s.set_ocv_table(list(DEFAULT_OCV[CHEM_NMC]))  # a user's table: its OCV points anchor
    s.configure(4150, 200000, 1000, 3100, 1000, 100, 3000, 3000)
    m = meas_of([ocv_mv(CHEM_NMC, 500)] * 15)
    s.start(0, m)
    t = 0
    plan = [(32767, 300, False, 3900), (-32768, 300, False, 3600), (0, 20, False, 3000),
            (32767, 1500, False, 4100), (100, 20, False, 4200), (-32768, 1500, False, 3700),
            (0, 2600, True, 3650), (-32768, 200, False, 3000), (0, 20, False, 3000), (32767, 100, False, 4000)]
    sys.settrace(tracer)
    try:
        for raw, n, off, mv in plan:
            for c in range(15):
                m.cell_mv[c] = mv
            m.update_extremes()
            m.cc_raw = raw
            for _ in range(n):
                t = ticks_add(t, STEP)
                s.update(t, m, True, off)
    finally:
        sys.settrace(None)
    assert worst[1] is None, worst[1]
    assert s.learn_count >= 1 and s.ocv_soc_dpct >= 0


# ------------------------------------------------------------ late readings
@settings(max_examples=300, deadline=None)
@given(t0=st.integers(0, TICKS_PERIOD - 1),
       readings=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 249)), min_size=1, max_size=60),
       first_latency=st.integers(0, 249))
def test_every_window_is_counted_once_however_late_the_readings(t0, readings, first_latency):
    """The chip ends a window every 250 ms and keeps only the newest; the
    loop reads it some time in the next 250 ms (its latency), and a blocked
    loop misses windows. The counted charge is one reading per window:
    exact once the loop has read one window as promptly as any later one
    (its grid is then the chip's), and never more than one window off
    before that (from readings alone the grid's phase is ambiguous: a
    late reading and a prompt one a window later look alike)."""
    raw = 200  # LSB per window
    p = Pack(shunt=8440, start=False, t0=t0)
    s = p.s
    m = meas_of([3300] * 4, current_ma=200, cc_raw=raw)
    w = 0  # the newest window's end, ms after t0
    s.start(ticks_add(t0, first_latency), m, None)
    c0 = s.charge_mas()
    windows = 0
    for missed, latency in readings:
        w += 250 * (1 + missed)
        windows += 1 + missed
        s.update(ticks_add(t0, w + latency), m, True, False)
    per_window = Fraction(raw * 2110, 8440)  # mAs: 8.44 uV/LSB over 8.44 mOhm for 250 ms
    err = s.charge_mas() - c0 - per_window * windows
    if first_latency <= min(lat for _, lat in readings):
        assert abs(err) <= 1, (err, windows)
    else:
        assert abs(err) <= per_window + 1, (err, windows)


def test_a_summed_late_reading_is_counted_a_window_at_a_time_under_2_30():
    """The bq76952's PASSQ sums every window since the last read: a late
    cycle's sum at full scale, x 1055 in _count, would pass 2**30 (a long
    int, allocated, on the ESP32). It is counted a window's share at a
    time, and the shares add up to the sum exactly."""
    s = Soc(CHEM_NMC, 16, 100000, 100)
    parts = []
    real = s._count

    def spy(c16):
        parts.append(c16)
        real(c16)

    s._count = spy
    s.offset_dlsb = -5
    for windows, total in ((2, 65534), (40, -40 * 32767), (7, 7 * 20001 + 3)):
        parts.clear()
        s._reading(total, False, windows, 1)
        assert len(parts) == windows
        assert sum(parts) == total * 16 - s.offset_dlsb * windows
        assert all(abs(p * 1055) < 2 ** 30 for p in parts), max(map(abs, parts))
