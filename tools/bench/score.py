"""Score the firmware's SOC against the physics-model ground truth.

    python -m bench.score --traces bench/traces --out docs/SOC_ACCURACY.md
                          [--replay-cmd bms-sim] [--results build/bench-soc]
                          [--no-ocv-table | --only-ocv-table] [--only NAME ...]
                          [--replay-arg ARG ...]

For every trace in bench/traces/manifest.json it runs

    REPLAY-CMD replay TRACE.csv --chemistry C --capacity-mah N [--ocv-table OCV.csv]
               --out RESULTS/NAME[.ocv].out.csv --record-every-s 10

reads OUT.csv (`t_s,soc_pct,...`), interpolates the true SOC at OUT's
times and reports the RMS and max error over the whole trace, the max error
after the first full charge (from FULL_GRACE_S after it ends), and through a
standby day (a trace's `standby_from_s` on, or the whole of a trace that
never reaches full). Writes a Markdown table to --out and
RESULTS/summary.json. Standard library only (no numpy, no PyBaMM).
"""
import argparse
import bisect
import csv
import datetime
import json
import math
import os
import shlex
import subprocess
import sys
import time

# "After the first full charge" starts once the charge has ended and the
# firmware could see it: its full detection holds for full_hold_ms (60 s by
# default); two minutes in all.
FULL_GRACE_S = 120.0

TARGETS = {
    "nmc": {"max_pct": 3.0, "rms_pct": 1.5},
    "lfp": {"max_after_full_pct": 5.0, "max_standby_pct": 5.0},
}
TARGET_TEXT = [
    "NMC: max error <= 3 % and RMS error <= 1.5 % over the whole trace.",
    "LFP: max error <= 5 % after the first full charge, and <= 5 % through a "
    "standby day that never reaches full charge.",
    "A trace with targets of its own in the manifest (`targets`) is held to those "
    "instead of its chemistry's.",
]
# --out's part after this line is written by hand (a before/after, a what-if
# run): a run keeps it and rewrites only what is above
HAND_MARK = "<!-- written by hand below: make bench-soc keeps it -->"

# what a manifest's `targets` may name (score_trace's results)
TARGET_KEYS = ("rms_pct", "max_pct", "max_after_full_pct", "max_standby_pct")


# ---- pure functions (unit-tested) -------------------------------------------

def read_series(path, column="soc_pct"):
    """(times, values) of `column` from a CSV with a t_s column, in file order."""
    ts, vs = [], []
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        if rows.fieldnames is None or "t_s" not in rows.fieldnames or column not in rows.fieldnames:
            raise ValueError("%s: needs the columns t_s and %s (has %s)"
                             % (path, column, ",".join(rows.fieldnames or [])))
        for row in rows:
            if not row.get("t_s"):
                continue
            ts.append(float(row["t_s"]))
            vs.append(float(row[column]))
    return ts, vs


def rest_counts(path):
    """(rests, share of rows at rest in %, OCV corrections) from a replay's
    OUT.csv (its columns rest, rests, ocv_fixes), or Nones when it has none."""
    n = at_rest = 0
    last = None
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        if not rows.fieldnames or not {"rest", "rests", "ocv_fixes"} <= set(rows.fieldnames):
            return None, None, None
        for row in rows:
            n += 1
            at_rest += row["rest"] == "1"
            last = row
    if last is None:
        return None, None, None
    return int(last["rests"]), 100.0 * at_rest / n, int(last["ocv_fixes"])


def interp(times, values, t):
    """Linear interpolation of (times, values) at t; held flat outside."""
    if not times:
        raise ValueError("no points to interpolate")
    if t <= times[0]:
        return values[0]
    if t >= times[-1]:
        return values[-1]
    i = bisect.bisect_right(times, t)
    t0, t1 = times[i - 1], times[i]
    v0, v1 = values[i - 1], values[i]
    if t1 == t0:
        return v1
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def errors_at(out_t, out_soc, truth_t, truth_soc):
    """Reported minus true SOC (percentage points) at each of OUT's times
    that lie within the truth's time span."""
    errs = []
    for t, s in zip(out_t, out_soc):
        if truth_t[0] <= t <= truth_t[-1]:
            errs.append((t, s - interp(truth_t, truth_soc, t)))
    return errs


def rms(values):
    values = list(values)
    if not values:
        return None
    return math.sqrt(sum(v * v for v in values) / len(values))


def max_abs(values):
    values = list(values)
    if not values:
        return None
    return max(abs(v) for v in values)


def after(errs, t0):
    """The errors at times >= t0 (none if t0 is None)."""
    if t0 is None:
        return []
    return [e for t, e in errs if t >= t0]


