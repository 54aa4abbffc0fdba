"""MQTT telemetry end to end: the firmware under the MicroPython unix port,
its real socket stack and micropython-lib's umqtt.simple, against a real
Mosquitto on loopback, watched by a real subscriber (paho-mqtt).

- state, events, Home Assistant discovery (retained) and availability
  (retained "online", the will "offline" when the MCU dies);
- the broker stopped and started again: every state sample kept within
  the ring's capacity arrives, oldest first, and the control loop went on;
- a full ring drops its oldest samples and counts them;
- a broker that stops answering (half-open): every call gives up after
  timeout_ms, never a hang;
- a wrong password and a broker that is not there: a clear status over
  Modbus and in the event log;
- a wrong net.cfg: the network stays off and the log names the line.

On the ESP32 twin the network code is frozen with the rest, and the
firmware runs at the twin's 56K. TLS runs on the 64-bit pip port (TLS_HEAP,
.mpy files): the twin is built without SSL (no mbedTLS in the MicroPython
source it builds from), and the unix port's mbedTLS takes its buffers from
the MicroPython heap (docs/MQTT.md, "Heap").
"""
import json
import os
import time
import uuid

import pytest

from bms import regmap as M
from bms.events import EV_NET_CONFIG
from bms.events import EV_NET_DOWN, EV_NET_UP
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.target import Target, pip_micropython
from bms_sim.world import World
from conftest import AFES, ir, rtu_client
from mqtt_broker import MISSING, Broker, Subscriber, make_tls_files, mosquitto_binary

# TLS: the unix port's mbedTLS takes its buffers from the MicroPython heap
# (the ESP32's takes them from the IDF heap, beside it). 96K words: at 80K the
# handshake's buffers no longer found room beside firmware 0.6.0 every time
# (net_error TLS, errno 12)
TLS_HEAP = "96wK"
CELLS = 4
# 15 named sensors, 3 temperatures, a voltage per cell, 2 FET binary sensors
DISCOVERY = 18 + 3 + CELLS + 2  # bms.uplink _SENSORS, temperatures, cells, FETs

pytestmark = pytest.mark.skipif(not mosquitto_binary(), reason=MISSING)


def tls_target():
    """The 64-bit pip port, which has SSL (the twin has none)."""
    return Target(pip_micropython(), "pip64", why="MQTT over TLS: the twin is built without SSL")


def start_pack(tmp_path, port, speed=20.0, net=None, heap=None, target=None, afe=AFES[0], **prm):
    """A 4S LFP bq769x0 pack, or a 16S LFP bq76952 pack (tests/conftest.py afe)."""
    state = tmp_path / "flash"
    afe.provision(state, CELLS, "lfp", 10000, 1000, extra=dict({"net_enable": 1}, **prm))
    cfg = {"host": "127.0.0.1", "port": port, "device_id": "pack1", "state_s": 2, "store_s": 4,
           "timeout_ms": 300}
    cfg.update(net or {})
    with open(state / "net.cfg", "w") as f:
        f.write("# written by tests/e2e/test_e2e_mqtt.py\n")
        for k, v in cfg.items():
            f.write("%s = %s\n" % (k, v))
    world = afe.world(cells=CELLS, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, seed=8)
    server = SimServer(world, str(state), speed=speed, link_path=str(tmp_path / "tty"), heap=heap, target=target)
    server.start()
    return server


def net_status(client):
    w = ir(client, M.IR_NET_STATE, M.IR_NET_BLOCK_MAX_MS + 1 - M.IR_NET_STATE)
    return {"state": w[0], "error": w[1], "connects": w[2], "stored": w[3],
            "dropped": (w[4] << 16) | w[5], "sent": (w[6] << 16) | w[7], "block_max_ms": w[8]}


