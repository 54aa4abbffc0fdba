"""The firmware's register map (bms.regmap) as the host sees it: JSON rows,
and decoding of register blocks into engineering values."""
from bms import paramcheck as C
from bms import paramtable as PT
from bms import protection as PR
from bms import protrules
from bms import regdoc as D
from bms import regmap as M

# Holding registers are written with FC 06/16 once unlocked (bms.config).
TABLES = (("input", M.INPUT_REGS, "r", D.INPUT), ("holding", PT.TABLE, "rw", D.HOLDING),
          ("holding", M.HOLDING_CONTROLS, "rw", D.CONTROL))


def rows():
    """Every register row as a dict, input registers first, by address."""
    out = []
    for table, regs, access, text in TABLES:
        for addr, name, typ, count, scale_exp, unit in (r[:6] for r in regs):
            desc = text[name]
            out.append({
                "name": name,
                "address": addr,
                "table": table,
                "type": typ,
                "count": count,
                "scale": 10.0 ** scale_exp if scale_exp else 1,
                "unit": unit,
                "access": access,
                "description": desc,
            })
    return out


def span(regs):
    """(first address, number of registers) covering a table."""
    end = max(r[0] + M.WORDS[r[2]] * r[3] for r in regs)
    return 0, end


def _value(words, i, typ):
    if typ == "event":
        seq = (words[i] << 16) | words[i + 1]
        if seq == 0xFFFFFFFF:
            return None
        value = (words[i + 6] << 16) | words[i + 7]
        if value & 0x80000000:
            value -= 0x100000000
        return {"seq": seq, "boot": words[i + 2], "time_s": (words[i + 3] << 16) | words[i + 4],
                "code": words[i + 5], "value": value}
    if typ in ("uint16", "int16"):
        v = words[i]
        if typ == "int16" and v & 0x8000:
            v -= 0x10000
        return v
    v = (words[i] << 16) | words[i + 1]
    if typ == "int32" and v & 0x80000000:
        v -= 0x100000000
    return v


def decode(regs, words, base=0):
    """{name: raw value, or list of raw values for arrays} from a register block."""
    out = {}
    for addr, name, typ, count, *_ in regs:
        i = addr - base
        step = M.WORDS[typ]
        vals = [_value(words, i + k * step, typ) for k in range(count)]
        out[name] = vals if count > 1 else vals[0]
    return out


def scaled(regs, raw):
    """Engineering values (raw * 10**scale_exp) keyed by name."""
    out = {}
    for addr, name, typ, count, scale_exp, *_ in regs:
        v = raw[name]
        f = 10.0 ** scale_exp
        if typ == "event":
            out[name] = v
        elif isinstance(v, list):
            out[name] = [x * f if scale_exp else x for x in v]
        else:
            out[name] = v * f if scale_exp else v
    return out


def flag_names(bits):
    """Names of the protection-table rows whose bits are set."""
    return [row[0] for i, row in enumerate(protrules.ROWS) if bits & (1 << i)]


def reason_name(code):
    """An off-reason register (row + 1, 0 = none) as the row's name."""
    return protrules.ROWS[code - 1][0] if 0 < code <= len(protrules.ROWS) else None


APP_EVENTS = {200: "boot", 201: "afe_configured", 202: "config_errors", 203: "ocv_table_rejected",
              204: "soc_started_at_dpct", 205: "cc_offset_calibrated_dlsb",
              208: "unlocked", 209: "locked", 210: "wrong_pin", 211: "command",
              212: "config_save_failed", 213: "config_migrated_from_format", 214: "config_breaks_rule",
              215: "config_file_imported"}
PARAM_BY_ADDR = {r[0]: r for r in PT.TABLE}
MODE_NAMES = {0: "working", 1: "low-power", 2: "sleep"}
CAUSE_NAMES = {1: "timer check", 2: "RS485 traffic", 3: "charger", 4: "ACC", 5: "button", 6: "idle",
               7: "under-voltage", 8: "long button press", 9: "a check found work", 10: "boot"}
RESET_NAMES = {1: "power-on", 2: "hard reset", 3: "watchdog", 4: "wake from deep sleep", 5: "software restart"}


def param_change(code, value):
    """(parameter row, new raw value) of a parameter-change event (206/207)."""
    addr = (value >> 20) & 0x7FF
    x = value & 0xFFFFF
    if x & 0x80000:
        x -= 0x100000
    if code == 207:
        x *= 1000
    return PARAM_BY_ADDR.get(addr), x


def config_error_text(word):
    """The IR config_error register in words ('' for 0)."""
    if not word:
        return ""
    reason, detail = word >> 8, word & 0xFF
    fmt = D.CONFIG_ERRORS.get(reason, "reason %d detail {detail}" % reason)
    param = PT.TABLE[detail][1] if detail < len(PT.TABLE) else "parameter %d" % detail
    rule = D.rule_text(detail) if reason == M.ERR_RULE and 1 <= detail <= len(C.RULES) // 3 else ""
    return fmt.format(param=param, rule=rule, detail=detail)


def event_text(code, value):
    """A plain-language line for an event-log record."""
    if code in (206, 207):
        row, x = param_change(code, value)
        if row is None:
            return "parameter at 0x%03X set to %d" % ((value >> 20) & 0x7FF, x)
        if row[1] == "pin":
            return "pin changed"
        approx = "about " if code == 207 else ""
        return "%s set to %s%d" % (row[1], approx, x)
    if code == 216:
        mode, cause = value >> 8, value & 0xFF
        return "%s mode (%s)" % (MODE_NAMES.get(mode, str(mode)), CAUSE_NAMES.get(cause, str(cause)))
    if code == 217:
        cause, wake = value >> 8, value & 0xFF
        text = "reset cause: %s" % RESET_NAMES.get(cause, str(cause))
        return text + (", woken by %s" % CAUSE_NAMES.get(wake, str(wake)) if wake else "")
    if code == 211:
        return "command %s" % {1: "restart", 2: "clear latched", 3: "factory reset"}.get(value, str(value))
    if code == 214:
        return "stored configuration breaks a rule (%s): running unconfigured" % D.rule_text(value)
    if code in APP_EVENTS:
        name = APP_EVENTS[code]
        if code == 201:
            return name + (" ok" if value else " FAILED")
        return "%s (%d)" % (name, value)
    kind, row = divmod(code, 64)
    if 1 <= row <= len(protrules.ROWS) and kind in (0, 1, 2):
        r = protrules.ROWS[row - 1]
        what = ("warning" if r[8] == PR.WARN else "protection")
        verb = ("trip", "release", "latched")[kind]
        if kind == 2:
            return "%s %s %s after %d retries" % (r[0], what, verb, value)
        return "%s %s %s at %d" % (r[0], what, verb, value)
    return "code %d value %d" % (code, value)
