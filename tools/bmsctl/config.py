"""Parameter handling for bmsctl, with no Modbus in it: names and units,
`NAME=VALUE` parsing, validation of a whole set with the firmware's own
code (bms.params ranges, bms.paramcheck rules), and profiles (JSON files
of a whole set). The order of the writes is bmsctl.planner's.

A parameter value is kept raw, as the register holds it (cell_ov_mv in
mV); shown and typed in engineering units (raw * 10**scale_exp in the
table's unit: 3.650 V).
"""
import difflib
import json
from decimal import Decimal, InvalidOperation

from bms import paramcheck as C
from bms import params as P
from bms import paramload as PL
from bms.spec import paramtable as PT
from bms.spec import regdoc as D
from bms import regmap as M
from bms.spec import regtable as RT
from bmsctl.afe import AfeError, afe_cells, afe_name, cell_range, setup_chip

ROWS = PT.TABLE
COUNT = len(ROWS)
NAMES = [r[1] for r in ROWS]
INDEX = {r[1]: i for i, r in enumerate(ROWS)}
WIDTH = [RT.WORDS[r[2]] for r in ROWS]

# The same range facts the firmware builds from the table (bms.params.Params).
PRM = P.Params()

# What a change needs (bms.config): the pack keys take effect at a restart,
# the serial settings right after the reply.
PACK_KEYS = (P.P_CHEMISTRY, P.P_CELL_CHANNELS, P.P_CAPACITY_MAH, P.P_SHUNT_UOHM,
             P.P_AFE_GROUPS, P.P_AFE_ADDR, P.P_TEMP_SENSORS, P.P_FET_TEMP_SENSOR, P.P_AFE_TYPE)
COMM_KEYS = (P.P_MODBUS_ADDRESS, P.P_MODBUS_BAUD, P.P_MODBUS_PARITY)
PROFILE_FORMAT = "bms-profile"
PROFILE_VERSION = 1

# The raw unit a parameter's name ends in: `cell_ov` is cell_ov_mv in volts.
_RAW_SUFFIXES = ("mv", "ma", "mah", "ms", "us", "s", "dc", "uohm", "dpct")


class ConfigError(ValueError):
    """Bad input: the message names the problem and what to do."""


def short_name(name):
    k = name.rfind("_")
    if k > 0 and name[k + 1:] in _RAW_SUFFIXES:
        return name[:k]
    return None


SHORT = {}
for _i, _n in enumerate(NAMES):
    _s = short_name(_n)
    if _s:
        SHORT.setdefault(_s, []).append(_i)


# -- units -------------------------------------------------------------------

_PREFIX = {"": Decimal(1), "m": Decimal("0.001"), "u": Decimal("0.000001"), "\u00b5": Decimal("0.000001"),
           "k": Decimal(1000)}
# table unit -> (accepted base spellings, lower case; the table unit in base units; prefixes allowed)
_UNITS = {
    "V": (("v",), Decimal(1), "mukµ"),
    "A": (("a",), Decimal(1), "mukµ"),
    "Ah": (("ah",), Decimal(1), "mk"),
    "s": (("s",), Decimal(1), "muµ"),
    "mOhm": (("ohm", "\u03c9", "\u2126"), Decimal("0.001"), "mukµ"),
    "degC": (("c", "degc", "\u00b0c", "deg"), Decimal(1), ""),
    "baud": (("baud", "bd"), Decimal(1), "k"),
    "%": (("%", "pct"), Decimal(1), ""),
}
_EXTRA = {"s": {"min": Decimal(60), "h": Decimal(3600)}}


def unit_factor(unit, suffix):
    """How many of the table unit `unit` one `suffix` is (Decimal), or None
    when the suffix does not fit that unit. Case-insensitive."""
    s = suffix.strip().lower()
    if unit not in _UNITS:
        return None
    bases, unit_in_base, prefixes = _UNITS[unit]
    if s in _EXTRA.get(unit, {}):
        return _EXTRA[unit][s]
    for base in bases:
        if s.endswith(base):
            pre = s[:-len(base)]
            if pre == "" or (len(pre) == 1 and pre in prefixes):
                return _PREFIX[pre] / unit_in_base
    return None


