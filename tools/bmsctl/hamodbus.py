"""`bmsctl ha-modbus`: a Home Assistant `modbus:` configuration for polling
the BMS directly over RS485, generated from the firmware's register map.

    bmsctl --port /dev/ttyUSB0 ha-modbus --cells 8 > modbus.yaml

Every address, type, scale and unit comes from bms.spec.regtable.INPUT_REGS, looked
up by register name, so the output follows the map when it changes.
docs/HOME_ASSISTANT.md explains the sensors.
"""
import argparse
import json
import re
import sys
from decimal import Decimal

from bms import paramcheck as C
from bms import regmap as M
from bms.spec import regtable as RT
from bms import soc as S
from bmsctl.afe import cell_range
from bmsctl.client import DEFAULT_PORT, CtlError

ROWS = {r[1]: r for r in RT.INPUT_REGS}

# Home Assistant validates units against the device class: it spells Celsius "°C".
HA_UNITS = {"degC": "°C"}

# (register, name, device_class, state_class, nan_value). Arrays get one
# sensor per element ("{k}" in the name is the 1-based element number).
# Registers absent here (the event window, AFE diagnostics, configuration
# bookkeeping, lifetime counters) are left out on purpose: bmsctl shows them.
SENSORS = (
    ("pack_mv", "pack voltage", "voltage", "measurement", None),
    ("current_ma", "current", "current", "measurement", None),
    ("soc_dpct", "state of charge", "battery", "measurement", None),
    ("soh_dpct", "state of health", None, "measurement", None),
    ("remaining_mah", "remaining charge", None, "measurement", None),
    ("full_capacity_mah", "full capacity", None, "measurement", None),
    # energy_storage, not energy: HA allows only total/total_increasing on energy
    ("remaining_dwh", "remaining energy", "energy_storage", "measurement", None),
    ("cycles_dc", "cycles", None, "total_increasing", None),
    ("tte_min", "time to empty", "duration", "measurement", S.NO_TIME),
    ("ttf_min", "time to full", "duration", "measurement", S.NO_TIME),
    ("cell_mv", "cell {k} voltage", "voltage", "measurement", None),
    ("cell_min_mv", "lowest cell voltage", "voltage", "measurement", None),
    ("cell_max_mv", "highest cell voltage", "voltage", "measurement", None),
    ("cell_spread_mv", "cell voltage spread", "voltage", "measurement", None),
    ("cell_min_num", "lowest cell", None, None, None),
    ("cell_max_num", "highest cell", None, None, None),
    ("temp_dc", "temperature TS{k}", "temperature", "measurement", M.TEMP_INVALID),
    ("fet_flags", "FET flags", None, None, None),
    ("chg_off_reason", "charge off reason", None, None, None),
    ("dsg_off_reason", "discharge off reason", None, None, None),
    ("protect_flags", "protection flags", None, None, None),
    ("warn_flags", "warning flags", None, None, None),
    ("latched_flags", "latched protection flags", None, None, None),
    ("balance_mask", "balancing cells", None, None, None),
    ("power_mode", "power mode", None, None, None),
    ("soc_state", "SOC window and storage state", None, None, None),
    ("draw_ua", "BMS own draw", "current", "measurement", None),
    ("drawn_mah", "BMS own draw counted", None, "total_increasing", None),
    ("uptime_s", "uptime", "duration", "total_increasing", None),
)

# (register, bit, name): a Modbus binary_sensor on a register reads bit 0 only,
# and Home Assistant releases from 2021.9 into 2024 drop a second entity on an
# address already used. So the FETs (fet_flags bits 0 and 1) are one sensor,
# with template binary sensors in docs/HOME_ASSISTANT.md.
BINARY_SENSORS = (
    ("config_state", M.CFG_CONFIGURED, "configured"),
)

MIN_CELLS = cell_range()[0]  # the fewest cells an AFE takes; the most: the map's MAX_CELLS
CELLS_HELP = "the pack's series cell count, %d-%d (one sensor per cell)" % (MIN_CELLS, M.MAX_CELLS)


def slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _scale(exp):
    if exp >= 0:
        return 10 ** exp
    return float(Decimal(1).scaleb(exp))


def _check(port, unit, baud, parity, cells, name, scan_interval):
    if not isinstance(cells, int) or not MIN_CELLS <= cells <= M.MAX_CELLS:
        raise ValueError("--cells must be %s, not %r" % (CELLS_HELP, cells))
    if not 1 <= unit <= 247:
        raise ValueError("--unit must be the BMS's Modbus address, 1-247, not %d" % unit)
    if baud not in C.BAUDS:
        raise ValueError("--baud %d: the BMS talks at %s only" % (baud, ", ".join(str(b) for b in C.BAUDS)))
    if parity not in ("E", "O", "N"):
        raise ValueError("--parity must be E, O or N, not %r" % parity)
    if not slug(name):
        raise ValueError("--name needs a letter or digit: entity names and unique_ids start with it")
    if not isinstance(scan_interval, int) or scan_interval < 1:
        raise ValueError("--scan-interval must be a whole number of seconds, at least 1")
    if not port:
        raise ValueError("--port: give the serial port Home Assistant reaches the RS485 adapter on")


def _entities(unit, cells, name, scan_interval):
    """([(comment, sensor)], [(comment, binary_sensor)]) in output order."""
    prefix = slug(name)
    sensors = []
    for reg, label, dclass, sclass, nan in SENSORS:
        addr, _, typ, count, exp, unit_name = ROWS[reg][:6]
        n = cells if reg == "cell_mv" else count
        for k in range(n):
            a = addr + k * RT.WORDS[typ]
            s = {
                "name": "%s %s" % (name, label.format(k=k + 1)),
                "unique_id": "%s_%s" % (prefix, reg) + ("_%d" % (k + 1) if count > 1 else ""),
                "device_address": unit,
                "address": a,
                "input_type": "input",
                "data_type": typ,
                "scale": _scale(exp),
                "precision": max(0, -exp),
            }
            if unit_name:
                s["unit_of_measurement"] = HA_UNITS.get(unit_name, unit_name)
            if dclass:
                s["device_class"] = dclass
            if sclass:
                s["state_class"] = sclass
            if nan is not None:
                s["nan_value"] = nan
            s["scan_interval"] = scan_interval
            ref = "%s, element %d of %d" % (reg, k + 1, count) if count > 1 else reg
            sensors.append(("%s: input register 0x%04X" % (ref, a), s))
    binary = []
    for reg, bit, label in BINARY_SENSORS:
        if bit != 1:
            raise AssertionError("%s: Home Assistant reads bit 0 of a register, this flag is 0x%x" % (label, bit))
        addr, typ = ROWS[reg][0], ROWS[reg][2]
        assert RT.WORDS[typ] == 1, reg
        binary.append(("%s bit 0: input register 0x%04X" % (reg, addr), {
            "name": "%s %s" % (name, label),
            "unique_id": "%s_%s_bit0" % (prefix, reg),
            "device_address": unit,
            "address": addr,
            "input_type": "input",
            "scan_interval": scan_interval,
        }))
    return sensors, binary


def _hub(port, baud, parity, name):
    return {
        "name": name,
        "type": "serial",
        "port": port,
        "baudrate": baud,
        "bytesize": 8,
        "method": "rtu",
        "parity": parity,
        # Modbus RTU keeps 11-bit characters: no parity takes a second stop bit
        "stopbits": 2 if parity == "N" else 1,
    }


def config(port, unit, baud, parity, cells, name="bms", scan_interval=5):
    """The configuration as data: {"modbus": [hub]}."""
    _check(port, unit, baud, parity, cells, name, scan_interval)
    sensors, binary = _entities(unit, cells, name, scan_interval)
    hub = _hub(port, baud, parity, name)
    hub["sensors"] = [s for _, s in sensors]
    hub["binary_sensors"] = [b for _, b in binary]
    return {"modbus": [hub]}


# -- a YAML emitter for this one shape: mappings of scalars, lists of them ----

