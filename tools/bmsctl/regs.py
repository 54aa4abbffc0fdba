"""The firmware's register map (bms.regmap) as the host sees it: JSON rows,
and decoding of register blocks into engineering values."""
from bms import events as E
from bms import paramcheck as C
from bms.spec import paramtable as PT
from bms import protection as PR
from bms.spec import protrules
from bms.spec import regdoc as D
from bms import regmap as M
from bms.spec import regtable as RT

# Holding registers are written with FC 06/16 once unlocked (bms.config).
TABLES = (("input", RT.INPUT_REGS, "r", D.INPUT), ("holding", PT.TABLE, "rw", D.HOLDING),
          ("holding", RT.HOLDING_CONTROLS, "rw", D.CONTROL))


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
    end = max(r[0] + RT.WORDS[r[2]] * r[3] for r in regs)
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
        step = RT.WORDS[typ]
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


def flag_names(bits, warn=False):
    """Names of the protection-table rows whose bits are set in a flags
    register: protect_flags and latched_flags, or warn_flags (warn=True);
    bit n is the level's n-th row (bms.protection)."""
    return protrules.names(0, bits) if warn else protrules.names(bits, 0)


def reason_name(code):
    """An off-reason register (row + 1, 0 = none) as the row's name."""
    return protrules.ROWS[code - 1][0] if 0 < code <= len(protrules.ROWS) else None


# The application's event codes by their machine-readable names (event_text words them).
APP_EVENTS = {
    E.EV_BOOT: "boot",
    E.EV_AFE_UP: "afe_configured",
    E.EV_CONFIG_ERRORS: "config_errors",
    E.EV_OCV_TABLE_REJECTED: "ocv_table_rejected",
    E.EV_SOC_START: "soc_started_at_dpct",
    E.EV_CC_CAL: "cc_offset_calibrated_dlsb",
    E.EV_UNLOCKED: "unlocked",
    E.EV_LOCKED: "locked",
    E.EV_BAD_PIN: "wrong_pin",
    E.EV_COMMAND: "command",
    E.EV_SAVE_FAILED: "config_save_failed",
    E.EV_PARAMS_MIGRATED: "config_migrated_from_format",
    E.EV_CONFIG_RULE: "config_breaks_rule",
    E.EV_CONFIG_IMPORTED: "config_file_imported",
    E.EV_NET_UP: "mqtt_connected",
    E.EV_NET_DOWN: "mqtt_link_down",
    E.EV_NET_CONFIG: "net_cfg_rejected_at_line",
    E.EV_STORE_SAVE: "store_save",
    E.EV_CRASH: "crash_reset",
    E.EV_FAULT: "fault_caught",
}
PARAM_BY_ADDR = {r[0]: r for r in PT.TABLE}
SAVE_STORES = {1: "settings", 2: "SOC state", 3: "lifetime counters"}  # bms.config SAVE_
SAVE_FAILURES = {1: "out of memory", 2: "filesystem error", 3: "a firmware fault"}  # bms.store FAIL_
MODE_NAMES = {0: "working", 1: "low-power", 2: "sleep"}
CAUSE_NAMES = {1: "timer check", 2: "RS485 traffic", 3: "charger", 4: "ACC", 5: "button", 6: "idle",
               7: "under-voltage", 8: "long button press", 9: "a check found work", 10: "boot",
               11: "sleep refused: the AFE did not confirm the FETs off, or entering sleep failed",
               12: "storage mode, resting"}
RESET_NAMES = {1: "power-on", 2: "hard reset", 3: "watchdog", 4: "wake from deep sleep", 5: "software restart"}


def param_change(code, value):
    """(parameter row, new raw value) of a parameter-change event (EV_PARAM_SET, _K)."""
    addr = (value >> 20) & 0x7FF
    x = value & 0xFFFFF
    if x & 0x80000:
        x -= 0x100000
    if code == E.EV_PARAM_SET_K:
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


# -- the event log in words ----------------------------------------------------------
# Every code the firmware logs (a protection row's trip, release and latch,
# bms.protection; 200.. the rest, bms.events) reads as one short
# sentence for a pack builder, a measurement in engineering units. The
# words are bms.spec.regdoc's.

