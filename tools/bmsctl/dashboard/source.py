"""Where the dashboard's data comes from.

`DataSource` is the interface the web server uses. `ModbusSource`
implements it over the RS485 link with bmsctl's `Bms`: `decode_state` turns
raw register values (as `Bms.read_live()` and `Bms.read_table("holding")`
return them) into the JSON `/api/state` serves. `MqttSource` watches a BMS
that publishes over its network module (paho-mqtt, imported only there):
`mqtt_state` turns its state message (bms.telemetry) into the same JSON,
with None where the message says nothing; it cannot change settings.
"""
import bisect
import collections
import contextlib
import json
import math
import os
import ssl
import threading
import time

from bms import params as P
from bms import protection as PR
from bms import protrules
from bms import regdoc as D
from bms import regmap as M
from bmsctl import client
from bmsctl import config as CF
from bmsctl import fmt
from bmsctl import regs as RG
from bmsctl import writes

CtlError = client.CtlError
EVENT_ROW = next(r for r in M.INPUT_REGS if r[2] == "event")
# events kept beyond the BMS's own window of the newest EVENT_WINDOW
EVENTS_KEPT = 500
_DESC = {row[0]: fmt.row_text(row) for row in protrules.ROWS}
_EFFECT = {PR.CHG: "charging is off", PR.DSG: "discharging is off", PR.BOTH: "charging and discharging are off",
           0: "reported only: the FETs stay as they are"}
_ROW = {row[0]: row for row in protrules.ROWS}


def _round(x, nd=4):
    return None if x is None else round(x, nd)


def _cells_alerts(d):
    """The page's cells (with their balancing mark) and alerts in words,
    from a status dict's cells_v, balancing_cells and flag names."""
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
    return cells, alerts


def decode_state(live, holding, where=""):
    """/api/state from raw input registers (all but the event window) and
    the raw holding registers: `bmsctl status --json` plus what the page
    shows directly (cells with their balancing mark, alerts in words)."""
    d = fmt.status_dict({"input": dict(live, events=[]), "holding": holding})
    n = d["cell_count"]
    cells, alerts = _cells_alerts(d)
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


# the state message's power modes (bms.telemetry) as decode_state names them (bmsctl.regs.MODE_NAMES)
MQTT_MODES = {"working": "working", "low_power": "low-power", "sleep": "sleep"}


def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _mask(x):
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else 0


