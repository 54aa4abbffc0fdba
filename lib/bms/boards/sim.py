"""The simulated board: the firmware's hardware, provided by the host
simulator (tools/bms_sim) over a local socket.

Runs under the MicroPython unix port. Every request and reply is one fixed
size frame, so each transfer is one `write` and one `readinto` of
preallocated buffers: the board allocates nothing per call, like the real
I2C and UART drivers. The simulator owns the clock: time advances only
while the firmware idles or sleeps, so a simulated hour can pass in seconds
and every run is repeatable. It also models the ESP32's power side: the
inputs, the LED bar, the network switch, the watchdog, light and deep sleep
and their wake sources, and the reset cause each boot reports.

Frame, firmware -> simulator (REQ_SIZE bytes):
    op, a, b, n, arg (uint32 little-endian), payload[PAYLOAD]
Frame, simulator -> firmware (RESP_SIZE bytes):
    status (0 or an errno), flags, n, inputs, ticks_ms (uint32 LE), payload[PAYLOAD]
flags: FLAG_ALERT (the AFE's ALERT pin is high), FLAG_RX (RS485 bytes wait).
inputs: the IN_ bits (bms.boards) as they are now, in every reply but
HELLO's; the board keeps the latest, so inputs() costs no request.

Ops (a, b, n, arg as each uses them; the rest are 0):
    OP_HELLO      'H'  first frame after connecting; the reply's byte 2 is
                       the reset cause (RESET_), byte 3 the wake reason
                       (WAKE_) and payload[0] the inputs
    OP_I2C_READ   'R'  a = device address, b = register, n = length;
                       the reply's payload holds the n bytes read
    OP_I2C_WRITE  'W'  a, b, n; payload = the bytes on the wire
    OP_IDLE       'I'  arg = ms of simulated time to let pass; the reply
                       comes early when RS485 bytes arrive or ALERT rises;
                       b = 1: the watchdog was fed (wdt_feed defers to here)
    OP_UART_READ  'U'  n = room; the reply's payload holds the received bytes
    OP_UART_WRITE 'T'  n bytes of payload to send on RS485
    OP_RESET      'X'  arg = reset reason (0: software reset); the simulator
                       acks, the firmware exits, and the simulator boots a
                       fresh firmware process on the same pack, chip, clock,
                       RS485 link and flash (machine.reset() on the ESP32);
                       it reports RESET_SOFT
    OP_LEDS       'L'  n = LED count, payload = one 0..255 duty per LED
    OP_NET        'E'  a = 1: the network module on, 0: off
    OP_WDT        'D'  a = 0: start the watchdog, arg = timeout ms (it
                       cannot be stopped, only restarted by the MCU's reset);
                       a = 1: feed it. Starved, it resets the MCU (RESET_WDT)
    OP_SLEEP      'S'  light sleep for up to arg ms; the reply's byte 2 is
                       the WAKE_ reason (RS485 bytes that wake it are lost)
    OP_DEEPSLEEP  'Z'  deep sleep: the simulator acks, the firmware exits;
                       a new one boots on ACC, the charger or the button
                       with RESET_DEEPSLEEP and that wake reason
    OP_AFE_BOOT   'B'  the TS1 boot pulse: a shipped AFE wakes at its
                       power-up defaults
    OP_CLOCK      'C'  the RTC: the reply's payload holds its seconds
                       (uint32 LE, under 2**30), a clock that runs on
                       through resets and deep sleep (the ESP32's RTC time)
"""
from micropython import const

PAYLOAD = const(128)
REQ_SIZE = const(136)
RESP_SIZE = const(136)
HDR = const(8)

OP_HELLO = const(0x48)  # 'H'
OP_I2C_READ = const(0x52)  # 'R': a = device address, b = register, n = length
OP_I2C_WRITE = const(0x57)  # 'W': a, b, n, payload = bytes on the wire
OP_IDLE = const(0x49)  # 'I': arg = ms; returns early on RS485 data or ALERT
OP_UART_READ = const(0x55)  # 'U': n = room; payload = received bytes
OP_UART_WRITE = const(0x54)  # 'T': n bytes of payload to send
OP_RESET = const(0x58)  # 'X': arg = reset reason code (0 = software reset)
OP_LEDS = const(0x4C)  # 'L': n = LED count, payload = duties
OP_NET = const(0x45)  # 'E': a = 1 on, 0 off
OP_WDT = const(0x44)  # 'D': a = 0 start (arg = timeout ms), a = 1 feed
OP_SLEEP = const(0x53)  # 'S': light sleep, arg = ms; reply byte 2 = WAKE_ reason
OP_DEEPSLEEP = const(0x5A)  # 'Z': deep sleep; the firmware exits
OP_AFE_BOOT = const(0x42)  # 'B': the TS1 boot pulse
OP_CLOCK = const(0x43)  # 'C': payload = RTC seconds (uint32 LE)

