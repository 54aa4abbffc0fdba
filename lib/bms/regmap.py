"""The Modbus register map: the one table the firmware, `bmsctl`, the docs
and generated host configs all read.

Input registers (FC 04) hold measurements and state, refreshed once per
measurement cycle into a register image (see bms.app); holding registers
(FC 03) hold configuration. Each row:

    (address, name, type, count, scale_exp, unit, access, description)

- type: "uint16", "int16", "uint32", "int32"; 32-bit values take two
  registers, high word first. `count` > 1 is an array of that type.
- value in `unit` = raw register value * 10**scale_exp; the name carries the
  raw unit (cell_mv is millivolts, shown by a host as volts).
- access: "r" read-only, "rw" writable.

The address names below are used by the firmware to fill the image; the
tables are only walked at start-up and by host tools.
"""
from micropython import const

# Sentinel for a temperature with no sensor or a failed one (int16 -32768).
TEMP_INVALID = const(-32768)

# Input registers (FC 04)
IR_CELL_COUNT = const(0x0000)
IR_PACK_MV = const(0x0001)  # uint32
IR_CURRENT_MA = const(0x0003)  # int32
IR_CELL_MIN_MV = const(0x0005)
IR_CELL_MAX_MV = const(0x0006)
IR_CELL_SPREAD_MV = const(0x0007)
IR_CELL_MIN_NUM = const(0x0008)
IR_CELL_MAX_NUM = const(0x0009)
IR_TEMP_DC = const(0x000A)  # 3 x int16
IR_FET_FLAGS = const(0x000D)
IR_AFE_STAT = const(0x000E)
IR_FAULT_FLAGS = const(0x000F)
IR_UPTIME_S = const(0x0010)  # uint32
IR_MEAS_COUNT = const(0x0012)
IR_AFE_CRC_ERRORS = const(0x0013)
IR_AFE_BUS_ERRORS = const(0x0014)
IR_BALANCE_MASK = const(0x0015)
IR_CELL_MV = const(0x0020)  # 15 x uint16
IR_SIZE = const(0x002F)

MAX_CELLS = const(15)
MAX_TEMPS = const(3)

# FET flag bits (IR_FET_FLAGS), as read back from the AFE
FET_CHG = const(0x0001)
FET_DSG = const(0x0002)

# Fault flag bits (IR_FAULT_FLAGS): why the firmware is in doubt
FAULT_UNCONFIGURED = const(0x0001)
FAULT_AFE_COMM = const(0x0002)  # AFE not answering or CRC failing after retries
FAULT_AFE_RESET = const(0x0004)  # DEVICE_XREADY seen: the chip reset
FAULT_AFE_STALE = const(0x0008)  # no new measurement (CC_READY) in time
FAULT_TEMP_OPEN = const(0x0010)  # a thermistor reads open
FAULT_TEMP_SHORT = const(0x0020)  # a thermistor reads shorted
FAULT_CELL_IMPLAUSIBLE = const(0x0040)  # a cell reading outside 500..5000 mV
FAULT_AFE_TRIP = const(0x0080)  # the AFE tripped a FET on its own (see afe_stat)

FAULT_BITS = (
    (FAULT_UNCONFIGURED, "unconfigured", "No pack configuration stored: FETs stay off until one is committed"),
    (FAULT_AFE_COMM, "afe_comm", "The AFE does not answer on I2C or fails CRC after retries"),
    (FAULT_AFE_RESET, "afe_reset", "The AFE reset itself (DEVICE_XREADY); it is being reconfigured"),
    (FAULT_AFE_STALE, "afe_stale", "No fresh measurement from the AFE within two periods"),
    (FAULT_TEMP_OPEN, "temp_open", "A thermistor reads open circuit"),
    (FAULT_TEMP_SHORT, "temp_short", "A thermistor reads short circuit"),
    (FAULT_CELL_IMPLAUSIBLE, "cell_implausible", "A cell reading is outside 500-5000 mV (sense wire open?)"),
    (FAULT_AFE_TRIP, "afe_trip", "The AFE's hardware protection switched a FET off (see afe_stat)"),
)

