"""Where the dashboard's data comes from.

`DataSource` is the interface the web server uses. `ModbusSource`
implements it over the RS485 link with bmsctl's `Bms`, `MqttSource` by
watching a BMS that publishes over its network module (paho-mqtt, imported
only there; it cannot change settings). Both turn what they read into the
page's JSON with bmsctl.dashboard.state.
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

from bms import regmap as M
from bmsctl import client
from bmsctl import config as CF
from bmsctl import regs as RG
from bmsctl import writes
from bmsctl.dashboard.state import (EVENT_ROW, assignment_list, config_table, decode_state, event_dict,
                                    history_sample, mqtt_state, number)

CtlError = client.CtlError
# events kept beyond the BMS's own window of the newest EVENT_WINDOW
EVENTS_KEPT = 500


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
        up = number(doc.get("uptime_s"))
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
        up = number(doc.get("uptime_s"))
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