def raw_unit(i):
    """The unit of the raw register value of parameter i (mV, ms, 0.1 degC)."""
    row = ROWS[i]
    exp, unit = row[4], row[5]
    if not exp:
        return unit
    if unit == "mOhm" and exp == -3:
        return "uOhm"
    pre = {-3: "m", -6: "u"}.get(exp)
    if pre and unit in ("V", "A", "Ah", "s"):
        return pre + unit
    return "%g %s" % (10.0 ** exp, unit)


def eng(i, raw):
    """The engineering value of parameter i (a float, or the int itself when unscaled)."""
    exp = ROWS[i][4]
    if not exp:
        return raw
    return round(raw * 10.0 ** exp, -exp)


def eng_text(i, raw, unit=True):
    """`3.650 V` for cell_ov_mv 3650."""
    row = ROWS[i]
    exp = row[4]
    s = ("%.*f" % (-exp, raw * 10.0 ** exp)) if exp < 0 else str(raw)
    return s + (" " + row[5] if unit and row[5] else "")


def range_text(i):
    return "%s..%s" % (eng_text(i, PRM.lo[i], unit=False), eng_text(i, PRM.hi[i]))


def value_text(i, raw):
    """`cell_ov_mv=9999 (9.999 V)`; the engineering part only when it differs."""
    row = ROWS[i]
    if i == P.P_CHEMISTRY:
        return "chemistry=%d (%s)" % (raw, P.CHEMISTRY_NAMES[raw] if 0 <= raw < 4 else "?")
    if row[4] or row[5]:
        return "%s=%d (%s)" % (row[1], raw, eng_text(i, raw))
    return "%s=%d" % (row[1], raw)


def display(i, raw):
    """How `config get` shows a value."""
    if i == P.P_PIN:
        return "(never read back)"
    if i == P.P_CHEMISTRY:
        return P.CHEMISTRY_NAMES[raw] if 0 <= raw < len(P.CHEMISTRY_NAMES) else str(raw)
    if i == P.P_CELL_CHANNELS:
        return "0x%04X (%d cells)" % (raw, bin(raw).count("1"))
    if i == P.P_MODBUS_PARITY:
        return {0: "none", 1: "even", 2: "odd"}.get(raw, str(raw))
    return eng_text(i, raw)


# -- names -------------------------------------------------------------------

def _close(name):
    pool = NAMES + sorted(SHORT) + ["cells"]
    close = difflib.get_close_matches(name, pool, n=4, cutoff=0.6)
    hint = "did you mean %s? " % " or ".join(close) if close else ""
    return "unknown parameter %r: %s`bmsctl config get` lists them all" % (name, hint)


def resolve(name):
    """Parameter indices a name stands for (a full name, or one without
    its unit suffix: `cell_ov_release` is two). ConfigError when unknown."""
    n = name.strip().lower()
    if n in INDEX:
        return [INDEX[n]]
    if n == "cells":
        return [P.P_CELL_CHANNELS]
    if n in SHORT:
        return list(SHORT[n])
    raise ConfigError(_close(name))


# -- values ----------------------------------------------------------------

def _split_number(text):
    """(Decimal, unit suffix) of `3.65V`, `-20 C`, `0x17`."""
    t = text.strip()
    if not t:
        raise ValueError("empty")
    try:
        return Decimal(int(t, 0)), ""
    except ValueError:
        pass
    k = 0
    while k < len(t) and (t[k].isdigit() or t[k] in "+-.eE"):
        # an exponent only inside a number (`2e3`), not the unit (`3e` ...)
        if t[k] in "eE" and not (k + 1 < len(t) and (t[k + 1].isdigit() or t[k + 1] in "+-")):
            break
        k += 1
    num, suffix = t[:k], t[k:].strip()
    try:
        d = Decimal(num)
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not d.is_finite():
        raise ValueError("not a number")
    return d, suffix


def _to_raw(i, number, factor, text, given):
    """Engineering number * factor (in the table unit) -> raw integer."""
    row = ROWS[i]
    raw = number * factor / (Decimal(10) ** row[4])
    if raw != raw.to_integral_value():
        step = eng_text(i, 1)
        raise ConfigError("%s=%s: %s takes steps of %s; give a multiple of it"
                          % (given, text, row[1], step))
    return int(raw)


