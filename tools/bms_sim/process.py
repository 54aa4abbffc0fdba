"""The simulated board's MCU as a process: the firmware under the
MicroPython unix port (bms_sim.target), started at power-on and again
after every reset or wake from deep sleep, its output in a log file.

Every firmware boot connects to one Unix socket, listening for the
simulator's lifetime; the link (bms_sim.link) serves the connection.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from bms.boards import RESET_POWER_ON, WAKE_NONE
from bms.boards import sim as P
from bms_build.build import compile_lib
from bms_sim.target import TargetError, find_target

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# MicroPython heap for the firmware: None is the target's default
# (bms_sim.target): 56K on the ESP32 twin, the ESP32's initial heap in its
# own object sizes, frozen bytecode in flash as on a board.
DEFAULT_HEAP = None
# how long the firmware may take to exit after its reset was acked
RESET_EXIT_S = 5.0


class SimError(RuntimeError):
    pass


def find_micropython(explicit=None):
    """Path of the MicroPython binary the firmware runs on (bms_sim.target),
    or a SimError naming the fix."""
    try:
        return find_target(explicit).exe
    except TargetError as e:
        raise SimError(str(e)) from None


class FirmwareProcess:
    """The firmware's processes, one at a time, and their socket. `stop`
    (the simulator's) ends a wait for a connection."""

    def __init__(self, state_dir, stop, heap=DEFAULT_HEAP, micropython=None, lib_dir=None, main_py=None,
                 log_path=None, mpy=None, target=None, main_args=()):
        self.state_dir = state_dir
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
        self.dns_server = None  # (ip, port): the DNS server the firmware's board reports
        self.proc = None
        self.boots = 0  # firmware processes that came up, the first included
        self.reset_causes = []  # the RESET_ code each of them was told
        self.boot_cause = (RESET_POWER_ON, WAKE_NONE)  # what the next HELLO reports
        self._stop = stop
        self._proc_lock = threading.Lock()
        self._listener = None
        self._env = None
        self._cmd = None
        self._timeout = 10.0
        self._tmp = None
        self._log = None

    def power_on(self):
        """The state directory, less the MCU's RTC memory (the board's
        keep()): a power-on loses it, resets keep it."""
        os.makedirs(self.state_dir, exist_ok=True)
        try:
            os.remove(os.path.join(self.state_dir, P.KEPT_FILE))
        except FileNotFoundError:
            pass

    def prepare(self, timeout):
        """The socket every boot connects to, the firmware's environment
        and command line, its log; boots wait timeout s for a connection."""
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
        self.boot_cause = (RESET_POWER_ON, WAKE_NONE)

    def boot(self):
        """Start a firmware process and accept its connection (a SimError if
        it exits first, does not connect in time, or the server stops)."""
        timeout = self._timeout
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
        self.reset_causes.append(self.boot_cause[0])
        return conn

    def end(self, kill=False):
        """The firmware's process ends: given RESET_EXIT_S to exit by
        itself, or killed at once (a watchdog reset)."""
        proc = self.proc
        if not kill:
            deadline = time.monotonic() + RESET_EXIT_S
            while proc.poll() is None and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def log_line(self, text):
        """A line of the simulator's own in the firmware's log."""
        try:
            self._log.write(b"--- bms-sim: " + text.encode() + b" ---\n")
            self._log.flush()
        except (AttributeError, OSError, ValueError):
            pass

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no firmware log)"
        return "\n".join(lines[-n:])

    # -- stopping, in the simulator's order ----------------------------------

    def terminate(self):
        """Ask the running firmware to exit (killed after 3 s)."""
        with self._proc_lock:
            proc = self.proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def shutdown(self):
        """No more boots: the socket closed, a firmware a reset in flight
        started after terminate() killed."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._proc_lock:
            proc = self.proc
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self):
        """The log closed, the socket's directory removed."""
        if self._log:
            self._log.close()
            self._log = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