# What an event calls each protection-table row: a protection by its
# setting's name in bms.spec.regdoc.HOLDING ("Cell over-voltage: charge off at
# or above") or, for a fault flag, bms.spec.regdoc.PROTECTION's words; a
# warning by the quantity it watches ("Warning: cell spread 100 mV").
ROW_TITLES = {
    "cell_ov": "Cell over-voltage",
    "cell_uv": "Cell under-voltage",
    "pack_ov": "Pack over-voltage",
    "pack_uv": "Pack under-voltage",
    "chg_oc": "Charge over-current",
    "dsg_oc": "Discharge over-current",
    "afe_scd": "Short circuit",
    "afe_ocd": "Discharge over-current (AFE hardware)",
    "afe_ov": "Cell over-voltage (AFE hardware backstop)",
    "afe_uv": "Cell under-voltage (AFE hardware backstop)",
    "chg_ot": "Charge over-temperature",
    "chg_ut": "Charge under-temperature",
    "dsg_ot": "Discharge over-temperature",
    "dsg_ut": "Discharge under-temperature",
    "fet_ot": "MOSFET/board over-temperature",
    "afe_comm": "AFE not answering or failing CRC",
    "afe_reset": "AFE reset itself",
    "afe_stale": "No fresh measurement from the AFE",
    "temp_sensor": "Thermistor open or shorted",
    "cell_implausible": "Implausible cell reading (sense wire open?)",
    "unconfigured": "No pack configuration stored",
    "afe_ovrd": "AFE ALERT line forced high",
    "cell_ov_warn": "high cell voltage",
    "cell_uv_warn": "low cell voltage",
    "chg_oc_warn": "high charge current",
    "dsg_oc_warn": "high discharge current",
    "temp_high_warn": "high temperature",
    "temp_low_warn": "low temperature",
    "spread_warn": "cell spread",
    "reset_lockout": "Reset loop: the MCU kept resetting (clear it with the clear-latched command)",
    "soc_high": "Top of the SOC window",
    "soc_low": "Bottom of the SOC window",
    "storage_high": "Storage mode at or above its target",
    "storage_low": "Storage mode at or below its target",
    "soc_low_warn": "low SOC",
}
_STOPPED = {PR.CHG: "charging stopped", PR.DSG: "discharging stopped", PR.BOTH: "charging and discharging stopped"}
_COMMANDS = {1: "restart", 2: "clear latched protections", 3: "factory reset (stored settings erased)",
             4: "storage mode on", 5: "storage mode off"}
MAX_BAD_PINS = 5  # wrong PINs in a row before a one-minute lockout (bms.config)
NO_READING = "no reading"


def quantity_text(q, x):
    """A protection quantity (bms.protection Q_*) in engineering units:
    '3.712 V', '12.50 A', '46.2 degC', '100 mV'; None for a flag."""
    if q in (PR.Q_CELL_MAX_MV, PR.Q_CELL_MIN_MV):
        return "%.3f V" % (x / 1000.0)
    if q == PR.Q_PACK_MV:
        return "%.2f V" % (x / 1000.0)
    if q in (PR.Q_CHG_MA, PR.Q_DSG_MA):
        return "%.2f A" % (x / 1000.0)
    if q in (PR.Q_TEMP_MAX_DC, PR.Q_TEMP_MIN_DC, PR.Q_FET_TEMP_DC):
        # bms.publish: -32768 no sensor, 32767 no cell sensor, -32767/-32766 open/short
        return NO_READING if x <= -32766 or x >= 0x7FFF else "%.1f degC" % (x / 10.0)
    if q == PR.Q_SPREAD_MV:
        return "%d mV" % x
    if q in (PR.Q_SOC_HIGH_DPCT, PR.Q_SOC_LOW_DPCT, PR.Q_STORE_HIGH_DPCT, PR.Q_STORE_LOW_DPCT):
        return "%.1f %%" % (x / 10.0)
    return None


def _plural(n, one, many):
    return "%d %s" % (n, one if n == 1 else many)


def _row_event(kind, r, value):
    """A trip (kind 0), release (1) or latch (2) of protection row r."""
    name, q, fets, level, retries = r[0], r[1], r[7], r[8], r[9]
    title = ROW_TITLES.get(name, name)
    x = quantity_text(q, value)
    if kind == 2:
        after = "after " + _plural(value, "retry", "retries") if value else "at once"
        return "%s: latched %s (clear with bmsctl clear-latched)" % (title[:1].upper() + title[1:], after)
    if level == PR.WARN:
        shown = "" if x is None else " (%s)" % x if x == NO_READING else " " + x
        return ("Warning: " if kind == 0 else "Warning cleared: ") + title + shown
    if kind == 0:
        at = "" if x is None else ", " + x if x == NO_READING else " at " + x
        return "%s: protection tripped%s (%s)" % (title, at, _STOPPED.get(fets, "reported only"))
    if x is None:  # a fault flag: value 1 is a latch cleared by taking the load away
        return title + (": protection released (load removed)" if value == 1 and retries != PR.NONE
                        else ": protection released")
    return title + (" released (%s)" % x if x == NO_READING else " released at " + x)