# Strings that stay strings unquoted under YAML 1.1 and 1.2; the rest are quoted.
_PLAIN = re.compile(r"^[A-Za-z/][A-Za-z0-9_./ -]*(?<! )$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        # positional, never 1e-06: YAML 1.1 loaders (Home Assistant's) read that as a string
        t = format(Decimal(repr(v)), "f")
        return t if "." in t else t + ".0"
    if _PLAIN.match(v) and v.lower() not in _RESERVED:
        return v
    return json.dumps(v, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _mapping(lines, d, indent, first_prefix=None):
    pad = " " * indent
    for i, (k, v) in enumerate(d.items()):
        lead = first_prefix if (i == 0 and first_prefix is not None) else pad
        lines.append("%s%s: %s" % (lead, k, _scalar(v)))


def _items(lines, key, entries, indent):
    pad = " " * indent
    lines.append("%s%s:" % (pad, key))
    for comment, d in entries:
        lines.append("%s  # %s" % (pad, comment))
        _mapping(lines, d, indent + 4, first_prefix=pad + "  - ")


def generate(port, unit, baud, parity, cells, name="bms", scan_interval=5):
    """The Home Assistant `modbus:` YAML as text (deterministic)."""
    _check(port, unit, baud, parity, cells, name, scan_interval)
    sensors, binary = _entities(unit, cells, name, scan_interval)
    lines = [
        "# Home Assistant Modbus configuration for the ESP32 BMS: %d cells, unit %d, %d baud 8%s%d."
        % (cells, unit, baud, parity, 2 if parity == "N" else 1),
        "# Generated by `bmsctl ha-modbus` from the firmware's register map (lib/bms/regmap.py);",
        "# regenerate it rather than edit it. Paste it into configuration.yaml (docs/HOME_ASSISTANT.md).",
        "modbus:",
    ]
    _mapping(lines, _hub(port, baud, parity, name), 4, first_prefix="  - ")
    _items(lines, "sensors", sensors, 4)
    _items(lines, "binary_sensors", binary, 4)
    return "\n".join(lines) + "\n"


# -- the bmsctl subcommand -----------------------------------------------------

def _cells_arg(text):
    try:
        n = int(text, 10)
    except ValueError:
        n = None
    if n is None or not MIN_CELLS <= n <= M.MAX_CELLS:
        raise argparse.ArgumentTypeError("%r: give %s" % (text, CELLS_HELP))
    return n


def _interval_arg(text):
    try:
        n = int(text, 10)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError("%r: give whole seconds, at least 1 (Home Assistant warns below 5)" % text)
    return n


def cmd_ha_modbus(args, out):
    if args.port == DEFAULT_PORT:
        sys.stderr.write("bmsctl: note: port %s is the simulator's link; give --port as Home Assistant "
                         "sees the RS485 adapter, e.g. --port /dev/ttyUSB0\n" % args.port)
    try:
        if args.json:
            text = json.dumps(config(args.port, args.unit, args.baud, args.parity, args.cells, args.name,
                                     args.scan_interval), indent=2, ensure_ascii=False) + "\n"
        else:
            text = generate(args.port, args.unit, args.baud, args.parity, args.cells, args.name,
                            args.scan_interval)
    except ValueError as e:
        raise CtlError(str(e))
    out.write(text)
    return 0


def add_command(sub, cmd):
    """Register `ha-modbus` on bmsctl's subparsers; `cmd` is build_parser's helper."""
    help = ("a Home Assistant Modbus configuration (YAML) for polling this BMS over RS485, from "
            "--port/--unit/--baud/--parity and the register map (needs no port)")
    s = cmd("ha-modbus", cmd_ha_modbus, help)
    s.add_argument("--cells", type=_cells_arg, required=True, metavar="N", help=CELLS_HELP)
    s.add_argument("--name", default="bms",
                   help="hub name and entity name prefix (default %(default)s: sensor.bms_pack_voltage, ...)")
    s.add_argument("--scan-interval", type=_interval_arg, default=5, metavar="S",
                   help="seconds between polls of each sensor (default %(default)s)")
    return s