def parse_value(name, text, values=None):
    """[(index, raw)] for one `NAME=VALUE`.

    NAME: a full parameter name, VALUE raw (cell_ov_mv=3650, cell_channels=0x17);
    or the name without its unit suffix, VALUE in engineering units
    (cell_ov=3.65); either may carry a unit (3.65V, 3650mV, 45C, 100Ah,
    200us, 30min). `chemistry=lfp|nmc|lto`; `cells=N` is the default wiring
    for N cells (bms.params.Params.set_text), which needs `values` (the
    set it goes into, for afe_groups)."""
    key = name.strip().lower()
    text = text.strip()
    if key == "chemistry":
        t = text.lower()
        if t in P.CHEMISTRY_NAMES[1:]:
            return [(P.P_CHEMISTRY, P.CHEMISTRY_NAMES.index(t))]
        if t in ("1", "2", "3"):
            return [(P.P_CHEMISTRY, int(t))]
        raise ConfigError("chemistry=%s: give lfp, nmc or lto" % text)
    if key == "cells":
        prm = P.Params()
        if values is not None:
            prm.values[P.P_AFE_GROUPS] = values[P.P_AFE_GROUPS]
            prm.values[P.P_AFE_TYPE] = values[P.P_AFE_TYPE]
        err = PL.set_text(prm, "cells", text)
        if err:
            groups, kind = prm.values[P.P_AFE_GROUPS], prm.values[P.P_AFE_TYPE]
            lo, hi, chips = cell_range()
            if text.strip().isdigit() and lo <= int(text) <= hi:
                if kind or groups:
                    setting = "afe_type=%d" % kind if kind else "afe_groups=%d" % groups
                    raise ConfigError("cells=%s: this board's AFE (%s, a %s) takes %d to %d cells; give "
                                      "afe_groups=N (a bq769x0) or afe_type=1 (a bq76952) as well for another AFE"
                                      % ((text, setting, afe_name(groups, kind)) + afe_cells(groups, kind)))
                raise ConfigError("cells=%s: no bq769x0 takes them; give afe_type=1 (a bq76952) as well" % text)
            raise ConfigError("cells=%s: give %d to %d cells in series (%s)" % (text, lo, hi, chips))
        return [(P.P_CELL_CHANNELS, prm.values[P.P_CELL_CHANNELS]),
                (P.P_AFE_GROUPS, prm.values[P.P_AFE_GROUPS])]
    cands = resolve(key)
    full = key in INDEX
    try:
        number, suffix = _split_number(text)
    except ValueError:
        raise ConfigError("%s=%s: not a number; e.g. %s" % (name, text, _example(cands[0], full))) from None
    if suffix:
        fits = [(i, unit_factor(ROWS[i][5], suffix)) for i in cands]
        fits = [(i, f) for i, f in fits if f is not None]
        if not fits:
            units = sorted({ROWS[i][5] for i in cands})
            if units == [""]:
                raise ConfigError("%s=%s: %s has no unit; give a plain number" % (name, text, NAMES[cands[0]]))
            raise ConfigError("%s=%s: %r is not a unit of %s (%s)" % (
                name, text, suffix, " or ".join(NAMES[i] for i in cands), " or ".join(u for u in units if u)))
        i, factor = fits[0]
        return [(i, _to_raw(i, number, factor, text, name))]
    if len(cands) > 1:
        raise ConfigError("%s is ambiguous: %s; add a unit (e.g. %s) or use the full name" % (
            name, " or ".join("%s (%s)" % (NAMES[i], ROWS[i][5]) for i in cands),
            " or ".join(name + "=" + _example(i, False).split("=", 1)[1] for i in cands)))
    i = cands[0]
    if full:
        if number != number.to_integral_value():
            raise ConfigError("%s=%s: %s is a whole number of %s; e.g. %s, or %s=%s in %s" % (
                name, text, NAMES[i], raw_unit(i) or "units", _example(i, True),
                short_name(NAMES[i]) or NAMES[i], text, ROWS[i][5]))
        return [(i, int(number))]
    return [(i, _to_raw(i, number, Decimal(1), text, name))]


def _example(i, full):
    row = ROWS[i]
    d = row[8]
    if full or not (row[4] or row[5]):
        return "%s=%d" % (row[1], d)
    return "%s=%s" % (short_name(row[1]) or row[1], eng_text(i, d).replace(" ", ""))


