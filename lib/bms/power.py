"""The power modes and the rules that move between them: pure, so every
transition is tested without a board (bms.modes carries them out).

    WORKING     measurement, protection, balancing, Modbus, the network
    LOW_POWER   the pack idle and trouble-free for `lp_idle_ms`: FETs off,
                network off, the MCU in light sleep between checks every
                `lp_check_ms`; back to WORKING on RS485 activity, a charger,
                ACC, the button, or a check that finds something to do
    SLEEP       a cell under-voltage held `sleep_uv_ms` with no charger, a
                long press, or storage mode in low power with no charger, ACC
                or load (nothing can move the SOC): the AFE shipped, the MCU
                in deep sleep; a restart on ACC, a charger or the button

The SOC window's and storage's rows are limits of use, not trouble: they
never keep the pack awake (bms.modes).

Every transition is logged with its cause (EV_MODE: new mode << 8 | cause).
"""
from micropython import const

from bms.boards import IN_ACC, IN_CHARGER
from bms.ticks import ticks_diff

WORKING = const(0)
LOW_POWER = const(1)
SLEEP = const(2)

# causes: 1..5 are the boards' WAKE_ codes (timer, RS485, charger, ACC, button)
CAUSE_IDLE = const(6)  # no current, no traffic, no trouble for lp_idle_ms
CAUSE_UNDER_VOLTAGE = const(7)
CAUSE_LONG_PRESS = const(8)
CAUSE_ATTENTION = const(9)  # a low-power check found a protection, warning, load or bleeding to do
CAUSE_BOOT = const(10)
CAUSE_SLEEP_REFUSED = const(11)  # the AFE did not confirm the FETs off (no deep sleep unwatched), or sleep failed
CAUSE_STORAGE = const(12)  # storage mode with nothing to move the SOC: nothing to do until a wake source



class Power:
    def __init__(self, now):
        self.mode = WORKING
        self.cause = CAUSE_BOOT
        self.since = now
        self.quiet_since = now  # idle and trouble-free since
        self.uv_since = now
        self.uv = False
        self.wake_reason = 0

    def enter(self, mode, cause, now):
        self.mode = mode
        self.cause = cause
        self.since = now
        self.quiet_since = now

    def working(self, now, current_ma, trouble, uv, inputs, comm_at, long_press, v_idle_ma,
                v_idle_ms, v_sleep_uv_ms):
        """The mode WORKING should move to now, and why: (mode, cause), or
        (WORKING, 0) to stay. trouble: any protection or warning active;
        uv: an under-voltage protection holds discharge off."""
        if long_press:
            return SLEEP, CAUSE_LONG_PRESS
        charger = inputs & IN_CHARGER
        if uv and not charger and current_ma <= v_idle_ma:
            if not self.uv:
                self.uv = True
                self.uv_since = now
            elif v_sleep_uv_ms and ticks_diff(now, self.uv_since) >= v_sleep_uv_ms:
                return SLEEP, CAUSE_UNDER_VOLTAGE
        else:
            self.uv = False
        busy = (trouble or charger or inputs & IN_ACC or current_ma > v_idle_ma
                or current_ma < -v_idle_ma or ticks_diff(now, comm_at) < v_idle_ms)
        if busy:
            self.quiet_since = now
        elif v_idle_ms and ticks_diff(now, self.quiet_since) >= v_idle_ms:
            return LOW_POWER, CAUSE_IDLE
        return WORKING, 0

    def check(self, current_ma, attention, inputs, v_idle_ma):
        """A timer wake in LOW_POWER: True when the pack needs WORKING."""
        return bool(attention or inputs & (IN_CHARGER | IN_ACC) or current_ma > v_idle_ma
                    or current_ma < -v_idle_ma)
