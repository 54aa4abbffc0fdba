"""A stand-in for the ESP32's `machine` module that checks what it is asked.

Runs under CPython and MicroPython. Every call that reaches hardware is
appended to EVENTS; arguments a real ESP32 would reject (a pin that does not
exist, an input-only pin used as output, a bus id it lacks, a parity value
machine.UART does not know) raise ValueError, as the real port does.
"""
EVENTS = []

_NO_GPIO = (20, 24, 28, 29, 30, 31)
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)


def clear_events():
    del EVENTS[:]


class ResetCalled(SystemExit):
    """machine.reset() never returns on the device: here it ends the caller."""


def reset():
    EVENTS.append(("machine.reset",))
    raise ResetCalled()


def _check_gpio(n):
    if not isinstance(n, int) or n < 0 or n > 39 or n in _NO_GPIO:
        raise ValueError("invalid pin %r" % (n,))


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        _check_gpio(id)
        if mode == Pin.OUT and id in _INPUT_ONLY:
            raise ValueError("pin %d is input-only" % id)
        self.id = id
        self.mode = mode
        self._value = 0 if value is None else value
        EVENTS.append(("Pin", id, mode, value))

    def value(self, v=None):
        if v is None:
            return self._value
        if self.mode != Pin.OUT:
            raise ValueError("pin %d is not an output" % self.id)
        self._value = 1 if v else 0
        EVENTS.append(("pin", self.id, self._value))

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%r) doesn't exist" % (id,))
        if not isinstance(scl, Pin) or not isinstance(sda, Pin):
            raise ValueError("scl and sda must be Pin objects")
        if freq > 1000000:
            raise ValueError("freq too high")
        self.id = id
        self.freq = freq
        EVENTS.append(("I2C", id, scl.id, sda.id, freq))

    def readfrom_mem_into(self, addr, memaddr, buf):
        EVENTS.append(("i2c.read", addr, memaddr, len(buf)))
        raise OSError(19)  # nothing on this bus

    def writeto_mem(self, addr, memaddr, buf):
        EVENTS.append(("i2c.write", addr, memaddr, bytes(buf)))
        raise OSError(19)


class UART:
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None,
                 rxbuf=256, timeout=0, timeout_char=0):
        if id not in (1, 2):
            raise ValueError("UART(%r) is the REPL's or does not exist" % (id,))
        self.id = id
        self.rx = bytearray()
        self._init(baudrate, bits, parity, stop, tx, rx)
        EVENTS.append(("UART", id, baudrate, bits, parity, stop, tx, rx, rxbuf, timeout, timeout_char))

    def _init(self, baudrate, bits, parity, stop, tx=None, rx=None):
        if parity not in (None, 0, 1):
            raise ValueError("parity must be None, 0 (even) or 1 (odd)")
        if bits not in (5, 6, 7, 8) or stop not in (1, 2):
            raise ValueError("bad character format")
        if tx is not None:
            _check_gpio(tx)
            if tx in _INPUT_ONLY:
                raise ValueError("tx pin %d is input-only" % tx)
        if rx is not None:
            _check_gpio(rx)
        self.baudrate = baudrate

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self._init(baudrate, bits, parity, stop)
        EVENTS.append(("uart.init", baudrate, bits, parity, stop))

    def any(self):
        return len(self.rx)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        if not n:
            return None
        for i in range(n):
            buf[i] = self.rx[i]
        self.rx = self.rx[n:]
        return n

    def write(self, buf, n=None):
        if n is None:
            n = len(buf)
        EVENTS.append(("uart.write", bytes(buf[:n])))
        return n

    def flush(self):
        EVENTS.append(("uart.flush",))
