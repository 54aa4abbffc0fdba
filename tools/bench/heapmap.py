"""Where the firmware's heap goes: each module's import cost under the
MicroPython unix port, loaded from .mpy as the simulator runs it.

    python -m bench.heapmap [--heap 400wK]

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
from bms_sim.build import compile_lib
from bms_sim.link import find_micropython

# bms.start's order: the parameters (their loader and packed table are let go
# before the rest loads: BOOT_ONLY), then the firmware a module at a time
BOOT = ("bms", "bms.crc", "bms.boards", "bms.boards.sim", "bms.bq769x0", "bms.params", "bms.paramdata",
        "bms.store", "bms.paramload")
BOOT_ONLY = ("bms.paramdata", "bms.paramload")
MODULES = BOOT + tuple(m for m in START_MODULES if m not in BOOT)

_PROBE = """
import gc, sys
gc.collect()
base = gc.mem_alloc()
prev = base
for m in sys.argv[1:]:
    __import__(m)
    gc.collect()
    a = gc.mem_alloc()
    print(m, a - prev)
    prev = a
print("total", prev - base)
"""


def measure(heap="400wK"):
    """[(module, bytes)] and the total, measured."""
    lib = compile_lib()
    probe = os.path.join(os.path.dirname(lib), "heapmap_probe.py")
    with open(probe, "w") as f:
        f.write(_PROBE)
    env = dict(os.environ, MICROPYPATH=lib)
    out = subprocess.run([find_micropython(), "-X", "heapsize=" + heap, probe] + list(MODULES),
                         env=env, capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise RuntimeError("heap map failed:\n" + out.stdout + out.stderr)
    rows = [line.rsplit(" ", 1) for line in out.stdout.split("\n") if line.strip()]
    total = int(rows[-1][1])
    return [(m, int(b)) for m, b in rows[:-1]], total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heap", default="400wK", help="-X heapsize for the run (default %(default)s)")
    args = ap.parse_args(argv)
    rows, total = measure(args.heap)
    width = max(len(m) for m, _ in rows)
    for m, b in sorted(rows, key=lambda r: -r[1]):
        print("%-*s %7d B  %5.1f %%%s" % (width, m, b, 100.0 * b / total,
                                          "  (boot only: let go before the rest loads)" if m in BOOT_ONLY else ""))
    print("%-*s %7d B  (the unix port's 64-bit objects; 56wK = 114,688 B)" % (width, "total", total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
