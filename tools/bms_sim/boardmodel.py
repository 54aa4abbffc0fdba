"""The simulated board's physical side: time, sleep, inputs, timers, the
watchdog, the LEDs and network module, and the supply current
(bms_sim.power). The link (bms_sim.link) calls into it as it serves the
firmware's requests.

Time is the World's: it moves only while the firmware idles or sleeps,
paced against the wall clock by `speed` (None = as fast as the firmware
runs).

- inputs: set_input("button" | "acc" | "charger", on) and press_button(ms);
  the IN_ bits go out in every reply. A rising edge is a wake source.
- light sleep (OP_SLEEP): simulated time passes until the timer
  (WAKE_TIMER), RS485 bytes (WAKE_RS485: the ESP32 wakes on the RX pin as
  a GPIO, so the bytes that woke it are dropped and the host's retry is
  answered), or a rising edge of the charger, ACC or button input
  (WAKE_CHARGER, WAKE_ACC, WAKE_BUTTON; an edge since the firmware's last
  reply counts too). ALERT does not wake it. RS485 bytes already waiting
  when it sleeps wake it at once and are kept (they were received while
  awake).
- deep sleep (OP_DEEPSLEEP): the firmware exits; the world runs on until a
  rising edge of ACC, the charger or the button, then a new firmware boots
  (BOOT_MS later) whose HELLO reports RESET_DEEPSLEEP and the wake reason.
  RS485 bytes meanwhile are lost. With the AFE shipped it passes time in
  pieces of up to DEEP_PIECE_MS (World.quiet_ms), so a month of it runs in
  seconds.
- the watchdog (OP_WDT), in simulated ms: not fed for its timeout while
  time passes (idle, light sleep, anywhere), it fires and the link resets
  the MCU. Every MCU reset or deep sleep (mcu_off) stops the watchdog,
  turns the network off and the LEDs dark.
- OP_LEDS / OP_NET: `leds` and `leds_history`, `network_on` and
  `network_history`, each change stamped with the simulated ms.
- OP_AFE_BOOT: the TS1 boot pulse, world.chip.boot(), when the chip is
  shipped (a pulse on an awake chip changes nothing).
- OP_CLOCK: the board's RTC seconds, world.now_ms // 1000 + CLOCK_EPOCH_S:
  it runs through resets and deep sleep, as the ESP32's RTC does.
- every advance accounts its ms to the power meter at the board's current
  and sets world.bms_ma to it (the pack feeds the board).
"""
import os
import select
import time

from bms.boards import (IN_ACC, IN_BUTTON, IN_CHARGER, WAKE_ACC, WAKE_BUTTON, WAKE_CHARGER, WAKE_NONE, WAKE_RS485,
                        WAKE_TIMER)
from bms.afe.bq769x0.regs import CC_PERIOD_MS
from bms_sim.power import PowerMeter, board_draw_ma

TICKS_MASK = 0x3FFFFFFF
# Start the firmware's clock 5 s before the 2**30 wrap, so every run crosses it.
TICKS_START = 0x40000000 - 5000
# An MCU reset (OP_RESET, machine.reset() on the device) costs this much
# simulated time before the new firmware speaks: an ESP32 takes about 300 ms
# from reset through the ROM and MicroPython's boot to main.py. The pack and
# the AFE run on meanwhile.
BOOT_MS = 300
# Deep sleep with a shipped AFE passes simulated time in pieces of up to
# this (speed None): the wake inputs are looked at between them.
DEEP_PIECE_MS = 60000
# OP_CLOCK: the RTC's seconds at world time 0, so the clock is not 0 at the
# start (an ESP32's RTC counts from its first power-up or its last set).
CLOCK_EPOCH_S = 1000000

INPUTS = {"button": IN_BUTTON, "acc": IN_ACC, "charger": IN_CHARGER}
# the wake reason of each input's rising edge, in order of precedence
_EDGE_WAKE = ((IN_CHARGER, WAKE_CHARGER), (IN_ACC, WAKE_ACC), (IN_BUTTON, WAKE_BUTTON))


