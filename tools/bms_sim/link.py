"""The simulator's side of the simulated board: runs the firmware under the
MicroPython unix port and answers its hardware requests.

The firmware (lib/bms/boards/sim.py) connects over a Unix socket and sends
fixed-size frames: I2C transfers go to the simulated bq769x0, RS485 bytes to
and from a pseudo-terminal a host opens like a serial port, and idle
requests let simulated time pass. Time is the World's: it moves only while
the firmware idles or sleeps, paced against the wall clock by `speed`
(None = as fast as the firmware runs).

The board's power side (ops in bms.boards.sim):

- inputs: set_input("button" | "acc" | "charger", on) and press_button(ms);
  the IN_ bits go out in every reply. A rising edge is a wake source.
- OP_SLEEP: light sleep. Simulated time passes until the timer (WAKE_TIMER),
  RS485 bytes (WAKE_RS485: the ESP32 wakes on the RX pin as a GPIO, so the
  bytes that woke it are dropped and the host's retry is answered), or a
  rising edge of the charger, ACC or button input (WAKE_CHARGER, WAKE_ACC,
  WAKE_BUTTON; an edge since the firmware's last reply counts too). ALERT
  does not wake it. RS485 bytes already waiting when it sleeps wake it at
  once and are kept (they were received while awake).
- OP_DEEPSLEEP: the firmware exits; the world runs on until a rising edge of
  ACC, the charger or the button, then a new firmware boots (BOOT_MS later)
  whose HELLO reports RESET_DEEPSLEEP and the wake reason. RS485 bytes
  meanwhile are lost.
- OP_RESET: the next boot reports RESET_SOFT; the first RESET_POWER_ON.
- OP_WDT: the watchdog, in simulated ms (a = 0 start; a = 1 feed, or b = 1
  on an OP_IDLE / OP_SLEEP: the feed the board deferred to it). Not fed for its timeout while time
  passes (idle, light sleep, anywhere), it kills the firmware and boots a
  new one with RESET_WDT. A firmware that sends nothing for `hang_s` (HANG_S)
  of wall time while the watchdog runs is hung: the world advances to the
  watchdog's deadline and the same reset follows. Every MCU reset or deep
  sleep stops the watchdog, turns the network off and the LEDs dark.
- OP_LEDS / OP_NET: `leds` and `leds_history`, `network_on` and
  `network_history`, each change stamped with the simulated ms.
- OP_AFE_BOOT: the TS1 boot pulse, world.chip.boot(), when the chip is
  shipped (a pulse on an awake chip changes nothing).
- OP_CLOCK: the board's RTC seconds, world.now_ms // 1000 + CLOCK_EPOCH_S:
  it runs through resets and deep sleep, as the ESP32's RTC does.
- Power accounting: every simulated ms is "awake", "light_sleep" or
  "deep_sleep", at an estimated board current (MCU + network + AFE, the
  figures below); energy() sums them per state and average_ma() averages a
  window of simulated time. The same current drains the pack: every
  advance sets world.bms_ma = board_ma() (the World takes it from the
  cells, not through the shunt).
- Deep sleep with the AFE shipped passes time in pieces of up to
  DEEP_PIECE_MS (World.quiet_ms), so a month of it runs in seconds.

Estimated currents (mA, from the reference board's figures in bms.boards,
DRAW_*_UA, which the firmware counts against its SOC too):
    MA_AWAKE       40     ESP32 running, radio off (modem-sleep at 160 MHz,
                          27-44 mA) plus the RS485 transceiver (~0.5 mA)
    MA_NETWORK     +80    Wi-Fi on, averaged
    MA_LIGHT_SLEEP 0.8    ESP32 light sleep
    MA_DEEP_SLEEP  0.01   ESP32 deep sleep, RTC timer and memory on
    MA_AFE_NORMAL  0.04   bq769x0 NORMAL mode
    MA_AFE_SHIP    0.001  bq769x0 SHIP mode
"""
import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import tty

from bms.boards import (DRAW_AFE_SHIP_UA, DRAW_AFE_UA, DRAW_AWAKE_UA, DRAW_DEEP_SLEEP_UA, DRAW_LIGHT_SLEEP_UA,
                        DRAW_NETWORK_UA, IN_ACC, IN_BUTTON, IN_CHARGER, REASON_CRASH, RESET_DEEPSLEEP, RESET_HARD,
                        RESET_POWER_ON, RESET_SOFT, RESET_WDT, WAKE_ACC, WAKE_BUTTON, WAKE_CHARGER, WAKE_NONE,
                        WAKE_RS485, WAKE_TIMER)
