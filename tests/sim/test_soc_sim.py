"""State of charge in the simulator: the real control loop against the pack model."""
import random

import pytest

from bms import params as P
from bms import regmap as M
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.world import World
from conftest import AFES


def u32(sim, addr):
    w = sim.app.ir.words
    return (w[addr] << 16) | w[addr + 1]


@pytest.mark.slow
def test_capacity_learning_converges_to_a_changed_capacity(tmp_path):
    # the pack really holds 10 Ah; it was configured as 9 Ah
    provision(str(tmp_path), 4, "nmc", 9000, 1000)
    world = World(cells=4, chemistry="nmc", capacity_mah=10000, soc_pct=60.0, seed=4)
    sim = DirectSim(world, str(tmp_path))
    sim.run(2000)
    learned = []
    for cycle in range(3):
        world.load.off()
        world.charger.set(8000, 4200)  # 0.8 C: under chg_oc (1 C of the 9 Ah set), under half the hours of 0.5 C
        sim.run_until(lambda s: s.app.cycle.soc.soc_dpct == 1000 and s.app.cycle.soc._full_synced, 6 * 3600 * 1000, 60000)
        world.charger.off()
        sim.run(10 * 60 * 1000)
        world.load.set(8000)  # until the BMS cuts the discharge off (the empty sync)
        sim.run_until(lambda s: s.app.cycle.soc._empty_synced, 6 * 3600 * 1000, 60000)
        world.load.off()
        sim.run(10 * 60 * 1000)
        learned.append(u32(sim, M.IR_FULL_CAPACITY_MAH))
        print("cycle %d: learned full capacity %d mAh, SOH %.1f %%" % (
            cycle + 1, learned[-1], sim.app.ir.words[M.IR_SOH_DPCT] / 10.0))
    # bounded steps (<= 5 % per update) towards the truth, within a few cycles:
    # the truth is the charge the pack gives between full and the cut-off at
    # this current, a little under the cells' nameplate (the weakest cell's
    # IR drop reaches the cut-off first)
    true_mah = min(c.capacity_mah for c in world.pack.cells)
    steps = [b - a for a, b in zip([9000] + learned, learned)]
    assert all(0 <= st <= 0.05 * 10000 for st in steps), steps
    assert 0.93 * true_mah <= learned[-1] <= true_mah, (learned, true_mah)
    assert steps[-1] < 0.015 * learned[-1], "converged"
    # only the voltage rows that ended the last discharge may be active
    assert sim.app.cycle.protection.protect_flags & ~0b1111 == 0


@pytest.mark.slow
def test_soc_registers_follow_the_pack(tmp_path):
    provision(str(tmp_path), 4, "nmc", 10000, 1000)
    world = World(cells=4, chemistry="nmc", capacity_mah=10000, soc_pct=50.0, seed=4)
    sim = DirectSim(world, str(tmp_path))
    sim.run(5000)
    w = sim.app.ir.words
    soc0 = w[M.IR_SOC_DPCT]
    assert abs(soc0 / 10.0 - world.pack.true_soc_pct()) <= 5.0, (soc0, world.pack.true_soc_pct())
    world.load.set(2500)
    sim.run(3600 * 1000)  # 2.5 Ah out of 10
    assert abs((soc0 - w[M.IR_SOC_DPCT]) / 10.0 - 25.0) <= 1.0
    assert w[M.IR_TTE_MIN] != 0xFFFF and w[M.IR_TTF_MIN] == 0xFFFF
    assert abs(u32(sim, M.IR_REMAINING_MAH) - w[M.IR_SOC_DPCT] * 10) <= 20
    assert u32(sim, M.IR_REMAINING_DWH) > 0


def test_the_retired_calibration_never_switches_the_fets_off(tmp_path):
    """cc_cal_every_ms is retired: a set that still asks for the offset
    calibration loads, and nothing switches a FET off at rest for it (it cut
    a live load)."""
    provision(str(tmp_path), 4, "lfp", 10000, 1000,
              extra={"cc_cal_every_ms": 600000, "cc_cal_rest_ms": 60000, "lp_idle_ms": 0})
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, seed=4, cc_offset_lsb=4)
    sim = DirectSim(world, str(tmp_path))
    assert sim.app.values[P.P_CC_CAL_EVERY_MS] == 600000 and not sim.app.params.errors
    off_seen = []
    sim.on_cycle = lambda s: off_seen.append(s.world.fets() != (True, True))
    sim.run(20 * 1000)
    off_seen.clear()  # the FETs close after the first judgement
    sim.run(15 * 60 * 1000)
    assert not any(off_seen)
    assert not sim.app.cycle.soc.offset_learned


