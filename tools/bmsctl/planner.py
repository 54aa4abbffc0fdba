"""The write planner of bmsctl: the order of FC16 writes that takes a BMS
from one parameter set to another.

The firmware judges every write request against the whole set it would
leave (bms.config), so the order of the writes matters. `plan` orders them
so that every intermediate set passes the same judgement (bmsctl.config's
`judge`, the firmware's own code); the `Device` given to `execute` is
anything with `write_params(addr, words)` (a BMS over Modbus, or the
firmware's own bms.config in a test).
"""
from bms import paramcheck as C
from bms import params as P
from bms import regmap as M
from bmsctl.config import (COMM_KEYS, COUNT, NAMES, PACK_KEYS, ROWS, WIDTH, ConfigError, changes, judge,
                           rule_message, validate, value_text, verdict_text, words_of)

MAX_WRITE_REGS = 123  # FC16 carries at most 123 registers

class Step:
    """One FC16 write: registers from `addr`, `words`; `params` the
    parameters it covers, `changed` those whose value it changes."""

    def __init__(self, params, values, changed):
        self.params = list(params)
        self.addr = ROWS[self.params[0]][0]
        self.words = []
        a = self.addr
        for i in self.params:
            self.words += [0] * (ROWS[i][0] - a)  # reserved registers between: 0
            self.words += words_of(i, values[i])
            a = _end(i)
        self.changed = list(changed)

    @property
    def count(self):
        return len(self.words)

    def names(self):
        return [NAMES[i] for i in self.changed]

    def __repr__(self):
        return "Step(0x%04X, %d regs, %s)" % (self.addr, self.count, ",".join(self.names()))


_BY_ADDR = sorted(range(COUNT), key=lambda i: ROWS[i][0])


def _klass(i):
    if i in PACK_KEYS:
        return 1
    if i == P.P_PIN:
        return 2
    if i in COMM_KEYS:
        return 3
    return 0


def _end(i):
    return ROWS[i][0] + WIDTH[i]


def _groups(changed, max_regs):
    """Runs of changed parameters on adjacent registers, of one kind, at
    most max_regs registers each (a 32-bit parameter is never cut)."""
    out = []
    for i in sorted(changed, key=lambda i: ROWS[i][0]):
        g = out[-1] if out else None
        if (g and _end(g[-1]) == ROWS[i][0] and _klass(g[-1]) == _klass(i)
                and _end(i) - ROWS[g[0]][0] <= max_regs):
            g.append(i)
        else:
            out.append([i])
    return out


RESERVED = set(range(M.HR_RESERVED, M.HR_RESERVED + M.HR_RESERVED_COUNT))


def _span(first, last):
    """Every parameter on registers first..last-1, or None when the range has
    a gap (an unmapped register answers exception 02; a reserved one is
    written 0)."""
    out = []
    a = first
    for i in _BY_ADDR:
        if ROWS[i][0] < first:
            continue
        if ROWS[i][0] >= last:
            break
        if ROWS[i][0] != a and not set(range(a, ROWS[i][0])) <= RESERVED:
            return None
        out.append(i)
        a = _end(i)
    return out if a == last else None


class PlanError(ConfigError):
    pass


