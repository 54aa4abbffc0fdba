"""Where the dashboard's data comes from.

`DataSource` is the interface the web server uses; `ModbusSource` implements
it over the RS485 link with bmsctl's `Bms`. An MQTT source (the BMS
publishing over its network module) is to come: subclass `DataSource`,
feed `_record()` / `_add_events()` from the messages, and implement
`read_config`, `write_config` and `restart` over whatever the MQTT side
offers. `decode_state` turns raw register values (as `Bms.read_live()` and
`Bms.read_table("holding")` return them) into the JSON `/api/state` serves,
so a source that receives register values can reuse it.
"""
import collections
import contextlib
import math
import threading
import time

from bms import params as P
from bms import protection as PR
from bms import protrules
from bms import regdoc as D
from bms import regmap as M
from bmsctl import cli
from bmsctl import config as CF
from bmsctl import regs as RG

CtlError = cli.CtlError
EVENT_ROW = next(r for r in M.INPUT_REGS if r[2] == "event")
# events kept beyond the BMS's own window of the newest EVENT_WINDOW
EVENTS_KEPT = 500
_DESC = {row[0]: cli.row_text(row) for row in protrules.ROWS}
_EFFECT = {PR.CHG: "charging is off", PR.DSG: "discharging is off", PR.BOTH: "charging and discharging are off",
           0: "reported only: the FETs stay as they are"}
_ROW = {row[0]: row for row in protrules.ROWS}


def _round(x, nd=4):
    return None if x is None else round(x, nd)


def decode_state(live, holding, where=""):
    """/api/state from raw input registers (all but the event window) and
    the raw holding registers: `bmsctl status --json` plus what the page
    shows directly (cells with their balancing mark, alerts in words)."""
    d = cli.status_dict({"input": dict(live, events=[]), "holding": holding})
    n = d["cell_count"]
    bal = set(d["balancing_cells"])
    cells = [{"n": i + 1, "v": _round(v), "balancing": (i + 1) in bal} for i, v in enumerate(d["cells_v"])]
    alerts = []
    for kind, key in (("protection", "protections"), ("latched", "latched"), ("warning", "warnings")):
        for name in d[key]:
            effect = _EFFECT.get(_ROW[name][7], "") if name in _ROW else ""
            if kind == "latched":
                effect += " until cleared (`bmsctl clear-latched`) or the load is removed"
            text = D.PROTECTION.get(name, name)
            alerts.append({"kind": kind, "name": name, "text": text[:1].upper() + text[1:], "detail": effect})
    cs = live["config_state"]
    chem = holding["chemistry"]

    def limit(name):
        return _round(CF.eng(CF.INDEX[name], holding[name]))

    d.update({
        "where": where,
        "cells": cells,
        "alerts": alerts,
        "charge_off_text": _DESC.get(d["charge_off_reason"]) if d["charge_off_reason"] else None,
        "discharge_off_text": _DESC.get(d["discharge_off_reason"]) if d["discharge_off_reason"] else None,
        "config_state": {
            "configured": bool(cs & M.CFG_CONFIGURED), "unlocked": bool(cs & M.CFG_UNLOCKED),
            "restart_pending": bool(cs & M.CFG_RESTART_PENDING), "save_failed": bool(cs & M.CFG_SAVE_FAILED),
            "pin_lockout": bool(cs & M.CFG_PIN_LOCKOUT), "unlock_left_s": live["unlock_left_s"],
        },
        "limits": {
            "cell_ov_v": limit("cell_ov_mv"), "cell_uv_v": limit("cell_uv_mv"),
            "cell_ov_warn_v": limit("cell_ov_warn_mv"), "cell_uv_warn_v": limit("cell_uv_warn_mv"),
            "bal_start_v": limit("bal_start_mv"),
        },
        "chemistry": P.CHEMISTRY_NAMES[chem] if 0 <= chem < len(P.CHEMISTRY_NAMES) else str(chem),
    })
    for k in ("pack_v", "current_a", "power_w", "cell_min_v", "cell_max_v", "cell_spread_v", "soc_pct",
              "remaining_ah", "full_capacity_ah", "soh_pct", "cycles", "remaining_wh"):
        d[k] = _round(d[k])
    d["cells_v"] = [_round(v) for v in d["cells_v"][:n]]
    return d


