"""Driver for the TI bq769x0 analog front end (bq76920/30/40); its register
header is bms.afe.bq769x0.regs (shared with the simulator's model of the
chip, tools/bms_sim/afe/bq769x0.py).

Takes an I2C bus with MicroPython's `machine.I2C` API in its constructor
(readfrom_mem_into, writeto_mem), so the same code drives the real chip on
the ESP32 and the register-level simulator on the host. Every transfer goes
through preallocated buffers; CRC errors and NACKs are retried a bounded
number of times, counted, and then reported by a False return, never
swallowed. Values written to the chip are read back and the driver reports
what the chip actually applied.
"""
from micropython import const

from bms.afe import (READ_NO_DATA, READ_NO_STATUS, READ_NOT_CLEARED, READ_OK, ST_STOPPED, TEMP_OPEN, TEMP_SHORT,
                     cell_count, cell_inputs, cells_to_inputs, i2c_read, i2c_write, inputs_to_cells)
from bms.afe.bq769x0 import regs as R
from bms.crc import crc8_byte

_BLOCK_FIRST = const(0x0C)  # VC1_HI .. CC_LO in one auto-increment read
_BLOCK_REGS = const(40)
_STATUS_REGS = const(6)  # SYS_STAT, CELLBAL1..3, SYS_CTRL1, SYS_CTRL2
_TRIPS = const(0x1F)  # SYS_STAT OVRD_ALERT | UV | OV | SCD | OCD
_PROT_REGS = const(5)  # PROTECT1..3, OV_TRIP, UV_TRIP
_OFF_BAT = const(0x2A - 0x0C)
_OFF_TS = const(0x2C - 0x0C)
_OFF_CC = const(0x32 - 0x0C)

# Thermistor: TS ADC code at -40, -35, ..., 125 degC for the board's NTC
# (10 kOhm at 25 degC, beta 3435) on the chip's 10 kOhm pull-up to 3.3 V at
# 382 uV/LSB. tests/firmware/test_afe_driver.py recomputes it from the formula.
TS_TABLE_T0_DC = const(-400)
TS_TABLE_STEP_DC = const(50)
TS_CODES = (
    8304, 8189, 8045, 7867, 7652, 7398, 7104, 6773, 6407, 6013, 5598, 5172,
    4742, 4319, 3910, 3521, 3157, 2820, 2512, 2234, 1984, 1760, 1562, 1386,
    1231, 1095, 975, 869, 776, 694, 622, 559, 503, 453,
)
TS_OPEN_CODE = const(8500)  # above: V > 3.25 V, the NTC is missing or open
TS_SHORT_CODE = const(60)  # below: V < 23 mV, the NTC input is shorted


