"""Balancing end to end under the real MicroPython VM, on each chip: a small
pack whose cells start far apart near full is charged for 20 minutes; over
Modbus (`bmsctl status --json`) the high cells are seen bleeding, never two
adjacent inputs on either chip (the chips' rule), and the spread closes
(tests/sim/test_balancing_sim.py charges the same pack through the control
loop in CPython until the spread is under the balance differential)."""
import pytest

from bms_sim.cli import CHARGE_CV_MV
from bms_sim.server import SimServer
from test_e2e_protection import status, wait_for

CAP_MAH = 500


@pytest.mark.slow
def test_a_spread_pack_balances_under_micropython(tmp_path, afe):
    afe.provision(tmp_path, 4, "nmc", CAP_MAH, 1000)
    # as the CPython suite: NMC 150 mV apart at 90 %; the bq76952's LFP pack 100 mV at its steep top
    spread_mv, soc = (100, 99.0) if afe.is_952 else (150, 90.0)
    world = afe.world(cells=4, chemistry="nmc", capacity_mah=CAP_MAH, soc_pct=soc, spread_mv=spread_mv, seed=2)
    server = SimServer(world, str(tmp_path), speed=None, link_path=str(tmp_path / "tty"))
    with server:
        link = server.link_path
        d = wait_for(link, lambda d: d["charge_fet"] and d["discharge_fet"], server)
        assert d["cell_count"] == afe.cells(4)
        start = round(d["cell_spread_v"] * 1000)
        assert spread_mv - 10 <= start <= spread_mv + 10, d["cells_v"]
        soc0 = world.pack.cell_soc_pct()
        soc_spread0 = max(soc0) - min(soc0)
        with server.lock:
            world.charger.set(CAP_MAH // 2, CHARGE_CV_MV[afe.chemistry("nmc")])  # C/2 CC-CV
        # read over Modbus once a simulated minute for 20 minutes (the firmware runs as
        # fast as it goes meanwhile; polling it more would only slow it)
        t0 = world.now_ms
        seen = []
        for minute in range(1, 21):
            server.wait_sim_ms(t0 + minute * 60000)
            d = status(link)
            if d["balancing_cells"]:
                seen.append((d["balancing_cells"], d["cells_v"]))
        assert len(seen) >= 10, "bleeding seen in %d of 20 readings" % len(seen)
        for bleeding, cells_v in seen:
            low = min(cells_v)
            # the rule: cells more than the differential above the lowest (down to half of
            # it while a run goes on)
            assert all(cells_v[b - 1] - low > 0.004 for b in bleeding), (bleeding, cells_v)
        # the chip's own rule on adjacent inputs (its model knows the wiring: 4 cells on
        # a bq76920 use inputs 1, 2, 3 and 5)
        assert world.chip.adjacent_balance_violations == 0
        # closing: the cells' charge (the model's truth: their voltage under charge
        # current says little); the whole way is tests/sim/test_balancing_sim.py's
        soc = world.pack.cell_soc_pct()
        soc_spread = max(soc) - min(soc)
        print("cells' SOC spread %.1f %% -> %.1f %% in 20 simulated min of charge" % (soc_spread0, soc_spread))
        assert soc_spread < 0.85 * soc_spread0, (soc_spread0, soc)  # a charge alone moves every cell alike
    assert "Traceback" not in server.log_tail(), server.log_tail()
