"""One simulated BMS board, as tests and tools use it: the firmware runs
under the MicroPython unix port and its hardware requests are answered
against the World.

SimServer puts together its parts, each an object with its own state:

- bms_sim.process: the firmware's process (started, ended, rebooted) and
  its log;
- bms_sim.link: the request protocol over the Unix socket, served in a
  thread, through resets, watchdog resets and deep sleep;
- bms_sim.rs485: the board's RS485 port and the pseudo-terminal a host
  opens like a serial port;
- bms_sim.boardmodel: simulated time and its pacing, sleep, inputs,
  timers, the watchdog, LEDs and network, and the supply current
  (bms_sim.power).

The parts' attributes tests and tools read (restarts, leds, tx, ...) are
SimServer's too.
"""
import threading
import time

from bms_sim.boardmodel import BoardModel
from bms_sim.link import Link
from bms_sim.power import POWER_STATES
from bms_sim.process import DEFAULT_HEAP, FirmwareProcess, SimError
from bms_sim.rs485 import Rs485


def _part(path):
    """A SimServer attribute that is a part's ("board.watchdog.fed_ms")."""
    *owners, name = path.split(".")

    def owner(self):
        for o in owners:
            self = getattr(self, o)
        return self

    return property(lambda self: getattr(owner(self), name), lambda self, v: setattr(owner(self), name, v),
                    doc="self.%s" % path)


