"""An MCU reset on the simulated board: the firmware process ends and a new
one boots on the same pack, chip, clock, RS485 link and flash."""
import os
import time

import pytest
from bms_sim.boardmodel import BOOT_MS
from bms_sim.cli import provision
from bms_sim.process import SimError
from bms_sim.server import SimServer
from bms_sim.world import World

# Counts its boots in the flash; the first boot idles a little and resets
# with reason 7, the second records the count and idles for ever. A third
# boot means a reset too many. FAIL_SECOND=1 in the flash: the second boot
# dies before it connects.
RESET_MAIN = '''
import os

from bms.boards.sim import ENV_STATE, Board

state = os.getenv(ENV_STATE).rstrip("/") + "/"
try:
    with open(state + "boots") as f:
        boots = int(f.read())
except OSError:
    boots = 0
boots += 1
with open(state + "boots", "w") as f:
    f.write(str(boots))
if boots > 1:
    try:
        with open(state + "fail_second") as f:
            f.read()
        print("boot", boots, "fails")
        raise SystemExit(3)
    except OSError:
        pass

board = Board()
print("boot", boots, "ticks", board.ticks_ms())
if boots == 1:
    for _ in range(4):
        board.idle(50)
    board.reset(7)
    print("reset returned")
with open(board.storage_dir + "booted", "w") as f:
    f.write(str(boots))
while True:
    board.idle(250)
'''


def boot_ticks(log):
    """{boot number: ticks_ms at that boot} from the script's log lines."""
    out = {}
    for line in log.splitlines():
        w = line.split()
        if len(w) == 4 and w[0] == "boot" and w[2] == "ticks":
            out[int(w[1])] = int(w[3])
    return out


@pytest.fixture
def reset_main(tmp_path):
    path = tmp_path / "reset_main.py"
    path.write_text(RESET_MAIN)
    return str(path)


def test_reset_boots_a_new_firmware_on_the_same_board(tmp_path, reset_main):
    state = tmp_path / "state"
    link = tmp_path / "ttyBMS"
    world = World(cells=4)
    server = SimServer(world, str(state), speed=None, link_path=str(link), main_py=reset_main)
    server.start()
    try:
        pty = os.readlink(link)
        server.wait_restarts(1, timeout=20)
        deadline = time.monotonic() + 10
        while not (state / "booted").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        t = world.now_ms
        server.wait_sim_ms(t + 1000, timeout=10)
        assert server.restarts == 1 and server.reset_reasons == [7]
        assert not server.exited.is_set()
        assert (state / "booted").read_text() == "2"
        assert (state / "boots").read_text() == "2"
        # the clock ran through the reset: the first boot's 200 ms of idling
        # and the boot time, and the second firmware idles on
        assert world.now_ms > 200 + BOOT_MS + 1000
        ticks = boot_ticks(server.log_tail())
        assert ticks[2] - ticks[1] >= 200 + BOOT_MS, ticks
        # the same pseudo-terminal, still carrying bytes to the board
        assert os.path.islink(link) and os.readlink(link) == pty and os.path.exists(link)
        # (this firmware never reads them: its idle returns at once from then on)
        fd = os.open(str(link), os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"\x01\x04\x00\x00\x00\x01")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with server.lock:
                    got = bytes(server.rxq)
                if got:
                    break
                time.sleep(0.01)
        finally:
            os.close(fd)
        assert got == b"\x01\x04\x00\x00\x00\x01"
    finally:
        t0 = time.monotonic()
        server.stop()
        took = time.monotonic() - t0
    assert took < 5.0, took
    assert server.exited.is_set()
    assert not os.path.lexists(link)
    with open(server.log_path) as f:
        log = f.read()
    assert "boot 1 ticks" in log and "boot 2 ticks" in log, log
    assert "MCU reset (reason 7)" in log
    assert "reset returned" not in log and "Traceback" not in log, log


def test_stop_during_a_reset_does_not_hang(tmp_path, reset_main):
    world = World(cells=4)
    server = SimServer(world, str(tmp_path / "state"), speed=None, main_py=reset_main)
    server.start()
    while not server.reset_reasons and not server.exited.is_set():
        time.sleep(0.001)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 5.0
    assert server.exited.is_set()
    assert server.proc.poll() is not None


def test_a_firmware_that_does_not_come_back_stops_the_server(tmp_path, reset_main):
    state = tmp_path / "state"
    state.mkdir()
    (state / "fail_second").write_text("1")
    world = World(cells=4)
    server = SimServer(world, str(state), speed=None, main_py=reset_main)
    with server:
        with pytest.raises(SimError) as e:
            server.wait_sim_ms(10 ** 9, timeout=20)
        assert "did not come back after a reset" in str(e.value)
        assert "boot 2 fails" in str(e.value)
        with pytest.raises(SimError):
            server.wait_restarts(1, timeout=1)
        assert server.restarts == 0 and server.reset_reasons == [7]


def test_the_firmware_runs_without_resets(tmp_path):
    provision(str(tmp_path), 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0)
    with SimServer(world, str(tmp_path), speed=None) as server:
        server.wait_sim_ms(5000, timeout=30)
        assert server.restarts == 0 and server.reset_reasons == []
        assert not server.exited.is_set()
    assert "Traceback" not in server.log_tail(), server.log_tail()
