"""bms-sim: run the firmware under MicroPython against a simulated pack.

    bms-sim run --cells 4 --chemistry lfp --speed 60
    bmsctl --port build/ttyBMS watch        (in another terminal)
"""
import argparse
import os
import signal
import sys
import time

from bms import params as P

from bms import paramload as PL
from bms.afe.chips import model_groups, thermistor_inputs
from bms_sim.afe import AFES, afe_type, cell_range
from bms_sim.process import DEFAULT_HEAP, SimError
from bms_sim.server import SimServer
from bms_sim.target import TargetError, find_target
from bms_sim.world import World

DEFAULT_LINK = os.path.join("build", "ttyBMS")
DEFAULT_STATE = os.path.join("build", "sim-state")
CHEMISTRIES = P.CHEMISTRY_NAMES[1:]  # bms.params: the firmware's chemistry codes, by name
# charge voltage per cell the simulated charger regulates to
CHARGE_CV_MV = {"lfp": 3550, "nmc": 4200, "lto": 2750}


class CycleProfile:
    """A pack that is used: discharge at C/2 to 20 %, rest, CC-CV charge at
    C/2 until the current tapers to C/20, rest, and again."""

    REST_MS = 120000

    def __init__(self, chemistry, capacity_mah):
        self.cv_mv = CHARGE_CV_MV[chemistry]
        self.c2_ma = capacity_mah // 2
        self.tail_ma = capacity_mah // 20
        self.phase = "discharge"
        self.since_ms = 0

    def __call__(self, world):
        t = world.now_ms
        if self.phase == "discharge":
            world.charger.off()
            world.load.set(self.c2_ma)
            if world.pack.true_soc_pct() <= 20.0:
                self._to("rest-empty", world)
        elif self.phase == "rest-empty":
            world.load.off()
            if t - self.since_ms >= self.REST_MS:
                self._to("charge", world)
        elif self.phase == "charge":
            world.load.off()
            world.charger.set(self.c2_ma, self.cv_mv)
            if t - self.since_ms > 60000 and 0 <= world.current_ma < self.tail_ma:
                self._to("rest-full", world)
        elif self.phase == "rest-full":
            world.charger.off()
            if t - self.since_ms >= self.REST_MS:
                self._to("discharge", world)

    def _to(self, phase, world):
        self.phase = phase
        self.since_ms = world.now_ms


def provision(state_dir, cells, chemistry, capacity_mah, shunt_uohm, groups=None, extra=None, afe="bq769x0"):
    """Write the parameters the simulated BMS boots with, as a factory would
    (bms.params' own `key=value` format: the chemistry's defaults for this
    pack, then `extra` settings over them). Every simulated thermistor is
    fitted. afe: the chip (bms_sim.afe.AFES), written as afe_type."""
    prm = P.Params()
    kind = afe_type(afe)
    lines = ["chemistry=%s" % chemistry, "afe_type=%d" % kind]
    if groups:
        lines.append("afe_groups=%d" % groups)
    lines += ["cells=%d" % cells, "capacity_mah=%d" % capacity_mah, "shunt_uohm=%d" % shunt_uohm]
    ts = thermistor_inputs(kind, groups or model_groups(cells))
    lines.append("temp_sensors=%d" % ((1 << ts) - 1))
    for k, v in (extra or {}).items():
        lines.append("%s=%s" % (k, v))
    PL.load_text(prm, "\n".join(lines))
    if prm.errors:
        raise SimError("cannot configure %d %s cells: %s" % (cells, chemistry, "; ".join(prm.errors)))
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, PL.CONFIG_FILE), "w") as f:
        f.write(PL.to_text(prm))
    return prm


