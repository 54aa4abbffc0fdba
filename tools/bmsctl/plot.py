"""bmsctl plot: draw a `bmsctl log` CSV as stacked panels sharing the time axis.

    bmsctl plot pack.csv --out pack.png

Cell voltages, cell spread, SOC, pack current and temperatures; a panel
whose data is all empty is left out. matplotlib is imported only when a plot
is drawn, so `bmsctl` itself starts as fast without it.
"""
import csv
import datetime
import json
import math
import os
import tempfile

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
LEGEND_MAX = 16
# the columns the plot draws; the rest of a log need not be parsed to plot it
_PLOTTED_PREFIXES = ("cell_mv_", "temp_dc_")
_PLOTTED = ("elapsed_s", "cell_count", "cell_spread_mv", "soc_dpct", "current_ma")


class PlotError(ValueError):
    """A problem with the log or the output file; the message says how to fix it."""


class Log:
    """A `bmsctl log` CSV read back: `columns` maps each header to a list of
    floats (None where the CSV had no value); `times` holds the ISO 8601
    stamps as written; `rows` is the number of samples."""

    def __init__(self, path, header, columns, times):
        self.path = path
        self.header = header
        self.columns = columns
        self.times = times
        self.rows = len(times)

    def column(self, name):
        """A column's values, or None when the log has no such column."""
        return self.columns.get(name)

    def cell_count(self):
        """Cells in series: the most the `cell_count` column names (a pack
        reconfigured during the log may have changed it). Without that column,
        the cells that ever read above 0."""
        counts = [int(v) for v in self.columns.get("cell_count") or () if v is not None]
        if counts:
            return max(counts)
        n = 0
        while "cell_mv_%d" % (n + 1) in self.columns:
            n += 1
        return max([k for k in range(1, n + 1) if any(self.columns["cell_mv_%d" % k])] or [0])

    def cells(self):
        """[(cell number, values)] for the cells the pack has: a value past the
        row's `cell_count` is None (the BMS reads 0 there)."""
        counts = self.columns.get("cell_count")
        out = []
        for k in range(1, self.cell_count() + 1):
            vals = self.columns.get("cell_mv_%d" % k)
            if vals is None:
                break
            if counts is not None:
                vals = [v if c is None or k <= c else None for v, c in zip(vals, counts)]
            out.append((k, vals))
        return out

    def timeline(self):
        """(seconds since the first sample per row, row indices where a new
        session starts). `--append` restarts `elapsed_s` at 0: sessions then
        go end to end on their time stamps, or straight after each other when
        the stamps do not parse."""
        el = self.columns["elapsed_s"]
        starts = [i for i in range(1, len(el)) if el[i] < el[i - 1]]
        if not starts:
            return list(el), []
        try:
            ts = [datetime.datetime.fromisoformat(t) for t in self.times]
            return [(t - ts[0]).total_seconds() for t in ts], starts
        except (TypeError, ValueError):
            pass
        x, offset, new = [], 0.0, set(starts)
        for i, e in enumerate(el):
            if i in new:
                offset = x[-1] - e
            x.append(e + offset)
        return x, starts


def _plotted(name):
    return name in _PLOTTED or name.startswith(_PLOTTED_PREFIXES)


