"""The simulator's end of the board link: serves the firmware's hardware
requests (lib/bms/boards/sim.py) and carries it through resets, watchdog
resets and deep sleep.

The firmware connects over a Unix socket and sends fixed-size frames: I2C
transfers go to the simulated bq769x0, RS485 bytes to and from the board's
port (bms_sim.rs485), idle and sleep requests let simulated time pass (the
board model, bms_sim.boardmodel). Every reply carries the ALERT and RX
flags, the input bits and the firmware's ticks.

- OP_RESET: the next boot reports RESET_SOFT (RESET_HARD for the guard's
  reset after a crash); the first RESET_POWER_ON.
- OP_DEEPSLEEP: the firmware's process ends; the board sleeps until a wake
  input, then a new firmware boots reporting RESET_DEEPSLEEP.
- OP_WDT: the watchdog (a = 0 start; a = 1 feed, or b = 1 on an OP_IDLE /
  OP_SLEEP: the feed the board deferred to it). When it fires the firmware
  is killed and a new one boots with RESET_WDT. A firmware that sends
  nothing for `hang_s` (HANG_S) of wall time while the watchdog runs is
  hung: the world advances to the watchdog's deadline and the same reset
  follows.
- Every new firmware boots BOOT_MS of simulated time after the last one
  ended (the pack and the AFE run on meanwhile).
"""
import socket
import struct
import threading
import time

from bms.boards import (REASON_CRASH, RESET_DEEPSLEEP, RESET_HARD, RESET_SOFT, RESET_WDT, WAKE_ACC, WAKE_BUTTON,
                        WAKE_CHARGER, WAKE_NONE, WAKE_RS485, WAKE_TIMER)
from bms.boards import sim as P
from bms_sim.process import SimError

# A firmware that sends no request for this long (wall time) while its
# watchdog runs is hung: the watchdog resets it.
HANG_S = 3.0
_BOOT_OPS = 64  # requests of each boot kept in boot_ops, for tests of the boot order
_WAKE_NAMES = {WAKE_TIMER: "timer", WAKE_RS485: "rs485", WAKE_CHARGER: "charger", WAKE_ACC: "acc",
               WAKE_BUTTON: "button"}