def mqtt_state(msg, where="", event_seq=None):
    """/api/state from the state message the firmware publishes over MQTT
    (bms.telemetry `StateWriter.state`, or the fewer keys of a stored
    sample): the keys decode_state gives, None (or empty) for what the
    message does not carry: off reasons, time to full or empty, full
    capacity, the settings and their limits, counters, inputs."""
    def num(key):
        return _round(_num(msg.get(key)))

    cells_v = [_round(_num(v)) for v in msg.get("cells_v") or ()]
    n = len(cells_v)
    bal = _mask(msg.get("balancing"))
    delta = _num(msg.get("cell_delta_mv"))
    mode = msg.get("mode")
    fet = msg.get("chg_fet"), msg.get("dsg_fet")
    d = {
        "pack_v": num("pack_v"), "current_a": num("current_a"), "power_w": num("power_w"),
        "cell_count": n, "cells_v": cells_v, "cell_min_v": num("cell_min_v"), "cell_max_v": num("cell_max_v"),
        "cell_spread_v": None if delta is None else _round(delta / 1000.0),
        "temps_c": [_num(t) for t in msg.get("temps_c") or ()],
        "charge_fet": fet[0] if isinstance(fet[0], bool) else None,
        "discharge_fet": fet[1] if isinstance(fet[1], bool) else None,
        "fet_for_diode": None, "charge_off_reason": None, "discharge_off_reason": None,
        "protections": RG.flag_names(_mask(msg.get("protections"))),
        "warnings": RG.flag_names(_mask(msg.get("warnings")), warn=True),
        "latched": RG.flag_names(_mask(msg.get("latched"))),
        "balancing_cells": [i + 1 for i in range(n) if bal >> i & 1],
        "afe_stat": None, "meas_count": None, "uptime_s": _num(msg.get("uptime_s")),
        "afe_crc_errors": None, "afe_bus_errors": None, "save_errors": None, "faults": None, "fault_last": None,
        "mqtt": {"state": "online", "error": None, "connects": None, "stored": None, "dropped": None, "sent": None,
                 "block_max_s": None},
        # it publishes, so its network is on; the message carries no inputs
        "power": {"mode": MQTT_MODES.get(mode, mode), "cause": None, "mode_time_s": None, "reset_cause": None,
                  "woken_by": None, "button": None, "acc": None, "charger": None, "network": True},
        "hardware_protection": dict.fromkeys(("ov_v", "uv_v", "ocd_a", "ocd_delay_s", "scd_a", "scd_delay_s")),
        "soc_pct": num("soc_pct"), "remaining_ah": num("remaining_ah"), "full_capacity_ah": None,
        "soh_pct": num("soh_pct"), "cycles": num("cycles"), "remaining_wh": num("remaining_wh"),
        "time_to_empty_min": None, "time_to_full_min": None, "cc_offset_lsb": None, "event_seq": event_seq,
        "config": dict.fromkeys(("chemistry", "cell_channels", "capacity_ah", "shunt_mohm", "modbus_address",
                                 "modbus_baud")),
    }
    ss = msg.get("soc_state")
    known = isinstance(ss, int) and not isinstance(ss, bool)
    ss = ss if known else 0
    # the message carries the states, not the settings (the settings tab reads those over Modbus)
    d["soc_window"] = {"charge_stop_pct": None, "discharge_stop_pct": None, "warn_low_pct": None,
                       "hysteresis_pct": None,
                       "charge_stopped": bool(ss & M.SOC_CHG_STOP) if known else None,
                       "discharge_stopped": bool(ss & M.SOC_DSG_STOP) if known else None,
                       "low_warning": bool(ss & M.SOC_LOW_WARN) if known else None}
    d["storage"] = {"on": bool(ss & M.SOC_STORAGE) if known else None, "target_pct": None,
                    "holds_charge": bool(ss & M.SOC_STORAGE_CHG) if known else None,
                    "holds_discharge": bool(ss & M.SOC_STORAGE_DSG) if known else None,
                    "at_target": bool(ss & M.SOC_STORAGE_AT) if known else None}
    ma = _num(msg.get("self_draw_ma"))
    d["self_draw_a"] = None if ma is None else _round(ma / 1000.0)
    d["self_drawn_ah"] = num("self_drawn_ah")
    cells, alerts = _cells_alerts(d)
    d.update({
        "where": where, "cells": cells, "alerts": alerts, "charge_off_text": None, "discharge_off_text": None,
        "config_state": None,
        "limits": dict.fromkeys(("cell_ov_v", "cell_uv_v", "cell_ov_warn_v", "cell_uv_warn_v", "bal_start_v")),
        "chemistry": None,
    })
    return d


def history_sample(state):
    """One point of /api/history: what the charts draw."""
    return {"t": state["t"], "v": state["pack_v"], "a": state["current_a"], "w": state["power_w"],
            "soc": state["soc_pct"], "cmin": state["cell_min_v"], "cmax": state["cell_max_v"],
            "tmax": max((t for t in state["temps_c"] if t is not None), default=None)}


