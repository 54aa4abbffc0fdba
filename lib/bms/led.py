"""The LED bar: what it shows is a pure function of the BMS's state and the
time, so every pattern is tested without hardware; the board only sets PWM
duties (board.leds).

Priority, first match wins (docs/LED.md has the table a user reads):

    sleep mode                 all off
    low-power mode             all off (unless SOC requested)
    unconfigured               the end LEDs alternate, 1 Hz (factory state)
    a protection holds a FET   LED 1 flashes the fault's blink code, then a
    (and no SOC requested)     pause (the code is the protection row's
                               `blink` column, bms.protection B_*)
    storage mode               SOC bar, its top LED dark 0.2 s every 2 s: the
                               pack is going to (or resting at) storage_soc
    charging                   SOC bar; above it a light runs to the top
    discharging, or SOC shown  SOC bar, steady; LED 1 blinks below 10 %
    (button press)
    otherwise                  all off (saves power at rest)

The SOC bar lights LED k (1-based) when SOC > (k - 1) / n of full, so one
LED means some charge is left and all of them a full pack.
"""
from micropython import const

MODE_WORKING = const(0)
MODE_LOW_POWER = const(1)
MODE_SLEEP = const(2)

ON = const(255)
_WIGWAG_MS = const(500)
_FLASH_ON_MS = const(200)
_FLASH_MS = const(500)  # one flash: 200 ms on, 300 ms off
_CODE_PAUSE_MS = const(1500)
_RUN_STEP_MS = const(300)
_LOW_SOC_DPCT = const(100)
_LOW_BLINK_MS = const(250)
_STORE_MS = const(2000)
_STORE_DARK_MS = const(200)

def soc_level(soc_dpct, n):
    """LEDs lit for this SOC (0.1 %) on a bar of n."""
    if soc_dpct <= 0:
        return 0
    k = (soc_dpct * n + 999) // 1000
    return k if k < n else n


def render(out, n, t_ms, mode, configured, blink, soc_dpct, charging, discharging, show_soc, storage=False):
    """Fill out[0:n] with duties (0 or ON). blink: the fault's blink code,
    0 for none. t_ms: any free-running millisecond clock. storage: storage
    mode is on."""
    k = 0
    while k < n:
        out[k] = 0
        k += 1
    if mode == MODE_SLEEP or n == 0 or (mode == MODE_LOW_POWER and not show_soc):
        return  # low power is trouble-free idle: dark, whatever trickles
    if not configured:
        if (t_ms // _WIGWAG_MS) & 1:
            out[n - 1] = ON
        else:
            out[0] = ON
        return
    if blink and not show_soc:
        period = blink * _FLASH_MS + _CODE_PAUSE_MS
        p = t_ms % period
        if p < blink * _FLASH_MS and p % _FLASH_MS < _FLASH_ON_MS:
            out[0] = ON
        return
    if storage and not show_soc:
        level = soc_level(soc_dpct, n)
        k = 0
        while k < level:
            out[k] = ON
            k += 1
        if level and t_ms % _STORE_MS < _STORE_DARK_MS:
            out[level - 1] = 0
        return
    if not (charging or discharging or show_soc):
        return
    level = soc_level(soc_dpct, n)
    k = 0
    while k < level:
        out[k] = ON
        k += 1
    if charging and not show_soc:
        # the LEDs above the charge fill one by one, then start again
        base = level - 1 if level > 0 else 0
        if level == n:
            base = n - 1
        steps = n - base + 1
        lit = (t_ms // _RUN_STEP_MS) % steps
        k = base
        while k < n:
            out[k] = ON if k - base < lit else 0
            k += 1
        k = 0
        while k < base:
            out[k] = ON
            k += 1
        return
    if soc_dpct < _LOW_SOC_DPCT and (t_ms // _LOW_BLINK_MS) & 1:
        out[0] = 0
