"""net.cfg, the network settings (bms.netcfg): defaults, every kind of
mistake named with its line, and nothing half-applied."""
import pytest

from bms import netcfg


def test_defaults_and_port_by_tls():
    cfg = netcfg.parse("host = 10.0.0.5\n")
    assert cfg["port"] == 1883 and cfg["prefix"] == "bms" and cfg["state_s"] == 10 and cfg["store_max"] == 64
    assert netcfg.parse("host = broker.lan\ntls = 1\n")["port"] == 8883
    cfg = netcfg.parse("# comment\n\n  host=h  \nuser = bms-1\npassword = a b=c # kept\nstate_s = 5\n")
    assert cfg["host"] == "h" and cfg["user"] == "bms-1" and cfg["password"] == "a b=c # kept"
    assert cfg["state_s"] == 5
    assert set(cfg) == set(netcfg.KEYS)


@pytest.mark.parametrize("text, line, words", [
    ("host = h\nprot = 1883\n", 2, "unknown key 'prot'"),
    ("host = h\njust words\n", 2, "expected `key = value`"),
    ("host = h\nport = 18a3\n", 2, "port must be a whole number"),
    ("host = h\n\nstate_s = 0\n", 3, "state_s = 0 is outside 1..3600"),
    ("host = h\ntimeout_ms = 20000\n", 2, "timeout_ms = 20000 is outside 50..10000"),
])
def test_a_wrong_line_is_named(text, line, words):
    with pytest.raises(ValueError) as e:
        netcfg.parse(text)
    assert e.value.args[0].startswith("net.cfg line %d: " % line) and words in e.value.args[0]
    assert e.value.args[1] == line


@pytest.mark.parametrize("text, words", [
    ("port = 1883\n", "no `host = ...`"),
    ("host = h\ndevice_id = a/b\n", "may not hold '/'"),
    ("host = h\nprefix = bms/#\n", "may not hold"),
    ("host = h\ndevice_id = %s\n" % ("x" * 33), "32 at most"),
])
def test_a_wrong_file_is_refused(text, words):
    with pytest.raises(ValueError) as e:
        netcfg.parse(text)
    assert words in e.value.args[0]


def test_no_file_means_no_network(tmp_path):
    assert netcfg.load(str(tmp_path) + "/") is None
    (tmp_path / "net.cfg").write_text("host = 127.0.0.1\n")
    assert netcfg.load(str(tmp_path) + "/")["host"] == "127.0.0.1"


def test_every_key_is_documented():
    import os

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "MQTT.md")) as f:
        doc = f.read()
    assert [k for k in netcfg.KEYS if "`%s`" % k not in doc] == []


def test_a_timeout_the_watchdog_cannot_wait_for_is_refused():
    # one network call may hold the loop for timeout_ms: past a quarter of wdt_ms it could reset the BMS
    assert netcfg.parse("host = h\ntimeout_ms = 2000\n", 8000)["timeout_ms"] == 2000
    with pytest.raises(ValueError) as e:
        netcfg.parse("host = h\ntimeout_ms = 2001\n", 8000)
    msg = e.value.args[0]
    assert msg.startswith("net.cfg line 2: ") and "wdt_ms (8000)" in msg and "2000 or less" in msg
    assert e.value.args[1] == 2
    assert netcfg.parse("host = h\ntimeout_ms = 10000\n")["timeout_ms"] == 10000  # unchecked without a watchdog


@pytest.mark.parametrize("host, words", [
    ("mqtt://10.0.0.5", "holds ':'"),
    ("10.0.0.5:1883", "holds ':'"),
    ("10.0.0", "not an IPv4 address (four numbers)"),
    ("10.0.0.256", "each number 0..255"),
    ("broker..lan", "empty or over-long part"),
    ("-broker.lan", "starts or ends with '-'"),
    ("my broker", "holds ' '"),
    ("b" * 64 + ".lan", "empty or over-long part"),
])
def test_a_host_that_cannot_be_reached_is_refused(host, words):
    # bms.uplink takes digits and dots for an address (no lookup) and anything
    # else for a name (bms.dns): what is neither could never connect
    with pytest.raises(ValueError) as e:
        netcfg.parse("host = %s\n" % host)
    msg = e.value.args[0]
    assert words in msg and "IPv4 address" in msg and "port has its own key" in msg, msg


def test_addresses_and_names_are_taken():
    for host in ("192.168.1.10", "0.0.0.0", "broker", "mqtt-1.example.org", "10.0.0.5.nip.io"):
        assert netcfg.parse("host = %s\n" % host)["host"] == host