def read_log(path, all_columns=True):
    """Read a `bmsctl log` CSV into a Log. With all_columns=False only the
    columns the plot draws are parsed (a long log then needs less memory).
    A PlotError names what is wrong with the file and how to fix it."""
    how = "record one with `bmsctl log --out FILE.csv`"
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise PlotError("%s: no such file: give the CSV that `bmsctl log --out` wrote, or %s" % (path, how))
    except IsADirectoryError:
        raise PlotError("%s is a directory: give the CSV file that `bmsctl log --out` wrote" % path)
    except OSError as e:
        raise PlotError("cannot read %s: %s" % (path, e.strerror or e))
    with f:
        try:
            rd = csv.reader(f)
            header = next(rd, None)
            if not header:
                raise PlotError("%s is empty: %s" % (path, how))
            header = [h.strip() for h in header]
            for need in ("elapsed_s", "cell_mv_1"):
                if need not in header:
                    hint = (" (a spreadsheet seems to have saved it with ';': save it comma-separated)"
                            if ";" in header[0] else "")
                    raise PlotError("%s is not a bmsctl log: it has no `%s` column%s; plot takes the CSV "
                                    "that `bmsctl log --out FILE.csv` writes" % (path, need, hint))
            keep = [(j, h) for j, h in enumerate(header) if h != "time" and (all_columns or _plotted(h))]
            columns = {h: [] for _, h in keep}
            t_at = header.index("time") if "time" in header else None
            times = []
            for row in rd:
                if not row:
                    continue  # a blank line
                line = rd.line_num
                if len(row) != len(header):
                    raise PlotError("%s line %d has %d fields, the header %d: the line is cut short or "
                                    "from another log; delete that line" % (path, line, len(row), len(header)))
                for j, h in keep:
                    text = row[j].strip()
                    if not text:
                        columns[h].append(None)
                        continue
                    try:
                        v = float(text)
                    except ValueError:
                        v = math.nan
                    if not math.isfinite(v):
                        raise PlotError("%s line %d, column %s: %r is not a number; fix or delete that line"
                                        % (path, line, h, text))
                    columns[h].append(v)
                if columns["elapsed_s"][-1] is None:
                    raise PlotError("%s line %d has no elapsed_s: fix or delete that line" % (path, line))
                times.append(row[t_at] if t_at is not None else "")
        except UnicodeDecodeError:
            raise PlotError("%s is not a text CSV: plot takes the CSV that `bmsctl log --out` writes" % path)
        except csv.Error as e:
            raise PlotError("%s line %d is not valid CSV (%s): fix or delete that line" % (path, rd.line_num, e))
    if not times:
        raise PlotError("%s has a header but no data rows: log at least one sample (`bmsctl log --count 1`)"
                        % path)
    return Log(path, header, columns, times)


def output_format(out_path):
    """The matplotlib format for a file name; a PlotError for an unknown extension."""
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in FORMATS:
        raise PlotError("%s: cannot tell the picture format from %r: name it .png (or .svg, .pdf)"
                        % (out_path, ext or "no extension"))
    return FORMATS[ext]


class PlotInfo:
    """What plot() drew: `panels` maps each panel drawn, top to bottom, to its
    line labels."""

    def __init__(self, out, samples, cells, seconds, x_unit, panels):
        self.out = out
        self.samples = samples
        self.cells = cells
        self.seconds = seconds
        self.hours = seconds / 3600.0
        self.x_unit = x_unit
        self.panels = panels

    def as_dict(self):
        return {"file": self.out, "samples": self.samples, "cells": self.cells,
                "hours": round(self.hours, 3), "panels": {k: len(v) for k, v in self.panels.items()}}


def _panels(log):
    """[(key, y label, [(label, values)])] for each panel that has data."""
    def scaled(vals, k):
        return None if vals is None else [None if v is None else v * k for v in vals]

    spec = [
        ("cells", "Cell voltage (V)", [("cell %d" % k, v) for k, v in log.cells()]),
        ("spread", "Cell spread (mV)", [("spread", scaled(log.column("cell_spread_mv"), 1000.0))]),
        ("soc", "SOC (%)", [("SOC", log.column("soc_dpct"))]),
        ("current", "Current (A)\n+ charge, - discharge", [("current", log.column("current_ma"))]),
        ("temps", "Temperature (\u00b0C)",
         [("T%s" % h[len("temp_dc_"):], log.column(h)) for h in log.header if h.startswith("temp_dc_")]),
    ]
    out = []
    for key, ylabel, series in spec:
        series = [(label, v) for label, v in series if v is not None and any(x is not None for x in v)]
        if series:
            out.append((key, ylabel, series))
    return out


def _default_title(log):
    name = os.path.basename(log.path)
    t0, t1 = log.times[0][:16].replace("T", " "), log.times[-1][:16].replace("T", " ")
    if not (t0 and t1):
        return name
    if t1 == t0:
        return "%s: %s" % (name, t0)
    if t1[:10] == t0[:10]:
        t1 = t1[11:]
    return "%s: %s to %s" % (name, t0, t1)


