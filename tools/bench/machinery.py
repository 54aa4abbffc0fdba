"""What each piece of the heap-saving machinery earns, measured on the ESP32 twin.

    python -m bench.machinery [--quick] [--out build/machinery.json]

Each piece is taken away in a copy of lib/ and the firmware is measured
with and without it, frozen into a twin of its own (built like `make twin`,
in build/bench/machinery/) and from .mpy files, by the smallest heap that
runs bench.perf's short scenario (boot, Modbus polling, two parameter
writes saved to flash, the SOC estimate starting), bisected in 1 KiB steps:

- as built: what `make build` and `make twin` make;
- no_collect: bms.start imports the firmware without a collection after
  each module;
- keep_boot: the boot-only loader and packed parameter table stay loaded
  (Params.release() does nothing);
- unfolded: no constant folding: the plain source, with the host-only tables
  it then imports (bms.regmap, bms.paramtable, bms.protrules, bms.regdoc);
  the packed tables are still what the firmware reads, so this also shows
  what the tuple tables cost when loaded.

A piece earns its place when the frozen image or the .mpy path needs a
smaller heap with it. docs/ARCHITECTURE.md ("Heap") quotes the result.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from bench import perf
from bms_sim import build as B
from bms_sim import twin as TW
from bms_sim.cli import provision
from bms_sim.target import Target, find_target

ROOT = B.ROOT
WORK = os.path.join(ROOT, "build", "bench", "machinery")
DEFAULT_OUT = os.path.join(ROOT, "build", "machinery.json")


def _patch(path, old, new):
    with open(path) as f:
        text = f.read()
    if old not in text:
        raise perf.BenchError("%s no longer holds the text the %s variant patches: update bench.machinery"
                              % (path, os.path.basename(path)))
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


def variant_lib(name):
    """A copy of lib/ with one piece taken away."""
    dest = os.path.join(WORK, name, "src")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(B.LIB, dest, ignore=shutil.ignore_patterns("__pycache__"))
    bms = os.path.join(dest, "bms")
    if name == "no_collect":
        _patch(os.path.join(bms, "start.py"), "        __import__(name)\n        gc.collect()\n",
               "        __import__(name)\n")
    elif name == "keep_boot":
        _patch(os.path.join(bms, "params.py"), '        from bms import release\n\n        release("paramload")\n'
               '        release("paramdata")\n', "        return\n")
    return dest


def frozen_tree(name, src):
    """{frozen name: source path}, and the .mpy directory, of a variant:
    folded as the build does, or (unfolded) every module as written."""
    out = os.path.join(WORK, name, "lib")
    if name != "unfolded":
        B.compile_lib(src=src, out=out)
        folded = B.folded_dir(out)
        tree = {}
        for dirpath, _, names in os.walk(folded):
            for n in names:
                if n.endswith(".py"):
                    p = os.path.join(dirpath, n)
                    tree[os.path.relpath(p, folded).replace(os.sep, "/")] = p
        return tree, out
    shutil.rmtree(out, ignore_errors=True)
    exe = B.find_mpy_cross()
    tree = {}
    sources = [(os.path.join(d, n), os.path.relpath(os.path.join(d, n), src).replace(os.sep, "/"))
               for d, _, names in os.walk(src) for n in names if n.endswith(".py")]
    sources.append((os.path.join(B.board_dir(), "board_pins.py"), "board_pins.py"))
    from bms_sim import deps

    sources.append((deps.umqtt_simple(), deps.UMQTT_REL))
    for py, rel in sources:
        mpy = os.path.join(out, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(mpy), exist_ok=True)
        proc = subprocess.run([exe, *B.MPY_CROSS_ARGS, "-o", mpy, "-s", rel[:-3].replace("/", "."), py],
                              capture_output=True, text=True)
        if proc.returncode:
            raise perf.BenchError("mpy-cross rejects %s: %s" % (py, proc.stderr))
        tree[rel] = py
    return tree, out


def build_twin(name, tree, src_tree):
    """A twin with the variant frozen in; its binary."""
    manifest = os.path.join(WORK, name, "manifest.py")
    lines = ["# bench.machinery: the %s variant, frozen" % name]
    for rel, path in sorted(tree.items()):
        lines.append("module(%r, base_path=%r)" % (rel, path[:-len(rel)].rstrip("/") or "/"))
    for n in TW.ROOT_FILES:
        lines.append("module(%r, base_path=%r)" % (n, ROOT))
    with open(manifest, "w") as f:
        f.write("\n".join(lines) + "\n")
    log = os.path.join(WORK, name, "build.log")
    open(log, "w").close()
    return TW.make_unix_port(src_tree, log, obj=os.path.join(WORK, name, "obj"), manifest=manifest)


def measure(quick=False, progress=print):
    twin = find_target()
    if twin.kind != "twin":
        raise perf.BenchError("no twin here: " + twin.why)
    _, src_tree = TW.find_source()
    step = perf.QUICK_HEAP_STEP if quick else perf.HEAP_STEP
    short = perf.QUICK_SHORT_MS if quick else perf.SHORT_MS
    names = ("as_built", "no_collect", "keep_boot", "unfolded")
    res = {"scenario_s": short // 1000, "step_bytes": step, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="bms-machinery-") as tmp:
        state = os.path.join(tmp, "state")
        provision(state, perf.CELLS, perf.CHEMISTRY, perf.CAPACITY_MAH, perf.SHUNT_UOHM)
        for name in names:
            progress("%s: building ..." % name)
            src = variant_lib(name)
            tree, mpy_dir = frozen_tree(name, src)
            exe = build_twin(name, tree, src_tree)
            row = {}
            for mode, t, lib in (("frozen", Target(exe, "twin", frozen=True), None),
                                 ("mpy", Target(twin.exe, "twin", frozen=False), mpy_dir)):
                lo, hi = perf.HEAP_RANGE[mode]
                row[mode + "_min_bytes"] = perf.smallest_heap(short, state, t, lo, hi + 64 * 1024, step, progress,
                                                              lib_dir=lib)
                progress("%s, %s: %s" % (name, mode, row[mode + "_min_bytes"]))
            res["variants"][name] = row
    base = res["variants"]["as_built"]
    for name in names[1:]:
        v = res["variants"][name]
        v["frozen_saves_bytes"] = _diff(v["frozen_min_bytes"], base["frozen_min_bytes"])
        v["mpy_saves_bytes"] = _diff(v["mpy_min_bytes"], base["mpy_min_bytes"])
    return res


def _diff(a, b):
    return None if a is None or b is None else a - b


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.machinery", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse steps, a short scenario")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    res = measure(args.quick, progress=lambda s: print(s, flush=True))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    print("\n%-12s %14s %14s %12s %12s" % ("variant", "frozen min B", ".mpy min B", "piece saves", "(.mpy)"))
    for name, v in res["variants"].items():
        print("%-12s %14s %14s %12s %12s" % (name, v["frozen_min_bytes"], v["mpy_min_bytes"],
                                             v.get("frozen_saves_bytes", ""), v.get("mpy_saves_bytes", "")))
    print("wrote " + args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
