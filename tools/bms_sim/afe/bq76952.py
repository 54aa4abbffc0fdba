"""SimBq76952: a register-level TI bq76952 on the host.

It offers machine.I2C's memory API (readfrom_mem_into / writeto_mem), byte
for byte as the chip puts it on the wire, CRC included, and keeps the
chip's sequencing: subcommands run for a while after their code is written
(0x3E/0x3F read 0xFF until they are done, time passing with the bus at
100 kHz and with tick()), answer in the transfer buffer with checksum and
length, take data only with a matching checksum/length write, and Data
Memory takes writes only in CONFIG_UPDATE (which stops measuring and
switches the FETs off). The ADC scans every scan_ms; COV/CUV/OCC/OCD1/
OCD2/SCD trip after their Data Memory delays, switch their FETs off and
recover on their own after the recovery time, as the chip does; the host's
FET_CONTROL / ALL_FETS_OFF state and FET_EN gate the FETs. Every command,
bit and address comes from bms.afe.bq76952.regs, the driver's header.

Fault injection: nack_all, corrupt_next_reads, corrupt_every,
power_on_reset(), set_ovrd_alert() (CFETOFF/DFETOFF driven),
thermistor_fault(), cell_wire_open(); a short circuit is a load on World.
Counters: reads, writes, crc_errors_received, checksum_errors,
dm_writes_refused, adjacent_balance_violations.
"""
import math
import random
import struct

from bms.afe import cell_count
from bms.afe.bq76952 import regs as R
from bms.crc import crc8_byte

EIO = 5  # machine.I2C raises OSError(EIO) on a NACK
ENODEV = 19  # ... and OSError(ENODEV) when nobody answers the address

_BUS_US_PER_BYTE = 90  # 9 clocks at 100 kHz
_EXEC_US = {R.SUB_SET_CFGUPDATE: 2000, R.SUB_EXIT_CFGUPDATE: 1000, R.SUB_DASTATUS6: 600,
            R.SUB_RESET: 10000}  # TRM 12 (subcommand timing), others _EXEC_DEFAULT_US
_EXEC_DEFAULT_US = 400
_DM_READ_US = 600
_OPEN_DK = 1732  # an open thermistor: the chip's curve at full-scale ADC, far below -40 degC
_SHORT_DK = 5732
_NTC_DEFAULT_DK = 2982  # 25 degC
_CC_GAIN_NOM = R.CC_GAIN_NUM / 10.0  # x 1/shunt_uohm: CC Gain for a shunt (7.5684 / mOhm, TRM 10.2)
_CAP_PER_CC = R.CAP_GAIN_NUM / R.CAP_GAIN_DEN  # Capacity Gain / CC Gain (298261.6178)
_DEFAULT_CC_GAIN = 7.4768  # TRM 13 default (a 1 mOhm shunt at the trimmed VREF2)


def _f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def _bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