from bms.boards import sim as P
from bms.afe.bq769x0.regs import CC_PERIOD_MS
from bms_build.build import compile_lib
from bms_sim.target import TargetError, find_target

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICKS_MASK = 0x3FFFFFFF
# MicroPython heap for the firmware: None is the target's default
# (bms_sim.target): 56K on the ESP32 twin, the ESP32's initial heap in its
# own object sizes, frozen bytecode in flash as on a board.
DEFAULT_HEAP = None
# Start the firmware's clock 5 s before the 2**30 wrap, so every run crosses it.
TICKS_START = 0x40000000 - 5000
# An MCU reset (OP_RESET, machine.reset() on the device) costs this much
# simulated time before the new firmware speaks: an ESP32 takes about 300 ms
# from reset through the ROM and MicroPython's boot to main.py. The pack and
# the AFE run on meanwhile.
BOOT_MS = 300
# how long the firmware may take to exit after its reset was acked
RESET_EXIT_S = 5.0
# A firmware that sends no request for this long (wall time) while its
# watchdog runs is hung: the watchdog resets it.
HANG_S = 3.0
_BOOT_OPS = 64  # requests of each boot kept in boot_ops, for tests of the boot order

# Estimated supply currents in mA, per part and state: the reference
# board's figures (bms.boards DRAW_*_UA, their sources there).
MA_AWAKE = DRAW_AWAKE_UA / 1000.0
MA_NETWORK = DRAW_NETWORK_UA / 1000.0
MA_LIGHT_SLEEP = DRAW_LIGHT_SLEEP_UA / 1000.0
MA_DEEP_SLEEP = DRAW_DEEP_SLEEP_UA / 1000.0
MA_AFE_NORMAL = DRAW_AFE_UA / 1000.0
MA_AFE_SHIP = DRAW_AFE_SHIP_UA / 1000.0
MCU_MA = {"awake": MA_AWAKE, "light_sleep": MA_LIGHT_SLEEP, "deep_sleep": MA_DEEP_SLEEP}
POWER_STATES = ("awake", "light_sleep", "deep_sleep")
# Deep sleep with a shipped AFE passes simulated time in pieces of up to
# this (speed None): the wake inputs are looked at between them.
DEEP_PIECE_MS = 60000
# OP_CLOCK: the RTC's seconds at world time 0, so the clock is not 0 at the
# start (an ESP32's RTC counts from its first power-up or its last set).
CLOCK_EPOCH_S = 1000000
# at most this many (start, end, state, mA) segments are kept for
# average_ma(); beyond it the oldest are merged pairwise
SEGMENTS_MAX = 20000

INPUTS = {"button": IN_BUTTON, "acc": IN_ACC, "charger": IN_CHARGER}
# the wake reason of each input's rising edge, in order of precedence
_EDGE_WAKE = ((IN_CHARGER, WAKE_CHARGER), (IN_ACC, WAKE_ACC), (IN_BUTTON, WAKE_BUTTON))
_WAKE_NAMES = {WAKE_TIMER: "timer", WAKE_RS485: "rs485", WAKE_CHARGER: "charger", WAKE_ACC: "acc",
               WAKE_BUTTON: "button"}


class SimError(RuntimeError):
    pass


def board_draw_ma(state, network_on, afe_shipped):
    """The board's estimated supply current (mA) in an MCU power state
    ("awake", "light_sleep", "deep_sleep"): the MCU, the network module
    while awake, the AFE (NORMAL or SHIP)."""
    ma = MCU_MA[state]
    if state == "awake" and network_on:
        ma += MA_NETWORK
    return ma + (MA_AFE_SHIP if afe_shipped else MA_AFE_NORMAL)


def find_micropython(explicit=None):
    """Path of the MicroPython binary the firmware runs on (bms_sim.target),
    or a SimError naming the fix."""
    try:
        return find_target(explicit).exe
    except TargetError as e:
        raise SimError(str(e)) from None


