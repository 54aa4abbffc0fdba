"""The parameter table: every setting of the BMS, once.

Each row is a holding register (FC 03) and a slot in the firmware's value
array. The firmware, the register map, `bmsctl` and the docs all read this
table. Row:

    (address, name, type, count, scale_exp, unit,
     min, max, default_lfp, default_nmc, default_lto, default_scale)

The first six fields are the register-map row (see bms.regmap). A value
in `unit` is raw * 10**scale_exp. Every parameter is read-write; what each
means, in words, is in bms.regdoc (host side: the firmware never loads the
text, to keep it out of the device's heap). default_scale says how a chemistry default
becomes the pack's: 0 as is, 1 times the cell count (pack voltages from a
per-cell value), 2 times the capacity in Ah (currents from a C-rate in mA
per Ah).

Values live in an array('l') indexed by the P_ constants below; the loop
reads them with `values[P_X]`, never by name.
"""
from array import array

from micropython import const

# default_scale
_ABS = const(0)
_CELLS = const(1)
_AH = const(2)

CHEM_NONE = const(0)
CHEM_LFP = const(1)
CHEM_NMC = const(2)
CHEM_LTO = const(3)
CHEMISTRY_NAMES = ("none", "lfp", "nmc", "lto")

# Indices into the value array (the row order of TABLE).
P_CHEMISTRY = const(0)
P_CELL_CHANNELS = const(1)
P_CAPACITY_MAH = const(2)
P_SHUNT_UOHM = const(3)
P_AFE_GROUPS = const(4)
P_MODBUS_ADDRESS = const(5)
P_MODBUS_BAUD = const(6)
P_AFE_ADDR = const(7)
P_TEMP_SENSORS = const(8)
P_FET_TEMP_SENSOR = const(9)
P_CELL_OV_MV = const(10)
P_CELL_OV_DELAY_MS = const(11)
P_CELL_OV_RELEASE_MV = const(12)
P_CELL_OV_RELEASE_MS = const(13)
P_CELL_UV_MV = const(14)
P_CELL_UV_DELAY_MS = const(15)
P_CELL_UV_RELEASE_MV = const(16)
P_CELL_UV_RELEASE_MS = const(17)
P_PACK_OV_MV = const(18)
P_PACK_OV_DELAY_MS = const(19)
P_PACK_OV_RELEASE_MV = const(20)
P_PACK_OV_RELEASE_MS = const(21)
P_PACK_UV_MV = const(22)
P_PACK_UV_DELAY_MS = const(23)
P_PACK_UV_RELEASE_MV = const(24)
P_PACK_UV_RELEASE_MS = const(25)
P_CHG_OC_MA = const(26)
P_CHG_OC_DELAY_MS = const(27)
P_CHG_OC_RELEASE_MS = const(28)
P_DSG_OC_MA = const(29)
P_DSG_OC_DELAY_MS = const(30)
P_DSG_OC_RELEASE_MS = const(31)
P_HW_OCD_MA = const(32)
P_HW_OCD_DELAY_MS = const(33)
P_HW_SCD_MA = const(34)
P_HW_SCD_DELAY_US = const(35)
P_SCD_RETRIES = const(36)
P_SCD_RETRY_MS = const(37)
P_HW_OV_MV = const(38)
P_HW_OV_DELAY_S = const(39)
P_HW_UV_MV = const(40)
P_HW_UV_DELAY_S = const(41)
P_CHG_OT_DC = const(42)
P_CHG_OT_RELEASE_DC = const(43)
P_CHG_UT_DC = const(44)
P_CHG_UT_RELEASE_DC = const(45)
P_DSG_OT_DC = const(46)
P_DSG_OT_RELEASE_DC = const(47)
P_DSG_UT_DC = const(48)
P_DSG_UT_RELEASE_DC = const(49)
P_FET_OT_DC = const(50)
P_FET_OT_RELEASE_DC = const(51)
P_TEMP_DELAY_MS = const(52)
P_TEMP_RELEASE_MS = const(53)
P_FAULT_RELEASE_MS = const(54)
P_CELL_OV_WARN_MV = const(55)
P_CELL_UV_WARN_MV = const(56)
P_CHG_OC_WARN_MA = const(57)
P_DSG_OC_WARN_MA = const(58)
P_TEMP_HIGH_WARN_DC = const(59)
P_TEMP_LOW_WARN_DC = const(60)
P_SPREAD_WARN_MV = const(61)
P_WARN_DELAY_MS = const(62)
P_WARN_HYST_MV = const(63)
P_WARN_HYST_MA = const(64)
P_WARN_HYST_DC = const(65)
P_BAL_START_MV = const(66)
P_BAL_DIFF_MV = const(67)
P_BAL_AT_REST = const(68)
P_BAL_MIN_IDLE_MS = const(69)
P_BAL_MAX_CELLS = const(70)
P_BAL_MAX_TEMP_DC = const(71)
P_REST_CURRENT_MA = const(72)
COUNT = const(73)

_U16 = "uint16"
_I16 = "int16"
_U32 = "uint32"

# fmt: off
TABLE = (
    # pack
    (0x0000, "chemistry", _U16, 1, 0, "", 0, 3, 0, 0, 0, _ABS),
    (0x0001, "cell_channels", _U16, 1, 0, "", 0, 0x7FFF, 0, 0, 0, _ABS),
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
    (0x0075, "bal_max_cells", _U16, 1, 0, "", 1, 15, 5, 5, 5, _ABS),
    (0x0076, "bal_max_temp_dc", _I16, 1, -1, "degC", -400, 1200, 450, 450, 450, _ABS),
    (0x0077, "rest_current_ma", _U16, 1, -3, "A", 1, 10000, 100, 100, 100, _ABS),
)
# fmt: on

