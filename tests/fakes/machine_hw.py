"""The fake machine's peripherals: PWM, WDT, RTC, I2C, UART. Import
`machine`, which takes them from here (see machine.py)."""
import machine


class PWM:
    """machine.PWM on the ESP32's LEDC: 16 channels, 1 Hz to 40 MHz."""

    def __init__(self, dest, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        n = machine._pin_id(dest)
        if n in machine._INPUT_ONLY:
            raise ValueError("PWM not supported on pin %d" % n)
        if n not in machine._PWMS and len(machine._PWMS) >= 16:
            raise ValueError("out of PWM channels")
        self.pin = n
        self._freq = 5000
        self._duty = 32768
        self._active = True
        if freq is not None:
            self._check_freq(freq)
            self._freq = freq
        if duty_u16 is not None:
            self._check_duty(duty_u16)
            self._duty = duty_u16
        machine._PWMS[n] = self
        machine.EVENTS.append(("PWM", n, freq, duty_u16))

    def _check_freq(self, f):
        if not isinstance(f, int) or f < 1 or f > 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz, not %r" % (f,))

    def _check_duty(self, d):
        if not isinstance(d, int) or d < 0 or d > 65535:
            raise ValueError("duty_u16 must be from 0 to 65535, not %r" % (d,))

    def _check_active(self):
        if not self._active:
            raise ValueError("PWM on pin %d is deinitialised" % self.pin)

    def freq(self, f=None):
        self._check_active()
        if f is None:
            return self._freq
        self._check_freq(f)
        self._freq = f
        machine.EVENTS.append(("pwm.freq", self.pin, f))

    def duty_u16(self, d=None):
        self._check_active()
        if d is None:
            return self._duty
        self._check_duty(d)
        self._duty = d
        if not machine.QUIET:
            machine.EVENTS.append(("pwm.duty_u16", self.pin, d))

    def deinit(self):
        if self._active:
            self._active = False
            machine._PWMS.pop(self.pin, None)
        machine.EVENTS.append(("pwm.deinit", self.pin))


class WDT:
    """The task watchdog as MicroPython v1.28's esp32 port has it
    (ports/esp32/machine_wdt.c): id 0 only, a timeout in ms above 0;
    creating it again reconfigures the one watchdog (esp_task_wdt_reconfigure)
    and restarts its count; it can never be stopped."""

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%r) doesn't exist" % (id,))
        if not isinstance(timeout, int) or timeout <= 0:
            raise ValueError("WDT timeout too short: %r" % (timeout,))
        self.timeout = timeout
        del machine._WDT[:]
        machine._WDT.append(self)
        machine.EVENTS.append(("WDT", timeout))

    def feed(self):
        if not machine.QUIET:
            machine.EVENTS.append(("wdt.feed",))


class RTC:
    def memory(self, data=None):
        if data is None:
            return machine._RTC_MEM[0]
        data = bytes(data)
        if len(data) > machine._RTC_MEM_MAX:
            raise ValueError("buffer too long")
        machine._RTC_MEM[0] = data
        machine.EVENTS.append(("rtc.memory", data))


class I2C:
    def __init__(self, id, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%r) doesn't exist" % (id,))
        if not isinstance(scl, machine.Pin) or not isinstance(sda, machine.Pin):
            raise ValueError("scl and sda must be machine.Pin objects")
        if freq > 1000000:
            raise ValueError("freq too high")
        self.id = id
        self.freq = freq
        machine.EVENTS.append(("I2C", id, scl.id, sda.id, freq))

    def readfrom_mem_into(self, addr, memaddr, buf):
        machine.EVENTS.append(("i2c.read", addr, memaddr, len(buf)))
        raise OSError(19)  # nothing on this bus

    def writeto_mem(self, addr, memaddr, buf):
        machine.EVENTS.append(("i2c.write", addr, memaddr, bytes(buf)))
        raise OSError(19)


class UART:
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None,
                 rxbuf=256, timeout=0, timeout_char=0):
        if id not in (1, 2):
            raise ValueError("UART(%r) is the REPL's or does not exist" % (id,))
        self.id = id
        self.rx = bytearray()
        self._init(baudrate, bits, parity, stop, tx, rx)
        machine.EVENTS.append(("UART", id, baudrate, bits, parity, stop, tx, rx, rxbuf, timeout, timeout_char))

    def _init(self, baudrate, bits, parity, stop, tx=None, rx=None):
        if parity not in (None, 0, 1):
            raise ValueError("parity must be None, 0 (even) or 1 (odd)")
        if bits not in (5, 6, 7, 8) or stop not in (1, 2):
            raise ValueError("bad character format")
        if tx is not None:
            machine._check_gpio(tx)
            if tx in machine._INPUT_ONLY:
                raise ValueError("tx pin %d is input-only" % tx)
        if rx is not None:
            machine._check_gpio(rx)
        self.baudrate = baudrate

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self._init(baudrate, bits, parity, stop)
        machine.EVENTS.append(("uart.init", baudrate, bits, parity, stop))

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
        machine.EVENTS.append(("uart.write", bytes(buf[:n])))
        return n

    def flush(self):
        machine.EVENTS.append(("uart.flush",))
