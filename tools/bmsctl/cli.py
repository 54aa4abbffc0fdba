"""bmsctl: the upper computer. Reads a BMS over Modbus RTU (RS485) with pymodbus.

    bmsctl --port build/ttyBMS status
    bmsctl --port /dev/ttyUSB0 watch
    bmsctl registers --json
    bmsctl setup --chemistry lfp --cells 4 --capacity 100 --yes
    bmsctl config set cell_ov=3.6V chg_ot=45C --pin 1234
    bmsctl config export pack.json; bmsctl config import pack.json --restart
    bmsctl log --out pack.csv --every 1s --duration 1h
"""
import argparse
import csv
import datetime
import getpass
import json
import logging
import os
import sys
import time
from contextlib import contextmanager

from bms import paramtable as PT
from bms import params as P
from bms import protection as PR
from bms import protrules
from bms import regdoc as D
from bms import regmap as M
from bmsctl import config as CF
from bmsctl import dashboard as DB
from bmsctl import hamodbus as HA
from bmsctl import planner as PN
from bmsctl import plot as PL
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

    # -- parameters and control ------------------------------------------------

    def read_values(self):
        """Every parameter's raw value, by bms.params index (the PIN reads 0)."""
        return CF.values_from_holding(self.read_table("holding"))

    def read_input(self, addr, count):
        return self._read(self.client.read_input_registers, addr, count)

    def config_state(self):
        return self.read_input(M.IR_CONFIG_STATE, 1)[0]

    def config_error(self):
        return self.read_input(M.IR_CONFIG_ERROR, 1)[0]

    def read_live(self):
        """Every input register but the event window, decoded (raw values)."""
        regs = live_regs()
        words = [0] * RG.span(regs)[1]
        for a, n in _runs(regs):
            words[a:a + n] = self.read_input(a, n)
        return RG.decode(regs, words)

    def newest_boot(self):
        """(boot number of the newest event-log record or None, uptime_s)."""
        w = self.read_input(M.IR_EVENTS, M.EVENT_WORDS)
        rec = RG.decode(((0, "e", "event", 1, 0, ""),), w)["e"]
        up = self.read_input(M.IR_UPTIME_S, 2)
        return (rec["boot"] if rec else None), (up[0] << 16) | up[1]

    def _write(self, fn, addr, value):
        try:
            rr = fn(addr, value, device_id=self.unit)
        except Exception as e:
            raise CtlError("no reply from unit %d on %s within %.1f s to a write (%s): check the link; the "
                           "write may or may not have been taken (`bmsctl config get` shows what the BMS holds)"
                           % (self.unit, self.port, self.timeout, e), code=3)
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            return code or 4
        return 0

    def write_params(self, addr, words):
        """FC16; 0 or the Modbus exception code."""
        return self._write(self.client.write_registers, addr, list(words))

    def write_control(self, addr, value):
        """FC06 to a control register; 0 or the exception code."""
        return self._write(self.client.write_register, addr, value)

    def device_id(self):
        """{vendor, product, version} from FC 0x2B/0x0E, or None."""
        try:
            rr = self.client.read_device_information(read_code=1, object_id=0, device_id=self.unit)
            if rr.isError():
                return None
            info = rr.information
            return {k: info[i].decode("utf-8", "replace") for i, k in enumerate(("vendor", "product", "version"))
                    if i in info}
        except Exception:
            return None

    def follow(self, values):
        """After a write of the serial settings: talk the way the BMS now listens."""
        self.unit = values[P.P_MODBUS_ADDRESS]
        baud = values[P.P_MODBUS_BAUD]
        parity = "NEO"[values[P.P_MODBUS_PARITY]] if 0 <= values[P.P_MODBUS_PARITY] <= 2 else "E"
        if is_pseudo_terminal(self.port):
            return
        cp = self.client.comm_params
        if cp.baudrate != baud or cp.parity != parity:
            self.client.close()
            cp.baudrate, cp.parity, cp.stopbits = baud, parity, 2 if parity == "N" else 1
            time.sleep(0.05)
            self.client.connect()

    @contextmanager
    def quick(self, timeout=0.3):
        """Short timeouts and no retries: for polling a BMS that is restarting."""
        tm = getattr(self.client, "transaction", None)
        cp = getattr(self.client, "comm_params", None)
        saved = (getattr(tm, "retries", None), getattr(cp, "timeout_connect", None))
        try:
            if saved[0] is not None:
                tm.retries = 0
            if saved[1] is not None:
                cp.timeout_connect = timeout
            yield
        finally:
            if saved[0] is not None:
                tm.retries = saved[0]
            if saved[1] is not None:
                cp.timeout_connect = saved[1]


