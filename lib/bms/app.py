"""The application: one measurement and control cycle per AFE window, and
the Modbus slave serviced in between.

The board is the only thing that touches hardware; everything here is
plain integer Python that runs on MicroPython and CPython alike.
"""
from micropython import const

from bms import bq769x0 as R
from bms import config as C
from bms import regmap as M
from bms.afe_bq769x0 import TEMP_OPEN, TEMP_SHORT, Bq769x0
from bms.measurements import MAX_CELLS, MAX_TEMPS, Measurements
from bms.modbus_rtu import ModbusSlave
from bms.regimage import RegisterImage
from bms.ticks import ticks_diff

PERIOD_MS = const(250)  # the AFE's coulomb-counter window
_FALLBACK_MS = const(300)  # cycle anyway when ALERT stays quiet this long
_MIN_GAP_MS = const(50)  # ALERT held high (a stuck flag) must not spin the loop
_STALE_MS = const(600)  # no CC_READY for this long: the measurement is stale
_TRIP_HOLD_MS = const(10000)  # a FET the AFE switched off stays off this long
_CELL_MIN_PLAUSIBLE_MV = const(500)
_CELL_MAX_PLAUSIBLE_MV = const(5000)
_CHG_TEMP_MIN_DC = const(0)
_CHG_TEMP_MAX_DC = const(450)
_DSG_TEMP_MIN_DC = const(-200)
_DSG_TEMP_MAX_DC = const(600)
_AFE_TRIPS = const(0x1F)  # SYS_STAT OVRD_ALERT | UV | OV | SCD | OCD


