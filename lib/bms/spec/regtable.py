"""The Modbus register map's rows: name, type, count, scale and unit of
every input register, and the control registers after the parameters.
Host-only (bms.spec is never on the device): bmsctl, the docs and the
generated host configs read it; the firmware reads its spans packed
(bms.gen.packed, `python -m bms_build.tablegen`). The addresses are
bms.regmap's constants, which the firmware uses too.

Each row: (address, name, type, count, scale_exp, unit)

- type: "uint16", "int16", "uint32", "int32"; 32-bit values take two
  registers, high word first. `count` > 1 is an array of that type.
- value in `unit` = raw register value * 10**scale_exp; the name carries the
  raw unit (cell_mv is millivolts, shown by a host as volts).
- input registers are read-only, holding registers (the parameters,
  bms.spec.paramtable) read-write; the words for each name are in
  bms.spec.regdoc.
"""
from bms.regmap import (
    EVENT_WINDOW, HR_COMMAND, HR_RESERVED, HR_RESERVED_COUNT, HR_UNLOCK, IR_AFE_BUS_ERRORS, IR_AFE_CRC_ERRORS,
    IR_AFE_STAT, IR_BALANCE_MASK, IR_CC_OFFSET, IR_CELL_COUNT, IR_CELL_MAX_MV, IR_CELL_MAX_NUM,
    IR_CELL_MIN_MV, IR_CELL_MIN_NUM, IR_CELL_MV, IR_CELL_SPREAD_MV, IR_CHG_OFF_REASON, IR_CONFIG_ERROR,
    IR_CONFIG_STATE, IR_CURRENT_MA, IR_CYCLES_DC, IR_DRAWN_MAH, IR_DRAW_UA, IR_DSG_OFF_REASON, IR_EVENTS,
    IR_EVENT_SEQ, IR_FAULTS, IR_FAULT_LAST, IR_FET_FLAGS, IR_FULL_CAPACITY_MAH, IR_HW_OCC_DELAY_MS,
    IR_HW_OCC_MA, IR_HW_OCD_DELAY_MS, IR_HW_OCD_MA, IR_HW_OTC_DC, IR_HW_OTD_DC, IR_HW_OV_MV,
    IR_HW_SCD_DELAY_US, IR_HW_SCD_MA, IR_HW_UTC_DC, IR_HW_UTD_DC, IR_HW_UV_MV, IR_IO_STATE, IR_LATCHED_FLAGS,
    IR_LIFE_CELL_MAX_MV, IR_LIFE_CELL_MIN_MV, IR_LIFE_CHG_MAH, IR_LIFE_DSG_MAH, IR_LIFE_ON_S,
    IR_LIFE_TEMP_MAX_DC, IR_LIFE_TEMP_MIN_DC, IR_LIFE_TRIPS, IR_MEAS_COUNT, IR_MODE_CAUSE, IR_MODE_TIME_S,
    IR_NET_BLOCK_MAX_MS, IR_NET_CONNECTS, IR_NET_DROPPED, IR_NET_ERROR, IR_NET_SENT, IR_NET_STATE,
    IR_NET_STORED, IR_PACK_MV, IR_PARAM_SAVES, IR_POWER_MODE, IR_PROTECT_FLAGS, IR_REMAINING_DWH,
    IR_REMAINING_MAH, IR_RESET_CAUSE, IR_SAVE_ERRORS, IR_SOC_DPCT, IR_SOC_OCV_FIXES, IR_SOC_RESTS, IR_SOC_STATE, IR_SOH_DPCT, IR_TEMP_DC,
    IR_TTE_MIN, IR_TTF_MIN, IR_UNLOCK_LEFT_S, IR_UPTIME_S, IR_WARN_FLAGS, MAX_CELLS, MAX_TEMPS,
)

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
    (IR_CONFIG_STATE, "config_state", "uint16", 1, 0, ""),
    (IR_CONFIG_ERROR, "config_error", "uint16", 1, 0, ""),
    (IR_UNLOCK_LEFT_S, "unlock_left_s", "uint16", 1, 0, "s"),
    (IR_PARAM_SAVES, "param_saves", "uint32", 1, 0, ""),
    (IR_LIFE_CHG_MAH, "life_chg_mah", "uint32", 1, -3, "Ah"),
    (IR_LIFE_DSG_MAH, "life_dsg_mah", "uint32", 1, -3, "Ah"),
    (IR_LIFE_ON_S, "life_on_s", "uint32", 1, 0, "s"),
    (IR_LIFE_CELL_MAX_MV, "life_cell_max_mv", "uint16", 1, -3, "V"),
    (IR_LIFE_CELL_MIN_MV, "life_cell_min_mv", "uint16", 1, -3, "V"),
    (IR_LIFE_TEMP_MAX_DC, "life_temp_max_dc", "int16", 1, -1, "degC"),
    (IR_LIFE_TEMP_MIN_DC, "life_temp_min_dc", "int16", 1, -1, "degC"),
    (IR_LIFE_TRIPS, "life_trips", "uint16", 1, 0, ""),
    (IR_POWER_MODE, "power_mode", "uint16", 1, 0, ""),
    (IR_MODE_CAUSE, "mode_cause", "uint16", 1, 0, ""),
    (IR_MODE_TIME_S, "mode_time_s", "uint32", 1, 0, "s"),
    (IR_RESET_CAUSE, "reset_cause", "uint16", 1, 0, ""),
    (IR_IO_STATE, "io_state", "uint16", 1, 0, ""),
    (IR_NET_STATE, "net_state", "uint16", 1, 0, ""),
    (IR_NET_ERROR, "net_error", "uint16", 1, 0, ""),
    (IR_NET_CONNECTS, "net_connects", "uint16", 1, 0, ""),
    (IR_NET_STORED, "net_stored", "uint16", 1, 0, ""),
    (IR_NET_DROPPED, "net_dropped", "uint32", 1, 0, ""),
    (IR_NET_SENT, "net_sent", "uint32", 1, 0, ""),
    (IR_NET_BLOCK_MAX_MS, "net_block_max_ms", "uint16", 1, -3, "s"),
    (IR_SAVE_ERRORS, "save_errors", "uint16", 1, 0, ""),
    (IR_FAULTS, "faults", "uint16", 1, 0, ""),
    (IR_FAULT_LAST, "fault_last", "uint16", 1, 0, ""),
    (IR_SOC_STATE, "soc_state", "uint16", 1, 0, ""),
    (IR_DRAW_UA, "draw_ua", "uint32", 1, -6, "A"),
    (IR_DRAWN_MAH, "drawn_mah", "uint32", 1, -3, "Ah"),
    (IR_SOC_RESTS, "soc_rests", "uint16", 1, 0, ""),
    (IR_SOC_OCV_FIXES, "soc_ocv_fixes", "uint16", 1, 0, ""),
    (IR_HW_OCC_MA, "hw_occ_applied_ma", "uint32", 1, -3, "A"),
    (IR_HW_OCC_DELAY_MS, "hw_occ_applied_delay_ms", "uint16", 1, -3, "s"),
    (IR_HW_OTC_DC, "hw_otc_applied_dc", "int16", 1, -1, "degC"),
    (IR_HW_OTD_DC, "hw_otd_applied_dc", "int16", 1, -1, "degC"),
    (IR_HW_UTC_DC, "hw_utc_applied_dc", "int16", 1, -1, "degC"),
    (IR_HW_UTD_DC, "hw_utd_applied_dc", "int16", 1, -1, "degC"),
)

HOLDING_CONTROLS = (
    (HR_RESERVED, "reserved", "uint16", HR_RESERVED_COUNT, 0, ""),
    (HR_UNLOCK, "unlock", "uint16", 1, 0, ""),
    (HR_COMMAND, "command", "uint16", 1, 0, ""),
)

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
