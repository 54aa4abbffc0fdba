"""The parameter table: every setting of the BMS, one row each.

Each row is a holding register (FC 03) and a slot in the firmware's value
array (the row order is bms.params' P_ indices; a test checks the names):

    (address, name, type, count, scale_exp, unit,
     min, max, default_lfp, default_nmc, default_lto, default_scale)

The first six fields are the register-map row (see bms.regmap). A value in
`unit` is raw * 10**scale_exp. default_scale says how a chemistry default
becomes the pack's: 0 as is, 1 times the cell count (pack voltages from a
per-cell value), 2 times the capacity in Ah (currents from a C-rate in mA
per Ah). Every parameter is read-write; the words for each are in
bms.spec.regdoc.

The firmware reads this table once at boot into compact arrays
(bms.params.Params) and then lets it go, so its tuples do not sit in the
device's heap; host tools import it as it is.
"""
from micropython import const

# default_scale
_ABS = const(0)
_CELLS = const(1)
_AH = const(2)

_U16 = "uint16"
_I16 = "int16"
_U32 = "uint32"

# fmt: off
TABLE = (
    # pack
    (0x0000, "chemistry", _U16, 1, 0, "", 0, 3, 0, 0, 0, _ABS),
    (0x0001, "cell_channels", _U16, 1, 0, "", 0, 0xFFFF, 0, 0, 0, _ABS),
    (0x0002, "capacity_mah", _U32, 1, -3, "Ah", 0, 2000000, 0, 0, 0, _ABS),
    (0x0004, "shunt_uohm", _U16, 1, -3, "mOhm", 50, 20000, 1000, 1000, 1000, _ABS),
    (0x0005, "afe_groups", _U16, 1, 0, "", 0, 3, 0, 0, 0, _ABS),
    (0x0006, "modbus_address", _U16, 1, 0, "", 1, 247, 1, 1, 1, _ABS),
    (0x0007, "modbus_baud", _U32, 1, 0, "baud", 9600, 115200, 19200, 19200, 19200, _ABS),
    (0x0009, "afe_addr", _U16, 1, 0, "", 8, 0x7F, 8, 8, 8, _ABS),
    (0x000A, "temp_sensors", _U16, 1, 0, "", 0, 7, 1, 1, 1, _ABS),
    (0x000B, "fet_temp_sensor", _U16, 1, 0, "", 0, 3, 0, 0, 0, _ABS),
    # cell and pack voltage protection
    (0x0010, "cell_ov_mv", _U16, 1, -3, "V", 1500, 5000, 3650, 4250, 2850, _ABS),
    (0x0011, "cell_ov_delay_ms", _U32, 1, -3, "s", 0, 60000, 2000, 2000, 2000, _ABS),
    (0x0013, "cell_ov_release_mv", _U16, 1, -3, "V", 1500, 5000, 3450, 4100, 2700, _ABS),
    (0x0014, "cell_ov_release_ms", _U32, 1, -3, "s", 0, 3600000, 2000, 2000, 2000, _ABS),
    (0x0016, "cell_uv_mv", _U16, 1, -3, "V", 1000, 4500, 2500, 3000, 1900, _ABS),
    (0x0017, "cell_uv_delay_ms", _U32, 1, -3, "s", 0, 60000, 2000, 2000, 2000, _ABS),
    (0x0019, "cell_uv_release_mv", _U16, 1, -3, "V", 1000, 4500, 3050, 3400, 2100, _ABS),
    (0x001A, "cell_uv_release_ms", _U32, 1, -3, "s", 0, 3600000, 2000, 2000, 2000, _ABS),
    (0x001C, "pack_ov_mv", _U32, 1, -3, "V", 3000, 80000, 3625, 4225, 2825, _CELLS),
    (0x001E, "pack_ov_delay_ms", _U32, 1, -3, "s", 0, 60000, 2000, 2000, 2000, _ABS),
    (0x0020, "pack_ov_release_mv", _U32, 1, -3, "V", 3000, 80000, 3450, 4100, 2700, _CELLS),
    (0x0022, "pack_ov_release_ms", _U32, 1, -3, "s", 0, 3600000, 2000, 2000, 2000, _ABS),
    (0x0024, "pack_uv_mv", _U32, 1, -3, "V", 3000, 80000, 2600, 3100, 2000, _CELLS),
    (0x0026, "pack_uv_delay_ms", _U32, 1, -3, "s", 0, 60000, 2000, 2000, 2000, _ABS),
    (0x0028, "pack_uv_release_mv", _U32, 1, -3, "V", 3000, 80000, 3050, 3400, 2100, _CELLS),
    (0x002A, "pack_uv_release_ms", _U32, 1, -3, "s", 0, 3600000, 2000, 2000, 2000, _ABS),
    # current protection (software, with delay) and the AFE's hardware backstop
    (0x0030, "chg_oc_ma", _U32, 1, -3, "A", 100, 500000, 1000, 1000, 2000, _AH),
    (0x0032, "chg_oc_delay_ms", _U32, 1, -3, "s", 0, 60000, 1000, 1000, 1000, _ABS),
    (0x0034, "chg_oc_release_ms", _U32, 1, -3, "s", 1000, 3600000, 30000, 30000, 30000, _ABS),
    (0x0036, "dsg_oc_ma", _U32, 1, -3, "A", 100, 500000, 1000, 1000, 2000, _AH),
    (0x0038, "dsg_oc_delay_ms", _U32, 1, -3, "s", 0, 60000, 1000, 1000, 1000, _ABS),
    (0x003A, "dsg_oc_release_ms", _U32, 1, -3, "s", 1000, 3600000, 30000, 30000, 30000, _ABS),
    (0x003C, "hw_ocd_ma", _U32, 1, -3, "A", 100, 1000000, 2000, 2000, 3000, _AH),
    (0x003E, "hw_ocd_delay_ms", _U16, 1, -3, "s", 8, 1280, 320, 320, 320, _ABS),
    (0x003F, "hw_scd_ma", _U32, 1, -3, "A", 100, 1000000, 4000, 4000, 6000, _AH),
    (0x0041, "hw_scd_delay_us", _U16, 1, -6, "s", 70, 400, 200, 200, 200, _ABS),
    (0x0042, "scd_retries", _U16, 1, 0, "", 0, 10, 3, 3, 3, _ABS),
    (0x0043, "scd_retry_ms", _U32, 1, -3, "s", 1000, 600000, 5000, 5000, 5000, _ABS),
    (0x0045, "hw_ov_mv", _U16, 1, -3, "V", 2000, 5000, 3750, 4300, 2900, _ABS),
    (0x0046, "hw_ov_delay_s", _U16, 1, 0, "s", 1, 8, 2, 2, 2, _ABS),
    (0x0047, "hw_uv_mv", _U16, 1, -3, "V", 1000, 4000, 2300, 2800, 1700, _ABS),
    (0x0048, "hw_uv_delay_s", _U16, 1, 0, "s", 1, 16, 4, 4, 4, _ABS),
    # temperature protection
    (0x0050, "chg_ot_dc", _I16, 1, -1, "degC", -400, 1200, 450, 450, 550, _ABS),
    (0x0051, "chg_ot_release_dc", _I16, 1, -1, "degC", -400, 1200, 400, 400, 500, _ABS),
    (0x0052, "chg_ut_dc", _I16, 1, -1, "degC", -400, 1200, 0, 0, -200, _ABS),
    (0x0053, "chg_ut_release_dc", _I16, 1, -1, "degC", -400, 1200, 50, 50, -150, _ABS),
    (0x0054, "dsg_ot_dc", _I16, 1, -1, "degC", -400, 1200, 600, 600, 650, _ABS),
    (0x0055, "dsg_ot_release_dc", _I16, 1, -1, "degC", -400, 1200, 550, 550, 600, _ABS),
    (0x0056, "dsg_ut_dc", _I16, 1, -1, "degC", -400, 1200, -200, -200, -300, _ABS),
    (0x0057, "dsg_ut_release_dc", _I16, 1, -1, "degC", -400, 1200, -150, -150, -250, _ABS),
    (0x0058, "fet_ot_dc", _I16, 1, -1, "degC", -400, 1500, 850, 850, 850, _ABS),
    (0x0059, "fet_ot_release_dc", _I16, 1, -1, "degC", -400, 1500, 750, 750, 750, _ABS),
    (0x005A, "temp_delay_ms", _U32, 1, -3, "s", 0, 60000, 2000, 2000, 2000, _ABS),
    (0x005C, "temp_release_ms", _U32, 1, -3, "s", 0, 3600000, 5000, 5000, 5000, _ABS),
    (0x005E, "fault_release_ms", _U32, 1, -3, "s", 250, 600000, 2000, 2000, 2000, _ABS),
    # warnings: reported, the FETs stay
    (0x0060, "cell_ov_warn_mv", _U16, 1, -3, "V", 1500, 5000, 3600, 4200, 2800, _ABS),
    (0x0061, "cell_uv_warn_mv", _U16, 1, -3, "V", 1000, 4500, 2800, 3200, 2000, _ABS),
    (0x0062, "chg_oc_warn_ma", _U32, 1, -3, "A", 100, 500000, 800, 800, 1600, _AH),
    (0x0064, "dsg_oc_warn_ma", _U32, 1, -3, "A", 100, 500000, 800, 800, 1600, _AH),
    (0x0066, "temp_high_warn_dc", _I16, 1, -1, "degC", -400, 1200, 400, 400, 500, _ABS),
    (0x0067, "temp_low_warn_dc", _I16, 1, -1, "degC", -400, 1200, 50, 50, -150, _ABS),
    (0x0068, "spread_warn_mv", _U16, 1, -3, "V", 5, 2000, 100, 100, 100, _ABS),
    (0x0069, "warn_delay_ms", _U32, 1, -3, "s", 0, 60000, 1000, 1000, 1000, _ABS),
    (0x006B, "warn_hyst_mv", _U16, 1, -3, "V", 1, 500, 20, 20, 20, _ABS),
    (0x006C, "warn_hyst_ma", _U32, 1, -3, "A", 1, 100000, 50, 50, 50, _AH),
    (0x006E, "warn_hyst_dc", _I16, 1, -1, "degC", 1, 200, 20, 20, 20, _ABS),
    # balancing
    (0x0070, "bal_start_mv", _U16, 1, -3, "V", 0, 5000, 3400, 3900, 2600, _ABS),
    (0x0071, "bal_diff_mv", _U16, 1, -3, "V", 1, 500, 10, 10, 10, _ABS),
    (0x0072, "bal_at_rest", _U16, 1, 0, "", 0, 1, 0, 0, 0, _ABS),
    (0x0073, "bal_min_idle_ms", _U32, 1, -3, "s", 0, 86400000, 1800000, 1800000, 1800000, _ABS),
    (0x0075, "bal_max_cells", _U16, 1, 0, "", 1, 16, 5, 5, 5, _ABS),
    (0x0076, "bal_max_temp_dc", _I16, 1, -1, "degC", -400, 1200, 450, 450, 450, _ABS),
    (0x0077, "rest_current_ma", _U16, 1, -3, "A", 1, 10000, 100, 100, 100, _ABS),
    # state of charge
    (0x0080, "full_cell_mv", _U16, 1, -3, "V", 1500, 5000, 3450, 4150, 2700, _ABS),
    (0x0081, "full_tail_ma", _U32, 1, -3, "A", 1, 100000, 50, 50, 50, _AH),
    (0x0083, "full_hold_ms", _U32, 1, -3, "s", 0, 3600000, 60000, 60000, 60000, _ABS),
    (0x0085, "empty_cell_mv", _U16, 1, -3, "V", 1000, 4500, 2800, 3100, 1950, _ABS),
    (0x0086, "empty_hold_ms", _U32, 1, -3, "s", 0, 600000, 10000, 10000, 10000, _ABS),
    (0x0088, "relax_chg_ms", _U32, 1, -3, "s", 0, 86400000, 7200000, 1800000, 1800000, _ABS),
    (0x008A, "relax_dsg_ms", _U32, 1, -3, "s", 0, 86400000, 10800000, 3600000, 3600000, _ABS),
    (0x0090, "ocv_0_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0091, "ocv_5_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0092, "ocv_10_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0093, "ocv_15_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0094, "ocv_20_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0095, "ocv_25_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0096, "ocv_30_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0097, "ocv_35_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0098, "ocv_40_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x0099, "ocv_45_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x009A, "ocv_50_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x009B, "ocv_55_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x009C, "ocv_60_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x009D, "ocv_65_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x009E, "ocv_70_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x009F, "ocv_75_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x00A0, "ocv_80_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x00A1, "ocv_85_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x00A2, "ocv_90_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x00A3, "ocv_95_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    (0x00A4, "ocv_100_mv", _U16, 1, -3, "V", 0, 5000, 0, 0, 0, _ABS),
    # coulomb-counter offset calibration
    (0x00A5, "cc_cal_every_ms", _U32, 1, -3, "s", 0, 259200000, 0, 0, 0, _ABS),
    (0x00A7, "cc_cal_rest_ms", _U32, 1, -3, "s", 60000, 86400000, 1800000, 1800000, 1800000, _ABS),
    # added in 0.4.0: serial framing and the write lock
    (0x000C, "modbus_parity", _U16, 1, 0, "", 0, 2, 1, 1, 1, _ABS),
    (0x00B0, "pin", _U16, 1, 0, "", 1, 65535, 1234, 1234, 1234, _ABS),
    (0x00B1, "unlock_timeout_s", _U16, 1, 0, "s", 10, 3600, 300, 300, 300, _ABS),
    # added in 0.5.0: power modes, the LED bar, the button, the watchdog
    (0x00B8, "lp_idle_ms", _U32, 1, -3, "s", 0, 86400000, 1800000, 1800000, 1800000, _ABS),
    (0x00BA, "lp_idle_ma", _U32, 1, -3, "A", 1, 100000, 20, 20, 20, _ABS),
    (0x00BC, "lp_check_ms", _U32, 1, -3, "s", 1000, 3600000, 60000, 60000, 60000, _ABS),
    (0x00BE, "sleep_uv_ms", _U32, 1, -3, "s", 0, 86400000, 300000, 300000, 300000, _ABS),
    (0x00C0, "led_count", _U16, 1, 0, "", 0, 5, 5, 5, 5, _ABS),
    (0x00C1, "led_brightness_pct", _U16, 1, 0, "%", 1, 100, 50, 50, 50, _ABS),
    (0x00C2, "led_soc_show_ms", _U32, 1, -3, "s", 500, 60000, 5000, 5000, 5000, _ABS),
    (0x00C4, "button_long_ms", _U16, 1, -3, "s", 1000, 10000, 3000, 3000, 3000, _ABS),
    (0x00C5, "wdt_ms", _U16, 1, -3, "s", 2000, 60000, 8000, 8000, 8000, _ABS),
    (0x00C6, "net_enable", _U16, 1, 0, "", 0, 1, 0, 0, 0, _ABS),
    # added in 0.5.0: the body diodes (docs/PROTECTION.md)
    (0x0049, "diode_on_ma", _U16, 1, -3, "A", 0, 50000, 1000, 1000, 1000, _ABS),
    # added in 0.6.0: the SOC window and storage mode (docs/POWER.md)
    (0x00C8, "soc_max_dpct", _U16, 1, -1, "%", 300, 1000, 1000, 1000, 1000, _ABS),
    (0x00C9, "soc_min_dpct", _U16, 1, -1, "%", 0, 700, 0, 0, 0, _ABS),
    (0x00CA, "soc_warn_low_dpct", _U16, 1, -1, "%", 0, 900, 0, 0, 0, _ABS),
    (0x00CB, "soc_hyst_dpct", _U16, 1, -1, "%", 10, 300, 50, 50, 50, _ABS),
    (0x00CC, "storage", _U16, 1, 0, "", 0, 1, 0, 0, 0, _ABS),
    (0x00CD, "storage_soc_dpct", _U16, 1, -1, "%", 200, 800, 500, 500, 500, _ABS),
    (0x00CE, "draw_counted", _U16, 1, 0, "", 0, 1, 1, 1, 1, _ABS),
    # added with the bq76952 (issue 18): the AFE chip (0 the bq769x0 family, what every older set means; 1 the bq76952)
    (0x000D, "afe_type", _U16, 1, 0, "", 0, 1, 0, 0, 0, _ABS),
)
# fmt: on