def div_round(n, d):
    """n / d rounded to nearest, halves away from zero; d > 0."""
    if n >= 0:
        return (n + (d >> 1)) // d
    return -((-n + (d >> 1)) // d)


def adc_to_mv(gain_uv, offset_mv, adc):
    """A 14-bit cell ADC code to mV, rounded: GAIN x ADC / 1000 + OFFSET."""
    return (gain_uv * adc + 500) // 1000 + offset_mv


def ts_code_to_dc(code):
    """Thermistor ADC code to 0.1 degC, or TEMP_OPEN / TEMP_SHORT."""
    if code >= TS_OPEN_CODE:
        return TEMP_OPEN
    if code <= TS_SHORT_CODE:
        return TEMP_SHORT
    t = TS_CODES
    if code >= t[0]:
        return TS_TABLE_T0_DC
    n = len(t)
    if code <= t[n - 1]:
        return TS_TABLE_T0_DC + (n - 1) * TS_TABLE_STEP_DC
    i = 1
    while t[i] > code:
        i += 1
    # codes fall with temperature: interpolate between t[i-1] > code >= t[i]
    hi = t[i - 1]
    lo = t[i]
    return TS_TABLE_T0_DC + (i - 1) * TS_TABLE_STEP_DC + div_round((hi - code) * TS_TABLE_STEP_DC, hi - lo)


def _largest_at_most(table, value):
    """Index of the largest entry <= value (0 if value is below them all)."""
    best = 0
    i = 0
    n = len(table)
    while i < n:
        if table[i] <= value:
            best = i
        i += 1
    return best


class Bq769x0:
    """One bq769x0 on an I2C bus.

    cell_channels: bit n = VC input n+1 has a cell (bms.afe.default_cell_channels).
    crc: True, False, or None to detect it at configure().
    """

    def __init__(self, i2c, cell_channels, shunt_uohm, addr=R.I2C_ADDR, crc=None, groups=0):
        self.i2c = i2c
        self.addr = addr
        self.cell_channels = cell_channels
        self.shunt_uohm = shunt_uohm
        self.crc = crc
        self.gain_uv = 0
        self.offset_mv = 0
        self.crc_errors = 0
        self.bus_errors = 0
        # trip flags configure() found set before it cleared them: the next
        # read_status() reports them, so a trip during a bus hiccup still counts
        self.held_trips = 0
        self._chan = cell_inputs(cell_channels)  # VC input of each cell
        self.cells = cell_count(cell_channels)
        # the family member (its group count): the name the Modbus device identification gives
        self.model = R.MODELS[groups - 1][0] if 0 < groups <= len(R.MODELS) else "bq769x0"
        # wire buffers (data + CRC per byte); the no-CRC case uses the same
        # buffers with half the length via a memoryview made once
        self._blk = bytearray(2 * _BLOCK_REGS)
        self._st = bytearray(2 * _STATUS_REGS)
        self._prot = bytearray(2 * _PROT_REGS)
        self._one = bytearray(2)
        self._blk_nc = memoryview(self._blk)[:_BLOCK_REGS]
        self._st_nc = memoryview(self._st)[:_STATUS_REGS]
        self._prot_nc = memoryview(self._prot)[:_PROT_REGS]
        self._one_nc = memoryview(self._one)[:1]
        self._wbuf = bytearray(2 * _PROT_REGS)
        self._wbuf_nc = memoryview(self._wbuf)[:_PROT_REGS]
        self._wbuf3 = memoryview(self._wbuf)[:6]  # CELLBAL1..3
        self._wbuf3_nc = memoryview(self._wbuf)[:3]
        # values the chip applied (read back after set_protection)
        self.applied_ov_mv = 0
        self.applied_uv_mv = 0
        self.applied_ov_delay_s = 0
        self.applied_uv_delay_s = 0
        self.applied_ocd_ma = 0
        self.applied_ocd_delay_ms = 0
        self.applied_scd_ma = 0
        self.applied_scd_delay_us = 0
        self.applied_occ_ma = self.applied_occ_delay_ms = 0  # no such comparator
        self.applied_otc_c = self.applied_otd_c = self.applied_utc_c = self.applied_utd_c = None

    # -- low level --------------------------------------------------------

    def _read(self, reg, buf, nregs):
        """Read nregs registers from reg into buf (wire format); True on success."""
        # the first CRC covers the read address byte, then data0
        return i2c_read(self, reg, buf, nregs, crc8_byte(0, (self.addr << 1) | 1) if self.crc else 0)

    def _data(self, buf, i):
        """Register i of a read buffer, with or without interleaved CRC."""
        return buf[2 * i] if self.crc else buf[i]

    def _word(self, buf, i):
        if self.crc:
            return (buf[2 * i] << 8) | buf[2 * i + 2]
        return (buf[i] << 8) | buf[i + 1]

    def _write_block(self, reg, nregs):
        """Write nregs (5 or 3) data bytes, staged at even offsets of _wbuf, from reg on."""
        w = self._wbuf
        addr = self.addr
        if self.crc:
            w[1] = crc8_byte(crc8_byte(crc8_byte(0, addr << 1), reg), w[0])
            i = 1
            while i < nregs:
                w[2 * i + 1] = crc8_byte(0, w[2 * i])
                i += 1
            out = w if nregs == _PROT_REGS else self._wbuf3
        else:
            i = 0
            while i < nregs:
                w[i] = w[2 * i]
                i += 1
            out = self._wbuf_nc if nregs == _PROT_REGS else self._wbuf3_nc
        return self._write(reg, out)

    def write_reg(self, reg, value):
        o = self._one
        o[0] = value
        addr = self.addr
        if self.crc:
            o[1] = crc8_byte(crc8_byte(crc8_byte(0, addr << 1), reg), value)
            out = o
        else:
            out = self._one_nc
        return self._write(reg, out)

    def _write(self, reg, wire):
        """Send prepared wire bytes, retrying a NACK; True when acknowledged."""
        return i2c_write(self, reg, wire)

    def read_reg(self, reg):
        """One register's value, or -1 when the chip cannot be read."""
        buf = self._one if self.crc else self._one_nc
        if not self._read(reg, buf, 1):
            return -1
        return buf[0]

    # -- set-up -----------------------------------------------------------

    def _detect_crc(self):
        """Find whether this part speaks CRC: write CC_CFG and read it back."""
        for mode in (True, False):
            self.crc = mode
            if self.write_reg(R.CC_CFG, R.CC_CFG_VALUE) and self.read_reg(R.CC_CFG) == R.CC_CFG_VALUE:
                return True
        self.crc = None
        return False

    def configure(self):
        """Bring the chip up (after power-on or a DEVICE_XREADY reset).

        CC_CFG = 0x19, factory gain/offset read, ADC on with external
        thermistors, coulomb counter continuous, FETs off, flags cleared
        (the trip flags among them read first and kept in held_trips).
        Returns True when every step was acknowledged and read back.
        """
        if self.crc is None:
            if not self._detect_crc():
                return False
        elif not self.write_reg(R.CC_CFG, R.CC_CFG_VALUE):
            return False
        g1 = self.read_reg(R.ADCGAIN1)
        off = self.read_reg(R.ADCOFFSET)
        g2 = self.read_reg(R.ADCGAIN2)
        if g1 < 0 or off < 0 or g2 < 0:
            return False
        self.gain_uv = R.ADC_GAIN_BASE_UV + (((g1 & 0x0C) << 1) | ((g2 & 0xE0) >> 5))
        self.offset_mv = off - 256 if off & 0x80 else off
        if not self.write_reg(R.SYS_CTRL1, R.CTRL1_ADC_EN | R.CTRL1_TEMP_SEL):
            return False
        if not self.write_reg(R.SYS_CTRL2, R.CTRL2_CC_EN):
            return False
        st = self.read_reg(R.SYS_STAT)
        if st < 0:
            return False
        self.held_trips |= st & _TRIPS
        if not self.write_reg(R.SYS_STAT, 0xFF):
            return False
        return self.read_reg(R.CC_CFG) == R.CC_CFG_VALUE

    def set_temp_protection(self, otc_dc, otd_dc, utc_dc, utd_dc):
        """The bq769x0 has no temperature comparator: nothing to set, and
        nothing applied (applied_otc_c ... None)."""
        return True

    def set_protection(self, ov_mv, ov_delay_s, uv_mv, uv_delay_s,
                       ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us, occ_ma=0, occ_delay_ms=0):
        """Program the chip's own protection (the backstop if the MCU hangs).
        It has no charge over-current comparator: occ_ma is not applied
        (applied_occ_ma stays 0).

        Each threshold is mapped to the chip's nearest setting on the safe
        side (OV at or below, UV at or above, OCD/SCD at or below the
        requested current), written, read back, and the applied values are
        left in the applied_* attributes. Returns False on a bus failure or
        when the chip holds other settings than those written.
        """
        gain = self.gain_uv
        off = self.offset_mv
        shunt = self.shunt_uohm
        # OV: 14-bit trip code 10-OV_T-1000; round the code down
        code = (ov_mv - off) * 1000 // gain
        ov_t = (code - R.OV_TRIP_BASE) >> 4
        ov_t = 0 if ov_t < 0 else (255 if ov_t > 255 else ov_t)
        # UV: 14-bit trip code 01-UV_T-0000; round the code up
        code = -((-(uv_mv - off) * 1000) // gain)
        uv_t = -((-(code - R.UV_TRIP_BASE)) >> 4)
        uv_t = 0 if uv_t < 0 else (255 if uv_t > 255 else uv_t)
        # OCD/SCD thresholds are shunt voltages: uV = mA * uOhm / 1000
        scd_uv = scd_ma * shunt // 1000
        ocd_uv = ocd_ma * shunt // 1000
        rsns = 1 if (scd_uv >= 44000 and ocd_uv >= 17000) else 0
        scd_tab = R.SCD_THRESH_MV_RSNS1 if rsns else R.SCD_THRESH_MV_RSNS0
        ocd_tab = R.OCD_THRESH_MV_RSNS1 if rsns else R.OCD_THRESH_MV_RSNS0
        scd_i = _largest_at_most(scd_tab, scd_uv // 1000)
        ocd_i = _largest_at_most(ocd_tab, ocd_uv // 1000)
        scd_d = _largest_at_most(R.SCD_DELAY_US, scd_delay_us)
        ocd_d = _largest_at_most(R.OCD_DELAY_MS, ocd_delay_ms)
        ov_d = _largest_at_most(R.OV_DELAY_S, ov_delay_s)
        uv_d = _largest_at_most(R.UV_DELAY_S, uv_delay_s)
        p1 = (R.PROT1_RSNS if rsns else 0) | (scd_d << 3) | scd_i
        p2 = (ocd_d << 4) | ocd_i
        p3 = (uv_d << 6) | (ov_d << 4)
        w = self._wbuf
        w[0] = p1
        w[2] = p2
        w[4] = p3
        w[6] = ov_t
        w[8] = uv_t
        if not self._write_block(R.PROTECT1, _PROT_REGS):
            return False
        buf = self._prot if self.crc else self._prot_nc
        if not self._read(R.PROTECT1, buf, _PROT_REGS):
            return False
        self._decode_protection(buf)
        # the backstop is what the chip holds: a write it acknowledged but did
        # not take (a glitch, a part that is not what it seems) is a failure;
        # the reserved bits (PROTECT1 6:5, PROTECT2 7, PROTECT3 3:0) are not compared
        return ((self._data(buf, 0) ^ p1) & 0x9F == 0 and (self._data(buf, 1) ^ p2) & 0x7F == 0
                and (self._data(buf, 2) ^ p3) & 0xF0 == 0 and self._data(buf, 3) == ov_t
                and self._data(buf, 4) == uv_t)

    def _decode_protection(self, buf):
        p1 = self._data(buf, 0)
        p2 = self._data(buf, 1)
        p3 = self._data(buf, 2)
        ov_t = self._data(buf, 3)
        uv_t = self._data(buf, 4)
        gain = self.gain_uv
        off = self.offset_mv
        shunt = self.shunt_uohm
        self.applied_ov_mv = adc_to_mv(gain, off, R.OV_TRIP_BASE | (ov_t << 4))
        self.applied_uv_mv = adc_to_mv(gain, off, R.UV_TRIP_BASE | (uv_t << 4))
        self.applied_ov_delay_s = R.OV_DELAY_S[(p3 >> 4) & 3]
        self.applied_uv_delay_s = R.UV_DELAY_S[(p3 >> 6) & 3]
        rsns = p1 & R.PROT1_RSNS
        scd_tab = R.SCD_THRESH_MV_RSNS1 if rsns else R.SCD_THRESH_MV_RSNS0
        ocd_tab = R.OCD_THRESH_MV_RSNS1 if rsns else R.OCD_THRESH_MV_RSNS0
        self.applied_scd_ma = scd_tab[p1 & 7] * 1000000 // shunt
        self.applied_scd_delay_us = R.SCD_DELAY_US[(p1 >> 3) & 3]
        self.applied_ocd_ma = ocd_tab[p2 & 15] * 1000000 // shunt
        self.applied_ocd_delay_ms = R.OCD_DELAY_MS[(p2 >> 4) & 7]

    # -- every cycle ------------------------------------------------------

    def read(self, meas):
        """One cycle (bms.afe): status, then every measurement, then the
        flags reported cleared. A READ_ result; meas.status is 0 when the
        status could not be read."""
        if not self.read_status(meas):
            meas.status = 0
            return READ_NO_STATUS
        stat = meas.status
        if not self.read_measurements(meas, stat & R.STAT_CC_READY):
            return READ_NO_DATA
        clear = stat & (R.STAT_CC_READY | _TRIPS)
        if clear and not self.clear_status(clear):
            return READ_NOT_CLEARED
        return READ_OK

    def read_status(self, meas):
        """SYS_STAT, balancing and FET bits into meas; False on a bus failure.

        The firmware's status bits (bms.afe ST_) are SYS_STAT's own, with
        ST_STOPPED for an ADC the chip has turned off."""
        buf = self._st if self.crc else self._st_nc
        if not self._read(R.SYS_STAT, buf, _STATUS_REGS):
            return False
        ctrl1 = self._data(buf, 4)
        meas.status = self._data(buf, 0) | self.held_trips | (0 if ctrl1 & R.CTRL1_ADC_EN else ST_STOPPED)
        self.held_trips = 0
        chan = self._data(buf, 1) | (self._data(buf, 2) << 5) | (self._data(buf, 3) << 10)
        meas.balance_mask = inputs_to_cells(chan, self._chan, self.cells)
        meas.load_present = 1 if ctrl1 & R.CTRL1_LOAD_PRESENT else 0
        meas.fets = self._data(buf, 5) & (R.CTRL2_CHG_ON | R.CTRL2_DSG_ON)
        return True

    def read_measurements(self, meas, with_cc):
        """Cells, pack, thermistors (and the coulomb counter) into meas."""
        buf = self._blk if self.crc else self._blk_nc
        if not self._read(_BLOCK_FIRST, buf, _BLOCK_REGS):
            return False
        gain = self.gain_uv
        off = self.offset_mv
        ch = self._chan
        cell_mv = meas.cell_mv
        n = self.cells
        i = 0
        while i < n:
            adc = self._word(buf, 2 * ch[i]) & R.CELL_ADC_MAX
            cell_mv[i] = (gain * adc + 500) // 1000 + off  # adc_to_mv, inlined
            i += 1
        meas.cells = n
        bat = self._word(buf, _OFF_BAT)
        meas.pack_mv = (4 * gain * bat + 500) // 1000 + n * off
        temp_dc = meas.temp_dc
        i = 0
        while i < meas.temps:
            temp_dc[i] = ts_code_to_dc(self._word(buf, _OFF_TS + 2 * i) & R.CELL_ADC_MAX)
            i += 1
        if with_cc:
            raw = self._word(buf, _OFF_CC)
            if raw & 0x8000:
                raw -= 0x10000
            meas.cc_raw = raw
            # 8.44 uV per LSB over the shunt: mA = raw * 8440 nV / uOhm
            meas.current_ma = div_round(raw * R.CC_NV_PER_LSB, self.shunt_uohm)
        return True

    def clear_status(self, bits):
        return self.write_reg(R.SYS_STAT, bits)

    def set_fets(self, chg, dsg):
        """Switch the FETs and return the bits the chip reports afterwards.

        The chip refuses CHG_ON/DSG_ON while a matching fault flag is latched,
        so the read-back, not the request, is the truth. -1 on bus failure.
        """
        v = R.CTRL2_CC_EN
        if chg:
            v |= R.CTRL2_CHG_ON
        if dsg:
            v |= R.CTRL2_DSG_ON
        if not self.write_reg(R.SYS_CTRL2, v):
            return -1
        r = self.read_reg(R.SYS_CTRL2)
        if r < 0:
            return -1
        return r & (R.CTRL2_CHG_ON | R.CTRL2_DSG_ON)

    def fets_off(self):
        """Both FETs off without reading anything back: the first thing to
        try when the chip is in doubt. True when the write was acknowledged."""
        if self.crc is None:
            return False
        return self.write_reg(R.SYS_CTRL2, R.CTRL2_CC_EN)

    def enter_ship(self):
        """SHIP mode, the chip's lowest power (sleep mode): FETs off, no
        measurement; only a boot signal on TS1 wakes it. The datasheet's
        sequence: SHUT_A,SHUT_B = 00, then 01, then 10, consecutive writes."""
        base = R.CTRL1_ADC_EN | R.CTRL1_TEMP_SEL
        return (self.write_reg(R.SYS_CTRL1, base) and self.write_reg(R.SYS_CTRL1, base | R.CTRL1_SHUT_B)
                and self.write_reg(R.SYS_CTRL1, base | R.CTRL1_SHUT_A))

    def set_balancing(self, cell_mask):
        """Bleed the cells in cell_mask (bit k = cell k+1); returns the mask applied.

        No two adjacent inputs of one 5-input group may bleed at once: of an
        adjacent pair the upper one is dropped (the caller alternates sets
        across cycles so every cell gets its turn). -1 on bus failure.
        """
        chan = allowed_balance_channels(cells_to_inputs(cell_mask, self._chan, self.cells))
        w = self._wbuf
        w[0] = chan & 0x1F
        w[2] = (chan >> 5) & 0x1F
        w[4] = (chan >> 10) & 0x1F
        if not self._write_block(R.CELLBAL1, 3):
            return -1
        buf = self._st if self.crc else self._st_nc
        if not self._read(R.SYS_STAT, buf, _STATUS_REGS):
            return -1
        got = self._data(buf, 1) | (self._data(buf, 2) << 5) | (self._data(buf, 3) << 10)
        return inputs_to_cells(got, self._chan, self.cells)


def allowed_balance_channels(chan):
    """Drop the upper input of every adjacent pair within a 5-input group."""
    out = 0
    i = 0
    while i < 15:
        if chan & (1 << i):
            if i % 5 == 0 or not (out & (1 << (i - 1))):
                out |= 1 << i
        i += 1
    return out
