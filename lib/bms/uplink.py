"""MQTT telemetry over the network module: state, events, availability and
Home Assistant discovery, with store and forward (docs/MQTT.md).

The MQTT protocol is micropython-lib's `umqtt.simple`. What this module
adds is what a BMS needs around it:

- Bounded time. `step()` runs once per main-loop pass in working mode and
  does one piece of work: check the Wi-Fi, advance a non-blocking TCP
  connect, or send a few messages within a small time budget. umqtt.simple
  blocks on its socket, so it gets a socket whose every call times out
  after `timeout_ms` (net.cfg): a dead broker, a refused login or a
  half-open connection costs the loop at most that, then back-off
  (1 s doubling to 64 s) and a retry, never a hang. IR_NET_BLOCK_MAX_MS
  reports the longest hold measured.
- No sample lost to an outage within the ring. A state message is QoS 1
  and counts as sent when the broker's PUBACK comes back; until then it
  stays. While the broker is away a 34-byte sample (bms.telemetry) goes
  into a fixed ring (bms.sfring) every `store_s`; when the link returns
  they go out oldest first on `<prefix>/<id>/history`. A full ring drops
  its oldest and counts it (IR_NET_DROPPED).
- Events from the persistent event log, by sequence number: an outage
  delays them, the log keeps them.
- A clear status: IR_NET_STATE and IR_NET_ERROR (the reason and the
  broker's CONNACK code or errno), and one event per change of error, not
  one per retry.

Topics, for a fleet on one broker:
    <prefix>/<device_id>/state     the live state JSON, QoS 1
    <prefix>/<device_id>/history   stored samples, oldest first, QoS 1
    <prefix>/<device_id>/event     {"seq", "boot", "time_s", "code", "value"}, QoS 1
    <prefix>/<device_id>/status    "online" / "offline", retained (the last will)
    <discovery_prefix>/sensor|binary_sensor/<device_id>/<key>/config  retained

Loaded only when net.cfg exists and net_enable is 1: without it the
firmware spends no heap on the network.
"""
import errno
import select
import socket

from micropython import const

from bms import VERSION
from bms import regmap as M
from bms.netsock import BoundedSocket, SocketModule, connect_errno, errno_of, quiet_close, timed_out, wrap_tls
from bms.sfring import Ring
from bms.telemetry import SAMPLE_SIZE, StateWriter, sample_into
from bms.ticks import ticks_add, ticks_diff
from bms.events import EV_NET_UP, EV_NET_DOWN


_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(64000)
_CONNECT_MS = const(5000)  # a TCP connect still pending after this: a timeout
_JOIN_REPORT_MS = const(15000)  # no Wi-Fi after this long: say so (the driver keeps trying)
_DNS_MS = const(3000)  # a host name not answered in this long: a failure, retried with the back-off
_BUDGET_US = const(20000)  # sending goes on while a pass has spent less than this
_PER_PASS = const(8)  # and at most this many messages a pass

# Home Assistant sensors: (JSON key, name, unit, device class, state class)
_SENSORS = (
    (b"pack_v", b"Pack voltage", b"V", b"voltage", b"measurement"),
    (b"current_a", b"Current", b"A", b"current", b"measurement"),
    (b"power_w", b"Power", b"W", b"power", b"measurement"),
    (b"soc_pct", b"State of charge", b"%", b"battery", b"measurement"),
    (b"remaining_ah", b"Remaining charge", b"Ah", b"", b"measurement"),
    (b"remaining_wh", b"Remaining energy", b"Wh", b"energy_storage", b"measurement"),
    (b"soh_pct", b"State of health", b"%", b"", b"measurement"),
    (b"cycles", b"Cycles", b"", b"", b"total_increasing"),
    (b"cell_min_v", b"Lowest cell", b"V", b"voltage", b"measurement"),
    (b"cell_max_v", b"Highest cell", b"V", b"voltage", b"measurement"),
    (b"cell_delta_mv", b"Cell spread", b"mV", b"voltage", b"measurement"),
    (b"warnings", b"Warnings", b"", b"", b""),
    (b"protections", b"Protections", b"", b"", b""),
    (b"balancing", b"Balancing cells", b"", b"", b""),
    (b"mode", b"Power mode", b"", b"", b""),
    (b"soc_state", b"SOC window and storage", b"", b"", b""),
    (b"self_draw_ma", b"BMS own draw", b"mA", b"current", b"measurement"),
    (b"self_drawn_ah", b"BMS own draw counted", b"Ah", b"", b"total_increasing"),
)
_FETS = ((b"chg_fet", b"Charge FET"), (b"dsg_fet", b"Discharge FET"))


