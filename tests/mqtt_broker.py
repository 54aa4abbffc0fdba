"""A real Mosquitto broker for the tests, and a paho-mqtt subscriber.

    def test_x(mqtt_broker):                 # anonymous, on a free 127.0.0.1 port
        with Subscriber(mqtt_broker.port, "bms/#") as sub:
            publish(mqtt_broker.port, "bms/a/status", b"online", retain=True)
            sub.wait_for(lambda m: m.topic == "bms/a/status")

    Broker(tmp_path, users={"bms": "secret"})  # a password file, no anonymous access
    Broker(tmp_path, users={...}, acl="pattern write bms/%u/#\n")  # and an ACL file

The broker is Debian's /usr/sbin/mosquitto (CI installs it: .ci/run); the
fixture skips where there is none. paho-mqtt is imported only when a
client is made, so importing this module needs neither.
"""
import collections
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

MISSING = "no Mosquitto broker here: CI installs it (apt-get install mosquitto), see .ci/run"


def mosquitto_binary():
    """The broker's path, or None."""
    exe = shutil.which("mosquitto")
    if exe:
        return exe
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class BrokerError(Exception):
    pass


class Broker:
    """One mosquitto process on 127.0.0.1:`port`, its config, password file
    and log in `tmp_path`/mosquitto. Without `users` it takes anonymous
    clients; with {"user": "password", ...} only those; `acl` is the text
    of an ACL file (mosquitto's acl_file); `extra` more config lines (they
    follow the listener: certfile, keyfile for TLS)."""

    def __init__(self, tmp_path, users=None, port=None, acl=None, extra=()):
        self.exe = mosquitto_binary()
        if not self.exe:
            raise BrokerError(MISSING)
        self.dir = os.path.join(str(tmp_path), "mosquitto")
        os.makedirs(self.dir, exist_ok=True)
        self.users = dict(users or {})
        self.acl = acl
        self.extra = list(extra)
        self.port = port or free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.proc = None
        self._write_config()

    def _write_config(self):
        lines = ["listener %d 127.0.0.1" % self.port, "persistence false",
                 # as root it would drop to the `mosquitto` user; stay whoever we are
                 "user %s" % pwd.getpwuid(os.getuid()).pw_name,
                 "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
                 "log_type information", "connection_messages true"]
        if self.users:
            pw = os.path.join(self.dir, "passwd")
            if os.path.exists(pw):
                os.remove(pw)
            tool = shutil.which("mosquitto_passwd") or os.path.join(os.path.dirname(self.exe), "mosquitto_passwd")
            for i, (user, password) in enumerate(self.users.items()):
                subprocess.run([tool, "-b"] + (["-c"] if i == 0 else []) + [pw, user, password],
                               check=True, capture_output=True, timeout=10)
            os.chmod(pw, 0o600)
            lines += ["allow_anonymous false", "password_file %s" % pw]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            path = os.path.join(self.dir, "acl")
            with open(path, "w") as f:
                f.write(self.acl)
            lines.append("acl_file %s" % path)
        lines += self.extra
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10.0):
        """Start the broker and wait until its port accepts TCP."""
        if self.running:
            return self
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([self.exe, "-c", self.conf], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None:
                raise BrokerError("mosquitto exited (%d) at start:\n%s" % (self.proc.returncode, self.log_text()))
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError("mosquitto did not accept TCP on 127.0.0.1:%d in %g s:\n%s"
                                  % (self.port, timeout, self.log_text()))
            time.sleep(0.02)
        return self

    def _signal(self, sig):
        if self.running:
            self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM and wait (SIGKILL if it will not go)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def kill(self):
        """SIGKILL: the broker dies as on a power cut (no will is sent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self):
        """SIGSTOP: connections stay open but nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self):
        self._signal(signal.SIGCONT)

    def restart(self, timeout=10.0):
        """Stop (if running) and start again on the same port."""
        self.stop()
        return self.start(timeout)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def mqtt_broker(tmp_path):
    """An anonymous Mosquitto on a free loopback port, stopped afterwards."""
    if not mosquitto_binary():
        pytest.skip(MISSING)
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


