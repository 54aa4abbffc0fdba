"""The application: wires the firmware together and runs its main loop,
the Modbus slave serviced between measurement cycles (bms.cycle, one per
AFE window).

The board is the only thing that touches hardware; everything here is
plain integer Python that runs on MicroPython and CPython alike.
"""
import gc

from micropython import const

from bms import VERSION, release
from bms import config as CF
from bms import params as P
from bms import regmap as M
from bms.boards import RESET_DEEPSLEEP, RESET_HARD, RESET_WDT
from bms.cycle import Cycle
from bms.eventlog import EventLog
from bms.events import (AT_MODBUS, AT_MODES, AT_LEDS, AT_START, AT_UPLINK, AT_WRITES, EV_AFE_UP, EV_BOOT, EV_CONFIG_ERRORS,
                        EV_CONFIG_IMPORTED, EV_CONFIG_RULE, EV_CRASH, EV_OCV_TABLE_REJECTED, EV_PARAMS_MIGRATED,
                        EV_RESET)
from bms.modbus_rtu import ModbusSlave
from bms.modes import ANIMATE_MS, Modes
from bms.power import CAUSE_BOOT, WORKING
from bms.regimage import RegisterImage
from bms.ticks import ticks_add, ticks_diff

_FALLBACK_MS = const(300)  # cycle anyway when ALERT stays quiet this long (bms.afe WINDOW_MS + 50)
_MIN_GAP_MS = const(50)  # ALERT held high (a stuck flag) must not spin the loop
EVENT_FILE = "events.bin"
_NET_RETRY_MIN_MS = const(1000)  # MQTT after a caught failure: rests this long, doubling up to
_NET_RETRY_MAX_MS = const(64000)
_NET_BUSY_MS = const(10)  # messages wait to go out: back this soon


def _input_mapped():
    """bytearray(IR_SIZE), 1 where bms.spec.regtable.INPUT_REGS maps an input
    register: from its packed spans (bms.gen.packed), so the table's names and
    units stay with the host tools."""
    from bms.gen import packed

    m = bytearray(M.IR_SIZE)
    s = packed.IR_SPANS
    k = 0
    while k < len(s):
        a = s[k]
        n = s[k + 1]
        while n:
            m[a] = 1
            a += 1
            n -= 1
        k += 2
    return m


