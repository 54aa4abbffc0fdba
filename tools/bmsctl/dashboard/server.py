"""The dashboard's web server: the standard library's threading HTTP server,
one static page (static/) and a JSON API over a DataSource.

    GET  /api/state             the newest decoded values
    GET  /api/history?since=T   samples newer than T (unix seconds), oldest first; the
                                source's "interval" (the page's refresh) and "period"
                                (seconds between readings)
    GET  /api/events            the event log, newest first
    GET  /api/config            every parameter: value, unit, range
    POST /api/config            {"set": {"cell_ov": "3.60V"}, "pin": "1234"}
    POST /api/restart           {"pin": "1234"}
    POST /api/storage           {"on": true, "pin": "1234"}: storage mode on or off (docs/POWER.md)
"""
import json
import math
import os
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from bmsctl.client import CtlError

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# the page may load nothing from anywhere but this server
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
MAX_BODY = 64 * 1024


def _clean(x):
    """JSON-safe (NaN/inf as null), without float noise (2.3040000000000003)."""
    if isinstance(x, float):
        return round(x, 6) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class Handler(BaseHTTPRequestHandler):
    server_version = "bmsctl-dashboard"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)

    # -- replies -------------------------------------------------------------

    def _send(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status=HTTPStatus.OK):
        self._send(status, json.dumps(_clean(obj), separators=(",", ":")).encode(), "application/json")

    def _error(self, status, msg):
        self._json({"ok": False, "error": msg}, status)

    def _static(self, name):
        path = os.path.join(STATIC, name)
        ext = os.path.splitext(name)[1]
        if "/" in name or name.startswith(".") or ext not in TYPES or not os.path.isfile(path):
            return self._error(HTTPStatus.NOT_FOUND, "no such page: %s" % self.path)
        with open(path, "rb") as f:
            self._send(HTTPStatus.OK, f.read(), TYPES[ext])

    # -- routes --------------------------------------------------------------

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        src = self.server.source
        path = url.path
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):])
            if path == "/favicon.ico":
                return self._static("favicon.svg")
            if path == "/api/state":
                st = src.latest()
                if st is None:
                    return self._json({"ok": False, "error": "no reading from the BMS yet", "where": src.where})
                return self._json(dict(st, age_s=round(time.time() - st.get("t", 0), 2), period_s=src.period))
            if path == "/api/history":
                q = parse_qs(url.query)
                try:
                    since = float(q["since"][0]) if "since" in q else None
                except ValueError:
                    return self._error(HTTPStatus.BAD_REQUEST, "since: give unix seconds, e.g. since=1700000000.5")
                return self._json({"interval": src.interval, "period": src.period, "samples": src.history(since)})
            if path == "/api/events":
                return self._json({"events": src.events()})
            if path == "/api/config":
                return self._json(src.read_config())
        except CtlError as e:
            return self._error(HTTPStatus.BAD_GATEWAY, str(e))
        except NotImplementedError as e:
            return self._error(HTTPStatus.NOT_IMPLEMENTED, str(e) or "this data source cannot do that")
        self._error(HTTPStatus.NOT_FOUND, "no such page: %s" % self.path)

    def do_POST(self):
        path = urlsplit(self.path).path
        if path not in ("/api/config", "/api/restart", "/api/storage"):
            return self._error(HTTPStatus.NOT_FOUND, "no such page: %s" % self.path)
        # A JSON body needs a CORS preflight from another origin, which this
        # server never grants: other web pages cannot post here.
        if self.headers.get_content_type() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)")
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            return self._error(HTTPStatus.FORBIDDEN, "requests from other sites are refused")
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_BODY:
            return self._error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "the body is not JSON")
        if not isinstance(body, dict):
            return self._error(HTTPStatus.BAD_REQUEST, 'send a JSON object: {"set": {...}, "pin": "1234"}')
        pin = body.get("pin")
        pin = None if pin is None else str(pin)
        src = self.server.source
        try:
            with self.server.write_lock:
                if path == "/api/config":
                    r = src.write_config(body.get("set", {}), pin)
                elif path == "/api/storage":
                    on = body.get("on")
                    if not isinstance(on, bool):
                        return self._error(HTTPStatus.BAD_REQUEST,
                                           'say which: {"on": true} or {"on": false}, with "pin"')
                    r = src.storage(on, pin)
                else:
                    r = src.restart(pin)
        except CtlError as e:
            # code 2: refused before anything was sent; 3: the BMS did not answer or refused
            return self._error(HTTPStatus.BAD_REQUEST if e.code == 2 else HTTPStatus.BAD_GATEWAY, str(e))
        except NotImplementedError as e:
            return self._error(HTTPStatus.NOT_IMPLEMENTED, str(e) or "this data source cannot write")
        r["ok"] = True
        self._json(r)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, source, host="127.0.0.1", port=8080, verbose=False):
        self.source = source
        self.verbose = verbose
        self.write_lock = threading.Lock()  # one write or restart at a time
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)

    @property
    def url(self):
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d/" % (host, port)

    def start_thread(self):
        """Serve in a daemon thread (tests, --screenshot); stop with shutdown()."""
        t = threading.Thread(target=self.serve_forever, name="bms-dashboard-http", daemon=True)
        t.start()
        return t
