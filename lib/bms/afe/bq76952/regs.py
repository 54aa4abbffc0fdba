"""TI bq76952 (bq769x2 family, 3-16 cells) commands, subcommands, Data
Memory addresses, bit fields and scalings.

One header for both sides: the firmware driver (bms.afe.bq76952) and the
host simulator's model of the chip (tools/bms_sim/afe/bq76952.py) import
these names, so the two cannot disagree about the chip. Nothing outside the
chip's folder imports it (tests/firmware/test_layers.py).

Sources: TI SLUUBY2B (BQ76952 Technical Reference Manual, "TRM" below;
chapter 12 commands and subcommands, chapter 13 Data Memory), SLUSE13
(datasheet), SLUAA11B (BQ769x2 Software Development Guide) and SLUAA81A
(cell balancing). Multi-byte values are little-endian on this chip.
"""
from micropython import const

from bms.afe import ST_OCD, ST_OV, ST_OVRD, ST_SCD, ST_UV, TEMP_OPEN, TEMP_SHORT, cell_count

DEV_ADDR = const(0x08)  # 7-bit I2C address (0x10 write / 0x11 read), datasheet default

# -- direct commands (TRM 12.1) -----------------------------------------
CMD_CONTROL_STATUS = const(0x00)
CMD_SAFETY_ALERT_A = const(0x02)  # A/B/C alert at 0x02/0x04/0x06, status one above
CMD_SAFETY_STATUS_A = const(0x03)
CMD_SAFETY_STATUS_B = const(0x05)
CMD_SAFETY_STATUS_C = const(0x07)
CMD_BATTERY_STATUS = const(0x12)
CMD_CELL1_VOLTAGE = const(0x14)  # cell n at 0x14 + 2 (n - 1), int16 mV, n = 1..16
CMD_STACK_VOLTAGE = const(0x34)  # userV (10 mV with DA Configuration USER_VOLTS_CV)
CMD_PACK_VOLTAGE = const(0x36)
CMD_LD_VOLTAGE = const(0x38)
CMD_CC2_CURRENT = const(0x3A)  # int16 userA, positive = charge
CMD_SUBCMD = const(0x3E)  # subcommand / Data Memory address, low byte; 0x3F high byte
CMD_TRANSFER = const(0x40)  # 32-byte transfer buffer 0x40..0x5F
CMD_CHECKSUM = const(0x60)  # ~(sum of 0x3E, 0x3F and the buffer bytes) & 0xFF
CMD_DATA_LEN = const(0x61)  # buffer bytes + 4 (0x3E, 0x3F, 0x60, 0x61)
CMD_ALARM_STATUS = const(0x62)  # latched, write 1 to clear
CMD_ALARM_RAW = const(0x64)
CMD_ALARM_ENABLE = const(0x66)
CMD_INT_TEMP = const(0x68)  # int16 0.1 K, the die
CMD_TS1_TEMP = const(0x70)  # TS1, TS2, TS3 at 0x70, 0x72, 0x74: int16 0.1 K
CMD_FET_STATUS = const(0x7F)
CMD_SPACE = const(0x80)  # direct commands are 7-bit

TRANSFER_LEN = const(32)
SUB_OVERHEAD = const(4)  # 0x3E, 0x3F, 0x60, 0x61 count in CMD_DATA_LEN
SUB_BUSY = const(0xFF)  # 0x3E/0x3F read 0xFF while a subcommand executes (TRM 3.1)