def score_trace(entry, out_t, out_soc, truth_t, truth_soc):
    """The numbers and the verdict for one trace (entry: its manifest item)."""
    errs = errors_at(out_t, out_soc, truth_t, truth_soc)
    vals = [e for _, e in errs]
    full = entry.get("first_full_charge_s")
    res = {
        "name": entry["name"],
        "chemistry": entry["chemistry"],
        "points": len(vals),
        "rms_pct": rms(vals),
        "max_pct": max_abs(vals),
        "mean_pct": (sum(vals) / len(vals)) if vals else None,
        "first_full_charge_s": full,
        "max_after_full_pct": max_abs(after(errs, full + FULL_GRACE_S)) if full is not None else None,
        "max_standby_pct": (max_abs(after(errs, entry["standby_from_s"])) if entry.get("standby_from_s")
                            else (max_abs(vals) if full is None else None)),
    }
    checks = []
    tg = TARGETS.get(entry["chemistry"], {})
    own = entry.get("targets")
    if own:
        for k in sorted(own):
            if k not in TARGET_KEYS:
                raise ValueError("%s: manifest target %r is not one of %s" % (entry["name"], k, ", ".join(TARGET_KEYS)))
            checks.append((k, own[k]))
    elif entry["chemistry"] == "nmc":
        checks.append(("max_pct", tg["max_pct"]))
        checks.append(("rms_pct", tg["rms_pct"]))
    elif entry["chemistry"] == "lfp":
        if full is not None:
            checks.append(("max_after_full_pct", tg["max_after_full_pct"]))
        if res["max_standby_pct"] is not None:
            checks.append(("max_standby_pct", tg["max_standby_pct"]))
    res["checks"] = {k: {"value": res[k], "target": lim,
                         "pass": res[k] is not None and res[k] <= lim} for k, lim in checks}
    res["pass"] = bool(vals) and all(c["pass"] for c in res["checks"].values())
    return res


def fmt(v, nd=2):
    return "-" if v is None else ("%.*f" % (nd, v))


def markdown(results, command, date, replay_cmd):
    lines = [
        "# SOC accuracy against a physics-model ground truth",
        "",
        "Generated by `tools/bench/score.py`; do not edit by hand (but below the marker at the end, which a run "
        "keeps). Reproduce with `make bench-soc`, which runs:",
        "",
        "    " + command,
        "",
        "Every trace is a PyBaMM simulation of a 4-series pack, played through the simulated "
        "bq769x0 into the firmware under MicroPython (`bms-sim replay`) with the chemistry's "
        "default parameters, once with the chemistry's generic OCV table and once with the "
        "cell's own (`--ocv-table`). The firmware counts every coulomb-counter reading above "
        "its offset's uncertainty, and lets the OCV correct the SOC only after a rest: the "
        "current under a few mA (C/1000, or what the counter cannot tell from its offset) "
        "and the cells' voltage relaxed (docs/SOC.md). The columns rests and OCV fixes show "
        "how often that happened, so a move of the estimate can be told from counting.",
        "",
        "`lfp_prada2013_standby_load` is issue 19's case: a steady C/40 load (57 mA on a "
        "4S1P 2.3 Ah pack, under the 100 mA that used to count as rest) on the LFP plateau "
        "for 12 h with three bursts, a current sensor with +0.4 % gain and +1.5 mA offset "
        "error (1.8 LSB of the bq769x0's counter on its 10 mOhm shunt); it must stay within RMS 1 % "
        "and max 2 %.",
        "",
        "Date: %s. Replay command: `%s`. Traces, ground truth and sensor errors: "
        "`bench/traces/manifest.json` and `tools/bench/README.md`." % (date, replay_cmd),
        "",
        "Targets:",
        "",
    ] + ["- " + t for t in TARGET_TEXT] + [
        "",
        "Errors are reported minus true SOC, in percentage points, at every recorded "
        "point (every 10 s of simulated time). Rests: how many rests the firmware judged "
        "(no current, the cells' voltage relaxed) and the share of the trace it spent at "
        "rest; OCV: how many times the rested OCV corrected the SOC (`bms-sim replay`'s "
        "columns rest, rests, ocv_fixes).",
        "",
        "| trace | chem | OCV table | RMS % | max % | max after 1st full % | max through standby % "
        "| rests (time at rest) | OCV fixes | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("error"):
            lines.append("| %s | %s | %s | - | - | - | - | - | - | ERROR: %s |"
                         % (r["name"], r["chemistry"], "yes" if r["ocv_table"] else "no",
                            r["error"].splitlines()[0][:120].replace("|", "/")))
            continue
        rests = "-" if r.get("rests") is None else "%d (%.0f %%)" % (r["rests"], r["rest_pct"])
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], r["chemistry"], "yes" if r["ocv_table"] else "no",
            fmt(r["rms_pct"]), fmt(r["max_pct"]), fmt(r["max_after_full_pct"]),
            fmt(r["max_standby_pct"]), rests, "-" if r.get("ocv_fixes") is None else r["ocv_fixes"],
            "pass" if r["pass"] else "FAIL"))
    for r in results:
        if r.get("restarts"):
            lines += ["", "%s%s: the firmware restarted %d time(s) during the replay (the SOC came back from its "
                      "last saved record)." % (r["name"], " (own OCV table)" if r["ocv_table"] else "", r["restarts"])]
    n_pass = sum(1 for r in results if r.get("pass"))
    lines += ["", "%d of %d runs meet their targets." % (n_pass, len(results)), ""]
    return "\n".join(lines)