_F_MIN = const(6)
_F_MAX = const(7)
_F_DEF = const(8)  # + chemistry - 1
_F_SCALE = const(11)


def index_of(name):
    i = 0
    for row in TABLE:
        if row[1] == name:
            return i
        i += 1
    return -1


class Params:
    """The parameter values the firmware runs with."""

    def __init__(self):
        self.values = array("l", [0] * COUNT)
        self.errors = []
        for i in range(COUNT):
            self.values[i] = TABLE[i][_F_DEF]

    def cells(self):
        from bms.bq769x0 import cell_count

        return cell_count(self.values[P_CELL_CHANNELS])

    def configured(self):
        v = self.values
        return (v[P_CHEMISTRY] != CHEM_NONE and self.cells() >= 3 and v[P_CAPACITY_MAH] > 0
                and v[P_TEMP_SENSORS] != 0)

    def apply_defaults(self, chemistry, cells, capacity_mah):
        """The chemistry's defaults scaled to this pack, for every protection,
        warning and balancing parameter (the pack's own settings stay)."""
        v = self.values
        for i in range(P_CELL_OV_MV, COUNT):
            row = TABLE[i]
            d = row[_F_DEF + chemistry - 1] if chemistry else row[_F_DEF]
            s = row[_F_SCALE]
            if s == _CELLS:
                d *= cells
            elif s == _AH:
                d = d * capacity_mah // 1000
            v[i] = d

    def set_value(self, i, value):
        """Set parameter i if within its range; an error message or None."""
        row = TABLE[i]
        if value < row[_F_MIN] or value > row[_F_MAX]:
            return "%s=%d is outside %d..%d %s" % (row[1], value, row[_F_MIN], row[_F_MAX], _raw_unit(row))
        self.values[i] = value
        return None

    def set_text(self, key, text):
        """Set a parameter from `key=value` text; an error message or None."""
        if key == "chemistry":
            if text not in CHEMISTRY_NAMES[1:]:
                return "chemistry must be one of lfp, nmc, lto"
            self.values[P_CHEMISTRY] = CHEMISTRY_NAMES.index(text)
            return None
        if key == "cells":
            # shorthand: the default wiring for that many cells
            from bms.bq769x0 import default_cell_channels, model_groups

            try:
                n = int(text)
            except ValueError:
                return "cells must be a whole number"
            groups = self.values[P_AFE_GROUPS] or model_groups(n)
            mask = default_cell_channels(n, groups)
            if not mask:
                return "cells must be 3-15 and fit the AFE (3-5 per group)"
            self.values[P_CELL_CHANNELS] = mask
            self.values[P_AFE_GROUPS] = groups
            return None
        i = index_of(key)
        if i < 0:
            return "unknown parameter " + key
        try:
            value = int(text, 0)
        except ValueError:
            return key + " must be a whole number"
        return self.set_value(i, value)

    def load_lines(self, lines):
        """`key=value` lines (any iterable; a file is read twice): the pack
        keys first, then the chemistry's defaults for that pack, then every
        other setting over them. Line by line, to spare the heap at boot."""
        for line in lines:
            kv = _pair(line)
            if kv and kv[0] in _PACK_KEYS:
                self._note(self.set_text(kv[0], kv[1]))
        v = self.values
        if v[P_CELL_CHANNELS] and not v[P_AFE_GROUPS]:
            from bms.bq769x0 import model_groups

            v[P_AFE_GROUPS] = model_groups(self.cells())
        self.apply_defaults(v[P_CHEMISTRY], self.cells(), v[P_CAPACITY_MAH])

    def load_rest(self, lines):
        for line in lines:
            kv = _pair(line)
            if kv is None:
                if line.strip() and line.strip()[0] != "#":
                    self.errors.append("not key=value: " + line.strip())
            elif kv[0] not in _PACK_KEYS:
                self._note(self.set_text(kv[0], kv[1]))

    def load_text(self, text):
        lines = text.split("\n")
        self.load_lines(lines)
        self.load_rest(lines)

    def _note(self, err):
        if err:
            self.errors.append(err)

    def to_text(self):
        """The pack keys, then every parameter that differs from the
        chemistry's default for this pack."""
        v = self.values
        d = Params()
        d.values[P_CHEMISTRY] = v[P_CHEMISTRY]
        d.values[P_CELL_CHANNELS] = v[P_CELL_CHANNELS]
        d.apply_defaults(v[P_CHEMISTRY], self.cells(), v[P_CAPACITY_MAH])
        out = []
        if v[P_CHEMISTRY]:
            out.append("chemistry=%s\n" % CHEMISTRY_NAMES[v[P_CHEMISTRY]])
        for i in range(1, COUNT):
            if i < P_CELL_OV_MV or v[i] != d.values[i]:
                out.append("%s=%d\n" % (TABLE[i][1], v[i]))
        return "".join(out)


_PACK_KEYS = ("chemistry", "cells", "afe_groups", "cell_channels", "capacity_mah")


def _pair(line):
    line = line.strip()
    if not line or line[0] == "#":
        return None
    kv = line.split("=", 1)
    if len(kv) != 2:
        return None
    return kv[0].strip(), kv[1].strip()


def _raw_unit(row):
    # the raw unit is in the name (cell_ov_mv is mV)
    name = row[1]
    k = name.rfind("_")
    return name[k + 1:] if k >= 0 else ""


CONFIG_FILE = "bms.cfg"


def load(directory):
    """The stored parameters, or the unconfigured defaults when none are stored."""
    p = Params()
    try:
        with open(directory + CONFIG_FILE) as f:
            p.load_lines(f)
        with open(directory + CONFIG_FILE) as f:
            p.load_rest(f)
    except OSError:
        pass
    return p
