"""Driver for the TI bq76952 analog front end (3-16 cells); its register
header is bms.afe.bq76952.regs (shared with the simulator's model of the
chip, tools/bms_sim/afe/bq76952.py).

The bus is MicroPython's `machine.I2C` memory API (readfrom_mem_into,
writeto_mem), as for the bq769x0. Protocol (TI SLUUBY2B, "TRM"):

- direct commands: 7-bit registers, little-endian words;
- subcommands: the 16-bit code to 0x3E/0x3F; the chip answers in the 32-byte
  transfer buffer at 0x40 with the checksum at 0x60 and the length at 0x61
  (TRM 3.1); 0x3E/0x3F read back the code once it is done. A subcommand
  that takes data (FET_CONTROL, CB_ACTIVE_CELLS) and a Data Memory write
  send the code and the data from 0x3E in one block, then checksum and
  length to 0x60/0x61 (TRM 3.2, SLUAA11B 2);
- Data Memory is written only in CONFIG_UPDATE mode (SET_CFGUPDATE ...
  EXIT_CFGUPDATE, Battery Status [CFGUPDATE] tells when it took), which
  stops the measurements and switches the FETs off;
- I2C CRC (CRC-8, poly 0x07): a write's first CRC covers the write address,
  the register and the first byte; a read's first CRC covers the write
  address, the register, the read address and the first byte (the bq769x0's
  covers only the read address and the byte); every later CRC covers its
  byte alone (SLUAA11B 4).

Buffers are made in the constructor: read(), set_fets() and set_balancing()
allocate nothing (tests/mpy/mpy_afe952_alloc.py). CRC errors and NACKs are
retried a bounded number of times, counted, then reported (False / -1).

The coulomb counter: meas.cc_raw is the charge the chip integrated (PASSQ,
DASTATUS6) since the previous read, in the bq769x0's unit so bms.cc counts
it unchanged: one unit is 8.44 uV across the shunt for 250 ms, i.e. 2110 /
shunt_uohm mAs. The remainder below a unit, and anything past the int16
range, is carried to the next reading: nothing is lost.
"""
from micropython import const

from bms.afe import (READ_NO_DATA, READ_NO_STATUS, READ_NOT_CLEARED, READ_OK, ST_DEVICE, ST_NEW_CC, ST_STOPPED,
                     cell_count, cell_inputs, cells_to_inputs, i2c_read, i2c_write, inputs_to_cells)
from bms.afe.bq76952 import regs as R
from bms.crc import crc8_byte
from bms.regmap import FET_CHG, FET_DSG

_POLLS = const(40)  # reads of 0x3E/0x3F while a subcommand runs (each ~0.3 ms on the bus)
_BLK_FIRST = const(0x02)  # Safety Alert A .. CC2 Current in one auto-increment read
_BLK_LEN = const(58)
_OFF_BAT = const(0x12 - 0x02)
_OFF_CELL = const(0x14 - 0x02)
_OFF_STACK = const(0x34 - 0x02)
_OFF_LD = const(0x38 - 0x02)
_OFF_CC2 = const(0x3A - 0x02)
_ALM_LEN = const(20)  # Alarm Status .. TS3 Temperature
_OFF_TS = const(0x70 - 0x62)
_SUB_LEN = const(36)  # 0x3E .. 0x61: the code, the buffer, checksum, length
_CHG_OFF = const(0x0C)  # FET_CONTROL CHG_OFF | PCHG_OFF
_DSG_OFF = const(0x03)  # DSG_OFF | PDSG_OFF
_CC_DEN = const(65536 * 211)  # userAh/65536 -> cc units: x userA x 360 x shunt / this
_CC_MAX = const(32767)


