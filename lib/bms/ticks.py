"""Wrap-safe millisecond tick arithmetic.

Every board's `ticks_ms()` returns a value in [0, TICKS_PERIOD), the same
period MicroPython uses on the ESP32 (2**30). The core does its own
arithmetic here, so the simulator can start its clock just before the wrap
and every test exercises it, and CPython runs the same code.

Every intermediate value stays inside the ESP32's 31-bit small ints
(-2**30 .. 2**30-1): a sum such as `ticks + delta` near the wrap would
reach 2**30 and allocate a long int. TICKS_PERIOD itself is such a value,
so the code below never computes with it.
"""
from micropython import const

TICKS_PERIOD = const(0x40000000)
_TICKS_MAX = const(0x3FFFFFFF)
_TICKS_HALF = const(0x20000000)


def ticks_diff(end, start):
    """Signed difference end - start, correct across one wrap, in
    [-2**29, 2**29)."""
    d = (end - start) & _TICKS_MAX
    if d >= _TICKS_HALF:
        return d - _TICKS_MAX - 1
    return d


def ticks_add(ticks, delta):
    """ticks + delta on the clock; delta within +-2**29."""
    if delta < 0:
        return (ticks + delta) & _TICKS_MAX
    return (ticks - _TICKS_MAX - 1 + delta) & _TICKS_MAX


def held_since(now, since, limit):
    """since, or the tick limit ms before now if since is older: a
    "since" kept this way never ages past ticks_diff's range (2**29 ms, about
    6 days), so `ticks_diff(now, since) >= limit` holds however long ago it
    was. limit: at most TICKS_LIMIT."""
    if ticks_diff(now, since) > limit:
        return ticks_add(now, -limit)
    return since


TICKS_LIMIT = const(0x10000000)  # the longest span a timer here measures: 2**28 ms, 3.1 days
