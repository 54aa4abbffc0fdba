"""Consistency rules over the whole parameter set: one row per rule.

A parameter set is accepted only when every value is inside its own range
(bms.params) and, once the pack is configured, every rule below holds. The
firmware checks a Modbus write with these before it changes anything;
`bmsctl` checks a profile with the same rows before it sends anything, and
the docs list them (bms.spec.regdoc words them from the row).

A row is three bytes: kind, a, b (a and b are bms.params P_ indices, or for
SPECIAL which check). `check()` returns 0, or the failing row's number + 1.
Allocation-free: it walks bytes and the value array.
"""
from micropython import const

from bms import params as P
from bms.afe import cell_count

LT = const(0)  # v[a] < v[b]
CHEM_MAX = const(1)  # v[a] <= the chemistry's highest cell voltage
CHEM_MIN = const(2)  # v[a] >= the chemistry's lowest cell voltage
PACK_MAX = const(3)  # v[a] <= cells * the chemistry's highest cell voltage
PACK_MIN = const(4)  # v[a] >= cells * the chemistry's lowest cell voltage
SPECIAL = const(5)

# SPECIAL checks
S_CELLS = const(0)  # cell_channels fits the AFE: a bq769x0's afe_groups (3-5 inputs a group, each group's top
#                     input used), or a bq76952 (3-16 inputs, VC16 used; afe_groups ignored)
S_SENSORS = const(1)  # the thermistor inputs fitted exist on this AFE (one per group; a bq76952's three)
S_FET_SENSOR = const(2)  # the FET sensor is 0 (none) or one of the fitted ones
S_OCV = const(3)  # the OCV table is all zero (the chemistry's) or rises at every point
S_BAUD = const(4)  # a standard baud rate
S_SOC_WINDOW = const(5)  # soc_min + hyst below soc_max - hyst; soc_warn_low 0 (off) or above soc_min

# The chemistry's absolute cell limits, mV (index: bms.params CHEM_*).
# No setting may charge a cell above the maximum or discharge it below the
# minimum, whatever the user asks.
CELL_MAX_MV = (0, 3900, 4350, 3000)
CELL_MIN_MV = (0, 2000, 2500, 1500)

_BQ76952_INPUTS = const(16)  # afe_type 1
_BQ76952_TS = const(3)

BAUDS = (9600, 19200, 38400, 57600, 115200)

# fmt: off
RULES = bytes((
    # releases inside their trips
    LT, P.P_CELL_OV_RELEASE_MV, P.P_CELL_OV_MV,
    LT, P.P_CELL_UV_MV, P.P_CELL_UV_RELEASE_MV,
    LT, P.P_CELL_UV_RELEASE_MV, P.P_CELL_OV_RELEASE_MV,
    LT, P.P_PACK_OV_RELEASE_MV, P.P_PACK_OV_MV,
    LT, P.P_PACK_UV_MV, P.P_PACK_UV_RELEASE_MV,
    LT, P.P_PACK_UV_RELEASE_MV, P.P_PACK_OV_RELEASE_MV,
    LT, P.P_CHG_OT_RELEASE_DC, P.P_CHG_OT_DC,
    LT, P.P_CHG_UT_DC, P.P_CHG_UT_RELEASE_DC,
    LT, P.P_CHG_UT_RELEASE_DC, P.P_CHG_OT_RELEASE_DC,
    LT, P.P_DSG_OT_RELEASE_DC, P.P_DSG_OT_DC,
    LT, P.P_DSG_UT_DC, P.P_DSG_UT_RELEASE_DC,
    LT, P.P_DSG_UT_RELEASE_DC, P.P_DSG_OT_RELEASE_DC,
    LT, P.P_FET_OT_RELEASE_DC, P.P_FET_OT_DC,
    # warnings before protections
    LT, P.P_CELL_OV_WARN_MV, P.P_CELL_OV_MV,
    LT, P.P_CELL_UV_MV, P.P_CELL_UV_WARN_MV,
    LT, P.P_CELL_UV_WARN_MV, P.P_CELL_OV_WARN_MV,
    LT, P.P_CHG_OC_WARN_MA, P.P_CHG_OC_MA,
    LT, P.P_DSG_OC_WARN_MA, P.P_DSG_OC_MA,
    LT, P.P_TEMP_HIGH_WARN_DC, P.P_CHG_OT_DC,
    LT, P.P_TEMP_HIGH_WARN_DC, P.P_DSG_OT_DC,
    LT, P.P_CHG_UT_DC, P.P_TEMP_LOW_WARN_DC,
    LT, P.P_DSG_UT_DC, P.P_TEMP_LOW_WARN_DC,
    # the AFE's hardware backstop outside the firmware's limits
    LT, P.P_CELL_OV_MV, P.P_HW_OV_MV,
    LT, P.P_HW_UV_MV, P.P_CELL_UV_MV,
    LT, P.P_DSG_OC_MA, P.P_HW_OCD_MA,
    LT, P.P_HW_OCD_MA, P.P_HW_SCD_MA,
    # full-charge detection below the over-voltage trip
    LT, P.P_FULL_CELL_MV, P.P_CELL_OV_MV,
    LT, P.P_CELL_UV_MV, P.P_EMPTY_CELL_MV,
    # inside the chemistry's absolute limits
    CHEM_MAX, P.P_CELL_OV_MV, 0,
    CHEM_MAX, P.P_HW_OV_MV, 0,
    CHEM_MIN, P.P_CELL_UV_MV, 0,
    CHEM_MIN, P.P_HW_UV_MV, 0,
    PACK_MAX, P.P_PACK_OV_MV, 0,
    PACK_MIN, P.P_PACK_UV_MV, 0,
    # the pack's wiring
    SPECIAL, S_CELLS, 0,
    SPECIAL, S_SENSORS, 0,
    SPECIAL, S_FET_SENSOR, 0,
    SPECIAL, S_OCV, 0,
    SPECIAL, S_BAUD, 0,
    # the SOC window (docs/POWER.md): storage inside it, the stops apart
    LT, P.P_SOC_MIN_DPCT, P.P_STORAGE_SOC_DPCT,
    LT, P.P_STORAGE_SOC_DPCT, P.P_SOC_MAX_DPCT,
    SPECIAL, S_SOC_WINDOW, 0,
))
# fmt: on
RULE_COUNT = const(42)