class Bq76952:
    """One bq76952 on an I2C bus. cell_channels: bit n = cell input VC(n+1) has a
    cell (regs.cell_channels_for); crc: True, False, or None to detect it at configure()."""

    def __init__(self, i2c, cell_channels, shunt_uohm, addr=R.DEV_ADDR, crc=None, temps=3, max_balance=16):
        if cell_channels >> R.CELL_INPUTS:
            raise ValueError("cell_channels 0x%X: the bq76952 has 16 cell inputs (bits 0..15)" % cell_channels)
        n = cell_count(cell_channels)  # at most 16: bms.regmap MAX_CELLS
        if shunt_uohm < 10:
            raise ValueError("shunt_uohm %d: give the sense resistor in micro-ohm (10 or more)" % shunt_uohm)
        self.i2c = i2c
        self.addr = addr
        self.crc = crc
        self.cell_channels = cell_channels
        self.shunt_uohm = shunt_uohm
        self.cells = n
        self._chan = cell_inputs(cell_channels)  # the input of each cell, bottom first
        self.temps = temps  # thermistors on TS1.. (configured as such)
        self.max_balance = max_balance
        self.model = "bq76952"
        self.crc_errors = 0
        self.bus_errors = 0
        self.ua_code, self.user_ma = R.user_amps(shunt_uohm)
        self._cc_num = self.user_ma * 360 * shunt_uohm
        self._cc_rem = 0  # below one cc unit, x _CC_DEN
        self._cc_carry = 0  # past the int16 range
        self._q24 = -1  # the chip's charge at the last read (userAh/65536, mod 2**24); -1 unknown
        self._host_off = R.FC_CHG_OFF | R.FC_PCHG_OFF | R.FC_DSG_OFF | R.FC_PDSG_OFF
        self._fet_prot = R.CHG_FET_PROT_A_DEFAULT | (R.DSG_FET_PROT_A_DEFAULT << 8)
        self._bal = 0  # inputs balancing as last read back
        # wire buffers: data (+ CRC per byte); no-CRC reads use the first half
        self._blk = bytearray(2 * _BLK_LEN)
        self._alm = bytearray(2 * _ALM_LEN)
        self._sub = bytearray(2 * _SUB_LEN)
        self._one = bytearray(4)
        self._blk_nc = memoryview(self._blk)[:_BLK_LEN]
        self._alm_nc = memoryview(self._alm)[:_ALM_LEN]
        self._sub_nc = memoryview(self._sub)[:_SUB_LEN]
        self._one1 = memoryview(self._one)[:1]
        self._one2 = memoryview(self._one)[:2]
        self._wd = bytearray(6)  # data staged for a write
        self._wb = bytearray(12)  # ... on the wire
        self._wv = [None] * 13
        for k in (2, 3, 4, 6, 8, 12):
            self._wv[k] = memoryview(self._wb)[:k]
        self.applied_ov_mv = self.applied_uv_mv = self.applied_ov_delay_s = self.applied_uv_delay_s = 0
        self.applied_ocd_ma = self.applied_ocd_delay_ms = self.applied_scd_ma = self.applied_scd_delay_us = 0
        self.applied_occ_ma = self.applied_occ_delay_ms = 0
        # the temperature protection the chip applied (degC; None until set)
        self.applied_otc_c = self.applied_otd_c = self.applied_utc_c = self.applied_utd_c = None
        # which Protections B faults switch which FET off (CHG low byte, DSG high):
        # every one both, until set_temp_protection() reads the chip's
        self._fet_prot_b = 0xFFFF
        self._cc_units = 0  # the last reading, for read()
        self._held = 0  # the faults Safety Status held at the last read (the chip clears them, not the host)

    # -- the wire -----------------------------------------------------------

    def _read(self, reg, buf, n):
        """n registers from reg into buf (wire format); True on success."""
        a = self.addr << 1
        # the first CRC runs from the start: address, register, repeated start's address, then data0
        return i2c_read(self, reg, buf, n, crc8_byte(crc8_byte(crc8_byte(0, a), reg), a | 1) if self.crc else 0)

    def _send(self, reg, n):
        """Write the n bytes staged in _wd from reg on; True when acknowledged."""
        d = self._wd
        w = self._wb
        if self.crc:
            w[0] = d[0]
            w[1] = crc8_byte(crc8_byte(crc8_byte(0, self.addr << 1), reg), d[0])
            i = 1
            while i < n:
                w[2 * i] = d[i]
                w[2 * i + 1] = crc8_byte(0, d[i])
                i += 1
            out = self._wv[2 * n]
        else:
            i = 0
            while i < n:
                w[i] = d[i]
                i += 1
            out = self._wv[n]
        return i2c_write(self, reg, out)

    def _b(self, buf, i):  # register i of a read buffer, with or without CRC
        return buf[2 * i] if self.crc else buf[i]

    def _w(self, buf, i):  # little-endian word at register i
        if self.crc:
            return buf[2 * i] | (buf[2 * i + 2] << 8)
        return buf[i] | (buf[i + 1] << 8)

    def _s(self, buf, i):
        v = self._w(buf, i)
        return v - 0x10000 if v & 0x8000 else v

    def read_word(self, cmd):
        """A direct command's 16-bit value, or -1."""
        buf = self._one if self.crc else self._one2
        return self._w(buf, 0) if self._read(cmd, buf, 2) else -1

    # -- subcommands and Data Memory --------------------------------------

    def sub_cmd(self, code, acked=False):
        """A subcommand without data; True once the chip has run it (0x3E/0x3F read
        0xFF while it runs, then the code: TRM 3.1), or if `acked` when reads fail."""
        d = self._wd
        d[0] = code & 0xFF
        d[1] = code >> 8
        if not self._send(R.CMD_SUBCMD, 2):
            return False
        echo = self._one if self.crc else self._one2
        polls = _POLLS
        while polls:
            polls -= 1
            if not self._read(R.CMD_SUBCMD, echo, 2):
                return acked
            if self._w(echo, 0) == code:
                return True
        return False

    def _sub_write(self, n):
        """Code and n data bytes staged in _wd[0..n+1]: sent from 0x3E, then
        checksum and length to 0x60/0x61 (TRM 3.2)."""
        d = self._wd
        if not self._send(R.CMD_SUBCMD, n + 2):
            return False
        d[0] = R.checksum(d, 0, n + 2)
        d[1] = n + R.SUB_OVERHEAD
        return self._send(R.CMD_CHECKSUM, 2)

    def sub_read(self, code):
        """Run a subcommand that answers in the transfer buffer; its data is
        then sub_byte(i). False on a bus failure, a timeout or a checksum
        that does not match."""
        if not self.sub_cmd(code):
            return False
        lo = code & 0xFF
        hi = code >> 8
        buf = self._sub if self.crc else self._sub_nc
        if not self._read(R.CMD_SUBCMD, buf, _SUB_LEN) or self._w(buf, 0) != code:
            return False
        n = self._b(buf, _SUB_LEN - 1) - R.SUB_OVERHEAD
        if n < 0 or n > R.TRANSFER_LEN:
            return False
        s = lo + hi
        i = 0
        while i < n:
            s += self._b(buf, 2 + i)
            i += 1
        return ~s & 0xFF == self._b(buf, _SUB_LEN - 2)

    def sub_byte(self, i):
        return self._b(self._sub, 2 + i)

    def sub_word(self, i):
        return self.sub_byte(i) | (self.sub_byte(i + 1) << 8)

    def dm_read(self, addr, n):
        """A Data Memory value of n (1, 2, 4) bytes, unsigned; -1 on failure."""
        if not self.sub_read(addr):
            return -1
        v = 0
        while n:
            n -= 1
            v = (v << 8) | self.sub_byte(n)
        return v

    def dm_write(self, addr, value, n):
        """A Data Memory value of n (1, 2, 4) bytes; only in CONFIG_UPDATE."""
        d = self._wd
        d[0] = addr & 0xFF
        d[1] = addr >> 8
        i = 0
        while i < n:
            d[2 + i] = (value >> (8 * i)) & 0xFF
            i += 1
        return self._sub_write(n)

    def config_update(self, enter):
        """Enter or leave CONFIG_UPDATE and wait until Battery Status shows it."""
        if not self.sub_cmd(R.SUB_SET_CFGUPDATE if enter else R.SUB_EXIT_CFGUPDATE):
            return False
        polls = _POLLS
        while polls:
            polls -= 1
            st = self.read_word(R.CMD_BATTERY_STATUS)
            if st < 0:
                return False
            if bool(st & R.BS_CFGUPDATE) == bool(enter):
                return True
        return False

    def _dm_set(self, items):
        """((addr, value, bytes), ...) written in one CONFIG_UPDATE and read
        back; True when the chip holds them all."""
        if not self.config_update(True):
            return False
        ok = True
        for a, v, n in items:
            ok = self.dm_write(a, v, n) and ok
        if not self.config_update(False):
            return False
        for a, v, n in items:
            ok = ok and self.dm_read(a, n) == v
        return ok

    def _hold(self, items):
        """((addr, value, bytes), ...) the chip should hold: written (one
        CONFIG_UPDATE, which switches the FETs off) only when it holds
        something else. (ok, [the values it holds]), or (False, None) on a
        bus failure."""
        held = [self.dm_read(a, n) for a, v, n in items]
        if -1 in held:
            return False, None
        ok = True
        if any(h != it[1] for h, it in zip(held, items)):
            ok = self._dm_set(items)
            held = [self.dm_read(a, n) for a, v, n in items]
            if -1 in held:
                return False, None
        return ok, held

    # -- set-up ---------------------------------------------------------------

    def _detect_crc(self):
        """A CRC part gives four valid CRCs (Battery Status, cell 1); a plain one practically never."""
        buf = memoryview(self._sub)[:8]
        for mode in (True, False):
            self.crc = mode
            if self._read(R.CMD_BATTERY_STATUS, buf if mode else buf[:4], 4):
                if mode or self.sub_read(R.SUB_DEVICE_NUMBER):
                    return True
        self.crc = None
        return False

    def configure(self):
        """Bring the chip up (after power-on or a reset): identity, the
        settings in one CONFIG_UPDATE (units, the shunt's gains, cells,
        thermistors, host-controlled FETs and balancing), FET_EN on, both
        FETs off, sleep off, alarms cleared. True when every step was
        acknowledged and read back."""
        if self.crc is None and not self._detect_crc():
            return False
        if not self.sub_read(R.SUB_DEVICE_NUMBER) or self.sub_word(0) != R.DEVICE_NUMBER_BQ76952:
            return False
        st = self.read_word(R.CMD_BATTERY_STATUS)
        if st < 0:
            return False
        if st & R.BS_POR:
            self._q24 = -1  # the chip's charge counter started again
        cc, cap = R.gain_bits(self.shunt_uohm)
        items = [(R.DM_DA_CONFIG, self.ua_code | R.DA_USER_VOLTS_CV, 1), (R.DM_CC_GAIN, cc, 4),
                 (R.DM_CAP_GAIN, cap, 4), (R.DM_VCELL_MODE, self.cell_channels, 2),
                 (R.DM_FET_OPTIONS, R.FO_SFET | R.FO_HOST_FET_EN | R.FO_FET_CTRL_EN | R.FO_FET_INIT_OFF, 1),
                 (R.DM_CB_CONFIG, 0, 1), (R.DM_CB_MAX_CELLS, self.max_balance, 1),
                 (R.DM_POWER_CONFIG, R.POWER_CONFIG_HOST, 2), (R.DM_DEFAULT_ALARM_MASK, R.ALARM_MASK_HOST, 2)]
        for i in range(3):
            items.append((R.DM_TS1_CONFIG + i, R.TS_THERMISTOR if i < self.temps else 0, 1))
        if not self._dm_set(items) or not self.sub_read(R.SUB_MFG_STATUS):
            return False
        if not self.sub_word(0) & R.MFG_FET_EN:
            # FET test mode after reset: FET_ENABLE hands the FETs to the chip's control
            if not (self.sub_cmd(R.SUB_FET_ENABLE) and self.sub_read(R.SUB_MFG_STATUS)
                    and self.sub_word(0) & R.MFG_FET_EN):
                return False
        if not self.fets_off() or not self.sub_cmd(R.SUB_SLEEP_DISABLE):
            return False
        d = self._wd
        d[0] = d[1] = 0xFF
        if not self._send(R.CMD_ALARM_STATUS, 2):
            return False
        d[0], d[1] = R.ALARM_MASK_HOST & 0xFF, R.ALARM_MASK_HOST >> 8  # the default mask applies at a reset
        if not self._send(R.CMD_ALARM_ENABLE, 2) or not self._passq():
            return False
        st = self.read_word(R.CMD_BATTERY_STATUS)
        return st >= 0 and not st & (R.BS_CFGUPDATE | R.BS_POR)

    def set_protection(self, ov_mv, ov_delay_s, uv_mv, uv_delay_s, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us,
                       occ_ma=0, occ_delay_ms=0):
        """The chip's own protection, the backstop outside the firmware's
        limits: COV, CUV, OCD1, SCD (and OCC when occ_ma > 0), each on the
        safe side of the request (OV at or below, UV at or above, currents
        and delays at or below), enabled, and the applied values read back
        into applied_*. Written only when the chip holds something else
        (CONFIG_UPDATE switches the FETs off). False on a bus failure or
        when the chip does not hold what was written."""
        shunt = self.shunt_uohm
        items = R.backstop(shunt, ov_mv, ov_delay_s, uv_mv, uv_delay_s, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us,
                           occ_ma, occ_delay_ms)
        ok, held = self._hold(items)
        if held is None:
            return False
        c, cd, u, ud, o, od, oc, ocd_, s, sd, en, chg, dsg = held
        self.applied_ov_mv = c * R.COV_STEP_UV // 1000
        self.applied_ov_delay_s = ((2 + cd) * R.DELAY_STEP_US + 500000) // 1000000
        self.applied_uv_mv = -(-u * R.COV_STEP_UV // 1000)
        self.applied_uv_delay_s = ((2 + ud) * R.DELAY_STEP_US + 500000) // 1000000
        self.applied_ocd_ma = o * R.OC_STEP_UV * 1000 // shunt if en & R.SA_OCD1 else 0
        self.applied_ocd_delay_ms = (2 + od) * R.DELAY_STEP_US // 1000
        self.applied_occ_ma = oc * R.OC_STEP_UV * 1000 // shunt if en & R.SA_OCC else 0
        self.applied_occ_delay_ms = (2 + ocd_) * R.DELAY_STEP_US // 1000
        self.applied_scd_ma = R.SCD_MV[s & 15] * 1000000 // shunt if en & R.SA_SCD else 0
        self.applied_scd_delay_us = (sd - 1) * R.SCD_DELAY_STEP_US if sd else 0
        self._fet_prot = chg | (dsg << 8)
        return ok

    def set_temp_protection(self, otc_dc, otd_dc, utc_dc, utd_dc):
        """The chip's own temperature protection on the cell thermistors,
        the backstop outside the firmware's limits (0.1 degC, rounded
        outwards to whole degrees): OTC, OTD, UTC, UTD, enabled, each
        switching its FET off; the applied thresholds read back into
        applied_otc_c ... applied_utd_c. Written only when the chip holds
        something else. False on a bus failure or when the chip does not
        hold what was written."""
        items = R.temp_backstop(-(-otc_dc // 10), -(-otd_dc // 10), utc_dc // 10, utd_dc // 10)
        ok, held = self._hold(items)
        if held is None:
            return False
        en = held[12]
        self._fet_prot_b = held[13] | (held[14] << 8)
        t = [R.i1(held[3 * k]) if en & R.TEMP_BITS[k] else None for k in range(4)]
        self.applied_otc_c, self.applied_otd_c, self.applied_utc_c, self.applied_utd_c = t
        return ok

    # -- every cycle ----------------------------------------------------------

    def read(self, meas):
        """One cycle (bms.afe): safety status, cells, stack, current, then
        alarms and temperatures, FETs, the charge since the last read, and
        the latched alarms it reported cleared. A READ_ result."""
        buf = self._blk if self.crc else self._blk_nc
        if not self._read(_BLK_FIRST, buf, _BLK_LEN):
            meas.status = 0
            return READ_NO_STATUS
        sa = self._b(buf, 1)
        sb = self._b(buf, 3)
        sc = self._b(buf, 5)
        bat = self._w(buf, _OFF_BAT)
        held = R.status_bits(sa, sb, sc)
        st = held & ~self._held  # a fault once, when it starts: as the bq769x0's flags, cleared once read
        self._held = held
        if bat & (R.BS_POR | R.BS_PF):
            st |= ST_DEVICE  # reset: its settings are gone; or permanently failed
        if bat & (R.BS_CFGUPDATE | R.BS_SLEEP):
            st |= ST_STOPPED  # no measurements in CONFIG_UPDATE (or asleep)
        ch = self._chan
        cell_mv = meas.cell_mv
        n = self.cells
        i = 0
        while i < n:
            cell_mv[i] = self._s(buf, _OFF_CELL + 2 * ch[i])
            i += 1
        meas.cells = n
        meas.pack_mv = self._s(buf, _OFF_STACK) * 10  # userV: 10 mV (DA Configuration)
        meas.current_ma = self._s(buf, _OFF_CC2) * self.user_ma
        ld_mv = self._s(buf, _OFF_LD) * 10
        alm = self._alm if self.crc else self._alm_nc
        if not self._read(R.CMD_ALARM_STATUS, alm, _ALM_LEN):
            meas.status = st
            return READ_NO_DATA
        alarm = self._w(alm, 0)
        temp_dc = meas.temp_dc
        i = 0
        while i < meas.temps:
            temp_dc[i] = R.dk_to_dc(self._s(alm, _OFF_TS + 2 * i))
            i += 1
        one = self._one if self.crc else self._one1
        if not self._read(R.CMD_FET_STATUS, one, 1):
            meas.status = st
            return READ_NO_DATA
        fs = self._b(one, 0)
        meas.fets = (FET_CHG if fs & R.FS_CHG else 0) | (FET_DSG if fs & R.FS_DSG else 0)
        meas.load_present = 1 if not fs & R.FS_DSG and ld_mv < R.LD_LOAD_MV else 0
        if self._bal:
            if not self.sub_read(R.SUB_CB_ACTIVE_CELLS):
                meas.status = st
                return READ_NO_DATA
            self._bal = self.sub_word(0)
        meas.balance_mask = inputs_to_cells(self._bal, self._chan, self.cells)
        if not bat & R.BS_POR and self._q24 >= 0 and self._passq():
            meas.cc_raw = self._cc_units
            meas.cc_summed = 1  # PASSQ: every window since the last read (bms.afe)
            st |= ST_NEW_CC
        meas.status = st
        # a fault the chip switched a FET off for keeps it off until the host
        # switches it on again (the chip would recover on its own)
        off = 0
        prot = self._fet_prot
        pb = self._fet_prot_b
        if sa & prot & 0xFF or sc & (R.SC_COVL | R.SC_SCDL) or sb & pb & 0xFF:
            off |= _CHG_OFF
        if sa & (prot >> 8) or sc & (R.SC_OCDL | R.SC_SCDL | R.SC_OCD3) or sb & (pb >> 8):
            off |= _DSG_OFF
        if off & ~self._host_off and not self._fet_control(self._host_off | off):
            return READ_NOT_CLEARED
        latched = alarm & (R.AL_SSA | R.AL_SSBC | R.AL_FULLSCAN | R.AL_ADSCAN | R.AL_INITCOMP | R.AL_INITSTART)
        if latched:
            d = self._wd
            d[0] = latched & 0xFF
            d[1] = latched >> 8
            if not self._send(R.CMD_ALARM_STATUS, 2):
                return READ_NOT_CLEARED
        return READ_OK

    def _passq(self):
        """The accumulated charge (DASTATUS6): the change since the last
        call, in cc units, into _cc_units; the first call only starts it."""
        if not self.sub_read(R.SUB_DASTATUS6):
            return False
        q = ((self.sub_byte(R.PASSQ_INT) << 16) | (self.sub_byte(R.PASSQ_FRAC + 3) << 8)
             | self.sub_byte(R.PASSQ_FRAC + 2))
        if self._q24 < 0:
            self._q24 = q
            self._cc_units = 0
            return True
        d = (q - self._q24) & 0xFFFFFF
        if d & 0x800000:
            d -= 0x1000000
        self._q24 = q
        raw = self._scale(d) + self._cc_carry
        if raw > _CC_MAX:
            self._cc_carry = raw - _CC_MAX
            raw = _CC_MAX
        elif raw < -_CC_MAX:
            self._cc_carry = raw + _CC_MAX
            raw = -_CC_MAX
        else:
            self._cc_carry = 0
        self._cc_units = raw
        return True

    def _scale(self, units):
        """units x userA x 360 x shunt / (65536 x 211), floored, with the
        remainder carried in _cc_rem; in small ints (4 bits at a time)."""
        b = self._cc_num
        a = units if units >= 0 else -units
        q = 0
        r = 0
        s = 28
        while s >= 0:
            t = (r << 4) + a * ((b >> s) & 15)
            q = (q << 4) + t // _CC_DEN
            r = t % _CC_DEN
            s -= 4
        if units < 0:
            q = -q
            r = -r
        r += self._cc_rem
        if r < 0:
            r += _CC_DEN
            q -= 1
        elif r >= _CC_DEN:
            r -= _CC_DEN
            q += 1
        self._cc_rem = r
        return q

    def _fet_control(self, off):
        d = self._wd
        d[0] = R.SUB_FET_CONTROL & 0xFF
        d[1] = R.SUB_FET_CONTROL >> 8
        d[2] = off
        if not self._sub_write(1):
            return False
        self._host_off = off
        return True

    def set_fets(self, chg, dsg):
        """Allow the FETs (the chip still keeps one off while a fault it
        acts on holds) and return the bits FET Status reports; -1 on a bus
        failure."""
        off = (0 if chg else _CHG_OFF) | (0 if dsg else _DSG_OFF)
        if not self._fet_control(off):
            return -1
        one = self._one if self.crc else self._one1
        if not self._read(R.CMD_FET_STATUS, one, 1):
            return -1
        fs = self._b(one, 0)
        return (FET_CHG if fs & R.FS_CHG else 0) | (FET_DSG if fs & R.FS_DSG else 0)

    def fets_off(self):
        """Both FETs off (ALL_FETS_OFF): acknowledged is enough, in doubt reads may be what fails."""
        if self.crc is None or not self.sub_cmd(R.SUB_ALL_FETS_OFF, True):
            return False
        self._host_off = _CHG_OFF | _DSG_OFF
        return True

    def set_balancing(self, cell_mask):
        """Bleed the cells in cell_mask (bit k = cell k+1) through
        CB_ACTIVE_CELLS; of adjacent inputs the upper is dropped and at
        most max_balance bleed. The mask the chip reports back; -1 on a
        bus failure."""
        chan = R.allowed_balance_inputs(cells_to_inputs(cell_mask, self._chan, self.cells), self.max_balance)
        d = self._wd
        d[0] = R.SUB_CB_ACTIVE_CELLS & 0xFF
        d[1] = R.SUB_CB_ACTIVE_CELLS >> 8
        d[2] = chan & 0xFF
        d[3] = chan >> 8
        if not self._sub_write(2) or not self.sub_read(R.SUB_CB_ACTIVE_CELLS):
            return -1
        self._bal = self.sub_word(0)
        return inputs_to_cells(self._bal, self._chan, self.cells)

    def enter_ship(self):
        """SHUTDOWN, the chip's lowest power: sent twice in a row (unsealed,
        the delays are skipped); a TS2 pulse or a charger wakes it."""
        return self.sub_cmd(R.SUB_SHUTDOWN) and self.sub_cmd(R.SUB_SHUTDOWN)
