"""tools/bench/score.py: the pure scoring functions, and the whole run against
a fake replay command that writes OUT.csv from the truth plus a known error.
No PyBaMM, no firmware: fast."""
import csv
import json
import math
import os
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from bench import score  # noqa: E402


def test_interp_inside_and_held_outside():
    ts, vs = [0.0, 10.0, 20.0], [50.0, 40.0, 40.0]
    assert score.interp(ts, vs, 5.0) == pytest.approx(45.0)
    assert score.interp(ts, vs, 10.0) == pytest.approx(40.0)
    assert score.interp(ts, vs, -3.0) == 50.0
    assert score.interp(ts, vs, 99.0) == 40.0


def test_rms_and_max_abs():
    assert score.rms([3.0, -4.0]) == pytest.approx(math.sqrt(12.5))
    assert score.max_abs([1.0, -4.5, 2.0]) == 4.5
    assert score.rms([]) is None and score.max_abs([]) is None


def test_errors_at_only_within_truth_span():
    errs = score.errors_at([0, 5, 10, 30], [51, 46, 41, 0], [0, 10, 20], [50, 40, 30])
    assert [t for t, _ in errs] == [0, 5, 10]
    assert [e for _, e in errs] == pytest.approx([1.0, 1.0, 1.0])


def test_after_first_full():
    errs = [(0, 9.0), (100, 2.0), (200, -3.0)]
    assert score.after(errs, 100) == [2.0, -3.0]
    assert score.after(errs, None) == []


def _truth(n=100, step=10.0):
    ts = [k * step for k in range(n)]
    return ts, [80.0 - 0.5 * k for k in range(n)]


def test_score_nmc_pass_and_fail():
    tt, ts = _truth()
    entry = {"name": "x", "chemistry": "nmc", "first_full_charge_s": 500.0}
    ok = score.score_trace(entry, tt, [s + 1.0 for s in ts], tt, ts)
    assert ok["rms_pct"] == pytest.approx(1.0) and ok["max_pct"] == pytest.approx(1.0)
    assert ok["pass"]
    bad = score.score_trace(entry, tt, [s + (4.0 if t < 100 else 0.0) for t, s in zip(tt, ts)], tt, ts)
    assert bad["max_pct"] == pytest.approx(4.0)
    assert not bad["checks"]["max_pct"]["pass"] and bad["checks"]["rms_pct"]["pass"]
    assert not bad["pass"]


def test_score_lfp_counts_only_after_full_or_whole_standby():
    tt, ts = _truth()
    # 20 % wrong before the first full charge at 300 s, 2 % after
    rep = [s + (20.0 if t < 300 else 2.0) for t, s in zip(tt, ts)]
    r = score.score_trace({"name": "l", "chemistry": "lfp", "first_full_charge_s": 300.0}, tt, rep, tt, ts)
    assert r["max_after_full_pct"] == pytest.approx(2.0) and r["max_pct"] == pytest.approx(20.0)
    assert r["pass"] and r["max_standby_pct"] is None
    s = score.score_trace({"name": "s", "chemistry": "lfp", "first_full_charge_s": None}, tt, rep, tt, ts)
    assert s["max_standby_pct"] == pytest.approx(20.0) and not s["pass"]


def test_replay_argv_is_the_interface():
    argv = score.replay_argv("bms-sim", "T.csv", "lfp", 46000, "O.csv", "OCV.csv")
    assert argv == ["bms-sim", "replay", "T.csv", "--chemistry", "lfp", "--capacity-mah", "46000",
                    "--ocv-table", "OCV.csv", "--out", "O.csv", "--record-every-s", "10"]
    assert "--ocv-table" not in score.replay_argv("bms-sim", "T.csv", "nmc", 5000, "O.csv")


FAKE = textwrap.dedent('''\
    """Fake `bms-sim replay`: OUT.csv = truth (next to the trace) + a known error."""
    import argparse, csv, sys
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("trace")
    ap.add_argument("--chemistry", required=True)
    ap.add_argument("--capacity-mah", type=int, required=True)
    ap.add_argument("--ocv-table")
    ap.add_argument("--out", required=True)
    ap.add_argument("--record-every-s", type=float, default=10)
    ap.add_argument("--add-current-ma", type=float, default=0.0)  # the what-if: 1 % less error per -10 mA
    a = ap.parse_args()
    assert a.cmd == "replay"
    with open(a.trace) as f:
        assert f.readline().startswith("t_s,current_ma,temp_c,cell1_mv")
    err = (0.5 if a.ocv_table else 2.0) + a.add_current_ma / 10.0
    rows = list(csv.DictReader(open(a.trace[:-4] + ".truth.csv")))
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "soc_pct", "remaining_mah"])
        t = 0.0
        end = float(rows[-1]["t_s"])
        while t <= end:
            w.writerow([t, "%.1f" % (50.0 + err), 0])
            t += a.record_every_s
''')