def parse_assignments(items, values):
    """The target set: `values` (the device's) with every `NAME=VALUE` of
    `items` applied. Returns (target, [indices the user named])."""
    target = list(values)
    named = []
    pending = []
    for item in items:
        if "=" not in item:
            raise ConfigError("%r is not NAME=VALUE (e.g. cell_ov=3.65V, chemistry=lfp, cells=4)" % item)
        k, v = item.split("=", 1)
        pending.append((k, v))
    # the AFE before cells: the wiring of N cells depends on it
    pending.sort(key=lambda kv: 0 if kv[0].strip().lower() in ("afe_groups", "afe_type") else 1)
    for k, v in pending:
        for i, raw in parse_value(k, v, target):
            err = PL.check(PRM, i, raw)
            if err:
                raise ConfigError(range_message(i, raw))
            target[i] = raw
            named.append(i)
    return target, named


def range_message(i, raw):
    return "%s is outside %s" % (value_text(i, raw), range_text(i))


# -- the whole set -----------------------------------------------------------

def _in_range(i, raw):
    return PL.check(PRM, i, raw) is None


def rule_values(k, v):
    """The parameters rule k is about, with their values in `v`."""
    kind, a, b = C.rule(k)
    if kind == C.LT:
        idx = [a, b]
    elif kind != C.SPECIAL:
        idx = [a]
    else:
        idx = {C.S_CELLS: [P.P_CELL_CHANNELS, P.P_AFE_TYPE, P.P_AFE_GROUPS],
               C.S_SENSORS: [P.P_TEMP_SENSORS, P.P_AFE_TYPE, P.P_AFE_GROUPS],
               C.S_FET_SENSOR: [P.P_FET_TEMP_SENSOR, P.P_TEMP_SENSORS],
               C.S_OCV: [P.P_OCV_0_MV + j for j in range(P.OCV_POINTS)],
               C.S_BAUD: [P.P_MODBUS_BAUD]}[a]
    return ", ".join(value_text(i, v[i]) for i in idx)


def rule_message(k, v):
    kind, a, b = C.rule(k)
    extra = ""
    chem = v[P.P_CHEMISTRY]
    if kind in (C.CHEM_MAX, C.CHEM_MIN, C.PACK_MAX, C.PACK_MIN) and 0 < chem < 4:
        lim = (C.CELL_MAX_MV if kind in (C.CHEM_MAX, C.PACK_MAX) else C.CELL_MIN_MV)[chem]
        if kind in (C.PACK_MAX, C.PACK_MIN):
            n = bin(v[P.P_CELL_CHANNELS]).count("1")
            extra = "; for %d %s cells: %.3f V" % (n, P.CHEMISTRY_NAMES[chem].upper(), n * lim / 1000.0)
        else:
            extra = "; for %s: %.3f V" % (P.CHEMISTRY_NAMES[chem].upper(), lim / 1000.0)
    return "rule %d: %s (%s%s)" % (k, D.rule_text(k), rule_values(k, v), extra)


def judge(cur, new):
    """What the firmware answers a write leaving `new` after `cur`
    (bms.config.Config.write): None, or (reason, detail) as ERR_*.
    The PIN reads 0 from a BMS: it is taken as valid."""
    if list(new) == list(cur):
        return None
    for i in range(COUNT):
        if new[i] != cur[i] and not _in_range(i, new[i]):
            return M.ERR_RANGE, i
    if C.configured(new):
        for i in range(COUNT):
            if i != P.P_PIN and not _in_range(i, new[i]):
                return M.ERR_RANGE, i
    elif C.configured(cur):
        return M.ERR_UNCONFIGURE, 0
    r = C.check(new)
    if r:
        return M.ERR_RULE, r
    return None


def verdict_text(verdict, v):
    reason, detail = verdict
    if reason == M.ERR_RANGE:
        return range_message(detail, v[detail])
    if reason == M.ERR_RULE:
        return "the set would break " + rule_message(detail, v)
    if reason == M.ERR_UNCONFIGURE:
        return ("it would leave the configured pack unconfigured (chemistry, cells, capacity_mah and "
                "temp_sensors must stay set); to start over, `bmsctl factory-reset` and `bmsctl setup`")
    return D.CONFIG_ERRORS.get(reason, "refused (reason %d)" % reason)


def validate(cur, target):
    """None when the BMS would take `target` (after `cur`), else why not,
    in words that name the parameter and its range or the rule."""
    v = judge(cur, target)
    if v is None:
        return None
    text = verdict_text(v, target)
    if v[0] == M.ERR_RANGE and target[v[1]] == cur[v[1]]:
        text += " (its present value: set it too)"
    if not C.configured(cur) and C.configured(target):
        text += "; to configure a new pack with the chemistry's defaults, use `bmsctl setup`"
    return text


