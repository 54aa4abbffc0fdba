"""The broker by host name, resolved without blocking (bms.dns): the firmware
under MicroPython asks a real UDP DNS server in the test (SimServer
dns_server, the board's dns_server()) and connects to a real Mosquitto; a
DNS server that never answers holds no control cycle past its period, and
the uplink retries with its back-off.
"""
import errno
import socket
import struct
import threading
import time

import pytest

from bms import regmap as M
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World
from conftest import ir, rtu_client
from mqtt_broker import MISSING, mosquitto_binary

NAME = "broker.bms.test"


class DnsServer:
    """A DNS server on a loopback UDP port: answers A queries for NAME with
    127.0.0.1 (TTL 60 s), NXDOMAIN for any other name; `silent`: reads
    every query and answers none. `asked` holds the simulated ms of each."""

    def __init__(self, server=None, silent=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self.silent = silent
        self.server = server  # the SimServer whose clock stamps the queries
        self.asked = []
        self.names = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                q, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            self.asked.append(self.server.world.now_ms if self.server else 0)
            i = 12
            labels = []
            while q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode())
                i += 1 + q[i]
            name = ".".join(labels)
            self.names.append(name)
            if self.silent:
                continue
            question = q[12:i + 5]
            if name == NAME:
                head = q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0)
                # the answer names the question by a pointer (0xC00C), as servers do
                answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes((127, 0, 0, 1))
                self.sock.sendto(head + question + answer, peer)
            else:
                self.sock.sendto(q[:2] + b"\x81\x83" + struct.pack(">HHHH", 1, 0, 0, 0) + question, peer)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def start(tmp_path, port, dns, busy_wall=False):
    state = tmp_path / "flash"
    provision(str(state), 4, "lfp", 10000, 1000, extra={"net_enable": 1})
    with open(state / "net.cfg", "w") as f:
        f.write("host = %s\nport = %d\ndevice_id = pack1\nstate_s = 2\ntimeout_ms = 300\n" % (NAME, port))
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, seed=8)
    server = SimServer(world, str(state), speed=20.0, link_path=str(tmp_path / "tty"))
    server.dns_server = dns.addr
    server.busy_wall = busy_wall
    dns.server = server
    return server


def net(client):
    w = ir(client, M.IR_NET_STATE, M.IR_NET_BLOCK_MAX_MS + 1 - M.IR_NET_STATE)
    return {"state": w[0], "error": w[1], "connects": w[2], "block_max_ms": w[8]}


@pytest.mark.skipif(not mosquitto_binary(), reason=MISSING)
def test_a_host_name_resolves_and_mqtt_connects(tmp_path, mqtt_broker):
    dns = DnsServer()
    server = start(tmp_path, mqtt_broker.port, dns)
    try:
        with server:
            server.wait_sim_ms(3000, timeout=20)
            client = rtu_client(server.link_path)
            deadline = time.monotonic() + 20
            while net(client)["state"] != M.NET_ONLINE:
                assert time.monotonic() < deadline, (net(client), dns.names, server.log_tail())
                time.sleep(0.05)
            st = net(client)
            log = server.log_tail(200)
    finally:
        dns.close()
    assert dns.names[:1] == [NAME]
    assert st["connects"] == 1 and st["error"] == 0
    assert "Traceback" not in log, log


def test_a_silent_dns_holds_no_cycle_and_is_retried(tmp_path):
    dns = DnsServer(silent=True)
    # busy_wall: the firmware's own wall time passes as simulated time, so a
    # call that blocked would show as a late cycle
    server = start(tmp_path, 1, dns, busy_wall=True)
    feeds = []

    def watch(w):
        t = server.wdt_feed_ms
        if t is not None and (not feeds or feeds[-1] != t):
            feeds.append(t)

    server.on_advance = watch
    try:
        with server:
            server.wait_sim_ms(3000, timeout=20)
            client = rtu_client(server.link_path)
            server.wait_sim_ms(40000, timeout=60)
            st = net(client)
            log = server.log_tail(200)
    finally:
        dns.close()
    gaps = [b - a for a, b in zip(feeds, feeds[1:]) if a > 3000]
    asked = dns.asked
    spacing = [b - a for a, b in zip(asked, asked[1:])]
    print("%d cycles, longest gap %d ms; queries at %s ms; %r" % (len(gaps), max(gaps), asked, st))
    assert "Traceback" not in log, log
    # every cycle on time: a resolver that blocked would hold one for seconds
    # (glibc's, like lwIP's, waits 5 s and more); the margin is the host's
    # own scheduling, which busy_wall charges to the firmware too
    assert len(gaps) > 100 and sorted(gaps)[len(gaps) // 2] == 250 and max(gaps) < 1000, max(gaps)
    assert st["block_max_ms"] < 250, st
    # not resolved, and why: NERR_DNS, timed out
    assert st["state"] in (M.NET_BACKOFF, M.NET_JOINING)
    assert st["error"] == (M.NERR_DNS << 8) | (errno.ETIMEDOUT & 0xFF), st
    # asked again after each 3 s deadline plus a back-off that doubles: 1, 2, 4, 8 s
    assert dns.names and set(dns.names) == {NAME}
    assert len(asked) >= 4, asked
    # each query's 3 s deadline passes before the next, and the back-off grows;
    # not strictly per step: busy_wall charges the host's scheduling to the
    # firmware's clock, which moves a query by a second on a loaded machine
    assert all(x >= 3000 for x in spacing) and spacing[-1] > spacing[0] + 2000, spacing
