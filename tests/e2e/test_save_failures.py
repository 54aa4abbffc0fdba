"""Saves that cannot allocate or write (issue 14): a failed save of the
parameters, the SOC state or the lifetime counters never ends the
firmware. Under the ESP32 twin, the App's loop runs on while the store's
file write raises MemoryError and OSError and while the heap is locked;
the failures are counted in save_errors and logged once per change, the
old records still load, and later saves succeed. (The store, the
parameter retry and its back-off on CPython: tests/firmware/test_store.py,
tests/firmware/test_config.py.)"""
import os

from bms import config as CF
from bms import paramload as PL
from bms.spec import paramtable as PT
from bms import regmap as M
from bms.spec import regtable as RT
from bms import store as S
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.server import SimServer
from bms_sim.world import World
from bms.events import EV_STORE_SAVE
from conftest import mpy_tests

ADDR = {r[1]: r[0] for r in PT.TABLE}


def test_failed_saves_never_end_the_firmware(tmp_path):
    provision(str(tmp_path), 4, "nmc", 20000, 500)
    world = World(cells=4, chemistry="nmc", capacity_mah=20000, soc_pct=50.0, shunt_uohm=500)
    server = SimServer(world, str(tmp_path), speed=200.0,
                       main_py=os.path.join(mpy_tests(), "mpy_save_fail.py"),
                       main_args=[M.HR_UNLOCK, ADDR["cell_ov_mv"], M.IR_SAVE_ERRORS, EV_STORE_SAVE])
    with server:
        world.load.set(4000)  # working mode throughout
        server.exited.wait(240)
        log = server.log_tail()
    assert "OK" in log, log
    stats = dict(kv.split("=") for kv in log.split("OK", 1)[1].split())
    assert int(stats["cycles"]) >= 300  # about 90 simulated seconds of 250 ms windows
    assert int(stats["param_tries"]) >= 3
    assert int(stats["save_errors"]) >= int(stats["tries"]) + 3  # the heap-locked save counted too


def test_a_set_taken_in_at_boot_that_cannot_be_stored_is_logged_and_retried_at_once(tmp_path, monkeypatch):
    """bms.cfg is taken in at boot but the flash refuses the record: the
    App says so once, runs with the set, and the first pass retries the
    save (no waiting on a back-off that has not started)."""
    provision(str(tmp_path), 4, "nmc", 20000, 500)
    refuse = [True]
    real_open = open

    def flash(path, mode="r", *a):
        if refuse[0] and "w" in mode:
            raise OSError(28, "ENOSPC")
        return real_open(path, mode, *a)

    monkeypatch.setattr(S, "open", flash, raising=False)
    sim = DirectSim(World(cells=4, chemistry="nmc", capacity_mah=20000, shunt_uohm=500), str(tmp_path))
    app = sim.app

    def store_events():
        return [r[4] for r in app.log.read(0, 256) if r[3] == EV_STORE_SAVE]

    assert app.params.imported_text and app.cycle.configured and app.config.save_failed
    assert store_events() == [(CF.SAVE_PARAMS << 8) | S.FAIL_FLASH]
    sim.run(300)  # the first pass retries: it fails too, and is not logged again
    assert app.params.save_errors() == 2 and store_events() == [(CF.SAVE_PARAMS << 8) | S.FAIL_FLASH]
    assert app.ir.words[M.IR_SAVE_ERRORS] == 2
    assert "Flash     2 failed save(s) since boot" in status_text(app)
    refuse[0] = False
    sim.run(1500)  # the next retry, 1 s after the last
    assert not app.config.save_failed and store_events()[1:] == [CF.SAVE_PARAMS << 8]
    assert list(PL.load(str(tmp_path) + "/").values) == list(app.params.values)
    assert "Flash     2 failed save(s) since boot" in status_text(app)  # since boot: it stays


def status_text(app):
    from bmsctl import fmt
    from bmsctl import regs as RG

    st = {"input": RG.decode(RT.INPUT_REGS, list(app.ir.words)), "holding": RG.decode(PT.TABLE, list(app.hr.words))}
    return fmt.format_status(fmt.status_dict(st), "sim")