class SimBq76952:
    """Simulated bq76952 attached to a pack.Pack (3..16 cells)."""

    def __init__(self, pack, cell_channels=None, addr=R.DEV_ADDR, crc=True, noise_mv=0.0, seed=0,
                 shunt_uohm=1000, cc_offset_ma=0.0, bleed_ohm=60.0, die_temp_c=25.0, scan_ms=63):
        cells = len(pack.cells)
        if cell_channels is None:
            cell_channels = R.cell_channels_for(cells)
        inputs = [n for n in range(R.CELL_INPUTS) if cell_channels >> n & 1]
        if len(inputs) != cells or cell_channels >> R.CELL_INPUTS:
            raise ValueError("cell_channels 0x%04X does not place %d cells on the 16 inputs" % (cell_channels, cells))
        self.pack = pack
        self.cell_channels = cell_channels
        self._cell_inputs = inputs
        self.addr = addr
        self.crc = crc
        self.noise_mv = noise_mv
        self._rng = random.Random(seed)
        self.shunt_uohm = shunt_uohm
        self.cc_offset_ma = cc_offset_ma
        self.bleed_ohm = bleed_ohm
        self.die_temp_c = die_temp_c
        self.scan_ms = scan_ms
        self.load_present = False
        self.load_sense = None  # World sets a callable: a load hangs on the terminals
        self.nack_all = False
        self.corrupt_next_reads = 0
        self.corrupt_every = 0
        self._ts_faults = [None, None, None]
        self._open_wires = set()
        self.reads = self.writes = self.crc_errors_received = self.checksum_errors = 0
        self.dm_writes_refused = self.adjacent_balance_violations = 0
        self._read_serial = 0
        self.now_ms = 0
        self._us = 0
        self.shipped = False
        self.fetoff_pins = False
        self._reset()

    # ----------------------------------------------------------- state
    def _reset(self):
        """Power-up: Data Memory defaults, FET test mode, POR set."""
        dm = bytearray(R.DM_END - R.DM_FIRST)
        self._dm = dm
        for a, v, n in ((R.DM_CC_GAIN, _bits(_DEFAULT_CC_GAIN), 4),
                        (R.DM_CAP_GAIN, _bits(_DEFAULT_CC_GAIN * _CAP_PER_CC), 4),
                        (R.DM_DA_CONFIG, R.DA_DEFAULT, 1), (R.DM_FET_OPTIONS, R.FET_OPTIONS_DEFAULT, 1),
                        (R.DM_PROT_ENABLED_A, R.PROT_A_DEFAULT, 1),
                        (R.DM_CHG_FET_PROT_A, R.CHG_FET_PROT_A_DEFAULT, 1),
                        (R.DM_DSG_FET_PROT_A, R.DSG_FET_PROT_A_DEFAULT, 1),
                        (R.DM_DEFAULT_ALARM_MASK, R.ALARM_MASK_DEFAULT, 2),
                        (R.DM_POWER_CONFIG, R.POWER_CONFIG_DEFAULT, 2),
                        (R.DM_CUV_THRESHOLD, 50, 1), (R.DM_CUV_DELAY, 74, 2),  # 2.53 V, 250 ms
                        (R.DM_COV_THRESHOLD, 86, 1), (R.DM_COV_DELAY, 74, 2),  # 4.35 V
                        (R.DM_COV_HYST, 2, 1), (R.DM_OCC_THRESHOLD, 2, 1), (R.DM_OCC_DELAY, 4, 1),
                        (R.DM_OCD1_THRESHOLD, 4, 1), (R.DM_OCD1_DELAY, 1, 1),
                        (R.DM_OCD2_THRESHOLD, 3, 1), (R.DM_OCD2_DELAY, 7, 1),
                        (R.DM_SCD_THRESHOLD, 0, 1), (R.DM_SCD_DELAY, 2, 1),
                        (R.DM_RECOVERY_S, 3, 1), (R.DM_SCD_RECOVERY_S, 5, 1),
                        # OTC 55, OTD 60, UTC 0, UTD 0 degC, 2 s, recovering 5 degC inside
                        # (the thresholds' rows of temp_backstop; not its enables)
                        *R.temp_backstop(55, 60, 0, 0)[:3 * len(R.TEMP_ROWS)],
                        (R.DM_TS1_CONFIG, R.TS1_CONFIG_DEFAULT, 1), (R.DM_TS1_CONFIG + 2, R.TS3_CONFIG_DEFAULT, 1),
                        (R.DM_CB_MAX_CELLS, 1, 1)):
            self._dm_put(a, v, n)
        self._regs = bytearray(R.CMD_SPACE)
        self.cfg_update = False
        self.fet_en = False
        self.host_off = R.FC_CHG_OFF | R.FC_PCHG_OFF | R.FC_DSG_OFF | R.FC_PDSG_OFF if (
            self._dm_get(R.DM_FET_OPTIONS, 1) & R.FO_FET_INIT_OFF) else 0
        self.deepsleep = False
        self._por = True
        self._sd_cmd = False
        self._armed = None  # (subcommand, at ms) for the twice-in-a-row commands
        self._pending = None  # (code, done at us, buffer prepared by the host)
        self._alert_a = self._status_a = self._status_b = self._status_c = 0
        self._timers = {}  # safety bit -> ms the condition held
        self._recover = {}  # safety bit -> ms the condition was gone
        self._alarm = R.AL_INITSTART | R.AL_INITCOMP
        self._alarm_enable = self._dm_get(R.DM_DEFAULT_ALARM_MASK, 2)
        self._cb = 0
        self._passq = 0.5  # userAh: RESET_PASSQ's value, so the integer part rounds
        self._passq_s = 0.0
        self._win_mas = 0.0
        self._cc2_ma = 0.0
        self._next_scan = self.now_ms
        self._sync()

    def _dm_get(self, a, n):
        i = a - R.DM_FIRST
        return int.from_bytes(self._dm[i:i + n], "little")

    def _dm_put(self, a, v, n):
        i = a - R.DM_FIRST
        self._dm[i:i + n] = (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")

    def dm(self, a, n=1):
        """A Data Memory value for tests (no bus traffic)."""
        return self._dm_get(a, n)

    def boot(self):
        """A wake from SHUTDOWN (TS2 pulse, charger): a fresh power-up."""
        self.shipped = False
        self._reset()

    def power_on_reset(self):
        """The chip reset itself: defaults, POR set, FETs off; it keeps answering."""
        self.shipped = False
        self._reset()

    def set_ovrd_alert(self, on=True):
        """CFETOFF/DFETOFF driven by something outside: both FETs off while on."""
        self.fetoff_pins = on
        self._sync()

    def thermistor_fault(self, index, kind):
        """kind: "open", "short" or None (healthy)."""
        if kind not in (None, "open", "short"):
            raise ValueError(kind)
        self._ts_faults[index] = kind

    def cell_wire_open(self, cell_index, is_open=True):
        """The sense wire above pack cell cell_index floats: that cell reads
        ~0 mV and the next one up reads both."""
        (self._open_wires.add if is_open else self._open_wires.discard)(cell_index)

    def _units(self):
        da = self._dm_get(R.DM_DA_CONFIG, 1)
        return (0.1, 1, 10, 100)[da & 3], (10 if da & R.DA_USER_VOLTS_CV else 1)

    def _gain(self, addr, nominal):
        """The chip's measured / true current for the gain the host wrote."""
        return _f32(self._dm_get(addr, 4)) * self.shunt_uohm / nominal

    @property
    def chg_on(self):
        return self._fet_on(R.DM_CHG_FET_PROT_A, R.DM_CHG_FET_PROT_B, R.FC_CHG_OFF)

    @property
    def dsg_on(self):
        return self._fet_on(R.DM_DSG_FET_PROT_A, R.DM_DSG_FET_PROT_B, R.FC_DSG_OFF)

    def _fet_on(self, prot, prot_b, host_bit):
        if self.shipped or self.deepsleep or self.cfg_update or not self.fet_en or self.fetoff_pins:
            return False
        if not self._dm_get(R.DM_FET_OPTIONS, 1) & R.FO_FET_CTRL_EN or self.host_off & host_bit:
            return False
        return not (self._status_a & self._dm_get(prot, 1) or self._status_b & self._dm_get(prot_b, 1))

    @property
    def alert(self):
        return bool(self._alarm & self._alarm_enable) and not self.shipped

    def reg(self, addr):
        """A direct command byte for tests (no bus traffic, no counters)."""
        return self._regs[addr] if addr < R.CMD_SPACE else 0

    def word(self, addr):
        return self._regs[addr] | (self._regs[addr + 1] << 8)

    def _set_word(self, addr, v):
        v &= 0xFFFF
        self._regs[addr] = v & 0xFF
        self._regs[addr + 1] = v >> 8

    def _sync(self):
        """Status registers from the state."""
        r = self._regs
        r[R.CMD_CONTROL_STATUS] = R.CS_DEEPSLEEP if self.deepsleep else 0
        r[R.CMD_SAFETY_ALERT_A] = self._alert_a
        r[R.CMD_SAFETY_STATUS_A] = self._status_a
        r[R.CMD_SAFETY_STATUS_B] = self._status_b
        r[R.CMD_SAFETY_STATUS_C] = self._status_c
        bat = ((R.BS_CFGUPDATE if self.cfg_update else 0) | (R.BS_POR if self._por else 0)
               | (R.BS_SS if self._status_a | self._status_b | self._status_c else 0)
               | (R.BS_SD_CMD if self._sd_cmd else 0))
        self._set_word(R.CMD_BATTERY_STATUS, bat)
        if self._status_a:
            self._alarm |= R.AL_SSA
        if self._status_b | self._status_c:
            self._alarm |= R.AL_SSBC
        chg, dsg = self.chg_on, self.dsg_on
        raw = (R.AL_CB if self._cb else 0) | (0 if chg else R.AL_XCHG) | (0 if dsg else R.AL_XDSG)
        self._set_word(R.CMD_ALARM_STATUS, self._alarm)
        self._set_word(R.CMD_ALARM_RAW, raw)
        self._set_word(R.CMD_ALARM_ENABLE, self._alarm_enable)
        r[R.CMD_FET_STATUS] = (R.FS_CHG if chg else 0) | (R.FS_DSG if dsg else 0)
        ua, _ = self._units()
        cc2 = round(self._cc2_ma / ua)
        self._set_word(R.CMD_CC2_CURRENT, max(-32768, min(32767, cc2)))

    # ------------------------------------------------------------- bus
    def _check_bus(self, addr, nbytes):
        if addr != self.addr or self.shipped:
            raise OSError(ENODEV)
        if self.nack_all:
            raise OSError(EIO)
        self._us += (nbytes + 2) * _BUS_US_PER_BYTE
        self._run_pending()

    def _read_bytes(self, a, n):
        busy = self._pending is not None
        out = bytearray(n)
        for i in range(n):
            x = a + i
            if busy and x in (R.CMD_SUBCMD, R.CMD_SUBCMD + 1):
                out[i] = R.SUB_BUSY
            elif x < R.CMD_SPACE:
                out[i] = self._regs[x]
        return out

    def readfrom_mem_into(self, addr, memaddr, buf):
        n = len(buf)
        self._check_bus(addr, n)
        if self.crc:
            if n % 2:
                raise ValueError("with CRC a read returns data,crc pairs: even length")
            data = self._read_bytes(memaddr, n // 2)
            out = bytearray(n)
            for i, d in enumerate(data):
                out[2 * i] = d
                out[2 * i + 1] = crc8_byte(0, d)
            if data:
                # the first CRC runs from the start: address, register, address+R, data
                a = addr << 1
                out[1] = crc8_byte(crc8_byte(crc8_byte(crc8_byte(0, a), memaddr), a | 1), data[0])
        else:
            out = self._read_bytes(memaddr, n)
        self._read_serial += 1
        corrupt = self.corrupt_next_reads > 0 or (self.corrupt_every and self._read_serial % self.corrupt_every == 0)
        if self.corrupt_next_reads > 0:
            self.corrupt_next_reads -= 1
        if corrupt and n:
            out[0] ^= 0x01  # a single bit error: CRC-8 always detects it
        buf[:] = out
        self.reads += 1

    def writeto_mem(self, addr, memaddr, buf):
        buf = bytes(buf)
        self._check_bus(addr, len(buf))
        if self.crc:
            if not buf or len(buf) % 2:
                self.crc_errors_received += 1
                raise OSError(EIO)
            data, crcs = buf[0::2], buf[1::2]
            ok = crc8_byte(crc8_byte(crc8_byte(0, addr << 1), memaddr), data[0]) == crcs[0]
            ok = ok and all(crc8_byte(0, d) == c for d, c in zip(data[1:], crcs[1:]))
            if not ok:
                self.crc_errors_received += 1
                raise OSError(EIO)  # the whole write is ignored
        else:
            data = buf
        self.writes += 1
        end = memaddr + len(data)
        r = self._regs
        for i, d in enumerate(data):
            a = memaddr + i
            if a == R.CMD_ALARM_STATUS or a == R.CMD_ALARM_STATUS + 1:
                self._alarm &= ~(d << (8 * (a - R.CMD_ALARM_STATUS)))
            elif a == R.CMD_ALARM_ENABLE or a == R.CMD_ALARM_ENABLE + 1:
                sh = 8 * (a - R.CMD_ALARM_ENABLE)
                self._alarm_enable = (self._alarm_enable & ~(0xFF << sh)) | (d << sh)
            elif R.CMD_SUBCMD <= a <= R.CMD_DATA_LEN and not (self._pending and a <= R.CMD_SUBCMD + 1):
                r[a] = d
        if memaddr <= R.CMD_SUBCMD + 1 < end and self._pending is None:
            code = r[R.CMD_SUBCMD] | (r[R.CMD_SUBCMD + 1] << 8)
            prepared = end > R.CMD_TRANSFER  # the host wrote data behind the code: a write follows
            us = 0 if prepared else (_DM_READ_US if code >= R.DM_FIRST else _EXEC_US.get(code, _EXEC_DEFAULT_US))
            self._pending = (code, self._us + us, prepared)
            self._run_pending()
        if memaddr <= R.CMD_DATA_LEN < end:
            self._commit()
        self._sync()

    # ------------------------------------------------------ subcommands
    def _run_pending(self):
        if self._pending is None or self._us < self._pending[1]:
            return
        code, _, prepared = self._pending
        self._pending = None
        r = self._regs
        if prepared:
            return  # the host writes data behind the code: _commit() acts on it
        data = self._answer(code)
        if data is None:
            self._command(code)
            self._sync()
            return
        buf = bytes(data) + bytes(R.TRANSFER_LEN - len(data)) if code >= R.DM_FIRST else bytes(data)
        r[R.CMD_TRANSFER:R.CMD_TRANSFER + R.TRANSFER_LEN] = buf.ljust(R.TRANSFER_LEN, b"\0")
        r[R.CMD_CHECKSUM] = R.checksum(bytes([code & 0xFF, code >> 8]) + buf, 0, 2 + len(buf))
        r[R.CMD_DATA_LEN] = len(buf) + R.SUB_OVERHEAD

    def _answer(self, code):
        """The data a read subcommand (or a Data Memory address) returns; None for a command."""
        if R.DM_FIRST <= code < R.DM_END:
            i = code - R.DM_FIRST
            return self._dm[i:i + R.TRANSFER_LEN]
        if code == R.SUB_DEVICE_NUMBER:
            return R.DEVICE_NUMBER_BQ76952.to_bytes(2, "little")
        if code == R.SUB_MFG_STATUS:
            return (R.MFG_FET_EN if self.fet_en else 0).to_bytes(2, "little")
        if code == R.SUB_CB_ACTIVE_CELLS:
            return self._cb.to_bytes(2, "little")
        if code == R.SUB_FET_CONTROL:
            return bytes([self.host_off])
        if code == R.SUB_DASTATUS6:
            whole = math.floor(self._passq)
            frac = min(int((self._passq - whole) * 2 ** 32), 0xFFFFFFFF)
            return ((whole & 0xFFFFFFFF).to_bytes(4, "little") + frac.to_bytes(4, "little")
                    + int(self._passq_s).to_bytes(4, "little") + bytes(20))
        return None

    def _command(self, code):
        r = self._regs
        r[R.CMD_SUBCMD] = code & 0xFF
        r[R.CMD_SUBCMD + 1] = code >> 8
        twice = self._armed is not None and self._armed[0] == code and self.now_ms - self._armed[1] <= 4000
        self._armed = (code, self.now_ms)
        if code == R.SUB_SET_CFGUPDATE:
            self.cfg_update = True
            self._cb = 0
        elif code == R.SUB_EXIT_CFGUPDATE:
            if self.cfg_update:
                self.cfg_update = False
                self._por = False
                self._timers.clear()
        elif code == R.SUB_FET_ENABLE:
            self.fet_en = not self.fet_en
        elif code == R.SUB_ALL_FETS_OFF:
            self.host_off = R.FC_CHG_OFF | R.FC_PCHG_OFF | R.FC_DSG_OFF | R.FC_PDSG_OFF
        elif code == R.SUB_ALL_FETS_ON:
            self.host_off = 0
        elif code == R.SUB_DSG_PDSG_OFF:
            self.host_off |= R.FC_DSG_OFF | R.FC_PDSG_OFF
        elif code == R.SUB_CHG_PCHG_OFF:
            self.host_off |= R.FC_CHG_OFF | R.FC_PCHG_OFF
        elif code == R.SUB_RESET_PASSQ:
            self._passq, self._passq_s = 0.5, 0.0
        elif code == R.SUB_RESET:
            self.power_on_reset()
        elif code == R.SUB_SHUTDOWN:
            self._sd_cmd = True
            if twice:  # unsealed, sent twice: no delays
                self._ship()
        elif code == R.SUB_DEEPSLEEP and twice:
            self.deepsleep = True
            self._cb = 0
        elif code == R.SUB_EXIT_DEEPSLEEP:
            self.deepsleep = False

    def _commit(self):
        """0x60/0x61 written: the data behind the code is taken when the
        checksum and length match (TRM 3.2)."""
        r = self._regs
        code = r[R.CMD_SUBCMD] | (r[R.CMD_SUBCMD + 1] << 8)
        n = r[R.CMD_DATA_LEN] - R.SUB_OVERHEAD
        if not 0 < n <= R.TRANSFER_LEN:
            self.checksum_errors += 1
            return
        data = bytes(r[R.CMD_TRANSFER:R.CMD_TRANSFER + n])
        if R.checksum(bytes(r[R.CMD_SUBCMD:R.CMD_SUBCMD + 2]) + data, 0, 2 + n) != r[R.CMD_CHECKSUM]:
            self.checksum_errors += 1
            return
        if R.DM_FIRST <= code < R.DM_END:
            if not self.cfg_update:
                self.dm_writes_refused += 1  # Data Memory is written only in CONFIG_UPDATE
                return
            i = code - R.DM_FIRST
            self._dm[i:i + n] = data
        elif code == R.SUB_FET_CONTROL:
            self.host_off = data[0] & 0x0F
        elif code == R.SUB_CB_ACTIVE_CELLS and n >= 2:
            self._set_balancing(int.from_bytes(data[:2], "little"))

    def _set_balancing(self, mask):
        """Host-controlled balancing, with the chip's rules (SLUAA81A): no
        two adjacent inputs, at most Cell Balance Max Cells; a request that
        breaks them is refused and counted."""
        used = self._dm_get(R.DM_VCELL_MODE, 2) or 0xFFFF
        mask &= used
        if mask & (mask >> 1) or cell_count(mask) > self._dm_get(R.DM_CB_MAX_CELLS, 1):
            self.adjacent_balance_violations += 1
            mask = 0
        if self.cfg_update or self.deepsleep:
            mask = 0
        self._cb = mask

    def _ship(self):
        self.shipped = True
        self._cb = 0
        self._pending = None

    # ------------------------------------------------------- physics
    def bleed_ma(self):
        """Balancing bleed current of each pack cell (mV / Ohm = mA)."""
        out = []
        for k, n in enumerate(self._cell_inputs):
            mv = self.pack.cell_mv(k)
            on = not self.shipped and self._cb >> n & 1 and mv > 0
            out.append(mv / self.bleed_ohm if on else 0.0)
        return out

    def tick(self, dt_ms, current_ma):
        """dt_ms of time at pack current current_ma (positive = charge)."""
        self._us += dt_ms * 1000
        self._run_pending()
        if self.shipped:
            self.now_ms += dt_ms
            return
        if self._sd_cmd:
            self._ship()  # a single SHUTDOWN: its delays (0 by default) have passed
            self.now_ms += dt_ms
            return
        measuring = not (self.cfg_update or self.deepsleep)
        k = self._gain(R.DM_CC_GAIN, _CC_GAIN_NOM)
        self._cc2_ma = (current_ma * k + self.cc_offset_ma) if measuring else 0.0
        if measuring:
            self._protect(dt_ms, current_ma)
            self._protect_temps(dt_ms)
            kq = self._gain(R.DM_CAP_GAIN, _CC_GAIN_NOM * _CAP_PER_CC)
            self._win_mas += (current_ma * kq + self.cc_offset_ma) * dt_ms / 1000.0
        self.now_ms += dt_ms
        if self.now_ms % R.CC_WINDOW_MS == 0:
            if measuring:  # CC1: one 250 ms conversion into the accumulated charge
                ua, _ = self._units()
                self._passq += self._win_mas / 3600.0 / ua
                self._passq_s += R.CC_WINDOW_MS / 1000.0
            self._win_mas = 0.0
        if measuring and self.now_ms >= self._next_scan:
            self._scan()
            # the measurement loop: scan_ms (21 slots of 3 ms) x 2**LOOP_SLOW (datasheet 9.3.1)
            every = self.scan_ms << ((self._dm_get(R.DM_POWER_CONFIG, 2) >> R.PC_LOOP_SLOW_SHIFT) & 3)
            self._next_scan = self.now_ms - self.now_ms % every + every
        self._sync()

    def _protect(self, dt_ms, current_ma):
        """Comparators with their delays; a fault recovers after the
        recovery time without its condition (SCD after its own)."""
        en = self._dm_get(R.DM_PROT_ENABLED_A, 1)
        cells = self._cell_mvs()
        vmax = max(cells) if cells else 0
        vmin = min(cells) if cells else 0
        shunt_mv = current_ma * self.shunt_uohm / 1e6  # + charge, - discharge
        g = self._dm_get
        step = R.COV_STEP_UV / 1000.0
        cond = {
            R.SA_COV: vmax >= g(R.DM_COV_THRESHOLD, 1) * step,
            R.SA_CUV: 0 < vmin <= g(R.DM_CUV_THRESHOLD, 1) * step,
            R.SA_OCC: shunt_mv >= 2 * g(R.DM_OCC_THRESHOLD, 1),
            R.SA_OCD1: -shunt_mv >= 2 * g(R.DM_OCD1_THRESHOLD, 1),
            R.SA_OCD2: -shunt_mv >= 2 * g(R.DM_OCD2_THRESHOLD, 1),
            R.SA_SCD: -shunt_mv >= R.SCD_MV[g(R.DM_SCD_THRESHOLD, 1) & 15],
        }
        delay = {R.SA_COV: (R.DM_COV_DELAY, 2), R.SA_CUV: (R.DM_CUV_DELAY, 2), R.SA_OCC: (R.DM_OCC_DELAY, 1),
                 R.SA_OCD1: (R.DM_OCD1_DELAY, 1), R.SA_OCD2: (R.DM_OCD2_DELAY, 1)}
        hyst = g(R.DM_COV_HYST, 1) * step
        alert = 0
        for bit, on in cond.items():
            if not en & bit:
                on = False
            if on:
                alert |= bit
                self._recover.pop(bit, None)
                held = self._timers.get(bit, 0) + dt_ms
                self._timers[bit] = held
                d_ms = 0.0 if bit == R.SA_SCD else R.DELAY_STEP_US * (2 + g(*delay[bit])) / 1000.0
                if held >= d_ms:
                    self._status_a |= bit
                continue
            self._timers.pop(bit, None)
            if self._status_a & bit:
                if bit == R.SA_COV and vmax > g(R.DM_COV_THRESHOLD, 1) * step - hyst:
                    continue
                gone = self._recover.get(bit, 0) + dt_ms
                self._recover[bit] = gone
                rec = g(R.DM_SCD_RECOVERY_S if bit == R.SA_SCD else R.DM_RECOVERY_S, 1) * 1000
                if gone >= rec:
                    self._status_a &= ~bit
                    self._recover.pop(bit, None)
        self._alert_a = alert

    def _protect_temps(self, dt_ms):
        """OTC/OTD/UTC/UTD (Protections B) on the cell thermistors' last
        readings (an open one reads cold): each after its delay in seconds,
        recovered at its recovery temperature."""
        g = self._dm_get
        en = g(R.DM_PROT_ENABLED_B, 1)
        ts = [self.word(R.CMD_TS1_TEMP + 2 * i) for i in range(3) if g(R.DM_TS1_CONFIG + i, 1)]
        ts = [t for t in ts if t]
        if not ts:
            return
        hot = max(ts) / 10.0 - 273.15
        cold = min(ts) / 10.0 - 273.15
        for k in range(4):
            bit = R.TEMP_BITS[k]
            key = ("B", bit)
            if not en & bit:
                self._status_b &= ~bit
                self._timers.pop(key, None)
                continue
            a = R.TEMP_ROWS[k]
            over = k < 2
            thr, rec = R.i1(g(a, 1)), R.i1(g(a + 2, 1))
            if hot >= thr if over else cold <= thr:
                held = self._timers.get(key, 0) + dt_ms
                self._timers[key] = held
                if held >= g(a + 1, 1) * 1000:
                    self._status_b |= bit
            else:
                self._timers.pop(key, None)
                if self._status_b & bit and (hot <= rec if over else cold >= rec):
                    self._status_b &= ~bit

    def _cell_mvs(self):
        """What the cell inputs in VCell Mode see (mV, floats)."""
        pack = self.pack
        inp = [0.0] * R.CELL_INPUTS
        for k, n in enumerate(self._cell_inputs):
            mv = pack.cell_mv(k)
            if self.noise_mv:
                mv += self._rng.uniform(-self.noise_mv, self.noise_mv)
            inp[n] += mv
        for k in self._open_wires:
            if k < len(self._cell_inputs):
                n = self._cell_inputs[k]
                if k + 1 < len(self._cell_inputs):
                    inp[self._cell_inputs[k + 1]] += inp[n]
                inp[n] = 0.0
        used = self._dm_get(R.DM_VCELL_MODE, 2) or 0xFFFF
        self._inputs_mv = inp
        return [inp[n] for n in range(R.CELL_INPUTS) if used >> n & 1]

    def _scan(self):
        """One ADC loop: cells, stack, pack and LD pins, temperatures."""
        self._cell_mvs()
        for n, mv in enumerate(self._inputs_mv):
            self._set_word(R.CMD_CELL1_VOLTAGE + 2 * n, round(mv))
        _, uv = self._units()
        stack = self.pack.pack_mv()
        self._set_word(R.CMD_STACK_VOLTAGE, round(stack / uv))
        on = self.chg_on or self.dsg_on
        self._set_word(R.CMD_PACK_VOLTAGE, round(stack / uv) if on else 0)
        load = self.load_sense() if self.load_sense else self.load_present
        # DSG off: the load-detect pull-up holds LD near the stack unless a load pulls it down
        self._set_word(R.CMD_LD_VOLTAGE, 0 if (load and not self.dsg_on) else round(stack / uv))
        self._set_word(R.CMD_INT_TEMP, round(self.die_temp_c * 10 + 2731.5))
        temps = self.pack.temperatures_c
        for i in range(3):
            cfg = self._dm_get(R.DM_TS1_CONFIG + i, 1)
            fault = self._ts_faults[i]
            if not cfg or i >= len(temps):
                dk = 0
            elif fault == "open":
                dk = _OPEN_DK
            elif fault == "short":
                dk = _SHORT_DK
            else:
                dk = round(temps[i] * 10 + 2731.5)
            self._set_word(R.CMD_TS1_TEMP + 2 * i, dk)
        self._alarm |= R.AL_ADSCAN | R.AL_FULLSCAN
