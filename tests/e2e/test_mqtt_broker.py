"""The test broker (tests/mqtt_broker.py): a real Mosquitto, paho clients."""
import socket
import time

import pytest
from mqtt_broker import Broker, Subscriber, client, close_client, mosquitto_binary, publish

needs_mosquitto = pytest.mark.skipif(not mosquitto_binary(), reason="no Mosquitto broker here: CI installs it "
                                     "(apt-get install mosquitto), see .ci/run")


def test_publish_and_subscribe(mqtt_broker):
    with Subscriber(mqtt_broker.port, "bms/+/state") as sub:
        publish(mqtt_broker.port, "bms/dev1/state", b'{"soc_pct": 50.0}')
        publish(mqtt_broker.port, "bms/dev1/event", b"{}")  # outside the filter
        publish(mqtt_broker.port, "bms/dev2/state", b"2")
        m = sub.wait_for(lambda m: m.topic == "bms/dev2/state")
        assert m.payload == b"2" and not m.retain
        assert [(m.topic, m.payload) for m in sub.messages] == [("bms/dev1/state", b'{"soc_pct": 50.0}'),
                                                                 ("bms/dev2/state", b"2")]
    with pytest.raises(AssertionError, match="no matching message"):
        sub.wait_for(lambda m: m.topic == "never", timeout=0.1)


def test_a_retained_message_reaches_a_later_subscriber(mqtt_broker):
    publish(mqtt_broker.port, "bms/dev1/status", b"online", retain=True)
    with Subscriber(mqtt_broker.port, "bms/#") as sub:
        m = sub.wait_for(lambda m: m.topic == "bms/dev1/status")
        assert m.payload == b"online" and m.retain
        # a message published while subscribed is delivered live, not as retained
        publish(mqtt_broker.port, "bms/dev1/status", b"offline", retain=True)
        m = sub.wait_for(lambda m: m.payload == b"offline")
        assert not m.retain


def test_a_last_will_is_published_when_a_client_dies(mqtt_broker):
    with Subscriber(mqtt_broker.port, "bms/dev1/status") as sub:
        c = client(mqtt_broker.port, will=("bms/dev1/status", b"offline", 1, True))
        c.loop_stop()
        c.socket().close()  # no DISCONNECT: the broker sends the will
        assert sub.wait_for(lambda m: m.payload == b"offline").topic == "bms/dev1/status"


@needs_mosquitto
def test_a_password_broker_refuses_a_wrong_password(tmp_path):
    with Broker(tmp_path, users={"bms-dev1": "right", "dash": "other"}) as b:
        assert "allow_anonymous false" in open(b.conf).read()
        with pytest.raises(ConnectionError) as e:
            client(b.port, username="bms-dev1", password="wrong")
        rc = e.value.args[1]
        assert rc.is_failure and rc.value == 135 and str(rc) == "Not authorized"  # CONNACK 5 (MQTT 3.1.1)
        with pytest.raises(ConnectionError):
            client(b.port)  # anonymous
        publish(b.port, "bms/dev1/status", b"online", retain=True, username="bms-dev1", password="right")
        with Subscriber(b.port, "bms/#", username="dash", password="other") as sub:
            assert sub.wait_for(lambda m: m.retain).payload == b"online"
    assert not b.running


@needs_mosquitto
def test_kill_and_restart_on_the_same_port(tmp_path):
    b = Broker(tmp_path).start()
    try:
        port = b.port
        publish(port, "bms/dev1/status", b"online", retain=True)
        b.kill()
        assert not b.running and b.proc.returncode == -9
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        t0 = time.monotonic()
        b.restart()
        assert b.port == port and b.running and time.monotonic() - t0 < 5
        # persistence is off: the retained message died with the broker
        with Subscriber(port, "bms/#") as sub:
            publish(port, "bms/dev1/state", b"{}")
            sub.wait_for(lambda m: m.topic == "bms/dev1/state")
            assert [m.topic for m in sub.messages] == ["bms/dev1/state"]
        assert "mosquitto version" in b.log_text()
    finally:
        b.stop()


def test_pause_and_resume(mqtt_broker):
    with Subscriber(mqtt_broker.port, "bms/#") as sub:
        c = client(mqtt_broker.port)
        try:
            mqtt_broker.pause()
            info = c.publish("bms/dev1/state", b"late", qos=1)
            time.sleep(0.5)
            assert not info.is_published() and sub.messages == []  # no PUBACK from a stopped broker
            mqtt_broker.resume()
            info.wait_for_publish(5)
            assert info.is_published()
            assert sub.wait_for(lambda m: m.payload == b"late")
        finally:
            close_client(c)


@needs_mosquitto
def test_a_broker_that_cannot_start_says_why(tmp_path):
    from mqtt_broker import BrokerError

    with socket.socket() as s:  # the port is taken (bound, not listening: nothing answers on it)
        s.bind(("127.0.0.1", 0))
        b = Broker(tmp_path, port=s.getsockname()[1])
        with pytest.raises(BrokerError) as e:
            b.start(timeout=5)
    assert "mosquitto exited" in str(e.value) and "Address already in use" in str(e.value)
    assert not b.running


def _doc_block(first_line):
    """The code block of docs/FLEET.md that starts with `first_line`."""
    import os
    import re

    from conftest import ROOT

    with open(os.path.join(ROOT, "docs", "FLEET.md")) as f:
        for block in re.findall(r"```[a-z]*\n(.*?)```", f.read(), re.S):
            if block.startswith(first_line):
                return block
    raise AssertionError("docs/FLEET.md has no block starting %r" % first_line)


@needs_mosquitto
def test_the_fleet_acl_in_the_docs_keeps_each_bms_to_its_own_topics(tmp_path):
    users = {u: u + "-pw" for u in ("pack1", "pack2", "telegraf", "homeassistant", "dashboard")}

    def login(user):
        return {"username": user, "password": users[user]}

    with Broker(tmp_path, users=users, acl=_doc_block("# /etc/mosquitto/acl")) as b:
        with Subscriber(b.port, "bms/#", **login("telegraf")) as tel, \
                Subscriber(b.port, "homeassistant/#", **login("homeassistant")) as ha:
            publish(b.port, "bms/pack1/state", b"1", **login("pack1"))
            publish(b.port, "bms/pack2/state", b"forged", **login("pack1"))  # not its topic: dropped
            publish(b.port, "homeassistant/sensor/pack1/pack_v/config", b"{}", retain=True, **login("pack1"))
            publish(b.port, "homeassistant/sensor/pack2/pack_v/config", b"forged", retain=True, **login("pack1"))
            publish(b.port, "bms/pack1/state", b"forged", **login("dashboard"))  # readers only read
            dead = client(b.port, will=("bms/pack2/status", b"offline", 1, True), **login("pack2"))
            publish(b.port, "bms/pack2/state", b"2", **login("pack2"))
            dead.loop_stop()
            dead.socket().close()  # its will goes out under its own name: allowed
            tel.wait_for(lambda m: m.topic == "bms/pack2/status")
            assert [(m.topic, m.payload) for m in tel.messages] == [
                ("bms/pack1/state", b"1"), ("bms/pack2/state", b"2"), ("bms/pack2/status", b"offline")]
            assert [(m.topic, m.payload) for m in ha.messages] == [("homeassistant/sensor/pack1/pack_v/config", b"{}")]
