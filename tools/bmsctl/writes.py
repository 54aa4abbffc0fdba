"""The write protocol of bmsctl: unlock with the PIN, write parameters in
the planner's order (following the serial settings as they change), lock
again, read back; the commands (restart and wait for the next boot, clear
latched, storage mode). Errors are CtlErrors saying what was written.
"""
import time

from bms import params as P
from bms import regmap as M
from bmsctl import config as CF
from bmsctl import planner as PN
from bmsctl import regs as RG
from bmsctl.client import CtlError


def pin_value(text):
    try:
        pin = int(str(text).strip())
    except ValueError:
        pin = -1
    if not 1 <= pin <= 65535:
        raise CtlError("PIN %r: a PIN is a whole number 1..65535 (1234 on a new BMS)" % (text,))
    return pin


def unlock(bms, pin):
    """Write the PIN to the unlock register; a CtlError naming why it failed."""
    code = bms.write_control(M.HR_UNLOCK, pin)
    if code:
        why = RG.config_error_text(bms.config_error()) or "exception %d" % code
        raise CtlError("the BMS did not take the PIN: %s. The PIN is the parameter `pin` (1234 on a new BMS); "
                       "nothing was written" % why)


def lock(bms):
    try:
        bms.write_control(M.HR_UNLOCK, 0)
    except CtlError:
        pass


def open_writes(bms, pin):
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
    unlock(bms, pin_value(pin))
    return True


def command(bms, cmd, pin):
    relock = open_writes(bms, pin)
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
    open_writes(bms, pin)
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


def storage_set(bms, on, pin):
    """Storage mode on or off by the command register (4/5: the BMS sets the
    parameter `storage` and saves it), read back, not assumed:
    {"storage": on, "storage_soc_pct": target}. CtlError when the BMS does
    not report the mode asked for."""
    relock = command(bms, M.CMD_STORAGE_ON if on else M.CMD_STORAGE_OFF, pin)
    if relock:
        lock(bms)
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


def plan(cur, target):
    """The write requests from `cur` to `target` (bmsctl.planner.plan), or a
    CtlError saying why there are none; before anything is unlocked."""
    try:
        return PN.plan(cur, target)
    except CF.ConfigError as e:
        raise CtlError("%s; nothing was written" % e)


def write_set(bms, cur, target, steps):
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


def apply(bms, pin, cur, target):
    """Open writes, write `target` over `cur`, lock again if they were
    locked, read back. Returns what changed: the rows, the requests sent, the
    state after, what reads back other than written."""
    changed = CF.changes(cur, target)
    steps = plan(cur, target)
    relock = open_writes(bms, pin)
    try:
        requests = write_set(bms, cur, target, steps)
    finally:
        if relock:
            lock(bms)
    after = bms.read_values()
    state = bms.config_state()
    return {"after": after, "state": state, "requests": requests,
            "rows": _changed_rows(cur, after), "pin_changed": target[P.P_PIN] != cur[P.P_PIN],
            "mismatch": {CF.NAMES[i]: CF.display(i, after[i]) for i in changed
                         if i != P.P_PIN and after[i] != target[i]}}


def config_set(bms, assignments, pin=None):
    """`config set`: NAME=VALUE items parsed against the BMS's values, the
    whole resulting set judged, then unlock (with pin), write in a safe
    order, lock again and read back. The write's result (apply), or None
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
    return apply(bms, pin, cur, target)
