"""The application: one measurement and control cycle per AFE window, and
the Modbus slave serviced in between.

The board is the only thing that touches hardware; everything here is
plain integer Python that runs on MicroPython and CPython alike.
"""
import gc

from micropython import const

from bms import VERSION, release
from bms import config as CF
from bms import params as P
from bms import protection as PR
from bms import regmap as M
from bms.afe import (FET_CHG, FET_DSG, READ_NOT_CLEARED, READ_OK, ST_DEVICE, ST_FAULTS, ST_NEW_CC, ST_OCD, ST_OV,
                     ST_OVRD, ST_SCD, ST_STOPPED, ST_UV, TEMP_OPEN, TEMP_SHORT, open_afe)
from bms.boards import (DRAW_AFE_SHIP_UA, DRAW_AFE_UA, DRAW_AWAKE_UA, DRAW_DEEP_SLEEP_UA, DRAW_LIGHT_SLEEP_UA,
                        DRAW_NETWORK_UA, RESET_DEEPSLEEP, RESET_HARD, RESET_WDT)
from bms.balancing import Balancer
from bms.eventlog import EventLog
from bms.lifetime import Lifetime
from bms.measurements import MAX_CELLS, MAX_TEMPS, Measurements
from bms.modes import ANIMATE_MS, Modes
from bms.gen.packed import (DIODE_CHG_ROWS, DIODE_DSG_ROWS, OVER_VOLTAGE_ROWS, SOC_HIGH_ROWS, SOC_LOW_ROWS, SOC_WARN_ROWS,
                        SOC_WINDOW_ROWS, STORAGE_HIGH_ROWS, STORAGE_LOW_ROWS, UNDER_VOLTAGE_ROWS)
from bms.power import CAUSE_BOOT, WORKING
from bms.modbus_rtu import ModbusSlave
from bms.regimage import RegisterImage
from bms.soc import STATE_SIZE, Soc
from bms.start import KIND_MEMORY, KIND_OS, KIND_OTHER
from bms.store import FAIL_ERROR, FAIL_MEMORY, Store
from bms.ticks import TICKS_LIMIT, held_since, ticks_add, ticks_diff

PERIOD_MS = const(250)  # the AFE's coulomb-counter window
_FALLBACK_MS = const(300)  # cycle anyway when ALERT stays quiet this long
_MIN_GAP_MS = const(50)  # ALERT held high (a stuck flag) must not spin the loop
_STALE_MS = const(600)  # no CC_READY for this long: the measurement is stale
_LOAD_GONE_MS = const(2000)
_LOCKOUT_RESETS = const(5)  # unplanned resets in a row, each within _LOCKOUT_CLEAN_S of the boot before
_LOCKOUT_CLEAN_S = const(600)
_CHARGE_HOLD_MS = const(1800000)  # balancing goes on this long after a charge (CV float, charger done)
# Groups of protection rows as protect_flags masks (bms.spec.protrules GROUPS):
# OVER_VOLTAGE (balancing goes on under it, the SOC syncs to full),
# UNDER_VOLTAGE (the SOC syncs to empty), DIODE_CHG/DIODE_DSG (the body
# diodes' rows, docs/PROTECTION.md), SOC_WINDOW (limits of use, not faults).
# A latched short clears once the load is gone _LOAD_GONE_MS.
# A FET closed for its diode whose current turned the blocked way within
# _DIODE_QUICK_MS (closing it is what made a charger charge, or a load draw,
# through it) stays open _DIODE_HOLD_MS before it may close again: closing
# and opening must not take turns every cycle, half of them the blocked way.
_DIODE_QUICK_MS = const(1000)
_DIODE_HOLD_MS = const(5000)
_CELL_MIN_PLAUSIBLE_MV = const(500)
_CELL_MAX_PLAUSIBLE_MV = const(5000)
_NO_TEMP = const(-32768)

