"""The simulated link's pacing: bytes a test hands to send() are served at
once, not after the paced wait that was running."""
import time

from bms import regmap as M
from bms.crc import crc16
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World


def frame(body):
    c = crc16(body, 0, len(body))
    return bytes(body) + bytes((c & 0xFF, c >> 8))


def test_send_wakes_a_real_time_idle(tmp_path):
    provision(str(tmp_path), 4, "lfp", 10000, 1000)
    server = SimServer(World(cells=4), str(tmp_path), speed=1.0)
    with server:
        server.wait_sim_ms(1500, timeout=10)
        waits = []
        for _ in range(10):
            before = len(server.tx)
            t0 = time.monotonic()
            server.send(frame(bytes([1, 4, 0, M.IR_CELL_COUNT, 0, 1])))
            while len(server.tx) < before + 7 and time.monotonic() - t0 < 2:
                time.sleep(0.0005)
            waits.append(time.monotonic() - t0)
            time.sleep(0.05)
        assert bytes(server.tx).count(frame(bytes([1, 4, 2, 0, 4]))) == 10
    waits.sort()
    # a paced idle lasts up to 250 ms; the reply comes long before that
    assert waits[5] < 0.02 and waits[-1] < 0.1, waits
