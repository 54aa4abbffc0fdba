"""A stand-in for the ESP32's `machine` module that checks what it is asked.

Runs under CPython and MicroPython (a `machine.py` on the path overrides the
unix port's built-in one). Every call that reaches hardware is appended to
EVENTS, with its arguments; the fake `esp32` and `network` modules record
theirs there too. Arguments a real ESP32 would reject (a pin that does not
exist, an input-only pin used as output, a bus id it lacks, a parity value
machine.UART does not know, a wake pin outside the RTC domain, a PWM duty
out of range, a second watchdog) raise ValueError, as the real port does.
A few things the real port silently ignores also raise here, because on the
device they are bugs that show up only as a board that never wakes or a pin
that floats: a pull or a hold on an input-only pin (34-39 have neither), a
wake level that is not 0/1 (Pin.WAKE_LOW is 4, which the port takes as high).

The pads are shared state, as on the chip: Pin(n) objects all read and write
LEVELS[n]. Tests set input levels with set_level(), what the next boot sees
with set_boot() (reset cause, wake reason), and what each lightsleep() wakes
on with queue_wake(). Pad holds (HELD), RTC memory and input levels survive a
set_boot(); the watchdog, the PWM channels and the wake configuration do not.

QUIET = True records nothing: recording allocates, and a heap-locked run
checks that the board's per-cycle calls do not.

The peripherals (PWM, WDT, RTC, I2C, UART) are in machine_hw.py and appear
here: MicroPython compiles two halves in less heap than one big source, and
tests/mpy/mpy_imports.py compiles this next to every firmware module.
"""
EVENTS = []
QUIET = False

_NO_GPIO = (20, 24, 28, 29, 30, 31)
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
# the pads the RTC domain watches: the only ext0/ext1 (deep-sleep) wake pins
RTC_PINS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)

# machine.reset_cause() values, as the ESP32 port numbers them
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# machine.wake_reason() values: ESP-IDF's esp_sleep_wakeup_cause_t
# (0: not woken from sleep)
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6

# wake abilities (Pin.irq(wake=...), and which sleep an ext0 source serves)
SLEEP = 2
DEEPSLEEP = 4

_RTC_MEM_MAX = 2048

LEVELS = {}  # GPIO -> the level its pad reads (or drives)
HELD = {}  # GPIO -> True while a pad hold latches it
_REG = {}  # GPIO -> the output register (what a held pad takes when released)
_MODES = {}  # GPIO -> the mode it was last configured with
_STATE = {}
_WAKE_QUEUE = []
_PWMS = {}  # GPIO -> the PWM driving it
_WDT = []
_RTC_MEM = [b""]


def _reset_wake_config():
    # the port's machine_rtc_config
    _STATE["ext0_pin"] = -1
    _STATE["ext0_level"] = 0
    _STATE["ext0_types"] = 0
    _STATE["ext1_pins"] = ()
    _STATE["ext1_level"] = 0


def reset_fake():
    """A fresh chip: no events, no levels, no holds, power-on boot."""
    del EVENTS[:]
    LEVELS.clear()
    HELD.clear()
    _REG.clear()
    _MODES.clear()
    _RTC_MEM[0] = b""
    set_boot(PWRON_RESET, 0)


def set_boot(cause, wake=0):
    """What the next boot (Board()) sees: machine.reset_cause() and
    machine.wake_reason(). A restart stops the watchdog and the PWM
    channels and forgets the wake configuration; pad holds, RTC memory and
    the input levels stay."""
    _STATE["reset_cause"] = cause
    _STATE["wake_reason"] = wake
    del _WAKE_QUEUE[:]
    _PWMS.clear()
    del _WDT[:]
    _reset_wake_config()


def clear_events():
    del EVENTS[:]


def set_level(pin, level):
    """Drive an input pad from outside (not recorded)."""
    LEVELS[pin] = 1 if level else 0


def level(pin):
    return LEVELS.get(pin, 0)


def queue_wake(reason, levels=None):
    """The next lightsleep() returns with this wake reason, after setting
    these pad levels ({pin: level}). With nothing queued a timed sleep ends
    on the timer."""
    _WAKE_QUEUE.append((reason, levels))


def wake_config(kind=SLEEP):
    """The armed wake sources for a sleep of this kind, as
    (ext0 pin or None, ext0 level, ext1 pins, ext1 level)."""
    ext0 = _STATE["ext0_pin"]
    if ext0 == -1 or not _STATE["ext0_types"] & kind:
        ext0 = None
    return (ext0, _STATE["ext0_level"], _STATE["ext1_pins"], _STATE["ext1_level"])


class ResetCalled(SystemExit):
    """machine.reset() never returns on the device: here it ends the caller."""


class DeepSleepCalled(SystemExit):
    """machine.deepsleep() never returns on the device (the next thing that
    runs is a boot): here it ends the caller."""


def unique_id():
    return b"\x24\x0a\xc4\x12\x34\x56"  # the ESP32's base MAC


