"""bmsctl: the upper computer's command line. Reads a BMS over Modbus RTU (RS485).

    bmsctl --port build/ttyBMS status
    bmsctl --port /dev/ttyUSB0 watch
    bmsctl registers --json
    bmsctl setup --chemistry lfp --cells 4 --capacity 100 --yes
    bmsctl config set cell_ov=3.6V chg_ot=45C --pin 1234
    bmsctl config export pack.json; bmsctl config import pack.json --restart
    bmsctl log --out pack.csv --every 1s --duration 1h

Only the argparse wiring and what each command prints are here; the work
is in the library the dashboard, plot and ha-modbus use as well: client
(the link), writes (the write protocol), fmt (what is shown), wizard
(setup), csvlog (log).
"""
import argparse
import json
import sys
import time

from bms import params as P
from bms.spec import protrules
from bms import regmap as M
from bmsctl import client as C
from bmsctl import config as CF
from bmsctl import csvlog
from bmsctl import dashboard as DB
from bmsctl import fmt as F
from bmsctl import hamodbus as HA
from bmsctl import plot as PL
from bmsctl import prompt
from bmsctl import regs as RG
from bmsctl import wizard
from bmsctl import writes as W
from bmsctl.client import DEFAULT_PORT, CtlError
from bmsctl.afe import names as afe_names


def cmd_registers(args, out):
    rows = RG.rows()
    out.write((json.dumps(rows, indent=2) if args.json else F.format_registers(rows)) + "\n")
    return 0


def cmd_status(args, out):
    bms = C.connect(args)
    try:
        d = F.status_dict(bms.status())
    finally:
        bms.close()
    out.write((json.dumps(d, indent=2) if args.json else F.format_status(d, args.port)) + "\n")
    return 0


def cmd_events(args, out):
    bms = C.connect(args)
    try:
        raw = bms.read_table("input")
    finally:
        bms.close()
    recs = [r for r in raw["events"] if r is not None][:args.count]
    recs.reverse()  # oldest first, like a log
    if args.json:
        for r in recs:
            r["text"] = F.event_text(r["code"], r["value"])
        out.write(json.dumps(recs, indent=2) + "\n")
    else:
        out.write(F.format_events(recs) + "\n")
    return 0


def cmd_watch(args, out):
    bms = C.connect(args)
    clear = out.isatty() and not args.json
    end = time.monotonic() + args.seconds if args.seconds else None
    try:
        while True:
            d = F.status_dict(bms.status())
            if args.json:
                out.write(json.dumps(d) + "\n")
            else:
                out.write(("\x1b[H\x1b[2J" if clear else "\n") + F.format_status(d, args.port) + "\n")
            out.flush()
            if end is not None and time.monotonic() + args.interval > end:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        bms.close()


def cmd_unlock(args, out):
    pin = W.pin_value(args.pin) if args.pin is not None else prompt.ask_pin()
    bms = C.connect(args)
    try:
        W.unlock(bms, pin)
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
    bms = C.connect(args)
    try:
        code = bms.write_control(M.HR_UNLOCK, 0)
        if code:
            raise CtlError("the BMS refused the lock (exception %d)" % code, code=3)
    finally:
        bms.close()
    out.write((json.dumps({"unlocked": False}) if args.json else "locked: parameter writes are closed") + "\n")
    return 0


def cmd_restart(args, out):
    bms = C.connect(args)
    try:
        took = W.restart_and_wait(bms, args.pin, args.wait)
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
    bms = C.connect(args)
    try:
        relock = W.command(bms, M.CMD_CLEAR_LATCHED, args.pin)
        if relock:
            W.lock(bms)
    finally:
        bms.close()
    out.write((json.dumps({"cleared": True}) if args.json else
               "latched protections cleared (they trip again if their cause is still there)") + "\n")
    return 0


def cmd_storage(args, out):
    on = args.state == "on"
    bms = C.connect(args)
    try:
        r = W.storage_set(bms, on, args.pin)
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
        if not prompt.interactive():
            raise CtlError("factory-reset erases every setting: add --yes to confirm")
        if not prompt.confirm("Erase every stored setting and restart unconfigured (FETs off until `bmsctl setup`)?"):
            out.write("nothing was done\n")
            return 1
    bms = C.connect(args)
    try:
        took = W.restart_and_wait(bms, args.pin, args.wait, cmd=M.CMD_FACTORY_RESET)
    finally:
        bms.close()
    out.write((json.dumps({"factory_reset": True, "seconds": round(took, 2)}) if args.json else
               "factory reset: the BMS restarted unconfigured after %.1f s; configure it with `bmsctl setup`"
               % took) + "\n")
    return 0


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
    bms = C.connect(args)
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


