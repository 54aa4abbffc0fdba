"""The firmware's real control loop in-process on CPython, against the World.

`DirectBoard` gives the application the World's chip as its I2C bus, the
World's clock, and a byte queue as its RS485 port, so tests can run hours
of the real App (protection, balancing, event log, Modbus image) in
seconds, step by step, and look inside. The same App runs under the
MicroPython unix port through SimServer; this is the fast lane for
scenario and property tests.
"""
import os

from bms.app import App
from bms_sim.link import TICKS_MASK, TICKS_START


class _Serial:
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        del self.rx[:n]
        return n

    def write(self, buf, n):
        self.tx += bytes(buf[:n])
        return n


class DirectBoard:
    def __init__(self, world, storage_dir):
        self.world = world
        self.i2c = world.chip
        self.serial = _Serial()
        self.storage_dir = storage_dir.rstrip("/") + "/"
        self.on_advance = None
        self.serial_settings = None
        self.resets = []

    def set_baud(self, baud):
        pass

    def set_serial(self, baud, parity):
        self.serial_settings = (baud, parity)

    def reset(self, reason=0):
        """In-process there is no MCU to restart: the test sees the request."""
        self.resets.append(reason)
        raise SystemExit(0)

    def ticks_ms(self):
        return (TICKS_START + self.world.now_ms) & TICKS_MASK

    def alert(self):
        return self.world.chip.alert

    def idle(self, ms):
        w = self.world
        target = w.now_ms + ms
        before = w.chip.alert
        while w.now_ms < target and not self.serial.rx:
            w.advance(min(target - w.now_ms, w.ms_to_next_window()))
            if self.on_advance:
                self.on_advance(w)
            if w.chip.alert and not before:
                return
            before = w.chip.alert


class DirectSim:
    """A World, a DirectBoard and the App, started; `run(ms)` lets it live."""

    def __init__(self, world, storage_dir, on_cycle=None):
        os.makedirs(storage_dir, exist_ok=True)
        self.world = world
        self.board = DirectBoard(world, storage_dir)
        self.app = App(self.board)
        self.app.start()
        self.on_cycle = on_cycle

    def run(self, ms):
        """Run the firmware for ms of simulated time (calling on_cycle(self)
        after every control cycle)."""
        w = self.world
        end = w.now_ms + ms
        app = self.app
        while w.now_ms < end:
            last = app.last_cycle
            self.board.idle(app.step())
            if self.on_cycle and app.last_cycle != last:
                self.on_cycle(self)

    def run_until(self, cond, limit_ms, step_ms=250):
        """Run until cond(self) is true; returns the simulated ms it took, or
        None when limit_ms passed first."""
        t0 = self.world.now_ms
        while self.world.now_ms - t0 < limit_ms:
            if cond(self):
                return self.world.now_ms - t0
            self.run(step_ms)
        return None