def live_regs():
    """The input-register rows `log` records: all but the event window."""
    return tuple(r for r in M.INPUT_REGS if r[2] != "event")


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
        # on only to spare its body diode: its own direction stays blocked (the off reason says by what)
        "fet_for_diode": bool(raw["fet_flags"] & M.FET_DIODE),
        "charge_off_reason": RG.reason_name(raw["chg_off_reason"]),
        "discharge_off_reason": RG.reason_name(raw["dsg_off_reason"]),
        "protections": RG.flag_names(raw["protect_flags"]),
        "warnings": RG.flag_names(raw["warn_flags"], warn=True),
        "latched": RG.flag_names(raw["latched_flags"]),
        "balancing_cells": [i + 1 for i in range(n) if raw["balance_mask"] & (1 << i)],
        "afe_stat": raw["afe_stat"],
        "meas_count": raw["meas_count"],
        "uptime_s": raw["uptime_s"],
        "afe_crc_errors": raw["afe_crc_errors"],
        "afe_bus_errors": raw["afe_bus_errors"],
        "save_errors": raw["save_errors"],
        "faults": raw["faults"],
        "fault_last": RG.fault_text(raw["fault_last"]) if raw["faults"] else None,
        "power": {
            "mode": RG.MODE_NAMES.get(raw["power_mode"], raw["power_mode"]),
            "cause": RG.CAUSE_NAMES.get(raw["mode_cause"], raw["mode_cause"]),
            "mode_time_s": raw["mode_time_s"],
            "reset_cause": RG.RESET_NAMES.get(raw["reset_cause"] >> 8, raw["reset_cause"] >> 8),
            "woken_by": RG.CAUSE_NAMES.get(raw["reset_cause"] & 0xFF),
            "button": bool(raw["io_state"] & 1), "acc": bool(raw["io_state"] & 2),
            "charger": bool(raw["io_state"] & 4), "network": bool(raw["io_state"] & 0x100),
        },
        "mqtt": {
            "state": RG.NET_STATES.get(raw["net_state"], raw["net_state"]),
            "error": RG.net_error_text(raw["net_error"]) or None,
            "connects": raw["net_connects"], "stored": raw["net_stored"], "dropped": raw["net_dropped"],
            "sent": raw["net_sent"], "block_max_s": ir["net_block_max_ms"],
        },
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
        "soc_window": {
            "charge_stop_pct": hr["soc_max_dpct"], "discharge_stop_pct": hr["soc_min_dpct"],
            "warn_low_pct": hr["soc_warn_low_dpct"], "hysteresis_pct": hr["soc_hyst_dpct"],
            "charge_stopped": bool(raw["soc_state"] & M.SOC_CHG_STOP),
            "discharge_stopped": bool(raw["soc_state"] & M.SOC_DSG_STOP),
            "low_warning": bool(raw["soc_state"] & M.SOC_LOW_WARN),
        },
        "storage": {
            "on": bool(raw["soc_state"] & M.SOC_STORAGE), "target_pct": hr["storage_soc_dpct"],
            "holds_charge": bool(raw["soc_state"] & M.SOC_STORAGE_CHG),
            "holds_discharge": bool(raw["soc_state"] & M.SOC_STORAGE_DSG),
            "at_target": bool(raw["soc_state"] & M.SOC_STORAGE_AT),
        },
        # the board's own supply: from the pack, never through the shunt, counted against the SOC
        "self_draw_a": ir["draw_ua"],
        "self_drawn_ah": ir["drawn_mah"],
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


def _hms(s):
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def _fet_text(on, reason, for_diode, direction):
    if on and for_diode and reason:
        # the firmware switched it on while the other direction's current flows: its diode would heat
        return "ON for the %s current (%s still blocks %s)" % (
            "discharge" if direction == "charge" else "charge", reason, direction)
    return "ON" if on else "off (%s)" % (reason or "-")


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
        _fet_text(d["charge_fet"], d["charge_off_reason"], d.get("fet_for_diode"), "charge"),
        _fet_text(d["discharge_fet"], d["discharge_off_reason"], d.get("fet_for_diode"), "discharge")))
    desc = {row[0]: row_text(row) for row in protrules.ROWS}
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
    if d.get("save_errors"):  # none over MQTT
        lines.append("Flash     %d failed save(s) since boot: the previous records stay stored (see events)"
                     % d["save_errors"])
    if d.get("faults"):  # none over MQTT
        lines.append("Faults    %d caught since boot, protection went on; the last: %s"
                     % (d["faults"], d["fault_last"]))
    w = d.get("soc_window")
    if w:  # none over MQTT
        on = w["charge_stop_pct"] < 100 or w["discharge_stop_pct"] > 0 or w["warn_low_pct"] > 0
        held = [t for k, t in (("charge_stopped", "charge stopped at the top"),
                               ("discharge_stopped", "discharge stopped at the bottom"),
                               ("low_warning", "SOC low")) if w[k]]
        lines.append("SOC use   %s%s" % (
            ("%.1f-%.1f %% (hysteresis %.1f %%)" % (w["discharge_stop_pct"], w["charge_stop_pct"],
                                                   w["hysteresis_pct"]) if on else "0-100 % (no SOC window)"),
            "; " + ", ".join(held) if held else ""))
        sto = d["storage"]
        if sto["on"]:
            hold = ("at the target: resting, then sleep" if sto["at_target"] else
                    "discharging to the target (charge held off)" if sto["holds_charge"] else
                    "charging to the target (discharge held off)" if sto["holds_discharge"] else
                    "on its way to the target")
            lines.append("Storage   ON: to %.1f %%, %s; `bmsctl storage off` to use the pack" % (
                sto["target_pct"], hold))
        lines.append("Self-use  %.2f mA now; %.3f Ah counted against the charge since boot (the board's own "
                     "supply, never through the shunt)" % (d["self_draw_a"] * 1000, d["self_drawn_ah"]))
    pw = d["power"]
    inputs = [k for k in ("acc", "charger", "button") if pw[k]]
    lines.append("Power     %s for %s (%s); network %s; inputs %s; this boot: %s%s" % (
        pw["mode"], _hms(pw["mode_time_s"]), pw["cause"], "on" if pw["network"] else "off",
        ", ".join(inputs) or "none", pw["reset_cause"],
        ", woken by " + pw["woken_by"] if pw["woken_by"] else ""))
    mq = d["mqtt"]
    if mq["state"] != "off" or mq["error"]:
        lines.append("MQTT      %s; %d connection(s), %d sent, %d waiting, %d dropped; longest hold %d ms%s" % (
            mq["state"], mq["connects"], mq["sent"], mq["stored"], mq["dropped"], round(mq["block_max_s"] * 1000),
            "; last error: " + mq["error"] if mq["error"] else ""))
    c = d["config"]
    lines.append("Config    %s, %.3f Ah, shunt %.3f mOhm, Modbus address %d at %d baud" % (
        c["chemistry"], c["capacity_ah"], c["shunt_mohm"], c["modbus_address"], c["modbus_baud"]))
    return "\n".join(lines)


