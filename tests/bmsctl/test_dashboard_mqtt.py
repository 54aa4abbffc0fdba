"""`bmsctl dashboard --mqtt`: the dashboard fed through a real Mosquitto
broker with the messages the firmware's own writer makes (bms.telemetry
StateWriter, from the register image of the real App charging a simulated
pack until a cell trips), checked through the dashboard's HTTP API against
what the same App's registers say over Modbus (decode_state)."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from array import array

import pytest
from bms.spec import paramtable as PT
from bms import regmap as M
from bms.telemetry import SAMPLE_SIZE, StateWriter, sample_into
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.world import World
from bmsctl import cli
from bmsctl import client as bmsctl_client
from bmsctl import regs as RG
from bmsctl.dashboard.state import EVENT_ROW
from conftest import ROOT, ctrl_c_stops
from mqtt_broker import MISSING, Broker, client, close_client, free_port, make_tls_files, mosquitto_binary

DEVICE = "dev1"
TOPIC = "bms/%s/" % DEVICE

Run = collections.namedtuple("Run", "states samples words holding events")


def pack_run(tmp):
    """The real App charging a 4-cell LFP pack from 99 % until the high cell
    trips over-voltage: the state message every 2 s (StateWriter.state), a
    stored sample of each (sample_into + StateWriter.sample), and at the end
    the input and holding registers and the event log."""
    provision(str(tmp), 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=99.0, spread_mv=40, seed=3)
    world.charger.set(5000, 3700)
    sim = DirectSim(world, str(tmp))
    sim.board.input_bits |= 4  # the charger is plugged in
    sw = StateWriter()
    rec = bytearray(SAMPLE_SIZE)
    states, samples = [], []
    for _ in range(300):
        sim.run(2000)
        words = sim.app.ir.words
        states.append(bytes(sw.buf[:sw.state(words)]))
        sample_into(words, rec)
        samples.append(bytes(sw.buf[:sw.sample(rec)]))
        if json.loads(states[-1])["protections"]:
            break
    words = array("H", words)
    window = list(words[M.IR_EVENTS:M.IR_EVENTS + M.EVENT_WINDOW * M.EVENT_WORDS])
    events = [r for r in RG.decode((EVENT_ROW,), window, base=M.IR_EVENTS)["events"] if r]
    return Run(states, samples, words, array("H", sim.app.hr.words), sorted(events, key=lambda r: r["seq"]))


def event_message(rec, keys=("seq", "boot", "time_s", "code", "value")):
    """The firmware's event message (bms.uplink): {"seq", "boot", "time_s", "code", "value"}."""
    return json.dumps({k: rec[k] for k in keys}).encode()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return pack_run(tmp_path_factory.mktemp("pack"))