@pytest.mark.slow
def test_offset_learned_while_the_fets_are_off_anyway(tmp_path):
    """With the defaults nothing switches a FET off to calibrate: the offset
    is learned in the pack's own FETs-off time (here low power, whose first
    seconds read every window for it), and a FET on never teaches it."""
    provision(str(tmp_path), 4, "lfp", 10000, 1000)
    # 2 LSB (17 mA): under lp_idle_ma's 20 mA, so the idle pack goes to low
    # power (the datasheet's worst case, 3 LSB = 25 mA, keeps it working,
    # FETs on: it then learns at the next trip, storage rest or sleep)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, seed=4, cc_offset_lsb=2)
    sim = DirectSim(world, str(tmp_path))
    assert sim.app.values[P.P_CC_CAL_EVERY_MS] == 0
    # low power after lp_idle_ms awake from the boot, then lp_idle_ms idle
    sim.run(59 * 60 * 1000)
    assert world.fets() == (True, True) and not sim.app.cycle.soc.offset_learned, "FETs on: nothing learned"
    assert sim.run_until(lambda s: s.app.modes.power.mode == 1, 5 * 60 * 1000) is not None, "low power"
    t = sim.run_until(lambda s: s.app.cycle.soc.offset_learned, 60 * 1000, step_ms=1000)
    assert t is not None and t <= 20000, "learned in low power's first seconds: %r" % t
    assert world.fets() == (False, False)
    s = sim.app.cycle.soc
    assert abs(s.offset_dlsb - 32) <= 8, s.offset_dlsb
    print("\noffset learned %.1f s into low power: %d/16 LSB (the chip's: 32/16)" % (t / 1000.0, s.offset_dlsb))


def _count_under_load(tmp_path, stall_ms, afe=AFES[0]):
    """(counted, flowed) mAs over 10 min at 5 A, the loop blocking
    stall_ms(rnd) ms after every cycle (None: never), on the chip `afe`."""
    # the coulomb counter alone: the board's own draw neither drains the
    # pack nor is counted (it has tests of its own: tests/sim/test_sim_draw.py)
    afe.provision(tmp_path, 4, "lfp", 10000, 1000, extra={"draw_counted": 0})
    world = afe.world(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=80.0, seed=4, bms_draw=False)
    sim = DirectSim(world, str(tmp_path))
    world.load.set(5000)
    sim.run(5000)
    rnd = random.Random(7)

    def stall(s):
        ms = stall_ms(rnd) if stall_ms else 0
        if ms:
            s.world.advance(ms)

    sim.on_cycle = stall
    c0 = sim.app.cycle.soc.charge_mas()
    t0 = world.now_ms
    sim.run(10 * 60 * 1000)  # a window counted wrong would be 0.04 %; rounding the gaps was 5 % off
    sim.on_cycle = None
    sim.run(1000)  # a last stall's windows are counted at the next reading: let it come
    return c0 - sim.app.cycle.soc.charge_mas(), 5000 * (world.now_ms - t0) // 1000


@pytest.fixture(scope="module")
def unstalled(tmp_path_factory):
    return _count_under_load(tmp_path_factory.mktemp("steady"), None)


STALLS = {
    # a long reply or a network call after every 4th cycle
    "700 ms every 4th cycle": lambda r: 700 if r.random() < 0.25 else 0,
    # a 256-byte reply at 9600 baud after every other cycle: the readings
    # come late and prompt by turns (rounding the gaps counted about 5 % short)
    "290 ms every other cycle": lambda r: 290 if r.random() < 0.5 else 0,
    # any length, any time (rounding the gaps counted about 5 % over)
    "0-400 ms at random": lambda r: r.randrange(400) if r.random() < 0.5 else 0,
}


@pytest.mark.parametrize("stall", list(STALLS), ids=list(STALLS))
def test_a_stalled_loop_loses_no_charge(tmp_path, unstalled, stall):
    # the chip's windows go on while the loop blocks, and it keeps only the
    # newest reading: the count must match an unstalled loop's to 0.1 %
    counted, flowed = _count_under_load(tmp_path, STALLS[stall])
    base, base_flowed = unstalled
    print("stalled loop: %d of %d mAs counted; unstalled: %d of %d" % (counted, flowed, base, base_flowed))
    # the measurement chain's own error (the CC's 8.44 mA steps, its conversion) is the same in both
    assert abs(base - base_flowed) <= base_flowed * 5 // 1000
    assert abs(counted * base_flowed - base * flowed) <= base * flowed // 1000, (counted, flowed, base, base_flowed)


def test_a_late_cycle_counts_each_mas_once_on_the_bq76952(tmp_path):
    """The bq76952's PASSQ sums every window since the last read (counted
    once, bms.afe cc_summed; the bq769x0, which keeps only its newest
    window, is test_a_stalled_loop_loses_no_charge's): after stalls of any
    length it counts what flowed, as an unstalled loop on the same chip does."""
    afe = AFES[1]
    counted, flowed = _count_under_load(tmp_path / "stalled", STALLS["0-400 ms at random"], afe)
    base, base_flowed = _count_under_load(tmp_path / "steady", None, afe)
    print("%s: stalled %d of %d mAs, unstalled %d of %d" % (afe, counted, flowed, base, base_flowed))
    assert abs(base - base_flowed) <= base_flowed * 5 // 1000
    assert abs(counted * base_flowed - base * flowed) <= base * flowed // 1000, (counted, flowed, base, base_flowed)