class SimServer:
    """One simulated BMS board: the World, the firmware process, the link.

    Tests use it directly: `with server.lock:` guards any change to the
    world while the firmware runs; `send()` injects RS485 bytes and `tx`
    collects what the firmware sent; set_input() and press_button() drive
    the board's inputs; leds, network_on, mcu_state, reset_causes, energy()
    and average_ma() show what the board did.
    """

    def __init__(self, world, state_dir, speed=None, link_path=None, heap=DEFAULT_HEAP,
                 micropython=None, lib_dir=None, main_py=None, log_path=None, on_advance=None, mpy=None,
                 target=None, main_args=()):
        self.world = world
        self.state_dir = state_dir
        self.speed = speed
        self.link_path = link_path
        self.lib_dir = lib_dir or compile_lib()
        try:
            # a lib_dir of its own is .mpy files: the frozen firmware is make build's
            self.target = target or find_target(micropython, mpy=True if lib_dir else mpy)
        except TargetError as e:
            raise SimError(str(e)) from None
        self.micropython = self.target.exe
        self.heap = heap or self.target.default_heap
        # the firmware's entry: a script of the caller's, or main.py (frozen in the twin)
        self.main_py = main_py or (None if self.target.frozen else os.path.join(ROOT, "main.py"))
        self.main_args = [str(a) for a in main_args]  # the script's sys.argv[1:]
        self.log_path = log_path or os.path.join(state_dir, "firmware.log")
        self.on_advance = on_advance
        self.on_transmit = None  # called with every chunk the firmware sends
        self.lock = threading.RLock()
        self.rxq = bytearray()
        self.tx = bytearray()
        self.requests = 0
        # MCU resets it came back from: the firmware's own (OP_RESET) and the watchdog's
        self.restarts = 0
        self.reset_reasons = []  # their reasons, in order: OP_RESET's code, or "wdt"
        self.boots = 0  # firmware processes that came up, the first included
        self.reset_causes = []  # the RESET_ code each of them was told
        self.error = None  # why serving ended, when it ended badly
        self.proc = None
        self.exited = threading.Event()  # set once the server no longer serves
        # the board's power side
        self.inputs = 0  # IN_ bits
        self.mcu_state = "awake"  # "awake", "light_sleep" or "deep_sleep"
        self.hang_i2c = False  # fault injection: the next I2C transfer never ends
        # The firmware's own time, for stall tests (off by default: the
        # firmware then runs in no simulated time and every run repeats).
        # serial_baud: each byte it sends on RS485 takes 11 bit times, as
        # the ESP32's Rs485.write waits for the last stop bit before DE
        # drops (a 255-byte reply at 9600 baud: 292 ms). busy_wall: the wall
        # time from a reply to the firmware's next request (a network call
        # blocking on its timeout, its own code) passes as simulated time,
        # MCU awake: a socket times out in real time on the ESP32 too.
        self.serial_baud = None
        self.busy_wall = False
        self.dns_server = None  # (ip, port): the DNS server the firmware's board reports
        self._busy_frac = 0.0  # the part of a ms not yet passed
        self._inputs_seen = 0  # the input bits of the last reply
        # send(), set_input() and stop() wake a paced wait at once
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.leds = b""  # the last duties, one byte per LED
        self.leds_history = []  # (sim ms, duties) at every change
        self.network_on = False
        self.network_history = []  # (sim ms, on) at every change
        self.wdt_timeout_ms = None  # the running watchdog's timeout; None: not running
        self.wdt_fed_ms = 0  # simulated ms of its last feed (or start)
        self.wdt_starts = []  # (sim ms, timeout ms) of every start, or new timeout
        # the firmware's last feed (not a start): it feeds once a cycle has
        # measured, judged and switched, so this is when the last one ended
        self.wdt_feed_ms = None
        self.boot_ops = []  # (op, a, arg) of this boot's first requests, from its HELLO
        self.hang_s = HANG_S
        self.segments = []  # [start ms, end ms, state, mA], consecutive same states merged
        self._energy = {st: [0, 0.0] for st in POWER_STATES}  # state: [ms, mA*ms]
        self._edges = 0  # inputs that rose since the firmware's last reply
        self._timers = []  # (sim ms, callable): run once simulated time reaches it
        self._wdt_fired = False
        self._boot_cause = (RESET_POWER_ON, WAKE_NONE)  # what the next HELLO reports
        self._stop = threading.Event()
        self._thread = None
        self._proc_lock = threading.Lock()
        self._listener = None
        self._conn = None
        self._env = None
        self._cmd = None
        self._timeout = 10.0
        self._tmp = None
        self._master = None
        self._slave = None
        self._log = None
        self._wall0 = None
        self._sim0 = 0

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout=10.0):
        os.makedirs(self.state_dir, exist_ok=True)
        # power-on: the MCU's RTC memory (the board's keep()) is gone; resets keep it
        try:
            os.remove(os.path.join(self.state_dir, P.KEPT_FILE))
        except FileNotFoundError:
            pass
        if self.link_path:
            self._open_pty()
        self._tmp = tempfile.mkdtemp(prefix="bms-sim-")
        sock_path = os.path.join(self._tmp, "board.sock")
        # the listener stays open for the server's lifetime: every firmware
        # boot (the first, and one per MCU reset) connects to it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sock_path)
        listener.listen(1)
        listener.settimeout(0.2)
        self._listener = listener
        env = dict(os.environ)
        env["MICROPYPATH"] = self.target.path(self.lib_dir)
        env[P.ENV_SOCKET] = sock_path
        env[P.ENV_STATE] = self.state_dir
        if self.dns_server:
            env[P.ENV_DNS] = "%s:%d" % self.dns_server
        self._env = env
        self._cmd = self.target.boot_argv(self.heap, self.main_py) + self.main_args
        self._log = open(self.log_path, "wb")
        self._timeout = timeout
        self._boot_cause = (RESET_POWER_ON, WAKE_NONE)
        try:
            conn = self._boot(timeout)
        except BaseException:
            self.stop()
            raise
        self._conn = conn
        self._wall0 = time.monotonic()
        self._sim0 = self.world.now_ms
        self._thread = threading.Thread(target=self._serve, name="bms-sim-link", daemon=True)
        self._thread.start()
        return self

    def _boot(self, timeout):
        """Start a firmware process and accept its connection (a SimError if
        it exits first, does not connect in time, or the server stops)."""
        with self._proc_lock:
            if self._stop.is_set():
                raise SimError("the simulator is stopping")
            self.proc = proc = subprocess.Popen(self._cmd, env=self._env, stdin=subprocess.DEVNULL,
                                                stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn, _ = self._listener.accept()
                break
            except socket.timeout:
                if self._stop.is_set():
                    raise SimError("the simulator stopped before the firmware connected") from None
                if proc.poll() is not None:
                    raise SimError("the firmware exited before connecting (code %s):\n%s"
                                   % (proc.returncode, self.log_tail())) from None
                if time.monotonic() > deadline:
                    raise SimError("the firmware did not connect within %.0f s:\n%s"
                                   % (timeout, self.log_tail())) from None
            except OSError as e:  # the listener was closed: stop()
                raise SimError("the simulator stopped before the firmware connected (%s)" % e) from e
        conn.settimeout(None)
        self.boots += 1
        self.reset_causes.append(self._boot_cause[0])
        return conn

    def _end_process(self, kill=False):
        """The firmware's process ends (given RESET_EXIT_S to exit by itself,
        or killed at once: a watchdog reset), and the MCU with it."""
        proc = self.proc
        if not kill:
            deadline = time.monotonic() + RESET_EXIT_S
            while proc.poll() is None and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._mcu_off()

    def _mcu_off(self):
        """The MCU stopped (a reset or deep sleep): its watchdog, the LED
        PWM and the network module stop with it."""
        with self.lock:
            now = self.world.now_ms
            self.wdt_timeout_ms = None
            self._wdt_fired = False
            if any(self.leds):
                self.leds = bytes(len(self.leds))
                self.leds_history.append((now, self.leds))
            if self.network_on:
                self.network_on = False
                self.network_history.append((now, False))

    def _log_line(self, text):
        try:
            self._log.write(b"--- bms-sim: " + text.encode() + b" ---\n")
            self._log.flush()
        except (AttributeError, OSError, ValueError):
            pass

    def _reboot(self, cause, wake, after):
        """Boot a new firmware BOOT_MS of simulated time from now (the pack
        and the AFE run on meanwhile); its HELLO reports (cause, wake). The
        new connection, or None when the server stops or the new firmware
        does not come up (self.error says why)."""
        world = self.world
        left = BOOT_MS
        while left > 0 and not self._stop.is_set():
            piece = min(left, world.ms_to_next_window())
            self._advance(piece, "awake")
            left -= piece
        if self._stop.is_set():
            return None
        self._boot_cause = (cause, wake)
        try:
            conn = self._boot(self._timeout)
        except (SimError, OSError, ValueError) as e:
            if not self._stop.is_set():
                self.error = "the firmware did not come back after %s: %s" % (after, e)
            return None
        self._conn = conn
        return conn

    def _poke(self):
        w = self._wake_w
        if w is None:
            return
        try:
            os.write(w, b"!")
        except (BlockingIOError, OSError):
            pass  # already poked

    def stop(self):
        self._stop.set()
        self._poke()
        with self._proc_lock:
            proc = self.proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(10)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        # a reset in flight may have started a process after the one above
        with self._proc_lock:
            proc = self.proc
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        self.exited.set()
        if self._log:
            self._log.close()
            self._log = None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self.link_path and os.path.islink(self.link_path):
            os.unlink(self.link_path)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._wake_w is not None:
            fds = (self._wake_r, self._wake_w)
            self._wake_w = None
            for fd in fds:
                os.close(fd)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no firmware log)"
        return "\n".join(lines[-n:])

    # -- the RS485 link ---------------------------------------------------

    def _open_pty(self):
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        d = os.path.dirname(os.path.abspath(self.link_path))
        os.makedirs(d, exist_ok=True)
        if os.path.islink(self.link_path) or os.path.exists(self.link_path):
            os.unlink(self.link_path)
        os.symlink(os.ttyname(slave), self.link_path)

    def send(self, data):
        """Bytes arriving on the BMS's RS485 receiver (as a host would send)."""
        with self.lock:
            self.rxq += data
        self._poke()

    def _drain_pty(self):
        if self._master is None:
            return
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.rxq += chunk

    def _transmit(self, data):
        self.tx += data
        if self.on_transmit:
            self.on_transmit(data)
        if self._master is not None:
            try:
                os.write(self._master, data)
            except (BlockingIOError, OSError):
                pass  # nobody reading: a real bus drops it too

    # -- inputs -----------------------------------------------------------

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
        self._poke()

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

    # -- power accounting -------------------------------------------------

    def board_ma(self, state=None):
        """The board's estimated supply current in a power state (default:
        the present one): the MCU, the network module while awake, the AFE."""
        return board_draw_ma(state or self.mcu_state, self.network_on, self.world.chip.shipped)

    def _account(self, t0, ms, state):
        ma = self.board_ma(state)
        e = self._energy[state]
        e[0] += ms
        e[1] += ma * ms
        segs = self.segments
        last = segs[-1] if segs else None
        if last is not None and last[2] == state and last[1] == t0:
            span = last[1] - last[0]
            if last[3] != ma:
                last[3] = (last[3] * span + ma * ms) / (span + ms)
            last[1] = t0 + ms
        else:
            segs.append([t0, t0 + ms, state, ma])
            if len(segs) > SEGMENTS_MAX:
                self._fold_segments()

    def _fold_segments(self):
        """Merge the older half of the segments pairwise (keeping their charge)."""
        segs = self.segments
        half = len(segs) // 2
        merged = []
        for i in range(0, half - 1, 2):
            a, b = segs[i], segs[i + 1]
            da, db = a[1] - a[0], b[1] - b[0]
            ma = (a[3] * da + b[3] * db) / (da + db) if da + db else a[3]
            merged.append([a[0], b[1], a[2] if a[2] == b[2] else "mixed", ma])
        if half % 2:
            merged.append(segs[half - 1])
        segs[:half] = merged

    def energy(self):
        """{state: {"s", "mah", "avg_ma"}} for "awake", "light_sleep",
        "deep_sleep" and "total": simulated seconds in the state, the charge
        the board drew there (mAh) and its average current (mA)."""
        def summary(ms, q):
            return {"s": ms / 1000.0, "mah": q / 3600000.0, "avg_ma": q / ms if ms else 0.0}

        with self.lock:
            out = {st: summary(*self._energy[st]) for st in POWER_STATES}
            out["total"] = summary(sum(e[0] for e in self._energy.values()),
                                   sum(e[1] for e in self._energy.values()))
        return out

    def average_ma(self, t0_ms, t1_ms):
        """The board's average current (mA) over simulated time t0_ms..t1_ms
        (world.now_ms values), or None when no time passed there."""
        if t1_ms <= t0_ms:
            raise ValueError("average_ma needs t0_ms < t1_ms")
        q = 0.0
        covered = 0
        with self.lock:
            for s0, s1, _, ma in self.segments:
                lo = s0 if s0 > t0_ms else t0_ms
                hi = s1 if s1 < t1_ms else t1_ms
                if hi > lo:
                    q += ma * (hi - lo)
                    covered += hi - lo
        return q / covered if covered else None

    # -- time -------------------------------------------------------------

    def ticks(self):
        return (TICKS_START + self.world.now_ms) & TICKS_MASK

    def _wall_for(self, sim_ms):
        return self._wall0 + (sim_ms - self._sim0) / 1000.0 / self.speed

    def _advance(self, ms, state):
        """Let ms of simulated time pass with the MCU in state: the world,
        on_advance, the power accounting, timers and the watchdog."""
        with self.lock:
            world = self.world
            self._account(world.now_ms, ms, state)
            world.bms_ma = self.board_ma(state)  # the pack feeds the board
            world.advance(ms)
            if self.on_advance:
                self.on_advance(world)
            if self._timers:
                self._run_timers()
            if self.wdt_timeout_ms is not None and world.now_ms - self.wdt_fed_ms >= self.wdt_timeout_ms:
                self._wdt_fired = True

    def _clamp(self, piece):
        """piece, cut short to end where the running watchdog would fire or
        the next timer (a button release) is due."""
        now = self.world.now_ms
        if self.wdt_timeout_ms is not None:
            left = self.wdt_fed_ms + self.wdt_timeout_ms - now
            if left < piece:
                piece = max(left, 1)
        for t, _ in self._timers:
            if now < t < now + piece:
                piece = t - now
        return piece

    def _pace(self, piece, watch_rx):
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
            if watch_rx and self._master is not None:
                fds.append(self._master)
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

    def _busy(self, ms):
        """ms (a float) of the firmware's own work pass, the MCU awake, in
        pieces that stop at the chip's windows and where the watchdog fires."""
        ms += self._busy_frac
        whole = int(ms)
        self._busy_frac = ms - whole
        world = self.world
        while whole > 0 and not self._wdt_fired and not self._stop.is_set():
            piece = self._clamp(min(whole, world.ms_to_next_window()))
            self._advance(piece, "awake")
            whole -= piece

    def _idle(self, ms):
        """Advance simulated time by up to ms; stop early on RS485 bytes, an
        input's change, a rising ALERT (the next AFE window's CC_READY) or
        the watchdog."""
        world = self.world
        target = world.now_ms + ms
        alert_before = world.chip.alert
        while world.now_ms < target and not self._stop.is_set():
            with self.lock:
                self._drain_pty()
                if self.rxq or self.inputs != self._inputs_seen:
                    # bytes, or an input is not what the firmware last saw
                    # (the board watches its pins while idle)
                    return
            piece = self._clamp(min(target - world.now_ms, world.ms_to_next_window()))
            piece = self._pace(piece, True)
            if self.inputs != self._inputs_seen:
                return  # an input changed while the wall clock caught up
            if piece:
                self._advance(piece, "awake")
                if self._wdt_fired:
                    return
            if world.chip.alert and not alert_before:
                return
            alert_before = world.chip.alert

    def _light_sleep(self, ms):
        """Light sleep for up to ms: the WAKE_ reason (WAKE_NONE when the
        watchdog fired or the server stops)."""
        world = self.world
        with self.lock:
            self._drain_pty()
            if self.rxq:
                return WAKE_RS485  # received while awake: they wait in the FIFO
            self.mcu_state = "light_sleep"
        try:
            target = world.now_ms + ms
            while not self._stop.is_set():
                with self.lock:
                    self._drain_pty()
                    if self.rxq:
                        # the RX pin woke the MCU: the UART was asleep, the bytes are lost
                        del self.rxq[:]
                        return WAKE_RS485
                    wake = self._edge_wake()
                    if wake:
                        return wake
                if world.now_ms >= target:
                    return WAKE_TIMER
                piece = self._clamp(min(target - world.now_ms, world.ms_to_next_window()))
                piece = self._pace(piece, True)
                if piece:
                    self._advance(piece, "light_sleep")
                    if self._wdt_fired:
                        return WAKE_NONE
                if not self.speed:
                    time.sleep(0)  # let a test thread in to drive the inputs
            return WAKE_NONE
        finally:
            self.mcu_state = "awake"

    def _deep_sleep(self):
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
                    self._drain_pty()
                    del self.rxq[:]  # nothing listens on RS485
                    wake = self._edge_wake()
                    if wake:
                        return wake
                piece = quiet(self._deep_piece_ms()) if quiet else world.ms_to_next_window()
                piece = self._pace(self._clamp(piece), False)
                if piece:
                    self._advance(piece, "deep_sleep")
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

    def clock_s(self):
        """The board's RTC, seconds: runs through resets and deep sleep."""
        return self.world.now_ms // 1000 + CLOCK_EPOCH_S

    def _hang(self):
        """The firmware hangs with the watchdog running: time passes (the
        MCU awake, spinning) until the watchdog fires."""
        world = self.world
        while not self._wdt_fired and not self._stop.is_set() and self.wdt_timeout_ms is not None:
            self._advance(self._clamp(world.ms_to_next_window()), "awake")

    # -- the request loop -------------------------------------------------

    def _serve(self):
        conn = self._conn
        try:
            while not self._stop.is_set():
                ended = self._serve_conn(conn)
                conn.close()
                conn = None
                if ended is None or self._stop.is_set():
                    return
                kind, arg = ended
                if kind == "deep":
                    self._end_process()
                    if self._stop.is_set():
                        return
                    self._log_line("deep sleep")
                    wake = self._deep_sleep()
                    if wake is None:
                        return
                    self._log_line("wake (%s), the firmware boots" % _WAKE_NAMES.get(wake, wake))
                    conn = self._reboot(RESET_DEEPSLEEP, wake, "deep sleep")
                elif kind == "wdt":
                    self._end_process(kill=True)
                    self.reset_reasons.append("wdt")
                    if self._stop.is_set():
                        return
                    self._log_line("watchdog reset (%s), the firmware restarts" % arg)
                    conn = self._reboot(RESET_WDT, WAKE_NONE, "a watchdog reset")
                    if conn is not None:
                        self.restarts += 1
                else:
                    self._end_process()
                    if self._stop.is_set():
                        return
                    self._log_line("MCU reset (reason %d), the firmware restarts" % arg)
                    # the guard's reset after a crash reads back as the ESP32's does: HARD_RESET
                    conn = self._reboot(RESET_HARD if arg == REASON_CRASH else RESET_SOFT, WAKE_NONE, "a reset")
                    if conn is not None:
                        self.restarts += 1
                if conn is None:
                    return
        finally:
            if conn is not None:
                conn.close()
            self.exited.set()

    def _serve_conn(self, conn):
        """Answer one firmware process's requests. Returns how it ended:
        ("reset", reason) when it asked for a reset, ("deep", None) for deep
        sleep, ("wdt", why) when its watchdog fired; None when it went away
        or the server stops."""
        req = bytearray(P.REQ_SIZE)
        view = memoryview(req)
        resp = bytearray(P.RESP_SIZE)
        last = time.monotonic()
        blocking = True
        try:
            while not self._stop.is_set():
                # while the watchdog runs, wait in slices to notice a hang
                if blocking != (self.wdt_timeout_ms is None):
                    blocking = not blocking
                    conn.settimeout(None if blocking else 0.1)
                got = 0
                while got < P.REQ_SIZE:
                    try:
                        k = conn.recv_into(view[got:])
                    except socket.timeout:
                        if self._stop.is_set():
                            return None
                        if self.wdt_timeout_ms is not None and time.monotonic() - last > self.hang_s:
                            self._hang()
                            if self._stop.is_set():
                                return None
                            return ("wdt", "hung")
                        continue
                    if k == 0:
                        return None
                    got += k
                self.requests += 1
                op, a, b, n = req[0], req[1], req[2], req[3]
                arg = struct.unpack_from("<I", req, 4)[0]
                if op == P.OP_HELLO:
                    self.boot_ops = []
                if len(self.boot_ops) < _BOOT_OPS:
                    self.boot_ops.append((op, a, arg))
                status = 0
                out = b""
                byte2 = None
                if self.hang_i2c and (op == P.OP_I2C_READ or op == P.OP_I2C_WRITE):
                    # fault injection: the AFE's bus hangs (SDA held low) and
                    # the transfer never ends; the MCU's reset frees the bus
                    self.hang_i2c = False
                    continue
                if self.busy_wall and op != P.OP_HELLO:
                    self._busy((time.monotonic() - last) * 1000.0)
                    if self._wdt_fired:
                        return ("wdt", "not fed")
                if (op == P.OP_IDLE or op == P.OP_SLEEP) and b & 1 and self.wdt_timeout_ms is not None:
                    self.wdt_fed_ms = self.wdt_feed_ms = self.world.now_ms  # a feed carried by the idle or sleep
                if op == P.OP_IDLE:
                    self._idle(arg)
                elif op == P.OP_SLEEP:
                    byte2 = self._light_sleep(arg)
                else:
                    with self.lock:
                        world = self.world
                        if op == P.OP_I2C_READ:
                            buf = bytearray(n)
                            try:
                                world.chip.readfrom_mem_into(a, b, buf)
                                out = buf
                            except OSError as e:
                                status = e.errno or 5
                        elif op == P.OP_I2C_WRITE:
                            try:
                                world.chip.writeto_mem(a, b, bytes(req[P.HDR:P.HDR + n]))
                            except OSError as e:
                                status = e.errno or 5
                        elif op == P.OP_UART_READ:
                            out = bytes(self.rxq[:n])
                            del self.rxq[:n]
                        elif op == P.OP_UART_WRITE:
                            if self.serial_baud:
                                self._busy(n * 11000.0 / self.serial_baud)  # the bytes leave, then the call returns
                            self._transmit(bytes(req[P.HDR:P.HDR + n]))
                        elif op == P.OP_WDT:
                            if a == 0:
                                # a start, or a new timeout for the running one
                                # (MicroPython v1.28's esp32 port reconfigures it)
                                self.wdt_timeout_ms = max(1, arg)
                                self.wdt_fed_ms = world.now_ms
                                self.wdt_starts.append((world.now_ms, arg))
                            elif self.wdt_timeout_ms is not None:
                                self.wdt_fed_ms = self.wdt_feed_ms = world.now_ms
                        elif op == P.OP_LEDS:
                            duties = bytes(req[P.HDR:P.HDR + n])
                            if duties != self.leds:
                                self.leds = duties
                                self.leds_history.append((world.now_ms, duties))
                        elif op == P.OP_NET:
                            on = bool(a)
                            if on != self.network_on:
                                self.network_on = on
                                self.network_history.append((world.now_ms, on))
                        elif op == P.OP_AFE_BOOT:
                            # the TS1 pulse wakes a shipped chip; an awake one ignores it
                            if world.chip.shipped:
                                world.chip.boot()
                        elif op == P.OP_CLOCK:
                            out = struct.pack("<I", self.clock_s())
                        elif op == P.OP_HELLO:
                            out = bytes((self.inputs,))
                if self._wdt_fired:
                    # the watchdog reset the MCU in the middle of this request
                    return ("wdt", "not fed")
                with self.lock:
                    self._drain_pty()
                    flags = (P.FLAG_ALERT if self.world.chip.alert else 0) | (P.FLAG_RX if self.rxq else 0)
                    resp[0] = status & 0xFF
                    resp[1] = flags
                    if op == P.OP_HELLO:
                        resp[2], resp[3] = self._boot_cause
                    else:
                        resp[2] = len(out) if byte2 is None else byte2
                        resp[3] = self.inputs
                        self._inputs_seen = self.inputs
                    # the firmware sees the inputs as they are now: an edge
                    # from here on wakes the next sleep
                    self._edges = 0
                    struct.pack_into("<I", resp, 4, self.ticks())
                    resp[P.HDR:P.HDR + len(out)] = out
                conn.sendall(resp)
                last = time.monotonic()
                if op == P.OP_RESET:
                    self.reset_reasons.append(arg)
                    return ("reset", arg)
                if op == P.OP_DEEPSLEEP:
                    return ("deep", None)
        except OSError:
            return None
        return None

    # -- helpers for tests and tools ---------------------------------------

    def wait_sim_ms(self, sim_ms, timeout=60.0):
        """Block until the world's clock reaches sim_ms (the firmware keeps running)."""
        deadline = time.monotonic() + timeout
        while self.world.now_ms < sim_ms:
            if self.exited.is_set():
                raise SimError(self._stopped_message())
            if time.monotonic() > deadline:
                raise SimError("simulated time stuck at %d ms (wanted %d):\n%s"
                               % (self.world.now_ms, sim_ms, self.log_tail()))
            time.sleep(0.002)

    def wait_restarts(self, n, timeout=30.0):
        """Block until the firmware has been reset n times in all and the
        new firmware is connected and served."""
        deadline = time.monotonic() + timeout
        while self.restarts < n:
            if self.exited.is_set():
                raise SimError("%s\n(%d of %d restarts)" % (self._stopped_message(), self.restarts, n))
            if time.monotonic() > deadline:
                raise SimError("%d of %d restarts after %.0f s:\n%s"
                               % (self.restarts, n, timeout, self.log_tail()))
            time.sleep(0.002)

    def wait_boots(self, n, timeout=30.0):
        """Block until n firmware processes have come up in all (the first,
        and one per reset, watchdog reset or wake from deep sleep)."""
        deadline = time.monotonic() + timeout
        while self.boots < n:
            if self.exited.is_set():
                raise SimError("%s\n(%d of %d boots)" % (self._stopped_message(), self.boots, n))
            if time.monotonic() > deadline:
                raise SimError("%d of %d boots after %.0f s:\n%s"
                               % (self.boots, n, timeout, self.log_tail()))
            time.sleep(0.002)

    def wait_mcu_state(self, state, timeout=30.0):
        """Block until the MCU is in state ("awake", "light_sleep", "deep_sleep")."""
        if state not in MCU_MA:
            raise ValueError("no MCU state %r" % state)
        deadline = time.monotonic() + timeout
        while self.mcu_state != state:
            if self.exited.is_set():
                raise SimError(self._stopped_message())
            if time.monotonic() > deadline:
                raise SimError("the MCU is %s, not %s, after %.0f s:\n%s"
                               % (self.mcu_state, state, timeout, self.log_tail()))
            time.sleep(0.002)

    def _stopped_message(self):
        if self.error:
            return "the firmware stopped: %s\n%s" % (self.error, self.log_tail())
        return "the firmware stopped:\n" + self.log_tail()