def stored_pack_matches(state_dir, args):
    """True when the simulated flash already holds a set for this very pack
    (chemistry, cells, capacity, shunt): it is kept, with whatever was
    changed over Modbus since. Another pack gets a fresh provisioning."""
    from bms.store import Store

    if os.path.exists(os.path.join(state_dir, PL.CONFIG_FILE)):
        return False  # not taken in yet: write it again for these options
    rec = Store(state_dir.rstrip("/") + "/", PL.STORE_NAME).load()
    if rec is None:
        return False
    stored = P.Params()
    PL.load_record(stored, *rec)
    v = stored.values
    return (stored.configured() and v[P.P_CHEMISTRY] == P.CHEMISTRY_NAMES.index(args.chemistry)
            and stored.cells() == args.cells and v[P.P_CAPACITY_MAH] == args.capacity_mah
            and v[P.P_SHUNT_UOHM] == args.shunt_uohm and v[P.P_AFE_TYPE] == afe_type(args.afe))


def target_of(args, say=None):
    """The MicroPython the firmware runs on (bms_sim.target): --micropython,
    else the ESP32 twin (built on first use), --mpy for its .mpy files."""
    try:
        return find_target(args.micropython, mpy=args.mpy or None, say=say)
    except TargetError as e:
        raise SimError(str(e)) from None


def make_server(args, link_path=None, profile=True, say=None):
    lo, hi = cell_range(args.afe)
    if not lo <= args.cells <= hi:
        other = [a for a in AFES if a != args.afe and cell_range(a)[0] <= args.cells <= cell_range(a)[1]]
        raise SimError("--cells must be %d to %d (the %s's range), not %d%s" % (
            lo, hi, args.afe, args.cells, "; --afe %s takes %d" % (other[0], args.cells) if other else ""))
    if args.capacity_mah <= 0:
        raise SimError("--capacity-mah must be positive")
    world = World(cells=args.cells, chemistry=args.chemistry, capacity_mah=args.capacity_mah,
                  soc_pct=args.soc, spread_mv=args.spread_mv, shunt_uohm=args.shunt_uohm, seed=args.seed,
                  afe=args.afe)
    state = os.path.abspath(args.state)
    if args.unconfigured:
        # the factory state: no provisioning file, no stored set
        for name in (PL.CONFIG_FILE, PL.STORE_NAME + ".a", PL.STORE_NAME + ".b"):
            try:
                os.remove(os.path.join(state, name))
            except FileNotFoundError:
                pass
    elif not stored_pack_matches(state, args):
        provision(state, args.cells, args.chemistry, args.capacity_mah, args.shunt_uohm, afe=args.afe)
    speed = args.speed if args.speed > 0 else None
    return SimServer(world, state, speed=speed, link_path=link_path, heap=args.heap,
                     target=target_of(args, say),
                     on_advance=CycleProfile(args.chemistry, args.capacity_mah) if profile else None)


def add_pack_args(p):
    p.add_argument("--afe", choices=AFES, default=AFES[0],
                   help="the AFE chip: the bq769x0 family (the smallest member that takes the cells) or a "
                        "bq76952 (default %(default)s)")
    p.add_argument("--cells", type=int, default=4, help="series cells, 3-15 on a bq769x0, 3-16 on a bq76952 (default 4)")
    p.add_argument("--chemistry", choices=CHEMISTRIES, default="lfp", help="cell chemistry (default lfp)")
    p.add_argument("--capacity-mah", type=int, default=10000, help="pack capacity in mAh (default 10000)")
    p.add_argument("--soc", type=float, default=70.0, help="initial state of charge in %% (default 70)")
    p.add_argument("--spread-mv", type=float, default=20.0, help="initial cell voltage spread in mV (default 20)")
    p.add_argument("--shunt-uohm", type=int, default=1000, help="current shunt in micro-ohm (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the pack model")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second; 0 = as fast as possible (default 1)")
    add_target_args(p)
    p.add_argument("--state", default=DEFAULT_STATE, help="the simulated board's flash, a directory (default %(default)s)")
    p.add_argument("--unconfigured", action="store_true", help="boot without a stored pack configuration (factory state)")