def wait_net(client, pred, server, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        st = net_status(client)
        if pred(st):
            return st
        assert time.monotonic() < deadline, "net status %r\n%s" % (st, server.log_tail())
        time.sleep(0.05)


def events(client):
    """(code, value) of the event window, oldest first."""
    words = ir(client, M.IR_EVENTS, M.EVENT_WINDOW * M.EVENT_WORDS)
    out = []
    for k in range(M.EVENT_WINDOW):
        w = words[k * M.EVENT_WORDS:(k + 1) * M.EVENT_WORDS]
        if (w[0] << 16 | w[1]) != 0xFFFFFFFF:
            v = (w[6] << 16) | w[7]
            out.append((w[5], v - (1 << 32) if v & 0x80000000 else v))
    return out[::-1]


def states(sub, topic="bms/pack1/state"):
    return [json.loads(m.payload) for m in sub.messages if m.topic == topic]


def test_state_events_discovery_and_availability(tmp_path, afe):
    n = afe.cells(CELLS)  # 16 on the bq76952
    discovery = DISCOVERY - CELLS + n
    with Broker(tmp_path) as broker:
        broker.start()
        with Subscriber(broker.port, "#") as sub:
            server = start_pack(tmp_path, broker.port, afe=afe)
            try:
                client = rtu_client(server.link_path)
                sub.wait_for(lambda m: m.topic == "bms/pack1/status" and m.payload == b"online", timeout=20)
                first = json.loads(sub.wait_for(lambda m: m.topic == "bms/pack1/state", timeout=20).payload)
                sub.wait_for(lambda m: len(states(sub)) >= 3 or None, timeout=20)
                # the state is the register image a Modbus master reads
                assert len(first["cells_v"]) == n
                assert abs(first["pack_v"] - sum(first["cells_v"])) < 0.02
                assert first["mode"] == "working" and first["chg_fet"] and first["dsg_fet"]
                # the boot estimate from the OCV (16 LFP cells of the model's spread: 2 %, on a plateau
                # where a millivolt is a percent)
                assert first["soc_pct"] == pytest.approx(60.0, abs=2.0 if afe.is_952 else 1.0)
                cells = ir(client, M.IR_CELL_MV, n)
                assert [round(v, 3) for v in first["cells_v"]] == pytest.approx([c / 1000 for c in cells], abs=0.005)
                ups = [s["uptime_s"] for s in states(sub)]
                assert ups == sorted(ups) and len(set(ups)) == len(ups)
                # events: this boot's from its first (the boot record) on, then the link's
                sub.wait_for(lambda m: m.topic == "bms/pack1/event" and json.loads(m.payload)["code"] == EV_NET_UP)
                evs = [json.loads(m.payload) for m in sub.messages if m.topic == "bms/pack1/event"]
                codes = [e["code"] for e in evs]
                assert codes[0] == 200, codes  # EV_BOOT
                seqs = [e["seq"] for e in evs]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
                st = net_status(client)
                assert st["state"] == M.NET_ONLINE and st["error"] == 0 and st["connects"] == 1
                assert st["stored"] == 0 and st["dropped"] == 0 and st["sent"] >= discovery + 3
                assert (EV_NET_UP, 1) in events(client)
                # discovery: retained, one per sensor, a new subscriber gets them all
                with Subscriber(broker.port, "homeassistant/#") as late:
                    late.wait_for(lambda m: len(late.messages) >= discovery or None, timeout=10)
                    configs = {m.topic: json.loads(m.payload) for m in late.messages}
                    assert all(m.retain for m in late.messages)
                assert len(configs) == discovery
                soc = configs["homeassistant/sensor/pack1/soc_pct/config"]
                assert soc["state_topic"] == "bms/pack1/state" and soc["unit_of_measurement"] == "%"
                assert soc["device_class"] == "battery" and soc["availability_topic"] == "bms/pack1/status"
                assert soc["device"]["identifiers"] == ["pack1"]
                cell4 = configs["homeassistant/sensor/pack1/cells_v4/config"]
                assert cell4["value_template"] == "{{ value_json.cells_v[3] }}" and cell4["unit_of_measurement"] == "V"
                fet = configs["homeassistant/binary_sensor/pack1/chg_fet/config"]
                assert "value_json.chg_fet" in fet["value_template"]
                with Subscriber(broker.port, "bms/pack1/status") as late:
                    assert late.wait_for(lambda m: True).retain
            finally:
                server.stop()
            # the MCU is gone without a goodbye: the broker sends its will
            sub.wait_for(lambda m: m.topic == "bms/pack1/status" and m.payload == b"offline", timeout=10)


class PersistentBroker(Broker):
    """Keeps sessions across a stop (SIGTERM saves them), so the test's own
    subscriber misses nothing while the broker is down."""

    def _write_config(self):
        super()._write_config()
        with open(self.conf) as f:
            text = f.read().replace("persistence false", "persistence true\npersistence_location %s/" % self.dir)
        with open(self.conf, "w") as f:
            f.write(text)


def persistent_subscriber(port, topic):
    import paho.mqtt.client as mqtt

    got = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="keeper-" + uuid.uuid4().hex[:6],
                    clean_session=False)
    c.reconnect_delay_set(0.05, 0.2)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, 1)
    c.on_message = lambda cl, u, m: got.append((m.topic, json.loads(m.payload))) if m.topic.endswith(
        ("/state", "/history")) else None
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c, got


