"""bmsctl: the upper computer. Reads a BMS over Modbus RTU (RS485) with pymodbus.

    bmsctl --port build/ttyBMS status
    bmsctl --port /dev/ttyUSB0 watch
    bmsctl registers --json
"""
import argparse
import json
import logging
import os
import sys
import time

from bms import paramtable as PT
from bms import params as P
from bms import protection as PR
from bms import regdoc as D
from bms import regmap as M
from bmsctl import regs as RG

DEFAULT_PORT = os.path.join("build", "ttyBMS")


class CtlError(Exception):
    """A problem the user can fix; the message says how."""

    def __init__(self, msg, code=2):
        super().__init__(msg)
        self.code = code


class Bms:
    """One BMS on a serial line."""

    def __init__(self, port, unit=1, baud=19200, parity="E", timeout=1.0):
        from pymodbus import FramerType
        from pymodbus.client import ModbusSerialClient

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        if not os.path.exists(port):
            raise CtlError(
                "cannot open serial port %r: no such device. Start the simulator with "
                "`bms-sim run` (it prints the link path, by default %s), or give your RS485 "
                "adapter's port, e.g. --port /dev/ttyUSB0." % (port, DEFAULT_PORT))
        self.port = port
        self.unit = unit
        self.timeout = timeout
        if is_pseudo_terminal(port):
            parity = "N"  # a pty carries bytes, not bits: Linux refuses parity on it
        stopbits = 2 if parity == "N" else 1  # Modbus RTU: 11 bits per character
        self.client = ModbusSerialClient(port, framer=FramerType.RTU, baudrate=baud, bytesize=8,
                                         parity=parity, stopbits=stopbits, timeout=timeout, retries=2)
        if not self.client.connect():
            raise CtlError("cannot open serial port %r: another program holds it (only one may), "
                           "or your user lacks permission (on Linux, join the dialout group)." % port)

    def close(self):
        self.client.close()

    def _read(self, fn, start, count):
        try:
            rr = fn(start, count=count, device_id=self.unit)
        except Exception as e:  # pymodbus raises ModbusException subclasses on timeouts
            raise CtlError("no reply from unit %d on %s within %.1f s (%s): check --unit, "
                           "--baud and the wiring, and that the BMS is running."
                           % (self.unit, self.port, self.timeout, e), code=3)
        if rr.isError():
            raise CtlError("unit %d answered with an error: %s" % (self.unit, rr), code=3)
        return rr.registers

    def read_table(self, table):
        regs = M.INPUT_REGS if table == "input" else PT.TABLE
        fn = self.client.read_input_registers if table == "input" else self.client.read_holding_registers
        words = [0] * RG.span(regs)[1]
        # read mapped runs only: a gap in the map answers exception 02
        for a, n in _runs(regs):
            words[a:a + n] = self._read(fn, a, n)
        return RG.decode(regs, words)

    def status(self):
        return {"input": self.read_table("input"), "holding": self.read_table("holding")}


def is_pseudo_terminal(port):
    """True for the simulator's link (a /dev/pts/N, maybe behind a symlink)."""
    return os.path.realpath(port).startswith("/dev/pts/")


def _runs(regs):
    """Contiguous mapped address runs of a table, each at most 125 registers."""
    addrs = sorted({r[0] + k for r in regs for k in range(M.WORDS[r[2]] * r[3])})
    runs = []
    for a in addrs:
        if runs and runs[-1][0] + runs[-1][1] == a and runs[-1][1] < 125:
            runs[-1][1] += 1
        else:
            runs.append([a, 1])
    return [tuple(r) for r in runs]


# -- presentation ------------------------------------------------------------

