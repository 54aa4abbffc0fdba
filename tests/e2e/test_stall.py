"""The stall test (issue 15): the firmware under MicroPython, its loop held
up by Modbus RTU at 9600 baud and a network that never answers, counts every
coulomb the simulated pack gives.

The simulator charges the firmware for its own time here (SimServer
serial_baud and busy_wall): every byte it sends on RS485 takes 11 bit times
at 9600 baud (a 125-register reply, 255 bytes, holds the loop 292 ms, more
than one 250 ms coulomb-counter window), and a network call blocked on its
timeout passes as simulated time too. The chip keeps only its newest
window's reading, so a loop that comes back late must count that reading
once per window missed (bms.soc update): the firmware's counted charge must
match the current the simulator integrated to 0.1 %.
"""
import socket
import threading
import time

import pytest

from bms import regmap as M
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World
from conftest import ir, rtu_client

LOAD_MA = 25000  # high enough that the CC's 8.44 mA steps and 1-LSB offset stay under 0.05 %
RUN_MS = 8 * 60 * 1000
TIMEOUT_MS = 2000  # a quarter of wdt_ms (8 s): each blocked call spans 8 windows


class SilentBroker:
    """Accepts TCP connections and, while `silent` is set, never says a
    word: every MQTT call (CONNECT's CONNACK) blocks its whole timeout_ms.
    Otherwise it closes each connection at once (the call fails at once)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.silent = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if self.silent.is_set():
                self.held.append(conn)  # kept open, never read
            else:
                conn.close()

    def speak(self):
        """Not silent any more: a call blocked now ends at once."""
        self.silent.clear()
        for c in self.held:
            c.close()
        self.held = []

    def close(self):
        self.stop.set()
        self.thread.join()
        self.speak()
        self.sock.close()


@pytest.mark.slow  # 8 simulated minutes of real blocking network calls: about 30 s, mostly waiting
def test_stalled_loop_counts_every_window(tmp_path):
    state = tmp_path / "flash"
    provision(str(state), 4, "lfp", 10000, 1000,
              extra={"net_enable": 1, "modbus_baud": 9600, "dsg_oc_ma": 50000, "dsg_oc_warn_ma": 45000,
                     "hw_ocd_ma": 100000, "hw_scd_ma": 150000, "draw_counted": 0})
    broker = SilentBroker()
    with open(state / "net.cfg", "w") as f:
        f.write("host = 127.0.0.1\nport = %d\ntimeout_ms = %d\nstate_s = 2\n" % (broker.port, TIMEOUT_MS))
    # the coulomb counter alone: the board's own draw is left out on both sides
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=80.0, seed=3, bms_draw=False)
    flowed = [0.0]  # mA ms through the shunt, every piece the chip integrates
    chip_tick = world.chip.tick

    def tick(dt_ms, current_ma):
        flowed[0] += current_ma * dt_ms
        return chip_tick(dt_ms, current_ma)

    world.chip.tick = tick
    server = SimServer(world, str(state), speed=30.0, link_path=str(tmp_path / "tty"))
    server.serial_baud = 9600
    server.busy_wall = True
    feeds = []  # the sim ms of every watchdog feed: one per finished cycle

    def watch(w):
        t = server.wdt_feed_ms
        if t is not None and (not feeds or feeds[-1] != t):
            feeds.append(t)

    server.on_advance = watch
    stop = threading.Event()
    replies = [0]
    errors = []
    try:
        with server:
            server.wait_sim_ms(4000, timeout=30)
            client = rtu_client(str(tmp_path / "tty"), timeout=2, retries=3)
            r0 = _remaining(client)
            # The current changes only while nothing holds the loop: the
            # chip keeps the newest window alone, so a step inside a stall
            # is counted for the missed windows at its new value (a limit
            # of the part, not of the counting). The stall runs in between.
            with server.lock:
                f0 = flowed[0]
                world.load.set(LOAD_MA)
            server.wait_sim_ms(world.now_ms + 1000, timeout=30)
            broker.silent.set()

            def hammer():
                # 125-register reads back to back (0x30.. is one mapped run): 255-byte replies
                while not stop.is_set():
                    rr = client.read_input_registers(0x30, count=125, device_id=1)
                    if not rr.isError():
                        replies[0] += 1
                    elif not errors:
                        errors.append(rr)

            t = threading.Thread(target=hammer, daemon=True)
            t0 = world.now_ms
            t.start()
            server.wait_sim_ms(t0 + RUN_MS, timeout=RUN_MS / 1000.0)
            stop.set()
            t.join(10)
            broker.speak()
            server.wait_sim_ms(world.now_ms + 3000, timeout=30)
            with server.lock:
                world.load.set(0)
            server.wait_sim_ms(world.now_ms + 3000, timeout=30)
            net = ir(client, M.IR_NET_STATE, M.IR_NET_BLOCK_MAX_MS + 1 - M.IR_NET_STATE)
            with server.lock:
                f1 = flowed[0]
            r1 = _remaining(client)
            client.close()
            log = server.log_tail(200)
            restarts = server.restarts
    finally:
        stop.set()
        broker.close()
    flowed_mah = -(f1 - f0) / 3600000.0
    counted_mah = r0 - r1
    gaps = [b - a for a, b in zip(feeds, feeds[1:])]
    late = sum(1 for g in gaps if g > 250)
    print("counted %d mAh, flowed %.1f mAh (%.3f %%); %d replies; %d of %d cycles late, longest gap %d ms; "
          "longest network hold %d ms" % (counted_mah, flowed_mah, 100.0 * (counted_mah - flowed_mah) / flowed_mah,
                                          replies[0], late, len(gaps), max(gaps), net[8]))
    assert "Traceback" not in log, log
    assert restarts == 0, log
    # the stall was real: long replies and the network both held the loop for several windows
    assert replies[0] * 292 > RUN_MS // 2, (replies[0], errors)
    assert net[8] >= TIMEOUT_MS * 9 // 10, net
    assert max(gaps) >= 4 * 250 and late > len(gaps) // 10, (max(gaps), late, len(gaps))
    assert abs(counted_mah - flowed_mah) <= flowed_mah / 1000, (counted_mah, flowed_mah)


def _remaining(client):
    w = ir(client, M.IR_REMAINING_MAH, 2)
    return (w[0] << 16) | w[1]