@pytest.mark.slow
def test_broker_restart_loses_no_sample(tmp_path):
    broker = PersistentBroker(tmp_path)
    broker.start()
    keeper, got = persistent_subscriber(broker.port, "bms/pack1/+")
    server = start_pack(tmp_path, broker.port)
    try:
        client = rtu_client(server.link_path)
        wait_net(client, lambda s: s["state"] == M.NET_ONLINE and s["sent"] > DISCOVERY + 2, server)
        # the subscriber has a live state before the outage (on a busy host
        # its subscription can come after the first states went out)
        deadline = time.monotonic() + 20
        while not [t for t, p in got if t == "bms/pack1/state"]:
            assert time.monotonic() < deadline, got[-5:]
            time.sleep(0.05)
        count0 = ir(client, M.IR_MEAS_COUNT)[0]
        up0 = server.world.now_ms
        broker.stop()
        st = wait_net(client, lambda s: s["state"] != M.NET_ONLINE, server)
        assert st["error"] >> 8 in (M.NERR_LOST, M.NERR_REFUSED, M.NERR_TIMEOUT), st
        wait_net(client, lambda s: s["stored"] >= 6, server)
        out_ms = server.world.now_ms - up0
        # the control loop went on: a measurement every 250 ms of simulated time
        counted = (ir(client, M.IR_MEAS_COUNT)[0] - count0) & 0xFFFF
        assert counted >= out_ms // 250 - 8, (counted, out_ms)
        broker.start()
        st = wait_net(client, lambda s: s["state"] == M.NET_ONLINE and s["stored"] == 0, server, timeout=60)
        assert st["connects"] == 2 and st["dropped"] == 0
        assert (EV_NET_UP, 2) in events(client)
        down = [v for c, v in events(client) if c == EV_NET_DOWN]
        assert down and down[0] >> 8 in (M.NERR_LOST, M.NERR_REFUSED, M.NERR_TIMEOUT)
        live_after = server.world.now_ms
        deadline = time.monotonic() + 20
        while not [p for t, p in got if t == "bms/pack1/state" and p["uptime_s"] * 1000 > live_after]:
            assert time.monotonic() < deadline, got[-5:]
            time.sleep(0.05)
        stored = [p for t, p in got if t == "bms/pack1/history"]
        live = [p["uptime_s"] for t, p in got if t == "bms/pack1/state"]
        assert len(stored) >= 6 and all(p["stored"] for p in stored)
        ups = [p["uptime_s"] for p in stored]
        assert ups == sorted(ups), ups
        # at most store_s (4 s) apart through the outage (the state that
        # failed to go, then every store_s, then every state_s while the
        # ring drains): no gap, nothing twice
        gaps = [b - a for a, b in zip(ups, ups[1:])]
        assert all(1 <= g <= 5 for g in gaps), gaps
        # the outage is covered: from the last live state before it to the first after
        before = max(u for u in live if u <= ups[0])
        after = min(u for u in live if u >= ups[-1])
        assert ups[0] - before <= 5 and after - ups[-1] <= 5, (before, ups, after)
        assert st["block_max_ms"] <= 300 + 250, st  # timeout_ms, plus scheduling on a busy host
    finally:
        server.stop()
        keeper.loop_stop()
        keeper.disconnect()
        broker.stop()


