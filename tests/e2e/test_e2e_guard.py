"""End to end on the twin: an exception that reaches bms.start's guard
switches the FETs off, is logged (event 222), resets the MCU as a crash,
and a crash loop ends in the reset-loop lockout with the FETs off while
Modbus still answers."""
import os

from bms.spec import protrules
from bms import regmap as M
from bms.boards import RESET_HARD
from bms.eventlog import EventLog
from bms.events import AT_PROTECT, AT_SOC, EV_CRASH
from bms.events import KIND_MEMORY, KIND_OTHER
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World
from conftest import MPY_TESTS, ir, rtu_client

ROW = protrules.bit_of()["reset_lockout"]  # its bit in protect_flags


def test_a_crash_is_made_safe_logged_and_a_crash_loop_locks_out(tmp_path):
    state = str(tmp_path / "flash")
    provision(state, 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0)
    server = SimServer(world, state, speed=None, link_path=str(tmp_path / "tty"),
                       main_py=os.path.join(MPY_TESTS, "crash_main.py"))
    with server:
        server.wait_restarts(5, timeout=60)
        c = rtu_client(server.link_path, retries=3)
        try:
            # the injected fault goes on crashing every boot: read until a
            # reply comes from a booted firmware (not from the gap of a reset)
            for attempt in range(50):
                flags = ir(c, M.IR_PROTECT_FLAGS, 2)
                if flags != [0, 0]:
                    break
            assert ((flags[0] << 16) | flags[1]) & (1 << ROW), "five crashes in a row: locked out"
            assert ir(c, M.IR_RESET_CAUSE)[0] >> 8 == RESET_HARD
        finally:
            c.close()
        with server.lock:
            assert world.fets() == (False, False)
    log = EventLog(os.path.join(state, "events.bin"))
    log.load()
    crashes = [r for r in log.read(0, 1000) if r[3] == EV_CRASH]
    # each boot logs the crash before it: where (the protection pass) and what (not an OSError or MemoryError)
    assert len(crashes) >= 4 and all(r[4] == (AT_PROTECT << 8) | KIND_OTHER for r in crashes), crashes
    assert "injected fault" in server.log_tail(200)


def test_the_guard_switches_the_fets_off_logs_and_resets_as_a_crash(tmp_path):
    import pytest
    from bms.boards import REASON_CRASH
    from bms.start import crashed
    from bms_sim.direct import DirectSim

    provision(str(tmp_path), 4, "lfp", 10000, 1000)
    sim = DirectSim(World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0), str(tmp_path))
    sim.run(2000)
    assert sim.world.fets() == (True, True)
    sim.app.cycle.at = AT_SOC  # as if the SOC estimator had raised
    with pytest.raises(SystemExit):
        crashed(sim.board, sim.app, MemoryError())
    assert sim.world.fets() == (False, False)
    assert sim.board.resets == [REASON_CRASH] and sim.board.cause[0] == RESET_HARD
    assert not [e for e in sim.app.log.read(0, 100) if e[3] == EV_CRASH], "nothing to flash on the way down"
    sim._boot()  # the next boot logs what the RTC record kept, once
    sim.run(2000)
    crashes = [e for e in sim.app.log.read(0, 100) if e[3] == EV_CRASH]
    assert [e[4] for e in crashes] == [(AT_SOC << 8) | KIND_MEMORY]
    sim._boot()
    sim.run(2000)
    assert len([e for e in sim.app.log.read(0, 100) if e[3] == EV_CRASH]) == 1


def test_main_starts_the_watchdog_before_anything_else(tmp_path):
    """main.py on the twin: the watchdog runs (BOOT_WDT_MS) before the first
    I2C transfer or flash read of the boot, then App.start() gives it the
    user's wdt_ms; a boot that hangs anywhere resets."""
    from bms.boards.sim import OP_HELLO, OP_I2C_READ, OP_I2C_WRITE, OP_WDT
    from bms.start import BOOT_WDT_MS

    state = str(tmp_path / "flash")
    provision(state, 4, "lfp", 10000, 1000, extra={"wdt_ms": 3000})
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0)
    server = SimServer(world, state, speed=None, link_path=str(tmp_path / "tty"))
    with server:
        server.wait_sim_ms(2000)
        ops = list(server.boot_ops)
        starts = list(server.wdt_starts)
    assert ops[0][0] == OP_HELLO
    kinds = [op for op, a, arg in ops]
    first_wdt = kinds.index(OP_WDT)
    assert ops[first_wdt][1:] == (0, BOOT_WDT_MS)
    i2c = [k for k, op in enumerate(kinds) if op in (OP_I2C_READ, OP_I2C_WRITE)]
    assert i2c and first_wdt < i2c[0], ops[:12]
    assert first_wdt <= 2, "nothing but the board's hello before the watchdog: %r" % (ops[:4],)
    assert [t for _, t in starts] == [BOOT_WDT_MS, 3000]
