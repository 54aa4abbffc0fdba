"""What the bench's runs share: the simulated pack, the probe compiled to
bytecode, the firmware's environment and its log read back, percentiles,
the JSON written, and the worker processes the heap runs go to."""
import json
import math
import os
import subprocess
import time

from bench.config import MPY_TESTS, PACK, PROBE_DIR, PROBE_SRC, SCRIPTS, BenchError
from bms_build.build import find_mpy_cross, fold_scripts
from bms_sim.cli import provision
from bms_sim.world import World


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[k - 1]


def make_world(pack=PACK):
    """The simulated pack (bench.config PACK or PACK_952) on its chip."""
    return World(cells=pack["cells"], chemistry=pack["chemistry"], capacity_mah=pack["capacity_mah"],
                 soc_pct=pack["soc_pct"], spread_mv=pack["spread_mv"], shunt_uohm=pack["shunt_uohm"], seed=1,
                 afe=pack["afe"])


def provision_pack(state, pack=PACK):
    """The pack's parameters, as a new board has them (bms.cfg not yet taken in)."""
    return provision(state, pack["cells"], pack["chemistry"], pack["capacity_mah"], pack["shunt_uohm"],
                     afe=pack["afe"])


def compile_probe():
    """bench_probe.py to bytecode: the firmware side cannot compile it in the heap it leaves."""
    fold_scripts(MPY_TESTS, SCRIPTS)
    os.makedirs(PROBE_DIR, exist_ok=True)
    out = os.path.join(PROBE_DIR, "bench_probe.mpy")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(PROBE_SRC):
        tmp = "%s.%d.tmp" % (out, os.getpid())
        proc = subprocess.run([find_mpy_cross(), "-o", tmp, "-s", "bench_probe.py", PROBE_SRC],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError("mpy-cross rejects %s:\n%s" % (PROBE_SRC, proc.stderr or proc.stdout))
        os.replace(tmp, out)
    return PROBE_DIR


def with_env(env, fn):
    """fn() with os.environ extended (SimServer hands os.environ to the firmware)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def log_error(text):
    """The last line of a firmware log that names an error (with the
    innermost traceback entry before it), or None."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if "Error" in lines[i] or "Traceback" in lines[i]:
            where = [x.strip() for x in lines[:i] if x.strip().startswith("File ")]
            return lines[i].strip() + (" (%s)" % where[-1] if where else "")
    return None


def write_json(path, obj):
    """obj as indented JSON in path (its directory made first)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def say(text):
    print(text, flush=True)


def timed(fn, *args):
    """(fn(*args), wall seconds): a job for the heap runs' process pool."""
    t0 = time.monotonic()
    out = fn(*args)
    return out, round(time.monotonic() - t0, 1)


def process_pool(workers=2):
    """The heap runs' workers: processes of their own (each run's simulator
    is Python, the GIL would serialise threads), spawned (no forked threads)."""
    import concurrent.futures
    import multiprocessing

    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