def status_dict(st):
    """The status as engineering values for --json."""
    raw = st["input"]
    ir = RG.scaled(M.INPUT_REGS, raw)
    hr = RG.scaled(PT.TABLE, st["holding"])
    n = raw["cell_count"]
    temps = [None if t == M.TEMP_INVALID else t / 10.0 for t in raw["temp_dc"]]
    chem = st["holding"]["chemistry"]
    return {
        "pack_v": ir["pack_mv"],
        "current_a": ir["current_ma"],
        "power_w": round(ir["pack_mv"] * ir["current_ma"], 3),
        "cell_count": n,
        "cells_v": ir["cell_mv"][:n],
        "cell_min_v": ir["cell_min_mv"],
        "cell_max_v": ir["cell_max_mv"],
        "cell_spread_v": ir["cell_spread_mv"],
        "temps_c": temps,
        "charge_fet": bool(raw["fet_flags"] & M.FET_CHG),
        "discharge_fet": bool(raw["fet_flags"] & M.FET_DSG),
        "charge_off_reason": RG.reason_name(raw["chg_off_reason"]),
        "discharge_off_reason": RG.reason_name(raw["dsg_off_reason"]),
        "protections": RG.flag_names(raw["protect_flags"]),
        "warnings": RG.flag_names(raw["warn_flags"]),
        "latched": RG.flag_names(raw["latched_flags"]),
        "balancing_cells": [i + 1 for i in range(n) if raw["balance_mask"] & (1 << i)],
        "afe_stat": raw["afe_stat"],
        "meas_count": raw["meas_count"],
        "uptime_s": raw["uptime_s"],
        "afe_crc_errors": raw["afe_crc_errors"],
        "afe_bus_errors": raw["afe_bus_errors"],
        "hardware_protection": {
            "ov_v": ir["hw_ov_applied_mv"], "uv_v": ir["hw_uv_applied_mv"],
            "ocd_a": ir["hw_ocd_applied_ma"], "ocd_delay_s": ir["hw_ocd_applied_delay_ms"],
            "scd_a": ir["hw_scd_applied_ma"], "scd_delay_s": ir["hw_scd_applied_delay_us"],
        },
        "soc_pct": ir["soc_dpct"],
        "remaining_ah": ir["remaining_mah"],
        "full_capacity_ah": ir["full_capacity_mah"],
        "soh_pct": ir["soh_dpct"],
        "cycles": ir["cycles_dc"],
        "remaining_wh": ir["remaining_dwh"],
        "time_to_empty_min": None if raw["tte_min"] == 0xFFFF else raw["tte_min"],
        "time_to_full_min": None if raw["ttf_min"] == 0xFFFF else raw["ttf_min"],
        "cc_offset_lsb": raw["cc_offset_dlsb"] / 16.0,
        "event_seq": raw["event_seq"],
        "config": {
            "chemistry": P.CHEMISTRY_NAMES[chem] if chem < len(P.CHEMISTRY_NAMES) else chem,
            "cell_channels": st["holding"]["cell_channels"],
            "capacity_ah": hr["capacity_mah"],
            "shunt_mohm": hr["shunt_uohm"],
            "modbus_address": st["holding"]["modbus_address"],
            "modbus_baud": st["holding"]["modbus_baud"],
        },
    }


def _bar(mv, lo, hi, width=24):
    if hi <= lo:
        return ""
    k = int(round((mv - lo) * width / (hi - lo)))
    return "#" * max(0, min(width, k))


