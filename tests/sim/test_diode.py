"""Body diodes: a FET held off for one direction passes the other
direction's current through its body diode (the simulated World models
the drop and the heat). The firmware's policy (bms.switching.switch_fets,
docs/PROTECTION.md "Body diodes") switches that FET on while current flows
the allowed way above diode_on_ma, and off in the first cycle it does not.

DirectSim: the firmware's real control loop on CPython against the
simulated chip and pack; the last test runs it under the MicroPython twin.
"""
import math

import pytest

from bms import switching as A
from bms import params as P
from bms import protection as PR
from bms.spec import protrules
from bms import regmap as M
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim import world as W
from bms_sim.world import World

CYCLE_MS = 250
ROW = {r[0]: i for i, r in enumerate(protrules.ROWS)}
BIT = protrules.bit_of()  # a protection row's bit in protect_flags
CHG, DSG = 0, 1  # World's per-FET accounting index
LOAD_MA = 20000
CHARGE_MA = 10000


def make(tmp_path, soc_pct=50.0, capacity_mah=40000, cells=4, extra=None, **kw):
    # 40 Ah: the 1 C current limits (40 A) sit above the 20 A load and the 10 A charger
    provision(str(tmp_path), cells, "lfp", capacity_mah, 1000, extra=extra)
    world = World(cells=cells, chemistry="lfp", capacity_mah=capacity_mah, soc_pct=soc_pct, **kw)
    sim = DirectSim(world, str(tmp_path), on_cycle=_record)
    sim.cycles = []
    sim.wrong_way_ms = 0  # current the blocked way through a FET that is on (set by watch())
    sim.run(1500)
    assert sim.app.cycle.meas.fets == PR.BOTH and sim.app.cycle.protection.protect_flags == 0
    world.diode_over_ma = sim.app.values[P.P_DIODE_ON_MA] or 1000
    return sim


def _record(sim):
    a = sim.app
    sim.cycles.append((sim.world.now_ms, a.cycle.meas.current_ma, a.cycle.meas.fets, a.cycle.protection.block))


def active(sim, name):
    return bool(sim.app.cycle.protection.protect_flags & (1 << BIT[name]))


def fet_flags(sim):
    return sim.app.ir.words[M.IR_FET_FLAGS]


def watch(sim, blocked):
    """Count, piece by piece, the ms that current flows the way `blocked`
    (PR.CHG: charging, PR.DSG: discharging) holds off."""
    sim.wrong_way_ms = 0

    def on_advance(w):
        i = w.piece_ma
        if (i > 0 if blocked == PR.CHG else i < 0) and sim.app.cycle.protection.block & blocked:
            sim.wrong_way_ms += w.piece_ms

    sim.board.on_advance = on_advance


def check_policy(sim, blocked, since):
    """The policy cycle by cycle, from cycles[since:]: while only `blocked`
    is held off, its FET is on after a cycle exactly when that cycle
    measured current the other way at or above the threshold."""
    thr = sim.app.values[P.P_DIODE_ON_MA]
    n = 0
    for now, i, fets, block in sim.cycles[since:]:
        if block != blocked:
            continue
        allowed = -i >= thr if blocked == PR.CHG else i >= thr
        assert bool(fets & blocked) == allowed, (now, i, fets, block)
        n += 1
    assert n, "no cycle with only this FET held off"