# -- paho-mqtt clients ------------------------------------------------------------------

Message = collections.namedtuple("Message", "topic payload retain t")


def client(port, client_id=None, username=None, password=None, timeout=5.0, will=None, ca=None):
    """A paho client (MQTT 3.1.1) connected to 127.0.0.1:`port`, its network
    loop running; raises ConnectionError with the broker's reason code when
    refused. `will` = (topic, payload, qos, retain); `ca`: TLS, checked
    against this CA file. close_client() it when done."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "test-" + uuid.uuid4().hex[:8])
    if username is not None:
        c.username_pw_set(username, password)
    if will:
        c.will_set(*will)
    if ca:
        c.tls_set(ca_certs=ca)
    done = threading.Event()
    result = {}

    def on_connect(cl, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not done.wait(timeout):
        close_client(c)
        raise ConnectionError("no CONNACK from 127.0.0.1:%d in %g s" % (port, timeout))
    c.on_connect = None
    if result["rc"].is_failure:
        close_client(c)
        raise ConnectionError("refused: %s" % result["rc"], result["rc"])
    return c


def close_client(c):
    try:
        c.disconnect()
    finally:
        c.loop_stop()


def publish(port, topic, payload, qos=1, retain=False, timeout=5.0, **kw):
    """Publish one message from a short-lived client and wait until it is out (PUBACK for QoS 1)."""
    c = client(port, **kw)
    try:
        info = c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError("%s not published in %g s" % (topic, timeout))
    finally:
        close_client(c)


def make_tls_files(directory, host="127.0.0.1"):
    """A private CA and a broker certificate for `host` (an IP address),
    made with openssl: {"ca", "cert", "key"} paths, or None without openssl."""
    exe = shutil.which("openssl")
    if not exe:
        return None
    d = str(directory)
    os.makedirs(d, exist_ok=True)
    p = {k: os.path.join(d, n) for k, n in (("ca", "ca.crt"), ("ca_key", "ca.key"), ("cert", "broker.crt"),
                                            ("key", "broker.key"), ("csr", "broker.csr"), ("ext", "san.ext"))}
    with open(p["ext"], "w") as f:
        f.write("subjectAltName=IP:%s\n" % host)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in ([exe, "req", "-x509"] + ec + ["-keyout", p["ca_key"], "-out", p["ca"], "-days", "2",
                                              "-subj", "/CN=bms-test-ca"],
                [exe, "req"] + ec + ["-keyout", p["key"], "-out", p["csr"], "-subj", "/CN=%s" % host],
                [exe, "x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial",
                 "-out", p["cert"], "-days", "2", "-extfile", p["ext"]]):
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    return {"ca": p["ca"], "cert": p["cert"], "key": p["key"]}


class Subscriber:
    """Subscribes to `topic` (a filter: "bms/#") and records every message
    as Message(topic, payload bytes, retain flag, time.monotonic() on
    receipt), thread-safely. The subscription is acknowledged before the
    constructor returns."""

    def __init__(self, port, topic="#", qos=1, timeout=5.0, **kw):
        self._cond = threading.Condition()
        self._messages = []
        self.topic = topic
        self.client = client(port, **kw)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        _, mid = self.client.subscribe(topic, qos)
        if not subscribed.wait(timeout):
            self.close()
            raise TimeoutError("no SUBACK for %s in %g s" % (topic, timeout))

    def _on_message(self, cl, userdata, msg):
        m = Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
        with self._cond:
            self._messages.append(m)
            self._cond.notify_all()

    @property
    def messages(self):
        with self._cond:
            return list(self._messages)

    def wait_for(self, predicate, timeout=5.0):
        """The first recorded message (so far or to come) for which
        predicate(message) is true; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for m in self._messages[seen:]:
                    if predicate(m):
                        return m
                seen = len(self._messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no matching message on %s in %g s; got %r"
                                         % (self.topic, timeout, [(m.topic, m.payload[:60]) for m in self._messages]))
                self._cond.wait(left)

    def close(self):
        close_client(self.client)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