class App:
    def __init__(self, board):
        self.board = board
        self.cfg = cfg = C.load(board.storage_dir)
        groups = cfg.afe_groups if cfg.afe_groups else 1
        self.meas = Measurements(groups)
        self.afe = Bq769x0(board.i2c, cfg.cell_channels, cfg.shunt_uohm, cfg.afe_addr)
        self.ir = RegisterImage(M.INPUT_REGS, M.IR_SIZE)
        self.hr = RegisterImage(M.HOLDING_REGS, M.HR_SIZE)
        self.modbus = ModbusSlave(board.serial, self, cfg.modbus_address, cfg.modbus_baud)
        self.configured = cfg.configured()
        self.faults = 0 if self.configured else M.FAULT_UNCONFIGURED
        self.afe_ok = False
        self.afe_stat = 0
        self.meas_count = 0
        self.uptime_ms = 0
        now = board.ticks_ms()
        self.last_cycle = now
        self.last_cc = now
        # guard state (until the protection table takes over)
        self.chg_block = False
        self.dsg_block = False
        self.chg_hold_from = now
        self.dsg_hold_from = now
        self.chg_held = False
        self.dsg_held = False

    # Modbus register bank
    def read_registers(self, fc, addr, count, out, off):
        img = self.ir if fc == 4 else self.hr
        return img.read_into(addr, count, out, off)

    def start(self):
        self.board.set_baud(self.cfg.modbus_baud)
        self._publish_config()
        self.afe_ok = self._bring_up_afe()

    def _bring_up_afe(self):
        afe = self.afe
        if not afe.configure():
            return False
        if not self.configured:
            return True
        # The chip's own protection is the backstop should this MCU hang:
        # set outside the firmware's limits so the firmware acts first.
        lim = C.CELL_LIMITS_MV[self.cfg.chemistry]
        cap = self.cfg.capacity_mah
        return afe.set_protection(
            lim[0] + 50, 2, lim[2] - 100, 4,
            2 * cap, 320, 4 * cap, 200)

    def _publish_config(self):
        cfg = self.cfg
        hr = self.hr
        hr.set_u16(M.HR_CHEMISTRY, cfg.chemistry)
        hr.set_u16(M.HR_CELL_CHANNELS, cfg.cell_channels)
        hr.set_u32(M.HR_CAPACITY_MAH, cfg.capacity_mah)
        hr.set_u16(M.HR_SHUNT_UOHM, cfg.shunt_uohm)
        hr.set_u16(M.HR_AFE_GROUPS, cfg.afe_groups)
        hr.set_u16(M.HR_MODBUS_ADDRESS, cfg.modbus_address)
        hr.set_u32(M.HR_MODBUS_BAUD, cfg.modbus_baud)

    def cycle(self, now):
        """Measure, judge, switch, publish. Allocation-free when the AFE is healthy."""
        m = self.meas
        afe = self.afe
        self.uptime_ms += ticks_diff(now, self.last_cycle)
        self.last_cycle = now
        faults = 0 if self.configured else M.FAULT_UNCONFIGURED
        stat = 0
        if not self.afe_ok:
            # after a bus failure or a chip reset: configure it again
            self.afe_ok = self._bring_up_afe()
        if not self.afe_ok:
            faults |= M.FAULT_AFE_COMM
        elif not afe.read_status(m):
            faults |= M.FAULT_AFE_COMM
            self.afe_ok = False
        else:
            stat = m.stat
            if stat & R.STAT_DEVICE_XREADY:
                # the chip reset: its FETs, balancing and settings are gone
                faults |= M.FAULT_AFE_RESET
                self.afe_ok = False
            cc = stat & R.STAT_CC_READY
            if not afe.read_measurements(m, cc):
                faults |= M.FAULT_AFE_COMM
                self.afe_ok = False
            else:
                if cc:
                    self.last_cc = now
                    self.meas_count = (self.meas_count + 1) & 0xFFFF
                m.update_extremes()
                clear = stat & (R.STAT_CC_READY | _AFE_TRIPS)
                if clear and not afe.clear_status(clear):
                    faults |= M.FAULT_AFE_COMM
                    self.afe_ok = False
        if stat & _AFE_TRIPS:
            faults |= M.FAULT_AFE_TRIP
            if stat & (R.STAT_OV | R.STAT_OVRD_ALERT):
                self.chg_held = True
                self.chg_hold_from = now
            if stat & (R.STAT_UV | R.STAT_SCD | R.STAT_OCD | R.STAT_OVRD_ALERT):
                self.dsg_held = True
                self.dsg_hold_from = now
        self.afe_stat = stat & R.STAT_FAULTS
        if ticks_diff(now, self.last_cc) > _STALE_MS:
            faults |= M.FAULT_AFE_STALE
        faults |= self._sensor_faults()
        self.faults = faults
        self._guard(now)
        self.publish()

    def _sensor_faults(self):
        m = self.meas
        f = 0
        i = 0
        while i < m.temps:
            t = m.temp_dc[i]
            if t == TEMP_OPEN:
                f |= M.FAULT_TEMP_OPEN
            elif t == TEMP_SHORT:
                f |= M.FAULT_TEMP_SHORT
            i += 1
        if m.cells and (m.cell_min_mv < _CELL_MIN_PLAUSIBLE_MV or m.cell_max_mv > _CELL_MAX_PLAUSIBLE_MV):
            f |= M.FAULT_CELL_IMPLAUSIBLE
        return f

    def _temps_within(self, lo_dc, hi_dc):
        m = self.meas
        i = 0
        while i < m.temps:
            t = m.temp_dc[i]
            if t < lo_dc or t > hi_dc:
                return False
            i += 1
        return True

    def _guard(self, now):
        """Decide the FETs. Any fault means both off (fail-safe).

        A first guard with fixed per-chemistry limits and hysteresis; the
        declarative protection table replaces it.
        """
        m = self.meas
        want = 0
        if self.faults == 0 and self.afe_ok:
            lim = C.CELL_LIMITS_MV[self.cfg.chemistry]
            if m.cell_max_mv >= lim[0]:
                self.chg_block = True
            elif m.cell_max_mv <= lim[1]:
                self.chg_block = False
            if m.cell_min_mv <= lim[2]:
                self.dsg_block = True
            elif m.cell_min_mv >= lim[3]:
                self.dsg_block = False
            if self.chg_held and ticks_diff(now, self.chg_hold_from) >= _TRIP_HOLD_MS:
                self.chg_held = False
            if self.dsg_held and ticks_diff(now, self.dsg_hold_from) >= _TRIP_HOLD_MS:
                self.dsg_held = False
            if not (self.chg_block or self.chg_held) and self._temps_within(_CHG_TEMP_MIN_DC, _CHG_TEMP_MAX_DC):
                want |= R.CTRL2_CHG_ON
            if not (self.dsg_block or self.dsg_held) and self._temps_within(_DSG_TEMP_MIN_DC, _DSG_TEMP_MAX_DC):
                want |= R.CTRL2_DSG_ON
        if want != m.fets and self.afe_ok:
            got = self.afe.set_fets(want & R.CTRL2_CHG_ON, want & R.CTRL2_DSG_ON)
            if got < 0:
                self.faults |= M.FAULT_AFE_COMM
                self.afe_ok = False
            else:
                m.fets = got

    def publish(self):
        """Copy this cycle's values into the input-register image."""
        m = self.meas
        ir = self.ir
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
        i = 0
        while i < MAX_TEMPS:
            t = m.temp_dc[i] if i < m.temps else M.TEMP_INVALID
            if t == TEMP_OPEN or t == TEMP_SHORT:
                t = M.TEMP_INVALID
            ir.set_u16(M.IR_TEMP_DC + i, t)
            i += 1
        # CTRL2's CHG_ON/DSG_ON are bits 0/1, the same as FET_CHG/FET_DSG
        ir.set_u16(M.IR_FET_FLAGS, m.fets)
        ir.set_u16(M.IR_AFE_STAT, self.afe_stat)
        ir.set_u16(M.IR_FAULT_FLAGS, self.faults)
        ir.set_u32(M.IR_UPTIME_S, self.uptime_ms // 1000)
        ir.set_u16(M.IR_MEAS_COUNT, self.meas_count)
        ir.set_u16(M.IR_AFE_CRC_ERRORS, min(self.afe.crc_errors, 0xFFFF))
        ir.set_u16(M.IR_AFE_BUS_ERRORS, min(self.afe.bus_errors, 0xFFFF))
        ir.set_u16(M.IR_BALANCE_MASK, m.balance_mask)

    def step(self):
        """One pass of the main loop: Modbus, then a cycle when one is due.

        Returns how long the board may idle before the next pass.
        """
        b = self.board
        now = b.ticks_ms()
        self.modbus.poll(now)
        since = ticks_diff(now, self.last_cycle)
        if (b.alert() and since >= _MIN_GAP_MS) or since >= _FALLBACK_MS:
            self.cycle(now)
            since = 0
        if self.modbus.receiving():
            return 1
        wait = _FALLBACK_MS - since
        return wait if wait > 1 else 1


def run(board):
    app = App(board)
    app.start()
    while True:
        board.idle(app.step())