def row_text(row):
    fets = {PR.CHG: "charge off", PR.DSG: "discharge off", PR.BOTH: "both FETs off", 0: "reported only"}[row[7]]
    return "%s (%s)" % (D.PROTECTION[row[0]], fets)




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


def connect(args):
    return Bms(args.port, unit=args.unit, baud=args.baud, parity=args.parity, timeout=args.timeout)


def cmd_status(args, out):
    bms = connect(args)
    try:
        d = status_dict(bms.status())
    finally:
        bms.close()
    out.write((json.dumps(d, indent=2) if args.json else format_status(d, args.port)) + "\n")
    return 0


def event_text(code, value):
    """An event-log record in words (bmsctl.regs.event_text)."""
    return RG.event_text(code, value)


def format_events(records):
    out = ["%8s %5s %10s  %s" % ("seq", "boot", "time", "event")]
    for r in records:
        t = r["time_s"]
        out.append("%8d %5d %4d:%02d:%02d  %s" % (r["seq"], r["boot"], t // 3600, t // 60 % 60, t % 60,
                                                event_text(r["code"], r["value"])))
    return "\n".join(out)


def cmd_events(args, out):
    bms = connect(args)
    try:
        raw = bms.read_table("input")
    finally:
        bms.close()
    recs = [r for r in raw["events"] if r is not None][:args.count]
    recs.reverse()  # oldest first, like a log
    if args.json:
        for r in recs:
            r["text"] = event_text(r["code"], r["value"])
        out.write(json.dumps(recs, indent=2) + "\n")
    else:
        out.write(format_events(recs) + "\n")
    return 0


def cmd_watch(args, out):
    bms = connect(args)
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


# -- unlocking and commands ------------------------------------------------------

