"""Host simulator: the pack model (cells, OCV, RC, charger, load)."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bms_sim.pack import OCV_TABLES, Cell, Charger, Load, Pack, ocv_mv, soc_for_ocv


# ---------------------------------------------------------------- OCV
@pytest.mark.parametrize("chem", ["lfp", "nmc", "lto"])
def test_ocv_tables_ascending_and_monotonic(chem):
    t = OCV_TABLES[chem]
    assert len(t) == 21
    assert [s for s, _ in t] == [5.0 * i for i in range(21)]
    volts = [v for _, v in t]
    assert all(b > a for a, b in zip(volts, volts[1:]))


def test_ocv_table_values_from_reference():
    assert OCV_TABLES["lfp"][0] == (0.0, 2833)
    assert OCV_TABLES["lfp"][-1] == (100.0, 3392)
    assert OCV_TABLES["lfp"][10] == (50.0, 3265)
    assert OCV_TABLES["nmc"][0] == (0.0, 2800)
    assert OCV_TABLES["nmc"][-1] == (100.0, 4198)
    lto = OCV_TABLES["lto"]
    assert 1750 <= lto[0][1] <= 1850
    assert lto[-1][1] == 2750
    assert 2200 <= lto[10][1] <= 2400


def test_ocv_interpolates_linearly():
    # Between 95 % (3314) and 100 % (3392).
    assert ocv_mv("lfp", 0.975) == pytest.approx((3314 + 3392) / 2)
    assert ocv_mv("nmc", 0.5) == pytest.approx(3838)
    assert ocv_mv("lfp", 0.0) == pytest.approx(2833)
    assert ocv_mv("lfp", 1.0) == pytest.approx(3392)


def test_ocv_extrapolates_steeply_beyond_the_ends():
    top = ocv_mv("lfp", 1.0)
    assert ocv_mv("lfp", 1.001) - top > 3.0  # a few mV per 0.1 % over
    assert ocv_mv("lfp", 1.02) - top > 100.0
    bottom = ocv_mv("lfp", 0.0)
    assert bottom - ocv_mv("lfp", -0.001) > 3.0
    # Numerically sane far out.
    assert 0.0 <= ocv_mv("nmc", -10.0) < 100.0
    assert ocv_mv("nmc", 10.0) <= 5000.0


@given(st.floats(min_value=-0.2, max_value=1.2), st.floats(min_value=-0.2, max_value=1.2))
def test_ocv_monotonic_property(a, b):
    for chem in OCV_TABLES:
        if a < b:
            assert ocv_mv(chem, a) <= ocv_mv(chem, b)


@pytest.mark.parametrize("chem", ["lfp", "nmc", "lto"])
def test_soc_for_ocv_inverts(chem):
    for soc in (0.03, 0.33, 0.5, 0.77, 0.99):
        assert soc_for_ocv(chem, ocv_mv(chem, soc)) == pytest.approx(soc, abs=1e-6)


# --------------------------------------------------------------- Cell
def test_cell_terminal_voltage_sign_and_r0():
    c = Cell(10000, 0.5, r0_mohm=5.0, r1_mohm=3.0, tau_s=60.0, chemistry="nmc")
    ocv = c.ocv_mv()
    assert c.terminal_mv(0) == pytest.approx(ocv)
    assert c.terminal_mv(2000) == pytest.approx(ocv + 10.0)  # 2 A * 5 mOhm
    assert c.terminal_mv(-2000) == pytest.approx(ocv - 10.0)


def test_cell_charge_integration():
    c = Cell(10000, 0.5, self_discharge_pct_per_month=0.0, chemistry="lfp")
    for _ in range(3600):
        c.step(1.0, 1000.0)  # 1 A for 1 h into 10 Ah = +10 %
    assert c.soc == pytest.approx(0.6, abs=1e-9)
    for _ in range(36):
        c.step(100.0, -2000.0)  # 2 A out for 1 h = -20 %
    assert c.soc == pytest.approx(0.4, abs=1e-9)


def test_cell_rc_exact_exponential():
    c = Cell(10000, 0.5, r0_mohm=5.0, r1_mohm=4.0, tau_s=50.0, self_discharge_pct_per_month=0,
             chemistry="nmc")
    c.step(50.0, 1000.0)  # one tau in one step
    assert c.v_rc_mv == pytest.approx(4.0 * (1 - math.exp(-1)), rel=1e-9)
    c2 = Cell(10000, 0.5, r0_mohm=5.0, r1_mohm=4.0, tau_s=50.0, self_discharge_pct_per_month=0,
              chemistry="nmc")
    for _ in range(50):
        c2.step(1.0, 1000.0)  # the same in 50 steps: exact update, same answer
    assert c2.v_rc_mv == pytest.approx(c.v_rc_mv, rel=1e-9)
    # Relaxation after the current stops.
    c.step(500.0, 0.0)
    assert abs(c.v_rc_mv) < 0.01
    assert c.terminal_mv() == pytest.approx(c.ocv_mv(), abs=0.01)


def test_cell_self_discharge():
    c = Cell(10000, 0.5, self_discharge_pct_per_month=3.0, chemistry="lfp")
    for _ in range(30):
        c.step(86400.0, 0.0)
    assert c.soc == pytest.approx(0.47, abs=1e-9)


def test_cell_overcharge_not_clamped_and_voltage_rises():
    c = Cell(1000, 0.99, self_discharge_pct_per_month=0, chemistry="lfp")
    c.step(36.0 * 3, 1000.0)  # +3 % on a 1 Ah cell
    assert c.soc == pytest.approx(1.02, abs=1e-9)
    assert c.ocv_mv() > 3392 + 100
    c = Cell(1000, 0.01, self_discharge_pct_per_month=0, chemistry="lfp")
    c.step(36.0 * 2, -1000.0)
    assert c.soc == pytest.approx(-0.01, abs=1e-9)
    assert c.ocv_mv() < 2833 - 30


# --------------------------------------------------------------- Pack
def test_pack_capacity_spread_seeded():
    a = Pack(cells=8, capacity_mah=10000, seed=1)
    b = Pack(cells=8, capacity_mah=10000, seed=1)
    c = Pack(cells=8, capacity_mah=10000, seed=2)
    caps = [x.capacity_mah for x in a.cells]
    assert caps == [x.capacity_mah for x in b.cells]
    assert caps != [x.capacity_mah for x in c.cells]
    assert all(9800 <= x <= 10200 for x in caps)
    assert len(set(caps)) == 8


@pytest.mark.parametrize("chem,soc,spread", [("lfp", 50.0, 20), ("nmc", 60.0, 50), ("lto", 40.0, 10)])
def test_pack_initial_ocv_spread(chem, soc, spread):
    p = Pack(cells=5, chemistry=chem, soc_pct=soc, spread_mv=spread)
    mvs = [p.cell_mv(i) for i in range(5)]
    assert max(mvs) - min(mvs) == pytest.approx(spread, abs=0.1)
    assert mvs == sorted(mvs)  # cell i offset linearly upwards
    assert sum(mvs) / 5 == pytest.approx(ocv_mv(chem, soc / 100), abs=0.1)
    assert p.pack_mv() == pytest.approx(sum(mvs))


def test_pack_no_spread_equal_cells():
    p = Pack(cells=4, soc_pct=30.0)
    assert p.cell_soc_pct() == [pytest.approx(30.0)] * 4
    assert p.true_soc_pct() == pytest.approx(30.0)
    assert p.true_soc_pct(2) == pytest.approx(30.0)


def test_pack_temperatures_settable():
    p = Pack(cells=4)
    assert p.temperatures_c == [25.0, 25.0, 25.0]
    p.temperatures_c[1] = -5.0
    assert p.temperatures_c[1] == -5.0
    p2 = Pack(cells=4, temps_c=(10.0,))
    assert p2.temperatures_c == [10.0, 10.0, 10.0]


def test_pack_bleed_discharges_only_that_cell_and_lowers_its_voltage():
    p = Pack(cells=4, chemistry="nmc", soc_pct=50.0)
    p.step(1.0, 0.0, [0.0, 0.0, 0.0, 0.0])
    before = [p.cell_mv(i) for i in range(4)]
    bleed = [0.0, 100.0, 0.0, 0.0]
    for _ in range(3600):
        p.step(1.0, 0.0, bleed)
    socs = p.cell_soc_pct()
    cap = p.cells[1].capacity_mah
    # 100 mA for 1 h out of cell 1 only.
    assert socs[0] - socs[1] == pytest.approx(100.0 * 100.0 / cap, rel=1e-6)
    assert socs[0] == pytest.approx(socs[2]) and socs[0] == pytest.approx(socs[3])
    # Measured during bleeding: lower by the OCV drop plus I*R0 plus RC.
    c1 = p.cells[1]
    assert p.cell_mv(1) == pytest.approx(c1.ocv_mv() - 100 * c1.r0_mohm / 1000 + c1.v_rc_mv)
    assert p.cell_mv(1) < before[1] - 4.0
    assert p.cell_mv(0) == pytest.approx(before[0], abs=0.5)  # only self-discharge


def test_pack_current_flows_through_all_cells():
    p = Pack(cells=3, chemistry="nmc", soc_pct=50.0, seed=3)
    for _ in range(60):
        p.step(60.0, -5000.0)  # 5 A for 1 h
    for c in p.cells:
        assert (0.5 - c.soc) * c.capacity_mah == pytest.approx(5000.0, rel=1e-3)


# ------------------------------------------------------ charger, load
def test_load_set_off():
    ld = Load()
    assert ld.current_ma == 0 and not ld.on
    ld.set(2500)
    assert ld.current_ma == 2500 and ld.on
    ld.off()
    assert ld.current_ma == 0


def _charge(pack, charger, seconds, dt_s=1.0):
    trace = []
    for _ in range(int(seconds / dt_s)):
        i = charger.output_ma(pack, dt_s=dt_s)
        pack.step(dt_s, i)
        trace.append((i, charger.phase, pack.pack_mv(), max(pack.cell_mvs())))
    return trace


@pytest.mark.parametrize("chem,cv_mv", [("lfp", 3550), ("nmc", 4200)])
def test_charger_cc_then_cv_tapers(chem, cv_mv):
    p = Pack(cells=4, chemistry=chem, soc_pct=90.0, capacity_mah=10000)
    ch = Charger()
    ch.set(5000, cv_mv)
    trace = _charge(p, ch, 4 * 3600)
    currents = [t[0] for t in trace]
    assert trace[0][1] == "cc" and currents[0] == 5000
    assert all(0 <= i <= 5000 for i in currents)
    cv_start = next(k for k, t in enumerate(trace) if t[1] == "cv")
    # CV: the pack is held at cells * cv (never above), the current tapers.
    for i, phase, pack_mv, _ in trace[cv_start:]:
        assert phase == "cv"
        assert pack_mv == pytest.approx(4 * cv_mv, abs=0.5)
    tail = currents[cv_start:]
    assert all(b <= a + 1e-6 for a, b in zip(tail, tail[1:]))
    assert tail[-1] < 250  # below C/40 after hours
    assert p.true_soc_pct() > 99.0
    assert p.true_soc_pct() < 103.0


def test_charger_regulates_pack_not_cells():
    # Unbalanced pack: at pack CV the highest cell sits above cv.
    p = Pack(cells=4, chemistry="nmc", soc_pct=95.0, spread_mv=60)
    ch = Charger()
    ch.set(3000, 4200)
    trace = _charge(p, ch, 7200)
    assert trace[-1][2] == pytest.approx(4 * 4200, abs=0.5)
    assert trace[-1][3] > 4200 + 10


def test_charger_without_cv_never_stops():
    p = Pack(cells=4, chemistry="lfp", soc_pct=95.0, capacity_mah=1000)
    ch = Charger()
    ch.set(1000)
    trace = _charge(p, ch, 600, dt_s=10.0)
    assert all(t[0] == 1000 and t[1] == "cc" for t in trace)
    assert p.true_soc_pct() > 110.0  # over-charged: nothing stopped it
    assert max(p.cell_mvs()) > 3800
    ch.off()
    assert ch.output_ma(p) == 0 and ch.phase == "off"


def test_charger_supplies_the_load_in_cv():
    p = Pack(cells=4, chemistry="nmc", soc_pct=99.0)
    ch = Charger()
    ch.set(5000, 4200)
    _charge(p, ch, 7200)
    i_pack = ch.output_ma(p, 0.0)
    i_with_load = ch.output_ma(p, 1000.0)
    assert i_with_load == pytest.approx(i_pack + 1000.0)


def test_charger_off_when_set_zero():
    ch = Charger()
    ch.set(0, 3550)
    assert ch.output_ma(Pack(cells=4)) == 0