INPUT_REGS = (
    (IR_CELL_COUNT, "cell_count", "uint16", 1, 0, "", "r", "Series cells configured"),
    (IR_PACK_MV, "pack_mv", "uint32", 1, -3, "V", "r", "Pack voltage measured by the AFE (BAT)"),
    (IR_CURRENT_MA, "current_ma", "int32", 1, -3, "A", "r", "Pack current, positive = charging; average over the last 250 ms coulomb-counter window"),
    (IR_CELL_MIN_MV, "cell_min_mv", "uint16", 1, -3, "V", "r", "Lowest cell voltage"),
    (IR_CELL_MAX_MV, "cell_max_mv", "uint16", 1, -3, "V", "r", "Highest cell voltage"),
    (IR_CELL_SPREAD_MV, "cell_spread_mv", "uint16", 1, -3, "V", "r", "Highest minus lowest cell voltage"),
    (IR_CELL_MIN_NUM, "cell_min_num", "uint16", 1, 0, "", "r", "Number (1-based) of the lowest cell"),
    (IR_CELL_MAX_NUM, "cell_max_num", "uint16", 1, 0, "", "r", "Number (1-based) of the highest cell"),
    (IR_TEMP_DC, "temp_dc", "int16", MAX_TEMPS, -1, "degC", "r", "Thermistors TS1..TS3; -32768 = no sensor or sensor fault"),
    (IR_FET_FLAGS, "fet_flags", "uint16", 1, 0, "", "r", "MOSFETs as read back from the AFE: bit 0 charge on, bit 1 discharge on"),
    (IR_AFE_STAT, "afe_stat", "uint16", 1, 0, "", "r", "AFE SYS_STAT fault bits seen in the last cycle: 0x20 XREADY, 0x10 OVRD_ALERT, 0x08 UV, 0x04 OV, 0x02 SCD, 0x01 OCD"),
    (IR_FAULT_FLAGS, "fault_flags", "uint16", 1, 0, "", "r", "Firmware fault bits (see the fault table); any bit keeps the FETs off"),
    (IR_UPTIME_S, "uptime_s", "uint32", 1, 0, "s", "r", "Seconds since the firmware started"),
    (IR_MEAS_COUNT, "meas_count", "uint16", 1, 0, "", "r", "Completed measurement cycles, wrapping at 65536: a host sees stale data when it stops moving"),
    (IR_AFE_CRC_ERRORS, "afe_crc_errors", "uint16", 1, 0, "", "r", "I2C CRC errors from the AFE since start (saturates)"),
    (IR_AFE_BUS_ERRORS, "afe_bus_errors", "uint16", 1, 0, "", "r", "I2C transfers the AFE did not acknowledge since start (saturates)"),
    (IR_BALANCE_MASK, "balance_mask", "uint16", 1, 0, "", "r", "Cells bleeding now: bit n = cell n+1"),
    (IR_CELL_MV, "cell_mv", "uint16", MAX_CELLS, -3, "V", "r", "Cell voltages, cell 1 (bottom) first; cells beyond cell_count read 0"),
)

# Holding registers (FC 03): the pack configuration the firmware runs with.
HR_CHEMISTRY = const(0x0000)
HR_CELL_CHANNELS = const(0x0001)
HR_CAPACITY_MAH = const(0x0002)  # uint32
HR_SHUNT_UOHM = const(0x0004)
HR_AFE_GROUPS = const(0x0005)
HR_MODBUS_ADDRESS = const(0x0006)
HR_MODBUS_BAUD = const(0x0007)  # uint32
HR_SIZE = const(0x0009)

CHEMISTRIES = ("none", "lfp", "nmc", "lto")

HOLDING_REGS = (
    (HR_CHEMISTRY, "chemistry", "uint16", 1, 0, "", "r", "Cell chemistry: 0 none (unconfigured), 1 LiFePO4, 2 NMC, 3 LTO"),
    (HR_CELL_CHANNELS, "cell_channels", "uint16", 1, 0, "", "r", "AFE cell inputs in use: bit n = input VC(n+1); the cell count is the number of bits set"),
    (HR_CAPACITY_MAH, "capacity_mah", "uint32", 1, -3, "Ah", "r", "Rated pack capacity"),
    (HR_SHUNT_UOHM, "shunt_uohm", "uint16", 1, -3, "mOhm", "r", "Current shunt resistance"),
    (HR_AFE_GROUPS, "afe_groups", "uint16", 1, 0, "", "r", "AFE model by cell groups: 1 bq76920, 2 bq76930, 3 bq76940"),
    (HR_MODBUS_ADDRESS, "modbus_address", "uint16", 1, 0, "", "r", "Modbus RTU slave address (1-247)"),
    (HR_MODBUS_BAUD, "modbus_baud", "uint32", 1, 0, "baud", "r", "RS485 baud rate (8 data bits, even parity, 1 stop bit)"),
)

WORDS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2}


def mapped_mask(table, size):
    """bytearray(size): 1 where an address of `table` is mapped.

    Built once at start-up so a request over an unmapped register gets
    exception 02 without walking the table.
    """
    m = bytearray(size)
    for row in table:
        n = WORDS[row[2]] * row[3]
        a = row[0]
        while n:
            m[a] = 1
            a += 1
            n -= 1
    return m