def _setting_event(code, value):
    """A parameter change (EV_PARAM_SET, EV_PARAM_SET_K): its name, which users look up, and
    the new value as `bmsctl config get` shows it."""
    from bmsctl import config as CF

    row, x = param_change(code, value)
    if row is None:
        return "Unknown setting at register 0x%03X changed to %d" % ((value >> 20) & 0x7FF, x)
    if row[1] == "pin":
        return "PIN changed"
    return "Setting %s changed to %s%s" % (row[1], "about " if code == E.EV_PARAM_SET_K else "",
                                           CF.display(CF.INDEX[row[1]], x))


def _rule_text(k):
    try:
        return D.rule_text(k)
    except (IndexError, KeyError, ValueError):
        return "consistency rule %d" % k


NET_STATES = {M.NET_OFF: "off", M.NET_JOINING: "joining Wi-Fi", M.NET_CONNECTING: "connecting to the broker",
              M.NET_ONLINE: "online", M.NET_BACKOFF: "waiting to retry", M.NET_CONFIG_ERROR: "net.cfg is wrong"}
NET_ERRORS = {
    M.NERR_WIFI: "no Wi-Fi connection (check the network name and password in net.cfg, and the signal)",
    M.NERR_DNS: "the broker's host name does not resolve (check it in net.cfg, or use its IP address)",
    M.NERR_REFUSED: "nothing answers at the broker's address and port (is the broker running? check both in net.cfg)",
    M.NERR_TIMEOUT: "the broker did not answer in time",
    M.NERR_AUTH: "the broker refused the user name or password (check both in net.cfg)",
    M.NERR_BROKER: "the broker refused the connection",
    M.NERR_LOST: "the connection to the broker broke",
    M.NERR_TLS: "the TLS handshake failed (check the broker's certificate and the CA file named in net.cfg)",
}


def net_error_text(word):
    """The IR net_error register (reason << 8 | detail) in words ('' for 0)."""
    if not word:
        return ""
    reason, detail = word >> 8, word & 0xFF
    text = NET_ERRORS.get(reason, "network error %d" % reason)
    if reason in (M.NERR_AUTH, M.NERR_BROKER):
        text += " (CONNACK code %d)" % detail
    elif detail and reason in (M.NERR_REFUSED, M.NERR_LOST, M.NERR_TIMEOUT, M.NERR_TLS):
        text += " (errno %d)" % detail
    return text


