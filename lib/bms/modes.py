"""Carrying out the power modes (bms.power decides them), the LED bar, the
button and the network module's power, for bms.cy.

WORKING -> LOW_POWER: FETs and bleeding off, network off; the main loop
then light-sleeps between checks every lp_check_ms (in pieces of at most
half the watchdog's timeout, feeding it between). A wake source other than
the timer, or a check that finds work, goes back to WORKING.
-> SLEEP: the state to flash, LEDs and network off, FETs off, the AFE
shipped, the MCU in deep sleep: the next thing that runs is a boot.

Allocation-free per pass (LEDs, button, inputs); a transition may allocate
(it logs an event and, for sleep, saves).
"""
from micropython import const

from bms import led as LED
from bms import params as P
from bms import power as PW
from bms import regmap as M
from bms.afe import WINDOW_MS
from bms.boards import IN_BUTTON, WAKE_TIMER
from bms.events import AT_LEDS, AT_MODES, EV_MODE
from bms.button import LONG, SHORT, Button
from bms.gen.packed import SOC_WINDOW_WARN_ROWS, SOC_WINDOW_ROWS, UNDER_VOLTAGE_ROWS
from bms.ticks import ticks_add, ticks_diff

ANIMATE_MS = const(100)  # the LED bar's frame time while it moves (flashes are 200 ms)


# after entering low power: settle plus one offset block (bms.soc, 4 + 64 windows)
_LEARN_MS = const(18000)