FLAG_ALERT = const(0x01)
FLAG_RX = const(0x02)

ENV_SOCKET = "BMS_SIM_SOCKET"
ENV_STATE = "BMS_SIM_STATE"
ENV_DNS = "BMS_SIM_DNS"  # "ip:port" of the DNS server the firmware asks (SimServer.dns_server)
KEPT_FILE = "rtc.bin"  # the ESP32's RTC memory (keep()): SimServer deletes it at power-on


class _Link:
    def __init__(self, path):
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # the unix port takes a raw sockaddr_un: family (host order), path, NUL
        fam = socket.AF_UNIX
        s.connect(bytes((fam & 0xFF, fam >> 8)) + path.encode() + b"\0")
        self.sock = s
        self.req = bytearray(REQ_SIZE)
        self.resp = bytearray(RESP_SIZE)
        self.flags = 0
        self.ticks = 0
        self.inputs = 0

    def call(self, op, a, b, n, arg):
        q = self.req
        q[0] = op
        q[1] = a
        q[2] = b
        q[3] = n
        q[4] = arg & 0xFF
        q[5] = (arg >> 8) & 0xFF
        q[6] = (arg >> 16) & 0xFF
        q[7] = (arg >> 24) & 0xFF
        r = self.resp
        try:
            self.sock.write(q)
            got = self.sock.readinto(r)
        except OSError:
            got = 0
        if got != RESP_SIZE:
            # the simulator went away (it stopped the run): power is gone
            raise SystemExit(0)
        self.flags = r[1]
        self.inputs = r[3]
        self.ticks = r[4] | (r[5] << 8) | (r[6] << 16) | (r[7] << 24)
        return r[0]


class SimI2C:
    """machine.I2C's memory API, carried to the simulated AFE."""

    def __init__(self, link):
        self._link = link

    def readfrom_mem_into(self, addr, memaddr, buf):
        link = self._link
        n = len(buf)
        status = link.call(OP_I2C_READ, addr, memaddr, n, 0)
        if status:
            raise OSError(status)
        r = link.resp
        i = 0
        while i < n:
            buf[i] = r[HDR + i]
            i += 1

    def writeto_mem(self, addr, memaddr, buf):
        link = self._link
        n = len(buf)
        q = link.req
        i = 0
        while i < n:
            q[HDR + i] = buf[i]
            i += 1
        status = link.call(OP_I2C_WRITE, addr, memaddr, n, 0)
        if status:
            raise OSError(status)


class SimSerial:
    """The RS485 port: non-blocking readinto, write(buf, n)."""

    def __init__(self, link):
        self._link = link

    def readinto(self, buf):
        link = self._link
        if not link.flags & FLAG_RX:
            return 0
        room = len(buf)
        if room > PAYLOAD:
            room = PAYLOAD
        link.call(OP_UART_READ, 0, 0, room, 0)
        r = link.resp
        n = r[2]
        i = 0
        while i < n:
            buf[i] = r[HDR + i]
            i += 1
        return n

    def write(self, buf, n):
        link = self._link
        q = link.req
        done = 0
        while done < n:
            k = n - done
            if k > PAYLOAD:
                k = PAYLOAD
            i = 0
            while i < k:
                q[HDR + i] = buf[done + i]
                i += 1
            link.call(OP_UART_WRITE, 0, 0, k, 0)
            done += k
        return n