EVENT_FILE = "events.bin"
SOC_STORE = "soc"  # A/B records soc.a, soc.b (bms.store)
LIFE_STORE = "life"  # lifetime counters, saved with the SOC state
SOC_FILE_03 = "soc.bin"  # where firmware 0.3 kept it: read once if no record exists
_SOC_SAVE_MS = const(600000)  # the SOC state goes to flash every 10 minutes
# Application event codes (the protection table uses 1..191)
EV_BOOT = const(200)  # value: boot number
EV_AFE_UP = const(201)  # value: 1 configured, 0 failed
EV_CONFIG_ERRORS = const(202)  # value: stored settings that were rejected
EV_OCV_TABLE_REJECTED = const(203)  # the stored OCV table does not rise: the chemistry's is used
EV_SOC_START = const(204)  # value: the SOC the estimate started from, 0.1 %
EV_CC_CAL = const(205)  # value: the coulomb-counter offset after a calibration, 1/16 LSB
# 206..213: bms.config (parameter changes, unlocking, commands, saves); 221: bms.config EV_STORE_SAVE
EV_CONFIG_RULE = const(214)  # value: the consistency rule the stored set breaks: it runs unconfigured
EV_CONFIG_IMPORTED = const(215)  # a bms.cfg file was taken in as the stored set
# 216: bms.power EV_MODE (a power-mode change: mode << 8 | cause)
EV_RESET = const(217)  # value: the boot's reset cause << 8 | wake reason (bms.boards RESET_, WAKE_)
EV_CRASH = const(222)  # value: where (AT_) << 8 | kind (bms.start KIND_): the guard reset the MCU
EV_FAULT = const(223)  # value: where (AT_) << 8 | kind: a non-critical path started failing (App.fault)
_NET_RETRY_MIN_MS = const(1000)  # MQTT after a caught failure: rests this long, doubling up to
_NET_RETRY_MAX_MS = const(64000)
_NET_BUSY_MS = const(10)  # messages wait to go out: back this soon
# Where the firmware is (App.at): a crash keeps it with its kind (bms.start),
# so the report says where it happened.
AT_START = const(1)  # App.start(): the logs, the kept record, the AFE, the network
AT_MODBUS = const(2)  # the Modbus slave: a request, its reply
AT_WRITES = const(3)  # parameter writes and commands, after their reply
AT_MODES = const(4)  # inputs, the button, power modes, low power and sleep
AT_MEASURE = const(5)  # the AFE: status, measurements, bring-up
AT_SOC = const(6)  # the SOC estimator and the lifetime counters
AT_PROTECT = const(7)  # the protection table
AT_SWITCH = const(8)  # latch release, calibration, switching the FETs
AT_FLASH = const(9)  # the kept record, events and saves to flash
AT_BALANCE = const(10)
AT_PUBLISH = const(11)  # the input-register image
AT_UPLINK = const(12)  # MQTT
AT_LEDS = const(13)
_CAL_MS = const(20000)  # FETs off this long: settle plus one 16 s offset block
_STORE_NEAR_DPCT = const(10)  # storage mode: within 1 % of storage_soc is there (sleep may follow)


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
    # for bms.modes (it cannot import this module): the AT_ places of its faults
    PLACE_MODES = AT_MODES
    PLACE_LEDS = AT_LEDS
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
        groups = v[P.P_AFE_GROUPS] if v[P.P_AFE_GROUPS] else 1
        self.meas = Measurements(groups)
        self.afe = open_afe(board.i2c, v[P.P_CELL_CHANNELS], v[P.P_SHUNT_UOHM], v[P.P_AFE_ADDR], v[P.P_AFE_GROUPS])
        self.ir = RegisterImage(M.IR_SIZE, _input_mapped())
        self.hr = RegisterImage(M.HR_SIZE)
        self.now = board.ticks_ms()
        self.modbus = ModbusSlave(board.serial, self, v[P.P_MODBUS_ADDRESS], v[P.P_MODBUS_BAUD],
                                  ("open-bms", "BMS-ESP32", VERSION, "", "ESP32 battery management system",
                                   "ESP32 + " + self.afe.model, "bms firmware"))
        self.log = EventLog(board.storage_dir + EVENT_FILE, 256, M.EVENT_WINDOW)
        self.config = CF.Config(prm, self.hr, self.ir, self.append)
        self.protection = PR.Protection(v, self)
        self.balancer = Balancer(v[P.P_CELL_CHANNELS])
        self.configured = prm.configured()
        self.soc = None
        self.soc_started = False
        self.soc_saved = board.ticks_ms()  # the first periodic save 10 minutes after boot
        self.soc_buf = bytearray(STATE_SIZE)
        self.soc_store = Store(board.storage_dir, SOC_STORE)
        self.life = Lifetime()
        self.life_store = Store(board.storage_dir, LIFE_STORE)
        self.ocv_rejected = False
        if self.configured:
            self.soc = Soc(v[P.P_CHEMISTRY], prm.cells(), v[P.P_CAPACITY_MAH], v[P.P_SHUNT_UOHM])
        self._configure_live()
        self.afe_ok = False
        self.afe_stat = 0
        self.evaluated = False  # no protection pass on real measurements yet since the MCU started
        self.flags = 0  # this cycle's sensor and link faults, as Q_ flag quantities
        self.meas_count = 0
        # seconds, plus the milliseconds towards the next: uptime in ms would
        # pass 2**30 after 12.4 days and allocate on every cycle on the ESP32
        self.uptime_s = 0
        self._uptime_ms = 0
        self.events_dirty = True
        now = board.ticks_ms()
        self.last_cycle = now
        self.last_cc = now
        self.rest_since = now
        self.cal_active = False
        self.diode_fet = 0  # CHG or DSG: on only to spare its body diode (_switch_fets)
        self.diode_held = 0  # CHG or DSG: not closed for its diode until diode_held_since + _DIODE_HOLD_MS
        self.diode_held_since = now
        self.diode_on_since = now  # when diode_fet last went on
        self.cal_start = now
        self.cal_last = now - v[P.P_CC_CAL_EVERY_MS]  # the first rest may calibrate
        self.charge_seen = now - _CHARGE_HOLD_MS
        # the board's own draw (bms.boards DRAW_): this interval's figure, and
        # the deep sleep before this boot, counted once the SOC has started
        self.draw_ua = DRAW_AWAKE_UA + DRAW_AFE_UA
        self.slept_s = 0
        self.load_gone_since = now
        self.reset_cause = board.reset_cause()  # (RESET_, WAKE_)
        self.modes = Modes(self, now)
        self.uplink = None  # MQTT (bms.uplink), when net.cfg and net_enable ask for it
        self.at = AT_START  # AT_: where the firmware is, for a crash report
        # non-critical paths that caught a failure (App.fault): how many, the
        # last one, and a bit per AT_ place failing now (logged once per streak)
        self.faults = 0
        self.fault_last = 0
        self.failing = 0
        self.log_errors = 0  # the event log's write_errors already counted
        self.net_backoff_ms = 0  # MQTT rests after a caught failure (_uplink_step)
        self.net_retry_at = now
        # the packed tables (bms.gen.packed) have done their work: let them go
        release("packed")
        prm.release()  # a no-op after bms.start's
        gc.collect()

    def _configure_live(self):
        """The settings that take effect at once, at boot and after a write:
        balancing, and the SOC estimator's tuning and OCV table."""
        v = self.values
        self.balancer.configure(v[P.P_BAL_START_MV], v[P.P_BAL_DIFF_MV], v[P.P_BAL_AT_REST],
                                v[P.P_BAL_MIN_IDLE_MS], v[P.P_BAL_MAX_CELLS], v[P.P_BAL_MAX_TEMP_DC])
        s = self.soc
        if s is None:
            return
        s.configure(v[P.P_FULL_CELL_MV], v[P.P_FULL_TAIL_MA], v[P.P_FULL_HOLD_MS],
                    v[P.P_EMPTY_CELL_MV], v[P.P_EMPTY_HOLD_MS], v[P.P_REST_CURRENT_MA],
                    v[P.P_RELAX_CHG_MS], v[P.P_RELAX_DSG_MS])
        # all zero: the chemistry's table (paramcheck allows nothing between)
        table = [v[P.P_OCV_0_MV + k] for k in range(P.OCV_POINTS)] if v[P.P_OCV_0_MV] else None
        try:
            s.set_ocv_table(table)
        except ValueError:
            self.ocv_rejected = True  # logged at start(); the chemistry's table stays

    def _soc_state(self):
        """The stored SOC state, or None."""
        rec = self.soc_store.load()
        if rec is not None:
            return rec[1]
        try:
            with open(self.board.storage_dir + SOC_FILE_03, "rb") as f:
                return f.read()
        except OSError:
            return None

    def save_state(self, now):
        """The SOC state and the lifetime counters to flash (A/B records: a
        power cut mid-save leaves the previous ones; an unchanged record is
        not written again). Periodic, and before a restart or sleep; a
        settings save that is still failing is tried again with them.

        A failed save (MemoryError, OSError) never raises: its store counts
        it (IR_SAVE_ERRORS) and keeps the previous record, the values here
        stay, and the next periodic save tries again. EV_STORE_SAVE is
        logged when a store starts failing and when it works again."""
        self.soc_saved = now
        t = self.uptime_s
        cf = self.config
        if cf.save_failed:
            cf.save(now, t)
        st = self.life_store
        was = st.failing
        try:
            st.save(1, self.life.encode())
        except MemoryError:
            st.fail(FAIL_MEMORY)
        except Exception:  # noqa: BLE001 - a bug in encoding: counted and retried like a flash error
            st.fail(FAIL_ERROR)
        CF.log_save(cf.log, CF.SAVE_LIFE, was, st.failing, t)
        if self.soc is not None and self.soc_started:
            st = self.soc_store
            was = st.failing
            try:
                n = self.soc.save_state(self.soc_buf)
                st.save(STATE_SIZE, self.soc_buf if n == STATE_SIZE else self.soc_buf[:n])
            except MemoryError:
                st.fail(FAIL_MEMORY)
            except Exception:  # noqa: BLE001
                st.fail(FAIL_ERROR)
            CF.log_save(cf.log, CF.SAVE_SOC, was, st.failing, t)
        self._publish_save_errors()

    def _publish_save_errors(self):
        n = self.params.save_errors() + self.soc_store.write_errors + self.life_store.write_errors
        self.ir.set_u16(M.IR_SAVE_ERRORS, n if n < 0xFFFF else 0xFFFF)

    def _track_soc(self, now, cc, dt):
        s = self.soc
        m = self.meas
        if not self.soc_started:
            if cc:
                s.start(now, m, self._soc_state())
                if self.slept_s and self.values[P.P_DRAW_COUNTED]:
                    s.draw_s(DRAW_DEEP_SLEEP_UA + DRAW_AFE_SHIP_UA, self.slept_s)
                    self.slept_s = 0
                self.soc_started = True
                self.soc_saved = now
                if not self.failing & (1 << AT_SOC):  # a restart after a failure: EV_FAULT said it
                    self.append(EV_SOC_START, s.soc_dpct, self.uptime_s)
            return
        s.update(now, m, cc, m.fets == 0)
        if self.values[P.P_DRAW_COUNTED]:
            s.draw_ma = self.draw_ua // 1000
            if dt > 0:
                s.draw(self.draw_ua, dt)  # the interval since the last cycle, at its figure
        else:
            s.draw_ma = 0
        if self.failing:
            self.passed(AT_SOC)

    def _soc_failed(self, e):
        """The SOC estimator raised: it is not protection, so the loop goes
        on. Its state may be half updated: it starts again from the stored
        state at the next coulomb-counter window (not saved meanwhile)."""
        self.fault(AT_SOC, e)
        self.soc_started = False

    # -- non-critical paths that fail ----------------------------------------

    def fault(self, at, e):
        """A non-critical path (at: its AT_ place) caught e and goes on:
        counted (IR_FAULTS), kept as the last (IR_FAULT_LAST), and logged
        (EV_FAULT) when the place starts failing, not on every retry; it
        fails until passed(at). Never raises, however short the heap."""
        self.count_fault(at, KIND_MEMORY if isinstance(e, MemoryError) else (
            KIND_OS if isinstance(e, OSError) else KIND_OTHER), 1)

    def count_fault(self, at, kind, n):
        """fault()'s work, for n failures of kind (bms.start KIND_) at at."""
        f = self.faults + n
        self.faults = f if f < 0xFFFF else 0xFFFF
        self.fault_last = (at << 8) | kind
        bit = 1 << at
        if not self.failing & bit:
            self.failing |= bit
            try:
                self.append(EV_FAULT, self.fault_last, self.uptime_s)
                print("fault caught: place", at, "kind", kind, "(docs/PROTECTION.md, fault injection)")
            except Exception:  # noqa: BLE001 - the event log may be what fails
                pass

    def passed(self, at):
        """The place at worked again: its next failure is logged again."""
        self.failing &= ~(1 << at)

    # -- Modbus register bank -----------------------------------------------

    def read_registers(self, fc, addr, count, out, off):
        img = self.ir if fc == 4 else self.hr
        return img.read_into(addr, count, out, off)

    def write_registers(self, addr, count, data, off, broadcast):
        return self.config.write(addr, count, data, off, broadcast, self.now)

    # -- the event log (the protection table logs through this) -------------

    def append(self, code, value, time_s):
        self.log.append(code, value, time_s)
        self.events_dirty = True
        if 0 < code <= PR.ROW_COUNT and self.protection.level(code - 1) != PR.WARN and self.life.trips < 0xFFFF:
            self.life.trips += 1

    # -- start-up -----------------------------------------------------------

    def start(self):
        v = self.values
        self.board.set_serial(v[P.P_MODBUS_BAUD], v[P.P_MODBUS_PARITY])
        self.log.load()
        self.boot_seq = self.log.next_seq  # this boot's first event (MQTT sends from here)
        rec = self.life_store.load()
        if rec is not None:
            self.life.decode(rec[1])
        self.append(EV_BOOT, self.log.boot, 0)
        prm = self.params
        if prm.errors:
            self.append(EV_CONFIG_ERRORS, len(prm.errors), 0)
        if prm.migrated_from:
            self.append(CF.EV_PARAMS_MIGRATED, prm.migrated_from, 0)
        if prm.imported_text:
            self.append(EV_CONFIG_IMPORTED, 0, 0)
        # the set taken in could not be stored: say so once; Config retries it
        CF.log_save(self.append, CF.SAVE_PARAMS, 0, prm.save_failing(), 0)
        rule = prm.rule_error()
        if rule:
            self.append(EV_CONFIG_RULE, rule, 0)
        if self.ocv_rejected:
            self.append(EV_OCV_TABLE_REJECTED, 0, 0)
        cause, wake = self.reset_cause
        self.append(EV_RESET, (cause << 8) | wake, 0)
        self.ir.set_u16(M.IR_RESET_CAUSE, (cause << 8) | wake)
        # the rows' latches, retries and trips from before a reset (none
        # after a power cut): a latched short stays latched
        pr = self.protection
        pr.restore(self.board.kept(), self.board.ticks_ms())
        if pr.crash:
            # the guard's report from before the reset (bms.start)
            self.append(EV_CRASH, pr.crash, 0)
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
                    self.slept_s = d if d > 0 else 0
                except Exception as e:  # noqa: BLE001 - no clock: the sleep's draw (uA) goes uncounted
                    self.fault(AT_START, e)
            pr.asleep_s = 0
            pr.changed = True
        if cause == RESET_DEEPSLEEP:
            self.board.afe_boot()  # the AFE was shipped for the sleep
        self.afe_ok = self._bring_up_afe()
        if not self.afe_ok:
            # a bq769x0 powers up in SHIP: the TS1 boot pulse wakes it
            self.board.afe_boot()
            self.afe_ok = self._bring_up_afe()
        self.append(EV_AFE_UP, 1 if self.afe_ok else 0, 0)
        self.modes.start(wake if cause == RESET_DEEPSLEEP else CAUSE_BOOT)
        self.board.wdt_start(self.values[P.P_WDT_MS])
        if self.values[P.P_NET_ENABLE]:
            from bms import netcfg

            netcfg.start(self)  # MQTT, when net.cfg asks for it
            release("netcfg")

    def _bring_up_afe(self):
        afe = self.afe
        if not afe.configure():
            return False
        if not self.configured:
            return True
        return self._arm_backstop()

    def _arm_backstop(self):
        """The chip's own protection is the backstop should this MCU hang:
        set outside the firmware's limits so the firmware acts first."""
        afe = self.afe
        v = self.values
        ok = afe.set_protection(
            v[P.P_HW_OV_MV], v[P.P_HW_OV_DELAY_S], v[P.P_HW_UV_MV], v[P.P_HW_UV_DELAY_S],
            v[P.P_HW_OCD_MA], v[P.P_HW_OCD_DELAY_MS], v[P.P_HW_SCD_MA], v[P.P_HW_SCD_DELAY_US])
        ir = self.ir
        ir.set_u16(M.IR_HW_OV_MV, afe.applied_ov_mv)
        ir.set_u16(M.IR_HW_UV_MV, afe.applied_uv_mv)
        ir.set_u32(M.IR_HW_OCD_MA, afe.applied_ocd_ma)
        ir.set_u16(M.IR_HW_OCD_DELAY_MS, afe.applied_ocd_delay_ms)
        ir.set_u32(M.IR_HW_SCD_MA, afe.applied_scd_ma)
        ir.set_u16(M.IR_HW_SCD_DELAY_US, afe.applied_scd_delay_us)
        return ok

    # -- parameter changes (after the reply that accepted them) --------------

    def _after_writes(self, now):
        work = self.config.service(now, self.uptime_s)
        if work & CF.APPLY:
            self._apply_params()
        if work & CF.COMM:
            v = self.values
            self.modbus.set_address(v[P.P_MODBUS_ADDRESS])
            self.modbus.set_baud(v[P.P_MODBUS_BAUD])
            self.board.set_serial(v[P.P_MODBUS_BAUD], v[P.P_MODBUS_PARITY])
        if work & CF.CLEAR_LATCHED:
            self.protection.clear_latched(False)
            if self.protection.resets:
                self.protection.resets = 0  # and a reset-loop lockout
                self.protection.changed = True
        if work & CF.FACTORY_RESET:
            self.params.store.erase()
            self.soc_store.erase()
            self.board.reset()
        elif work & CF.RESTART:
            self.save_state(now)
            self.board.reset()

    def _apply_params(self):
        """Live parameters take effect now; the pack's own keys (chemistry,
        cells, capacity, shunt, wiring) at the next restart."""
        self._configure_live()
        if self.configured and self.afe_ok:
            # the hardware backstop follows its parameters; read back what the chip took
            self.afe_ok = self._arm_backstop()

    # -- the cycle ------------------------------------------------------------

    def cycle(self, now):
        """Measure, judge, switch, balance, publish. Allocation-free in steady state."""
        m = self.meas
        afe = self.afe
        log = self.log
        log.hold = True  # events wait in RAM until the FETs are switched
        self.at = AT_MEASURE
        dt = ticks_diff(now, self.last_cycle)
        self.last_cycle = now
        if dt > 0:
            t = self._uptime_ms + dt
            while t >= 1000:
                t -= 1000
                self.uptime_s += 1
            self._uptime_ms = t
        flags = 0
        stat = 0
        if not self.afe_ok:
            # In doubt about the AFE: FETs off first (a write can get through
            # when reads fail), then configure it again.
            if afe.fets_off():
                m.fets = 0
            self.afe_ok = self._bring_up_afe()
            if self.afe_ok:
                m.fets = 0
                m.balance_mask = 0
        if not self.afe_ok:
            flags |= 1 << PR.Q_AFE_COMM
        else:
            got = afe.read(m)
            stat = m.status
            if got != READ_OK:
                flags |= 1 << PR.Q_AFE_COMM
                self.afe_ok = False
            if stat & (ST_DEVICE | ST_STOPPED):
                # the chip reset (its FETs, balancing and settings are gone),
                # or its ADC is off and the cell voltages it reports are old
                flags |= 1 << PR.Q_AFE_RESET
                self.afe_ok = False
            if got == READ_OK or got == READ_NOT_CLEARED:
                if stat & ST_NEW_CC:
                    self.last_cc = now
                    self.meas_count = (self.meas_count + 1) & 0xFFFF
                m.update_extremes()
        if not self.afe_ok and afe.fets_off():
            m.fets = 0  # in doubt: off now, not a cycle later
        self.afe_stat = stat & ST_FAULTS
        if ticks_diff(now, self.last_cc) > _STALE_MS:
            flags |= 1 << PR.Q_AFE_STALE
        if not self.configured:
            flags |= 1 << PR.Q_UNCONFIGURED
        self.flags = flags
        self.at = AT_SOC
        if self.soc is not None and self.afe_ok and m.cells:
            try:
                self._track_soc(now, stat & ST_NEW_CC, dt)
            except Exception as e:  # noqa: BLE001 - not protection: counted, restarted (_soc_failed)
                self._soc_failed(e)
        self._quantities(stat, flags)
        pr = self.protection
        if self.afe_ok and m.cells:
            q = pr.q
            try:
                self.life.update(dt, m.current_ma, stat & ST_NEW_CC, m.cell_min_mv, m.cell_max_mv,
                                 q[PR.Q_TEMP_MIN_DC], q[PR.Q_TEMP_MAX_DC])
            except Exception as e:  # noqa: BLE001 - statistics: counted, the next cycle tries again
                self.fault(AT_SOC, e)
        pr.time_s = self.uptime_s
        if pr.resets and pr.resets < _LOCKOUT_RESETS and self.uptime_s >= _LOCKOUT_CLEAN_S:
            pr.resets = 0  # up long enough: the resets before were not a loop
            pr.changed = True
        measured = self.afe_ok and m.cells
        self.at = AT_PROTECT
        pr.evaluate(now, measured and not self.evaluated)
        if measured:
            self.evaluated = True  # the FETs have been judged on real measurements
        s = self.soc
        if s is not None and self.soc_started:
            # a cut-off by the voltage protections is the pack's full or empty
            f = pr.protect_flags
            try:
                if f & UNDER_VOLTAGE_ROWS:
                    s.sync_empty()
                elif f & OVER_VOLTAGE_ROWS and m.current_ma <= 0:
                    s.sync_full()
            except Exception as e:  # noqa: BLE001
                self._soc_failed(e)
        self.at = AT_SWITCH
        self._latch_release(now)
        self._calibration(now)
        self._switch_fets(now)
        self.at = AT_FLASH
        # act first, write later: flash takes tens to hundreds of ms
        if pr.changed:
            pr.changed = False
            self.board.keep(pr.kept())  # latches and retries survive a reset
        log.hold = False
        try:
            log.flush()
        except Exception as e:  # noqa: BLE001 - it should not raise (EventLog._write catches): belt and braces
            self.fault(AT_FLASH, e)
        n = log.write_errors
        if n != self.log_errors:
            # records the event log could not write (since the last cycle):
            # they stay in RAM (IR events), the next records are tried afresh
            self.count_fault(AT_FLASH, log.error_kind, n - self.log_errors)
            self.log_errors = n
        elif self.failing:
            self.passed(AT_FLASH)
        if ticks_diff(now, self.soc_saved) >= _SOC_SAVE_MS:
            self.save_state(now)
        self.at = AT_BALANCE
        self._balance(now)
        self.at = AT_PUBLISH
        self.publish()
        self.board.wdt_feed()  # the checks are done: the watchdog may wait again
        self.at = AT_MODES
        self.modes.after_cycle(now)
        self.draw_ua = self.board_draw_ua()

    def storage_at_target(self):
        """Storage mode, and the SOC within _STORE_NEAR_DPCT of storage_soc:
        the pack has arrived (a storage row holds the way back; with no load
        or charger the last few tenths would never come)."""
        v = self.values
        s = self.soc
        if not v[P.P_STORAGE] or s is None or not self.soc_started:
            return False
        d = s.soc_dpct - v[P.P_STORAGE_SOC_DPCT]
        return -_STORE_NEAR_DPCT <= d <= _STORE_NEAR_DPCT

    def board_draw_ua(self):
        """The board's supply current in its present state (bms.boards DRAW_,
        the reference board's model): awake with or without the network in
        working mode, light sleep in low power; the AFE in NORMAL mode."""
        md = self.modes
        if md.power.mode == WORKING:
            ua = DRAW_AWAKE_UA + (DRAW_NETWORK_UA if md.net_on else 0)
        else:
            ua = DRAW_LIGHT_SLEEP_UA
        return ua + DRAW_AFE_UA

    def _quantities(self, stat, flags):
        """Fill the protection table's quantities from this cycle's measurements."""
        m = self.meas
        v = self.values
        q = self.protection.q
        q[PR.Q_CELL_MAX_MV] = m.cell_max_mv
        q[PR.Q_CELL_MIN_MV] = m.cell_min_mv if m.cells else 0x7FFF
        q[PR.Q_PACK_MV] = m.pack_mv
        q[PR.Q_SPREAD_MV] = m.cell_max_mv - m.cell_min_mv
        i = m.current_ma
        q[PR.Q_CHG_MA] = i if i > 0 else 0
        q[PR.Q_DSG_MA] = -i if i < 0 else 0
        # temperatures: the fitted cell sensors, and the FET/board sensor apart
        fitted = v[P.P_TEMP_SENSORS]
        fet = v[P.P_FET_TEMP_SENSOR] - 1
        hi = _NO_TEMP
        lo = 0x7FFF
        fet_t = _NO_TEMP
        bad = 0
        k = 0
        while k < m.temps:
            if fitted & (1 << k):
                t = m.temp_dc[k]
                if t == TEMP_OPEN or t == TEMP_SHORT:
                    bad = 1
                elif k == fet:
                    fet_t = t
                else:
                    if t > hi:
                        hi = t
                    if t < lo:
                        lo = t
            k += 1
        if hi == _NO_TEMP and fitted:
            bad = 1  # no cell sensor works: temperatures are unknown
        q[PR.Q_TEMP_MAX_DC] = hi
        q[PR.Q_TEMP_MIN_DC] = lo
        q[PR.Q_FET_TEMP_DC] = fet_t
        q[PR.Q_TEMP_SENSOR] = bad
        q[PR.Q_CELL_IMPLAUSIBLE] = 1 if m.cells and (
            m.cell_min_mv < _CELL_MIN_PLAUSIBLE_MV or m.cell_max_mv > _CELL_MAX_PLAUSIBLE_MV) else 0
        q[PR.Q_AFE_SCD] = 1 if stat & ST_SCD else 0
        q[PR.Q_AFE_OCD] = 1 if stat & ST_OCD else 0
        q[PR.Q_AFE_OV] = 1 if stat & ST_OV else 0
        q[PR.Q_AFE_UV] = 1 if stat & ST_UV else 0
        q[PR.Q_AFE_OVRD] = 1 if stat & ST_OVRD else 0
        q[PR.Q_AFE_COMM] = (flags >> PR.Q_AFE_COMM) & 1
        q[PR.Q_AFE_RESET] = (flags >> PR.Q_AFE_RESET) & 1
        q[PR.Q_AFE_STALE] = (flags >> PR.Q_AFE_STALE) & 1
        q[PR.Q_UNCONFIGURED] = (flags >> PR.Q_UNCONFIGURED) & 1
        q[PR.Q_RESET_LOCKOUT] = 1 if self.protection.resets >= _LOCKOUT_RESETS else 0
        # the SOC window and storage (bms.protection Q_SOC_*): UNKNOWN until
        # the SOC is, inside 0.1..99.9 % so 100 % and 0 % mean off
        s = self.soc
        self.protection.set_soc(s.soc_dpct if s is not None and self.soc_started else PR.UNKNOWN,
                                v[P.P_STORAGE])

    def _latch_release(self, now):
        """A short circuit latched after its retries clears once the load is
        removed (the chip senses a load on PACK- while DSG is off)."""
        pr = self.protection
        if not pr.latched() or not self.afe_ok:
            self.load_gone_since = now
            return
        if self.meas.fets & FET_CHG or self.meas.load_present:
            # LOAD_PRESENT means something only while CHG is off
            self.load_gone_since = now
        elif ticks_diff(now, self.load_gone_since) >= _LOAD_GONE_MS:
            pr.clear_latched(True)

    def _calibration(self, now):
        """Now and then, at rest, both FETs off for a few seconds: no current
        can flow, so what the coulomb counter reads is its offset, and the
        SOC estimator learns it (a C/100 load must not vanish in it)."""
        v = self.values
        i = self.meas.current_ma
        rest = v[P.P_REST_CURRENT_MA]
        if i > rest or i < -rest:
            self.rest_since = now
        else:
            # a rest of days must not wrap round to a fresh one
            self.rest_since = held_since(now, self.rest_since, TICKS_LIMIT)
        if self.cal_active:
            if ticks_diff(now, self.cal_start) >= _CAL_MS or self.protection.protect_flags:
                self.cal_active = False
                self.cal_last = now
                self.append(EV_CC_CAL, self.soc.offset_dlsb, self.uptime_s)
            return
        every = v[P.P_CC_CAL_EVERY_MS]
        self.cal_last = held_since(now, self.cal_last, every)  # due stays due while no rest comes
        if (every and self.soc is not None and self.soc_started and self.afe_ok
                and self.protection.protect_flags == 0
                and ticks_diff(now, self.rest_since) >= v[P.P_CC_CAL_REST_MS]
                and ticks_diff(now, self.cal_last) >= every):
            self.cal_active = True
            self.cal_start = now

    def _switch_fets(self, now):
        """FETs on unless a protection (or an offset calibration) holds them
        off. Read back, not assumed."""
        m = self.meas
        was = self.diode_fet & m.fets
        self.diode_fet = 0
        if not self.afe_ok:
            return
        working = self.modes.power.mode == WORKING
        pr = self.protection
        want = PR.BOTH & ~pr.block if working and not self.cal_active else 0
        # Body diodes: a FET held off for one direction still passes the other
        # direction's current through its body diode, at ~0.7 V: 14 W at 20 A.
        # With current flowing the allowed way above diode_on_ma it goes on;
        # decided afresh every cycle, so it goes off in the first cycle that
        # current is not seen (it stopped, or turned: through the on FET, it
        # would flow the blocked way for at most that cycle; a turn right after
        # it closed holds it open a while). The chip's own comparators (OV,
        # UV, OCD, SCD) keep watching with the FET on.
        i = m.current_ma
        v = self.values
        rest = v[P.P_REST_CURRENT_MA]
        if was and (i > rest if was == PR.CHG else -i > rest):
            if ticks_diff(now, self.diode_on_since) < _DIODE_QUICK_MS:
                self.diode_held = was
                self.diode_held_since = now
        elif self.diode_held and ticks_diff(now, self.diode_held_since) >= _DIODE_HOLD_MS:
            self.diode_held = 0
        thr = v[P.P_DIODE_ON_MA]
        if thr and self.evaluated:
            held = self.diode_held
            if want == PR.DSG and -i >= thr and held != PR.CHG and not pr.protect_flags & ~DIODE_CHG_ROWS:
                want = PR.BOTH
                self.diode_fet = PR.CHG
                if not was:
                    self.diode_on_since = now
            elif want == PR.CHG and i >= thr and held != PR.DSG and not pr.protect_flags & ~DIODE_DSG_ROWS:
                want = PR.BOTH
                self.diode_fet = PR.DSG
                if not was:
                    self.diode_on_since = now
        if want != m.fets:
            got = self.afe.set_fets(want & FET_CHG, want & FET_DSG)
            if got < 0:
                self.afe_ok = False
            else:
                m.fets = got

    def _balance(self, now):
        m = self.meas
        v = self.values
        i = m.current_ma
        rest = v[P.P_REST_CURRENT_MA]
        if i > rest:
            self.charge_seen = now
        else:
            self.charge_seen = held_since(now, self.charge_seen, _CHARGE_HOLD_MS)
        resting_ms = ticks_diff(now, self.rest_since)
        # In CV the charger mostly replaces the bleed current, so the charge
        # current sags while bleeding: "charging" holds for a while after it.
        # A charge held off by over-voltage is the top of charge too: bleeding
        # the high cell is what lets the charge go on.
        pr = self.protection
        over = pr.protect_flags & OVER_VOLTAGE_ROWS
        charging = i >= -rest and (over or ticks_diff(now, self.charge_seen) < _CHARGE_HOLD_MS)
        allowed = (self.afe_ok and (pr.protect_flags & ~(OVER_VOLTAGE_ROWS | SOC_WINDOW_ROWS)) == 0
                   and self.modes.power.mode == WORKING)
        q = pr.q
        hottest = q[PR.Q_TEMP_MAX_DC]
        if q[PR.Q_FET_TEMP_DC] > hottest:
            hottest = q[PR.Q_FET_TEMP_DC]
        mask = self.balancer.update(m, now, charging, resting_ms, allowed, hottest)
        if mask != m.balance_mask and self.afe_ok:
            got = self.afe.set_balancing(mask)
            if got < 0:
                self.afe_ok = False
            else:
                m.balance_mask = got

    # -- registers --------------------------------------------------------------

    def publish(self):
        """Copy this cycle's values into the input-register image."""
        m = self.meas
        ir = self.ir
        pr = self.protection
        ir.set_u16(M.IR_CELL_COUNT, m.cells)
        ir.set_u32(M.IR_PACK_MV, m.pack_mv)
        ir.set_u32(M.IR_CURRENT_MA, m.current_ma)
        ir.set_u16(M.IR_CELL_MIN_MV, m.cell_min_mv)
        ir.set_u16(M.IR_CELL_MAX_MV, m.cell_max_mv)
        ir.set_u16(M.IR_CELL_SPREAD_MV, m.cell_max_mv - m.cell_min_mv)
        ir.set_u16(M.IR_CELL_MIN_NUM, m.cell_min_idx + 1 if m.cells else 0)
        ir.set_u16(M.IR_CELL_MAX_NUM, m.cell_max_idx + 1 if m.cells else 0)
        i = 0
        while i < MAX_CELLS:
            ir.set_u16(M.IR_CELL_MV + i, m.cell_mv[i] if i < m.cells else 0)
            i += 1
        fitted = self.values[P.P_TEMP_SENSORS]
        i = 0
        while i < MAX_TEMPS:
            t = m.temp_dc[i] if i < m.temps and fitted & (1 << i) else M.TEMP_INVALID
            if t == TEMP_OPEN or t == TEMP_SHORT:
                t = M.TEMP_INVALID
            ir.set_u16(M.IR_TEMP_DC + i, t)
            i += 1
        # CTRL2's CHG_ON/DSG_ON are bits 0/1, the same as FET_CHG/FET_DSG
        ir.set_u16(M.IR_FET_FLAGS, m.fets | (M.FET_DIODE if m.fets & self.diode_fet else 0))
        ir.set_u16(M.IR_AFE_STAT, self.afe_stat)
        ir.set_u32(M.IR_PROTECT_FLAGS, pr.protect_flags)
        ir.set_u32(M.IR_WARN_FLAGS, pr.warn_flags)
        ir.set_u16(M.IR_CHG_OFF_REASON, pr.chg_reason)
        ir.set_u16(M.IR_DSG_OFF_REASON, pr.dsg_reason)
        ir.set_u32(M.IR_LATCHED_FLAGS, pr.latched())
        ir.set_u32(M.IR_UPTIME_S, self.uptime_s)
        ir.set_u16(M.IR_MEAS_COUNT, self.meas_count)
        ir.set_u16(M.IR_AFE_CRC_ERRORS, min(self.afe.crc_errors, 0xFFFF))
        ir.set_u16(M.IR_AFE_BUS_ERRORS, min(self.afe.bus_errors, 0xFFFF))
        ir.set_u16(M.IR_BALANCE_MASK, m.balance_mask)
        s = self.soc
        if s is not None and self.soc_started:
            ir.set_u16(M.IR_SOC_DPCT, s.soc_dpct)
            ir.set_u16(M.IR_SOH_DPCT, s.soh_dpct)
            ir.set_u16(M.IR_TTE_MIN, s.tte_min)
            ir.set_u16(M.IR_TTF_MIN, s.ttf_min)
            ir.set_u32(M.IR_REMAINING_MAH, s.remaining_mah)
            ir.set_u32(M.IR_FULL_CAPACITY_MAH, s.full_capacity_mah)
            ir.set_u32(M.IR_REMAINING_DWH, s.remaining_dwh)
            ir.set_u32(M.IR_CYCLES_DC, s.cycles_dc)
            ir.set_u16(M.IR_CC_OFFSET, s.offset_dlsb)
            ir.set_u32(M.IR_DRAWN_MAH, s.drawn_mah)
        ir.set_u32(M.IR_DRAW_UA, self.draw_ua)
        f = pr.protect_flags
        w = 0
        if f & SOC_HIGH_ROWS:
            w |= M.SOC_CHG_STOP
        if f & SOC_LOW_ROWS:
            w |= M.SOC_DSG_STOP
        if pr.warn_flags & SOC_WARN_ROWS:
            w |= M.SOC_LOW_WARN
        if self.values[P.P_STORAGE]:
            w |= M.SOC_STORAGE
        if f & STORAGE_HIGH_ROWS:
            w |= M.SOC_STORAGE_CHG
        if f & STORAGE_LOW_ROWS:
            w |= M.SOC_STORAGE_DSG
        if self.storage_at_target():
            w |= M.SOC_STORAGE_AT
        ir.set_u16(M.IR_SOC_STATE, w)
        self.config.publish_state(self.last_cycle)
        self._publish_save_errors()
        life = self.life
        ir.set_u32(M.IR_LIFE_CHG_MAH, life.chg_mah)
        ir.set_u32(M.IR_LIFE_DSG_MAH, life.dsg_mah)
        ir.set_u32(M.IR_LIFE_ON_S, life.on_s)
        ir.set_u16(M.IR_LIFE_CELL_MAX_MV, life.cell_max_mv)
        ir.set_u16(M.IR_LIFE_CELL_MIN_MV, life.cell_min_mv)
        ir.set_u16(M.IR_LIFE_TEMP_MAX_DC, life.temp_max_dc)
        ir.set_u16(M.IR_LIFE_TEMP_MIN_DC, life.temp_min_dc)
        ir.set_u16(M.IR_LIFE_TRIPS, life.trips)
        ir.set_u16(M.IR_FAULTS, self.faults)
        ir.set_u16(M.IR_FAULT_LAST, self.fault_last)
        self.modes.publish(ir)
        if self.uplink is not None:
            try:
                self.uplink.publish(ir)
            except Exception as e:  # noqa: BLE001 - MQTT is not protection
                self.fault(AT_UPLINK, e)
        if self.events_dirty:
            self._publish_events()

    def _publish_events(self):
        # runs only after an event was logged: may allocate (newest() tuples)
        self.events_dirty = False
        ir = self.ir
        log = self.log
        ir.set_u32(M.IR_EVENT_SEQ, log.next_seq)
        k = 0
        while k < M.EVENT_WINDOW:
            a = M.IR_EVENTS + k * M.EVENT_WORDS
            rec = log.newest(k)
            if rec is None:
                ir.set_u32(a, 0xFFFFFFFF)
                ir.set_u16(a + 2, 0)
                ir.set_u32(a + 3, 0)
                ir.set_u16(a + 5, 0)
                ir.set_u32(a + 6, 0)
            else:
                ir.set_u32(a, rec[0])
                ir.set_u16(a + 2, rec[1])
                ir.set_u32(a + 3, rec[2])
                ir.set_u16(a + 5, rec[3])
                ir.set_u32(a + 6, rec[4])
            k += 1

    # -- the main loop ------------------------------------------------------------

    def step(self):
        """One pass of the main loop: Modbus, then a cycle when one is due.

        Returns how long the board may idle before the next pass.
        """
        b = self.board
        now = b.ticks_ms()
        self.now = now
        self.at = AT_MODBUS
        try:
            self.modbus.poll(now)
        except Exception as e:  # noqa: BLE001 - a request must not stop protection: dropped, counted
            self.fault(AT_MODBUS, e)
            self.modbus.drop()
        else:
            if self.failing:
                self.passed(AT_MODBUS)
        cf = self.config
        if cf.pending or cf.ev_lock or cf.save_failed:  # work for after the reply, a save to retry
            self.at = AT_WRITES
            self._after_writes(now)
        md = self.modes
        self.at = AT_MODES
        md.poll(now)
        up = self.uplink
        if md.power.mode != WORKING:
            if up is not None:
                self.at = AT_UPLINK
                self._uplink_step(now, False)  # the network goes off: close the session
            self.at = AT_MODES
            return 1 if self.modbus.receiving() else md.low_power(now)
        since = ticks_diff(now, self.last_cycle)
        if (b.alert() and since >= _MIN_GAP_MS) or since >= _FALLBACK_MS:
            self.cycle(now)
            since = 0
        if self.modbus.receiving():
            return 1
        if up is not None:
            # after the cycle and the Modbus reply: at most timeout_ms per network call
            self.at = AT_UPLINK
            self._uplink_step(now, True)
        self.at = AT_MODES
        md.poll(now)  # again: a press that began during the cycle is seen before the idle
        wait = _FALLBACK_MS - since
        if up is not None and up.busy() and wait > _NET_BUSY_MS:
            wait = _NET_BUSY_MS
        self.at = AT_LEDS
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
            self.fault(AT_UPLINK, e)
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
        if self.failing:
            self.passed(AT_UPLINK)

    def fets_and_bleeding_off(self):
        """Low power and sleep: both FETs and every bleed resistor off.
        True when the chip acknowledged the FETs-off write."""
        m = self.meas
        ok = self.afe.fets_off()
        if ok:
            m.fets = 0
        if m.balance_mask and self.afe.set_balancing(0) >= 0:
            m.balance_mask = 0
        return ok


def run(board, prm=None):
    app = App(board, prm)
    app.start()
    while True:
        board.idle(app.step())
