"""Balancing in the simulator: a 4-cell pack that starts 150 mV apart,
charged and discharged through repeated cycles by the real control loop,
ends with a spread under the balance differential."""
import pytest

from bms import params as P
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.world import World

CAP = 2000


@pytest.mark.slow
def test_a_150_mv_spread_is_balanced_out_over_cycles(tmp_path):
    provision(str(tmp_path), 4, "nmc", CAP, 1000)
    # NMC near the top of charge, where an imbalance shows: 150 mV is about 20 % SOC
    world = World(cells=4, chemistry="nmc", capacity_mah=CAP, soc_pct=90.0, spread_mv=150, seed=2)
    sim = DirectSim(world, str(tmp_path))
    sim.run(2000)
    m = sim.app.cycle.meas
    diff = sim.app.values[P.P_BAL_DIFF_MV]
    start = m.cell_max_mv - m.cell_min_mv
    print("\nstart: spread %d mV, cells %s mV, true SOC %s %%" % (
        start, list(m.cell_mv[:4]), [round(x, 1) for x in world.pack.cell_soc_pct()]))
    assert 140 <= start <= 160
    spreads = []
    for cycle in range(1, 7):
        # CC-CV at C/2 to 4.20 V per cell, held 2 h (an absorb phase)
        world.load.off()
        world.charger.set(CAP // 2, 4200)
        sim.run(2 * 3600 * 1000)
        spread = m.cell_max_mv - m.cell_min_mv
        spreads.append(spread)
        world.charger.off()
        sim.run(20 * 60 * 1000)
        print("cycle %d: spread at the end of charge %3d mV, after 20 min rest %3d mV, true SOC %s %%" % (
            cycle, spread, m.cell_max_mv - m.cell_min_mv, [round(x, 1) for x in world.pack.cell_soc_pct()]))
        assert world.chip.adjacent_balance_violations == 0
        if spread < diff and cycle >= 3:
            break
        world.load.set(CAP // 2)  # discharge half the pack
        sim.run(3600 * 1000)
    assert spreads[-1] < diff, spreads
    assert sim.app.cycle.protection.protect_flags == 0
