"""The Modbus register map: the one table the firmware, `bmsctl`, the docs
and generated host configs all read.

Input registers (FC 04) hold measurements and state, refreshed once per
measurement cycle into a register image (see bms.app); holding registers
(FC 03) hold the parameters, whose table is bms.params. Each row starts

    (address, name, type, count, scale_exp, unit, ...)

- type: "uint16", "int16", "uint32", "int32"; 32-bit values take two
  registers, high word first. `count` > 1 is an array of that type.
- value in `unit` = raw register value * 10**scale_exp; the name carries the
  raw unit (cell_mv is millivolts, shown by a host as volts).
- input registers are read-only, holding registers read-write; the words
  for each name are in bms.regdoc (host side).

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
IR_PROTECT_FLAGS = const(0x000F)  # uint32
IR_WARN_FLAGS = const(0x0011)  # uint32
IR_CHG_OFF_REASON = const(0x0013)
IR_DSG_OFF_REASON = const(0x0014)
IR_LATCHED_FLAGS = const(0x0015)  # uint32
IR_UPTIME_S = const(0x0017)  # uint32
IR_MEAS_COUNT = const(0x0019)
IR_AFE_CRC_ERRORS = const(0x001A)
IR_AFE_BUS_ERRORS = const(0x001B)
IR_BALANCE_MASK = const(0x001C)
IR_EVENT_SEQ = const(0x001E)  # uint32
IR_CELL_MV = const(0x0020)  # 15 x uint16
IR_HW_OV_MV = const(0x0030)
IR_HW_UV_MV = const(0x0031)
IR_HW_OCD_MA = const(0x0032)  # uint32
IR_HW_OCD_DELAY_MS = const(0x0034)
IR_HW_SCD_MA = const(0x0035)  # uint32
IR_HW_SCD_DELAY_US = const(0x0037)
IR_SOC_DPCT = const(0x0038)
IR_SOH_DPCT = const(0x0039)
IR_TTE_MIN = const(0x003A)
IR_TTF_MIN = const(0x003B)
IR_REMAINING_MAH = const(0x003C)  # uint32
IR_FULL_CAPACITY_MAH = const(0x003E)  # uint32
IR_EVENTS = const(0x0040)  # EVENT_WINDOW records of EVENT_WORDS registers
EVENT_WINDOW = const(15)
EVENT_WORDS = const(8)
IR_REMAINING_DWH = const(0x00B8)  # uint32
IR_CYCLES_DC = const(0x00BA)  # uint32
IR_CC_OFFSET = const(0x00BC)  # int16
IR_SIZE = const(0x00BD)

MAX_CELLS = const(15)
MAX_TEMPS = const(3)

# FET flag bits (IR_FET_FLAGS), as read back from the AFE
FET_CHG = const(0x0001)
FET_DSG = const(0x0002)

INPUT_REGS = (
    (IR_CELL_COUNT, "cell_count", "uint16", 1, 0, ""),
    (IR_PACK_MV, "pack_mv", "uint32", 1, -3, "V"),
    (IR_CURRENT_MA, "current_ma", "int32", 1, -3, "A"),
    (IR_CELL_MIN_MV, "cell_min_mv", "uint16", 1, -3, "V"),
    (IR_CELL_MAX_MV, "cell_max_mv", "uint16", 1, -3, "V"),
    (IR_CELL_SPREAD_MV, "cell_spread_mv", "uint16", 1, -3, "V"),
    (IR_CELL_MIN_NUM, "cell_min_num", "uint16", 1, 0, ""),
    (IR_CELL_MAX_NUM, "cell_max_num", "uint16", 1, 0, ""),
    (IR_TEMP_DC, "temp_dc", "int16", MAX_TEMPS, -1, "degC"),
    (IR_FET_FLAGS, "fet_flags", "uint16", 1, 0, ""),
    (IR_AFE_STAT, "afe_stat", "uint16", 1, 0, ""),
    (IR_PROTECT_FLAGS, "protect_flags", "uint32", 1, 0, ""),
    (IR_WARN_FLAGS, "warn_flags", "uint32", 1, 0, ""),
    (IR_CHG_OFF_REASON, "chg_off_reason", "uint16", 1, 0, ""),
    (IR_DSG_OFF_REASON, "dsg_off_reason", "uint16", 1, 0, ""),
    (IR_LATCHED_FLAGS, "latched_flags", "uint32", 1, 0, ""),
    (IR_UPTIME_S, "uptime_s", "uint32", 1, 0, "s"),
    (IR_MEAS_COUNT, "meas_count", "uint16", 1, 0, ""),
    (IR_AFE_CRC_ERRORS, "afe_crc_errors", "uint16", 1, 0, ""),
    (IR_AFE_BUS_ERRORS, "afe_bus_errors", "uint16", 1, 0, ""),
    (IR_BALANCE_MASK, "balance_mask", "uint16", 1, 0, ""),
    (IR_EVENT_SEQ, "event_seq", "uint32", 1, 0, ""),
    (IR_CELL_MV, "cell_mv", "uint16", MAX_CELLS, -3, "V"),
    (IR_HW_OV_MV, "hw_ov_applied_mv", "uint16", 1, -3, "V"),
    (IR_HW_UV_MV, "hw_uv_applied_mv", "uint16", 1, -3, "V"),
    (IR_HW_OCD_MA, "hw_ocd_applied_ma", "uint32", 1, -3, "A"),
    (IR_HW_OCD_DELAY_MS, "hw_ocd_applied_delay_ms", "uint16", 1, -3, "s"),
    (IR_HW_SCD_MA, "hw_scd_applied_ma", "uint32", 1, -3, "A"),
    (IR_HW_SCD_DELAY_US, "hw_scd_applied_delay_us", "uint16", 1, -6, "s"),
    (IR_SOC_DPCT, "soc_dpct", "uint16", 1, -1, "%"),
    (IR_SOH_DPCT, "soh_dpct", "uint16", 1, -1, "%"),
    (IR_TTE_MIN, "tte_min", "uint16", 1, 0, "min"),
    (IR_TTF_MIN, "ttf_min", "uint16", 1, 0, "min"),
    (IR_REMAINING_MAH, "remaining_mah", "uint32", 1, -3, "Ah"),
    (IR_FULL_CAPACITY_MAH, "full_capacity_mah", "uint32", 1, -3, "Ah"),
    (IR_EVENTS, "events", "event", EVENT_WINDOW, 0, ""),
    (IR_REMAINING_DWH, "remaining_dwh", "uint32", 1, -1, "Wh"),
    (IR_CYCLES_DC, "cycles_dc", "uint32", 1, -2, ""),
    (IR_CC_OFFSET, "cc_offset_dlsb", "int16", 1, 0, ""),
)

# Holding registers (FC 03): the parameters, one row each of
# bms.paramtable.TABLE (host tools read it there; the firmware maps them
# from bms.params.Params).
HR_SIZE = const(0x00A9)

WORDS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "event": 8}


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