class Watchdog:
    """The MCU's watchdog, in simulated ms."""

    def __init__(self):
        self.timeout_ms = None  # the running watchdog's timeout; None: not running
        self.fed_ms = 0  # simulated ms of its last feed (or start)
        self.starts = []  # (sim ms, timeout ms) of every start, or new timeout
        # the firmware's last feed (not a start): it feeds once a cycle has
        # measured, judged and switched, so this is when the last one ended
        self.feed_ms = None
        self.fired = False

    @property
    def running(self):
        return self.timeout_ms is not None

    def start(self, now, timeout_ms):
        """A start, or a new timeout for the running one (MicroPython
        v1.28's esp32 port reconfigures it)."""
        self.timeout_ms = max(1, timeout_ms)
        self.fed_ms = now
        self.starts.append((now, timeout_ms))

    def feed(self, now):
        if self.timeout_ms is not None:
            self.fed_ms = self.feed_ms = now

    def check(self, now):
        """Fire when the running watchdog was not fed for its timeout."""
        if self.timeout_ms is not None and now - self.fed_ms >= self.timeout_ms:
            self.fired = True

    def stop(self):
        self.timeout_ms = None
        self.fired = False


class BoardModel:
    """The board around the firmware. `lock` (the simulator's) guards the
    world; `stop` ends every wait; `rs485` is the board's RS485 port."""

    def __init__(self, world, lock, stop, rs485, speed=None):
        self.world = world
        self.lock = lock
        self.speed = speed
        self.rs485 = rs485
        self.meter = PowerMeter()
        self.watchdog = Watchdog()
        self.on_advance = None  # called with the world after every advance
        self.inputs = 0  # IN_ bits
        self.mcu_state = "awake"  # "awake", "light_sleep" or "deep_sleep"
        self.leds = b""  # the last duties, one byte per LED
        self.leds_history = []  # (sim ms, duties) at every change
        self.network_on = False
        self.network_history = []  # (sim ms, on) at every change
        self._stop = stop
        self._busy_frac = 0.0  # the part of a ms not yet passed
        self._inputs_seen = 0  # the input bits of the last reply
        self._edges = 0  # inputs that rose since the firmware's last reply
        self._timers = []  # (sim ms, callable): run once simulated time reaches it
        # set_input(), the link's send() and stop() wake a paced wait at once
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wall0 = None
        self._sim0 = 0

    def poke(self):
        """Wake a paced wait (new bytes, an input, the server stopping)."""
        w = self._wake_w
        if w is None:
            return
        try:
            os.write(w, b"!")
        except (BlockingIOError, OSError):
            pass  # already poked

    def close(self):
        if self._wake_w is not None:
            fds = (self._wake_r, self._wake_w)
            self._wake_w = None
            for fd in fds:
                os.close(fd)

    # -- inputs and timers --------------------------------------------------

    def set_input(self, name, on):
        """Drive an input: "button" (pressed), "acc" (ignition/enable) or
        "charger" (connected). A rising edge is a wake source."""
        try:
            bit = INPUTS[name]
        except KeyError:
            raise ValueError("no input %r (%s)" % (name, ", ".join(sorted(INPUTS)))) from None
        with self.lock:
            if on:
                if not self.inputs & bit:
                    self._edges |= bit
                self.inputs |= bit
            else:
                self.inputs &= ~bit
        self.poke()

    def press_button(self, ms):
        """Press the button now and release it ms of simulated time later."""
        with self.lock:
            self.set_input("button", True)
            self.at(self.world.now_ms + ms, lambda: self.set_input("button", False))

    def at(self, sim_ms, fn):
        """Call fn() (holding the lock) once simulated time reaches sim_ms."""
        with self.lock:
            self._timers.append((sim_ms, fn))

    def _run_timers(self):
        now = self.world.now_ms
        due = [t for t in self._timers if t[0] <= now]
        if due:
            self._timers = [t for t in self._timers if t[0] > now]
            for _, fn in sorted(due, key=lambda t: t[0]):
                fn()

    def _edge_wake(self):
        """The WAKE_ reason of an input that rose (and forget the edges), or WAKE_NONE."""
        edges = self._edges
        for bit, wake in _EDGE_WAKE:
            if edges & bit:
                self._edges = 0
                return wake
        return WAKE_NONE

    def show_inputs(self):
        """The input bits a reply carries: idle() ends when they change."""
        self._inputs_seen = self.inputs
        return self.inputs

    def forget_edges(self):
        """The firmware saw the inputs as they are now (a reply went out):
        an edge from here on wakes the next sleep."""
        self._edges = 0

    # -- the board's outputs ----------------------------------------------

    def set_leds(self, duties):
        if duties != self.leds:
            self.leds = duties
            self.leds_history.append((self.world.now_ms, duties))

    def set_network(self, on):
        if on != self.network_on:
            self.network_on = on
            self.network_history.append((self.world.now_ms, on))

    def afe_boot(self):
        """The TS1 pulse wakes a shipped chip; an awake one ignores it."""
        if self.world.chip.shipped:
            self.world.chip.boot()

    def mcu_off(self):
        """The MCU stopped (a reset or deep sleep): its watchdog, the LED
        PWM and the network module stop with it."""
        with self.lock:
            now = self.world.now_ms
            self.watchdog.stop()
            if any(self.leds):
                self.leds = bytes(len(self.leds))
                self.leds_history.append((now, self.leds))
            if self.network_on:
                self.network_on = False
                self.network_history.append((now, False))

    def board_ma(self, state=None):
        """The board's estimated supply current in a power state (default:
        the present one): the MCU, the network module while awake, the AFE."""
        return board_draw_ma(state or self.mcu_state, self.network_on, self.world.chip.shipped)

    # -- time -------------------------------------------------------------

    def start_clock(self):
        """Anchor the pacing: simulated time from now on runs at speed."""
        self._wall0 = time.monotonic()
        self._sim0 = self.world.now_ms

    def ticks(self):
        return (TICKS_START + self.world.now_ms) & TICKS_MASK

    def clock_s(self):
        """The board's RTC, seconds: runs through resets and deep sleep."""
        return self.world.now_ms // 1000 + CLOCK_EPOCH_S

    def _wall_for(self, sim_ms):
        return self._wall0 + (sim_ms - self._sim0) / 1000.0 / self.speed

    def advance(self, ms, state):
        """Let ms of simulated time pass with the MCU in state: the world,
        on_advance, the power accounting, timers and the watchdog."""
        with self.lock:
            world = self.world
            ma = self.board_ma(state)
            self.meter.account(world.now_ms, ms, state, ma)
            world.bms_ma = ma  # the pack feeds the board
            world.advance(ms)
            if self.on_advance:
                self.on_advance(world)
            if self._timers:
                self._run_timers()
            self.watchdog.check(world.now_ms)

    def clamp(self, piece):
        """piece, cut short to end where the running watchdog would fire or
        the next timer (a button release) is due."""
        now = self.world.now_ms
        wdt = self.watchdog
        if wdt.timeout_ms is not None:
            left = wdt.fed_ms + wdt.timeout_ms - now
            if left < piece:
                piece = max(left, 1)
        for t, _ in self._timers:
            if now < t < now + piece:
                piece = t - now
        return piece

    def pace(self, piece, watch_rx):
        """Hold the wall clock until piece ms more of simulated time are due
        (speed None: at once). Returns the ms to advance: less when RS485
        bytes arrived meanwhile (watch_rx) or the server stops."""
        if not self.speed or not piece:
            return piece
        world = self.world
        now = time.monotonic()
        due = self._wall_for(world.now_ms + piece)
        if now - due > 1.0:
            # fell behind (a slow host): re-anchor instead of racing
            self._wall0 = now - (world.now_ms - self._sim0) / 1000.0 / self.speed
            due = self._wall_for(world.now_ms + piece)
        wait = due - now
        if wait > 0:
            fds = [self._wake_r]
            if watch_rx and self.rs485.master is not None:
                fds.append(self.rs485.master)
            if select.select(fds, [], [], wait)[0]:
                try:
                    os.read(self._wake_r, 64)
                except (BlockingIOError, OSError):
                    pass
                if self._stop.is_set():
                    return 0
                # bytes or an input arrived early: advance only the time that really passed
                passed = int((time.monotonic() - self._wall_for(world.now_ms)) * 1000 * self.speed)
                piece = max(0, min(piece, passed))
        return piece

    def boot_delay(self):
        """BOOT_MS of simulated time pass, the MCU booting (the pack and
        the AFE run on), unless the server stops."""
        world = self.world
        left = BOOT_MS
        while left > 0 and not self._stop.is_set():
            piece = min(left, world.ms_to_next_window())
            self.advance(piece, "awake")
            left -= piece

    def busy(self, ms):
        """ms (a float) of the firmware's own work pass, the MCU awake, in
        pieces that stop at the chip's windows and where the watchdog fires."""
        ms += self._busy_frac
        whole = int(ms)
        self._busy_frac = ms - whole
        world = self.world
        while whole > 0 and not self.watchdog.fired and not self._stop.is_set():
            piece = self.clamp(min(whole, world.ms_to_next_window()))
            self.advance(piece, "awake")
            whole -= piece

    def hang(self):
        """The firmware hangs with the watchdog running: time passes (the
        MCU awake, spinning) until the watchdog fires."""
        world = self.world
        wdt = self.watchdog
        while not wdt.fired and not self._stop.is_set() and wdt.timeout_ms is not None:
            self.advance(self.clamp(world.ms_to_next_window()), "awake")

    # -- idle and sleep -----------------------------------------------------

    def idle(self, ms):
        """Advance simulated time by up to ms; stop early on RS485 bytes, an
        input's change, a rising ALERT (the next AFE window's CC_READY) or
        the watchdog."""
        world = self.world
        rs485 = self.rs485
        target = world.now_ms + ms
        alert_before = world.chip.alert
        while world.now_ms < target and not self._stop.is_set():
            with self.lock:
                rs485.drain()
                if rs485.rxq or self.inputs != self._inputs_seen:
                    # bytes, or an input is not what the firmware last saw
                    # (the board watches its pins while idle)
                    return
            piece = self.clamp(min(target - world.now_ms, world.ms_to_next_window()))
            piece = self.pace(piece, True)
            if self.inputs != self._inputs_seen:
                return  # an input changed while the wall clock caught up
            if piece:
                self.advance(piece, "awake")
                if self.watchdog.fired:
                    return
            if world.chip.alert and not alert_before:
                return
            alert_before = world.chip.alert

    def light_sleep(self, ms):
        """Light sleep for up to ms: the WAKE_ reason (WAKE_NONE when the
        watchdog fired or the server stops)."""
        world = self.world
        rs485 = self.rs485
        with self.lock:
            rs485.drain()
            if rs485.rxq:
                return WAKE_RS485  # received while awake: they wait in the FIFO
            self.mcu_state = "light_sleep"
        try:
            target = world.now_ms + ms
            while not self._stop.is_set():
                with self.lock:
                    rs485.drain()
                    if rs485.rxq:
                        # the RX pin woke the MCU: the UART was asleep, the bytes are lost
                        del rs485.rxq[:]
                        return WAKE_RS485
                    wake = self._edge_wake()
                    if wake:
                        return wake
                if world.now_ms >= target:
                    return WAKE_TIMER
                piece = self.clamp(min(target - world.now_ms, world.ms_to_next_window()))
                piece = self.pace(piece, True)
                if piece:
                    self.advance(piece, "light_sleep")
                    if self.watchdog.fired:
                        return WAKE_NONE
                if not self.speed:
                    time.sleep(0)  # let a test thread in to drive the inputs
            return WAKE_NONE
        finally:
            self.mcu_state = "awake"

    def deep_sleep(self):
        """The MCU in deep sleep (its process gone): the world runs on until
        an input's rising edge. Its WAKE_ reason, or None when the server stops."""
        world = self.world
        self.mcu_state = "deep_sleep"
        # (a replay's world has no quiet_ms: its trace's current flows anyway)
        quiet = getattr(world, "quiet_ms", None)
        yield_at = 0.0
        try:
            while not self._stop.is_set():
                with self.lock:
                    self.rs485.drain()
                    del self.rs485.rxq[:]  # nothing listens on RS485
                    wake = self._edge_wake()
                    if wake:
                        return wake
                piece = quiet(self._deep_piece_ms()) if quiet else world.ms_to_next_window()
                piece = self.pace(self.clamp(piece), False)
                if piece:
                    self.advance(piece, "deep_sleep")
                if not self.speed:
                    # let a test thread in to drive the inputs, every ms of
                    # wall time (a yield per piece would cost most of a month)
                    now = time.monotonic()
                    if now >= yield_at:
                        time.sleep(0)
                        yield_at = now + 0.001
            return None
        finally:
            self.mcu_state = "awake"

    def _deep_piece_ms(self):
        """The longest piece of deep sleep to pass at once: DEEP_PIECE_MS
        at full speed; paced, about 50 ms of wall time (on_advance watchers
        such as a dashboard still see the time move)."""
        if not self.speed:
            return DEEP_PIECE_MS
        ms = int(self.speed * 50)
        return CC_PERIOD_MS if ms < CC_PERIOD_MS else (DEEP_PIECE_MS if ms > DEEP_PIECE_MS else ms)