class Link:
    """Serves the firmware processes (bms_sim.process) in a thread of its
    own, against the board model and its RS485 port; `lock` (the
    simulator's) is held around every change to the world, `stop` ends
    serving."""

    def __init__(self, process, board, rs485, lock, stop):
        self.process = process
        self.board = board
        self.rs485 = rs485
        self.lock = lock
        self.requests = 0
        # MCU resets it came back from: the firmware's own (OP_RESET) and the watchdog's
        self.restarts = 0
        self.reset_reasons = []  # their reasons, in order: OP_RESET's code, or "wdt"
        self.error = None  # why serving ended, when it ended badly
        self.exited = threading.Event()  # set once the server no longer serves
        self.boot_ops = []  # (op, a, arg) of this boot's first requests, from its HELLO
        self.hang_s = HANG_S
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
        self._stop = stop
        self._thread = None

    def start(self, conn):
        """Serve conn, the first firmware's connection, and the boots after it."""
        self._thread = threading.Thread(target=self._serve, args=(conn,), name="bms-sim-link", daemon=True)
        self._thread.start()

    def join(self, timeout):
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _serve(self, conn):
        process = self.process
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
                    process.log_line("deep sleep")
                    wake = self.board.deep_sleep()
                    if wake is None:
                        return
                    process.log_line("wake (%s), the firmware boots" % _WAKE_NAMES.get(wake, wake))
                    conn = self._reboot(RESET_DEEPSLEEP, wake, "deep sleep")
                elif kind == "wdt":
                    self._end_process(kill=True)
                    self.reset_reasons.append("wdt")
                    if self._stop.is_set():
                        return
                    process.log_line("watchdog reset (%s), the firmware restarts" % arg)
                    conn = self._reboot(RESET_WDT, WAKE_NONE, "a watchdog reset")
                    if conn is not None:
                        self.restarts += 1
                else:
                    self._end_process()
                    if self._stop.is_set():
                        return
                    process.log_line("MCU reset (reason %d), the firmware restarts" % arg)
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

    def _end_process(self, kill=False):
        """The firmware's process ends (killed at once: a watchdog reset),
        and the MCU with it."""
        self.process.end(kill)
        self.board.mcu_off()

    def _reboot(self, cause, wake, after):
        """Boot a new firmware BOOT_MS of simulated time from now; its HELLO
        reports (cause, wake). The new connection, or None when the server
        stops or the new firmware does not come up (self.error says why)."""
        self.board.boot_delay()
        if self._stop.is_set():
            return None
        self.process.boot_cause = (cause, wake)
        try:
            return self.process.boot()
        except (SimError, OSError, ValueError) as e:
            if not self._stop.is_set():
                self.error = "the firmware did not come back after %s: %s" % (after, e)
            return None

    def _serve_conn(self, conn):
        """Answer one firmware process's requests. Returns how it ended:
        ("reset", reason) when it asked for a reset, ("deep", None) for deep
        sleep, ("wdt", why) when its watchdog fired; None when it went away
        or the server stops."""
        board = self.board
        wdt = board.watchdog
        req = bytearray(P.REQ_SIZE)
        view = memoryview(req)
        resp = bytearray(P.RESP_SIZE)
        last = time.monotonic()
        blocking = True
        try:
            while not self._stop.is_set():
                # while the watchdog runs, wait in slices to notice a hang
                if blocking != (wdt.timeout_ms is None):
                    blocking = not blocking
                    conn.settimeout(None if blocking else 0.1)
                got = 0
                while got < P.REQ_SIZE:
                    try:
                        k = conn.recv_into(view[got:])
                    except socket.timeout:
                        if self._stop.is_set():
                            return None
                        if wdt.timeout_ms is not None and time.monotonic() - last > self.hang_s:
                            board.hang()
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
                    board.busy((time.monotonic() - last) * 1000.0)
                    if wdt.fired:
                        return ("wdt", "not fed")
                if (op == P.OP_IDLE or op == P.OP_SLEEP) and b & 1:
                    wdt.feed(board.world.now_ms)  # a feed carried by the idle or sleep
                if op == P.OP_IDLE:
                    board.idle(arg)
                elif op == P.OP_SLEEP:
                    byte2 = board.light_sleep(arg)
                else:
                    with self.lock:
                        status, out = self._request(op, a, b, n, arg, req)
                if wdt.fired:
                    # the watchdog reset the MCU in the middle of this request
                    return ("wdt", "not fed")
                with self.lock:
                    self.rs485.drain()
                    flags = (P.FLAG_ALERT if board.world.chip.alert else 0) | (P.FLAG_RX if self.rs485.rxq else 0)
                    resp[0] = status & 0xFF
                    resp[1] = flags
                    if op == P.OP_HELLO:
                        resp[2], resp[3] = self.process.boot_cause
                    else:
                        resp[2] = len(out) if byte2 is None else byte2
                        resp[3] = board.show_inputs()
                    board.forget_edges()
                    struct.pack_into("<I", resp, 4, board.ticks())
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

    def _request(self, op, a, b, n, arg, req):
        """(status, reply data) of a request that passes no time of its own
        (the lock held)."""
        board = self.board
        world = board.world
        status = 0
        out = b""
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
            rxq = self.rs485.rxq
            out = bytes(rxq[:n])
            del rxq[:n]
        elif op == P.OP_UART_WRITE:
            if self.serial_baud:
                board.busy(n * 11000.0 / self.serial_baud)  # the bytes leave, then the call returns
            self.rs485.transmit(bytes(req[P.HDR:P.HDR + n]))
        elif op == P.OP_WDT:
            if a == 0:
                board.watchdog.start(world.now_ms, arg)
            else:
                board.watchdog.feed(world.now_ms)
        elif op == P.OP_LEDS:
            board.set_leds(bytes(req[P.HDR:P.HDR + n]))
        elif op == P.OP_NET:
            board.set_network(bool(a))
        elif op == P.OP_AFE_BOOT:
            board.afe_boot()
        elif op == P.OP_CLOCK:
            out = struct.pack("<I", board.clock_s())
        elif op == P.OP_HELLO:
            out = bytes((board.inputs,))
        return status, out