# ---- running the replay -------------------------------------------------------

def replay_argv(replay_cmd, trace, chemistry, capacity_mah, out, ocv_table=None, record_every_s=10, sets=()):
    argv = shlex.split(replay_cmd) + ["replay", trace, "--chemistry", chemistry,
                                      "--capacity-mah", str(int(capacity_mah))]
    for a in sets:
        argv += ["--set", a]
    if ocv_table:
        argv += ["--ocv-table", ocv_table]
    argv += ["--out", out, "--record-every-s", "%g" % record_every_s]
    return argv


def trace_sets(entry):
    """The parameters a trace's pack needs beyond its chemistry's defaults
    (`--set` NAME=VALUE): its shunt, when not the replay's 1 mOhm."""
    shunt = entry.get("shunt_uohm", 1000)
    return ["shunt_uohm=%d" % shunt] if shunt != 1000 else []


def run_all(traces_dir, results_dir, replay_cmd, ocv_modes, only=None, timeout=3600, log=sys.stderr, extra=()):
    with open(os.path.join(traces_dir, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(results_dir, exist_ok=True)
    results = []
    for entry in manifest["traces"]:
        if only and entry["name"] not in only:
            continue
        truth_t, truth_soc = read_series(os.path.join(traces_dir, entry["truth"]))
        for use_ocv in ocv_modes:
            ocv = os.path.join(traces_dir, entry["ocv_table"]) if use_ocv else None
            out = os.path.join(results_dir, entry["name"] + (".ocv" if use_ocv else "") + ".out.csv")
            argv = replay_argv(replay_cmd, os.path.join(traces_dir, entry["trace"]), entry["chemistry"],
                               entry["capacity_mah"], out, ocv, sets=trace_sets(entry)) + list(extra)
            log.write("$ %s\n" % " ".join(shlex.quote(a) for a in argv))
            t0 = time.monotonic()
            base = {"name": entry["name"], "chemistry": entry["chemistry"], "ocv_table": use_ocv,
                    "command": argv, "out": out}
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as e:
                results.append(dict(base, error=str(e), **{"pass": False}))
                continue
            base["wall_s"] = round(time.monotonic() - t0, 1)
            if proc.returncode != 0:
                results.append(dict(base, error="exit %d: %s" % (proc.returncode, (proc.stderr or proc.stdout).strip()[-2000:]),
                                    **{"pass": False}))
                log.write(proc.stderr)
                continue
            try:
                out_t, out_soc = read_series(out)
                res = score_trace(entry, out_t, out_soc, truth_t, truth_soc)
                res["rests"], res["rest_pct"], res["ocv_fixes"] = rest_counts(out)
            except (OSError, ValueError) as e:
                results.append(dict(base, error=str(e), **{"pass": False}))
                continue
            res.update(base)
            # bms-sim replay says so when the firmware restarted mid-trace
            res["restarts"] = sum(int(line.split()[3]) for line in proc.stderr.splitlines()
                                  if line.startswith("the firmware restarted "))
            log.write("  %s: rms %s %%, max %s %%, after full %s %%, standby %s %%, rests %s, OCV fixes %s -> %s\n" % (
                res["name"], fmt(res["rms_pct"]), fmt(res["max_pct"]), fmt(res["max_after_full_pct"]),
                fmt(res["max_standby_pct"]), res["rests"], res["ocv_fixes"], "pass" if res["pass"] else "FAIL"))
            results.append(res)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description="Score the firmware's SOC on the bench traces.")
    ap.add_argument("--traces", default="bench/traces")
    ap.add_argument("--out", default="docs/SOC_ACCURACY.md")
    ap.add_argument("--replay-cmd", default="bms-sim", help="the command before `replay` (default bms-sim)")
    ap.add_argument("--results", default="build/bench-soc")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--no-ocv-table", action="store_true", help="only runs without --ocv-table")
    g.add_argument("--only-ocv-table", action="store_true", help="only runs with --ocv-table")
    ap.add_argument("--only", nargs="*", help="trace names")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per replay")
    ap.add_argument("--replay-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for every replay (a what-if: --replay-arg=--add-current-ma=-30)")
    args = ap.parse_args(argv)
    modes = [False] if args.no_ocv_table else [True] if args.only_ocv_table else [False, True]
    results = run_all(args.traces, args.results, args.replay_cmd, modes, args.only, args.timeout,
                      extra=args.replay_arg)
    command = "python -m bench.score " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    date = datetime.date.today().isoformat()
    text = markdown(results, command, date, args.replay_cmd)
    try:
        with open(args.out) as f:
            old = f.read()
    except OSError:
        old = ""
    if HAND_MARK in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(HAND_MARK):]
    d = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(d, exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    summary = {"date": date, "command": command, "replay_cmd": args.replay_cmd,
               "targets": TARGETS, "results": results,
               "all_pass": bool(results) and all(r.get("pass") for r in results)}
    with open(os.path.join(args.results, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    sys.stderr.write("wrote %s and %s\n" % (args.out, os.path.join(args.results, "summary.json")))
    return 0 if summary["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