class SimServer:
    """One simulated BMS board: the World, the firmware process, the link.

    Tests use it directly: `with server.lock:` guards any change to the
    world while the firmware runs; `send()` injects RS485 bytes and `tx`
    collects what the firmware sent; set_input() and press_button() drive
    the board's inputs; leds, network_on, mcu_state, reset_causes, energy()
    and average_ma() show what the board did.
    """

    # the firmware's process
    state_dir = _part("process.state_dir")
    lib_dir = _part("process.lib_dir")
    target = _part("process.target")
    micropython = _part("process.micropython")
    heap = _part("process.heap")
    main_py = _part("process.main_py")
    main_args = _part("process.main_args")
    log_path = _part("process.log_path")
    dns_server = _part("process.dns_server")
    proc = _part("process.proc")
    boots = _part("process.boots")
    reset_causes = _part("process.reset_causes")
    # the link
    requests = _part("link.requests")
    restarts = _part("link.restarts")
    reset_reasons = _part("link.reset_reasons")
    error = _part("link.error")
    exited = _part("link.exited")
    boot_ops = _part("link.boot_ops")
    hang_s = _part("link.hang_s")
    hang_i2c = _part("link.hang_i2c")
    serial_baud = _part("link.serial_baud")
    busy_wall = _part("link.busy_wall")
    # the RS485 port
    link_path = _part("rs485.link_path")
    rxq = _part("rs485.rxq")
    tx = _part("rs485.tx")
    on_transmit = _part("rs485.on_transmit")
    # the board
    world = _part("board.world")
    speed = _part("board.speed")
    on_advance = _part("board.on_advance")
    inputs = _part("board.inputs")
    mcu_state = _part("board.mcu_state")
    leds = _part("board.leds")
    leds_history = _part("board.leds_history")
    network_on = _part("board.network_on")
    network_history = _part("board.network_history")
    wdt_timeout_ms = _part("board.watchdog.timeout_ms")
    wdt_fed_ms = _part("board.watchdog.fed_ms")
    wdt_starts = _part("board.watchdog.starts")
    wdt_feed_ms = _part("board.watchdog.feed_ms")
    segments = _part("board.meter.segments")

    def __init__(self, world, state_dir, speed=None, link_path=None, heap=DEFAULT_HEAP,
                 micropython=None, lib_dir=None, main_py=None, log_path=None, on_advance=None, mpy=None,
                 target=None, main_args=()):
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self.process = FirmwareProcess(state_dir, self._stop, heap=heap, micropython=micropython, lib_dir=lib_dir,
                                       main_py=main_py, log_path=log_path, mpy=mpy, target=target,
                                       main_args=main_args)
        self.rs485 = Rs485(link_path)
        self.board = BoardModel(world, self.lock, self._stop, self.rs485, speed)
        self.board.on_advance = on_advance
        self.link = Link(self.process, self.board, self.rs485, self.lock, self._stop)

    # -- lifecycle --------------------------------------------------------

    def start(self, timeout=10.0):
        self.process.power_on()
        if self.rs485.link_path:
            self.rs485.open()
        self.process.prepare(timeout)
        try:
            conn = self.process.boot()
        except BaseException:
            self.stop()
            raise
        self.board.start_clock()
        self.link.start(conn)
        return self

    def stop(self):
        self._stop.set()
        self.board.poke()
        self.process.terminate()
        self.link.join(10)
        self.process.shutdown()
        self.link.exited.set()
        self.process.close()
        self.rs485.close()
        self.board.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, n=40):
        return self.process.log_tail(n)

    # -- the board's RS485 port and inputs ------------------------------------

    def send(self, data):
        """Bytes arriving on the BMS's RS485 receiver (as a host would send)."""
        with self.lock:
            self.rs485.rxq += data
        self.board.poke()

    def set_input(self, name, on):
        """Drive an input: "button" (pressed), "acc" (ignition/enable) or
        "charger" (connected). A rising edge is a wake source."""
        self.board.set_input(name, on)

    def press_button(self, ms):
        """Press the button now and release it ms of simulated time later."""
        self.board.press_button(ms)

    def at(self, sim_ms, fn):
        """Call fn() (holding the lock) once simulated time reaches sim_ms."""
        self.board.at(sim_ms, fn)

    # -- power and time ---------------------------------------------------

    def board_ma(self, state=None):
        """The board's estimated supply current in a power state (default:
        the present one): the MCU, the network module while awake, the AFE."""
        return self.board.board_ma(state)

    def energy(self):
        """bms_sim.power.PowerMeter.energy(): per power state and in total."""
        with self.lock:
            return self.board.meter.energy()

    def average_ma(self, t0_ms, t1_ms):
        """The board's average current (mA) over simulated time t0_ms..t1_ms
        (world.now_ms values), or None when no time passed there."""
        with self.lock:
            return self.board.meter.average_ma(t0_ms, t1_ms)

    def ticks(self):
        return self.board.ticks()

    def clock_s(self):
        """The board's RTC, seconds: runs through resets and deep sleep."""
        return self.board.clock_s()

    # -- waiting for the firmware --------------------------------------------

    def _wait(self, done, timeout, stopped, late):
        """Block until done(); a SimError of stopped(why) once the server
        no longer serves, of late() after timeout s."""
        deadline = time.monotonic() + timeout
        while not done():
            if self.exited.is_set():
                raise SimError(stopped(self._stopped_message()))
            if time.monotonic() > deadline:
                raise SimError(late())
            time.sleep(0.002)

    def wait_sim_ms(self, sim_ms, timeout=60.0):
        """Block until the world's clock reaches sim_ms (the firmware keeps running)."""
        self._wait(lambda: self.world.now_ms >= sim_ms, timeout, lambda why: why,
                   lambda: "simulated time stuck at %d ms (wanted %d):\n%s"
                   % (self.world.now_ms, sim_ms, self.log_tail()))

    def wait_restarts(self, n, timeout=30.0):
        """Block until the firmware has been reset n times in all and the
        new firmware is connected and served."""
        self._wait(lambda: self.restarts >= n, timeout,
                   lambda why: "%s\n(%d of %d restarts)" % (why, self.restarts, n),
                   lambda: "%d of %d restarts after %.0f s:\n%s" % (self.restarts, n, timeout, self.log_tail()))

    def wait_boots(self, n, timeout=30.0):
        """Block until n firmware processes have come up in all (the first,
        and one per reset, watchdog reset or wake from deep sleep)."""
        self._wait(lambda: self.boots >= n, timeout,
                   lambda why: "%s\n(%d of %d boots)" % (why, self.boots, n),
                   lambda: "%d of %d boots after %.0f s:\n%s" % (self.boots, n, timeout, self.log_tail()))

    def wait_mcu_state(self, state, timeout=30.0):
        """Block until the MCU is in state ("awake", "light_sleep", "deep_sleep")."""
        if state not in POWER_STATES:
            raise ValueError("no MCU state %r" % state)
        self._wait(lambda: self.mcu_state == state, timeout, lambda why: why,
                   lambda: "the MCU is %s, not %s, after %.0f s:\n%s"
                   % (self.mcu_state, state, timeout, self.log_tail()))

    def _stopped_message(self):
        if self.error:
            return "the firmware stopped: %s\n%s" % (self.error, self.log_tail())
        return "the firmware stopped:\n" + self.log_tail()