def diode_episode(sim, name, blocked, settle_ms=3000):
    """With `name` holding one FET off: current the allowed way closes it
    within one cycle, then the current turns and it opens in the first
    cycle after, and nothing flows the blocked way once it is open."""
    w = sim.world
    k = CHG if blocked == PR.CHG else DSG
    assert active(sim, name) and sim.app.cycle.protection.block == blocked, sim.app.cycle.protection.block
    assert not (fet_flags(sim) & blocked)
    start = len(sim.cycles)
    # 1. the allowed way: a load under a charge block, a charger under a discharge block
    d0 = w.diode_over_ms[k]
    if blocked == PR.CHG:
        w.load.set(LOAD_MA)
    else:
        w.charger.set(CHARGE_MA, None)
    sim.run(settle_ms)
    assert active(sim, name), "%s released during the episode: the test no longer tests it" % name
    over = w.diode_over_ms[k] - d0
    assert 0 < over <= CYCLE_MS, "the diode carried it %d ms" % over
    assert w.fets() == (True, True)
    assert w.diode_ma == [0.0, 0.0]
    assert fet_flags(sim) == M.FET_CHG | M.FET_DSG | M.FET_DIODE
    pr = sim.app.cycle.protection
    reason = pr.chg_reason if blocked == PR.CHG else pr.dsg_reason
    assert reason == ROW[name] + 1, "the off reason still names the row"
    assert pr.protect_flags & (1 << BIT[name])
    # 2. the current turns: the blocked way flows at most the one cycle it takes to see it
    watch(sim, blocked)
    if blocked == PR.CHG:
        w.load.off()
        w.charger.set(CHARGE_MA, None)
    else:
        w.charger.off()
        w.load.set(LOAD_MA // 4)
    sim.run(2000)
    sim.board.on_advance = None
    assert active(sim, name)
    assert not (fet_flags(sim) & blocked) and fet_flags(sim) & M.FET_DIODE == 0
    assert abs(w.current_ma) == 0, "with the FET open nothing flows the blocked way"
    assert 0 < sim.wrong_way_ms <= CYCLE_MS, sim.wrong_way_ms
    check_policy(sim, blocked, start)
    w.load.off()
    w.charger.off()


# -- the rows -------------------------------------------------------------------

def test_the_diode_rows_are_the_one_direction_rows_but_the_chips_own_trips():
    def names(mask):
        return set(protrules.names(mask))

    assert names(A.DIODE_CHG_ROWS) == {"cell_ov", "pack_ov", "chg_oc", "chg_ot", "chg_ut", "soc_high", "storage_high"}
    assert names(A.DIODE_DSG_ROWS) == {"cell_uv", "pack_uv", "dsg_oc", "afe_ocd", "dsg_ot", "dsg_ut", "soc_low",
                                       "storage_low"}
    by = {r[0]: r for r in protrules.ROWS}
    for n in names(A.DIODE_CHG_ROWS):
        assert by[n][7] == PR.CHG and by[n][8] == PR.PROT, n
    for n in names(A.DIODE_DSG_ROWS):
        assert by[n][7] == PR.DSG and by[n][8] == PR.PROT, n
    one_way = {r[0] for r in protrules.ROWS if r[8] == PR.PROT and r[7] in (PR.CHG, PR.DSG)}
    left_out = one_way - names(A.DIODE_CHG_ROWS | A.DIODE_DSG_ROWS)
    assert left_out == {"afe_scd", "afe_ov", "afe_uv"}


# -- charge held off: a load discharges through the CHG FET ---------------------

@pytest.mark.parametrize("name,temp_c", [("chg_ut", -5.0), ("chg_ot", 50.0)])
def test_charge_temperature_block_closes_chg_for_a_load(tmp_path, name, temp_c):
    sim = make(tmp_path)
    sim.world.pack.temperatures_c[0] = temp_c
    assert sim.run_until(lambda s: active(s, name), 30000) is not None
    sim.run(1000)
    assert sim.world.fets() == (False, True)
    diode_episode(sim, name, PR.CHG)
    # the load alone stopping (no reversal) opens it too
    start = len(sim.cycles)
    sim.world.load.set(LOAD_MA)
    sim.run(2000)
    assert sim.world.fets() == (True, True)
    sim.world.load.off()
    sim.run(1000)
    assert sim.world.fets() == (False, True)
    check_policy(sim, PR.CHG, start)


@pytest.mark.parametrize("offset_ms", [10, 125, 200])
def test_changes_inside_a_window(tmp_path, offset_ms):
    # the current starts or turns part way through a 250 ms window: the
    # diode still carries it at most one window; the blocked way flows until
    # the first window whose average shows it, at most two
    sim = make(tmp_path)
    w = sim.world
    w.pack.temperatures_c[0] = -5.0
    assert sim.run_until(lambda s: active(s, "chg_ut"), 30000) is not None
    sim.run(1000)
    start = len(sim.cycles)
    d0 = w.diode_over_ms[CHG]
    sim.run(offset_ms)
    w.load.set(LOAD_MA)
    sim.run(2000 + offset_ms)
    assert w.now_ms % CYCLE_MS, "the change must fall inside a window"
    assert w.fets() == (True, True) and w.diode_over_ms[CHG] - d0 <= CYCLE_MS
    watch(sim, PR.CHG)
    w.load.off()
    w.charger.set(CHARGE_MA, None)
    sim.run(2000)
    assert w.fets() == (False, True) and w.current_ma == 0
    assert 0 < sim.wrong_way_ms <= 2 * CYCLE_MS, sim.wrong_way_ms
    check_policy(sim, PR.CHG, start)


def test_closing_that_turns_the_current_does_not_take_turns(tmp_path):
    # a charger that gives more once CHG closes (an MPPT finding a better
    # point as the bus rises to the pack): each closing turns the current, so
    # CHG waits _DIODE_HOLD_MS before the next try instead of every other cycle
    sim = make(tmp_path)
    w = sim.world
    w.pack.temperatures_c[0] = -5.0
    assert sim.run_until(lambda s: active(s, "chg_ut"), 30000) is not None
    sim.run(1000)
    w.load.set(5000)
    watch(sim, PR.CHG)
    count = sim.board.on_advance

    def following_charger(w):
        w.charger.set(8000 if w.chip.chg_on else 2000, None)
        count(w)

    sim.board.on_advance = following_charger
    closings = []
    sim.on_cycle = lambda s: closings.append(s.world.fets()[0])
    sim.run(20000)
    tries = sum(1 for a, b in zip(closings, closings[1:]) if b and not a)
    assert 2 <= tries <= 20000 // A._DIODE_HOLD_MS + 1, tries
    assert sim.wrong_way_ms <= tries * 2 * CYCLE_MS, sim.wrong_way_ms


def test_charge_block_seen_while_a_load_runs_never_opens_chg(tmp_path):
    # the cold comes while a load draws: CHG is needed for the load, so it stays on
    sim = make(tmp_path)
    sim.world.load.set(LOAD_MA)
    sim.run(2000)
    sim.world.pack.temperatures_c[0] = -5.0
    assert sim.run_until(lambda s: active(s, "chg_ut"), 30000) is not None
    sim.run(5000)
    assert sim.world.fets() == (True, True) and sim.world.diode_over_ms == [0, 0]
    assert fet_flags(sim) & M.FET_DIODE


def test_cell_over_voltage_closes_chg_for_a_load(tmp_path):
    sim = make(tmp_path, soc_pct=97.0, spread_mv=10)
    sim.world.charger.set(5000, None)  # a charger that never stops
    assert sim.run_until(lambda s: active(s, "cell_ov"), 3600 * 1000) is not None
    sim.world.charger.off()
    sim.run(1000)
    diode_episode(sim, "cell_ov", PR.CHG, settle_ms=1500)


def test_charge_over_current_closes_chg_for_a_load(tmp_path):
    sim = make(tmp_path)
    sim.world.charger.set(50000, None)  # 1.25 C, above the 1 C limit
    assert sim.run_until(lambda s: active(s, "chg_oc"), 10000) is not None
    sim.world.charger.off()
    sim.run(1000)
    diode_episode(sim, "chg_oc", PR.CHG)


# -- discharge held off: a charger charges through the DSG FET -------------------

def test_cell_under_voltage_closes_dsg_for_a_charger(tmp_path):
    sim = make(tmp_path, soc_pct=1.0, extra={"pack_uv_mv": 4 * 2000})  # the cell row, not the pack's
    sim.world.load.set(5000)
    assert sim.run_until(lambda s: active(s, "cell_uv"), 3600 * 1000) is not None
    sim.world.load.off()
    sim.run(1000)
    assert not active(sim, "afe_uv"), "the chip's own trip would keep DSG off: not this test"
    diode_episode(sim, "cell_uv", PR.DSG, settle_ms=1500)


@pytest.mark.parametrize("row,load_ma,not_row", [
    ("dsg_oc", 50000, "afe_ocd"),  # 1.25 C: above dsg_oc (1 C), below the AFE's 2 C
    ("afe_ocd", 100000, "afe_scd"),  # 2.5 C: the chip's OCD (2 C) trips, below its short-circuit level
])
def test_discharge_over_current_closes_dsg_for_a_charger(tmp_path, row, load_ma, not_row):
    sim = make(tmp_path)
    sim.world.load.set(load_ma)
    assert sim.run_until(lambda s: active(s, row), 10000) is not None
    sim.world.load.off()
    sim.run(1000)
    assert not active(sim, not_row)
    diode_episode(sim, row, PR.DSG)


def test_short_circuit_keeps_dsg_open_even_for_a_charger(tmp_path):
    # after a short the DSG FET closes only by the short-circuit retry
    sim = make(tmp_path)
    w = sim.world
    w.load.set(1000000)  # a dead short
    assert sim.run_until(lambda s: active(s, "afe_scd"), 5000) is not None
    w.load.off()
    w.charger.set(CHARGE_MA, None)
    d0 = w.diode_over_ms[DSG]
    sim.run(sim.app.values[P.P_SCD_RETRY_MS] - 2000)
    assert active(sim, "afe_scd") and w.fets() == (True, False)
    assert w.diode_over_ms[DSG] - d0 >= 2000, "the DSG diode carries the charge meanwhile"
    assert sim.run_until(lambda s: not active(s, "afe_scd"), 10000) is not None
    sim.run(500)
    assert w.fets() == (True, True) and fet_flags(sim) & M.FET_DIODE == 0


def test_nothing_closes_under_a_both_way_block(tmp_path):
    # a thermistor fault holds both FETs: no current could flow, and none is let through
    sim = make(tmp_path)
    sim.world.load.set(LOAD_MA)
    sim.run(1000)
    sim.world.chip.thermistor_fault(0, "open")
    assert sim.run_until(lambda s: active(s, "temp_sensor"), 10000) is not None
    sim.run(3000)
    assert sim.world.fets() == (False, False) and sim.world.current_ma == 0


# -- the heat ---------------------------------------------------------------------

def _hot_sim(tmp_path, diode_on_ma):
    # a bq76930 (two thermistors): TS1 on the cells, TS2 on the FETs' heatsink
    extra = {"temp_sensors": 3, "fet_temp_sensor": 2, "diode_on_ma": diode_on_ma}
    sim = make(tmp_path, cells=10, extra=extra, fet_sensor=1)
    sim.world.pack.temperatures_c[0] = -5.0
    assert sim.run_until(lambda s: active(s, "chg_ut"), 30000) is not None
    return sim


def test_the_diode_heats_the_fets_until_their_over_temperature_trips(tmp_path):
    sim = _hot_sim(tmp_path, 0)  # the policy off: the CHG diode carries the load
    w = sim.world
    w.load.set(LOAD_MA)
    sim.run(2000)
    assert w.fets() == (False, True) and w.diode_ma[CHG] == pytest.approx(LOAD_MA, rel=0.01)
    t0 = w.now_ms
    diode_w = W.DIODE_DROP_V * LOAD_MA / 1000  # 14 W
    watts = diode_w + W.RDS_ON_MOHM / 1000 * (LOAD_MA / 1000) ** 2  # and 1.2 W in the DSG channel
    rise = watts * W.FET_RTH_K_PER_W  # 76 K at the end
    sim.run(int(W.FET_TAU_S * 1000))
    expected = 25.0 + rise * (1 - math.exp(-(w.now_ms - t0 + 2000) / 1000.0 / W.FET_TAU_S))
    # what the firmware measures (0.1 degC) on the FET sensor, refreshed every 2 s
    measured = sim.app.cycle.protection.q[PR.Q_FET_TEMP_DC] / 10.0
    assert measured == pytest.approx(expected, abs=1.0), (measured, expected)
    assert w.diode_mj[CHG] > diode_w * 60000  # mJ: a minute of 14 W
    fet_ot = sim.app.values[P.P_FET_OT_DC] / 10.0  # 85 degC
    took = sim.run_until(lambda s: active(s, "fet_ot"), 300 * 1000)
    assert took is not None, "the FET over-temperature row never reacted"
    t_trip = -W.FET_TAU_S * math.log(1 - (fet_ot - 25.0) / rise)  # from the load's start
    assert abs((w.now_ms - t0 + 2000) / 1000.0 - t_trip) < 10, (w.now_ms - t0, t_trip)
    assert w.fets() == (False, False)


def test_with_the_policy_the_fets_stay_cool(tmp_path):
    sim = _hot_sim(tmp_path, 1000)
    w = sim.world
    w.load.set(LOAD_MA)
    sim.run(300 * 1000)  # five time constants
    assert w.fets() == (True, True) and active(sim, "chg_ut") and not active(sim, "fet_ot")
    assert w.diode_over_ms[CHG] <= CYCLE_MS
    # only the channels' Rds(on): 2 x 3 mOhm x (20 A)^2 = 2.4 W, 12 K
    rise = 2 * W.RDS_ON_MOHM / 1000 * (LOAD_MA / 1000) ** 2 * W.FET_RTH_K_PER_W
    assert sim.app.cycle.protection.q[PR.Q_FET_TEMP_DC] / 10.0 == pytest.approx(25.0 + rise, abs=1.5)


def test_the_world_rejects_a_fet_sensor_it_does_not_have():
    with pytest.raises(ValueError, match="fet_sensor 3: no such thermistor"):
        World(fet_sensor=3)



# -- under MicroPython ------------------------------------------------------------

def test_cold_charge_block_with_a_load_under_micropython(tmp_path):
    import test_e2e_protection as E
    from bms_sim.server import SimServer

    provision(str(tmp_path), 4, "lfp", 40000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=40000, soc_pct=50.0, seed=5)
    server = SimServer(world, str(tmp_path), speed=None, link_path=str(tmp_path / "tty"))
    with server:
        link = server.link_path
        E.wait_for(link, lambda d: d["charge_fet"] and d["discharge_fet"], server)
        with server.lock:
            world.pack.temperatures_c[0] = -5.0
        d = E.wait_for(link, lambda d: "chg_ut" in d["protections"] and not d["charge_fet"], server)
        with server.lock:
            world.load.set(LOAD_MA)
        d = E.wait_for(link, lambda d: d["charge_fet"], server)
        assert "chg_ut" in d["protections"] and d["charge_off_reason"] == "chg_ut" and d["fet_for_diode"]
        from bmsctl.fmt import format_status

        assert "FETs      charge ON for the discharge current (chg_ut still blocks charge), discharge ON" in (
            format_status(d)), format_status(d)
        with server.lock:
            assert world.fets() == (True, True)
            over = world.diode_over_ms[CHG]
            world.load.off()
            world.charger.set(CHARGE_MA, None)
        assert 0 < over <= CYCLE_MS, over
        d = E.wait_for(link, lambda d: not d["charge_fet"] and abs(d["current_a"]) < 0.5, server)
        assert "chg_ut" in d["protections"]
        with server.lock:
            assert world.current_ma == 0, "the cold pack takes no charge"
    assert "Traceback" not in server.log_tail(), server.log_tail()
