"""Where the firmware's heap goes: each module's import cost under
MicroPython, on the ESP32 twin, loaded from .mpy files as `make deploy`
leaves them on a board, or frozen (--frozen) as in a custom image.

    python -m bench.heapmap [--frozen] [--pip64] [--heap 400K]

Imports the firmware's modules one at a time, in bms.start's order, and
prints gc.mem_alloc() after each (collected), so the next round of heap
work starts from measured figures: bytecode, constant tables and the
module-level names of every module (a frozen image on the ESP32 keeps the
bytecode in flash; the names and tables stay in RAM). A module's figure
carries the one-off costs it triggers: a growth of the interned-string
(qstr) pool, which doubles as it fills, lands on whichever module needs the
next chunk, so a module can show several KB more here than it costs alone.
Trust the total; read a module's figure as "at most", and measure a module
alone before acting.
"""
import argparse
import os
import subprocess
import sys

from bms.start import MODULES as START_MODULES
from bms_build.build import compile_lib
from bms_sim.target import Target, find_target, pip_micropython

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE_DIR = os.path.join(ROOT, "build", "bench")

# bms.start's order: the parameters (their loader and packed table are let go
# before the rest loads: BOOT_ONLY), then the firmware a module at a time
BOOT = ("bms", "bms.crc", "bms.boards", "bms.boards.sim", "bms.afe", "bms.params", "bms.gen.paramdata",
        "bms.store", "bms.paramload")
BOOT_ONLY = ("bms.gen.paramdata", "bms.paramload")
MODULES = BOOT + tuple(m for m in START_MODULES if m not in BOOT)

# argv: the modules to measure, after "--" any imported first and not counted
_PROBE = """
import gc, sys
args = sys.argv[1:]
if "--" in args:
    k = args.index("--")
    for m in args[k + 1:]:
        __import__(m)
    args = args[:k]
gc.collect()
base = gc.mem_alloc()
prev = base
for m in args:
    __import__(m)
    gc.collect()
    a = gc.mem_alloc()
    print(m, a - prev)
    prev = a
print("total", prev - base)
"""


def measure(heap="400wK", target=None, lib=None, modules=MODULES, base=()):
    """[(module, bytes)] and the total, measured on target (default: the
    twin loading .mpy files) with lib's .mpy files (default: make build's):
    modules imported in order, each one's cost; base imported first and
    not counted."""
    lib = lib or compile_lib()
    target = target or find_target(mpy=True)
    os.makedirs(PROBE_DIR, exist_ok=True)
    probe = os.path.join(PROBE_DIR, "heapmap_probe.py")
    tmp = "%s.%d.tmp" % (probe, os.getpid())
    with open(tmp, "w") as f:
        f.write(_PROBE)
    os.replace(tmp, probe)
    env = dict(os.environ, MICROPYPATH=target.path(lib))
    argv = [target.exe, "-X", "heapsize=" + heap, probe] + list(modules) + (["--"] + list(base) if base else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise RuntimeError("heap map failed:\n" + out.stdout + out.stderr)
    rows = [line.rsplit(" ", 1) for line in out.stdout.split("\n") if line.strip()]
    total = int(rows[-1][1])
    return [(m, int(b)) for m, b in rows[:-1]], total


def module_cost(module, target, lib=None, base=(), heap="400wK"):
    """The bytes importing module alone takes once base is imported."""
    return measure(heap, target, lib, (module,), base)[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heap", default="400wK", help="-X heapsize for the run (default %(default)s)")
    ap.add_argument("--frozen", action="store_true", help="the twin's frozen modules, not the .mpy files")
    ap.add_argument("--pip64", action="store_true", help="the 64-bit pip port (.mpy), for comparison")
    args = ap.parse_args(argv)
    if args.pip64:
        target = Target(pip_micropython(), "pip64")
    else:
        target = find_target(mpy=not args.frozen)
    rows, total = measure(args.heap, target)
    width = max(len(m) for m, _ in rows)
    for m, b in sorted(rows, key=lambda r: -r[1]):
        print("%-*s %7d B  %5.1f %%%s" % (width, m, b, 100.0 * b / total,
                                          "  (boot only: let go before the rest loads)" if m in BOOT_ONLY else ""))
    print("%-*s %7d B  (%s)" % (width, "total", total, target.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
