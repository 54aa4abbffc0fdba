"""`bms-sim replay`: the exact interface outside validation relies on."""
import csv
import os
import resource
import subprocess
import sys
import time

import pytest

BIN = os.path.dirname(sys.executable)


def write_trace(path, seconds, current_ma, cell_mv, step_s=1, cells=4, temp_c=25.0):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "current_ma", "temp_c"] + ["cell%d_mv" % (i + 1) for i in range(cells)])
        for t in range(0, seconds, step_s):
            mv = cell_mv(t) if callable(cell_mv) else cell_mv
            cur = current_ma(t) if callable(current_ma) else current_ma
            w.writerow([t, cur, temp_c] + [mv + i for i in range(cells)])


def replay(*args):
    return subprocess.run([os.path.join(BIN, "bms-sim"), "replay"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=300)


def read_out(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return rows


@pytest.mark.slow
def test_counts_the_charge_of_a_trace(tmp_path, afe):
    trace = tmp_path / "t.csv"
    # 30 min at -4 A on a 10 Ah LFP pack: 20 % out (4 cells; 16 on the bq76952)
    write_trace(trace, 1800, -4000, lambda t: 3290 - t // 300, cells=afe.cells(4))
    out = tmp_path / "out.csv"
    p = replay(trace, "--chemistry", "lfp", "--capacity-mah", 10000, "--out", out, "--record-every-s", 30,
               "--afe", afe.name)
    assert p.returncode == 0, p.stderr
    rows = read_out(out)
    assert list(rows[0])[:2] == ["t_s", "soc_pct"]
    assert 55 <= len(rows) <= 61
    first, last = float(rows[0]["soc_pct"]), float(rows[-1]["soc_pct"])
    assert 19.0 <= first - last <= 21.0, (first, last)
    assert all(0.0 <= float(r["soc_pct"]) <= 100.0 for r in rows)
    assert int(rows[-1]["full_capacity_mah"]) == 10000


def test_add_current_ma_shifts_every_rows_current(tmp_path):
    """--add-current-ma (a what-if on a recorded sensor offset): a trace at
    -2 A replayed with +2000 mA added counts nothing; with -2000 mA added it
    counts twice the charge."""
    trace = tmp_path / "t.csv"
    write_trace(trace, 900, -2000, 3290)  # 15 min at -2 A on 10 Ah: 5 %
    drops = []
    for add in (2000, 0, -2000):
        out = tmp_path / ("o%d.csv" % add)
        p = replay(trace, "--chemistry", "lfp", "--capacity-mah", 10000, "--out", out, "--record-every-s", 30,
                   "--add-current-ma", add)
        assert p.returncode == 0, p.stderr
        rows = read_out(out)
        drops.append(float(rows[0]["soc_pct"]) - float(rows[-1]["soc_pct"]))
    assert abs(drops[0]) <= 0.2 and 4.5 <= drops[1] <= 5.5 and 9.0 <= drops[2] <= 11.0, drops


def test_a_user_ocv_table_sets_the_boot_estimate(tmp_path):
    trace = tmp_path / "t.csv"
    write_trace(trace, 120, 0, 3300)  # at rest, 3.300 V (+0..3 mV per cell)
    ocv = tmp_path / "ocv.csv"
    with open(ocv, "w") as f:
        f.write("soc_pct,ocv_mv\n")
        # any order; a straight line 3000 mV at 0 % .. 3600 mV at 100 %: 3.3015 V is 50.25 %
        for s in (100, 0, 25, 75, 50):
            f.write("%d,%d\n" % (s, 3000 + 6 * s))
    out = tmp_path / "out.csv"
    p = replay(trace, "--chemistry", "lfp", "--capacity-mah", 5000, "--ocv-table", ocv, "--out", out)
    assert p.returncode == 0, p.stderr
    rows = read_out(out)
    assert abs(float(rows[0]["soc_pct"]) - 50.2) <= 1.0, rows[0]
    # the chemistry's own table puts the same voltage elsewhere on LFP's plateau
    out2 = tmp_path / "out2.csv"
    assert replay(trace, "--chemistry", "lfp", "--capacity-mah", 5000, "--out", out2).returncode == 0
    assert abs(float(read_out(out2)[0]["soc_pct"]) - 50.2) > 5.0


@pytest.mark.parametrize("content,msg", [
    ("t,current_ma,temp_c,cell1_mv\n0,0,25,3300\n", "header must be t_s,current_ma,temp_c"),
    ("t_s,current_ma,temp_c,cell1_mv,cell2_mv,cell3_mv\n0,0,25,3300,3300,3300\n0,0,25,3300,3300,3300\n", "does not increase"),
    ("t_s,current_ma,temp_c,cell1_mv,cell2_mv,cell3_mv\n0,0,25,3300,3300,x\n", "not numbers"),
])
def test_bad_traces_name_the_problem(tmp_path, content, msg):
    trace = tmp_path / "t.csv"
    trace.write_text(content)
    p = replay(trace, "--chemistry", "lfp", "--capacity-mah", 1000, "--out", tmp_path / "o.csv")
    assert p.returncode == 2 and msg in p.stderr, p.stderr


def test_an_ocv_table_that_does_not_rise_is_refused(tmp_path):
    trace = tmp_path / "t.csv"
    write_trace(trace, 10, 0, 3300)
    ocv = tmp_path / "ocv.csv"
    ocv.write_text("soc_pct,ocv_mv\n0,3000\n50,3400\n60,3300\n100,3600\n")
    p = replay(trace, "--chemistry", "lfp", "--capacity-mah", 1000, "--ocv-table", ocv, "--out", tmp_path / "o.csv")
    assert p.returncode == 2 and "must rise with SOC" in p.stderr


@pytest.mark.slow
def test_an_hour_of_four_cells_replays_in_under_twenty_cpu_seconds(tmp_path):
    # CPU time (the command and the MicroPython it runs), not wall time: the
    # suite shares the machine's cores with other tests
    trace = tmp_path / "one.csv"
    write_trace(trace, 3600, lambda t: -3000 if (t // 600) % 2 else 1500, lambda t: 3280 + (t % 600) // 60)
    out = tmp_path / "out.csv"
    t0 = time.monotonic()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = replay(trace, "--chemistry", "lfp", "--capacity-mah", 20000, "--out", out)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    assert p.returncode == 0, p.stderr
    print("1 h of 4 cells replayed in %.1f s of CPU, %.1f s of wall time" % (cpu, time.monotonic() - t0))
    assert cpu < 20
    assert len(read_out(out)) >= 360 - 2


def _profile(path, **changes):
    """A `bmsctl config export` file for a 4-cell LFP pack of 10 Ah, with changes (raw values)."""
    import json

    from bms import params as P
    from bms_sim.cli import provision
    from bmsctl import config as CF

    prm = provision(str(path.parent / "prov"), 4, "lfp", 10000, 1000)
    values = list(prm.values)
    for name, raw in changes.items():
        values[CF.INDEX[name]] = raw
    assert values[P.P_CAPACITY_MAH] > 0
    path.write_text(json.dumps(CF.export_profile(values)))
    return path


def test_replay_runs_with_the_users_settings_and_reports_cut_currents(tmp_path):
    """--params (an export) and --set: the firmware runs with them. The
    trace discharges on below the cells' under-voltage: the firmware cuts
    DSG there, which the replay reports as a FET conflict (summary and the
    fets column), and names the interval."""
    trace = tmp_path / "t.csv"
    # 8 min at -2 A; from 4 min on the cells read 2.55 V: under the 2.6 V
    # set below, above the chemistry's 2.5 V
    write_trace(trace, 480, -2000, lambda t: 3250 if t < 240 else 2550)
    prof = _profile(tmp_path / "pack.json", capacity_mah=8000)
    out = tmp_path / "out.csv"
    p = replay(trace, "--params", prof, "--set", "cell_uv=2.6V",
               "--out", out, "--record-every-s", 20)
    assert p.returncode == 0, p.stderr
    rows = read_out(out)
    assert int(rows[-1]["full_capacity_mah"]) == 8000, "the profile's capacity"
    assert rows[0]["fets"] == "CD"
    flagged = [r for r in rows if r["fets"].endswith("!")]
    assert flagged and all(float(r["t_s"]) > 240 for r in flagged), [(r["t_s"], r["fets"]) for r in rows]
    assert flagged[-1]["fets"] == "C-!", "DSG off (the set's 2.6 V under-voltage), the discharge went on"
    assert "FET conflicts: 1 interval," in p.stderr, p.stderr
    assert "DSG off from t=24" in p.stderr and "while discharge flowed (up to 2000 mA" in p.stderr, p.stderr


def test_a_replay_within_the_limits_reports_no_conflict(tmp_path):
    trace = tmp_path / "t.csv"
    write_trace(trace, 120, -2000, 3250)
    out = tmp_path / "out.csv"
    p = replay(trace, "--chemistry", "lfp", "--capacity-mah", 10000, "--set", "cc_cal_every_ms=0",
               "--out", out, "--record-every-s", 20)
    assert p.returncode == 0, p.stderr
    assert "FET conflicts: none" in p.stderr
    assert all(r["fets"] == "CD" for r in read_out(out))


@pytest.mark.parametrize("args,msg", [
    (("--chemistry", "lfp"), "give --chemistry and --capacity-mah, or --params FILE"),
    (("--chemistry", "lfp", "--capacity-mah", 1000, "--set", "cell_ov_volts=3.6"), "cell_ov_volts"),
    (("--chemistry", "lfp", "--capacity-mah", 1000, "--set", "cell_ov=9V"), "--set: cell_ov_mv=9000 (9.000 V) is outside 1.500..5.000 V"),
    (("--chemistry", "lfp", "--capacity-mah", 1000, "--set", "cell_ov=3.6V", "--set", "cell_ov_release=3.7V"),
     "the firmware would refuse this set"),
    (("--params", "PROFILE5",), "is for 5 cells but the trace has 4"),
    (("--params", "MISSING",), "cannot read --params"),
])
def test_bad_settings_name_the_problem(tmp_path, args, msg):
    trace = tmp_path / "t.csv"
    write_trace(trace, 10, 0, 3300)
    prof5 = tmp_path / "p5.json"
    _profile(prof5, cell_channels=0x1F)
    args = [{"PROFILE5": prof5, "MISSING": tmp_path / "nope.json"}.get(a, a) for a in args]
    p = replay(trace, *args, "--out", tmp_path / "o.csv")
    assert p.returncode != 0 and msg in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o.csv").exists(), "a refused set writes nothing"


@pytest.mark.parametrize("current_ma, raw", [(0, 0), (84, 84), (-16880, -16880)])
def test_the_chip_counts_the_traces_current_with_no_offset_of_its_own(current_ma, raw):
    """A trace's current is what the BMS measured, its sensor's offset in it:
    the replay's bq769x0 only quantises it (10 mOhm: 8.44 mA per LSB x 10)."""
    from bms.afe.bq769x0.regs import CC_HI, CTRL2_CC_EN, SYS_CTRL2
    from bms_sim.replay import ReplayWorld

    times = [0, 3600000]
    world = ReplayWorld(times, [current_ma, current_ma], [25.0, 25.0], [[3300] * 4] * 2, shunt_uohm=10000)
    world.chip._regs[SYS_CTRL2] |= CTRL2_CC_EN
    world.advance(1000)  # the first window after CC_EN is not counted; the next ones are
    hi, lo = world.chip._regs[CC_HI], world.chip._regs[CC_HI + 1]
    got = (hi << 8) | lo
    got = got - 0x10000 if got & 0x8000 else got
    assert got == round(raw * 10000 / 8440.0)
