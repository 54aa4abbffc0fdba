"""The firmware's real control loop in-process on CPython, against the World.

`DirectBoard` gives the application the World's chip as its I2C bus, the
World's clock, and a byte queue as its RS485 port, so tests can run hours
of the real App (protection, balancing, event log, Modbus image) in
seconds, step by step, and look inside. The same App runs under the
MicroPython unix port through SimServer; this is the fast lane for
scenario and property tests.

The board's own supply current drains the World's pack as SimServer's
does (world.bms_ma, bms_sim.power.board_draw_ma): awake (and the network)
while the App runs and idles, light sleep in light_sleep(), deep sleep
while DirectSim sleeps; the AFE's share follows world.chip.shipped. A deep
sleep with the AFE shipped passes in pieces of up to DEEP_PIECE_MS, the
wake inputs looked at between them. clock_s() is the RTC: the World's
seconds from CLOCK_EPOCH_S, through restarts and deep sleep.
"""
import os

from bms.app import App
from bms.boards import (IN_ACC, IN_BUTTON, IN_CHARGER, REASON_CRASH, RESET_DEEPSLEEP, RESET_HARD, RESET_POWER_ON,
                        RESET_SOFT, WAKE_ACC, WAKE_BUTTON, WAKE_CHARGER, WAKE_RS485, WAKE_TIMER)
from bms_sim.boardmodel import CLOCK_EPOCH_S, DEEP_PIECE_MS, TICKS_MASK, TICKS_START
from bms_sim.power import board_draw_ma


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
        self.input_bits = 0
        self.led_duties = b""
        self.network_on = False
        self.wdt_ms = 0
        self.wdt_feeds = 0
        self.deep_sleeps = 0
        self.asleep = False
        self.sleep_inputs = 0
        self.cause = (RESET_POWER_ON, 0)
        self.rtc = b""  # the ESP32's RTC memory: kept through App restarts here, gone at power-on

    def draw(self, state):
        """The board's supply current in state ("awake", "light_sleep",
        "deep_sleep") drains the pack from here on."""
        w = self.world
        w.bms_ma = board_draw_ma(state, self.network_on, w.chip.shipped)

    def clock_s(self):
        """The RTC's seconds: they run through restarts and deep sleep."""
        return self.world.now_ms // 1000 + CLOCK_EPOCH_S

    def keep(self, data):
        self.rtc = bytes(data)

    def kept(self):
        return self.rtc

    def set_baud(self, baud):
        pass

    def set_serial(self, baud, parity):
        self.serial_settings = (baud, parity)

    def inputs(self):
        """The bits a test set, and the charger detect input following the
        World's charger."""
        return self.input_bits | (IN_CHARGER if self.world.charger.on else 0)

    def leds(self, duties):
        self.led_duties = bytes(duties)

    def network(self, on):
        self.network_on = on

    def wdt_start(self, timeout_ms):
        self.wdt_ms = timeout_ms

    def wdt_feed(self):
        self.wdt_feeds += 1

    def light_sleep(self, ms):
        """Time passes; back on RS485 bytes (lost, as on the ESP32) or the timer."""
        w = self.world
        target = w.now_ms + ms
        self.draw("light_sleep")
        while w.now_ms < target and not self.serial.rx:
            w.advance(min(target - w.now_ms, w.ms_to_next_window()))
            if self.on_advance:
                self.on_advance(w)
        self.draw("awake")
        if self.serial.rx:
            del self.serial.rx[:]
            return WAKE_RS485
        return WAKE_TIMER

    def deep_sleep(self):
        self.deep_sleeps += 1
        self.asleep = True
        self.sleep_inputs = self.inputs()  # a wake is a rising edge from here
        raise SystemExit(0)

    def reset_cause(self):
        return self.cause

    def afe_boot(self):
        self.world.chip.boot()

    def reset(self, reason=0):
        """The MCU restarts: DirectSim boots a new App on the same World."""
        self.resets.append(reason)
        self.cause = (RESET_HARD if reason == REASON_CRASH else RESET_SOFT, 0)
        raise SystemExit(0)

    def ticks_ms(self):
        return (TICKS_START + self.world.now_ms) & TICKS_MASK

    def alert(self):
        return self.world.chip.alert

    def idle(self, ms):
        w = self.world
        target = w.now_ms + ms
        before = w.chip.alert
        self.draw("awake")  # the network or the AFE may have changed since
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
        self.boots = 1

    def run(self, ms):
        """Run the firmware for ms of simulated time (calling on_cycle(self)
        after every control cycle)."""
        w = self.world
        end = w.now_ms + ms
        while w.now_ms < end:
            if self.board.asleep and not self._sleep_until(end):
                return
            app = self.app
            last = app.cycle.last_cycle
            try:
                wait = app.step()
            except SystemExit:
                if not self.board.asleep:
                    self._boot()  # a restart the firmware asked for
                continue
            if self.on_cycle and app.cycle.last_cycle != last:
                self.on_cycle(self)  # at the cycle's own time, before the idle
            self.board.idle(wait)

    def _boot(self):
        self.boots += 1
        self.app = App(self.board)
        self.app.start()

    def _sleep_until(self, end):
        """Deep sleep: the World goes on until ACC, the charger or the button
        rises (then a new App boots, as the ESP32 does), or `end`. True when
        it woke."""
        w = self.world
        b = self.board
        b.network_on = False  # the MCU is off: its radio with it
        b.draw("deep_sleep")
        while w.now_ms < end:
            now = b.inputs()  # a change made while the run was paused counts too
            rising = now & ~b.sleep_inputs
            b.sleep_inputs = now
            if rising & (IN_ACC | IN_CHARGER | IN_BUTTON):
                wake = (WAKE_CHARGER if rising & IN_CHARGER else WAKE_ACC if rising & IN_ACC else WAKE_BUTTON)
                b.asleep = False
                b.cause = (RESET_DEEPSLEEP, wake)
                b.draw("awake")
                self._boot()
                return True
            # a shipped AFE: up to DEEP_PIECE_MS at once (World.quiet_ms)
            w.advance(min(end - w.now_ms, w.quiet_ms(DEEP_PIECE_MS)))
            if b.on_advance:
                b.on_advance(w)
        return False

    def run_until(self, cond, limit_ms, step_ms=250):
        """Run until cond(self) is true; returns the simulated ms it took, or
        None when limit_ms passed first."""
        t0 = self.world.now_ms
        while self.world.now_ms - t0 < limit_ms:
            if cond(self):
                return self.world.now_ms - t0
            self.run(step_ms)
        return None
