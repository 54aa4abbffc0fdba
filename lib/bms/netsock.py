"""The sockets under the MQTT link (bms.uplink): umqtt.simple gets a
connection bms.uplink already made without blocking, through a socket
whose every blocking call is bounded by net.cfg's timeout_ms; TLS over it
when net.cfg asks (the CA certificate from a DER or PEM file); and an
OSError's errno, which MicroPython and CPython keep in different places.
"""
import errno


class BoundedSocket:
    """The socket umqtt.simple is given: already connected (bms.uplink made
    the connection without blocking), and every blocking call bounded.

    umqtt.simple switches its socket between blocking and non-blocking, and
    newer releases pass connect()'s `timeout` (None: forever); here
    "blocking" always means "for at most timeout_ms"."""

    def __init__(self, stream, raw, timeout_s):
        """stream: what to read and write (the TLS socket, or raw); raw: the
        TCP socket under it, which holds the timeout."""
        self.s = stream
        self.raw = raw
        self.t = timeout_s
        raw.settimeout(timeout_s)

    def connect(self, addr):
        pass  # connected already

    def settimeout(self, t):
        pass  # ours stays

    def setblocking(self, flag):
        if flag:
            if self.s is not self.raw:
                self.s.setblocking(True)
            self.raw.settimeout(self.t)
        else:
            self.s.setblocking(False)

    def read(self, n):
        return self.s.read(n)

    def write(self, buf, n=-1):
        return self.s.write(buf) if n < 0 else self.s.write(buf, n)

    def close(self):
        self.s.close()


class SocketModule:
    """Stands in for the `socket` module inside umqtt.simple during
    connect(): hands it the connection made here."""

    def __init__(self, conn, addr):
        self.conn = conn
        self.addr = addr

    def socket(self, *args):
        return self.conn

    def getaddrinfo(self, host, port, *args):
        return [(0, 0, 0, "", self.addr)]


def quiet_close(s):
    """Close a socket (or its TLS layer) that may be half gone: its error
    is not news, the session is being closed anyway."""
    if s is not None:
        try:
            s.close()
        except OSError:
            pass


def errno_of(e):
    a = getattr(e, "errno", None)
    if a is None and e.args and isinstance(e.args[0], int):
        a = e.args[0]
    return a if isinstance(a, int) and a > 0 else 0


def timed_out(e):
    n = errno_of(e)
    return n == errno.ETIMEDOUT or n == errno.EAGAIN


def connect_errno(sock):
    """Why a non-blocking connect failed (ECONNREFUSED, EHOSTUNREACH...)."""
    try:
        sock.write(b"")
        sock.read(1)
    except OSError as e:
        return errno_of(e)
    return 0


def wrap_tls(sock, cfg):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca = cfg["ca_file"]
    if ca:
        ctx.load_verify_locations(cadata=_der(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE  # encrypted, the broker unchecked: docs/MQTT.md says why not to
    return ctx.wrap_socket(sock, server_hostname=cfg["host"])


def _der(path):
    """The CA certificate as DER, from a DER or PEM file: MicroPython's TLS
    (mbedTLS) takes DER as cadata."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"-----BEGIN"):
        return data
    import binascii

    body = b"".join(line for line in data.split(b"\n") if line and not line.startswith(b"-----"))
    return binascii.a2b_base64(body)
