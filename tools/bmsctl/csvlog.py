"""`bmsctl log`: every live value to CSV in engineering units, one row per
sample on a fixed time grid (bmsctl.plot reads the same columns).
"""
import csv
import datetime
import os
import time

from bms import regmap as M
from bms.spec import regtable as RT
from bmsctl.client import CtlError, live_regs


def log_columns():
    """[(header, register name, array index or None)]: every live value."""
    cols = []
    for row in live_regs():
        if row[3] > 1:
            cols += [("%s_%d" % (row[1], k + 1), row[1], k) for k in range(row[3])]
        else:
            cols.append((row[1], row[1], None))
    return cols


_ROW_BY_NAME = {r[1]: r for r in RT.INPUT_REGS}


def log_cell(name, raw):
    """A raw input-register value as the CSV shows it: engineering units,
    empty for 'no value' (a missing sensor, no estimate)."""
    row = _ROW_BY_NAME[name]
    if row[5] == "degC" and raw == M.TEMP_INVALID:
        return ""
    if name in ("tte_min", "ttf_min") and raw == 0xFFFF:
        return ""
    exp = row[4]
    if not exp:
        return str(raw)
    return "%.*f" % (-exp, raw * 10.0 ** exp)


def record(bms, path, every, duration=None, count=None, append=False, started=None, missed_sample=None):
    """Sample bms.read_live() every `every` seconds into the CSV at `path`
    until `duration` seconds, `count` samples or Ctrl-C. started() runs
    once the file is open, missed_sample(stamp, error) for each failed
    read (the row is left out). Returns (rows written, samples missed)."""
    cols = log_columns()
    fresh = not (append and os.path.exists(path) and os.path.getsize(path) > 0)
    try:
        f = open(path, "a" if append else "w", newline="")
    except OSError as e:
        raise CtlError("cannot write %s: %s" % (path, e.strerror or e))
    rows = missed = samples = 0
    t0 = time.monotonic()
    with f:
        w = csv.writer(f)
        if fresh:
            w.writerow(["time", "elapsed_s"] + [c[0] for c in cols])
            f.flush()
        if started:
            started()
        slot = 0
        try:
            while count is None or samples < count:
                due = t0 + slot * every
                if duration is not None and due - t0 >= duration - 1e-9 and samples:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                stamp = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
                elapsed = time.monotonic() - t0
                samples += 1
                try:
                    raw = bms.read_live()
                except CtlError as e:
                    missed += 1
                    if missed_sample:
                        missed_sample(stamp, e)
                else:
                    vals = [log_cell(n, raw[n][k] if k is not None else raw[n]) for _, n, k in cols]
                    w.writerow([stamp, "%.3f" % elapsed] + vals)
                    f.flush()
                    rows += 1
                # the next slot on the grid still ahead (a slow reply skips slots)
                slot = max(slot + 1, int((time.monotonic() - t0) / every) + 1)
        except KeyboardInterrupt:
            pass
    return rows, missed