def test_full_ring_drops_the_oldest_and_counts(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    server = start_pack(tmp_path, broker.port, net={"store_max": 3, "store_s": 2})
    try:
        client = rtu_client(server.link_path)
        wait_net(client, lambda s: s["state"] == M.NET_ONLINE, server)
        w = ir(client, M.IR_UPTIME_S, 2)
        stopped_s = (w[0] << 16) | w[1]
        broker.stop()
        st = wait_net(client, lambda s: s["dropped"] >= 2, server)
        assert st["stored"] == 3
        with Subscriber(broker.start().port, "bms/pack1/history") as sub:
            st = wait_net(client, lambda s: s["state"] == M.NET_ONLINE and s["stored"] == 0, server, timeout=60)
            sub.wait_for(lambda m: len(sub.messages) >= 3 or None, timeout=10)
            ups = [json.loads(m.payload)["uptime_s"] for m in sub.messages]
        # the newest of the outage, oldest first: the first samples it kept
        # (one every store_s = 2 s from the stop; the state that failed to go
        # may sit closer to the first) were dropped
        assert ups == sorted(ups) and len(ups) >= 3
        assert ups[0] >= stopped_s + 2 * (st["dropped"] - 1), (stopped_s, st, ups)
    finally:
        server.stop()
        broker.stop()


@pytest.mark.slow
def test_half_open_broker_never_hangs_the_loop(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    server = start_pack(tmp_path, broker.port, speed=5.0)
    try:
        client = rtu_client(server.link_path)
        wait_net(client, lambda s: s["state"] == M.NET_ONLINE, server)
        broker.pause()  # connections stay open, nothing answers
        count0 = ir(client, M.IR_MEAS_COUNT)[0]
        st = wait_net(client, lambda s: s["state"] != M.NET_ONLINE, server)
        assert st["error"] >> 8 == M.NERR_TIMEOUT, st
        time.sleep(2.0)  # retries against a broker that accepts TCP but never answers
        counted = (ir(client, M.IR_MEAS_COUNT)[0] - count0) & 0xFFFF
        assert counted > 20, counted  # Modbus answered and the cycles went on throughout
        st = net_status(client)
        assert st["block_max_ms"] <= 300 + 250, st  # timeout_ms, plus scheduling on a busy host
        broker.resume()
        wait_net(client, lambda s: s["state"] == M.NET_ONLINE, server, timeout=90)
    finally:
        server.stop()
        broker.stop()


def test_wrong_password_and_absent_broker_are_reported(tmp_path):
    broker = Broker(tmp_path, users={"bms": "right"})
    broker.start()
    server = start_pack(tmp_path, broker.port, net={"user": "bms", "password": "wrong"})
    try:
        client = rtu_client(server.link_path)
        st = wait_net(client, lambda s: s["state"] == M.NET_BACKOFF, server)
        assert st["error"] == (M.NERR_AUTH << 8) | 5, st  # CONNACK 5: not authorised
        assert st["connects"] == 0
        assert [v for c, v in events(client) if c == EV_NET_DOWN] == [(M.NERR_AUTH << 8) | 5]
        assert "net: link down, reason 5" in server.log_tail(200)
    finally:
        server.stop()
        broker.stop()
    # nothing listens on the port any more
    server = start_pack(tmp_path / "b", broker.port)
    try:
        client = rtu_client(server.link_path)
        st = wait_net(client, lambda s: s["state"] == M.NET_BACKOFF, server)
        assert st["error"] >> 8 == M.NERR_REFUSED, st
        # retries do not flood the log: one event for the error
        time.sleep(1.0)
        assert [v >> 8 for c, v in events(client) if c == EV_NET_DOWN] == [M.NERR_REFUSED]
    finally:
        server.stop()


def test_wrong_net_cfg_keeps_the_network_off(tmp_path):
    state = tmp_path / "flash"
    provision(str(state), CELLS, "lfp", 10000, 1000, extra={"net_enable": 1})
    with open(state / "net.cfg", "w") as f:
        f.write("host = 127.0.0.1\nprot = 1883\n")
    world = World(cells=CELLS, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, seed=8)
    server = SimServer(world, str(state), speed=20.0, link_path=str(tmp_path / "tty"))
    server.start()
    try:
        client = rtu_client(server.link_path)
        server.wait_sim_ms(server.world.now_ms + 2000)
        assert net_status(client)["state"] == M.NET_CONFIG_ERROR
        assert (EV_NET_CONFIG, 2) in events(client)
        assert "net.cfg line 2: unknown key 'prot'" in server.log_tail(200)
        # the pack is protected and served as ever
        assert ir(client, M.IR_FET_FLAGS)[0] == M.FET_CHG | M.FET_DSG
    finally:
        server.stop()
    assert not os.path.exists(str(state / "net.cfg.bad"))


def test_user_password_and_tls_checked_against_a_ca(tmp_path):
    files = make_tls_files(tmp_path / "tls")
    if files is None:
        pytest.skip("no openssl here to make a test CA")
    extra = ["certfile " + files["cert"], "keyfile " + files["key"]]
    with Broker(tmp_path, users={"bms": "right"}, extra=extra) as broker:
        broker.start()
        with Subscriber(broker.port, "bms/#", username="bms", password="right", ca=files["ca"]) as sub:
            # 45 s for the first state: on a loaded two-core machine a TLS handshake
            # can pass the 2 s socket timeout (at most wdt_ms / 4) and back off 1, 2, 4 ... s
            server = start_pack(tmp_path, broker.port, net={"user": "bms", "password": "right", "tls": 1,
                                                            "ca_file": files["ca"], "timeout_ms": 2000},
                                heap=TLS_HEAP, target=tls_target())
            try:
                client = rtu_client(server.link_path)
                sub.wait_for(lambda m: m.topic == "bms/pack1/state", timeout=45)
                st = net_status(client)
                assert st["state"] == M.NET_ONLINE and st["error"] == 0
            finally:
                server.stop()
        # a CA that did not sign the broker's certificate: the handshake fails, and says so
        other = make_tls_files(tmp_path / "other")
        server = start_pack(tmp_path / "b", broker.port, net={"user": "bms", "password": "right", "tls": 1,
                                                               "ca_file": other["ca"], "timeout_ms": 2000},
                            heap=TLS_HEAP, target=tls_target())
        try:
            client = rtu_client(server.link_path)
            st = wait_net(client, lambda s: s["state"] == M.NET_BACKOFF, server, timeout=30)
            assert st["error"] >> 8 == M.NERR_TLS, st
        finally:
            server.stop()


def test_low_power_ends_the_session_and_working_mode_brings_it_back(tmp_path):
    with Broker(tmp_path) as broker:
        broker.start()
        with Subscriber(broker.port, "bms/pack1/status") as sub:
            # idle (no current, no RS485 traffic: nothing polls Modbus here) for lp_idle_ms: low power
            server = start_pack(tmp_path, broker.port, lp_idle_ms=20000, lp_check_ms=5000)
            try:
                sub.wait_for(lambda m: m.payload == b"online", timeout=20)
                # a planned stop says "offline" itself (retained), then the network goes off
                sub.wait_for(lambda m: m.payload == b"offline", timeout=30)
                # the firmware switches the network off right after it sent
                # "offline": the broker may deliver that first, so wait for it
                deadline = time.monotonic() + 10
                while server.network_on and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert not server.network_on
                n = len([m for m in sub.messages if m.payload == b"online"])
                server.set_input("charger", True)  # a wake source: working mode, the network on
                sub.wait_for(lambda m: len([x for x in sub.messages if x.payload == b"online"]) > n or None,
                             timeout=30)
                assert server.network_on
            finally:
                server.stop()
