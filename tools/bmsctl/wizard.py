"""`bmsctl setup`, the steps under its prompts: the options asked for or
parsed, the chemistry's set for the pack, written and restarted, then
waiting until the BMS runs with both FETs on.
"""
import time

from bms import params as P
from bms import regmap as M
from bmsctl import afe as A
from bmsctl import config as CF
from bmsctl import prompt
from bmsctl import writes as W
from bmsctl.client import CtlError


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
    lo, hi, chips = CF.cell_range()
    if not lo <= n <= hi:
        raise CF.ConfigError("cells %r: give %d to %d (cells in series; %s)" % (text, lo, hi, chips))
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
    ask = bool(missing) and prompt.interactive()
    if missing and not ask:
        raise CtlError("setup needs %s: e.g. `bmsctl setup --chemistry lfp --cells 4 --capacity 100 --yes` "
                       "(or run it in a terminal to be asked)" % ", ".join(missing))
    o = {}
    try:
        o["chemistry"] = _parse_chem(args.chemistry) if args.chemistry else (
            prompt.ask("Cell chemistry (lfp, nmc, lto)", "lfp", _parse_chem))
        o["cells"] = _parse_cells(str(args.cells)) if args.cells is not None else (
            prompt.ask("Cells in series (%d-%d)" % CF.cell_range()[:2], None, _parse_cells))
        o["capacity_mah"] = _parse_eng("capacity", args.capacity, "Ah") if args.capacity is not None else (
            prompt.ask("Capacity in Ah", None, lambda t: _parse_eng("capacity", t, "Ah")))
        if args.shunt_mohm is not None:
            o["shunt_uohm"] = _parse_eng("shunt", args.shunt_mohm, "mOhm")
        elif ask:
            o["shunt_uohm"] = prompt.ask("Current shunt in mOhm", "1.0", lambda t: _parse_eng("shunt", t, "mOhm"))
        else:
            o["shunt_uohm"] = 1000
        if args.temp_sensors is not None:
            o["thermistors"] = args.temp_sensors
        elif ask:
            o["thermistors"] = prompt.ask("Thermistors fitted (on TS1, TS2, ...)", 1, _parse_count)
        else:
            o["thermistors"] = 1
    except CF.ConfigError as e:
        raise CtlError("%s; nothing was written" % e)
    o["pin"] = args.pin
    o["new_pin"] = args.new_pin
    if ask:
        if args.pin is None:
            o["pin"] = prompt.secret("PIN of the BMS [1234]: ") or 1234
        if args.new_pin is None:
            while True:
                new = prompt.secret("New PIN (empty: keep it): ")
                if new is None or new == prompt.secret("The new PIN again: "):
                    break
                print("  the two differ; again")
            o["new_pin"] = new
    return o, ask


def _health(bms):
    ir = bms.read_live()
    return ir["config_state"], ir["fet_flags"], ir["protect_flags"], ir


def chip(afe, afe_groups):
    """(afe_type, afe_groups) from `--afe NAME` and `--afe-groups N`; None
    for either when not given (the board's chip when it takes the cells)."""
    if afe is None:
        return None, afe_groups
    try:
        kind, groups = A.by_name(afe)
    except A.AfeError as e:
        raise CtlError("%s; nothing was written" % e)
    if afe_groups is not None and afe_groups != groups:
        raise CtlError("--afe %s and --afe-groups %d name different chips: give one; nothing was written"
                       % (afe, afe_groups))
    return kind, groups


def target(cur, o, afe_groups, new_pin, afe=None):
    """The set setup writes over `cur` and its write requests, checked whole:
    a CtlError before anything is written. afe: the chip's name (--afe)."""
    kind, groups = chip(afe, afe_groups)
    try:
        t = CF.setup_target(cur, o["chemistry"], o["cells"], o["capacity_mah"], o["shunt_uohm"],
                            o["thermistors"], groups, kind)
    except CF.ConfigError as e:
        raise CtlError("%s; nothing was written" % e)
    if new_pin is not None:
        t[P.P_PIN] = new_pin
    err = CF.validate(cur, t)
    if err:
        raise CtlError("%s; nothing was written" % err)
    return t, W.plan(cur, t)


def write_and_restart(bms, cur, state, t, steps, pin, new_pin, wait_s, restarting=None):
    """Write `t` over `cur` (unlocked with `pin`), check it reads back, and
    restart when anything changed or the BMS waits for a restart or runs
    unconfigured; restarting(requests) is called before the restart.
    Returns (changed indexes, requests, restart seconds or None)."""
    changed = CF.changes(cur, t)
    requests = 0
    if changed:
        W.open_writes(bms, pin)  # the restart below locks again
        requests = W.write_set(bms, cur, t, steps)
        after = bms.read_values()
        bad = [CF.NAMES[i] for i in changed if i != P.P_PIN and after[i] != t[i]]
        if bad:
            raise CtlError("the BMS reads back other values than written for %s: check the link and run "
                           "setup again" % ", ".join(bad), code=3)
        state = bms.config_state()
    restarted = None
    if changed or state & M.CFG_RESTART_PENDING or not state & M.CFG_CONFIGURED:
        if restarting:
            restarting(requests)
        restarted = W.restart_and_wait(bms, new_pin or pin, wait_s)
    return changed, requests, restarted


def wait_running(bms, wait_s):
    """Poll until the BMS runs configured, both FETs on and no protection
    holds, or `wait_s` passed: (ok, config state, FET flags, protection
    flags, the live registers)."""
    deadline = time.monotonic() + wait_s
    while True:
        st, fets, prot, ir = _health(bms)
        ok = st & M.CFG_CONFIGURED and fets == (M.FET_CHG | M.FET_DSG) and prot == 0
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    return ok, st, fets, prot, ir