class Uplink:
    def __init__(self, board, cfg, words, log, append, now, event_seq, cells):
        """cfg: bms.netcfg's settings; words: the input-register image (the
        state comes from there, as a Modbus master reads it); log: the
        event log, sent from event_seq on (this boot's first event);
        append(code, value, time_s) logs (bms.app.App.append)."""
        self.board = board
        self.cfg = cfg
        self.words = words
        self.log = log
        self.append = append
        self.writer = StateWriter()
        self.mv = memoryview(self.writer.buf)
        self.ring = Ring(SAMPLE_SIZE, cfg["store_max"])
        self.rec = bytearray(SAMPLE_SIZE)
        self.timeout_s = cfg["timeout_ms"] / 1000  # one float, made once
        self.state_ms = cfg["state_s"] * 1000
        self.store_ms = cfg["store_s"] * 1000
        dev = cfg["device_id"] or board.device_id()
        self.device = dev
        self.device_b = dev.encode()
        self.disc_b = cfg["discovery_prefix"].encode()
        self.version_b = VERSION.encode()
        base = cfg["prefix"] + "/" + dev + "/"
        self.t_state = (base + "state").encode()
        self.t_history = (base + "history").encode()
        self.t_event = (base + "event").encode()
        self.t_status = (base + "status").encode()
        self.topic = bytearray(160)  # discovery topics, written in place
        self.topic_mv = memoryview(self.topic)
        self.state = M.NET_OFF
        self.error = 0
        self.reported = 0  # the error last logged
        self.connects = 0
        self.sent = 0
        self.block_max_ms = 0
        self.client = None
        self.sock = None
        self.tls = None  # the TLS layer over sock, when tls = 1
        self.poll = None
        self.addr = None
        self.addr_until = None  # a name's address is kept until its TTL ends (None: an IP address, for good)
        self.literal = cfg["host"].replace(".", "").isdigit()  # bms.netcfg let only a valid IPv4 address be all digits
        self.query = None  # the DNS query under way (bms.dns)
        self.asked = now
        self.qid = board.wall_us()
        self.family = socket.AF_INET
        self.since = now  # when the present state began
        self.retry_at = now
        self.backoff_ms = _BACKOFF_MIN_MS
        self.state_at = now  # the first state after state_s: after the first cycles
        self.store_at = now - self.store_ms
        self.live = False  # a live state message is due
        self.discovery = 0  # discovery messages still to send (counting down)
        self.event_seq = event_seq  # the first event not yet sent
        self.cells = cells  # the pack's cells: a discovery sensor each
        self.joined = False

    # -- the main loop calls these ---------------------------------------------

    def step(self, now, working):
        """One pass: at most timeout_ms of blocking per network call, and
        sending stops after the pass's budget."""
        if not working:
            self.stop()
            return
        self._sample(now)
        t0 = self.board.wall_us()
        st = self.state
        if st == M.NET_OFF:
            self._set(M.NET_JOINING, now)
            st = M.NET_JOINING
        if st == M.NET_JOINING:
            self._join(now)
        elif st == M.NET_BACKOFF:
            if ticks_diff(now, self.retry_at) >= 0:
                self._set(M.NET_JOINING, now)
                self._join(now)
        elif st == M.NET_CONNECTING:
            self._connecting(now)
        elif st == M.NET_ONLINE:
            k = 0
            while k < _PER_PASS and ticks_diff(self.board.wall_us(), t0) < _BUDGET_US:
                if not self._send_one(now):
                    break
                k += 1
        held = ticks_diff(self.board.wall_us(), t0) // 1000
        if held > self.block_max_ms:
            self.block_max_ms = held

    def stop(self):
        """Low power or sleep: "offline" (retained), DISCONNECT, and the
        session closed; the next working pass starts again from Wi-Fi."""
        if self.state != M.NET_OFF:
            self._close(True)
            self.state = M.NET_OFF
            self.joined = False

    def busy(self):
        """Messages wait to go out: the loop should come back soon."""
        return self.state == M.NET_ONLINE and (self.live or self.discovery or self.ring.count
                                               or self.event_seq != self.log.next_seq)

    def publish(self, ir):
        """The link's status into the input-register image."""
        ir.set_u16(M.IR_NET_STATE, self.state)
        ir.set_u16(M.IR_NET_ERROR, self.error)
        ir.set_u16(M.IR_NET_CONNECTS, self.connects)
        ir.set_u16(M.IR_NET_STORED, self.ring.count)
        ir.set_u32(M.IR_NET_DROPPED, self.ring.dropped)
        ir.set_u32(M.IR_NET_SENT, self.sent)
        ir.set_u16(M.IR_NET_BLOCK_MAX_MS, self.block_max_ms if self.block_max_ms < 0xFFFF else 0xFFFF)

    # -- the states -------------------------------------------------------------

    def _set(self, state, now):
        self.state = state
        self.since = now

    def _sample(self, now):
        if ticks_diff(now, self.state_at) < self.state_ms:
            return
        self.state_at = now
        if self.state == M.NET_ONLINE and not self.ring.count:
            self.live = True
        elif self.state == M.NET_ONLINE or ticks_diff(now, self.store_at) >= self.store_ms:
            # kept: while away every store_s; while the ring drains, every
            # state message, behind the older ones
            self.store_at = now
            sample_into(self.words, self.rec)
            self.ring.push(self.rec)

    def _join(self, now):
        b = self.board
        if not self.joined:
            b.net_join(self.cfg["wifi_ssid"], self.cfg["wifi_password"])
            self.joined = True
        if not b.net_ready():
            if ticks_diff(now, self.since) >= _JOIN_REPORT_MS:
                self._report(M.NERR_WIFI, 0)
            return
        if self.addr is None or (self.addr_until is not None and ticks_diff(now, self.addr_until) >= 0):
            if not self._resolve(now):
                return
        try:
            s = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as e:
            self._fail(now, M.NERR_REFUSED, errno_of(e))
            return
        self.sock = s
        s.setblocking(False)
        try:
            s.connect(self.addr)
        except OSError as e:
            if errno_of(e) not in (errno.EINPROGRESS, errno.EAGAIN):
                self._fail(now, M.NERR_REFUSED, errno_of(e))
                return
        p = select.poll()
        p.register(s, select.POLLOUT)
        self.poll = p
        self._set(M.NET_CONNECTING, now)
        self._connecting(now)

    def _resolve(self, now):
        """The broker's address into self.addr: at once for an IP address;
        for a name, a DNS query (bms.dns) sent, then polled once a pass
        without blocking until it answers or _DNS_MS pass. False while it
        is under way, or when it failed (then the back-off)."""
        q = self.query
        try:
            if self.literal:
                self._address(self.cfg["host"], now, -1)
                return True
            if q is None:
                server = self.board.dns_server()
                if server is None:
                    raise OSError(errno.ENOENT)  # the network gave no DNS server
                from bms import dns

                self.qid += 1
                q = self.query = dns.Query(self.cfg["host"], server, self.qid)
                self.asked = now
            got = q.poll()
            if got is None:
                if ticks_diff(now, self.asked) < _DNS_MS:
                    return False
                raise OSError(errno.ETIMEDOUT)
            self._end_query()
            self._address(got[0], now, got[1])
            return True
        except OSError as e:
            self._fail(now, M.NERR_DNS, errno_of(e))
            return False

    def _address(self, ip, now, ttl_s):
        """self.addr from an IPv4 address: getaddrinfo with an address
        literal looks nothing up (bms.dns)."""
        ai = socket.getaddrinfo(ip, self.cfg["port"], 0, socket.SOCK_STREAM)[0]
        self.addr = ai[-1]
        self.family = ai[0]
        self.addr_until = None if ttl_s < 0 else ticks_add(now, ttl_s * 1000)

    def _end_query(self):
        q = self.query
        self.query = None
        if q is not None:
            q.close()

    def _connecting(self, now):
        ready = 0
        for ev in self.poll.ipoll(0):
            ready = ev[1]
        if not ready:
            if ticks_diff(now, self.since) >= _CONNECT_MS:
                self._fail(now, M.NERR_TIMEOUT, 0)
            return
        if ready & (select.POLLERR | select.POLLHUP):
            self._fail(now, M.NERR_REFUSED, connect_errno(self.sock))
            return
        self.poll = None
        self._session(now)

    def _session(self, now):
        """TCP is up: TLS if asked for, then MQTT's CONNECT/CONNACK, then
        "online" (retained) and the discovery messages."""
        cfg = self.cfg
        sock = raw = self.sock
        if cfg["tls"]:
            try:
                raw.setblocking(True)
                raw.settimeout(self.timeout_s)
                sock = wrap_tls(raw, cfg)
                self.tls = sock
            except MemoryError:
                # MicroPython's TLS takes its buffers from the heap on some ports
                self._fail(now, M.NERR_TLS, errno.ENOMEM)
                return
            except Exception as e:  # OSError, ValueError: a bad CA file or certificate
                self._fail(now, M.NERR_TLS, errno_of(e))
                return
        from umqtt import simple

        conn = BoundedSocket(sock, raw, self.timeout_s)
        c = simple.MQTTClient(self.device, cfg["host"], cfg["port"], cfg["user"] or None,
                              cfg["password"] or None, self.state_ms * 3 // 1000 + 30)
        c.set_last_will(self.t_status, b"offline", True, 1)
        simple.socket = SocketModule(conn, self.addr)
        try:
            c.connect()
            self.client = c
            c.publish(self.t_status, b"online", True, 1)
        except simple.MQTTException as e:
            code = e.args[0] if e.args else 0
            self._fail(now, M.NERR_AUTH if code in (4, 5) else M.NERR_BROKER, code)
            return
        except (OSError, IndexError) as e:  # IndexError: the broker closed before CONNACK
            self._fail(now, M.NERR_TIMEOUT if timed_out(e) else M.NERR_LOST, errno_of(e))
            return
        self.connects += 1
        self.sent += 1
        self.backoff_ms = _BACKOFF_MIN_MS
        self.error = 0
        self.reported = 0
        self._set(M.NET_ONLINE, now)
        self.discovery = self.discovery_count() if cfg["discovery"] else 0
        self._log(EV_NET_UP, self.connects)

    def _send_one(self, now):
        """Send the next message: discovery, events, stored samples, then the
        live state. False when nothing was due or the link failed."""
        c = self.client
        w = self.writer
        try:
            if self.discovery:
                self.discovery -= 1
                n, t = self._discovery(self.discovery)
                c.publish(self.topic_mv[:t], self.mv[:n], True, 1)
            elif self.event_seq != self.log.next_seq:
                rec = self._event(self.event_seq)
                if rec is None:
                    self.event_seq += 1  # gone from the log: nothing to send
                    return True
                n = self._event_json(rec)
                c.publish(self.t_event, self.mv[:n], False, 1)
                self.event_seq = rec[0] + 1
            elif self.ring.count:
                self.ring.oldest_into(self.rec)
                n = w.sample(self.rec)
                c.publish(self.t_history, self.mv[:n], False, 1)
                self.ring.pop()
            elif self.live:
                n = w.state(self.words)
                c.publish(self.t_state, self.mv[:n], False, 1)
                self.live = False
            else:
                return False
        except (OSError, IndexError) as e:
            if self.live:
                # the state that did not go: kept with the rest
                self.live = False
                sample_into(self.words, self.rec)
                self.ring.push(self.rec)
            self._fail(now, M.NERR_TIMEOUT if timed_out(e) else M.NERR_LOST, errno_of(e))
            return False
        self.sent += 1
        return True

    def _fail(self, now, reason, detail):
        self._close(False)
        self._report(reason, detail)
        self.retry_at = ticks_add(now, self.backoff_ms)
        self.backoff_ms = self.backoff_ms * 2 if self.backoff_ms < _BACKOFF_MAX_MS else _BACKOFF_MAX_MS
        self._set(M.NET_BACKOFF, now)
        if reason == M.NERR_DNS or reason == M.NERR_REFUSED or reason == M.NERR_TIMEOUT:
            self.addr = None  # resolve again: the broker may have moved

    def _report(self, reason, detail):
        code = (reason << 8) | (detail & 0xFF)
        self.error = code
        if code != self.reported:
            self.reported = code
            self._log(EV_NET_DOWN, code)
            print("net: link down, reason", reason, "detail", detail, "(docs/MQTT.md: net_error)")

    def _close(self, polite):
        c = self.client
        if c is not None and polite:
            try:
                # a planned stop (low power): say so; the will covers the rest
                c.publish(self.t_status, b"offline", True, 0)
                c.disconnect()
            except (OSError, IndexError):
                pass
        self.client = None
        self.poll = None
        self._end_query()
        t = self.tls
        self.tls = None
        quiet_close(t)
        s = self.sock
        self.sock = None
        quiet_close(s)

    def _log(self, code, value):
        w = self.words
        self.append(code, value, (w[M.IR_UPTIME_S] << 16) | w[M.IR_UPTIME_S + 1])

    # -- messages -----------------------------------------------------------

    def _event(self, seq):
        log = self.log
        back = log.next_seq - 1 - seq
        if 0 <= back < M.EVENT_WINDOW:
            r = log.newest(back)
            if r is not None and r[0] == seq:
                return r
        got = log.read(seq, 1)  # older than the RAM cache: from the file
        return got[0] if got else None

    def _event_json(self, rec):
        w = self.writer
        w.n = 0
        w._lit(b'{"seq":')
        w._int(rec[0])
        w._lit(b',"boot":')
        w._int(rec[1])
        w._lit(b',"time_s":')
        w._int(rec[2])
        w._lit(b',"code":')
        w._int(rec[3])
        w._lit(b',"value":')
        w._int(rec[4])
        w._lit(b"}")
        return w.n

    def discovery_count(self):
        """Home Assistant discovery messages a session sends: one per sensor,
        temperature (3), cell and FET (_discovery's k runs below it)."""
        return len(_SENSORS) + 3 + self.cells + len(_FETS)

    def _discovery(self, k):
        """Discovery message k into the writer's buffer and its topic into
        self.topic: (message length, topic length)."""
        cells = self.cells
        kind = b"sensor"
        idx = -1  # a cell or sensor index for the value template
        if k < len(_SENSORS):
            key, name, unit, dclass, sclass = _SENSORS[k]
        elif k < len(_SENSORS) + 3:
            idx = k - len(_SENSORS)
            key, name, unit, dclass, sclass = b"temps_c", b"Temperature ", b"\xc2\xb0C", b"temperature", b"measurement"
        elif k < len(_SENSORS) + 3 + cells:
            idx = k - len(_SENSORS) - 3
            key, name, unit, dclass, sclass = b"cells_v", b"Cell ", b"V", b"voltage", b"measurement"
        else:
            kind = b"binary_sensor"
            key, name = _FETS[k - len(_SENSORS) - 3 - cells]
            unit = dclass = sclass = b""
        w = self.writer
        # the topic, written in the writer's buffer first, then moved
        w.n = 0
        w._lit(self.disc_b)
        w._lit(b"/")
        w._lit(kind)
        w._lit(b"/")
        w._lit(self.device_b)
        w._lit(b"/")
        _numbered(w, key, idx)
        w._lit(b"/config")
        t = w.n
        self.topic[:t] = self.mv[:t]
        w.n = 0
        w._lit(b'{"name":"')
        _numbered(w, name, idx)
        w._lit(b'","unique_id":"')
        w._lit(self.device_b)
        w._lit(b"_")
        _numbered(w, key, idx)
        w._lit(b'","state_topic":"')
        w._lit(self.t_state)
        w._lit(b'","availability_topic":"')
        w._lit(self.t_status)
        if kind == b"binary_sensor":
            w._lit(b'","device_class":"power","value_template":"{{ \'ON\' if value_json.')
            w._lit(key)
            w._lit(b" else 'OFF' }}")
        else:
            w._lit(b'","value_template":"{{ value_json.')
            w._lit(key)
            if idx >= 0:
                w._lit(b"[")
                w._int(idx)
                w._lit(b"]")
            w._lit(b' }}')
            if unit:
                w._lit(b'","unit_of_measurement":"')
                w._lit(unit)
            if dclass:
                w._lit(b'","device_class":"')
                w._lit(dclass)
            if sclass:
                w._lit(b'","state_class":"')
                w._lit(sclass)
        w._lit(b'","device":{"identifiers":["')
        w._lit(self.device_b)
        w._lit(b'"],"name":"BMS ')
        w._lit(self.device_b)
        w._lit(b'","manufacturer":"open-bms","model":"BMS-ESP32","sw_version":"')
        w._lit(self.version_b)
        w._lit(b'"}}')
        return w.n, t


def _numbered(w, s, idx):
    """s, and the sensor's number (idx + 1) for a cell or temperature."""
    w._lit(s)
    if idx >= 0:
        w._int(idx + 1)
