"""A stand-in for the ESP32 port's `esp32` module: the ext0/ext1 wake
sources, as the port implements them (modesp32.c), on the fake machine's
wake configuration. Calls are recorded in machine.EVENTS.

    wake_on_ext0(pin, level)   one RTC pin, one level; pin=None disarms
    wake_on_ext1(pins, level)  RTC pins, WAKEUP_ANY_HIGH or WAKEUP_ALL_LOW
                               (all of them low: not "any low");
                               pins=None keeps the pins set before, () clears
Both raise ValueError for a pin outside the RTC domain, as the port does.
"""
import machine

WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
HEAP_DATA = 4
HEAP_EXEC = 1

_KEEP = object()


def wake_on_ext0(pin=_KEEP, level=_KEEP):
    st = machine._STATE
    n = st["ext0_pin"]
    if pin is None:
        n = -1
    elif pin is not _KEEP:
        n = machine._pin_id(pin)  # one pin: a tuple is "invalid pin" too
        if n != st["ext0_pin"]:
            machine._check_rtc(n)
    if level is not _KEEP:
        machine._check_wake_level(level)
        st["ext0_level"] = 1 if level else 0
    st["ext0_pin"] = n
    st["ext0_types"] = machine.SLEEP | machine.DEEPSLEEP
    machine.EVENTS.append(("esp32.wake_on_ext0", None if n == -1 else n, st["ext0_level"]))


def wake_on_ext1(pins=None, level=_KEEP):
    st = machine._STATE
    ids = st["ext1_pins"]
    if pins is not None:
        ids = []
        for p in pins:
            n = machine._pin_id(p)
            machine._check_rtc(n)
            if n not in ids:
                ids.append(n)
        ids = tuple(sorted(ids))
    if level is not _KEEP:
        machine._check_wake_level(level)
        st["ext1_level"] = 1 if level else 0
    st["ext1_pins"] = ids
    machine.EVENTS.append(("esp32.wake_on_ext1", ids, st["ext1_level"]))


def wake_on_touch(wake):
    machine.EVENTS.append(("esp32.wake_on_touch", bool(wake)))


def gpio_deep_sleep_hold(enable):
    machine.EVENTS.append(("esp32.gpio_deep_sleep_hold", bool(enable)))