def _write_bench(d):
    os.makedirs(d)
    traces = []
    for name, chem, full in (("n1", "nmc", 100.0), ("l1", "lfp", None)):
        with open(os.path.join(d, name + ".csv"), "w") as f:
            f.write("t_s,current_ma,temp_c,cell1_mv,cell2_mv,cell3_mv\n0,0,25.0,3300,3300,3300\n"
                    "600,0,25.0,3300,3300,3300\n")
        with open(os.path.join(d, name + ".truth.csv"), "w") as f:
            f.write("t_s,soc_pct\n0,50\n600,50\n")
        with open(os.path.join(d, name + ".ocv.csv"), "w") as f:
            f.write("soc_pct,ocv_mv\n0,2500\n100,4200\n")
        traces.append({"name": name, "trace": name + ".csv", "truth": name + ".truth.csv",
                       "ocv_table": name + ".ocv.csv", "chemistry": chem, "capacity_mah": 5000,
                       "first_full_charge_s": full})
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"traces": traces}, f)


def _fake_bench(tmp_path):
    """(traces dir, the fake replay command) in tmp_path."""
    traces = str(tmp_path / "traces")
    _write_bench(traces)
    fake = tmp_path / "fake_replay.py"
    fake.write_text(FAKE)
    return traces, "%s %s" % (sys.executable, fake)


def test_score_end_to_end_with_a_fake_replay(tmp_path):
    traces, cmd = _fake_bench(tmp_path)
    results = tmp_path / "results"
    md = tmp_path / "docs" / "SOC.md"
    rc = score.main(["--traces", traces, "--out", str(md), "--results", str(results), "--replay-cmd", cmd])
    summary = json.loads((results / "summary.json").read_text())
    by = {(r["name"], r["ocv_table"]): r for r in summary["results"]}
    assert set(by) == {("n1", False), ("n1", True), ("l1", False), ("l1", True)}
    assert by[("n1", False)]["max_pct"] == pytest.approx(2.0)
    assert by[("n1", False)]["rms_pct"] == pytest.approx(2.0)
    assert not by[("n1", False)]["pass"]  # RMS 2 % > 1.5 %
    assert by[("n1", True)]["pass"]
    assert by[("n1", True)]["max_after_full_pct"] == pytest.approx(0.5)
    assert by[("l1", False)]["max_standby_pct"] == pytest.approx(2.0) and by[("l1", False)]["pass"]
    assert rc == 1 and summary["all_pass"] is False
    text = md.read_text()
    assert "python -m bench.score" in text and "NMC: max error <= 3 %" in text
    assert text.count("| n1 |") == 2 and "FAIL" in text
    with open(results / "n1.ocv.out.csv") as f:
        assert next(csv.reader(f))[:2] == ["t_s", "soc_pct"]


def test_score_reports_a_failing_replay(tmp_path):
    traces = str(tmp_path / "traces")
    _write_bench(traces)
    cmd = "%s -c \"import sys; sys.exit('no replay here')\"" % sys.executable
    rc = score.main(["--traces", traces, "--out", str(tmp_path / "o.md"), "--results", str(tmp_path / "r"),
                     "--replay-cmd", cmd, "--no-ocv-table"])
    assert rc == 1
    text = (tmp_path / "o.md").read_text()
    assert "ERROR" in text and "no replay here" in text


def test_replay_arg_reaches_every_replay(tmp_path):
    """--replay-arg: a what-if run (bms-sim replay --add-current-ma) scored
    as the bench is: the fake's error falls by the offset it is given."""
    traces, cmd = _fake_bench(tmp_path)
    results = tmp_path / "results"
    score.main(["--traces", traces, "--out", str(tmp_path / "o.md"), "--results", str(results),
                "--replay-cmd", cmd, "--no-ocv-table",
                "--replay-arg=--add-current-ma=-15"])
    summary = json.loads((results / "summary.json").read_text())
    assert [r["rms_pct"] for r in summary["results"]] == [pytest.approx(0.5)] * 2
    assert all(r["command"][-1] == "--add-current-ma=-15" for r in summary["results"])


def test_a_run_keeps_the_hand_written_part_and_rewrites_the_rest(tmp_path):
    traces, cmd = _fake_bench(tmp_path)
    md = tmp_path / "SOC.md"
    md.write_text("an old generated table\n\n" + score.HAND_MARK + "\n\n## Before and after\n\nby hand\n")
    score.main(["--traces", traces, "--out", str(md), "--results", str(tmp_path / "r"),
                "--replay-cmd", cmd, "--no-ocv-table"])
    text = md.read_text()
    assert "an old generated table" not in text and "| n1 |" in text
    assert text.endswith(score.HAND_MARK + "\n\n## Before and after\n\nby hand\n")
    assert text.index("| n1 |") < text.index(score.HAND_MARK)

