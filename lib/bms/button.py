"""The button: debounced, a short press and a long press told apart.

`update()` is called every pass of the main loop with the raw input; a
level must hold `debounce_ms` before it counts. A short press is reported
when the button is released before `long_ms`; a long press once, as soon
as it has been held that long (the user sees the reaction while holding).
"""
from micropython import const

from bms.ticks import ticks_diff

NO_PRESS = const(0)
SHORT = const(1)
LONG = const(2)

_DEBOUNCE_MS = const(30)


class Button:
    def __init__(self, long_ms=3000, debounce_ms=_DEBOUNCE_MS):
        self.long_ms = long_ms
        self.debounce_ms = debounce_ms
        self.raw = False
        self.raw_since = 0
        self.pressed = False  # the debounced level
        self.pressed_at = 0
        self.long_sent = False

    def busy(self):
        """True while a press is being judged: the caller polls again soon."""
        return self.raw or self.pressed

    def update(self, raw, now):
        """raw: the input reads pressed. Returns NO_PRESS, SHORT or LONG."""
        raw = bool(raw)
        if raw != self.raw:
            self.raw = raw
            self.raw_since = now
            return NO_PRESS
        if raw != self.pressed and ticks_diff(now, self.raw_since) >= self.debounce_ms:
            self.pressed = raw
            if raw:
                self.pressed_at = self.raw_since
                self.long_sent = False
            elif not self.long_sent:
                return SHORT
            return NO_PRESS
        if self.pressed and not self.long_sent and ticks_diff(now, self.pressed_at) >= self.long_ms:
            self.long_sent = True
            return LONG
        return NO_PRESS