# -- subcommands (TRM 12.2 and 12.3) -------------------------------------
SUB_DEVICE_NUMBER = const(0x0001)  # U2, 0x7695 for the bq76952
SUB_EXIT_DEEPSLEEP = const(0x000E)
SUB_DEEPSLEEP = const(0x000F)  # twice within 4 s
SUB_SHUTDOWN = const(0x0010)  # twice: unsealed, the delays are skipped
SUB_RESET = const(0x0012)
SUB_FET_ENABLE = const(0x0022)  # toggles Manufacturing Status FET_EN
SUB_MFG_STATUS = const(0x0057)
SUB_DASTATUS6 = const(0x0076)  # the accumulated charge (PASSQ) and its time
SUB_RESET_PASSQ = const(0x0082)  # charge to 0.5 userAh, time to 0
SUB_CB_ACTIVE_CELLS = const(0x0083)  # U2 cell mask; a write needs checksum/length
SUB_SET_CFGUPDATE = const(0x0090)
SUB_EXIT_CFGUPDATE = const(0x0092)
SUB_DSG_PDSG_OFF = const(0x0093)
SUB_CHG_PCHG_OFF = const(0x0094)
SUB_ALL_FETS_OFF = const(0x0095)
SUB_ALL_FETS_ON = const(0x0096)
SUB_FET_CONTROL = const(0x0097)  # U1 host FET-off bits; a write needs checksum/length
SUB_SLEEP_DISABLE = const(0x009A)

DEVICE_NUMBER_BQ76952 = const(0x7695)

# DASTATUS6 layout (TRM 12.3): int32 charge (userAh), uint32 fraction (userAh / 2**32),
# uint32 time (s)
PASSQ_INT = const(0)
PASSQ_FRAC = const(4)

# FET_CONTROL data bits (host FET-off state)
FC_DSG_OFF = const(0x01)
FC_PDSG_OFF = const(0x02)
FC_CHG_OFF = const(0x04)
FC_PCHG_OFF = const(0x08)

# Manufacturing Status
MFG_FET_EN = const(0x0010)  # 0 = FET test mode: the FETs never switch on their own

# -- Data Memory (TRM 13) ------------------------------------------------
DM_FIRST = const(0x9180)  # addresses below are subcommands
DM_END = const(0x9400)
DM_CC_GAIN = const(0x91A8)  # F4 (an IEEE-754 float's bits): 75684 / (10000 x Rsense in mOhm) (TRM 10.2)
DM_CAP_GAIN = const(0x91AC)  # F4: CC Gain x CAP_GAIN_NUM / CAP_GAIN_DEN
DM_POWER_CONFIG = const(0x9234)  # H2
DM_PROT_ENABLED_A = const(0x9261)  # H1, bits as Safety Status A
DM_PROT_ENABLED_B = const(0x9262)
DM_CHG_FET_PROT_A = const(0x9265)  # which faults switch the CHG FET off
DM_DSG_FET_PROT_A = const(0x9269)  # ... the DSG FET
DM_CHG_FET_PROT_B = const(0x9266)  # the same for Protections B (temperatures)
DM_DSG_FET_PROT_B = const(0x926A)
DM_DEFAULT_ALARM_MASK = const(0x926D)  # H2, Alarm Enable after reset
DM_CUV_THRESHOLD = const(0x9275)  # U1, 50.6 mV
DM_CUV_DELAY = const(0x9276)  # U2, 3.3 ms x (2 + setting)
DM_COV_THRESHOLD = const(0x9278)
DM_COV_DELAY = const(0x9279)
DM_COV_HYST = const(0x927C)  # U1, 50.6 mV
DM_OCC_THRESHOLD = const(0x9280)  # U1, 2 mV across the shunt
DM_OCC_DELAY = const(0x9281)  # U1, 3.3 ms x (2 + setting)
DM_OCD1_THRESHOLD = const(0x9282)
DM_OCD1_DELAY = const(0x9283)
DM_OCD2_THRESHOLD = const(0x9284)
DM_OCD2_DELAY = const(0x9285)
DM_SCD_THRESHOLD = const(0x9286)  # U1, index into SCD_MV
DM_SCD_DELAY = const(0x9287)  # U1, 15 us x (setting - 1)
DM_SCD_RECOVERY_S = const(0x9294)
DM_RECOVERY_S = const(0x92AF)  # Protections:Recovery:Time
# temperature protections (TRM 13.3.12): threshold I1 degC, delay U1 s,
# recovery I1 degC, three bytes each from these
DM_OTC_THRESHOLD = const(0x929A)
DM_OTD_THRESHOLD = const(0x929D)
DM_UTC_THRESHOLD = const(0x92A6)
DM_UTD_THRESHOLD = const(0x92A9)
DM_TS1_CONFIG = const(0x92FD)  # TS1, TS2, TS3 configs at 0x92FD..0x92FF
DM_DA_CONFIG = const(0x9303)
DM_VCELL_MODE = const(0x9304)  # H2: bit n = cell input n+1 has a cell
DM_FET_OPTIONS = const(0x9308)
DM_CB_CONFIG = const(0x9335)
DM_CB_MAX_CELLS = const(0x933A)

