"""SimBq769x0: a register-accurate TI bq769x0 on the host.

It offers machine.I2C's memory API (readfrom_mem_into / writeto_mem), byte
for byte as the chip puts it on the wire, CRC included, so the firmware
driver's framing, decoding and bit handling are what the tests exercise.
Every register and bit name comes from bms.afe.bq769x0.regs (the same header the
driver uses), never a re-typed number.

The chip does not keep time itself: World (world.py) calls tick() with
pieces of time that never cross a 250 ms window boundary, and the chip
does its window work (ADC, coulomb counter, OV/UV) when a piece ends on one.
"""
import math
import random

from bms.afe.bq769x0.regs import (
    ADC_GAIN_BASE_UV, ADCGAIN1, ADCGAIN2, ADCOFFSET, BAT_HI, CC_CFG, CC_HI, CC_NV_PER_LSB,
    CC_PERIOD_MS, CELL_ADC_MAX, CELLBAL1, CELLBAL3, CTRL1_ADC_EN, CTRL1_LOAD_PRESENT, CTRL1_SHUT_A,
    CTRL1_SHUT_B, CTRL1_TEMP_SEL, CTRL2_CC_EN, CTRL2_CC_ONESHOT, CTRL2_CHG_ON, CTRL2_DELAY_DIS,
    CTRL2_DSG_ON, GROUP_INPUTS, I2C_ADDR, OCD_DELAY_MS, OCD_THRESH_MV_RSNS0, OCD_THRESH_MV_RSNS1,
    OV_DELAY_S, OV_TRIP, OV_TRIP_BASE, PROT1_RSNS, PROTECT1, PROTECT2, PROTECT3, REG_COUNT,
    SCD_THRESH_MV_RSNS0, SCD_THRESH_MV_RSNS1, STAT_CC_READY, STAT_DEVICE_XREADY, STAT_OCD, STAT_OV,
    STAT_OVRD_ALERT, STAT_SCD, STAT_UV, SYS_CTRL1, SYS_CTRL2, SYS_STAT, TS1_HI, TS_PERIOD_MS,
    TS_UV_PER_LSB, UV_DELAY_S, UV_MINQUAL, UV_TRIP, UV_TRIP_BASE, VC1_HI, default_cell_channels,
    model_groups,
)
from bms.crc import crc8, crc8_byte

_CRC_OF_BYTE = bytes(crc8_byte(0, d) for d in range(256))  # CRC-8 of one byte, for bytes.translate

EIO = 5  # machine.I2C raises OSError(EIO) on a NACK
ENODEV = 19  # ... and OSError(ENODEV) when nobody answers the address

# Datasheet power-up values of the trip registers.
_OV_TRIP_DEFAULT = 0xAC
_UV_TRIP_DEFAULT = 0x97

# Writable bits per register (everything else reads back as the chip keeps it).
_CTRL1_WMASK = CTRL1_ADC_EN | CTRL1_TEMP_SEL | CTRL1_SHUT_A | CTRL1_SHUT_B
_CTRL2_WMASK = CTRL2_DELAY_DIS | CTRL2_CC_EN | CTRL2_CC_ONESHOT | CTRL2_DSG_ON | CTRL2_CHG_ON
_CELLBAL_WMASK = 0x1F
_PROTECT1_WMASK = 0x9F  # RSNS, SCD_DELAY b4:3, SCD_THRESH b2:0
_PROTECT2_WMASK = 0x7F  # OCD_DELAY b6:4, OCD_THRESH b3:0
_PROTECT3_WMASK = 0xF0  # UV_DELAY b7:6, OV_DELAY b5:4
_CC_CFG_WMASK = 0x3F
_SHUT_MASK = CTRL1_SHUT_A | CTRL1_SHUT_B

# Latched SYS_STAT flags that refuse a FET being turned on.
_CHG_BLOCKERS = STAT_OV | STAT_OVRD_ALERT | STAT_DEVICE_XREADY
_DSG_BLOCKERS = STAT_UV | STAT_OCD | STAT_SCD | STAT_OVRD_ALERT | STAT_DEVICE_XREADY