class Modes:
    def __init__(self, cy, modbus, now):
        """cy: the measurement cycle (bms.cycle), which owns the AFE, the
        protection table, the SOC and the board; modbus: the slave, whose
        traffic keeps the pack awake."""
        self.cy = cy
        self.modbus = modbus
        v = cy.values
        self.power = PW.Power(now)
        self.button = Button(v[P.P_BUTTON_LONG_MS])
        n = v[P.P_LED_COUNT]
        self.led_out = bytearray(n)
        self.led_on = (255 * v[P.P_LED_BRIGHTNESS_PCT] + 50) // 100
        self.show_soc = False
        self.show_since = now
        self.long_press = False
        self.comm_at = now  # the last request addressed to us
        self.served = 0
        self.inputs = 0
        self.net_on = False
        self.mode_start_s = 0  # uptime when the present mode began
        self.learn_until = now  # low power: a reading every window until then (the offset)

    def start(self, cause):
        """At boot: the mode's cause (the boot, or what woke the MCU)."""
        self.power.cause = cause
        self.cy.append(EV_MODE, (PW.WORKING << 8) | cause, 0)
        self.network()

    def network(self):
        on = self.power.mode == PW.WORKING and self.cy.values[P.P_NET_ENABLE] != 0
        if on != self.net_on:
            up = self.cy.uplink
            if not on and up is not None:
                up.stop()  # the goodbye goes out before the radio does
            self.net_on = on
            self.cy.board.network(on)

    # -- every pass ---------------------------------------------------------------

    def poll(self, now):
        """Inputs, the button and Modbus activity; before the cycle."""
        cy = self.cy
        self.inputs = cy.board.inputs()
        n = self.modbus.server_messages
        if n != self.served:
            self.served = n
            self.comm_at = now
        ev = self.button.update(self.inputs & IN_BUTTON, now)
        if ev == SHORT:
            self.show_soc = True
            self.show_since = now
        elif ev == LONG:
            self.long_press = True

    def after_cycle(self, now):
        """The mode WORKING should move to, judged on this cycle's values."""
        cy = self.cy
        pw = self.power
        if pw.mode != PW.WORKING:
            return
        v = cy.values
        pr = cy.protection
        mode, cause = pw.working(now, cy.meas.current_ma, _trouble(pr),
                                 pr.protect_flags & UNDER_VOLTAGE_ROWS, self.inputs, self.comm_at,
                                 self.long_press, v[P.P_LP_IDLE_MA], v[P.P_LP_IDLE_MS], v[P.P_SLEEP_UV_MS])
        self.long_press = False
        if mode == PW.LOW_POWER:
            self._enter(PW.LOW_POWER, cause, now)
            cy.fets_and_bleeding_off()
            # both FETs off, no current can flow: the first seconds of low
            # power read every window, so the coulomb counter's offset is
            # learned at once (a block of readings), not over an hour of checks
            self.learn_until = ticks_add(now, _LEARN_MS)
            # the bar goes dark now: low_power() does not render, and the
            # light sleep would hold whatever it showed (a press wakes it)
            self.show_soc = False
            self.leds(now)
            self.network()
        elif mode == PW.SLEEP:
            self.sleep(now, cause)

    def _enter(self, mode, cause, now):
        cy = self.cy
        self.power.enter(mode, cause, now)
        self.mode_start_s = cy.uptime_s
        cy.append(EV_MODE, (mode << 8) | cause, self.mode_start_s)
        self.publish(cy.ir)  # a read before the next cycle sees the new mode

    def wake(self, now, cause):
        self._enter(PW.WORKING, cause, now)
        self.comm_at = now  # awake for at least lp_idle_ms
        self.network()

    def sleep(self, now, cause):
        cy = self.cy
        self._enter(PW.SLEEP, cause, now)
        try:
            cy.save_state(now)
            self.leds(now)
            self.network()
            if not cy.fets_and_bleeding_off():
                # the chip did not take the FETs-off write: a pack left unwatched
                # with its FETs maybe on is worse than a flat battery, so stay
                # awake; the AFE is in doubt and the next cycles deal with it
                cy.afe_ok = False
                self.wake(now, PW.CAUSE_SLEEP_REFUSED)
                return
            # FETs off: sleep even if SHIP fails (the chip then just draws more)
            cy.afe.enter_ship()
            # when the sleep began, on the clock that runs through it: the
            # next boot counts the sleep's draw against the SOC
            pr = cy.protection
            pr.asleep_s = cy.board.clock_s()
            cy.board.keep(pr.kept())
            cy.board.deep_sleep()  # does not return (SystemExit): the next thing is a boot
        except Exception as e:  # noqa: BLE001 - no sleep: awake and watching, FETs as protection wants
            cy.fault(AT_MODES, e)
            # the AFE may be shipped already: the boot pulse wakes it, the next cycle configures it
            cy.afe_ok = False
            try:
                cy.board.afe_boot()
            except Exception:  # noqa: BLE001 - then the cycles' comm fault holds the FETs off
                pass
            self.wake(now, PW.CAUSE_SLEEP_REFUSED)

    def low_power(self, now):
        """One pass in LOW_POWER: sleep until the next check or a wake
        source, or run the check. Returns the idle time for the board."""
        cy = self.cy
        v = cy.values
        every = v[P.P_LP_CHECK_MS]
        if ticks_diff(self.learn_until, now) > 0:
            every = WINDOW_MS
        due = every - ticks_diff(now, cy.last_cycle)
        if due > 0:
            piece = v[P.P_WDT_MS] // 2
            b = cy.board
            b.wdt_feed()
            try:
                reason = b.light_sleep(due if due < piece else piece)
            except Exception as e:  # noqa: BLE001 - no light sleep: back to work, watching
                cy.fault(AT_MODES, e)
                self.wake(b.ticks_ms(), PW.CAUSE_SLEEP_REFUSED)
                return 1
            if cy.failing:
                cy.passed(AT_MODES)
            b.wdt_feed()
            if reason != WAKE_TIMER:
                self.wake(b.ticks_ms(), reason)
            return 1
        cy.run(now)  # measured and judged: protection holds in low power too
        pr = cy.protection
        # Storage mode: a load hanging on the pack is work while the SOC is
        # above the target (it takes it down), none once there (low power
        # holds both FETs off). With no load, charger or ACC nothing can move
        # the SOC: the pack sleeps, at the target or where it is (a charger
        # wakes it to go on).
        load = cy.meas.load_present
        attention = _trouble(pr) | (0 if cy.storage_at_target() else load)
        if self.power.check(cy.meas.current_ma, attention, self.inputs, v[P.P_LP_IDLE_MA]):
            self.wake(now, PW.CAUSE_ATTENTION)
        elif v[P.P_STORAGE] and not load:
            self.sleep(now, PW.CAUSE_STORAGE)
        return 1

    # -- the LED bar ------------------------------------------------------------------

    def leds(self, now):
        """Render and show the bar; True while it animates (the loop then
        wakes often enough for the frames). A failure is not protection:
        counted (Cycle.fault), the bar dark, tried again next pass."""
        cy = self.cy
        try:
            busy = self._show(now)
        except Exception as e:  # noqa: BLE001
            cy.fault(AT_LEDS, e)
            self._dark()
            return False
        if cy.failing:
            cy.passed(AT_LEDS)
        return busy

    def _dark(self):
        out = self.led_out
        k = 0
        while k < len(out):
            out[k] = 0
            k += 1
        try:
            self.cy.board.leds(out)
        except Exception:  # noqa: BLE001 - the board's LED output itself failed: nothing more to do
            pass

    def _show(self, now):
        out = self.led_out
        n = len(out)
        if n == 0:
            return False
        cy = self.cy
        v = cy.values
        pr = cy.protection
        reason = pr.dsg_reason if pr.dsg_reason else pr.chg_reason
        blink = pr.blink(reason - 1) if reason else 0
        if self.show_soc and ticks_diff(now, self.show_since) >= v[P.P_LED_SOC_SHOW_MS]:
            self.show_soc = False
        s = cy.soc
        soc = s.soc_dpct if s is not None and cy.soc_started else 0
        i = cy.meas.current_ma
        rest = v[P.P_REST_CURRENT_MA]
        charging = i > rest
        storage = v[P.P_STORAGE]
        LED.render(out, n, now, self.power.mode, cy.configured, blink, soc, charging, i < -rest,
                   self.show_soc, storage)
        on = self.led_on
        k = 0
        while k < n:
            if out[k]:
                out[k] = on
            k += 1
        cy.board.leds(out)
        return (not cy.configured or blink != 0 or charging or self.show_soc or storage or
                (i < -rest and soc < 100))

    def publish(self, ir):
        pw = self.power
        ir.set_u16(M.IR_POWER_MODE, pw.mode)
        ir.set_u16(M.IR_MODE_CAUSE, pw.cause)
        ir.set_u32(M.IR_MODE_TIME_S, self.cy.uptime_s - self.mode_start_s)
        ir.set_u16(M.IR_IO_STATE, self.inputs | (0x100 if self.net_on else 0))


def _trouble(pr):
    """Protections and warnings that keep the pack awake: all but the SOC
    window's and storage's rows, which are limits of use."""
    return (pr.protect_flags & ~SOC_WINDOW_ROWS) | (pr.warn_flags & ~SOC_WINDOW_WARN_ROWS)
