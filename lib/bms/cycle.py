"""The measurement and control cycle, once per AFE window: measure, then
the SOC, the protection table, the FETs, balancing, and the register image.
It can run alone (tests build it with a board and the parameters); the App
(bms.app) wires it to the Modbus slave, the modes and the network.

It also owns what the cycle's parts share: the AFE driver and this cycle's
measurements, the protection table, the SOC estimator and the lifetime
counters with their stores, the uptime, and the record of non-critical
paths that fail (fault(), passed(), and `at`, where the firmware is, for
the guard's crash report, bms.start).
"""
from micropython import const

from bms import config as CF
from bms import params as P
from bms import protection as PR
from bms import publish as PB
from bms import regmap as M
from bms import switching as SW
from bms.afe import (READ_NOT_CLEARED, READ_OK, ST_DEVICE, ST_FAULTS, ST_NEW_CC, ST_OCD, ST_OV, ST_OVRD, ST_SCD,
                     ST_STOPPED, ST_UV, TEMP_OPEN, TEMP_SHORT)
from bms.balancing import Balancer
from bms.boards import DRAW_AFE_SHIP_UA, DRAW_AFE_UA, DRAW_AWAKE_UA, DRAW_DEEP_SLEEP_UA, DRAW_LIGHT_SLEEP_UA, DRAW_NETWORK_UA
from bms.events import (AT_BALANCE, AT_FLASH, AT_MEASURE, AT_MODES, AT_PROTECT, AT_PUBLISH, AT_SOC, AT_START, AT_SWITCH,
                        EV_FAULT, EV_SOC_START, KIND_MEMORY, KIND_OS, KIND_OTHER)
from bms.gen.packed import OVER_VOLTAGE_ROWS, UNDER_VOLTAGE_ROWS
from bms.lifetime import Lifetime
from bms.measurements import Measurements
from bms.power import WORKING
from bms.soc import STATE_SIZE, Soc
from bms.store import FAIL_ERROR, FAIL_MEMORY, Store
from bms.ticks import ticks_diff

_STALE_MS = const(600)  # no new coulomb-counter window for this long: the measurement is stale
_LOCKOUT_RESETS = const(5)  # unplanned resets in a row, each within _LOCKOUT_CLEAN_S of the boot before
_LOCKOUT_CLEAN_S = const(600)
_CELL_MIN_PLAUSIBLE_MV = const(500)
_CELL_MAX_PLAUSIBLE_MV = const(5000)
_NO_TEMP = const(-32768)
_STORE_NEAR_DPCT = const(10)  # storage mode: within 1 % of storage_soc is there (sleep may follow)
_HW_OCC_DELAY_MS = const(320)  # the chip's charge over-current delay (its longest is ~420 ms)
_HW_TEMP_MARGIN_DC = const(100)  # the chip's temperature limits this far outside the firmware's
SOC_STORE = "soc"  # A/B records soc.a, soc.b (bms.store)
LIFE_STORE = "life"  # lifetime counters, saved with the SOC state
SOC_FILE_03 = "soc.bin"  # where firmware 0.3 kept it: read once if no record exists
_SOC_SAVE_MS = const(600000)  # the SOC state goes to flash every 10 minutes


def _temp_dc(c):
    """A chip's applied temperature limit (whole degC, None: it has none) as
    its input register (0.1 degC, M.HW_TEMP_NONE)."""
    return M.HW_TEMP_NONE if c is None else c * 10