class MqttDash:
    """The dashboard server on an MqttSource, and a client standing in for
    the BMS (its last will: status "offline", retained, as the firmware's)."""

    def __init__(self, broker, interval=0.5, **kw):
        from bmsctl.dashboard.server import DashboardServer
        from bmsctl.dashboard.source import MqttSource

        self.broker = broker
        self.src = MqttSource("127.0.0.1", broker.port, DEVICE, interval=interval, **kw).start()
        self.httpd = DashboardServer(self.src, "127.0.0.1", 0)
        self.httpd.start_thread()
        self.url = self.httpd.url
        self.device = None

    def connect_device(self):
        self.device = client(self.broker.port, client_id="bms-" + DEVICE,
                             will=(TOPIC + "status", b"offline", 1, True))
        return self.device

    def publish(self, kind, payload, retain=False):
        if self.device is None:
            self.connect_device()
        info = self.device.publish(TOPIC + kind, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published()

    def get(self, path):
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=5) as r:
            return json.load(r)

    def call(self, path, body=None):
        req = urllib.request.Request(self.url.rstrip("/") + path, method="GET" if body is None else "POST",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def wait(self, path, cond, timeout=5.0, what="state"):
        deadline = time.monotonic() + timeout
        while True:
            got = self.get(path)
            if cond(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError("%s not reached in %g s: %s" % (what, timeout, json.dumps(got)[:1500]))
            time.sleep(0.05)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.src.close()
        if self.device is not None:
            close_client(self.device)


@pytest.fixture
def dash(mqtt_broker):
    d = MqttDash(mqtt_broker)
    try:
        yield d
    finally:
        d.close()


def _modbus_view(run):
    """/api/state as ModbusSource makes it from the same App's registers."""
    from bmsctl.dashboard.state import decode_state

    live = RG.decode(bmsctl_client.live_regs(), list(run.words))
    holding = RG.decode(PT.TABLE, list(run.holding))
    return decode_state(live, holding)


# -- values, events, status ----------------------------------------------------------------

def test_state_over_mqtt_says_what_the_registers_say(dash, run):
    dash.publish("status", b"online", retain=True)
    dash.publish("state", run.states[-1])
    s = dash.wait("/api/state", lambda s: s.get("ok"))
    want = _modbus_view(run)
    assert set(want) <= set(s), set(want) - set(s)  # the same keys as over Modbus
    for k in ("pack_v", "current_a", "cell_count", "cells_v", "cell_min_v", "cell_max_v", "cell_spread_v",
              "soc_pct", "remaining_ah", "remaining_wh", "soh_pct", "cycles", "temps_c", "charge_fet",
              "discharge_fet", "protections", "warnings", "latched", "balancing_cells", "cells", "alerts",
              "uptime_s"):
        assert s[k] == want[k], (k, s[k], want[k])
    assert s["power_w"] == pytest.approx(want["power_w"], abs=0.06)  # the message gives 0.1 W
    assert s["power"]["mode"] == want["power"]["mode"] == "working"
    # what this run shows: a cell tripped over-voltage while charging, two warnings, cells balancing
    assert s["protections"] == ["cell_ov"] and s["charge_fet"] is False and s["discharge_fet"] is True
    assert [a["kind"] for a in s["alerts"]] == ["protection", "warning", "warning"]
    assert s["alerts"][0]["text"] == "A cell is over-voltage" and s["alerts"][0]["detail"] == "charging is off"
    assert s["balancing_cells"] and any(c["balancing"] for c in s["cells"])
    # what the message does not carry
    for k in ("full_capacity_ah", "time_to_full_min", "time_to_empty_min", "meas_count", "charge_off_reason",
              "charge_off_text", "chemistry", "config_state", "afe_stat", "cc_offset_lsb"):
        assert s[k] is None, k
    assert set(s["limits"].values()) == {None} and s["power"]["cause"] is None
    assert s["online"] is True and s["where"] == "bms/dev1 via MQTT 127.0.0.1:%d" % dash.broker.port
    assert s["error"] is None and 0 <= s["age_s"] < 5 and s["period_s"] == 10.0


def test_events_read_as_over_modbus(dash, run):
    from bmsctl.dashboard.state import event_dict

    dash.publish("state", run.states[-1])
    for rec in run.events:
        dash.publish("event", event_message(rec))
    n = len(run.events)
    got = dash.wait("/api/events", lambda r: len(r["events"]) == n, what="%d events" % n)["events"]
    want = [event_dict(r) for r in reversed(run.events)]  # newest first, as ModbusSource gives them
    assert [(e["seq"], e["text"], e["kind"], e["uptime"]) for e in got] == \
           [(e["seq"], e["text"], e["kind"], e["uptime"]) for e in want]
    assert got[0]["text"] == "Cell over-voltage: protection tripped at 3.655 V (charging stopped)"
    assert got[0]["kind"] == "trip" and [e["boot"] for e in got] == [e["boot"] for e in want] == [0] * n
    assert "Warning: high cell voltage 3.602 V" in [e["text"] for e in got]
    # the state tells the page the log moved
    assert dash.wait("/api/state", lambda s: s.get("event_seq") == run.events[-1]["seq"])
    dash.publish("event", event_message(run.events[-1]))  # a QoS 1 repeat changes nothing
    # a record without its boot number: shown without one
    rec = dict(run.events[-1], seq=run.events[-1]["seq"] + 1, code=209, value=0)
    dash.publish("event", event_message(rec, keys=("seq", "code", "value", "time_s")))
    got = dash.wait("/api/events", lambda r: len(r["events"]) == n + 1)["events"]
    assert (got[0]["text"], got[0]["boot"]) == ("Settings locked", None)


def test_offline_status_shows_the_link_down_and_keeps_the_values(dash, run):
    dash.connect_device()
    dash.publish("status", b"online", retain=True)
    dash.publish("state", run.states[-1])
    s = dash.wait("/api/state", lambda s: s.get("ok"))
    # the BMS drops off without a word: the broker publishes its will
    dash.device.loop_stop()
    dash.device.socket().close()
    dash.device = None
    s = dash.wait("/api/state", lambda s: not s["ok"], what="offline")
    assert s["online"] is False and s["error"].startswith("the BMS is offline: its status on bms/dev1/status")
    assert s["pack_v"] == json.loads(run.states[-1])["pack_v"]  # the last values stay
    # back: online, then a reading
    dash.publish("status", b"online", retain=True)
    s = dash.wait("/api/state", lambda s: s["online"], what="online")
    assert not s["ok"] and s["error"] == "the BMS is online: waiting for its next state message"
    dash.publish("state", run.states[-2])
    s = dash.wait("/api/state", lambda s: s["ok"])
    assert s["uptime_s"] == json.loads(run.states[-2])["uptime_s"]


def test_a_dashboard_started_while_the_bms_is_offline_says_so(mqtt_broker):
    c = client(mqtt_broker.port)
    try:
        c.publish(TOPIC + "status", b"offline", qos=1, retain=True).wait_for_publish(5)
    finally:
        close_client(c)
    d = MqttDash(mqtt_broker)
    try:
        s = d.wait("/api/state", lambda s: "offline" in (s.get("error") or ""), what="offline")
        assert s["ok"] is False and "pack_v" not in s
    finally:
        d.close()


def test_history_period_and_stored_samples(dash, run):
    for msg in run.states[-4:-1]:
        dash.publish("state", msg)
    dash.wait("/api/history", lambda h: len(h["samples"]) == 3)
    h = dash.get("/api/history")
    assert h["interval"] == 0.5 and h["period"] == 2.0  # the App's messages here come every 2 s of uptime
    assert dash.get("/api/state")["period_s"] == 2.0
    # samples stored while the link was down, 60 s and 40 s before the next live state: the
    # firmware sends them on .../history, then the state; "stored": true on .../state counts too
    old = json.loads(run.samples[-31])
    assert old["stored"] is True and json.loads(run.states[-1])["uptime_s"] - old["uptime_s"] == 60
    dash.publish("history", run.samples[-31])
    dash.publish("state", run.samples[-21])
    time.sleep(0.2)
    assert len(dash.get("/api/history")["samples"]) == 3, "they wait for the live state"
    dash.publish("state", run.states[-1])
    h = dash.wait("/api/history", lambda h: len(h["samples"]) == 6)["samples"]
    last = dash.get("/api/state")
    assert h[0]["stored"] is True and h[0]["t"] == pytest.approx(last["t"] - 60, abs=0.01)
    assert h[1]["stored"] is True and h[1]["t"] == pytest.approx(last["t"] - 40, abs=0.01)
    assert h[0]["v"] == old["pack_v"] and h[0]["soc"] == old["soc_pct"] and h[0]["a"] == old["current_a"]
    assert all(a["t"] <= b["t"] for a, b in zip(h, h[1:])), h
    assert last["uptime_s"] == json.loads(run.states[-1])["uptime_s"], "a stored sample is not the newest reading"
    assert dash.src.counts["placed"] == 2
    # one from before a restart (more uptime than the next live state) is left out
    dash.publish("history", run.samples[-1])
    dash.publish("state", run.states[0])
    dash.wait("/api/state", lambda s: s["uptime_s"] == json.loads(run.states[0])["uptime_s"])
    assert dash.src.counts["placed"] == 2 and len(dash.get("/api/history")["samples"]) == 7


def test_stored_samples_before_any_live_state_wait_for_one(dash, run):
    """After an outage the firmware sends its stored samples first, then the
    live state: a dashboard started meanwhile places them once that comes."""
    for msg in run.samples[-5:-1]:
        dash.publish("history", msg)
    dash.publish("state", run.states[-1])
    h = dash.wait("/api/history", lambda h: len(h["samples"]) == 5)["samples"]
    t = dash.get("/api/state")["t"]
    assert [round(t - x["t"], 2) for x in h] == [8.0, 6.0, 4.0, 2.0, 0.0]
    assert [x.get("stored", False) for x in h] == [True] * 4 + [False]


def test_settings_are_read_only_over_mqtt(dash, run):
    dash.publish("state", run.states[-1])
    dash.wait("/api/state", lambda s: s.get("ok"))
    st, r = dash.call("/api/config")
    assert st == 502 and r["ok"] is False
    assert r["error"].startswith("over MQTT the dashboard only watches") and "RS485 link" in r["error"]
    assert "bmsctl --port /dev/ttyUSB0 dashboard" in r["error"]
    st, r = dash.call("/api/config", {"set": {"cell_ov": "3.60V"}, "pin": "1234"})
    assert st == 400 and r["error"].endswith("nothing was written")
    st, r = dash.call("/api/restart", {"pin": "1234"})
    assert st == 400 and r["error"].endswith("nothing was sent")


def test_bad_messages_are_counted_not_fatal(dash, run):
    dash.publish("state", b"not json")
    dash.publish("event", b"[1, 2]")
    dash.publish("event", b'{"seq": 1}')
    dash.publish("status", b"maybe")
    dash.publish("state", run.states[-1])
    dash.wait("/api/state", lambda s: s.get("ok"))
    assert dash.src.counts["bad"] == 4 and "status 'maybe'" in dash.src.last_bad


def test_the_broker_going_away_and_coming_back(dash, run):
    dash.publish("state", run.states[-2])
    dash.wait("/api/state", lambda s: s.get("ok"))
    close_client(dash.device)
    dash.device = None
    dash.broker.kill()
    s = dash.wait("/api/state", lambda s: not s["ok"], what="broker lost")
    assert s["error"].startswith("lost the MQTT broker at 127.0.0.1:%d" % dash.broker.port)
    dash.broker.restart()  # same port: paho reconnects by itself (1 s, then up to 10 s apart)
    dash.wait("/api/state", lambda s: "connected to the MQTT broker again" in (s["error"] or ""), timeout=8,
              what="reconnected")
    dash.publish("state", run.states[-1])
    s = dash.wait("/api/state", lambda s: s["ok"])
    assert s["protections"] == ["cell_ov"]


def test_a_factory_reset_starts_the_event_log_again(dash, run):
    dash.publish("state", run.states[-1])
    for rec in run.events:
        dash.publish("event", event_message(rec))
    dash.wait("/api/events", lambda r: len(r["events"]) == len(run.events))
    dash.publish("event", event_message(dict(run.events[0], code=200, value=7)))  # seq 0 again: a new log
    got = dash.wait("/api/events", lambda r: len(r["events"]) == 1)["events"]
    assert got[0]["text"] == "Firmware started (boot 7)"


# -- the command -------------------------------------------------------------------------------

def test_the_command_serves_over_mqtt_and_stops_on_ctrl_c(mqtt_broker, run):
    proc = subprocess.Popen([sys.executable, "-m", "bmsctl.dashboard", "--mqtt", "127.0.0.1:%d" % mqtt_broker.port,
                             "--device", DEVICE, "--http-port", "0", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            preexec_fn=ctrl_c_stops)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["mqtt"] == "127.0.0.1:%d" % mqtt_broker.port and info["topics"] == "bms/dev1/#"
        assert info["port"] is None and info["url"].startswith("http://127.0.0.1:")
        c = client(mqtt_broker.port)
        try:
            c.publish(TOPIC + "state", run.states[-1], qos=1).wait_for_publish(5)
        finally:
            close_client(c)
        deadline = time.monotonic() + 5
        while True:
            with urllib.request.urlopen(info["url"] + "api/state", timeout=5) as r:
                s = json.load(r)
            if s["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert s["ok"] and s["cell_count"] == 4 and s["protections"] == ["cell_ov"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _bmsctl(capsys, *argv):
    rc = cli.main(["dashboard", "--http-port", "0"] + list(argv))
    return rc, capsys.readouterr().err


def test_the_command_says_what_is_wrong(capsys, tmp_path):
    port = free_port()  # nothing listens there
    rc, err = _bmsctl(capsys, "--mqtt", "127.0.0.1:%d" % port, "--device", DEVICE)
    assert rc == 3 and err == ("bmsctl: cannot reach the MQTT broker at 127.0.0.1:%d: Connection refused; check "
                               "--mqtt HOST[:PORT] and that the broker runs\n" % port)
    rc, err = _bmsctl(capsys, "--mqtt", "127.0.0.1", "--device", "a/b")
    assert rc == 2 and "--device" in err
    rc, err = _bmsctl(capsys, "--mqtt", "127.0.0.1")
    assert rc == 2 and "--mqtt needs --device ID" in err
    rc = cli.main(["--port", "/dev/ttyUSB0", "dashboard", "--mqtt", "127.0.0.1", "--device", DEVICE])
    assert rc == 2 and "leave out --port" in capsys.readouterr().err
    rc, err = _bmsctl(capsys, "--device", DEVICE)
    assert rc == 2 and err == "bmsctl: --device goes with --mqtt HOST[:PORT]\n"
    rc, err = _bmsctl(capsys, "--mqtt-tls")
    assert rc == 2 and err == "bmsctl: --mqtt-tls goes with --mqtt HOST[:PORT]\n"
    rc, err = _bmsctl(capsys, "--mqtt", "127.0.0.1", "--device", DEVICE, "--mqtt-ca", str(tmp_path / "none.pem"))
    assert rc == 2 and err.startswith("bmsctl: --mqtt-ca %s: cannot load it as a CA certificate"
                                      % (tmp_path / "none.pem"))
    for bad in (["--mqtt", "127.0.0.1:99999"], ["--mqtt", "127.0.0.1", "--sim"]):
        with pytest.raises(SystemExit):
            cli.main(["dashboard"] + bad)
        assert "--mqtt" in capsys.readouterr().err


@pytest.mark.skipif(not mosquitto_binary(), reason=MISSING)
def test_a_wrong_password_is_refused_with_the_reason(capsys, tmp_path):
    with Broker(tmp_path, users={"dash": "right"}) as b:
        rc, err = _bmsctl(capsys, "--mqtt", "127.0.0.1:%d" % b.port, "--device", DEVICE,
                          "--mqtt-user", "dash", "--mqtt-password", "wrong")
        assert rc == 3 and err == ("bmsctl: the MQTT broker at 127.0.0.1:%d refused the connection: Not authorized; "
                                   "check --mqtt-user and --mqtt-password\n" % b.port)
        from bmsctl.dashboard.source import MqttSource

        src = MqttSource("127.0.0.1", b.port, DEVICE, username="dash", password="right").start()
        assert src.connected
        src.close()


def test_without_paho_the_command_says_how_to_get_it(monkeypatch):
    from bmsctl.dashboard.source import MqttSource

    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(bmsctl_client.CtlError, match=r"needs the paho-mqtt package: `make setup`"):
        MqttSource("127.0.0.1", 1883, DEVICE).start()


def test_broker_addresses():
    import argparse

    from bmsctl.dashboard import _broker

    assert _broker("broker.lan") == ("broker.lan", None)  # 1883, or 8883 with TLS
    assert _broker("10.0.0.2:8883") == ("10.0.0.2", 8883)
    assert _broker("[::1]:1884") == ("::1", 1884) and _broker("[::1]") == _broker("::1") == ("::1", None)
    for bad in ("", "h:0", "h:x", "[::1]x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _broker(bad)


@pytest.mark.skipif(not mosquitto_binary(), reason=MISSING)
def test_tls_checked_against_the_brokers_ca(tmp_path, run, capsys):
    files = make_tls_files(tmp_path / "tls")
    if files is None:
        pytest.skip("no openssl here to make a test CA")
    from bmsctl.dashboard.source import MqttSource

    with Broker(tmp_path, extra=["certfile " + files["cert"], "keyfile " + files["key"]]) as b:
        src = MqttSource("127.0.0.1", b.port, DEVICE, ca_file=files["ca"]).start()
        try:
            assert src.where == "bms/dev1 via MQTT (TLS) 127.0.0.1:%d" % b.port
            c = client(b.port, ca=files["ca"])
            try:
                c.publish(TOPIC + "state", run.states[-1], qos=1).wait_for_publish(5)
            finally:
                close_client(c)
            deadline = time.monotonic() + 5
            while not (src.latest() or {}).get("ok") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert src.latest()["protections"] == ["cell_ov"]
        finally:
            src.close()
        # the system's CAs do not know this one
        rc, err = _bmsctl(capsys, "--mqtt", "127.0.0.1:%d" % b.port, "--device", DEVICE, "--mqtt-tls")
        assert rc == 3 and err.startswith("bmsctl: the TLS handshake with the MQTT broker at 127.0.0.1:%d failed: "
                                          "CERTIFICATE_VERIFY_FAILED; check --mqtt-ca" % b.port), err
