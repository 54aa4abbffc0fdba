"""Runs 3 and 4 of the bench (bench.perf): boot and Modbus turnaround,
main.py at real time, requests written to the simulator's pseudo-terminal
as a host does and the first reply byte timestamped as the simulator
transmits it."""
import os
import random
import threading
import time

from bench.config import BenchError
from bench.frames import MIX, R_CELLS, UNLOCK, reply_len
from bench.harness import log_error, make_world
from bms.crc import crc16
from bms_sim.server import SimServer


class Catcher:
    """SimServer.on_transmit: timestamps the first chunk the firmware sends
    after arm() (called in the simulator's thread, as the firmware's UART
    write is served)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.buf = bytearray()
        self.t_first = None

    def __call__(self, data):
        now = time.monotonic()
        with self.cond:
            if self.t_first is None:
                self.t_first = now
            self.buf += data
            self.cond.notify_all()

    def arm(self):
        with self.cond:
            self.buf = bytearray()
            self.t_first = None

    def wait(self, n, timeout):
        """The reply (n bytes, or an exception's 5) and its first byte's time; None on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                b = self.buf
                if len(b) >= n or (len(b) >= 5 and b[1] & 0x80):
                    return bytes(b), self.t_first
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


class Host:
    """The host end of the simulator's RS485 pseudo-terminal."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def write(self, data):
        """Writes the whole frame; returns the time taken just before (the
        bytes are in the pty when it returns)."""
        t0 = time.monotonic()
        n = os.write(self.fd, data)
        if n != len(data):
            raise BenchError("short write to the pty (%d of %d)" % (n, len(data)))
        return t0

    def drain(self):
        while True:
            try:
                if not os.read(self.fd, 4096):
                    return
            except (BlockingIOError, OSError):
                return

    def close(self):
        os.close(self.fd)


def transact(host, catcher, req, timeout=2.0):
    """(turnaround s, reply) or (None, None) when no valid reply came."""
    catcher.arm()
    t0 = host.write(req)
    got = catcher.wait(reply_len(req), timeout)
    host.drain()
    if got is None:
        return None, None
    reply, t1 = got
    if len(reply) < 5 or reply[0] != 1 or (reply[1] & 0x7F) != req[1] or crc16(reply, 0, len(reply)) != 0:
        return None, None
    return t1 - t0, reply


def boot_once(state, target, heap, keep=False, lib_dir=None):
    """Spawn main.py at speed 1.0, write a request as soon as the pty exists;
    returns (boot ms, server, host, catcher); the server keeps running if keep."""
    world = make_world()
    world.load.set(8000)
    link = os.path.join(state, "ttyBENCH")
    catcher = Catcher()
    server = SimServer(world, state, speed=1.0, link_path=link, heap=heap, target=target, lib_dir=lib_dir,
                       log_path=os.path.join(state, "bench-main.log"))
    server.on_transmit = catcher
    catcher.arm()
    t_spawn = time.monotonic()
    server.start()
    host = Host(link)
    try:
        t0 = host.write(R_CELLS[1])
        got = catcher.wait(reply_len(R_CELLS[1]), 15.0)
        host.drain()
        if got is None or crc16(got[0], 0, len(got[0])) != 0:
            raise BenchError("no valid reply after boot:\n" + server.log_tail())
        boot_ms = (got[1] - t_spawn) * 1000.0
        if got[1] < t0:
            raise BenchError("a reply before the request")
    except BaseException:
        host.close()
        server.stop()
        raise
    if keep:
        return boot_ms, server, host, catcher, world
    host.close()
    server.stop()
    return boot_ms, None, None, None, None


def turnaround_run(cfg, state, target, heap, lib_dir=None):
    """(boot ms, turnaround ms list, per-kind counts, failures)."""
    boot_ms, server, host, catcher, world = boot_once(state, target, heap, keep=True, lib_dir=lib_dir)
    rng = random.Random(7)
    times = []
    kinds = {}
    failures = 0
    try:
        time.sleep(1.0)  # a few cycles first
        if transact(host, catcher, UNLOCK)[1] is None:
            raise BenchError("the unlock write got no reply:\n" + server.log_tail())
        n = cfg["turn_requests"]
        for i in range(n):
            if i == n // 2:
                with server.lock:
                    world.load.off()
                    world.charger.set(10000, 4200)
            name, req = MIX[i % len(MIX)]
            # a random pause: requests land anywhere in the 250 ms cycle
            time.sleep(rng.uniform(0.001, 0.02))
            dt, reply = transact(host, catcher, req)
            if reply is None:
                failures += 1
                continue
            times.append(dt * 1000.0)
            kinds[name] = kinds.get(name, 0) + 1
        if server.exited.is_set():
            raise BenchError("the firmware stopped:\n" + server.log_tail())
        err = log_error(server.log_tail(200))
        if err:
            raise BenchError("the firmware failed (%s):\n%s" % (err, server.log_tail()))
    finally:
        host.close()
        server.stop()
    return boot_ms, times, kinds, failures
