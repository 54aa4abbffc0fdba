"""End to end: bmsctl configures a fresh simulated BMS and changes its
parameters, against the firmware under MicroPython over the simulated
RS485 pseudo-terminal (the firmware's own validation, flash and restart)."""
import csv
import datetime
import io
import json
import time

import pytest

from bms import params as P

from bms import paramload as PL
from bms import regmap as M
from bms_sim.server import SimServer
from bms_sim.world import World
from bmsctl import cli as ctl
from bmsctl import client
from bmsctl import config as CF
from bmsctl import regs as RG


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    state = tmp_path_factory.mktemp("fresh-bms")
    assert not (state / PL.CONFIG_FILE).exists(), "a fresh BMS: nothing provisioned"
    world = World(cells=4, chemistry="lfp", capacity_mah=100000, soc_pct=60.0, spread_mv=20, seed=5)
    server = SimServer(world, str(state), speed=20.0, link_path=str(state / "ttyBMS"))
    with server:
        server.wait_sim_ms(1000, timeout=20)
        yield server
    assert "Traceback" not in server.log_tail(), server.log_tail()


def bmsctl(sim, *argv):
    out = io.StringIO()
    rc = ctl.main(["--port", sim.link_path] + [str(a) for a in argv], out=out)
    return rc, out.getvalue()


class Reader:
    """bmsctl's own Bms, opened for one look."""

    def __init__(self, sim):
        self.sim = sim

    def __enter__(self):
        self.bms = client.Bms(self.sim.link_path)
        return self.bms

    def __exit__(self, *exc):
        self.bms.close()


SETUP = ("setup", "--chemistry", "lfp", "--cells", "4", "--capacity", "100", "--yes")


@pytest.fixture(scope="module")
def configured(sim):
    with Reader(sim) as bms:
        state = bms.config_state()
    if not state & M.CFG_CONFIGURED:
        assert bmsctl(sim, *SETUP)[0] == 0
    return sim


def test_setup_brings_a_fresh_bms_up(sim, capsys):
    with Reader(sim) as bms:
        ir = bms.read_live()
    assert not ir["config_state"] & M.CFG_CONFIGURED and ir["fet_flags"] == 0
    assert RG.flag_names(ir["protect_flags"]) == ["unconfigured"]
    restarts = sim.restarts
    t0 = time.monotonic()
    rc, out = bmsctl(sim, *SETUP)
    took = time.monotonic() - t0
    assert rc == 0, capsys.readouterr().err + out
    assert "Setup done" in out and "Cell over-voltage" in out
    print("setup: %.2f s wall" % took)
    assert sim.restarts == restarts + 1, "the pack keys took effect at a real firmware restart"
    with Reader(sim) as bms:
        ir = bms.read_live()
        v = bms.read_values()
    assert ir["config_state"] & M.CFG_CONFIGURED
    assert ir["fet_flags"] == M.FET_CHG | M.FET_DSG and ir["protect_flags"] == 0
    assert ir["cell_count"] == 4
    assert v[P.P_CHEMISTRY] == P.CHEM_LFP and v[P.P_CELL_CHANNELS] == 0x17
    assert v[P.P_CAPACITY_MAH] == 100000 and v[P.P_CHG_OC_MA] == 100000  # 1 C of 100 Ah


def test_out_of_range_is_refused_and_nothing_changes(configured, capsys):
    sim = configured
    with Reader(sim) as bms:
        before = bms.read_values()
        seq0 = bms.read_live()["event_seq"]
    assert bmsctl(sim, "unlock", "--pin", "1234")[0] == 0
    rc, out = bmsctl(sim, "config", "set", "cell_ov_mv=9999")
    err = capsys.readouterr().err
    assert rc == 2
    assert "cell_ov_mv=9999 (9.999 V) is outside 1.500..5.000 V" in err and "nothing was written" in err
    with Reader(sim) as bms:
        # the firmware says the same, had it been sent
        assert bms.write_params(CF.ROWS[P.P_CELL_OV_MV][0], [9999]) == 3
        assert "cell_ov_mv is outside its range" in RG.config_error_text(bms.config_error())
        after = bms.read_values()
        events = [e for e in bms.read_table("input")["events"] if e and e["seq"] >= seq0]
    assert after == before and after[P.P_CELL_OV_MV] == 3650
    assert events and not [e for e in events if e["code"] in (206, 207)]
    assert bmsctl(sim, "lock")[0] == 0


def test_export_change_import_survives_a_restart(configured, tmp_path, capsys):
    sim = configured
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert bmsctl(sim, "config", "export", a)[0] == 0
    rc, out = bmsctl(sim, "config", "set", "--pin", "1234", "cell_ov=3.6V", "cell_ov_release=3.4V",
                     "cell_ov_warn=3.55", "chg_ot=40C", "chg_ot_release=35C", "temp_high_warn=30C",
                     "bal_min_idle=10min")
    assert rc == 0, capsys.readouterr().err
    assert "3.650 V -> 3.600 V" in out
    with Reader(sim) as bms:
        v = bms.read_values()
    assert v[P.P_CELL_OV_MV] == 3600 and v[P.P_CHG_OT_DC] == 400 and v[P.P_BAL_MIN_IDLE_MS] == 600000
    restarts = sim.restarts
    t0 = time.monotonic()
    rc, out = bmsctl(sim, "config", "import", a, "--pin", "1234", "--restart")
    print("import --restart: %.2f s wall" % (time.monotonic() - t0))
    assert rc == 0, capsys.readouterr().err
    assert "restarted" in out and "runs configured" in out
    assert sim.restarts == restarts + 1
    assert bmsctl(sim, "config", "export", b)[0] == 0
    pa = json.loads(a.read_text())["parameters"]
    pb = json.loads(b.read_text())["parameters"]
    assert pa == pb
    with Reader(sim) as bms:
        ir = bms.read_live()
    assert ir["config_state"] & M.CFG_CONFIGURED and not ir["config_state"] & M.CFG_UNLOCKED
    rc, out = bmsctl(sim, "events")
    assert rc == 0 and "Setting cell_ov_mv changed to 3.650 V" in out and "Host command: restart" in out


def test_log_writes_a_header_and_rows(configured, tmp_path):
    sim = configured
    path = tmp_path / "x.csv"
    rc, out = bmsctl(sim, "log", "--out", path, "--every", "1s", "--count", "3")
    assert rc == 0 and "wrote 3 rows" in out
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    assert len(lines) == 4
    header = lines[0].split(",")
    assert header[:2] == ["time", "elapsed_s"]
    assert "cell_mv_1" in header and "cell_mv_15" in header and "temp_dc_1" in header
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    last = None
    for r in rows:
        datetime.datetime.fromisoformat(r["time"])
        t = float(r["elapsed_s"])
        if last is not None:
            assert 0.8 < t - last < 1.6
        last = t
        assert r["cell_count"] == "4"
        assert all(3.0 < float(r["cell_mv_%d" % k]) < 3.5 for k in range(1, 5))
        assert float(r["cell_mv_5"]) == 0.0
        assert 12.0 < float(r["pack_mv"]) < 14.0
        assert abs(float(r["temp_dc_1"]) - 25.0) < 2.0 and r["temp_dc_2"] == ""
        assert r["fet_flags"] == "3" and r["protect_flags"] == "0"
        assert abs(float(r["current_ma"])) < 0.5
