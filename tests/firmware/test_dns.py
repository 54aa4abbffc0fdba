"""bms.dns, the non-blocking DNS client, under CPython against a real UDP
socket playing the server: what it takes from a reply and what it refuses
(the end-to-end run under MicroPython is tests/e2e/test_e2e_dns.py)."""
import errno
import socket
import struct
import time

import pytest

from bms import dns


@pytest.fixture
def server():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    yield s
    s.close()


def _ask(server, name="broker.lan"):
    q = dns.Query(name, server.getsockname(), 0x1234)
    req, peer = server.recvfrom(512)
    return q, req, peer


def _answer(req, rcode=0, records=b"", count=0):
    end = req.index(b"\x00", 12) + 5  # the question: the name, its root, QTYPE, QCLASS
    return req[:2] + bytes((0x81, 0x80 | rcode)) + struct.pack(">HHHH", 1, count, 0, 0) + req[12:end] + records


def _rr(typ, data, ttl=300):
    return b"\xc0\x0c" + struct.pack(">HHIH", typ, 1, ttl, len(data)) + data


def _wait(q):
    for _ in range(200):
        got = q.poll()
        if got is not None:
            return got
        time.sleep(0.005)  # the datagram is on its way
    raise AssertionError("no answer")


def test_the_query_asks_for_an_a_record(server):
    q, req, _ = _ask(server)
    assert req[:2] == b"\x12\x34" and req[2:4] == b"\x01\x00"  # recursion desired
    assert req[12:] == b"\x06broker\x03lan\x00\x00\x01\x00\x01"
    assert q.poll() is None  # nothing yet: no blocking
    q.close()


def test_a_cname_then_an_address(server):
    q, req, peer = _ask(server)
    cname = _rr(5, b"\x04host\xc0\x13")
    server.sendto(_answer(req, records=cname + _rr(1, bytes((10, 1, 2, 3)), ttl=99999), count=2), peer)
    assert _wait(q) == ("10.1.2.3", 3600)  # the TTL kept at most an hour
    q.close()


def test_a_reply_not_ours_is_ignored(server):
    q, req, peer = _ask(server)
    server.sendto(b"\x99\x99" + _answer(req)[2:], peer)  # another id
    server.sendto(_answer(req, records=_rr(1, bytes((10, 0, 0, 9))), count=1), peer)
    assert _wait(q) == ("10.0.0.9", 300)
    q.close()


@pytest.mark.parametrize("rcode, records, count", [(3, b"", 0), (2, b"", 0), (0, b"", 0),
                                                   (0, b"\xc0\x0c\x00\x1c\x00\x01\x00\x00\x00\x3c\x00\x10" + bytes(16), 1)],
                         ids=["nxdomain", "servfail", "no answer", "ipv6 only"])
def test_no_address_is_an_error(server, rcode, records, count):
    q, req, peer = _ask(server)
    server.sendto(_answer(req, rcode, records, count), peer)
    with pytest.raises(OSError) as e:
        _wait(q)
    assert e.value.args[0] == errno.ENOENT
    q.close()

