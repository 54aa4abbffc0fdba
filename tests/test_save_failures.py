"""Saves that cannot allocate or write (issue 14): a failed save of the
parameters, the SOC state or the lifetime counters never ends the
firmware. Under the ESP32 twin, the App's loop runs on while the store's
file write raises MemoryError and OSError and while the heap is locked;
the failures are counted in save_errors and logged once per change, the
old records still load, and later saves succeed. (The store, the
parameter retry and its back-off on CPython: tests/test_store.py,
tests/test_config.py.)"""
import os

from bms import config as CF
from bms import paramtable as PT
from bms import regmap as M
from bms_sim.cli import provision
from bms_sim.link import SimServer
from bms_sim.world import World
from conftest import mpy_tests

ADDR = {r[1]: r[0] for r in PT.TABLE}


def test_failed_saves_never_end_the_firmware(tmp_path):
    provision(str(tmp_path), 4, "nmc", 20000, 500)
    world = World(cells=4, chemistry="nmc", capacity_mah=20000, soc_pct=50.0, shunt_uohm=500)
    server = SimServer(world, str(tmp_path), speed=200.0,
                       main_py=os.path.join(mpy_tests(), "mpy_save_fail.py"),
                       main_args=[M.HR_UNLOCK, ADDR["cell_ov_mv"], M.IR_SAVE_ERRORS, CF.EV_STORE_SAVE])
    with server:
        world.load.set(4000)  # working mode throughout
        server.exited.wait(240)
        log = server.log_tail()
    assert "OK" in log, log
    stats = dict(kv.split("=") for kv in log.split("OK", 1)[1].split())
    assert int(stats["cycles"]) >= 300  # about 90 simulated seconds of 250 ms windows
    assert int(stats["param_tries"]) >= 3
    assert int(stats["save_errors"]) >= int(stats["tries"]) + 3  # the heap-locked save counted too