def plot(log, out_path, title=None):
    """Draw the log to out_path (.png, .svg or .pdf) and return a PlotInfo.
    The file is written whole or not at all: a failure leaves an old one as it was."""
    fmt = output_format(out_path)
    try:
        import matplotlib
        import numpy as np
        # a Figure without pyplot renders headless (Agg) and leaves the caller's
        # pyplot backend and figure list alone
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotError("plotting needs matplotlib (%s): run `make setup`, or "
                        "`.venv/bin/pip install -r requirements.txt`" % e)

    panels = _panels(log)
    if not panels:
        raise PlotError("%s has no values to plot: every cell, current, SOC and temperature column is empty"
                        % log.path)
    x_s, starts = log.timeline()
    span = max(x_s) - min(x_s)
    x_unit, div = ("h", 3600.0) if span >= 2 * 3600 else ("min", 60.0)
    x = np.insert(np.array(x_s, dtype=float) / div, starts, np.nan)  # NaN: no line across a session gap

    def y_of(vals):
        return np.insert(np.array([np.nan if v is None else v for v in vals], dtype=float), starts, np.nan)

    marker = "." if log.rows < 30 else None  # a line through few points would hide them (or not show)
    fig = Figure(figsize=(10, max(4.0, 2.0 * len(panels))), dpi=100, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    drawn = {}
    for ax, (key, ylabel, series) in zip(axes, panels):
        if len(series) > 10:
            # the default cycle repeats after 10: cell 11 would look like cell 1
            ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i) for i in range(20)])
        for label, vals in series:
            ax.plot(x, y_of(vals), label=label, linewidth=1.0, marker=marker)
        if key == "current":
            ax.axhline(0.0, color="0.5", linewidth=0.8)
        elif key == "spread":
            ax.set_ylim(bottom=0.0)  # a spread is a size: its zero keeps small ones small
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if key in ("cells", "temps") and len(series) <= LEGEND_MAX:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                      ncol=2 if len(series) > 8 else 1, borderaxespad=0.0, frameon=False)
        drawn[key] = [label for label, _ in series]
    axes[-1].set_xlabel("elapsed (%s)" % x_unit)
    lo = np.nanmin(x)
    axes[-1].set_xlim(*((lo, np.nanmax(x)) if span > 0 else (lo - 1.0, lo + 1.0)))  # one instant: centred
    fig.suptitle(title if title is not None else _default_title(log))

    out_dir = os.path.dirname(os.path.abspath(out_path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(out_path), suffix=".tmp", dir=out_dir)
    except FileNotFoundError:
        raise PlotError("cannot write %s: the directory %s does not exist; create it first" % (out_path, out_dir))
    except OSError as e:
        raise PlotError("cannot write %s: %s" % (out_path, e.strerror or e))
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600: give it a normal file's mode
        os.replace(tmp, out_path)
    except OSError as e:
        raise PlotError("cannot write %s: %s" % (out_path, e.strerror or e))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return PlotInfo(out_path, log.rows, log.cell_count(), span, x_unit, drawn)


# -- the bmsctl subcommand ---------------------------------------------------------

def cmd_plot(args, out):
    from bmsctl.client import CtlError  # here: reading and drawing a log need no BMS link

    try:
        output_format(args.out)  # before reading a long log
        info = plot(read_log(args.log, all_columns=False), args.out, title=args.title)
    except PlotError as e:
        raise CtlError(str(e))
    if args.json:
        out.write(json.dumps(info.as_dict()) + "\n")
    else:
        out.write("wrote %s (%d samples, %d cells, %.2f h)\n" % (info.out, info.samples, info.cells, info.hours))
    return 0


HELP = "draw a `bmsctl log` CSV as a picture: cells, spread, SOC, current, temperatures (needs no port)"


def add_command(sub, cmd):
    """Register `plot` on bmsctl's subparsers through build_parser's cmd()
    helper (it adds --json and the handler)."""
    s = cmd("plot", cmd_plot, HELP)
    s.add_argument("log", metavar="LOG.csv", help="the CSV `bmsctl log --out` wrote")
    s.add_argument("--out", required=True, metavar="FILE.png", help="the picture: .png, .svg or .pdf (replaced whole)")
    s.add_argument("--title", help="the figure title (default: the file name and its time span)")
    return s