class Cycle:
    def __init__(self, board, prm, ir, log):
        """prm: the loaded parameters; ir: the input-register image; log:
        the event log. The App sets config, modes and uplink once they exist."""
        self.board = board
        self.params = prm
        v = self.values = prm.values
        from bms.afe.chips import open_afe, thermistor_inputs  # boot-only: the App lets it go

        self.meas = Measurements(thermistor_inputs(v[P.P_AFE_TYPE], v[P.P_AFE_GROUPS] or 1))
        self.afe = open_afe(board.i2c, v[P.P_CELL_CHANNELS], v[P.P_SHUNT_UOHM], v[P.P_AFE_ADDR], v[P.P_AFE_GROUPS],
                            v[P.P_AFE_TYPE])
        self.ir = ir
        self.log = log
        self.config = None  # bms.config.Config (its publish_state, its retried saves)
        self.modes = None  # bms.modes.Modes (the power mode; after_cycle)
        self.uplink = None  # bms.uplink.Uplink, when net.cfg and net_enable ask for it
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
        self.configure_live()
        self.afe_ok = False
        self.afe_stat = 0
        self.evaluated = False  # no protection pass on real measurements yet since the MCU started
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
        self.diode_fet = 0  # CHG or DSG: on only to spare its body diode (bms.switching)
        self.diode_held = 0  # CHG or DSG: not closed for its diode until diode_held_since + its hold
        self.diode_held_since = now
        self.diode_on_since = now  # when diode_fet last went on
        self.charge_seen = now - SW.CHARGE_HOLD_MS
        # the board's own draw (bms.boards DRAW_): this interval's figure, and
        # the deep sleep before this boot, counted once the SOC has started
        self.draw_ua = DRAW_AWAKE_UA + DRAW_AFE_UA
        self.slept_s = 0
        self.load_gone_since = now
        self.at = AT_START  # AT_: where the firmware is, for a crash report
        # non-critical paths that caught a failure (fault()): how many, the
        # last one, and a bit per AT_ place failing now (logged once per streak)
        self.faults = 0
        self.fault_last = 0
        self.failing = 0
        self.log_errors = 0  # the event log's write_errors already counted

    def configure_live(self):
        """The settings that take effect at once, at boot and after a write:
        balancing, and the SOC estimator's tuning and OCV table."""
        v = self.values
        self.balancer.configure(v[P.P_BAL_START_MV], v[P.P_BAL_DIFF_MV], v[P.P_BAL_AT_REST],
                                v[P.P_BAL_MIN_IDLE_MS], v[P.P_BAL_MAX_CELLS], v[P.P_BAL_MAX_TEMP_DC])
        s = self.soc
        if s is None:
            return
        s.configure_values(v)
        # all zero: the chemistry's table (paramcheck allows nothing between)
        table = [v[P.P_OCV_0_MV + k] for k in range(P.OCV_POINTS)] if v[P.P_OCV_0_MV] else None
        try:
            s.set_ocv_table(table)
        except ValueError:
            self.ocv_rejected = True  # logged at start(); the chemistry's table stays

    def soc_state(self):
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
        self.publish_save_errors()

    def publish_save_errors(self):
        n = self.params.save_errors() + self.soc_store.write_errors + self.life_store.write_errors
        self.ir.set_u16(M.IR_SAVE_ERRORS, n if n < 0xFFFF else 0xFFFF)

    def track_soc(self, now, cc, dt):
        s = self.soc
        m = self.meas
        if not self.soc_started:
            if cc:
                s.start(now, m, self.soc_state())
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

    def soc_failed(self, e):
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

    # -- the event log (the protection table logs through this) -------------


    def append(self, code, value, time_s):
        self.log.append(code, value, time_s)
        self.events_dirty = True
        if 0 < code <= PR.ROW_COUNT and self.protection.level(code - 1) != PR.WARN and self.life.trips < 0xFFFF:
            self.life.trips += 1

    # -- the AFE -------------------------------------------------------------


    def bring_up_afe(self):
        afe = self.afe
        if not afe.configure():
            return False
        if not self.configured:
            return True
        return self.arm_backstop()

    def arm_backstop(self):
        """The chip's own protection is the backstop should this MCU hang:
        set outside the firmware's limits so the firmware acts first."""
        afe = self.afe
        v = self.values
        # a chip with the comparators also guards charge current and the
        # temperatures, from the firmware's own limits: OCC at 1.5x chg_oc_ma,
        # the temperatures _HW_TEMP_MARGIN_DC beyond theirs
        ok = afe.set_protection(
            v[P.P_HW_OV_MV], v[P.P_HW_OV_DELAY_S], v[P.P_HW_UV_MV], v[P.P_HW_UV_DELAY_S],
            v[P.P_HW_OCD_MA], v[P.P_HW_OCD_DELAY_MS], v[P.P_HW_SCD_MA], v[P.P_HW_SCD_DELAY_US],
            v[P.P_CHG_OC_MA] * 3 // 2, _HW_OCC_DELAY_MS)
        m = _HW_TEMP_MARGIN_DC
        ok = afe.set_temp_protection(v[P.P_CHG_OT_DC] + m, v[P.P_DSG_OT_DC] + m,
                                     v[P.P_CHG_UT_DC] - m, v[P.P_DSG_UT_DC] - m) and ok
        ir = self.ir
        ir.set_u16(M.IR_HW_OV_MV, afe.applied_ov_mv)
        ir.set_u16(M.IR_HW_UV_MV, afe.applied_uv_mv)
        ir.set_u32(M.IR_HW_OCD_MA, afe.applied_ocd_ma)
        ir.set_u16(M.IR_HW_OCD_DELAY_MS, afe.applied_ocd_delay_ms)
        ir.set_u32(M.IR_HW_SCD_MA, afe.applied_scd_ma)
        ir.set_u16(M.IR_HW_SCD_DELAY_US, afe.applied_scd_delay_us)
        ir.set_u32(M.IR_HW_OCC_MA, afe.applied_occ_ma)
        ir.set_u16(M.IR_HW_OCC_DELAY_MS, afe.applied_occ_delay_ms)
        ir.set_u16(M.IR_HW_OTC_DC, _temp_dc(afe.applied_otc_c))
        ir.set_u16(M.IR_HW_OTD_DC, _temp_dc(afe.applied_otd_c))
        ir.set_u16(M.IR_HW_UTC_DC, _temp_dc(afe.applied_utc_c))
        ir.set_u16(M.IR_HW_UTD_DC, _temp_dc(afe.applied_utd_c))
        return ok

    # -- the cycle ------------------------------------------------------------


    def run(self, now):
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
            self.afe_ok = self.bring_up_afe()
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
        self.at = AT_SOC
        if self.soc is not None and self.afe_ok and m.cells:
            try:
                self.track_soc(now, stat & ST_NEW_CC, dt)
            except Exception as e:  # noqa: BLE001 - not protection: counted, restarted (_soc_failed)
                self.soc_failed(e)
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
                self.soc_failed(e)
        self.at = AT_SWITCH
        SW.latch_release(self, now)
        SW.track_rest(self, now)
        SW.switch_fets(self, now)
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
        SW.balance(self, now)
        self.at = AT_PUBLISH
        PB.publish(self)
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
