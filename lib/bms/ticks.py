"""Wrap-safe millisecond tick arithmetic.

Every board's `ticks_ms()` returns a value in [0, TICKS_PERIOD), the same
period MicroPython uses on the ESP32 (2**30). The core does its own
arithmetic here, so the simulator can start its clock just before the wrap
and every test exercises it, and CPython runs the same code.
"""
from micropython import const

TICKS_PERIOD = const(0x40000000)
_TICKS_MAX = const(0x3FFFFFFF)
_TICKS_HALF = const(0x20000000)


def ticks_diff(end, start):
    """Signed difference end - start, correct across one wrap."""
    return ((end - start + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF


def ticks_add(ticks, delta):
    return (ticks + delta) & _TICKS_MAX
