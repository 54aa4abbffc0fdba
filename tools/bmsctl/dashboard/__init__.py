"""`bmsctl dashboard`: a live web dashboard of the BMS on this computer.

    bmsctl --port /dev/ttyUSB0 dashboard          # then open http://127.0.0.1:8080/
    bmsctl dashboard --sim                        # a simulated pack, started here
    bmsctl dashboard --mqtt broker.lan --device garage   # watch one BMS through an MQTT broker

Importing this module imports no web server, no simulator and no browser:
they load in the command's handler, so `bmsctl status` stays fast.
"""
import argparse
import contextlib
import json
import os

HELP = "a live web dashboard of the BMS (cells, charge, current, events, settings) on this computer until Ctrl-C"
SIM_LINK = os.path.join("build", "ttyBMS-dashboard")
SIM_STATE = os.path.join("build", "sim-dashboard")


def _interval(text):
    try:
        v = float(text)
    except ValueError:
        v = 0
    if not 0.2 <= v <= 60:
        raise argparse.ArgumentTypeError("%r: give seconds between reads, 0.2 to 60" % text)
    return v


def _port(text):
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError("%r: give a TCP port 1-65535 (0 = any free one)" % text)
    return v


def _broker(text):
    """HOST[:PORT] ([v6:addr]:PORT) as (host, port); port None when not given."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is None:
        return (host, None) if host else _broker_error(text)
    try:
        p = int(port)
    except ValueError:
        p = 0
    if not host or not 1 <= p <= 65535:
        _broker_error(text)
    return host, p


def _broker_error(text):
    raise argparse.ArgumentTypeError("%r: give the broker as HOST or HOST:PORT (port 1-65535; default 1883, "
                                     "8883 with TLS)" % text)


def add_command(sub, cmd):
    """Register `dashboard` on bmsctl's subparsers through build_parser's
    cmd() helper (it adds --json and the handler)."""
    s = cmd("dashboard", cmd_dashboard, HELP)
    s.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default %(default)s: this computer only; 0.0.0.0 opens it to "
                        "the network, with no password but the PIN for writes)")
    s.add_argument("--http-port", type=_port, default=8080, help="TCP port of the web page (default %(default)s)")
    s.add_argument("--interval", type=_interval, default=1.0,
                   help="seconds between reads of the BMS (default 1; with --mqtt: between refreshes of the page)")
    s.add_argument("--history", default="1h", help="how much history to keep: 10m, 1h, 6h (default %(default)s; the chart shows up to 1 h)")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--sim", action="store_true",
                     help="start a simulated 4-cell LFP pack with the firmware under MicroPython and show it "
                          "(ignores --port; its flash is kept in %s)" % SIM_STATE)
    how.add_argument("--mqtt", type=_broker, metavar="HOST[:PORT]",
                     help="watch a BMS that publishes over MQTT, through this broker (port 1883 by default, 8883 "
                          "with TLS), instead of the RS485 link: read-only, settings need --port")
    s.add_argument("--device", metavar="ID", help="with --mqtt: the BMS's device id (its topics are PREFIX/ID/...)")
    s.add_argument("--prefix", default="bms", help="with --mqtt: the topic prefix (default %(default)s)")
    s.add_argument("--mqtt-user", metavar="USER", help="with --mqtt: the broker's user name")
    s.add_argument("--mqtt-password", metavar="PASSWORD", help="with --mqtt: that user's password")
    s.add_argument("--mqtt-tls", action="store_true",
                   help="with --mqtt: TLS, the broker's certificate checked against the system's CAs (port 8883 "
                        "by default)")
    s.add_argument("--mqtt-ca", metavar="FILE", help="with --mqtt: TLS, the broker's certificate checked against "
                                                     "this CA certificate (PEM)")
    s.add_argument("--sim-speed", type=float, default=60.0,
                   help="simulated seconds per wall second with --sim (default %(default)s)")
    s.add_argument("--verbose", action="store_true", help="log every HTTP request on stderr")
    return s


def start_sim(speed=60.0, link=SIM_LINK, state=SIM_STATE, argv=()):
    """A simulated pack as `make demo` runs it (bms_sim: the firmware under
    MicroPython, a charge/discharge cycle), serving Modbus on `link`.
    Returns the started SimServer; stop() it."""
    from bms_sim import cli as simcli

    p = argparse.ArgumentParser()
    simcli.add_pack_args(p)
    a = p.parse_args(list(argv))
    a.speed = speed
    a.state = state
    server = simcli.make_server(a, link_path=link)
    server.start()
    try:
        server.wait_sim_ms(server.world.now_ms + 2000, timeout=20)  # booted and measuring: the first read answers
    except BaseException:
        server.stop()
        raise
    return server


def _mqtt_source(args, history_s):
    """The MqttSource the options name, connected; CtlError when they do not fit."""
    from bmsctl.client import DEFAULT_PORT, CtlError
    from bmsctl.dashboard.source import MqttSource

    if getattr(args, "port", DEFAULT_PORT) != DEFAULT_PORT:
        raise CtlError("--mqtt reads the BMS through the broker: leave out --port (the RS485 link)")
    if not args.device:
        raise CtlError("--mqtt needs --device ID: the BMS's device id, as in its topics %s/ID/state" % args.prefix)
    if args.mqtt_password is not None and args.mqtt_user is None:
        raise CtlError("--mqtt-password needs --mqtt-user")
    host, port = args.mqtt
    tls = args.mqtt_tls or args.mqtt_ca is not None
    src = MqttSource(host, port or (8883 if tls else 1883), args.device, args.prefix, args.mqtt_user,
                     args.mqtt_password, interval=args.interval, history_s=history_s, tls=tls, ca_file=args.mqtt_ca)
    return src.start()


def _serve(args, out):
    from bmsctl.client import CtlError
    from bmsctl.config import ConfigError, parse_duration
    from bmsctl.dashboard.server import DashboardServer
    from bmsctl.dashboard.source import ModbusSource

    try:
        history_s = parse_duration(args.history)
    except ConfigError as e:
        raise CtlError("--history: %s" % e)
    if not args.mqtt:
        for opt in ("device", "mqtt_user", "mqtt_password", "mqtt_ca"):
            if getattr(args, opt) is not None:
                raise CtlError("--%s goes with --mqtt HOST[:PORT]" % opt.replace("_", "-"))
        if args.mqtt_tls:
            raise CtlError("--mqtt-tls goes with --mqtt HOST[:PORT]")
    with contextlib.ExitStack() as stack:
        if args.mqtt:
            src = _mqtt_source(args, history_s)
            stack.callback(src.close)
        elif args.sim:
            from bms_sim.process import SimError

            try:
                sim = start_sim(args.sim_speed)
            except SimError as e:
                raise CtlError("the simulated pack did not start: %s" % e)
            stack.callback(sim.stop)
            args.port = sim.link_path
            if not args.json:
                out.write("dashboard: simulated 4-cell LFP pack at %gx speed on %s\n" % (args.sim_speed, args.port))
        if not args.mqtt:
            src = ModbusSource.connect(args, interval=args.interval, history_s=history_s)
            stack.callback(src.close)
            first = src.poll()
            if not first["ok"] and not args.json:
                out.write("dashboard: warning: %s (the page shows it and keeps trying)\n" % first["error"])
            src.start()
        try:
            httpd = DashboardServer(src, args.host, args.http_port, verbose=args.verbose)
        except OSError as e:
            raise CtlError("cannot serve on %s port %d: %s; another program may use it: pick another with "
                           "--http-port" % (args.host, args.http_port, e.strerror or e))
        stack.callback(httpd.server_close)
        if args.json:
            info = {"url": httpd.url, "port": None if args.mqtt else args.port}
            if args.mqtt:
                info.update({"mqtt": src.broker, "topics": src.base + "#"})
            out.write(json.dumps(info) + "\n")
        else:
            where = src.where if args.mqtt else "on " + args.port
            out.write("dashboard: %s  (BMS %s; Ctrl-C stops)\n" % (httpd.url, where))
        out.flush()
        httpd.serve_forever()


def cmd_dashboard(args, out):
    try:
        _serve(args, out)
    except KeyboardInterrupt:  # Ctrl-C: the way to stop it, at any point
        pass
    return 0
