"""The network settings: `net.cfg` in the board's storage directory.

Wi-Fi and broker credentials live here, not in the parameter table: a
Modbus master can read every holding register, and a password must never
be one of them. The file is put on the board with the firmware's other
files (`mpremote cp net.cfg :net.cfg`, docs/MQTT.md); the `net_enable`
parameter switches the network on and off.

    # one `key = value` a line; '#' starts a comment
    wifi_ssid = workshop
    wifi_password = ...
    host = 192.168.1.10
    user = bms-17
    password = ...

Read once at boot (boot-only, like bms.paramload): `load()` returns a dict of
every key in KEYS, or raises ValueError naming the line and the fix;
`start(app)` reads it and, when it is right, starts bms.uplink.
"""

from bms import params as P
from bms import regmap as M
from bms.events import EV_NET_CONFIG


# key: default (an int default makes the value an integer)
KEYS = {
    "wifi_ssid": "", "wifi_password": "",
    "host": "", "port": 0,  # 0: 1883, or 8883 with tls
    "user": "", "password": "",
    "tls": 0, "ca_file": "",  # tls = 1: TLS; ca_file: the CA certificate (PEM or DER) to check the broker's
    "prefix": "bms", "device_id": "",  # topics: <prefix>/<device_id>/state|event|status
    "state_s": 10,  # a state message this often
    "store_s": 60,  # while the broker is away: a sample kept this often
    "store_max": 64,  # samples kept at most (34 bytes each); the oldest go first
    "timeout_ms": 500,  # the longest one network call may hold the control loop
    "discovery": 1, "discovery_prefix": "homeassistant",  # Home Assistant MQTT discovery
}
FILE = "net.cfg"
_RANGES = {"port": (0, 65535), "tls": (0, 1), "state_s": (1, 3600), "store_s": (1, 86400),
           "store_max": (1, 1000), "timeout_ms": (50, 10000), "discovery": (0, 1)}


def parse(text, wdt_ms=0):
    """The settings from net.cfg's text; ValueError says which line is wrong.
    wdt_ms: the watchdog's timeout (0: not checked); one network call may
    hold the loop for timeout_ms, so that must stay under a quarter of it."""
    cfg = dict(KEYS)
    n = 0
    for line in text.split("\n"):
        n += 1
        line = line.strip()
        if not line or line[0] == "#":
            continue
        eq = line.find("=")
        if eq < 1:
            raise ValueError("net.cfg line %d: expected `key = value`, got %r" % (n, line), n)
        key = line[:eq].strip()
        val = line[eq + 1:].strip()
        if key not in KEYS:
            raise ValueError("net.cfg line %d: unknown key %r (keys: %s)" % (n, key, ", ".join(sorted(KEYS))), n)
        if isinstance(KEYS[key], int):
            try:
                val = int(val)
            except ValueError:
                raise ValueError("net.cfg line %d: %s must be a whole number, not %r" % (n, key, val), n)
            lo, hi = _RANGES[key]
            if not lo <= val <= hi:
                raise ValueError("net.cfg line %d: %s = %d is outside %d..%d" % (n, key, val, lo, hi), n)
            if key == "timeout_ms" and wdt_ms and val > wdt_ms // 4:
                raise ValueError("net.cfg line %d: timeout_ms = %d is more than a quarter of the watchdog's "
                                 "wdt_ms (%d): a call that long could let the watchdog reset the BMS; "
                                 "set timeout_ms to %d or less" % (n, val, wdt_ms, wdt_ms // 4), n)
        cfg[key] = val
    if not cfg["host"]:
        raise ValueError("net.cfg: no `host = ...`: name the MQTT broker (an IP address or a host name)")
    why = _bad_host(cfg["host"])
    if why:
        raise ValueError("net.cfg: host %r %s: give the broker's IPv4 address (192.168.1.10) or its host name "
                         "(letters, digits, '-' and '.'), without a scheme or a port (port has its own key)"
                         % (cfg["host"], why))
    for key in ("prefix", "device_id"):
        v = cfg[key]
        if len(v) > 32:
            raise ValueError("net.cfg: %s is %d characters: 32 at most" % (key, len(v)))
        for c in "+#/ ":
            if c in v:
                raise ValueError("net.cfg: %s %r may not hold %r (it is part of the MQTT topic)" % (key, v, c))
    if not cfg["port"]:
        cfg["port"] = 8883 if cfg["tls"] else 1883
    return cfg


def _bad_host(h):
    """Why h can be neither an IPv4 address nor a host name ("": it can).
    bms.uplink takes a host of digits and dots for an address (no lookup)."""
    labels = h.split(".")
    if h.replace(".", "").isdigit():
        if len(labels) != 4:
            return "is not an IPv4 address (four numbers)"
        for p in labels:
            if not p or int(p) > 255:
                return "is not an IPv4 address (each number 0..255)"
        return ""
    if len(h) > 253:
        return "is longer than a host name may be (253)"
    for p in labels:
        if not 0 < len(p) <= 63:
            return "has an empty or over-long part"
        if p[0] == "-" or p[-1] == "-":
            return "has a part that starts or ends with '-'"
        for c in p:
            if not (c.isalpha() or c.isdigit() or c == "-") or ord(c) > 127:
                return "holds %r" % c
    return ""


def load(storage_dir, wdt_ms=0):
    """The settings, or None when there is no net.cfg (the network stays
    off). ValueError: the file is there but wrong."""
    try:
        with open(storage_dir + FILE) as f:
            text = f.read()
    except OSError:
        return None
    return parse(text, wdt_ms)


def start(board, values, ir, log, append, boot_seq, cells):
    """At boot, with net_enable 1: the uplink (bms.uplink) when net.cfg is
    there and right, else None; a wrong file is logged (the line) and
    printed (what is wrong), and the network stays off."""
    try:
        cfg = load(board.storage_dir, values[P.P_WDT_MS])
    except ValueError as e:
        print(e.args[0])  # the board's console: what is wrong and where
        ir.set_u16(M.IR_NET_STATE, M.NET_CONFIG_ERROR)
        append(EV_NET_CONFIG, e.args[1] if len(e.args) > 1 else 0, 0)
        return None
    if cfg is None:
        return None
    import gc

    gc.collect()
    from bms.uplink import Uplink

    return Uplink(board, cfg, ir.words, log, append, board.ticks_ms(), boot_seq, cells)