# Protections A bits (Safety Alert/Status A, Enabled Protections A, FET Protections A)
SA_CUV = const(0x04)
SA_COV = const(0x08)
SA_OCC = const(0x10)
SA_OCD1 = const(0x20)
SA_OCD2 = const(0x40)
SA_SCD = const(0x80)
# Safety B
SB_UTC = const(0x01)
SB_UTD = const(0x02)
SB_OTC = const(0x10)
SB_OTD = const(0x20)
# Safety C
SC_HWDF = const(0x02)
SC_PTO = const(0x04)
SC_COVL = const(0x10)
SC_OCDL = const(0x20)
SC_SCDL = const(0x40)
SC_OCD3 = const(0x80)

# Defaults (TRM 13): Enabled Protections A = SCD | COV; CHG FET Protections A
# = SCD | OCC | COV; DSG FET Protections A = SCD | OCD2 | OCD1 | CUV
PROT_A_DEFAULT = const(0x88)
CHG_FET_PROT_A_DEFAULT = const(0x98)
DSG_FET_PROT_A_DEFAULT = const(0xE4)
# The firmware's protection table (bms.spec.protrules): a short or an
# over-current on discharge switches only the DSG FET off, so the chip's
# CHG FET answers over-voltage and charge over-current alone
CHG_FET_PROT_A_HOST = const(0x18)  # COV | OCC

# Battery Status (0x12) bits
BS_CFGUPDATE = const(0x0001)
BS_POR = const(0x0008)  # set at reset, cleared when CONFIG_UPDATE is left
BS_SS = const(0x0800)  # a Safety Status bit is set
BS_PF = const(0x1000)
BS_SD_CMD = const(0x2000)
BS_SLEEP = const(0x8000)

# Alarm Status / Raw / Enable bits
AL_ADSCAN = const(0x0002)  # a voltage scan completed
AL_CB = const(0x0004)  # cell balancing active
AL_XDSG = const(0x0020)  # the DSG FET is off
AL_XCHG = const(0x0040)
AL_FULLSCAN = const(0x0080)  # a full scan (cells, temperatures) completed
AL_INITCOMP = const(0x0200)
AL_INITSTART = const(0x0400)
AL_SSA = const(0x4000)  # Safety Status A has a bit set
AL_SSBC = const(0x8000)  # ... B or C
ALARM_MASK_DEFAULT = const(0xF800)
# The host's mask: ALERT also at each voltage scan (ADSCAN), which LOOP_SLOW
# below paces at 252 ms, so the firmware's cycle keeps the bq769x0's rhythm
# (CC_READY every 250 ms); the charge (PASSQ) needs no alignment to it
ALARM_MASK_HOST = const(0xF802)

# Settings:Configuration:Power Config (TRM 13.3.2, default 0x2982): LOOP_SLOW
# (bits 3:2) sets the measurement loop, 63 ms x 2**setting (datasheet 9.3.1)
POWER_CONFIG_DEFAULT = const(0x2982)
PC_LOOP_SLOW_SHIFT = const(2)
POWER_CONFIG_HOST = const(0x298A)  # the default with LOOP_SLOW 2: a voltage scan every 252 ms

# FET Status (0x7F) bits
FS_CHG = const(0x01)
FS_DSG = const(0x04)

# Control Status (0x00)
CS_DEEPSLEEP = const(0x04)

# FET Options: series FETs, host commands allowed, the chip drives the FETs,
# and after a reset they stay off until the host allows them
FO_SFET = const(0x01)
FO_HOST_FET_EN = const(0x04)
FO_FET_CTRL_EN = const(0x08)
FO_FET_INIT_OFF = const(0x20)
FET_OPTIONS_DEFAULT = const(0x0D)