class App:
    def __init__(self, board, prm=None):
        """prm: the loaded parameters (bms.start loads them before importing
        this module, to keep the boot's peak heap low), or None to load here."""
        if prm is None:
            from bms import paramload

            prm = paramload.load(board.storage_dir)
        gc.collect()  # start from a compact heap
        self.board = board
        self.params = prm
        v = self.values = prm.values
        self.ir = RegisterImage(M.IR_SIZE, _input_mapped())
        self.hr = RegisterImage(M.HR_SIZE)
        self.now = board.ticks_ms()
        self.log = EventLog(board.storage_dir + EVENT_FILE, 256, M.EVENT_WINDOW)
        cy = self.cycle = Cycle(board, prm, self.ir, self.log)
        self.modbus = ModbusSlave(board.serial, self, v[P.P_MODBUS_ADDRESS], v[P.P_MODBUS_BAUD],
                                  ("open-bms", "BMS-ESP32", VERSION, "", "ESP32 battery management system",
                                   "ESP32 + " + cy.afe.model, "bms firmware"))
        self.config = cy.config = CF.Config(prm, self.hr, self.ir, cy.append)
        self.reset_cause = board.reset_cause()  # (RESET_, WAKE_)
        self.modes = cy.modes = Modes(cy, self.modbus, board.ticks_ms())
        self.uplink = None  # MQTT (bms.uplink), when net.cfg and net_enable ask for it
        self.net_backoff_ms = 0  # MQTT rests after a caught failure (_uplink_step)
        self.net_retry_at = self.now
        # the packed tables (bms.gen.packed) have done their work: let them go
        release("gen.packed")
        release("gen")  # the package of generated tables: empty by now
        release("afe.chips")  # the driver is built
        prm.release()  # a no-op after bms.start's
        gc.collect()

    # -- Modbus register bank -----------------------------------------------

    def read_registers(self, fc, addr, count, out, off):
        img = self.ir if fc == 4 else self.hr
        return img.read_into(addr, count, out, off)

    def write_registers(self, addr, count, data, off, broadcast):
        return self.config.write(addr, count, data, off, broadcast, self.now)

    # -- start-up -----------------------------------------------------------

    def start(self):
        v = self.values
        self.board.set_serial(v[P.P_MODBUS_BAUD], v[P.P_MODBUS_PARITY])
        log = self.log
        log.load()
        self.boot_seq = log.next_seq  # this boot's first event (MQTT sends from here)
        cy = self.cycle
        append = cy.append
        rec = cy.life_store.load()
        if rec is not None:
            cy.life.decode(rec[1])
        append(EV_BOOT, log.boot, 0)
        prm = self.params
        if prm.errors:
            append(EV_CONFIG_ERRORS, len(prm.errors), 0)
        if prm.migrated_from:
            append(EV_PARAMS_MIGRATED, prm.migrated_from, 0)
        if prm.imported_text:
            append(EV_CONFIG_IMPORTED, 0, 0)
        # the set taken in could not be stored: say so once; Config retries it
        CF.log_save(append, CF.SAVE_PARAMS, 0, prm.save_failing(), 0)
        rule = prm.rule_error()
        if rule:
            append(EV_CONFIG_RULE, rule, 0)
        if cy.ocv_rejected:
            append(EV_OCV_TABLE_REJECTED, 0, 0)
        cause, wake = self.reset_cause
        append(EV_RESET, (cause << 8) | wake, 0)
        self.ir.set_u16(M.IR_RESET_CAUSE, (cause << 8) | wake)
        # the rows' latches, retries and trips from before a reset (none
        # after a power cut): a latched short stays latched
        pr = cy.protection
        pr.restore(self.board.kept(), self.board.ticks_ms())
        if pr.crash:
            # the guard's report from before the reset (bms.start)
            append(EV_CRASH, pr.crash, 0)
            pr.crash = 0
            pr.changed = True
        if cause == RESET_HARD or cause == RESET_WDT:
            # an unplanned reset (a crash, the watchdog): counted across
            # resets; _LOCKOUT_RESETS in a row and the FETs stay off
            if pr.resets < 255:
                pr.resets += 1
            pr.changed = True
        if pr.asleep_s:
            if cause == RESET_DEEPSLEEP:
                # the clock ran through the sleep: its draw is counted once the SOC starts
                try:
                    d = self.board.clock_s() - pr.asleep_s
                    cy.slept_s = d if d > 0 else 0
                except Exception as e:  # noqa: BLE001 - no clock: the sleep's draw (uA) goes uncounted
                    cy.fault(AT_START, e)
            pr.asleep_s = 0
            pr.changed = True
        if cause == RESET_DEEPSLEEP:
            self.board.afe_boot()  # the AFE was shipped for the sleep
        cy.afe_ok = cy.bring_up_afe()
        if not cy.afe_ok:
            # a bq769x0 powers up in SHIP: the TS1 boot pulse wakes it
            self.board.afe_boot()
            cy.afe_ok = cy.bring_up_afe()
        append(EV_AFE_UP, 1 if cy.afe_ok else 0, 0)
        self.modes.start(wake if cause == RESET_DEEPSLEEP else CAUSE_BOOT)
        self.board.wdt_start(self.values[P.P_WDT_MS])
        if self.values[P.P_NET_ENABLE]:
            from bms import netcfg

            # MQTT, when net.cfg asks for it
            self.uplink = cy.uplink = netcfg.start(self.board, self.values, self.ir, log, append, self.boot_seq,
                                                   self.params.cells() if cy.configured else 0)
            release("netcfg")

    # -- parameter changes (after the reply that accepted them) --------------

    def _after_writes(self, now):
        cy = self.cycle
        work = self.config.service(now, cy.uptime_s)
        if work & CF.APPLY:
            self._apply_params()
        if work & CF.COMM:
            v = self.values
            self.modbus.set_address(v[P.P_MODBUS_ADDRESS])
            self.modbus.set_baud(v[P.P_MODBUS_BAUD])
            self.board.set_serial(v[P.P_MODBUS_BAUD], v[P.P_MODBUS_PARITY])
        if work & CF.CLEAR_LATCHED:
            pr = cy.protection
            pr.clear_latched(False)
            if pr.resets:
                pr.resets = 0  # and a reset-loop lockout
                pr.changed = True
        if work & CF.FACTORY_RESET:
            self.params.store.erase()
            cy.soc_store.erase()
            self.board.reset()
        elif work & CF.RESTART:
            cy.save_state(now)
            self.board.reset()

    def _apply_params(self):
        """Live parameters take effect now; the pack's own keys (chemistry,
        cells, capacity, shunt, wiring) at the next restart."""
        cy = self.cycle
        cy.configure_live()
        if cy.configured and cy.afe_ok:
            # the hardware backstop follows its parameters; read back what the chip took
            cy.afe_ok = cy.arm_backstop()

    # -- the main loop ------------------------------------------------------------

    def step(self):
        """One pass of the main loop: Modbus, then a cycle when one is due.

        Returns how long the board may idle before the next pass.
        """
        b = self.board
        now = b.ticks_ms()
        self.now = now
        cy = self.cycle
        cy.at = AT_MODBUS
        try:
            self.modbus.poll(now)
        except Exception as e:  # noqa: BLE001 - a request must not stop protection: dropped, counted
            cy.fault(AT_MODBUS, e)
            self.modbus.drop()
        else:
            if cy.failing:
                cy.passed(AT_MODBUS)
        cf = self.config
        if cf.pending or cf.ev_lock or cf.save_failed:  # work for after the reply, a save to retry
            cy.at = AT_WRITES
            self._after_writes(now)
        md = self.modes
        cy.at = AT_MODES
        md.poll(now)
        up = self.uplink
        if md.power.mode != WORKING:
            if up is not None:
                cy.at = AT_UPLINK
                self._uplink_step(now, False)  # the network goes off: close the session
            cy.at = AT_MODES
            return 1 if self.modbus.receiving() else md.low_power(now)
        since = ticks_diff(now, cy.last_cycle)
        if (b.alert() and since >= _MIN_GAP_MS) or since >= _FALLBACK_MS:
            cy.run(now)
            since = 0
        if self.modbus.receiving():
            return 1
        if up is not None:
            # after the cycle and the Modbus reply: at most timeout_ms per network call
            cy.at = AT_UPLINK
            self._uplink_step(now, True)
        cy.at = AT_MODES
        md.poll(now)  # again: a press that began during the cycle is seen before the idle
        wait = _FALLBACK_MS - since
        if up is not None and up.busy() and wait > _NET_BUSY_MS:
            wait = _NET_BUSY_MS
        cy.at = AT_LEDS
        if (md.leds(now) or md.button.busy()) and wait > ANIMATE_MS:
            wait = ANIMATE_MS
        return wait if wait > 1 else 1

    def _uplink_step(self, now, working):
        """up.step, guarded: MQTT is not protection. A failure closes the
        session and the uplink rests (1 s doubling to 64 s) before its next
        step starts again from Wi-Fi."""
        up = self.uplink
        if self.net_backoff_ms and ticks_diff(now, self.net_retry_at) < 0:
            return
        try:
            up.step(now, working)
        except Exception as e:  # noqa: BLE001
            self.cycle.fault(AT_UPLINK, e)
            try:
                up.stop()
            except Exception:  # noqa: BLE001 - closing what failed may fail too
                up.state = M.NET_OFF
            b = self.net_backoff_ms * 2
            self.net_backoff_ms = _NET_RETRY_MIN_MS if b < _NET_RETRY_MIN_MS else (
                _NET_RETRY_MAX_MS if b > _NET_RETRY_MAX_MS else b)
            self.net_retry_at = ticks_add(now, self.net_backoff_ms)
            return
        self.net_backoff_ms = 0
        if self.cycle.failing:
            self.cycle.passed(AT_UPLINK)


def run(board, prm=None):
    app = App(board, prm)
    app.start()
    while True:
        board.idle(app.step())
