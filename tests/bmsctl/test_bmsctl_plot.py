"""bmsctl plot: a `bmsctl log` CSV drawn as a picture; bad input named with its fix."""
import argparse
import csv
import datetime
import io
import json
import os

import pytest

from bms import regmap as M
from bmsctl import cli
from bmsctl import client
from bmsctl import csvlog
from bmsctl import plot as PL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def raw_sample(t_s, cells=4, hours=3.0):
    """The raw input registers of a pack charging at 20 A from 20 % to 95 %
    over `hours`, with temperature sensor 2 missing."""
    raw = {r[1]: ([0] * r[3] if r[3] > 1 else 0) for r in client.live_regs()}
    f = t_s / (hours * 3600.0)
    base = 3200 + int(200 * f)
    mv = [base + 5 * k for k in range(cells)]
    raw.update(cell_count=cells, cell_mv=mv + [0] * (M.MAX_CELLS - cells), pack_mv=sum(mv),
               current_ma=20000, cell_min_mv=min(mv), cell_max_mv=max(mv), cell_spread_mv=max(mv) - min(mv),
               temp_dc=[250 + int(50 * f), M.TEMP_INVALID, 240 + int(30 * f)],
               soc_dpct=200 + int(750 * f), ttf_min=0xFFFF, tte_min=0xFFFF, uptime_s=int(t_s))
    return raw


def write_log(path, times, sample=raw_sample, append=False, t_start=None):
    """A CSV as `bmsctl log` writes it (csvlog.log_columns, csvlog.log_cell)."""
    cols = csvlog.log_columns()
    t_start = t_start or datetime.datetime(2024, 5, 1, 10, 0, tzinfo=datetime.timezone.utc)
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.writer(f)
        if not append:
            w.writerow(["time", "elapsed_s"] + [c[0] for c in cols])
        for t in times:
            raw = sample(t)
            stamp = (t_start + datetime.timedelta(seconds=t)).isoformat(timespec="milliseconds")
            w.writerow([stamp, "%.3f" % t] + [csvlog.log_cell(n, raw[n][k] if k is not None else raw[n])
                                               for _, n, k in cols])
    return str(path)


@pytest.fixture(scope="module")
def charge_log(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("log") / "pack.csv", range(0, 3 * 3600 + 1, 60))


def test_read_log_follows_the_bmsctl_format(charge_log):
    log = PL.read_log(charge_log)
    assert log.rows == 181 and log.cell_count() == 4
    assert [k for k, _ in log.cells()] == [1, 2, 3, 4]
    assert log.column("cell_mv_1")[0] == pytest.approx(3.2) and log.column("cell_mv_5")[0] == 0.0
    assert log.column("temp_dc_1")[0] == pytest.approx(25.0)
    assert set(log.column("temp_dc_2")) == {None}
    assert log.column("current_ma")[0] == pytest.approx(20.0)