def plan(cur, target, max_regs=MAX_WRITE_REGS):
    """The writes that take a BMS from `cur` to `target`, ordered so that
    the firmware accepts each one (every intermediate set valid):

    - runs of adjacent changed registers, one FC16 write each;
    - greedy: the first run (others, then the pack keys, the PIN, and the
      serial settings last) whose write the firmware would take; a write
      that makes the set configured waits until it is the last one left,
      so it sees the whole set;
    - when none would be taken: one write spanning several runs (the
      unchanged registers between them written with their present values);
      then single parameters; else a PlanError.

    The serial settings go last because they apply right after their reply."""
    if validate(cur, target) is not None:
        raise PlanError(validate(cur, target))
    state = list(cur)
    todo = _groups(changes(cur, target), max_regs)
    steps = []

    def trial(params):
        new = list(state)
        for i in params:
            new[i] = target[i]
        return new

    while todo:
        todo.sort(key=lambda g: (_klass(g[0]), ROWS[g[0]][0]))
        chosen = None
        for allow_configuring in (False, True):
            for g in todo:
                new = trial(g)
                if judge(state, new) is not None:
                    continue
                if (not allow_configuring and C.configured(new) and not C.configured(state)
                        and any(h is not g and _klass(h[0]) <= 1 for h in todo)):
                    continue
                chosen = ([g], g, new)
                break
            if chosen:
                break
        if chosen is None:
            chosen = _merge(todo, state, target, trial, max_regs)
        if chosen is None:
            chosen = _single(todo, state, trial)
        if chosen is None:
            raise PlanError(_stuck_message(todo, state, target, trial))
        used, params, new = chosen
        step_changed = [i for i in params if new[i] != state[i]]
        steps.append(Step(params, new, step_changed))
        state = new
        for g in used:
            todo.remove(g)
        # a single parameter taken out of a run: the rest of the run stays to do
        rest = [i for g in used for i in g if state[i] != target[i]]
        if rest:
            todo += _groups(rest, max_regs)
    return steps


def _stuck_message(todo, state, target, trial):
    why = []
    for g in todo[:3]:
        v = judge(state, trial(g))
        why.append("%s would break %s" % (", ".join(value_text(i, target[i]) for i in g),
                                           rule_message(v[1], trial(g)) if v and v[0] == M.ERR_RULE else
                                           verdict_text(v, trial(g)) if v else "?"))
    hint = ""
    if any(i in (P.P_CELL_CHANNELS, P.P_AFE_GROUPS, P.P_CHEMISTRY) for g in todo for i in g):
        hint = ("; a new cell count moves the pack voltage limits with it, and the registers of the two "
                "cannot go in one request: to re-configure the pack, `bmsctl factory-reset`, then "
                "`bmsctl setup` (the PIN and the Modbus settings return to their defaults)")
    return ("these changes cannot be written one request at a time: the BMS checks every request against "
            "the whole set, and each order leaves a set it refuses (%s%s)%s"
            % ("; ".join(why), "; ..." if len(todo) > 3 else "", hint))


def _merge(todo, state, target, trial, max_regs):
    by_addr = sorted(todo, key=lambda g: ROWS[g[0]][0])
    cands = []
    for a in range(len(by_addr)):
        for b in range(a + 1, len(by_addr)):
            first, last = ROWS[by_addr[a][0]][0], _end(by_addr[b][-1])
            if last - first > max_regs:
                break
            span = _span(first, last)
            if span is None:
                continue
            inside = [g for g in todo if first <= ROWS[g[0]][0] and _end(g[-1]) <= last]
            cands.append((last - first, inside, span))
    cands.sort(key=lambda c: c[0])
    for _, inside, span in cands:
        new = trial([i for g in inside for i in g])
        if judge(state, new) is None:
            return inside, span, new
    return None


def _single(todo, state, trial):
    for g in todo:
        if len(g) < 2:
            continue
        for i in g:
            new = trial([i])
            if judge(state, new) is None:
                return [g], [i], new
    return None


class WriteRefused(Exception):
    """The BMS answered a write with an exception."""

    def __init__(self, step, code, error, done):
        self.step = step
        self.code = code
        self.error = error  # IR config_error: reason << 8 | detail
        self.done = done  # the steps written before it
        super().__init__("exception %d" % code)


def execute(dev, steps, after=None):
    """Send the planned writes in order; WriteRefused on the first refusal.
    after(step) runs after each accepted write."""
    for k, st in enumerate(steps):
        code = dev.write_params(st.addr, st.words)
        if code:
            err = dev.config_error() if code in (1, 2, 3) else 0
            raise WriteRefused(st, code, err, steps[:k])
        if after:
            after(st)