def format_status(d, where=""):
    up = d["uptime_s"]
    lines = []
    lines.append("BMS %s   uptime %d:%02d:%02d   measurement #%d" % (
        where, up // 3600, up // 60 % 60, up % 60, d["meas_count"]))
    lines.append("Pack      %7.3f V  %+8.3f A  %+8.1f W" % (d["pack_v"], d["current_a"], d["power_w"]))
    tte, ttf = d["time_to_empty_min"], d["time_to_full_min"]
    eta = ("  empty in %d:%02d" % divmod(tte, 60) if tte is not None else "") + \
          ("  full in %d:%02d" % divmod(ttf, 60) if ttf is not None else "")
    if d["full_capacity_ah"]:
        lines.append("Charge    %5.1f %%  %.2f of %.2f Ah  %.1f Wh  SOH %.1f %%  %.2f cycles%s" % (
            d["soc_pct"], d["remaining_ah"], d["full_capacity_ah"], d["remaining_wh"], d["soh_pct"],
            d["cycles"], eta))
    else:
        lines.append("Charge    not estimated yet (no pack configured, or no measurement yet)")
    n = d["cell_count"]
    if n:
        lines.append("Cells     %d in series; min %.3f V, max %.3f V, spread %d mV" % (
            n, d["cell_min_v"], d["cell_max_v"], round(d["cell_spread_v"] * 1000)))
        lo = min(d["cells_v"]) - 0.005
        hi = max(d["cells_v"]) + 0.005
        for i, v in enumerate(d["cells_v"]):
            mark = " bleeding" if (i + 1) in d["balancing_cells"] else ""
            lines.append("  cell %2d %6.3f V %-24s%s" % (i + 1, v, _bar(v, lo, hi), mark))
    else:
        lines.append("Cells     none configured")
    lines.append("Temps     " + "  ".join("--" if t is None else "%.1f degC" % t for t in d["temps_c"]))
    lines.append("FETs      charge %s, discharge %s" % (
        "ON" if d["charge_fet"] else "off (%s)" % (d["charge_off_reason"] or "-"),
        "ON" if d["discharge_fet"] else "off (%s)" % (d["discharge_off_reason"] or "-")))
    desc = {row[0]: _row_text(row) for row in PR.ROWS}
    for label, key in (("Protect", "protections"), ("Warnings", "warnings"), ("Latched", "latched")):
        names = d[key]
        if names or key == "protections":
            lines.append("%-9s %s" % (label, ", ".join(names) if names else "none"))
            for name in names:
                lines.append("          %s: %s" % (name, desc[name]))
    if d["balancing_cells"]:
        lines.append("Balancing cells " + ", ".join(str(c) for c in d["balancing_cells"]))
    lines.append("AFE       flags 0x%02x, CRC errors %d, bus errors %d" % (
        d["afe_stat"], d["afe_crc_errors"], d["afe_bus_errors"]))
    c = d["config"]
    lines.append("Config    %s, %.3f Ah, shunt %.3f mOhm, Modbus address %d at %d baud" % (
        c["chemistry"], c["capacity_ah"], c["shunt_mohm"], c["modbus_address"], c["modbus_baud"]))
    return "\n".join(lines)


def _row_text(row):
    fets = {PR.CHG: "charge off", PR.DSG: "discharge off", PR.BOTH: "both FETs off", 0: "reported only"}[row[7]]
    return "%s (%s)" % (D.PROTECTION[row[0]], fets)




def format_events(records):
    out = ["%8s %5s %10s  %s" % ("seq", "boot", "time", "event")]
    for r in records:
        t = r["time_s"]
        out.append("%8d %5d %4d:%02d:%02d  %s" % (r["seq"], r["boot"], t // 3600, t // 60 % 60, t % 60,
                                                RG.event_text(r["code"], r["value"])))
    return "\n".join(out)


def format_registers(rows):
    out = ["%-8s %-7s %-16s %-6s %5s %-7s %-6s %s" % ("table", "address", "name", "type", "count", "scale", "unit", "description")]
    for r in rows:
        out.append("%-8s 0x%04x  %-16s %-6s %5d %-7g %-6s %s" % (
            r["table"], r["address"], r["name"], r["type"].replace("int", "i").replace("ui", "u"),
            r["count"], r["scale"], r["unit"], r["description"]))
    return "\n".join(out)


# -- commands ------------------------------------------------------------------

def cmd_registers(args, out):
    rows = RG.rows()
    out.write((json.dumps(rows, indent=2) if args.json else format_registers(rows)) + "\n")
    return 0


def _connect(args):
    return Bms(args.port, unit=args.unit, baud=args.baud, parity=args.parity, timeout=args.timeout)


def cmd_status(args, out):
    bms = _connect(args)
    try:
        d = status_dict(bms.status())
    finally:
        bms.close()
    out.write((json.dumps(d, indent=2) if args.json else format_status(d, args.port)) + "\n")
    return 0


def cmd_events(args, out):
    bms = _connect(args)
    try:
        raw = bms.read_table("input")
    finally:
        bms.close()
    recs = [r for r in raw["events"] if r is not None][:args.count]
    recs.reverse()  # oldest first, like a log
    if args.json:
        for r in recs:
            r["text"] = RG.event_text(r["code"], r["value"])
        out.write(json.dumps(recs, indent=2) + "\n")
    else:
        out.write(format_events(recs) + "\n")
    return 0


def cmd_watch(args, out):
    bms = _connect(args)
    clear = out.isatty() and not args.json
    end = time.monotonic() + args.seconds if args.seconds else None
    try:
        while True:
            d = status_dict(bms.status())
            if args.json:
                out.write(json.dumps(d) + "\n")
            else:
                out.write(("\x1b[H\x1b[2J" if clear else "\n") + format_status(d, args.port) + "\n")
            out.flush()
            if end is not None and time.monotonic() + args.interval > end:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        bms.close()


def build_parser():
    p = argparse.ArgumentParser(prog="bmsctl", description="Upper computer for the ESP32 BMS (Modbus RTU over RS485).")
    p.add_argument("--port", default=DEFAULT_PORT, help="serial port of the RS485 link (default %(default)s, where `bms-sim run` puts it)")
    p.add_argument("--unit", type=int, default=1, help="Modbus address of the BMS (default 1)")
    p.add_argument("--baud", type=int, default=19200, help="baud rate, 8E1 (default 19200)")
    p.add_argument("--parity", choices=("E", "O", "N"), default="E",
                   help="E, O or N (N uses 2 stop bits); default E. Ignored on the simulator's pseudo-terminal")
    p.add_argument("--timeout", type=float, default=1.0, help="reply timeout in seconds (default 1)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="read the BMS once and show it")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("watch", help="show the BMS live until Ctrl-C")
    s.add_argument("--interval", type=float, default=1.0, help="seconds between reads (default 1)")
    s.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (0 = never)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=cmd_watch)
    s = sub.add_parser("events", help="the newest event-log records (trips, releases, faults, boots)")
    s.add_argument("--count", type=int, default=M.EVENT_WINDOW, help="how many (default and most: %(default)s)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_events)
    s = sub.add_parser("registers", help="the Modbus register map (needs no port)")
    s.add_argument("--json", action="store_true", help="a JSON list of register objects")
    s.set_defaults(func=cmd_registers)
    return p


def main(argv=None, out=None):
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, out)
    except CtlError as e:
        sys.stderr.write("bmsctl: %s\n" % e)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