def event_dict(rec):
    t = rec["time_s"]
    return dict(rec, text=fmt.event_text(rec["code"], rec["value"]), kind=RG.event_kind(rec["code"], rec["value"]),
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
        self.history_s = history_s
        self._ring = collections.deque(maxlen=max(10, int(math.ceil(history_s / interval))))
        self._events = {}
        self._latest = None
        self._data_lock = threading.Lock()  # the ring and the event store, not the link

    def start(self):
        return self

    def close(self):
        pass

    @property
    def period(self):
        """Seconds between two readings (/api/history's "period": the page
        draws a longer gap as a gap, and calls older data stale)."""
        return self.interval

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

    def storage(self, on, pin=None):
        raise NotImplementedError

    def _record(self, state):
        with self._data_lock:
            self._latest = state
            if state.get("ok", True):
                self._ring.append(history_sample(state))
                while self._ring[0]["t"] < state["t"] - self.history_s:
                    self._ring.popleft()

    def _insert_sample(self, sample):
        """A sample from the past (a stored one) into the history, in time order."""
        with self._data_lock:
            ring = self._ring
            newest = ring[-1]["t"] if ring else sample["t"]
            if sample["t"] < newest - self.history_s:
                return False
            i = bisect.bisect_right(ring, sample["t"], key=lambda x: x["t"])
            if len(ring) == ring.maxlen:
                if i == 0:
                    return False
                ring.popleft()
                i -= 1
            ring.insert(i, sample)
            return True

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
        return cls(client.connect(args), where=args.port, **kw)

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
                r = writes.config_set(self.bms, items, pin)
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
                took = writes.restart_and_wait(self.bms, pin, wait_s)
                st = self.bms.config_state()
            finally:
                self._dirty()
        return {"restarted": True, "seconds": round(took, 2), "configured": bool(st & M.CFG_CONFIGURED)}

    def storage(self, on, pin=None):
        """`bmsctl storage on|off --pin PIN`."""
        pin = None if pin in (None, "") else pin
        with self.lock:
            try:
                return writes.storage_set(self.bms, bool(on), pin)
            finally:
                self._dirty()


READ_ONLY = ("over MQTT the dashboard only watches: reading or changing the settings, restarting and storage mode "
             "need the "
             "RS485 link (`bmsctl --port /dev/ttyUSB0 dashboard`)")
PAHO_MISSING = ("the MQTT source needs the paho-mqtt package: `make setup`, or "
                "`.venv/bin/pip install paho-mqtt==2.2.0` (requirements.txt pins it)")


class MqttSource(DataSource):
    """Watches one BMS through an MQTT broker: subscribes (QoS 1) to
    `<prefix>/<device>/state`, `/history`, `/event` and `/status` as the
    firmware publishes them (docs/FLEET.md) and feeds the same state,
    history and event store as ModbusSource. Read-only: the settings need
    the RS485 link.

    A state message is one reading (its receipt time is its `t`). A stored
    sample ("stored": true, on `history` or `state`: kept while the link was
    down) carries only the BMS's uptime: it waits for the next live message
    (the firmware sends its stored samples first) and goes into the history
    at that message's time less the uptime between them. `status` "offline"
    (the BMS's last will, or its goodbye) marks the link down, as a BMS that
    stops answering does over Modbus.
    """

    DEFAULT_PERIOD = 10.0  # the firmware's default state period, until two messages tell
    PENDING_MAX = 1000  # stored samples waiting for a live message (net.cfg store_max is at most this)

    def __init__(self, host, port=1883, device="", prefix="bms", username=None, password=None, interval=1.0,
                 history_s=3600.0, where=None, keepalive=30, timeout=5.0, tls=False, ca_file=None):
        super().__init__(interval, history_s)
        if not device or any(c in device for c in "/+#"):
            raise CtlError("--device: give the BMS's device id, as in its topics <prefix>/<device>/state "
                           "(no / + or #)")
        if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
            raise CtlError("--prefix: give the topic prefix the BMS publishes under, e.g. bms or site1/bms")
        self.host, self.port, self.device, self.prefix = host, port, device, prefix
        self.username, self.password = username, password
        self.tls = tls or ca_file is not None  # a CA file: TLS checked against it; else the system's CAs
        self.ca_file = ca_file
        self.keepalive, self.timeout = keepalive, timeout
        self.base = "%s/%s/" % (prefix, device)
        self.broker = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        self.where = where if where is not None else "%s via MQTT%s %s" % (
            self.base.rstrip("/"), " (TLS)" if self.tls else "", self.broker)
        self.online = None  # the BMS's status topic: True, False, or None before one arrives
        self.connected = False
        self.counts = collections.Counter()  # state, stored, event, status, placed, bad
        self.last_bad = None
        self._lock = threading.RLock()  # the fields above and below; paho's thread and the server's
        self._client = None
        self._closing = False
        self._connack = threading.Event()
        self._refused = None
        self._ref = None  # (t, uptime_s) of the newest live state message
        self._gaps = collections.deque(maxlen=5)  # uptime between live messages, s
        self._pending = []
        self._seq = None  # the newest event seq received

    @property
    def period(self):
        with self._lock:
            return float(min(self._gaps)) if self._gaps else self.DEFAULT_PERIOD

    # -- the connection ------------------------------------------------------------

    def start(self):
        """Connect and subscribe; a CtlError when the broker cannot be reached
        or refuses. paho's thread then reconnects by itself."""
        if self._client is not None:
            return self
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise CtlError(PAHO_MISSING)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bmsctl-dashboard-" + os.urandom(4).hex(),
                        clean_session=True)
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        if self.tls:
            try:
                c.tls_set(ca_certs=self.ca_file)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                raise CtlError("--mqtt-ca %s: cannot load it as a CA certificate: %s" % (self.ca_file, e))
        c.connect_timeout = self.timeout
        c.reconnect_delay_set(1, 10)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        try:
            c.connect(self.host, self.port, self.keepalive)
        except ssl.SSLError as e:
            raise CtlError("the TLS handshake with the MQTT broker at %s failed: %s; check --mqtt-ca (the CA that "
                           "signed the broker's certificate) and the host name" % (self.broker, e.reason or e),
                           code=3)
        except (OSError, ValueError) as e:
            raise CtlError("cannot reach the MQTT broker at %s: %s; check --mqtt HOST[:PORT] and that the broker "
                           "runs" % (self.broker, getattr(e, "strerror", None) or e), code=3)
        self._client = c
        c.loop_start()
        if not self._connack.wait(self.timeout):
            self.close()
            raise CtlError("the MQTT broker at %s did not answer the connection in %g s" % (self.broker, self.timeout),
                           code=3)
        if self._refused is not None:
            why = self._refused
            self.close()
            hint = "; check --mqtt-user and --mqtt-password" if why.value in (134, 135) else ""
            raise CtlError("the MQTT broker at %s refused the connection: %s%s" % (self.broker, why, hint), code=3)
        return self

    def close(self):
        with self._lock:
            self._closing = True
            c, self._client = self._client, None
        if c is not None:
            c.disconnect()
            c.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            with self._lock:
                self._refused = reason_code
            self._connack.set()
            self._link_down("the MQTT broker at %s refused the connection: %s" % (self.broker, reason_code))
            return
        client.subscribe([(self.base + k, 1) for k in ("state", "history", "event", "status")])
        with self._lock:
            self.connected = True
        self._connack.set()
        last = self.latest()
        if last is not None and not last.get("ok"):
            self._link_down("connected to the MQTT broker again: waiting for the BMS's status and state")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            self.connected = False
            if self._closing:
                return
        self._link_down("lost the MQTT broker at %s (%s): reconnecting" % (self.broker, reason_code))

    def _link_down(self, error):
        """Keep the last values, say why they are not live (as ModbusSource
        does when the BMS stops answering)."""
        last = self.latest()
        state = dict(last) if last else {}
        state.update({"ok": False, "error": error, "t": round(time.time(), 3), "where": self.where,
                      "online": self.online})
        self._record(state)

    # -- the messages --------------------------------------------------------------

    def _on_message(self, client, userdata, msg):
        kind = msg.topic[len(self.base):] if msg.topic.startswith(self.base) else None
        try:
            if kind == "status":
                self._on_status(bytes(msg.payload).decode("utf-8", "replace").strip())
                return
            doc = json.loads(bytes(msg.payload))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            if kind == "state":
                self._on_state(doc)
            elif kind == "history":
                self._on_state(dict(doc, stored=True))
            elif kind == "event":
                self._on_event(doc)
        except Exception as e:  # a bad message must not stop paho's thread
            with self._lock:
                self.counts["bad"] += 1
                self.last_bad = "%s: %s: %s" % (msg.topic, type(e).__name__, e)

    def _on_status(self, text):
        if text not in ("online", "offline"):
            raise ValueError("status %r: not online or offline" % text[:40])
        with self._lock:
            self.counts["status"] += 1
            self.online = text == "online"
        if text == "offline":
            self._link_down("the BMS is offline: its status on %sstatus says so (it disconnected, or lost "
                            "power or its network)" % self.base)
        else:
            last = self.latest()
            if last is None or not last.get("ok"):
                self._link_down("the BMS is online: waiting for its next state message")

    def _on_state(self, doc):
        now = round(time.time(), 3)
        up = _num(doc.get("uptime_s"))
        if doc.get("stored") is True:
            with self._lock:
                self.counts["stored"] += 1
                if len(self._pending) < self.PENDING_MAX:
                    self._pending.append(doc)
            return
        with self._lock:
            self.counts["state"] += 1
            if self._ref is not None and up is not None and up > self._ref[1]:
                self._gaps.append(up - self._ref[1])
            elif self._ref is not None and up is not None and up < self._ref[1]:
                self._gaps.clear()  # a new boot
            if up is not None:
                self._ref = (now, up)
            self.online = True  # it publishes: whatever an older status said
            pending, self._pending = self._pending, []
            seq = self._seq
        state = mqtt_state(doc, self.where, seq)
        state.update({"ok": True, "error": None, "t": now, "online": True})
        self._record(state)
        for p in pending:
            self._place(p, now)

    def _place(self, doc, now):
        """A stored sample into the history, at now less the uptime between
        it and the live message just received; not when that is in the
        future (a sample from before a restart) or older than the history."""
        up = _num(doc.get("uptime_s"))
        with self._lock:
            ref = self._ref
        if up is None or ref is None:
            return
        t = round(ref[0] - (ref[1] - up), 3)
        if not now - self.history_s <= t <= now:
            return
        state = mqtt_state(doc, self.where)
        state["t"] = t
        sample = dict(history_sample(state), stored=True)
        if self._insert_sample(sample):
            with self._lock:
                self.counts["placed"] += 1

    def _on_event(self, doc):
        rec = {}
        for k in ("seq", "code", "value", "time_s"):
            v = doc.get(k)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError("event without an integer %r" % k)
            rec[k] = v
        boot = doc.get("boot")  # None when the message has none: the page shows --
        rec["boot"] = boot if isinstance(boot, int) and not isinstance(boot, bool) else None
        with self._lock:
            self.counts["event"] += 1
            with self._data_lock:
                old = self._events.get(rec["seq"])
            if (self._seq is not None and rec["seq"] < self._seq and old is not None
                    and (old["code"], old["value"], old["time_s"]) != (rec["code"], rec["value"], rec["time_s"])):
                self._clear_events()  # a factory reset starts the log again
                self._seq = None
            self._add_events([rec])
            self._seq = rec["seq"] if self._seq is None else max(self._seq, rec["seq"])
            seq = self._seq
            with self._data_lock:
                if self._latest is not None:  # the page reads the events again when event_seq moves
                    self._latest = dict(self._latest, event_seq=seq)

    # -- read-only --------------------------------------------------------------------

    def read_config(self):
        raise CtlError(READ_ONLY, code=3)

    def write_config(self, assignments, pin=None):
        raise CtlError(READ_ONLY + "; nothing was written")

    def restart(self, pin=None):
        raise CtlError(READ_ONLY + "; nothing was sent")

    def storage(self, on, pin=None):
        raise CtlError(READ_ONLY + "; nothing was sent")
