"""python -m bmsctl.dashboard --screenshot docs/dashboard.png

Takes the dashboard's picture from a real run: a simulated 4-cell LFP pack
(the firmware under MicroPython), the dashboard on a free port, Debian's
Chromium. The pack discharges, rests, then charges near full so that
balancing shows. Other arguments go to `bmsctl dashboard`."""
import argparse
import os
import sys
import tempfile
import time


def _phase(sim, load_ma, charge_ma, cv_mv=3600):
    with sim.lock:
        sim.world.load.set(load_ma) if load_ma else sim.world.load.off()
        sim.world.charger.set(charge_ma, cv_mv) if charge_ma else sim.world.charger.off()
    sim.set_input("charger", bool(charge_ma))


def screenshot(path, seconds=40.0, width=1280, height=1060, settings_path=None):
    from bms_sim.cli import provision
    from bms_sim.server import SimServer
    from bms_sim.world import World
    from bmsctl.client import Bms
    from bmsctl.dashboard import browser
    from bmsctl.dashboard.server import DashboardServer
    from bmsctl.dashboard.source import ModbusSource

    why = browser.available()
    if why:
        raise SystemExit("dashboard: %s" % why)
    tmp = tempfile.mkdtemp(prefix="bms-dashboard-")
    flash, link = os.path.join(tmp, "flash"), os.path.join(tmp, "tty")
    provision(flash, 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=95.0, spread_mv=45, seed=3)
    with SimServer(world, flash, speed=20.0, link_path=link) as sim:
        sim.wait_sim_ms(3000, timeout=20)
        src = ModbusSource(Bms(link), interval=1.0, where="a simulated 4-cell LFP pack")
        src.poll()
        src.start()
        httpd = DashboardServer(src, "127.0.0.1", 0)
        httpd.start_thread()
        try:
            with browser.chromium(os.path.join(tmp, "profile"), width, height) as ctx:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                page.goto(httpd.url)
                t0 = time.monotonic()
                for until, load, charge in ((0.25, 3000, 0), (0.35, 0, 0), (1.0, 0, 4000)):
                    _phase(sim, load, charge, 3550)
                    while time.monotonic() - t0 < until * seconds:
                        time.sleep(0.2)
                # a moment with a cell bleeding (they pause to measure)
                page.wait_for_selector(".cell.balancing", timeout=15000)
                page.wait_for_timeout(300)
                page.screenshot(path=path, full_page=True)
                if settings_path:
                    page.click("#tab-btn-settings")
                    page.wait_for_selector("#params tr")
                    page.fill("#cf-name", "cell_ov_warn")
                    page.dispatch_event("#cf-name", "input")
                    page.screenshot(path=settings_path, full_page=False)
        finally:
            httpd.shutdown()
            httpd.server_close()
            src.close()
    return path



def main(argv=None):
    from bmsctl import client
    from bmsctl.dashboard import add_command

    p = argparse.ArgumentParser(prog="python -m bmsctl.dashboard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--screenshot", metavar="FILE.png", help="take the dashboard's picture from a simulated run")
    p.add_argument("--settings-screenshot", metavar="FILE.png", help="and one of the settings tab")
    p.add_argument("--seconds", type=float, default=40.0, help="how long the simulated run goes before the picture")
    # else `bmsctl dashboard` with bmsctl's link options
    p.add_argument("--port", default=client.DEFAULT_PORT, help="serial port of the RS485 link (default %(default)s)")
    p.add_argument("--unit", type=int, default=1, help="Modbus address of the BMS (default 1)")
    p.add_argument("--baud", type=int, default=19200, help="baud rate (default 19200)")
    p.add_argument("--parity", choices=("E", "O", "N"), default="E", help="default E")
    p.add_argument("--timeout", type=float, default=1.0, help="reply timeout in seconds (default 1)")

    def one(name, func, help):  # build_parser's cmd(): here the parser is the one command
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    add_command(None, one)
    args = p.parse_args(argv)
    if args.screenshot:
        print("dashboard: wrote %s" % screenshot(args.screenshot, args.seconds, settings_path=args.settings_screenshot))
        return 0
    try:
        return args.func(args, sys.stdout)
    except client.CtlError as e:
        sys.stderr.write("bmsctl: %s\n" % e)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
