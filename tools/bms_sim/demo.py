"""`make demo`: a simulated pack with the firmware under MicroPython, and
`bmsctl watch` reading it over the simulated RS485 link."""
import argparse
import os
import sys

from bms_sim import cli as simcli
from bms_sim.process import SimError
from bmsctl import cli as ctl


def main(argv=None):
    p = argparse.ArgumentParser(prog="bms-demo")
    simcli.add_pack_args(p)
    p.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (0 = until Ctrl-C)")
    p.set_defaults(speed=60.0)
    args = p.parse_args(argv)
    link = os.path.join("build", "ttyBMS-demo")
    try:
        server = simcli.make_server(args, link_path=link, say=lambda s: print("demo: " + s, flush=True))
        with server:
            print("demo: %d-cell %s pack at %gx speed; RS485 link %s" % (args.cells, args.chemistry, args.speed, link))
            print("demo: firmware on %s" % server.target.describe(), flush=True)
            rc = ctl.main(["--port", link, "watch", "--interval", "1", "--seconds", str(args.seconds)])
            if server.exited.is_set():
                print("demo: the firmware stopped:\n" + server.log_tail(), file=sys.stderr)
                return 1
            return rc
    except SimError as e:
        print("demo: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