def configured(v):
    """The pack keys are set: the whole set must then pass every rule."""
    return (v[P.P_CHEMISTRY] != P.CHEM_NONE and cell_count(v[P.P_CELL_CHANNELS]) >= 3
            and v[P.P_CAPACITY_MAH] > 0 and v[P.P_TEMP_SENSORS] != 0)


def check(v, every=False):
    """0 when the set `v` (values by P_ index) passes the rules, else the
    number (1-based) of the first rule it breaks. Rules apply once the pack
    is configured; before that only the framing rules (baud) do, unless
    `every`."""
    full = every or configured(v)
    chem = v[P.P_CHEMISTRY]
    if chem < 0 or chem > 3:
        chem = 0
    cells = cell_count(v[P.P_CELL_CHANNELS])
    k = 0
    n = len(RULES)
    while k < n:
        kind = RULES[k]
        a = RULES[k + 1]
        b = RULES[k + 2]
        k += 3
        if kind == SPECIAL:
            if (full or a == S_BAUD) and not _special(v, a):
                return k // 3
            continue
        if not full:
            continue
        if kind == LT:
            ok = v[a] < v[b]
        elif chem == 0:
            ok = True  # no chemistry: no absolute limits to hold to
        elif kind == CHEM_MAX:
            ok = v[a] <= CELL_MAX_MV[chem]
        elif kind == CHEM_MIN:
            ok = v[a] >= CELL_MIN_MV[chem]
        elif kind == PACK_MAX:
            ok = v[a] <= cells * CELL_MAX_MV[chem]
        else:
            ok = v[a] >= cells * CELL_MIN_MV[chem]
        if not ok:
            return k // 3
    return 0


def _special(v, which):
    if which == S_SOC_WINDOW:
        h = v[P.P_SOC_HYST_DPCT]
        w = v[P.P_SOC_WARN_LOW_DPCT]
        return v[P.P_SOC_MIN_DPCT] + h < v[P.P_SOC_MAX_DPCT] - h and (w == 0 or w > v[P.P_SOC_MIN_DPCT])
    groups = v[P.P_AFE_GROUPS]
    if v[P.P_AFE_TYPE]:
        # a bq76952: one group of 16 inputs, three thermistors (bms.afe.bq76952.regs channels_fit and
        # TS_INPUTS; this layer may not import the chips: tests/firmware/test_afe_select.py holds the two equal)
        groups = 1
        if which == S_CELLS:
            return _groups_fit(v[P.P_CELL_CHANNELS], 1, _BQ76952_INPUTS)
        if which == S_SENSORS:
            return v[P.P_TEMP_SENSORS] < (1 << _BQ76952_TS)
    if which == S_CELLS:
        return channels_fit(v[P.P_CELL_CHANNELS], groups)
    if which == S_SENSORS:
        return groups >= 1 and v[P.P_TEMP_SENSORS] < (1 << groups)
    if which == S_FET_SENSOR:
        f = v[P.P_FET_TEMP_SENSOR]
        return f == 0 or (v[P.P_TEMP_SENSORS] >> (f - 1)) & 1 == 1
    if which == S_OCV:
        first = v[P.P_OCV_0_MV]
        k = 1
        if first == 0:
            while k < P.OCV_POINTS:
                if v[P.P_OCV_0_MV + k]:
                    return False
                k += 1
            return True
        while k < P.OCV_POINTS:
            if v[P.P_OCV_0_MV + k] <= v[P.P_OCV_0_MV + k - 1]:
                return False
            k += 1
        return True
    # S_BAUD
    b = v[P.P_MODBUS_BAUD]
    k = 0
    while k < len(BAUDS):
        if b == BAUDS[k]:
            return True
        k += 1
    return False


def channels_fit(mask, groups):
    """True when the cell inputs in `mask` suit a bq769x0 of `groups` 5-cell
    groups: 3-5 inputs in every group, each group's top input (VC5) used,
    none beyond the last group."""
    return 1 <= groups <= 3 and _groups_fit(mask, groups, 5)


def _groups_fit(mask, groups, width):
    """3..width inputs in each of `groups` groups of `width` inputs, each
    group's top input used, none beyond the last group."""
    if mask >> (width * groups):
        return False
    g = 0
    while g < groups:
        part = (mask >> (width * g)) & ((1 << width) - 1)
        n = cell_count(part)
        if n < 3 or not part >> (width - 1):
            return False
        g += 1
    return True


def rule(k):
    """(kind, a, b) of rule number k (1-based)."""
    i = (k - 1) * 3
    return RULES[i], RULES[i + 1], RULES[i + 2]