def changes(cur, target):
    return [i for i in range(COUNT) if target[i] != cur[i]]


def words_of(i, raw):
    if WIDTH[i] == 2:
        return [(raw >> 16) & 0xFFFF, raw & 0xFFFF]
    return [raw & 0xFFFF]


def values_from_holding(raw):
    """Values by index from bmsctl.regs.decode of the holding registers."""
    return [raw[n] for n in NAMES]


# -- profiles ---------------------------------------------------------------

def export_profile(values, firmware=None):
    params = {}
    units = {}
    for i, n in enumerate(NAMES):
        if i == P.P_PIN:
            continue
        params[n] = values[i]
        u = raw_unit(i)
        if u:
            units[n] = u
    doc = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION}
    if firmware:
        doc["firmware"] = firmware
    doc["parameters"] = params
    doc["units"] = units
    doc["note"] = ("parameters are raw register values in the units given in `units`; "
                   "load with `bmsctl config import FILE`")
    return doc


def load_profile(text, source="profile"):
    """{index: raw} from a profile's JSON text; ConfigError naming every problem."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("%s is not valid JSON: line %d column %d: %s; fix the file or export a new one "
                          "with `bmsctl config export`" % (source, e.lineno, e.colno, e.msg)) from None
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise ConfigError("%s is not a BMS profile (it needs \"format\": \"%s\"); make one with "
                          "`bmsctl config export FILE.json`" % (source, PROFILE_FORMAT))
    ver = doc.get("version")
    if ver != PROFILE_VERSION:
        raise ConfigError("%s is profile version %r; this bmsctl reads version %d: use a bmsctl that "
                          "matches the file, or export it again" % (source, ver, PROFILE_VERSION))
    params = doc.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ConfigError("%s has no \"parameters\" object of name: value pairs" % source)
    out = {}
    problems = []
    for name, raw in params.items():
        i = INDEX.get(name)
        if i is None:
            problems.append(_close(name).replace("`bmsctl config get` lists them all",
                                                 "`bmsctl config get` lists the names"))
            continue
        if i == P.P_PIN:
            problems.append("pin is not taken from a profile (exports never hold it): remove it and set "
                            "the PIN with `bmsctl config set pin=NEW --pin OLD`")
            continue
        if isinstance(raw, bool) or not isinstance(raw, int):
            problems.append("%s=%s: a profile holds raw whole numbers (%s in %s)" % (
                name, json.dumps(raw), name, raw_unit(i) or "units"))
            continue
        if not _in_range(i, raw):
            problems.append(range_message(i, raw))
            continue
        out[i] = raw
    if problems:
        raise ConfigError("%s: %s; nothing was written" % (source, "; ".join(problems)))
    return out


# -- setup -------------------------------------------------------------------

KEEP_ON_SETUP = (P.P_MODBUS_ADDRESS, P.P_MODBUS_BAUD, P.P_MODBUS_PARITY, P.P_AFE_ADDR,
                 P.P_PIN, P.P_UNLOCK_TIMEOUT_S)


def setup_target(cur, chemistry, cells, capacity_mah, shunt_uohm=1000, thermistors=1, groups=None, afe_type=None):
    """The whole set for a new pack: the pack keys (as bms.params sets them
    from text), then the chemistry's defaults for that pack
    (Params.apply_defaults). The serial settings, the AFE's I2C address,
    the PIN and its timeout stay as the BMS has them."""
    if chemistry not in P.CHEMISTRY_NAMES[1:]:
        raise ConfigError("chemistry %r: give lfp, nmc or lto" % chemistry)
    lo, hi, chips = cell_range()
    if not isinstance(cells, int) or not lo <= cells <= hi:
        raise ConfigError("cells %r: the AFEs take %d to %d cells in series (%s)" % (cells, lo, hi, chips))
    try:
        afe_type, groups, ts = setup_chip(cur[P.P_AFE_TYPE], cur[P.P_AFE_GROUPS], cells, afe_type, groups)
    except AfeError as e:
        raise ConfigError(str(e)) from None
    if not 1 <= thermistors <= ts:
        raise ConfigError("%d thermistors: the %s has %d thermistor input%s (TS1%s)" % (
            thermistors, afe_name(groups, afe_type), ts, "s" if ts > 1 else "", "..TS%d" % ts if ts > 1 else ""))
    prm = P.Params()
    v = prm.values
    for i in range(COUNT):
        v[i] = cur[i]
    v[P.P_AFE_GROUPS] = groups
    v[P.P_AFE_TYPE] = afe_type
    for key, text in (("chemistry", chemistry), ("cells", str(cells))):
        err = PL.set_text(prm, key, text)
        if err:
            raise ConfigError(err)
    for i, raw in ((P.P_CAPACITY_MAH, capacity_mah), (P.P_SHUNT_UOHM, shunt_uohm),
                   (P.P_TEMP_SENSORS, (1 << thermistors) - 1), (P.P_FET_TEMP_SENSOR, 0)):
        if i == P.P_CAPACITY_MAH and raw <= 0:
            raise ConfigError("capacity must be more than 0 Ah (at most %s)" % eng_text(i, PRM.hi[i]))
        err = PL.set_value(prm, i, raw)
        if err:
            raise ConfigError(range_message(i, raw))
    PL.apply_defaults(prm, v[P.P_CHEMISTRY], cells, capacity_mah)
    for i in KEEP_ON_SETUP:
        v[i] = cur[i]
    return list(v)


def summary(v):
    """The key limits of a set, as (label, text) lines."""
    def t(name):
        i = INDEX[name]
        return eng_text(i, v[i])

    chem = v[P.P_CHEMISTRY]
    n = bin(v[P.P_CELL_CHANNELS]).count("1")
    sensors = bin(v[P.P_TEMP_SENSORS]).count("1")
    return [
        ("Pack", "%s, %d cells in series on a %s (cell_channels 0x%04X), %s, shunt %s, %d thermistor%s" % (
            P.CHEMISTRY_NAMES[chem].upper() if 0 < chem < 4 else "no chemistry", n,
            afe_name(v[P.P_AFE_GROUPS], v[P.P_AFE_TYPE]), v[P.P_CELL_CHANNELS], t("capacity_mah"), t("shunt_uohm"),
            sensors, "" if sensors == 1 else "s")),
        ("Cell over-voltage", "trip %s, release %s (warning %s, AFE backstop %s)" % (
            t("cell_ov_mv"), t("cell_ov_release_mv"), t("cell_ov_warn_mv"), t("hw_ov_mv"))),
        ("Cell under-voltage", "trip %s, release %s (warning %s, AFE backstop %s)" % (
            t("cell_uv_mv"), t("cell_uv_release_mv"), t("cell_uv_warn_mv"), t("hw_uv_mv"))),
        ("Pack voltage", "over %s (release %s), under %s (release %s)" % (
            t("pack_ov_mv"), t("pack_ov_release_mv"), t("pack_uv_mv"), t("pack_uv_release_mv"))),
        ("Charge current", "trip %s (warning %s)" % (t("chg_oc_ma"), t("chg_oc_warn_ma"))),
        ("Discharge current", "trip %s (warning %s); AFE backstop %s, short circuit %s" % (
            t("dsg_oc_ma"), t("dsg_oc_warn_ma"), t("hw_ocd_ma"), t("hw_scd_ma"))),
        ("Charge temperature", "%s to %s" % (t("chg_ut_dc"), t("chg_ot_dc"))),
        ("Discharge temperature", "%s to %s" % (t("dsg_ut_dc"), t("dsg_ot_dc"))),
        ("Balancing", "above %s, cells more than %s apart" % (t("bal_start_mv"), t("bal_diff_mv"))),
    ]


# -- durations (bmsctl log) ---------------------------------------------------

_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "min": Decimal(60),
                   "h": Decimal(3600), "d": Decimal(86400)}


def parse_duration(text):
    """Seconds (float) from `500ms`, `1s`, `2m`, `1h`, `1.5` (seconds)."""
    t = text.strip().lower()
    k = len(t)
    while k and t[k - 1].isalpha():
        k -= 1
    num, unit = t[:k].strip(), t[k:]
    try:
        d = Decimal(num)
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or d <= 0 or (unit and unit not in _DURATION_UNITS):
        raise ConfigError("%r is not a duration: give a positive number with ms, s, m or h (500ms, 1s, 2m, 1h)"
                          % text)
    return float(d * _DURATION_UNITS.get(unit, Decimal(1)))