# DA Configuration: USER_AMPS bits 1:0 (0.1, 1, 10, 100 mA); USER_VOLTS_CV
# (bit 2) puts stack/pack/LD in 10 mV; TINT_EN (bit 3)
DA_USER_VOLTS_CV = const(0x04)
DA_DEFAULT = const(0x05)
USER_AMPS_1MA = const(1)
USER_AMPS_10MA = const(2)
USER_AMPS_100MA = const(3)

TS_THERMISTOR = const(0x07)  # TSn Config: thermistor, 18 k pull-up model, cell temperature
TS1_CONFIG_DEFAULT = const(0x07)
TS3_CONFIG_DEFAULT = const(0x07)

# Scalings
COV_STEP_UV = const(50600)  # COV/CUV thresholds: 50.6 mV steps
COV_MIN = const(20)  # 1.012 V
COV_MAX = const(110)  # 5.566 V
CUV_MIN = const(20)
CUV_MAX = const(90)  # 4.554 V
DELAY_STEP_US = const(3300)  # COV/CUV/OCC/OCD delay: 3.3 ms x (2 + setting)
VDELAY_MAX = const(2047)
IDELAY_MAX = const(127)
OC_STEP_UV = const(2000)  # OCC/OCD thresholds: 2 mV across the shunt
OCC_MIN = const(2)
OCC_MAX = const(62)
OCD_MIN = const(2)
OCD_MAX = const(100)
SCD_DELAY_STEP_US = const(15)
SCD_DELAY_MAX = const(31)
DK_ZERO_C = const(2732)  # 0.1 K at 0 degC (273.15 K)
CC_RANGE_UV = const(200000)  # the coulomb counter's input range, +-200 mV
CC_WINDOW_MS = const(250)  # CC1: one conversion per 250 ms (datasheet 7.16)
TS_OPEN_DK = const(2232)  # below -50.0 degC: the thermistor is open (its ADC at full scale)
TS_SHORT_DK = const(4232)  # above 150.0 degC: shorted
LD_LOAD_MV = const(1000)  # DSG off, load detect pulling up: a load holds LD below this
# CC Gain (TRM 10.2) = 75684 / (10000 x Rsense in mOhm) = 75684 / (10 x shunt_uohm);
# integers only: f32_bits() makes the float's bits
CC_GAIN_NUM = const(75684)
# Capacity Gain = CC Gain x CAP_GAIN_NUM / CAP_GAIN_DEN (TRM 10.2; not const:
# past 2**30, used once at configure)
CAP_GAIN_NUM = 2982616178
CAP_GAIN_DEN = const(10000)

# SCD thresholds, mV across the shunt, by Protections:SCD:Threshold setting
SCD_MV = (10, 20, 40, 60, 80, 100, 125, 150, 175, 200, 250, 300, 350, 400, 450, 500)

CELL_INPUTS = const(16)
FAMILY = (
    # name, cell inputs, min cells, max cells
    ("bq76952", 16, 3, 16),
)


def cell_channels_for(cells):
    """Bit mask of the cell inputs a board with `cells` series cells uses:
    the bottom cells-1 inputs and the top one (VC16), the unused inputs
    shorted below the top (datasheet "Unused cell inputs"); 0 when the
    count does not fit."""
    if cells < 3 or cells > CELL_INPUTS:
        return 0
    return ((1 << (cells - 1)) - 1) | (1 << (CELL_INPUTS - 1))


def channels_fit(mask):
    """True when the cell inputs in `mask` suit a bq76952 board: 3 to 16
    inputs, the top one (VC16, the cell under the stack's top) among them."""
    return not mask >> CELL_INPUTS and 3 <= cell_count(mask) and bool(mask >> (CELL_INPUTS - 1))


TS_INPUTS = const(3)  # thermistors on TS1..TS3 (the driver configures them)


def checksum(buf, start, end, csum=0):
    """The subcommand checksum: the complement of the byte sum over
    buf[start:end] (continuing `csum`, a running sum), as 0x60 holds it."""
    i = start
    while i < end:
        csum += buf[i]
        i += 1
    return ~csum & 0xFF