def cmd_config_set(args, out):
    bms = C.connect(args)
    try:
        r = W.config_set(bms, args.assignments, args.pin)
        if r is None:
            out.write((json.dumps({"changed": [], "restart_pending": False}) if args.json else
                       "nothing to change: the BMS already holds these values") + "\n")
            return 0
        _report_changes(out, r, args.json)
    finally:
        bms.close()
    return 0


def cmd_config_export(args, out):
    bms = C.connect(args)
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
    bms = C.connect(args)
    try:
        cur = bms.read_values()
        target = list(cur)
        for i, raw in prof.items():
            target[i] = raw
        err = CF.validate(cur, target)
        if err:
            raise CtlError("%s: %s; nothing was written" % (args.file, err))
        if CF.changes(cur, target):
            r = W.apply(bms, args.pin, cur, target)
        else:
            r = {"after": cur, "state": bms.config_state(), "requests": 0, "rows": [], "pin_changed": False,
                 "mismatch": {}}
            if not args.json:
                out.write("nothing to change: the BMS already holds %s\n" % args.file)
        restarted = None
        if args.restart:
            restarted = W.restart_and_wait(bms, args.pin, args.wait)
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


def cmd_setup(args, out):
    o, _ = wizard.setup_options(args)
    pin = o["pin"] if o["pin"] is not None else 1234
    new_pin = W.pin_value(o["new_pin"]) if o["new_pin"] is not None else None
    bms = C.connect(args)
    try:
        cur = bms.read_values()
        state = bms.config_state()
        target, steps = wizard.target(cur, o, args.afe_groups, new_pin, args.afe)
        if not args.json:
            out.write("Setting up the BMS on %s:\n" % args.port)
            for label, text in CF.summary(target):
                out.write("  %-22s %s\n" % (label, text))
            if state & M.CFG_CONFIGURED:
                out.write("  (this BMS is configured now: its settings are replaced by these)\n")
            if new_pin is not None:
                out.write("  %-22s changes\n" % "PIN")
        if not args.yes:
            if not prompt.interactive():
                raise CtlError("add --yes to write these settings (stdin is not a terminal to ask); "
                               "nothing was written")
            out.flush()
            if not prompt.confirm("Write these settings and restart the BMS?"):
                out.write("nothing was written\n")
                return 1

        def restarting(requests):
            if not args.json:
                out.write(("written (%d requests); " % requests if requests else "") + "restarting the BMS ...\n")
                out.flush()

        changed, requests, restarted = wizard.write_and_restart(bms, cur, state, target, steps, pin, new_pin,
                                                                args.wait, restarting)
        ok, st, fets, prot, ir = wizard.wait_running(bms, args.wait)
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
        desc = {row[0]: F.row_text(row) for row in protrules.ROWS}
        out.write("Setup written, but the BMS does not run yet:\n")
        if not st & M.CFG_CONFIGURED:
            out.write("  it runs unconfigured (see `bmsctl events` for why)\n")
        out.write("  FETs: charge %s, discharge %s\n" % ("on" if fets & M.FET_CHG else "off",
                                                        "on" if fets & M.FET_DSG else "off"))
        for name in RG.flag_names(prot):
            out.write("  protection %s: %s\n" % (name, desc[name]))
        out.write("Check the wiring and `bmsctl status`; the settings are stored.\n")
    return 0 if ok else 1


def cmd_log(args, out):
    try:
        every = CF.parse_duration(args.every)
        duration = CF.parse_duration(args.duration) if args.duration else None
    except CF.ConfigError as e:
        raise CtlError(str(e))
    if args.count is not None and args.count < 1:
        raise CtlError("--count must be 1 or more")

    def started():
        if not args.json:
            out.write("logging to %s every %g s%s; Ctrl-C stops\n" % (
                args.out, every, "" if args.count is None else ", %d samples" % args.count))
            out.flush()

    def missed_sample(stamp, e):
        sys.stderr.write("bmsctl: warning: no sample at %s: %s\n" % (stamp, e))

    bms = C.connect(args)
    try:
        rows, missed = csvlog.record(bms, args.out, every, duration, args.count, args.append, started,
                                     missed_sample)
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
    s.add_argument("--cells", type=int, help="cells in series, %d-%d" % CF.cell_range()[:2])
    s.add_argument("--capacity", help="capacity in Ah (100, 100Ah, 2500mAh)")
    s.add_argument("--shunt-mohm", help="current shunt in mOhm (default 1.0)")
    s.add_argument("--temp-sensors", type=int, help="thermistors fitted, on TS1.. (default 1)")
    s.add_argument("--afe-groups", type=int, choices=(1, 2, 3),
                   help="the AFE: 1 bq76920, 2 bq76930, 3 bq76940 (default: the smallest that takes the cells)")
    s.add_argument("--afe", choices=afe_names(),
                   help="the AFE by name (default: the board's if it takes the cells, else the smallest bq769x0 "
                   "that does, else the bq76952)")
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
