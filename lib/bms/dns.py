"""The broker's host name to an IPv4 address, without blocking the loop.

`socket.getaddrinfo` with a name blocks in lwIP's resolver until it answers
or gives up: on the ESP32 that is 7 s per DNS server (lwIP dns.c,
dns_check_entry: DNS_TMR_INTERVAL 1 s, DNS_MAX_RETRIES 4, so it waits
1 + 1 + 2 + 3 s before the next server or a timeout), longer than the
watchdog may wait. So bms.uplink asks the DNS server itself: one A query
over a non-blocking UDP socket, polled once a pass; no answer by the
deadline is a failure the uplink retries with its back-off. The answer is
kept for its TTL. An IP address in net.cfg needs none of this: getaddrinfo
with an address literal returns it without a lookup (lwIP's
dns_gethostbyname and the C library both take the dotted form as is).

Loaded only when net.cfg names the broker by a host name.
"""
import socket

from micropython import const

_TYPE_A = const(1)
_CLASS_IN = const(1)
_TTL_MAX_S = const(3600)  # kept at most this long (ticks arithmetic wraps after 6 days)


class Query:
    """One A query for name to server (an (IPv4 string, port) pair), sent at
    once; poll() until it answers."""

    def __init__(self, name, server, qid):
        self.id = qid & 0xFFFF
        q = bytearray(b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")  # RD, one question
        q[0] = self.id >> 8
        q[1] = self.id & 0xFF
        for label in name.split("."):
            q.append(len(label))
            q.extend(label.encode())
        q.extend(b"\x00\x00\x01\x00\x01")  # root, QTYPE A, QCLASS IN
        self.qlen = len(q)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock = s
        try:
            s.setblocking(False)
            # connected: only the server's datagrams come back
            s.connect(socket.getaddrinfo(server[0], server[1], 0, socket.SOCK_DGRAM)[0][-1])
            s.send(q)
        except OSError:
            self.close()
            raise
        self.head = q[:2]
        self.question = bytes(q[12:])  # the reply repeats it

    def poll(self):
        """None while no answer has come; (address, ttl_s) for the first A
        record; OSError(ENOENT) when the server says the name has none."""
        try:
            r = self.sock.recv(512)
        except OSError:
            return None  # EAGAIN: nothing yet (or an ICMP error: the deadline ends it)
        h = self.head
        n = self.qlen
        # ours: our id and question, QR set
        if len(r) < n or r[0] != h[0] or r[1] != h[1] or not r[2] & 0x80 or r[12:n] != self.question:
            return None  # not ours: wait on
        if r[3] & 0x0F:
            raise OSError(2)  # NXDOMAIN, SERVFAIL...: ENOENT
        answers = (r[6] << 8) | r[7]
        i = n
        while answers:
            answers -= 1
            # the owner name: labels, or a 2-byte pointer that ends it
            while i < len(r):
                k = r[i]
                if k & 0xC0 == 0xC0:
                    i += 2
                    break
                i += 1 + k
                if not k:
                    break
            if i + 10 > len(r):
                break
            typ = (r[i] << 8) | r[i + 1]
            cls = (r[i + 2] << 8) | r[i + 3]
            ttl = (r[i + 4] << 24) | (r[i + 5] << 16) | (r[i + 6] << 8) | r[i + 7]
            rdlen = (r[i + 8] << 8) | r[i + 9]
            i += 10
            if typ == _TYPE_A and cls == _CLASS_IN and rdlen == 4 and i + 4 <= len(r):
                ttl = ttl if ttl < _TTL_MAX_S else _TTL_MAX_S
                return "%d.%d.%d.%d" % (r[i], r[i + 1], r[i + 2], r[i + 3]), ttl
            i += rdlen  # a CNAME on the way: its A record follows
        raise OSError(2)  # an answer without an address

    def close(self):
        s = self.sock
        self.sock = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