def event_text(code, value):
    """A plain-language sentence for an event-log record (code, value)."""
    if code in (E.EV_PARAM_SET, E.EV_PARAM_SET_K):
        return _setting_event(code, value)
    kind, row = divmod(code, 64)
    if 1 <= row <= len(protrules.ROWS) and kind in (0, 1, 2):
        return _row_event(kind, protrules.ROWS[row - 1], value)
    if code == E.EV_BOOT:
        return "Firmware started (boot %d)" % value
    if code == E.EV_AFE_UP:
        return "AFE configured" if value else "AFE configuration failed"
    if code == E.EV_CONFIG_ERRORS:
        return "Stored settings rejected at start: %d (defaults used)" % value
    if code == E.EV_OCV_TABLE_REJECTED:
        return "Stored OCV table rejected (it does not rise): the chemistry's table is used"
    if code == E.EV_SOC_START:
        return "State of charge started at %.1f %%" % (value / 10.0)
    if code == E.EV_CC_CAL:
        return "Coulomb-counter offset calibrated: %g LSB" % (value / 16.0)
    if code == E.EV_UNLOCKED:
        return "Settings unlocked"
    if code == E.EV_LOCKED:
        return "Settings locked"
    if code == E.EV_BAD_PIN:
        left = MAX_BAD_PINS - value
        if left > 0:
            return "Wrong PIN (%s left)" % _plural(left, "try", "tries")
        return "Wrong PIN: unlocking refused for a minute"
    if code == E.EV_COMMAND:
        return "Host command: %s" % _COMMANDS.get(value, "unknown (%d)" % value)
    if code == E.EV_SAVE_FAILED:
        return "Saving settings to flash failed (%s so far): the previous settings stay stored" % (
            _plural(value, "write error", "write errors"))
    if code == E.EV_STORE_SAVE:
        what = SAVE_STORES.get(value >> 8, "store %d" % (value >> 8))
        why = value & 0xFF
        if not why:
            return "Saving the %s to flash works again" % what
        return "Saving the %s to flash failed (%s): the previous record stays stored, retried later" % (
            what, SAVE_FAILURES.get(why, "error %d" % why))
    if code == E.EV_PARAMS_MIGRATED:
        return "Stored settings converted from format %d" % value
    if code == E.EV_CONFIG_RULE:
        return "Stored settings break a rule (%s): running unconfigured" % _rule_text(value)
    if code == E.EV_CONFIG_IMPORTED:
        return "Settings imported from bms.cfg"
    if code == E.EV_MODE:
        mode, cause = value >> 8, value & 0xFF
        text = "Entered %s mode" % MODE_NAMES.get(mode, "power %d" % mode)
        return text + (" (%s)" % CAUSE_NAMES.get(cause, "cause %d" % cause) if cause else "")
    if code == E.EV_RESET:
        cause, wake = value >> 8, value & 0xFF
        text = "Reset cause: %s" % RESET_NAMES.get(cause, "unknown (%d)" % cause)
        return text + (", woken by %s" % CAUSE_NAMES.get(wake, "wake %d" % wake) if wake else "")
    if code == E.EV_NET_UP:
        return "Connected to the MQTT broker (connection %d since boot)" % value
    if code == E.EV_NET_DOWN:
        return "MQTT link down: %s" % net_error_text(value & 0xFFFF)
    if code == E.EV_NET_CONFIG:
        where = "line %d" % value if value else "the file"
        return "Network settings rejected (net.cfg %s): the network stays off" % where
    if code == E.EV_CRASH:
        what = CRASH_KINDS.get(value & 0xFF, "error %d" % (value & 0xFF))
        where = CRASH_PLACES.get(value >> 8, "place %d" % (value >> 8))
        return "The firmware stopped on %s in %s: FETs off, MCU reset (a firmware fault: please report it)" % (
            what, where)
    if code == E.EV_FAULT:
        return "%s: caught, counted (faults), protection went on" % fault_text(value)
    return "event %d (value %d)" % (code, value)


def _crash_places():
    """AT_ code: words, from the firmware's own AT_ constants (bms.events)."""
    from bms import events

    words = {"START": "the start-up", "MODBUS": "the Modbus slave", "WRITES": "applying parameter writes",
             "MODES": "the power modes and the button", "MEASURE": "reading the AFE",
             "SOC": "the SOC estimator", "PROTECT": "the protection table", "SWITCH": "switching the FETs",
             "FLASH": "writing to flash", "BALANCE": "balancing", "PUBLISH": "publishing the registers",
             "UPLINK": "MQTT", "LEDS": "the LED bar"}
    out = {}
    for name in dir(events):
        if name.startswith("AT_"):
            out[getattr(events, name)] = words.get(name[3:], name[3:].lower())
    return out


CRASH_KINDS = {1: "out of memory", 2: "an OSError", 3: "an exception"}


def fault_text(value):
    """A caught fault, (where << 8) | kind (bms.cycle Cycle.fault): "The SOC estimator failed (an exception)"."""
    what = CRASH_KINDS.get(value & 0xFF, "error %d" % (value & 0xFF))
    where = CRASH_PLACES.get(value >> 8, "place %d" % (value >> 8))
    return "%s failed (%s)" % (where[0].upper() + where[1:], what)
CRASH_PLACES = _crash_places()


def event_kind(code, value):
    """How a display marks an event: 'trip' (a protection trips or latches,
    something failed), 'warn' (a warning trips), 'release' (a row releases)
    or ''. The dashboard colours its event rows by this."""
    kind, row = divmod(code, 64)
    if 1 <= row <= len(protrules.ROWS) and kind in (0, 1, 2):
        if kind == 1:
            return "release"
        return "warn" if kind == 0 and protrules.ROWS[row - 1][8] == PR.WARN else "trip"
    if (code == E.EV_AFE_UP and not value) or code in (E.EV_BAD_PIN, E.EV_SAVE_FAILED, E.EV_CONFIG_RULE, E.EV_CRASH) or (code == E.EV_STORE_SAVE and value & 0xFF):
        return "trip"
    if code in (E.EV_NET_DOWN, E.EV_NET_CONFIG, E.EV_FAULT):
        return "warn"
    return ""