def reset():
    EVENTS.append(("machine.reset",))
    raise ResetCalled()


def reset_cause():
    return _STATE["reset_cause"]


def wake_reason():
    return _STATE["wake_reason"]


def _check_sleep_ms(ms):
    if ms is not None and (not isinstance(ms, int) or ms < 0):
        raise ValueError("sleep time must be a non-negative int of ms, not %r" % (ms,))


def lightsleep(ms=None):
    _check_sleep_ms(ms)
    cfg = wake_config(SLEEP)
    EVENTS.append(("machine.lightsleep", ms, cfg))
    if _WAKE_QUEUE:
        reason, levels = _WAKE_QUEUE.pop(0)
        if levels:
            for pin in levels:
                set_level(pin, levels[pin])
    elif ms:
        reason = TIMER_WAKE
    else:
        raise RuntimeError("an untimed lightsleep with no wake queued would never return")
    _STATE["wake_reason"] = reason


def deepsleep(ms=None):
    _check_sleep_ms(ms)
    EVENTS.append(("machine.deepsleep", ms, wake_config(DEEPSLEEP)))
    raise DeepSleepCalled()


def _check_gpio(n):
    if not isinstance(n, int) or n < 0 or n > 39 or n in _NO_GPIO:
        raise ValueError("invalid pin %r" % (n,))


def _pin_id(p):
    """A pin argument as the port takes it: a Pin or a GPIO number."""
    if isinstance(p, Pin):
        return p.id
    _check_gpio(p)
    return p


def _check_rtc(n):
    if n not in RTC_PINS:
        raise ValueError("invalid pin: GPIO%d is not an RTC pin, it cannot wake the chip" % n)


def _check_wake_level(level):
    if level not in (0, 1):  # True and False included
        raise ValueError("wake level must be 0/1 (esp32.WAKEUP_ALL_LOW/ANY_HIGH), not %r" % (level,))


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, value=None, drive=None, hold=None):
        _check_gpio(id)
        self.id = id
        self._config(mode, pull, value, hold)
        EVENTS.append(("Pin", id, mode, value))
        if hold is not None:
            EVENTS.append(("pin.hold", id, bool(hold)))

    def init(self, mode=-1, pull=-1, value=None, drive=None, hold=None):
        self._config(mode, pull, value, hold)
        EVENTS.append(("pin.init", self.id, mode, value))
        if hold is not None:
            EVENTS.append(("pin.hold", self.id, bool(hold)))

    def _config(self, mode, pull, value, hold):
        n = self.id
        if mode not in (-1, None, Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
            raise ValueError("invalid pin mode %r" % (mode,))
        if pull not in (-1, None, Pin.PULL_UP, Pin.PULL_DOWN):
            raise ValueError("invalid pull %r" % (pull,))
        if n in _INPUT_ONLY:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("pin %d is input-only" % n)
            if pull in (Pin.PULL_UP, Pin.PULL_DOWN):
                # the port ignores it: the pad has no pull, the input floats
                raise ValueError("pin %d has no internal pull resistor" % n)
            if hold is not None:
                raise ValueError("pin %d is input-only: there is no output to hold" % n)
        if mode not in (-1, None):
            _MODES[n] = mode
        if value is not None:
            self._write(1 if value else 0)
        if hold is not None:
            if hold:
                HELD[n] = True
            elif HELD.pop(n, False) and n in _REG:
                LEVELS[n] = _REG[n]  # released: the pad takes the register's level

    def _write(self, v):
        n = self.id
        _REG[n] = v
        if not HELD.get(n, False):
            LEVELS[n] = v

    def value(self, v=None):
        if v is None:
            return LEVELS.get(self.id, 0)
        if _MODES.get(self.id, -1) not in (Pin.OUT, Pin.OPEN_DRAIN):
            raise ValueError("pin %d is not an output" % self.id)
        v = 1 if v else 0
        self._write(v)
        if not QUIET:
            EVENTS.append(("pin", self.id, v))

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, wake=None):
        n = self.id
        if trigger in (Pin.WAKE_LOW, Pin.WAKE_HIGH) and wake is not None:
            # the ESP32 port's only level wake is ext0: one RTC pin
            if not isinstance(wake, int) or wake < 2 or wake > 7:
                raise ValueError("bad wake value")
            if n not in RTC_PINS:
                raise ValueError("invalid pin for wake")
            if _STATE["ext0_pin"] not in (-1, n):
                raise ValueError("no resources: ext0 already wakes on GPIO%d" % _STATE["ext0_pin"])
            _STATE["ext0_pin"] = n
            _STATE["ext0_level"] = 1 if trigger == Pin.WAKE_HIGH else 0
            _STATE["ext0_types"] = wake
        elif _STATE["ext0_pin"] == n:
            _STATE["ext0_pin"] = -1
        EVENTS.append(("pin.irq", n, trigger, wake))


from machine_hw import I2C, PWM, RTC, UART, WDT  # noqa: F401 (machine's API)

reset_fake()