def _interactive():
    """True when a person can be asked (stdin is a terminal)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _pin_value(text):
    try:
        pin = int(str(text).strip())
    except ValueError:
        pin = -1
    if not 1 <= pin <= 65535:
        raise CtlError("PIN %r: a PIN is a whole number 1..65535 (1234 on a new BMS)" % (text,))
    return pin


def _ask_pin(what="PIN"):
    if not _interactive():
        raise CtlError("no PIN given: pass --pin PIN (1234 on a new BMS), or run this in a terminal to be asked")
    try:
        return _pin_value(getpass.getpass("%s: " % what))
    except (EOFError, KeyboardInterrupt):
        raise CtlError("no PIN given; nothing was written") from None


def _unlock(bms, pin):
    """Write the PIN to the unlock register; a CtlError naming why it failed."""
    code = bms.write_control(M.HR_UNLOCK, pin)
    if code:
        why = RG.config_error_text(bms.config_error()) or "exception %d" % code
        raise CtlError("the BMS did not take the PIN: %s. The PIN is the parameter `pin` (1234 on a new BMS); "
                       "nothing was written" % why)


def _lock(bms):
    try:
        bms.write_control(M.HR_UNLOCK, 0)
    except CtlError:
        pass


def _open_writes(bms, pin):
    """Make sure writes are open: unlock with `pin` when locked. True when
    this unlocked them (the caller locks again when done)."""
    state = bms.config_state()
    if state & M.CFG_UNLOCKED:
        return False
    if state & M.CFG_PIN_LOCKOUT:
        raise CtlError("unlocking is refused for a minute after 5 wrong PINs: wait, then pass the right --pin; "
                       "nothing was written")
    if pin is None:
        raise CtlError("parameter writes are locked: run `bmsctl unlock` first, or pass --pin PIN "
                       "(1234 on a new BMS); nothing was written")
    _unlock(bms, _pin_value(pin))
    return True


def cmd_unlock(args, out):
    pin = _pin_value(args.pin) if args.pin is not None else _ask_pin()
    bms = connect(args)
    try:
        _unlock(bms, pin)
        left = bms.read_input(M.IR_UNLOCK_LEFT_S, 1)[0]
    finally:
        bms.close()
    if args.json:
        out.write(json.dumps({"unlocked": True, "seconds_left": left}) + "\n")
    else:
        out.write("unlocked: parameter writes are open for %d s after the last write (`bmsctl lock` closes them)\n"
                  % left)
    return 0


def cmd_lock(args, out):
    bms = connect(args)
    try:
        code = bms.write_control(M.HR_UNLOCK, 0)
        if code:
            raise CtlError("the BMS refused the lock (exception %d)" % code, code=3)
    finally:
        bms.close()
    out.write((json.dumps({"unlocked": False}) if args.json else "locked: parameter writes are closed") + "\n")
    return 0


def _command(bms, cmd, pin):
    relock = _open_writes(bms, pin)
    code = bms.write_control(M.HR_COMMAND, cmd)
    if code:
        why = RG.config_error_text(bms.config_error()) or "exception %d" % code
        raise CtlError("the BMS refused the command: %s" % why, code=3)
    return relock


def restart_and_wait(bms, pin, wait_s, cmd=M.CMD_RESTART):
    """Send the restart (or factory-reset) command and wait until the BMS
    answers from its next boot. Returns the seconds it took."""
    try:
        boot0, up0 = bms.newest_boot()
    except CtlError:
        boot0, up0 = None, None
    t0 = time.monotonic()
    _open_writes(bms, pin)
    try:
        code = bms.write_control(M.HR_COMMAND, cmd)
    except CtlError:
        code = 0  # the reply may be lost in the reset: the wait below tells
    if code:
        why = RG.config_error_text(bms.config_error()) or "exception %d" % code
        raise CtlError("the BMS refused the restart: %s" % why, code=3)
    deadline = t0 + wait_s
    time.sleep(0.2)
    with bms.quick():
        while time.monotonic() < deadline:
            try:
                boot, up = bms.newest_boot()
            except CtlError:
                boot = None
            else:
                if boot is not None and (boot0 is None or boot > boot0):
                    return time.monotonic() - t0
                if boot0 is None and up0 is not None and up < up0:
                    return time.monotonic() - t0
            time.sleep(0.1)
    raise CtlError("the BMS did not answer within %.0f s of the restart command: check it with `bmsctl status` "
                   "(a longer --wait may help on a slow link)" % wait_s, code=3)


def cmd_restart(args, out):
    bms = connect(args)
    try:
        took = restart_and_wait(bms, args.pin, args.wait)
        state = bms.config_state()
    finally:
        bms.close()
    if args.json:
        out.write(json.dumps({"restarted": True, "seconds": round(took, 2),
                              "configured": bool(state & M.CFG_CONFIGURED)}) + "\n")
    else:
        out.write("restarted: the BMS answered again after %.1f s%s\n" % (
            took, "" if state & M.CFG_CONFIGURED else " (it runs unconfigured: FETs stay off; see `bmsctl setup`)"))
    return 0


def cmd_clear_latched(args, out):
    bms = connect(args)
    try:
        relock = _command(bms, M.CMD_CLEAR_LATCHED, args.pin)
        if relock:
            _lock(bms)
    finally:
        bms.close()
    out.write((json.dumps({"cleared": True}) if args.json else
               "latched protections cleared (they trip again if their cause is still there)") + "\n")
    return 0


def storage_set(bms, on, pin):
    """Storage mode on or off by the command register (4/5: the BMS sets the
    parameter `storage` and saves it), read back, not assumed:
    {"storage": on, "storage_soc_pct": target}. CtlError when the BMS does
    not report the mode asked for."""
    relock = _command(bms, M.CMD_STORAGE_ON if on else M.CMD_STORAGE_OFF, pin)
    if relock:
        _lock(bms)
    deadline = time.monotonic() + 3.0  # the next control cycle (250 ms) publishes it
    while True:
        got = bool(bms.read_input(M.IR_SOC_STATE, 1)[0] & M.SOC_STORAGE)
        if got == on or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if got != on:
        raise CtlError("the BMS took the command but still reports storage mode %s: check `bmsctl status`"
                       % ("on" if got else "off"), code=3)
    target = bms.read_values()[CF.INDEX["storage_soc_dpct"]]
    return {"storage": on, "storage_soc_pct": target / 10}


def cmd_storage(args, out):
    on = args.state == "on"
    bms = connect(args)
    try:
        r = storage_set(bms, on, args.pin)
    finally:
        bms.close()
    if args.json:
        out.write(json.dumps(r) + "\n")
    elif on:
        out.write("storage mode on: the BMS charges or discharges the pack to %.1f %% and then rests "
                  "(low power, then sleep); `bmsctl storage off` to use the pack again\n" % r["storage_soc_pct"])
    else:
        out.write("storage mode off: the pack is in use again\n")
    return 0


def cmd_factory_reset(args, out):
    if not args.yes:
        if not _interactive():
            raise CtlError("factory-reset erases every setting: add --yes to confirm")
        if not _confirm("Erase every stored setting and restart unconfigured (FETs off until `bmsctl setup`)?"):
            out.write("nothing was done\n")
            return 1
    bms = connect(args)
    try:
        took = restart_and_wait(bms, args.pin, args.wait, cmd=M.CMD_FACTORY_RESET)
    finally:
        bms.close()
    out.write((json.dumps({"factory_reset": True, "seconds": round(took, 2)}) if args.json else
               "factory reset: the BMS restarted unconfigured after %.1f s; configure it with `bmsctl setup`"
               % took) + "\n")
    return 0


def _confirm(question):
    try:
        return input(question + " [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


# -- parameters ------------------------------------------------------------------

def _plan(cur, target):
    """The write requests from `cur` to `target` (bmsctl.config.plan), or a
    CtlError saying why there are none; before anything is unlocked."""
    try:
        return PN.plan(cur, target)
    except CF.ConfigError as e:
        raise CtlError("%s; nothing was written" % e)


def _write_set(bms, cur, target, steps):
    """Send the planned writes from `cur` to `target` (writes open).
    Returns the number of write requests."""

    def after(step):
        if any(i in CF.COMM_KEYS for i in step.changed):
            v = list(cur)
            for s in steps[:steps.index(step) + 1]:
                for i in s.changed:
                    v[i] = target[i]
            bms.follow(v)

    try:
        PN.execute(bms, steps, after=after)
    except PN.WriteRefused as e:
        why = RG.config_error_text(e.error) or "exception %d" % e.code
        done = [n for s in e.done for n in s.names()]
        raise CtlError("the BMS refused writing %s: %s; %s" % (
            ", ".join(e.step.names()), why,
            "written before it (they stay): " + ", ".join(done) if done else "nothing was written"), code=3)
    return len(steps)


def _changed_rows(before, after):
    rows = []
    for i in range(CF.COUNT):
        if before[i] != after[i] and i != P.P_PIN:
            rows.append({"name": CF.NAMES[i], "old": before[i], "new": after[i],
                         "old_text": CF.display(i, before[i]), "new_text": CF.display(i, after[i])})
    return rows


def _apply(bms, pin, cur, target):
    """Open writes, write `target` over `cur`, lock again if they were
    locked, read back. Returns a dict for _report_changes."""
    changed = CF.changes(cur, target)
    steps = _plan(cur, target)
    relock = _open_writes(bms, pin)
    try:
        requests = _write_set(bms, cur, target, steps)
    finally:
        if relock:
            _lock(bms)
    after = bms.read_values()
    state = bms.config_state()
    return {"after": after, "state": state, "requests": requests,
            "rows": _changed_rows(cur, after), "pin_changed": target[P.P_PIN] != cur[P.P_PIN],
            "mismatch": {CF.NAMES[i]: CF.display(i, after[i]) for i in changed
                         if i != P.P_PIN and after[i] != target[i]}}


def _report_changes(out, r, json_out, extra=None):
    rows, state = r["rows"], r["state"]
    pending = [x["name"] for x in rows if CF.INDEX[x["name"]] in CF.PACK_KEYS]
    if json_out:
        d = {"changed": rows, "pin_changed": r["pin_changed"], "requests": r["requests"],
             "restart_pending": bool(state & M.CFG_RESTART_PENDING),
             "configured": bool(state & M.CFG_CONFIGURED), "mismatch": r["mismatch"]}
        d.update(extra or {})
        out.write(json.dumps(d, indent=2) + "\n")
        return
    if rows:
        w = max(len(x["name"]) for x in rows)
        out.write("changed (%d write request%s):\n" % (r["requests"], "" if r["requests"] == 1 else "s"))
        for x in rows:
            out.write("  %-*s %s -> %s\n" % (w, x["name"], x["old_text"], x["new_text"]))
    if r["pin_changed"]:
        out.write("  pin changed (it is never read back)\n")
    for name, got in r["mismatch"].items():
        out.write("warning: %s reads back %s, not what was written\n" % (name, got))
    if state & M.CFG_RESTART_PENDING:
        out.write("restart needed: %s take%s effect when the BMS restarts: run `bmsctl restart`\n" % (
            ", ".join(pending) or "stored pack settings", "s" if len(pending) == 1 else ""))


def cmd_config_get(args, out):
    idx = []
    try:
        for n in args.names:
            idx += [i for i in CF.resolve(n) if i not in idx]
    except CF.ConfigError as e:
        raise CtlError(str(e))
    idx = idx or list(range(CF.COUNT))
    bms = connect(args)
    try:
        v = bms.read_values()
    finally:
        bms.close()
    if args.json:
        d = {}
        for i in idx:
            row = CF.ROWS[i]
            d[row[1]] = {"value": None if i == P.P_PIN else CF.eng(i, v[i]), "unit": row[5], "raw": v[i],
                         "raw_unit": CF.raw_unit(i), "address": row[0],
                         "min": CF.eng(i, CF.PRM.lo[i]), "max": CF.eng(i, CF.PRM.hi[i])}
        out.write(json.dumps(d, indent=2) + "\n")
        return 0
    w = max(len(CF.NAMES[i]) for i in idx)
    out.write("%-*s  %-18s %10s  %s\n" % (w, "parameter", "value", "raw", "range"))
    for i in idx:
        out.write("%-*s  %-18s %10s  %s\n" % (w, CF.NAMES[i], CF.display(i, v[i]),
                                             "-" if i == P.P_PIN else v[i], CF.range_text(i)))
    return 0


def config_set(bms, assignments, pin=None):
    """`config set`: NAME=VALUE items parsed against the BMS's values, the
    whole resulting set judged, then unlock (with pin), write in a safe
    order, lock again and read back. The write's result (_apply), or None
    when the BMS already holds the values; CtlError when refused, and then
    nothing was written."""
    cur = bms.read_values()
    try:
        target, _ = CF.parse_assignments(assignments, cur)
    except CF.ConfigError as e:
        raise CtlError("%s; nothing was written" % e)
    err = CF.validate(cur, target)
    if err:
        raise CtlError("%s; nothing was written" % err)
    if not CF.changes(cur, target):
        return None
    return _apply(bms, pin, cur, target)


def cmd_config_set(args, out):
    bms = connect(args)
    try:
        r = config_set(bms, args.assignments, args.pin)
        if r is None:
            out.write((json.dumps({"changed": [], "restart_pending": False}) if args.json else
                       "nothing to change: the BMS already holds these values") + "\n")
            return 0
        _report_changes(out, r, args.json)
    finally:
        bms.close()
    return 0


def cmd_config_export(args, out):
    bms = connect(args)
    try:
        v = bms.read_values()
        fw = bms.device_id()
    finally:
        bms.close()
    doc = CF.export_profile(v, fw)
    try:
        with open(args.file, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    except OSError as e:
        raise CtlError("cannot write %s: %s" % (args.file, e.strerror or e))
    if args.json:
        out.write(json.dumps({"file": args.file, "parameters": len(doc["parameters"])}) + "\n")
    else:
        out.write("exported %d parameters to %s (the PIN is never exported)\n" % (len(doc["parameters"]), args.file))
    return 0


def cmd_config_import(args, out):
    try:
        with open(args.file) as f:
            text = f.read()
    except OSError as e:
        raise CtlError("cannot read %s: %s" % (args.file, e.strerror or e))
    try:
        prof = CF.load_profile(text, args.file)
    except CF.ConfigError as e:
        msg = str(e)
        raise CtlError(msg if msg.endswith("nothing was written") else msg + "; nothing was written")
    bms = connect(args)
    try:
        cur = bms.read_values()
        target = list(cur)
        for i, raw in prof.items():
            target[i] = raw
        err = CF.validate(cur, target)
        if err:
            raise CtlError("%s: %s; nothing was written" % (args.file, err))
        if CF.changes(cur, target):
            r = _apply(bms, args.pin, cur, target)
        else:
            r = {"after": cur, "state": bms.config_state(), "requests": 0, "rows": [], "pin_changed": False,
                 "mismatch": {}}
            if not args.json:
                out.write("nothing to change: the BMS already holds %s\n" % args.file)
        restarted = None
        if args.restart:
            restarted = restart_and_wait(bms, args.pin, args.wait)
            r["state"] = bms.config_state()
        if args.json:
            _report_changes(out, r, True, {"file": args.file, "restarted": restarted is not None,
                                           "restart_seconds": None if restarted is None else round(restarted, 2)})
        else:
            if restarted is None:
                _report_changes(out, r, False)
            else:
                r["state"] &= ~M.CFG_RESTART_PENDING
                _report_changes(out, r, False)
                st = r["state"]
                out.write("restarted: the BMS answered again after %.1f s and runs %s\n" % (
                    restarted,
                    "configured" if st & M.CFG_CONFIGURED else "UNCONFIGURED (FETs off; see `bmsctl events`)"))
    finally:
        bms.close()
    return 0


# -- setup ---------------------------------------------------------------------------

def _ask(question, default, parse):
    """Ask until `parse` takes the answer (empty = default)."""
    while True:
        try:
            ans = input("%s%s: " % (question, " [%s]" % default if default is not None else "")).strip()
        except EOFError:
            raise CtlError("setup cancelled; nothing was written") from None
        if not ans and default is not None:
            ans = str(default)
        try:
            return parse(ans)
        except (CtlError, CF.ConfigError, ValueError) as e:
            print("  %s" % e)


def _parse_chem(text):
    t = text.strip().lower()
    if t not in P.CHEMISTRY_NAMES[1:]:
        raise CF.ConfigError("give lfp (LiFePO4), nmc (Li-ion NMC) or lto (lithium titanate)")
    return t


def _parse_cells(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 3 <= n <= 15:
        raise CF.ConfigError("cells %r: give 3 to 15 (cells in series)" % text)
    return n


def _parse_eng(short, text, default_unit):
    t = text.strip()
    if t and (t[-1].isdigit() or t[-1] == "."):
        t += default_unit
    return CF.parse_value(short, t)[0][1]


def _parse_count(text):
    try:
        return int(text)
    except ValueError:
        raise CF.ConfigError("%r: give a whole number" % text) from None


def setup_options(args):
    """Fill in what the command line left out: asked in a terminal, else an error."""
    missing = [o for o, v in (("--chemistry", args.chemistry), ("--cells", args.cells),
                              ("--capacity", args.capacity)) if v is None]
    ask = bool(missing) and _interactive()
    if missing and not ask:
        raise CtlError("setup needs %s: e.g. `bmsctl setup --chemistry lfp --cells 4 --capacity 100 --yes` "
                       "(or run it in a terminal to be asked)" % ", ".join(missing))
    o = {}
    try:
        o["chemistry"] = _parse_chem(args.chemistry) if args.chemistry else (
            _ask("Cell chemistry (lfp, nmc, lto)", "lfp", _parse_chem))
        o["cells"] = _parse_cells(str(args.cells)) if args.cells is not None else (
            _ask("Cells in series (3-15)", None, _parse_cells))
        o["capacity_mah"] = _parse_eng("capacity", args.capacity, "Ah") if args.capacity is not None else (
            _ask("Capacity in Ah", None, lambda t: _parse_eng("capacity", t, "Ah")))
        if args.shunt_mohm is not None:
            o["shunt_uohm"] = _parse_eng("shunt", args.shunt_mohm, "mOhm")
        elif ask:
            o["shunt_uohm"] = _ask("Current shunt in mOhm", "1.0", lambda t: _parse_eng("shunt", t, "mOhm"))
        else:
            o["shunt_uohm"] = 1000
        if args.temp_sensors is not None:
            o["thermistors"] = args.temp_sensors
        elif ask:
            o["thermistors"] = _ask("Thermistors fitted (on TS1, TS2, ...)", 1, _parse_count)
        else:
            o["thermistors"] = 1
    except CF.ConfigError as e:
        raise CtlError("%s; nothing was written" % e)
    o["pin"] = args.pin
    o["new_pin"] = args.new_pin
    if ask:
        if args.pin is None:
            o["pin"] = _secret("PIN of the BMS [1234]: ") or 1234
        if args.new_pin is None:
            while True:
                new = _secret("New PIN (empty: keep it): ")
                if new is None or new == _secret("The new PIN again: "):
                    break
                print("  the two differ; again")
            o["new_pin"] = new
    return o, ask


def _secret(prompt):
    """A PIN typed without echo: an int, or None for an empty answer."""
    while True:
        try:
            t = getpass.getpass(prompt).strip()
        except EOFError:
            raise CtlError("setup cancelled; nothing was written") from None
        if not t:
            return None
        try:
            return _pin_value(t)
        except CtlError as e:
            print("  %s" % e)


def _health(bms):
    ir = bms.read_live()
    return ir["config_state"], ir["fet_flags"], ir["protect_flags"], ir


def cmd_setup(args, out):
    o, _ = setup_options(args)
    pin = o["pin"] if o["pin"] is not None else 1234
    new_pin = _pin_value(o["new_pin"]) if o["new_pin"] is not None else None
    bms = connect(args)
    try:
        cur = bms.read_values()
        state = bms.config_state()
        try:
            target = CF.setup_target(cur, o["chemistry"], o["cells"], o["capacity_mah"], o["shunt_uohm"],
                                     o["thermistors"], args.afe_groups)
        except CF.ConfigError as e:
            raise CtlError("%s; nothing was written" % e)
        if new_pin is not None:
            target[P.P_PIN] = new_pin
        err = CF.validate(cur, target)
        if err:
            raise CtlError("%s; nothing was written" % err)
        steps = _plan(cur, target)
        if not args.json:
            out.write("Setting up the BMS on %s:\n" % args.port)
            for label, text in CF.summary(target):
                out.write("  %-22s %s\n" % (label, text))
            if state & M.CFG_CONFIGURED:
                out.write("  (this BMS is configured now: its settings are replaced by these)\n")
            if new_pin is not None:
                out.write("  %-22s changes\n" % "PIN")
        if not args.yes:
            if not _interactive():
                raise CtlError("add --yes to write these settings (stdin is not a terminal to ask); "
                               "nothing was written")
            out.flush()
            if not _confirm("Write these settings and restart the BMS?"):
                out.write("nothing was written\n")
                return 1
        changed = CF.changes(cur, target)
        requests = 0
        if changed:
            _open_writes(bms, pin)  # the restart below locks again
            requests = _write_set(bms, cur, target, steps)
            after = bms.read_values()
            bad = [CF.NAMES[i] for i in changed if i != P.P_PIN and after[i] != target[i]]
            if bad:
                raise CtlError("the BMS reads back other values than written for %s: check the link and run "
                               "setup again" % ", ".join(bad), code=3)
            state = bms.config_state()
        restarted = None
        if changed or state & M.CFG_RESTART_PENDING or not state & M.CFG_CONFIGURED:
            if not args.json:
                out.write(("written (%d requests); " % requests if requests else "") + "restarting the BMS ...\n")
                out.flush()
            restarted = restart_and_wait(bms, new_pin or pin, args.wait)
        deadline = time.monotonic() + args.wait
        while True:
            st, fets, prot, ir = _health(bms)
            ok = st & M.CFG_CONFIGURED and fets == (M.FET_CHG | M.FET_DSG) and prot == 0
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    finally:
        bms.close()
    result = {"configured": bool(st & M.CFG_CONFIGURED), "charge_fet": bool(fets & M.FET_CHG),
              "discharge_fet": bool(fets & M.FET_DSG), "protections": RG.flag_names(prot),
              "written_parameters": [CF.NAMES[i] for i in changed if i != P.P_PIN], "requests": requests,
              "restart_seconds": None if restarted is None else round(restarted, 2), "ok": bool(ok)}
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    elif ok:
        out.write("Setup done: the BMS runs configured (%d cells, %s), both FETs are on and no protection "
                  "holds.\n" % (ir["cell_count"], CF.display(P.P_CAPACITY_MAH, target[P.P_CAPACITY_MAH])))
        if new_pin is None and pin == 1234:
            out.write("The PIN is still 1234: set your own with `bmsctl config set pin=NEW --pin 1234`.\n")
    else:
        desc = {row[0]: row_text(row) for row in protrules.ROWS}
        out.write("Setup written, but the BMS does not run yet:\n")
        if not st & M.CFG_CONFIGURED:
            out.write("  it runs unconfigured (see `bmsctl events` for why)\n")
        out.write("  FETs: charge %s, discharge %s\n" % ("on" if fets & M.FET_CHG else "off",
                                                        "on" if fets & M.FET_DSG else "off"))
        for name in RG.flag_names(prot):
            out.write("  protection %s: %s\n" % (name, desc[name]))
        out.write("Check the wiring and `bmsctl status`; the settings are stored.\n")
    return 0 if ok else 1


# -- log ------------------------------------------------------------------------------

def log_columns():
    """[(header, register name, array index or None)]: every live value."""
    cols = []
    for row in live_regs():
        if row[3] > 1:
            cols += [("%s_%d" % (row[1], k + 1), row[1], k) for k in range(row[3])]
        else:
            cols.append((row[1], row[1], None))
    return cols


_ROW_BY_NAME = {r[1]: r for r in M.INPUT_REGS}


def log_cell(name, raw):
    """A raw input-register value as the CSV shows it: engineering units,
    empty for 'no value' (a missing sensor, no estimate)."""
    row = _ROW_BY_NAME[name]
    if row[5] == "degC" and raw == M.TEMP_INVALID:
        return ""
    if name in ("tte_min", "ttf_min") and raw == 0xFFFF:
        return ""
    exp = row[4]
    if not exp:
        return str(raw)
    return "%.*f" % (-exp, raw * 10.0 ** exp)


def cmd_log(args, out):
    try:
        every = CF.parse_duration(args.every)
        duration = CF.parse_duration(args.duration) if args.duration else None
    except CF.ConfigError as e:
        raise CtlError(str(e))
    if args.count is not None and args.count < 1:
        raise CtlError("--count must be 1 or more")
    cols = log_columns()
    bms = connect(args)
    try:
        fresh = not (args.append and os.path.exists(args.out) and os.path.getsize(args.out) > 0)
        try:
            f = open(args.out, "a" if args.append else "w", newline="")
        except OSError as e:
            raise CtlError("cannot write %s: %s" % (args.out, e.strerror or e))
        rows = missed = samples = 0
        t0 = time.monotonic()
        with f:
            w = csv.writer(f)
            if fresh:
                w.writerow(["time", "elapsed_s"] + [c[0] for c in cols])
                f.flush()
            if not args.json:
                out.write("logging to %s every %g s%s; Ctrl-C stops\n" % (
                    args.out, every, "" if args.count is None else ", %d samples" % args.count))
                out.flush()
            slot = 0
            try:
                while args.count is None or samples < args.count:
                    due = t0 + slot * every
                    if duration is not None and due - t0 >= duration - 1e-9 and samples:
                        break
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    stamp = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
                    elapsed = time.monotonic() - t0
                    samples += 1
                    try:
                        raw = bms.read_live()
                    except CtlError as e:
                        missed += 1
                        sys.stderr.write("bmsctl: warning: no sample at %s: %s\n" % (stamp, e))
                    else:
                        vals = [log_cell(n, raw[n][k] if k is not None else raw[n]) for _, n, k in cols]
                        w.writerow([stamp, "%.3f" % elapsed] + vals)
                        f.flush()
                        rows += 1
                    # the next slot on the grid still ahead (a slow reply skips slots)
                    slot = max(slot + 1, int((time.monotonic() - t0) / every) + 1)
            except KeyboardInterrupt:
                pass
    finally:
        bms.close()
    if args.json:
        out.write(json.dumps({"file": args.out, "rows": rows, "missed": missed}) + "\n")
    else:
        lost = " (%d sample%s missed)" % (missed, "" if missed == 1 else "s") if missed else ""
        out.write("wrote %d rows to %s%s\n" % (rows, args.out, lost))
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="bmsctl", description="Upper computer for the ESP32 BMS (Modbus RTU over RS485).")
    p.add_argument("--port", default=DEFAULT_PORT, help="serial port of the RS485 link (default %(default)s, where `bms-sim run` puts it)")
    p.add_argument("--unit", type=int, default=1, help="Modbus address of the BMS (default 1)")
    p.add_argument("--baud", type=int, default=19200, help="baud rate, 8E1 (default 19200)")
    p.add_argument("--parity", choices=("E", "O", "N"), default="E",
                   help="E, O or N (N uses 2 stop bits); default E. Ignored on the simulator's pseudo-terminal")
    p.add_argument("--timeout", type=float, default=1.0, help="reply timeout in seconds (default 1)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name, func, help, pin=False, wait=False):
        s = sub.add_parser(name, help=help, description=help)
        s.add_argument("--json", action="store_true", help="machine-readable output")
        if pin:
            s.add_argument("--pin", help="unlock with this PIN first when writes are locked (locked again after)")
        if wait:
            s.add_argument("--wait", type=float, default=10.0,
                           help="seconds to wait for the BMS to answer after its restart (default 10)")
        s.set_defaults(func=func)
        return s

    s = cmd("status", cmd_status, "read the BMS once and show it")
    s = cmd("watch", cmd_watch, "show the BMS live until Ctrl-C")
    s.add_argument("--interval", type=float, default=1.0, help="seconds between reads (default 1)")
    s.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (0 = never)")
    s = cmd("events", cmd_events, "the newest event-log records (trips, releases, faults, boots, settings)")
    s.add_argument("--count", type=int, default=M.EVENT_WINDOW, help="how many (default and most: %(default)s)")
    cmd("registers", cmd_registers, "the Modbus register map (needs no port)")
    HA.add_command(sub, cmd)

    s = sub.add_parser("config", help="read and write the parameters (holding registers)",
                       description="read and write the parameters (holding registers)")
    csub = s.add_subparsers(dest="config_cmd", required=True)

    def ccmd(name, func, help, pin=False, wait=False):
        c = csub.add_parser(name, help=help, description=help)
        c.add_argument("--json", action="store_true", help="machine-readable output")
        if pin:
            c.add_argument("--pin", help="unlock with this PIN first when writes are locked (locked again after)")
        if wait:
            c.add_argument("--wait", type=float, default=10.0,
                           help="seconds to wait for the BMS after its restart (default 10)")
        c.set_defaults(func=func)
        return c

    c = ccmd("get", cmd_config_get, "parameter values in engineering units (all, or the ones named)")
    c.add_argument("names", nargs="*", metavar="NAME", help="cell_ov_mv, or cell_ov (the name without its unit)")
    c = ccmd("set", cmd_config_set, "write parameters: checked whole first, written in a safe order, read back",
             pin=True)
    c.add_argument("assignments", nargs="+", metavar="NAME=VALUE",
                   help="cell_ov_mv=3650 (raw), cell_ov=3.65V, chg_ot=45C, capacity=100Ah, chemistry=lfp, cells=4")
    c = ccmd("export", cmd_config_export, "save every parameter (but the PIN) to a JSON profile")
    c.add_argument("file", metavar="FILE.json")
    c = ccmd("import", cmd_config_import, "write a JSON profile (checked whole before anything is written)",
             pin=True, wait=True)
    c.add_argument("file", metavar="FILE.json")
    c.add_argument("--restart", action="store_true", help="restart the BMS afterwards and wait until it answers")

    s = cmd("unlock", cmd_unlock, "open parameter writes with the PIN (asked when --pin is left out)")
    s.add_argument("--pin", help="the PIN (1234 on a new BMS)")
    cmd("lock", cmd_lock, "close parameter writes")
    cmd("restart", cmd_restart, "restart the BMS (stored pack changes take effect) and wait until it answers",
        pin=True, wait=True)
    cmd("clear-latched", cmd_clear_latched,
        "release protections latched after their retries (e.g. short circuit) and a reset-loop lockout", pin=True)
    s = cmd("storage", cmd_storage, "storage mode on or off: charge or discharge to storage_soc, then rest and "
            "sleep (docs/POWER.md)", pin=True)
    s.add_argument("state", choices=("on", "off"))
    s = cmd("factory-reset", cmd_factory_reset, "erase every stored setting; the BMS restarts unconfigured",
            pin=True, wait=True)
    s.add_argument("--yes", action="store_true", help="do not ask")

    s = cmd("setup", cmd_setup, "configure a new pack: chemistry defaults for its cells and capacity, "
            "write, restart, check the FETs close", wait=True)
    s.add_argument("--chemistry", help="lfp, nmc or lto")
    s.add_argument("--cells", type=int, help="cells in series, 3-15")
    s.add_argument("--capacity", help="capacity in Ah (100, 100Ah, 2500mAh)")
    s.add_argument("--shunt-mohm", help="current shunt in mOhm (default 1.0)")
    s.add_argument("--temp-sensors", type=int, help="thermistors fitted, on TS1.. (default 1)")
    s.add_argument("--afe-groups", type=int, choices=(1, 2, 3),
                   help="the AFE: 1 bq76920, 2 bq76930, 3 bq76940 (default: the smallest that takes the cells)")
    s.add_argument("--pin", help="the PIN that unlocks writes (default 1234)")
    s.add_argument("--new-pin", help="set this PIN as well")
    s.add_argument("--yes", action="store_true", help="write without asking")

    s = cmd("log", cmd_log, "record every live value to CSV (engineering units) until Ctrl-C, --duration or --count")
    s.add_argument("--out", required=True, metavar="FILE.csv", help="the CSV file (overwritten unless --append)")
    s.add_argument("--every", default="1s", help="sample period: 500ms, 1s, 2m (default 1s)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--duration", help="stop after this long: 30s, 10m, 1h")
    g.add_argument("--count", type=int, help="stop after this many samples")
    s.add_argument("--append", action="store_true", help="add rows to an existing file (its header stays)")
    PL.add_command(sub, cmd)
    DB.add_command(sub, cmd)
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