# Thermistor: 10 k pull-up to 3.3 V, beta-3435 NTC, 10 k at 25 degC.
_TS_SUPPLY_UV = 3300000.0
_TS_PULLUP_OHM = 10000.0
_NTC_R25_OHM = 10000.0
_NTC_BETA = 3435.0
_T0_K = 273.15
# Die temperature sensor (TEMP_SEL=0): V = 1.200 V - (T - 25) * 4.2 mV.
_DIE_V25_UV = 1200000.0
_DIE_UV_PER_C = 4200.0

_INT16_MAX = 0x7FFF
_INT16_MIN = -0x8000


def _ntc_ohm(temp_c):
    t_k = temp_c + _T0_K
    return _NTC_R25_OHM * math.exp(_NTC_BETA * (1.0 / t_k - 1.0 / (25.0 + _T0_K)))


class SimBq769x0:
    """Simulated bq76920/30/40 attached to a pack.Pack.

    Fault injection: nack_all, corrupt_next_reads, corrupt_every,
    power_on_reset(), set_ovrd_alert(), thermistor_fault(), cell_wire_open().
    Counters: reads, writes, crc_errors_received, adjacent_balance_violations.
    """

    def __init__(self, pack, groups=None, cell_channels=None, addr=I2C_ADDR, crc=True,
                 gain_uv=377, offset_mv=-12, noise_mv=0.0, seed=0, shunt_uohm=1000,
                 cc_offset_lsb=1, cc_gain_ppm=0, bleed_ohm=33.0, die_temp_c=25.0):
        cells = len(pack.cells)
        if groups is None:
            groups = model_groups(cells)
        if not 1 <= groups <= 3:
            raise ValueError("no bq769x0 takes %d cells" % cells)
        if cell_channels is None:
            cell_channels = default_cell_channels(cells, groups)
        inputs = [n for n in range(GROUP_INPUTS * groups) if cell_channels >> n & 1]
        if len(inputs) != cells or cell_channels >> (GROUP_INPUTS * groups):
            raise ValueError("cell_channels 0x%04X does not place %d cells on %d groups"
                             % (cell_channels, cells, groups))
        if not ADC_GAIN_BASE_UV <= gain_uv <= ADC_GAIN_BASE_UV + 31:
            raise ValueError("gain_uv out of 365..396")
        if not -128 <= offset_mv <= 127:
            raise ValueError("offset_mv is signed 8-bit")
        self.pack = pack
        self.groups = groups
        self.cell_channels = cell_channels
        self._cell_inputs = inputs  # pack cell k sits on VC input inputs[k] (0-based)
        self.addr = addr
        self.crc = crc
        self.gain_uv = gain_uv
        self.offset_mv = offset_mv
        self.noise_mv = noise_mv
        self._rng = random.Random(seed)
        self.shunt_uohm = shunt_uohm
        self.cc_offset_lsb = cc_offset_lsb
        self.cc_gain_ppm = cc_gain_ppm
        self.bleed_ohm = bleed_ohm
        self.die_temp_c = die_temp_c
        # A load hangs on PACK- (LOAD_PRESENT, read with CHG off): a bool, or
        # load_sense, a callable World sets so the bit is always current.
        self.load_present = False
        self.load_sense = None

        # Fault injection
        self.nack_all = False
        self.corrupt_next_reads = 0
        self.corrupt_every = 0
        self._ts_faults = [None, None, None]
        self._open_wires = set()

        # Counters
        self.reads = 0
        self.writes = 0
        self.crc_errors_received = 0
        self.adjacent_balance_violations = 0
        self._read_serial = 0

        self.now_ms = 0
        self.shipped = False
        self._reset_registers()

    # ----------------------------------------------------------- state
    def _reset_registers(self):
        """Power-up defaults (datasheet), and every internal timer cleared."""
        r = bytearray(REG_COUNT)
        r[OV_TRIP] = _OV_TRIP_DEFAULT
        r[UV_TRIP] = _UV_TRIP_DEFAULT
        g = self.gain_uv - ADC_GAIN_BASE_UV
        r[ADCGAIN1] = ((g >> 3) & 0x03) << 2  # gain bits 4:3 in b3:2
        r[ADCGAIN2] = (g & 0x07) << 5  # gain bits 2:0 in b7:5
        r[ADCOFFSET] = self.offset_mv & 0xFF
        self._regs = r
        self._ship_armed = False
        self._cc_valid = False  # the running CC window began with CC_EN on
        self._cc_charge_ma_ms = 0.0
        self._cc_ms = 0
        self._oneshot_charge_ma_ms = 0.0
        self._oneshot_ms = 0
        self._ts_due = True
        self._ov_since_ms = None
        self._uv_since_ms = None
        self._ocd_ms = 0

    def boot(self):
        """TS1 boot signal: leave SHIP (or a dead state) at power-up defaults."""
        self.shipped = False
        self._reset_registers()

    def power_on_reset(self):
        """The chip reset itself: defaults, DEVICE_XREADY latched, FETs off,
        balancing off. It keeps answering on the bus."""
        self.shipped = False
        self._reset_registers()
        self._regs[SYS_STAT] |= STAT_DEVICE_XREADY

    def set_ovrd_alert(self):
        """ALERT pin driven externally: OVRD_ALERT latched, both FETs off."""
        self._regs[SYS_STAT] |= STAT_OVRD_ALERT
        self._regs[SYS_CTRL2] &= ~(CTRL2_CHG_ON | CTRL2_DSG_ON) & 0xFF

    def thermistor_fault(self, index, kind):
        """kind: "open" (R infinite), "short" (R = 0) or None (healthy)."""
        if kind not in (None, "open", "short"):
            raise ValueError(kind)
        self._ts_faults[index] = kind
        self._ts_due = True

    def cell_wire_open(self, cell_index, is_open=True):
        """The sense wire above pack cell cell_index floats: that cell reads
        ~0 mV and the next cell up reads both. The real pack is unchanged."""
        if is_open:
            self._open_wires.add(cell_index)
        else:
            self._open_wires.discard(cell_index)

    @property
    def alert(self):
        return self._regs[SYS_STAT] != 0

    @property
    def chg_on(self):
        return bool(self._regs[SYS_CTRL2] & CTRL2_CHG_ON) and not self.shipped

    @property
    def dsg_on(self):
        return bool(self._regs[SYS_CTRL2] & CTRL2_DSG_ON) and not self.shipped

    def reg(self, addr):
        """Register value for tests/diagnostics (no bus traffic, no counters)."""
        return self._read_reg(addr)

    # ------------------------------------------------------------- bus
    def _check_bus(self, addr):
        if addr != self.addr or self.shipped:
            raise OSError(ENODEV)
        if self.nack_all:
            raise OSError(EIO)

    def _read_reg(self, a):
        if a >= REG_COUNT:
            return 0
        v = self._regs[a]
        if a == SYS_CTRL1 and not self._regs[SYS_CTRL2] & CTRL2_CHG_ON:
            if self.load_sense() if self.load_sense else self.load_present:
                v |= CTRL1_LOAD_PRESENT
        return v

    def _read_regs(self, a, n):
        """n registers from a, as the bus reads them (bytes)."""
        if a + n <= REG_COUNT and not a <= SYS_CTRL1 < a + n:
            return bytes(self._regs[a:a + n])
        return bytes(self._read_reg(a + i) for i in range(n))

    def readfrom_mem_into(self, addr, memaddr, buf):
        self._check_bus(addr)
        n = len(buf)
        if self.crc:
            if n % 2:
                raise ValueError("with CRC a read returns data,crc pairs: even length")
            data = self._read_regs(memaddr, n // 2)
            out = bytearray(n)
            out[0::2] = data
            # every byte's own CRC (a table lookup each); the first also covers the address byte
            out[1::2] = data.translate(_CRC_OF_BYTE)
            if data:
                out[1] = crc8_byte(crc8_byte(0, (addr << 1) | 1), data[0])
        else:
            out = bytearray(self._read_regs(memaddr, n))
        self._read_serial += 1
        corrupt = False
        if self.corrupt_next_reads > 0:
            self.corrupt_next_reads -= 1
            corrupt = True
        if self.corrupt_every and self._read_serial % self.corrupt_every == 0:
            corrupt = True
        if corrupt and n:
            out[0] ^= 0x01  # a single bit error: CRC-8 always detects it
        buf[:] = out
        self.reads += 1

    def writeto_mem(self, addr, memaddr, buf):
        self._check_bus(addr)
        buf = bytes(buf)
        if self.crc:
            if not buf or len(buf) % 2:
                self.crc_errors_received += 1
                raise OSError(EIO)
            data = buf[0::2]
            crcs = buf[1::2]
            ok = crc8(bytes(((addr << 1), memaddr & 0xFF, data[0])), 0, 3) == crcs[0]
            for i in range(1, len(data)):
                ok = ok and crc8_byte(0, data[i]) == crcs[i]
            if not ok:
                # NACK: the whole write is ignored.
                self.crc_errors_received += 1
                raise OSError(EIO)
        else:
            data = buf
        for i, d in enumerate(data):
            self._write_reg(memaddr + i, d)
        self.writes += 1

    def _write_reg(self, a, v):
        r = self._regs
        if a == SYS_STAT:
            r[SYS_STAT] &= ~v & 0xFF  # write 1 to clear
        elif CELLBAL1 <= a <= CELLBAL3:
            v &= _CELLBAL_WMASK
            if v & (v >> 1):
                # Two adjacent inputs of one group: the real chip lets it
                # happen (and may be damaged). Count it for the tests.
                self.adjacent_balance_violations += 1
            if a - CELLBAL1 < self.groups:
                r[a] = v
        elif a == SYS_CTRL1:
            self._write_ctrl1(v)
        elif a == SYS_CTRL2:
            self._write_ctrl2(v)
        elif a == PROTECT1:
            r[a] = v & _PROTECT1_WMASK
        elif a == PROTECT2:
            r[a] = v & _PROTECT2_WMASK
        elif a == PROTECT3:
            r[a] = v & _PROTECT3_WMASK
        elif a == OV_TRIP or a == UV_TRIP:
            r[a] = v
        elif a == CC_CFG:
            r[a] = v & _CC_CFG_WMASK
        # everything else (ADC results, trim) is read-only

    def _write_ctrl1(self, v):
        r = self._regs
        old = r[SYS_CTRL1]
        new = v & _CTRL1_WMASK
        if new & CTRL1_ADC_EN and not old & CTRL1_ADC_EN:
            self._ts_due = True  # first temperature with the first cell data
        r[SYS_CTRL1] = new
        shut_old = old & _SHUT_MASK
        shut_new = new & _SHUT_MASK
        # SHIP: SHUT_A,SHUT_B = 00, then 01, then 10 (consecutive writes).
        if shut_new == CTRL1_SHUT_A and self._ship_armed:
            self._enter_ship()
            return
        self._ship_armed = shut_new == CTRL1_SHUT_B and (shut_old == 0 or self._ship_armed)

    def _write_ctrl2(self, v):
        r = self._regs
        old = r[SYS_CTRL2]
        new = v & _CTRL2_WMASK
        stat = r[SYS_STAT]
        # A latched fault refuses turning its FET on; other bits still apply.
        if stat & _CHG_BLOCKERS and not old & CTRL2_CHG_ON:
            new &= ~CTRL2_CHG_ON
        if stat & _DSG_BLOCKERS and not old & CTRL2_DSG_ON:
            new &= ~CTRL2_DSG_ON
        if new & CTRL2_CC_EN and not old & CTRL2_CC_EN:
            # Only whole 250 ms windows produce readings.
            self._cc_valid = self.now_ms % CC_PERIOD_MS == 0
            self._cc_charge_ma_ms = 0.0
            self._cc_ms = 0
        if new & CTRL2_CC_ONESHOT and not old & CTRL2_CC_ONESHOT:
            self._oneshot_charge_ma_ms = 0.0
            self._oneshot_ms = 0
        r[SYS_CTRL2] = new

    def _enter_ship(self):
        r = self._regs
        self.shipped = True
        self._ship_armed = False
        r[SYS_CTRL2] &= ~(CTRL2_CHG_ON | CTRL2_DSG_ON | CTRL2_CC_EN) & 0xFF
        r[SYS_CTRL1] &= ~CTRL1_ADC_EN & 0xFF
        r[CELLBAL1] = r[CELLBAL1 + 1] = r[CELLBAL1 + 2] = 0

    # ------------------------------------------------------- physics
    def bleed_ma(self):
        """Balancing bleed current of each pack cell (mV / Ohm = mA)."""
        r = self._regs
        out = []
        for k, n in enumerate(self._cell_inputs):
            if not self.shipped and r[CELLBAL1 + n // GROUP_INPUTS] >> (n % GROUP_INPUTS) & 1:
                mv = self.pack.cell_mv(k)
                out.append(mv / self.bleed_ohm if mv > 0 else 0.0)
            else:
                out.append(0.0)
        return out

    def tick(self, dt_ms, current_ma):
        """dt_ms of time at pack current current_ma (positive = charge).

        World never lets a piece cross a 250 ms window boundary, but while
        shipped (no window work then: one piece may span a month).
        """
        if self.shipped:
            self.now_ms += dt_ms
            return
        r = self._regs
        ctrl2 = r[SYS_CTRL2]
        if ctrl2 & CTRL2_CC_EN:
            if self._cc_valid:
                self._cc_charge_ma_ms += current_ma * dt_ms
                self._cc_ms += dt_ms
        elif ctrl2 & CTRL2_CC_ONESHOT:
            self._oneshot_charge_ma_ms += current_ma * dt_ms
            self._oneshot_ms += dt_ms
        self._check_overcurrent(dt_ms, current_ma)
        self.now_ms += dt_ms
        if self.now_ms % CC_PERIOD_MS == 0:
            self._window_end()

    def _check_overcurrent(self, dt_ms, current_ma):
        """SCD and OCD comparators (always on): discharge shunt voltage."""
        r = self._regs
        shunt_mv = -current_ma * self.shunt_uohm / 1e6  # mA * uOhm = nV
        p1 = r[PROTECT1]
        rsns = p1 & PROT1_RSNS
        scd_tab = SCD_THRESH_MV_RSNS1 if rsns else SCD_THRESH_MV_RSNS0
        ocd_tab = OCD_THRESH_MV_RSNS1 if rsns else OCD_THRESH_MV_RSNS0
        if shunt_mv > scd_tab[p1 & 0x07]:
            # SCD delays are microseconds: instant at our time step.
            self._trip(STAT_SCD, CTRL2_DSG_ON)
        p2 = r[PROTECT2]
        if shunt_mv > ocd_tab[p2 & 0x0F]:
            self._ocd_ms += dt_ms
            delay_ms = 0 if r[SYS_CTRL2] & CTRL2_DELAY_DIS else OCD_DELAY_MS[(p2 >> 4) & 0x07]
            if self._ocd_ms >= delay_ms:
                self._trip(STAT_OCD, CTRL2_DSG_ON)
                self._ocd_ms = 0
        else:
            self._ocd_ms = 0

    def _trip(self, stat_bit, fet_bit):
        self._regs[SYS_STAT] |= stat_bit
        self._regs[SYS_CTRL2] &= ~fet_bit & 0xFF

    def _window_end(self):
        r = self._regs
        if r[SYS_CTRL1] & CTRL1_ADC_EN:
            self._convert_cells()
            if self._ts_due or self.now_ms % TS_PERIOD_MS == 0:
                self._convert_temps()
                self._ts_due = False
        ctrl2 = r[SYS_CTRL2]
        if ctrl2 & CTRL2_CC_EN:
            if self._cc_valid and self._cc_ms == CC_PERIOD_MS:
                self._store_cc(self._cc_charge_ma_ms / self._cc_ms)
            self._cc_valid = True
            self._cc_charge_ma_ms = 0.0
            self._cc_ms = 0
        elif ctrl2 & CTRL2_CC_ONESHOT:
            if self._oneshot_ms:
                self._store_cc(self._oneshot_charge_ma_ms / self._oneshot_ms)
                r[SYS_CTRL2] &= ~CTRL2_CC_ONESHOT & 0xFF
            self._oneshot_charge_ma_ms = 0.0
            self._oneshot_ms = 0

    def _store_cc(self, avg_ma):
        raw = avg_ma * self.shunt_uohm / CC_NV_PER_LSB  # mA * uOhm = nV
        raw = round(raw * (1.0 + self.cc_gain_ppm * 1e-6)) + self.cc_offset_lsb
        if raw > _INT16_MAX:
            raw = _INT16_MAX
        elif raw < _INT16_MIN:
            raw = _INT16_MIN
        raw &= 0xFFFF
        self._regs[CC_HI] = raw >> 8
        self._regs[CC_HI + 1] = raw & 0xFF
        self._regs[SYS_STAT] |= STAT_CC_READY

    def _code(self, mv):
        c = round((mv - self.offset_mv) * 1000.0 / self.gain_uv)
        if c < 0:
            return 0
        return c if c < CELL_ADC_MAX else CELL_ADC_MAX

    def _convert_cells(self):
        """VC1..VCn and BAT through the chip's own gain/offset, then OV/UV."""
        r = self._regs
        pack = self.pack
        n_inputs = GROUP_INPUTS * self.groups
        input_mv = [0.0] * n_inputs
        noise = self.noise_mv
        for k, n in enumerate(self._cell_inputs):
            mv = pack.cell_mv(k)
            if noise:
                mv += self._rng.uniform(-noise, noise)
            input_mv[n] += mv
        for k in self._open_wires:
            if k < len(self._cell_inputs):
                n = self._cell_inputs[k]
                if k + 1 < len(self._cell_inputs):
                    input_mv[self._cell_inputs[k + 1]] += input_mv[n]
                input_mv[n] = 0.0
        ov_code = OV_TRIP_BASE | (r[OV_TRIP] << 4)
        uv_code = UV_TRIP_BASE | (r[UV_TRIP] << 4)
        ov = False
        uv = False
        code_of = self._code
        for n in range(n_inputs):
            c = code_of(input_mv[n])
            r[VC1_HI + 2 * n] = c >> 8
            r[VC1_HI + 2 * n + 1] = c & 0xFF
            if self.cell_channels >> n & 1:
                if c >= ov_code:
                    ov = True
                if UV_MINQUAL <= c <= uv_code:
                    uv = True
        cells = len(self._cell_inputs)
        bat = round((pack.pack_mv() - cells * self.offset_mv) * 1000.0 / (4 * self.gain_uv))
        bat = 0 if bat < 0 else (0xFFFF if bat > 0xFFFF else bat)
        r[BAT_HI] = bat >> 8
        r[BAT_HI + 1] = bat & 0xFF
        no_delay = r[SYS_CTRL2] & CTRL2_DELAY_DIS
        p3 = r[PROTECT3]
        ov_delay_ms = 0 if no_delay else 1000 * OV_DELAY_S[(p3 >> 4) & 0x03]
        uv_delay_ms = 0 if no_delay else 1000 * UV_DELAY_S[(p3 >> 6) & 0x03]
        self._ov_since_ms = self._qualify(ov, self._ov_since_ms, ov_delay_ms, STAT_OV, CTRL2_CHG_ON)
        self._uv_since_ms = self._qualify(uv, self._uv_since_ms, uv_delay_ms, STAT_UV, CTRL2_DSG_ON)

    def _qualify(self, cond, since_ms, delay_ms, stat_bit, fet_bit):
        """Delay timer of OV/UV: trips after the condition held delay_ms
        (from the first conversion showing it); restarts after a trip, and
        resets when the condition goes away."""
        if not cond:
            return None
        if since_ms is None:
            since_ms = self.now_ms
        if self.now_ms - since_ms >= delay_ms:
            self._trip(stat_bit, fet_bit)
            return self.now_ms
        return since_ms

    def _convert_temps(self):
        r = self._regs
        temp_sel = r[SYS_CTRL1] & CTRL1_TEMP_SEL
        for i in range(self.groups):
            if temp_sel:
                fault = self._ts_faults[i]
                if fault == "open":
                    v_uv = _TS_SUPPLY_UV
                elif fault == "short":
                    v_uv = 0.0
                else:
                    r_ohm = _ntc_ohm(self.pack.temperatures_c[i])
                    v_uv = _TS_SUPPLY_UV * r_ohm / (_TS_PULLUP_OHM + r_ohm)
            else:
                v_uv = _DIE_V25_UV - (self.die_temp_c - 25.0) * _DIE_UV_PER_C
            c = round(v_uv / TS_UV_PER_LSB)
            c = 0 if c < 0 else (CELL_ADC_MAX if c > CELL_ADC_MAX else c)
            r[TS1_HI + 2 * i] = c >> 8
            r[TS1_HI + 2 * i + 1] = c & 0xFF