class Board:
    def __init__(self, socket_path=None, storage_dir=None):
        import os

        if socket_path is None:
            socket_path = os.getenv(ENV_SOCKET)
        if not socket_path:
            raise OSError("no simulator: set " + ENV_SOCKET + " (bms-sim run starts the firmware with it)")
        if storage_dir is None:
            storage_dir = os.getenv(ENV_STATE) or "."
        self.storage_dir = storage_dir.rstrip("/") + "/"
        link = self._link = _Link(socket_path)
        link.call(OP_HELLO, 0, 0, 0, 0)
        r = link.resp
        self._cause = (r[2], r[3])  # (RESET_, WAKE_), made once
        link.inputs = r[HDR]
        self.i2c = SimI2C(link)
        self.serial = SimSerial(link)
        # the duties last sent (_led_n of them; -1: none sent yet) and the
        # network state the simulator knows (off at every boot)
        self._led = bytearray(PAYLOAD)
        self._led_n = -1
        self._net = 0
        self._fed = 0  # a watchdog feed waiting for the next idle or sleep

    def set_baud(self, baud):
        pass  # a pseudo-terminal has no baud rate

    def set_serial(self, baud, parity):
        pass  # a pseudo-terminal has no baud rate or parity

    def reset(self, reason=0):
        """Restart the firmware, as machine.reset() does: the simulator boots
        a new firmware process; the pack, the AFE, the clock and the flash
        (storage_dir) carry on. Does not return."""
        self._link.call(OP_RESET, 0, 0, 0, reason)
        raise SystemExit(0)

    def keep(self, data):
        """The ESP32's RTC memory: a file the simulator deletes at power-on
        (SimServer.start) and keeps through resets and deep sleep."""
        with open(self.storage_dir + KEPT_FILE, "wb") as f:
            f.write(data)

    def kept(self):
        try:
            with open(self.storage_dir + KEPT_FILE, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def ticks_ms(self):
        return self._link.ticks

    def clock_s(self):
        """Seconds on the simulator's RTC: it runs through resets and deep
        sleep (ticks_ms restarts at every boot). Under 2**30: a small int."""
        link = self._link
        link.call(OP_CLOCK, 0, 0, 0, 0)
        r = link.resp
        return r[HDR] | (r[HDR + 1] << 8) | (r[HDR + 2] << 16) | (r[HDR + 3] << 24)

    def alert(self):
        return self._link.flags & FLAG_ALERT

    def idle(self, ms):
        """Let simulated time pass; back early on RS485 bytes or ALERT."""
        self._link.call(OP_IDLE, 0, self._fed, 0, ms)
        self._fed = 0

    def inputs(self):
        """The IN_ bits (button, ACC, charger) as of the last reply."""
        return self._link.inputs

    def leds(self, duties):
        """Set the LED bar: duties holds one 0..255 PWM duty per LED. Only a
        change goes to the simulator."""
        n = len(duties)
        if n > PAYLOAD:
            n = PAYLOAD
        last = self._led
        q = self._link.req
        changed = n != self._led_n
        i = 0
        while i < n:
            d = duties[i]
            if d != last[i]:
                last[i] = d
                changed = True
            q[HDR + i] = d
            i += 1
        if changed:
            self._led_n = n
            self._link.call(OP_LEDS, 0, 0, n, 0)

    def network(self, on):
        """The network module's power (only a change goes to the simulator)."""
        v = 1 if on else 0
        if v != self._net:
            self._net = v
            self._link.call(OP_NET, v, 0, 0, 0)

    def net_join(self, ssid, password):
        pass  # the unix port's own network stack: always joined

    def net_ready(self):
        """The network module is on: the host's loopback is the Wi-Fi."""
        return self._net == 1

    def dns_server(self):
        """(IPv4 address, port) of the DNS server, as DHCP gives the ESP32
        one: the simulator's (BMS_SIM_DNS), else the host's first
        nameserver; None: no DNS."""
        import os

        v = os.getenv(ENV_DNS)
        if v:
            i = v.rfind(":")
            return v[:i], int(v[i + 1:])
        try:
            with open("/etc/resolv.conf") as f:
                for line in f.read().split("\n"):
                    w = line.split()
                    if len(w) > 1 and w[0] == "nameserver" and "." in w[1]:
                        return w[1], 53
        except OSError:
            pass
        return None

    def device_id(self):
        return "sim-" + self.storage_dir.rstrip("/").split("/")[-1][-8:].replace(".", "")

    def wall_us(self):
        """Real time, not the simulator's: a blocking network call takes
        real time on the ESP32 too."""
        import time

        return time.ticks_us() & 0x3FFFFFFF

    def wdt_start(self, timeout_ms):
        """Start the watchdog: the MCU resets when it is not fed for timeout_ms."""
        self._link.call(OP_WDT, 0, 0, 0, timeout_ms)

    def wdt_feed(self):
        # Simulated time passes only in idle and sleep, so the feed rides on
        # the next of those (b = 1): the same instant, one round trip fewer.
        self._fed = 1

    def light_sleep(self, ms):
        """Sleep up to ms (RAM kept); returns the WAKE_ reason. RS485 bytes
        that wake the MCU are lost (the host retries)."""
        link = self._link
        link.call(OP_SLEEP, 0, self._fed, 0, ms)
        self._fed = 0
        return link.resp[2]

    def deep_sleep(self):
        """Deep sleep: the firmware ends; the simulator boots a new one on
        ACC, the charger or the button (reset_cause() says which). Does not
        return."""
        self._link.call(OP_DEEPSLEEP, 0, 0, 0, 0)
        raise SystemExit(0)

    def reset_cause(self):
        """(RESET_ cause, WAKE_ reason) of this boot."""
        return self._cause

    def afe_boot(self):
        """The TS1 boot pulse: wakes a shipped AFE (at its power-up defaults)."""
        status = self._link.call(OP_AFE_BOOT, 0, 0, 0, 0)
        if status:
            raise OSError(status)