def test_plot_draws_the_panels_the_data_has(charge_log, tmp_path):
    from matplotlib import image

    out = tmp_path / "pack.png"
    info = PL.plot(PL.read_log(charge_log), str(out))
    assert list(info.panels) == ["cells", "spread", "soc", "current", "temps"]
    assert info.panels["cells"] == ["cell 1", "cell 2", "cell 3", "cell 4"]  # not 15
    assert info.panels["temps"] == ["T1", "T3"]  # sensor 2 is missing
    assert info.x_unit == "h" and info.hours == pytest.approx(3.0) and info.samples == 181
    with open(out, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    img = image.imread(str(out))
    assert img.shape[0] >= 600 and img.shape[1] >= 800
    assert img[..., :3].var() > 0  # not blank
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_short_log_in_minutes_without_empty_panels(tmp_path):
    def no_sensor(t):
        raw = raw_sample(t)
        raw["temp_dc"] = [M.TEMP_INVALID] * M.MAX_TEMPS
        return raw

    path = write_log(tmp_path / "short.csv", range(0, 20 * 60 + 1, 10), sample=no_sensor)
    info = PL.plot(PL.read_log(path), str(tmp_path / "short.svg"), title="short")
    assert info.x_unit == "min" and "temps" not in info.panels
    assert (tmp_path / "short.svg").read_text().lstrip().startswith("<?xml")


def test_appended_log_runs_on_its_time_stamps(tmp_path):
    path = write_log(tmp_path / "a.csv", range(0, 3601, 600))
    later = datetime.datetime(2024, 5, 1, 13, 0, tzinfo=datetime.timezone.utc)
    write_log(path, range(0, 3601, 600), append=True, t_start=later)  # elapsed_s restarts at 0
    x, starts = PL.read_log(path).timeline()
    assert starts == [7] and x[7] == 3 * 3600 and x[-1] == 4 * 3600


def test_cell_count_change_hides_cells_the_pack_lacked(tmp_path):
    def grows(t):
        return raw_sample(t, cells=3 if t < 300 else 5)

    log = PL.read_log(write_log(tmp_path / "grow.csv", range(0, 601, 60), sample=grows))
    cells = dict(log.cells())
    assert sorted(cells) == [1, 2, 3, 4, 5]
    assert cells[5][0] is None and cells[5][-1] is not None


def _error(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(PL.PlotError) as e:
        PL.read_log(str(path))
    return str(e.value)


def test_bad_logs_name_the_problem_and_the_fix(tmp_path, charge_log):
    assert "no such file" in _error(tmp_path, None, "nope.csv")
    assert "empty" in _error(tmp_path, "")
    msg = _error(tmp_path, "a,b\n1,2\n")
    assert "not a bmsctl log" in msg and "elapsed_s" in msg and "bmsctl log --out" in msg
    assert "cell_mv_1" in _error(tmp_path, "time,elapsed_s,pack_mv\nx,0,13.2\n")
    assert "comma-separated" in _error(tmp_path, "time;elapsed_s;cell_mv_1\n")
    with open(charge_log) as f:
        lines = f.read().splitlines()
    assert "no data rows" in _error(tmp_path, lines[0] + "\n")
    head = lines[0].split(",")
    row = lines[2].split(",")
    row[head.index("cell_mv_2")] = "3.3V"
    msg = _error(tmp_path, "\n".join(lines[:2] + [",".join(row)]) + "\n")
    assert "line 3" in msg and "cell_mv_2" in msg and "3.3V" in msg and "not a number" in msg
    msg = _error(tmp_path, "\n".join(lines[:2] + [lines[2][:40]]) + "\n")
    assert "line 3" in msg and "cut short" in msg


def test_unknown_extension_is_refused(charge_log, tmp_path):
    with pytest.raises(PL.PlotError) as e:
        PL.plot(PL.read_log(charge_log), str(tmp_path / "pack.jpg"))
    assert ".png" in str(e.value) and "'.jpg'" in str(e.value)


def test_failed_plot_keeps_the_old_file(charge_log, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "pack.png"
    out.write_bytes(b"old picture")

    def broken(self, f, **kw):
        f.write(b"half a png")
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        PL.plot(PL.read_log(charge_log), str(out))
    assert out.read_bytes() == b"old picture"
    assert os.listdir(tmp_path) == ["pack.png"]


def _parser():
    """A parser like cli.build_parser's, with its cmd() helper."""
    p = argparse.ArgumentParser(prog="bmsctl")
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name, func, help, pin=False, wait=False):
        s = sub.add_parser(name, help=help, description=help)
        s.add_argument("--json", action="store_true")
        s.set_defaults(func=func)
        return s

    PL.add_command(sub, cmd)
    return p


def test_plot_command_prints_what_it_wrote(charge_log, tmp_path):
    out_png = str(tmp_path / "cmd.png")
    args = _parser().parse_args(["plot", charge_log, "--out", out_png, "--title", "charge"])
    buf = io.StringIO()
    assert args.func(args, buf) == 0
    assert buf.getvalue() == "wrote %s (181 samples, 4 cells, 3.00 h)\n" % out_png
    with open(out_png, "rb") as f:
        assert f.read(8) == PNG_MAGIC

    args = _parser().parse_args(["plot", charge_log, "--out", str(tmp_path / "x.gif"), "--json"])
    with pytest.raises(client.CtlError) as e:
        args.func(args, io.StringIO())
    assert ".png" in str(e.value) and e.value.code == 2
    assert not (tmp_path / "x.gif").exists()


def test_plot_command_json(charge_log, tmp_path):
    args = _parser().parse_args(["plot", charge_log, "--out", str(tmp_path / "j.svg"), "--json"])
    buf = io.StringIO()
    assert args.func(args, buf) == 0
    d = json.loads(buf.getvalue())
    assert d["samples"] == 181 and d["cells"] == 4 and d["hours"] == 3.0 and d["panels"]["cells"] == 4


def test_bmsctl_main_maps_plot_errors(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "p.png")]) == 2
    assert "no such file" in capsys.readouterr().err