def add_target_args(p):
    p.add_argument("--heap", default=DEFAULT_HEAP,
                   help="MicroPython heap, as -X heapsize= (default: 56K on the ESP32 twin, its initial heap; "
                        "110000 for its .mpy files; 96wK on the 64-bit pip port)")
    p.add_argument("--mpy", action="store_true",
                   help="the twin loads the firmware's .mpy files (build/device/lib, as make deploy leaves them "
                        "on a board) instead of its frozen copy")
    p.add_argument("--micropython", default=None,
                   help="path of a MicroPython unix port to run instead (loads the .mpy files; default: the "
                        "ESP32 twin, make twin, or the 64-bit pip port where the twin cannot be built)")


def cmd_run(args):
    server = make_server(args, link_path=args.link, say=lambda s: print("bms-sim: " + s, flush=True))
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    with server:
        print("bms-sim: %d-cell %s pack on a %s, %d mAh, heap %s, speed %s"
              % (args.cells, args.chemistry, args.afe, args.capacity_mah, server.heap,
                 "max" if not server.speed else "%gx" % server.speed))
        print("bms-sim: firmware on %s" % server.target.describe())
        print("bms-sim: RS485 link at %s  (try: bmsctl --port %s watch)" % (args.link, args.link))
        print("bms-sim: firmware log at %s; Ctrl-C stops" % server.log_path, flush=True)
        end = time.monotonic() + args.seconds if args.seconds else None
        try:
            while not stop and (end is None or time.monotonic() < end):
                if server.exited.is_set():
                    print("bms-sim: the firmware stopped:\n" + server.log_tail(), file=sys.stderr)
                    return 1
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_replay(args):
    from bms_sim.replay import replay

    if args.capacity_mah is not None and args.capacity_mah <= 0:
        raise SimError("--capacity-mah must be positive")
    if args.record_every_s <= 0:
        raise SimError("--record-every-s must be positive")
    replay(args.trace, args.chemistry, args.capacity_mah, args.out, ocv_table=args.ocv_table,
           record_every_s=args.record_every_s, target=target_of(args), heap=args.heap,
           params=args.params, sets=args.set, afe=args.afe, add_current_ma=args.add_current_ma)
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="bms-sim", description="Simulated bq769x0 or bq76952 battery pack running the BMS firmware under MicroPython.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start the simulated pack and the firmware; expose RS485 as a pty")
    add_pack_args(r)
    r.add_argument("--link", default=DEFAULT_LINK, help="where to put the RS485 pseudo-terminal (default %(default)s)")
    r.add_argument("--seconds", type=float, default=0, help="stop after this many wall seconds (0 = until Ctrl-C)")
    r.set_defaults(func=cmd_run)
    r = sub.add_parser("replay", help="play a trace through the simulated AFE into the firmware; write what it reports")
    r.add_argument("trace", help="TRACE.csv: t_s,current_ma,temp_c,cell1_mv,...,cellN_mv")
    r.add_argument("--chemistry", choices=CHEMISTRIES,
                   help="the cells' chemistry (needed without --params; with it, changes the profile's)")
    r.add_argument("--capacity-mah", type=int,
                   help="rated capacity the BMS is configured with (needed without --params; with it, changes the profile's)")
    r.add_argument("--params", metavar="PACK.json",
                   help="the BMS's settings as `bmsctl config export` writes them, instead of the chemistry's defaults")
    r.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="one parameter over the rest, as `bmsctl config set` takes it (cell_ov=3.6V, "
                        "cc_cal_every_ms=0); repeatable")
    r.add_argument("--afe", choices=AFES, default=None,
                   help="the AFE chip the trace is read through (default: the set's afe_type, else bq769x0)")
    r.add_argument("--ocv-table", help="OCV.csv: soc_pct,ocv_mv, the cell's rested OCV curve (replaces the chemistry's)")
    r.add_argument("--out", required=True, help="OUT.csv: t_s,soc_pct,... as the firmware reports them")
    r.add_argument("--record-every-s", type=float, default=10.0, help="simulated seconds between rows (default 10)")
    r.add_argument("--add-current-ma", type=float, default=0.0, metavar="MA",
                   help="added to every row's current: a what-if (-30 takes a +30 mA sensor offset out)")
    add_target_args(r)
    r.set_defaults(func=cmd_replay)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SimError as e:
        print("bms-sim: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