def history_sample(state):
    """One point of /api/history: what the charts draw."""
    return {"t": state["t"], "v": state["pack_v"], "a": state["current_a"], "w": state["power_w"],
            "soc": state["soc_pct"], "cmin": state["cell_min_v"], "cmax": state["cell_max_v"],
            "tmax": max((t for t in state["temps_c"] if t is not None), default=None)}


def event_dict(rec):
    t = rec["time_s"]
    return dict(rec, text=cli.event_text(rec["code"], rec["value"]), kind=RG.event_kind(rec["code"], rec["value"]),
                uptime="%d:%02d:%02d" % (t // 3600, t // 60 % 60, t % 60))


def assignment_list(assignments):
    """["name=value", ...] from {"name": "value"} or a list of NAME=VALUE."""
    if isinstance(assignments, dict):
        return ["%s=%s" % (k, v) for k, v in assignments.items()]
    if isinstance(assignments, (list, tuple)) and all(isinstance(a, str) for a in assignments):
        return list(assignments)
    raise CtlError('give the parameters as {"set": {"cell_ov": "3.60V"}} or {"set": ["cell_ov=3.60V"]}; '
                   "nothing was written")


def config_table(values, state_word, unlock_left_s=0):
    """/api/config: every parameter, in engineering units (`bmsctl config get --json`)."""
    params = []
    for i, row in enumerate(CF.ROWS):
        name = row[1]
        params.append({
            "name": name, "short": CF.short_name(name) or name, "address": row[0],
            "value": None if i == P.P_PIN else CF.eng(i, values[i]), "text": CF.display(i, values[i]),
            "raw": None if i == P.P_PIN else values[i], "unit": row[5], "raw_unit": CF.raw_unit(i),
            "min": CF.eng(i, CF.PRM.lo[i]), "max": CF.eng(i, CF.PRM.hi[i]), "range": CF.range_text(i),
            "description": D.HOLDING.get(name, ""), "restart": i in CF.PACK_KEYS,
            # the short name stands for two parameters (V and s): a value needs its unit
            "ambiguous": len(CF.SHORT.get(CF.short_name(name), ())) > 1,
        })
    return {"parameters": params, "state": {
        "configured": bool(state_word & M.CFG_CONFIGURED), "unlocked": bool(state_word & M.CFG_UNLOCKED),
        "restart_pending": bool(state_word & M.CFG_RESTART_PENDING),
        "pin_lockout": bool(state_word & M.CFG_PIN_LOCKOUT), "unlock_left_s": unlock_left_s}}


class DataSource:
    """What the web server needs. Subclasses fill the history ring and the
    event store (`_record`, `_add_events`) and implement the config calls.

    latest()           the newest /api/state dict (None before the first)
    history(since)     [samples] newer than `since` (unix seconds), oldest first
    events()           [event records], newest first, each with "text"
    read_config()      /api/config's dict
    write_config(assignments, pin)  like `bmsctl config set --pin`; a CtlError
                       when refused (nothing written), else what changed
    restart(pin)       restart the BMS and wait until it answers
    """

    where = ""

    def __init__(self, interval=1.0, history_s=3600.0):
        self.interval = interval
        self._ring = collections.deque(maxlen=max(10, int(math.ceil(history_s / interval))))
        self._events = {}
        self._latest = None
        self._data_lock = threading.Lock()  # the ring and the event store, not the link

    def start(self):
        return self

    def close(self):
        pass

    def latest(self):
        with self._data_lock:
            return self._latest

    def history(self, since=None):
        with self._data_lock:
            if since is None:
                return list(self._ring)
            return [s for s in self._ring if s["t"] > since]

    def events(self):
        with self._data_lock:
            return [self._events[k] for k in sorted(self._events, reverse=True)]

    def read_config(self):
        raise NotImplementedError

    def write_config(self, assignments, pin=None):
        raise NotImplementedError

    def restart(self, pin=None):
        raise NotImplementedError

    def _record(self, state):
        with self._data_lock:
            self._latest = state
            if state.get("ok", True):
                self._ring.append(history_sample(state))

    def _clear_events(self):
        with self._data_lock:
            self._events.clear()

    def _add_events(self, records):
        with self._data_lock:
            for r in records:
                self._events[r["seq"]] = event_dict(r)
            for k in sorted(self._events)[:-EVENTS_KEPT]:
                del self._events[k]


class ModbusSource(DataSource):
    """Polls one BMS over Modbus RTU in a background thread. The poller and
    the config writes share the one `Bms` (one serial master) under `lock`."""

    def __init__(self, bms, interval=1.0, history_s=3600.0, where=None):
        super().__init__(interval, history_s)
        self.bms = bms
        self.where = where if where is not None else bms.port
        self.lock = threading.RLock()
        self._holding = None
        self._seq = None
        self._stop = threading.Event()
        self._thread = None
        self.polls = 0
        self.errors = 0

    @classmethod
    def connect(cls, args, **kw):
        """From bmsctl's global options (--port, --unit, --baud, --parity, --timeout)."""
        return cls(cli.connect(args), where=args.port, **kw)

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bms-dashboard-poll", daemon=True)
            self._thread.start()
        return self

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self.lock:
            self.bms.close()

    @contextlib.contextmanager
    def paused(self):
        """Let go of the serial port (pymodbus opens it exclusively) while
        another master uses it; the poller waits, then takes it back."""
        with self.lock:
            self.bms.client.close()
            try:
                yield
            finally:
                self.bms.client.connect()

    def _run(self):
        if self.latest() is not None:  # read once already (the command checks the link first)
            self._stop.wait(self.interval)
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.poll()
            # a fixed grid, not interval after the poll: a slow reply skips a slot
            late = (time.monotonic() - t0) % self.interval
            self._stop.wait(self.interval - late)

    def poll(self):
        """Read the BMS once and record it; the state says when it failed."""
        try:
            with self.lock:
                live = self.bms.read_live()
                seq = live["event_seq"]
                if self._holding is None or seq != self._seq:
                    # every parameter write and boot logs an event: the holding
                    # registers only need reading again then
                    self._holding = self.bms.read_table("holding")
                    if self._seq is not None and seq < self._seq:
                        self._clear_events()  # a factory reset starts the log again
                    self._add_events(self._read_events())
                    self._seq = seq
                holding = self._holding
            state = decode_state(live, holding, self.where)
        except Exception as e:  # the poller must not die: the page shows why
            self.errors += 1
            msg = str(e) if isinstance(e, CtlError) else "reading the BMS failed: %s: %s" % (type(e).__name__, e)
            last = self.latest()
            state = dict(last) if last else {}
            state.update({"ok": False, "error": msg, "t": round(time.time(), 3), "where": self.where})
            self._record(state)
            return state
        self.polls += 1
        state.update({"ok": True, "error": None, "t": round(time.time(), 3)})  # ms: exact through JSON (since=)
        self._record(state)
        return state

    def _read_events(self):
        words = self.bms.read_input(M.IR_EVENTS, M.EVENT_WINDOW * M.EVENT_WORDS)
        return [r for r in RG.decode((EVENT_ROW,), words, base=M.IR_EVENTS)["events"] if r is not None]

    def _dirty(self):
        self._holding = None  # the next poll reads parameters and events again

    def read_config(self):
        with self.lock:
            values = self.bms.read_values()
            st = self.bms.config_state()
            left = self.bms.read_input(M.IR_UNLOCK_LEFT_S, 1)[0]
        return config_table(values, st, left)

    def write_config(self, assignments, pin=None):
        """`bmsctl config set NAME=VALUE ... --pin PIN`, step for step: the same
        parsing, whole-set validation, unlock, write plan and read-back."""
        items = assignment_list(assignments)
        if not items:
            raise CtlError("no parameter given; nothing was written")
        pin = None if pin in (None, "") else pin
        with self.lock:
            try:
                r = cli.config_set(self.bms, items, pin)
            finally:
                self._dirty()
        if r is None:
            return {"changed": [], "pin_changed": False, "requests": 0, "restart_pending": False,
                    "mismatch": {}, "message": "nothing to change: the BMS already holds these values"}
        state = r["state"]
        return {"changed": r["rows"], "pin_changed": r["pin_changed"], "requests": r["requests"],
                "restart_pending": bool(state & M.CFG_RESTART_PENDING),
                "configured": bool(state & M.CFG_CONFIGURED), "mismatch": r["mismatch"],
                "pending": [x["name"] for x in r["rows"] if CF.INDEX[x["name"]] in CF.PACK_KEYS]}

    def restart(self, pin=None, wait_s=10.0):
        """`bmsctl restart --pin PIN`: restart and wait until the BMS answers."""
        pin = None if pin in (None, "") else pin
        with self.lock:
            try:
                took = cli.restart_and_wait(self.bms, pin, wait_s)
                st = self.bms.config_state()
            finally:
                self._dirty()
        return {"restarted": True, "seconds": round(took, 2), "configured": bool(st & M.CFG_CONFIGURED)}