def f32_bits(num, den):
    """IEEE-754 single-precision bits of num / den (> 0), rounded to
    nearest, in integers (start-up only: the Data Memory's gains are floats)."""
    e = 0
    while num >= den << (e + 1):
        e += 1
    while num < den << e:
        e -= 1
    # mantissa with 23 fraction bits: num / den / 2**e in [1, 2)
    if e >= 23:
        m = (2 * num // (den << (e - 23)) + 1) // 2
    else:
        m = (2 * (num << (23 - e)) // den + 1) // 2
    if m >= 1 << 24:
        m >>= 1
        e += 1
    return ((e + 127) << 23) | (m & 0x7FFFFF)


def gain_bits(shunt_uohm):
    """(CC Gain, Capacity Gain) as IEEE-754 single bits, computed in integers
    (no float on the heap): 75684 / (10000 x Rsense in mOhm), and that x
    CAP_GAIN_NUM / CAP_GAIN_DEN (TRM 10.2). Boot only: the products are
    long ints on the ESP32."""
    den = 10 * shunt_uohm
    return (f32_bits(CC_GAIN_NUM, den),
            f32_bits(CC_GAIN_NUM * CAP_GAIN_NUM, den * CAP_GAIN_DEN))


def user_amps(shunt_uohm):
    """(DA Configuration USER_AMPS code, userA in mA): the finest unit whose
    int16 still spans the coulomb counter's +-200 mV on this shunt."""
    full_ma = CC_RANGE_UV * 1000 // shunt_uohm
    if full_ma <= 32767:
        return USER_AMPS_1MA, 1
    if full_ma <= 327670:
        return USER_AMPS_10MA, 10
    return USER_AMPS_100MA, 100


def allowed_balance_inputs(chan, max_cells):
    """Of adjacent inputs keep the lower one, and at most max_cells inputs
    (the chip's rules for host-controlled balancing, SLUAA81A)."""
    out = 0
    n = 0
    i = 0
    while i < CELL_INPUTS and n < max_cells:
        if chan & (1 << i) and not out & (1 << (i - 1) if i else 0):
            out |= 1 << i
            n += 1
        i += 1
    return out


def clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


def delay_setting(ms, most):
    """A COV/CUV (most VDELAY_MAX) or OCC/OCD (IDELAY_MAX) delay setting at
    or below ms: 3.3 ms x (2 + setting)."""
    return clamp(ms * 1000 // DELAY_STEP_US - 2, 1, most)


def backstop(shunt, ov_mv, ov_delay_s, uv_mv, uv_delay_s, ocd_ma, ocd_delay_ms, scd_ma, scd_delay_us,
             occ_ma, occ_delay_ms):
    """((Data Memory address, value, bytes), ...) of the chip's protection
    for the firmware's limits, each on the safe side (OV at or below, UV at
    or above, currents and delays at or below; TRM 5.2), OCC only when
    occ_ma > 0 and within the comparator's range."""
    cov = clamp(ov_mv * 1000 // COV_STEP_UV, COV_MIN, COV_MAX)
    cuv = clamp(-(-uv_mv * 1000 // COV_STEP_UV), CUV_MIN, CUV_MAX)
    ocd = clamp(ocd_ma * shunt // (1000 * OC_STEP_UV), OCD_MIN, OCD_MAX)
    occ = occ_ma * shunt // (1000 * OC_STEP_UV)
    if occ > OCC_MAX:
        occ_ma = 0  # beyond its range: left off, not clamped to trip inside the firmware's limit
    occ = clamp(occ, OCC_MIN, OCC_MAX)
    scd_mv = scd_ma * shunt // 1000000
    scd = 0
    t = SCD_MV
    while scd + 1 < len(t) and t[scd + 1] <= scd_mv:
        scd += 1
    # delays: 3.3 ms x (2 + setting), SCD 15 us x (setting - 1)
    return ((DM_COV_THRESHOLD, cov, 1), (DM_COV_DELAY, delay_setting(ov_delay_s * 1000, VDELAY_MAX), 2),
            (DM_CUV_THRESHOLD, cuv, 1), (DM_CUV_DELAY, delay_setting(uv_delay_s * 1000, VDELAY_MAX), 2),
            (DM_OCD1_THRESHOLD, ocd, 1), (DM_OCD1_DELAY, delay_setting(ocd_delay_ms, IDELAY_MAX), 1),
            (DM_OCC_THRESHOLD, occ, 1), (DM_OCC_DELAY, delay_setting(occ_delay_ms, IDELAY_MAX), 1),
            (DM_SCD_THRESHOLD, scd, 1),
            (DM_SCD_DELAY, clamp(scd_delay_us // SCD_DELAY_STEP_US + 1, 1, SCD_DELAY_MAX), 1),
            (DM_PROT_ENABLED_A, SA_SCD | SA_OCD1 | SA_COV | SA_CUV | (SA_OCC if occ_ma > 0 else 0), 1),
            (DM_CHG_FET_PROT_A, CHG_FET_PROT_A_HOST, 1), (DM_DSG_FET_PROT_A, DSG_FET_PROT_A_DEFAULT, 1))


TEMP_MIN_C = const(-40)  # the thresholds' range (I1 degC)
TEMP_MAX_C = const(120)
TEMP_RECOVERY_C = const(5)  # a temperature fault recovers this far back inside its threshold
TEMP_DELAY_S = const(2)  # the chip's default delay
# the order of temp_backstop()'s thresholds: OTC, OTD, UTC, UTD
TEMP_ROWS = (DM_OTC_THRESHOLD, DM_OTD_THRESHOLD, DM_UTC_THRESHOLD, DM_UTD_THRESHOLD)
TEMP_BITS = (SB_OTC, SB_OTD, SB_UTC, SB_UTD)


def temp_backstop(otc_c, otd_c, utc_c, utd_c):
    """((Data Memory address, value, bytes), ...) of the chip's temperature
    protection on the cell thermistors: OTC/OTD (over, charge/discharge)
    and UTC/UTD (under), whole degC, each on the safe side as given (the
    caller puts them outside the firmware's limits), recovering
    TEMP_RECOVERY_C back inside; OTC and UTC switch the CHG FET off, OTD
    and UTD the DSG FET. Signed bytes are written as their two's
    complement."""
    out = []
    for k, c in enumerate((otc_c, otd_c, utc_c, utd_c)):
        c = clamp(c, TEMP_MIN_C, TEMP_MAX_C)
        rec = c - TEMP_RECOVERY_C if k < 2 else c + TEMP_RECOVERY_C
        a = TEMP_ROWS[k]
        out.append((a, c & 0xFF, 1))
        out.append((a + 1, TEMP_DELAY_S, 1))
        out.append((a + 2, rec & 0xFF, 1))
    out.append((DM_PROT_ENABLED_B, SB_OTC | SB_OTD | SB_UTC | SB_UTD, 1))
    out.append((DM_CHG_FET_PROT_B, SB_OTC | SB_UTC, 1))
    out.append((DM_DSG_FET_PROT_B, SB_OTD | SB_UTD, 1))
    return out


def i1(b):
    """A Data Memory I1 byte as a signed value."""
    return b - 256 if b > 127 else b


def dk_to_dc(dk):
    """A thermistor reading in 0.1 K to 0.1 degC, or TEMP_OPEN / TEMP_SHORT."""
    if dk < TS_OPEN_DK:
        return TEMP_OPEN
    if dk > TS_SHORT_DK:
        return TEMP_SHORT
    return dk - DK_ZERO_C


def status_bits(sa, sb, sc):
    """The firmware's ST_ bits for Safety Status A, B, C. The chip's OCC and
    temperature, watchdog and precharge faults have no bit of their own:
    ST_OVRD, "the chip switched a FET off for another reason"."""
    st = 0
    if sa & SA_COV or sc & SC_COVL:
        st |= ST_OV
    if sa & SA_CUV:
        st |= ST_UV
    if sa & (SA_OCD1 | SA_OCD2) or sc & (SC_OCD3 | SC_OCDL):
        st |= ST_OCD
    if sa & SA_SCD or sc & SC_SCDL:
        st |= ST_SCD
    if sa & SA_OCC or sb or sc & (SC_HWDF | SC_PTO):
        st |= ST_OVRD
    return st
