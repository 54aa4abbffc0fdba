"""`bms-sim replay`: a recorded (or modelled) trace played through the
simulated AFE into the firmware under MicroPython, as fast as it runs.

    bms-sim replay TRACE.csv --chemistry lfp|nmc --capacity-mah N
                   [--ocv-table OCV.csv] --out OUT.csv [--record-every-s 10]

TRACE.csv: `t_s,current_ma,temp_c,cell1_mv,...,cellN_mv`, one row per second
or slower, current positive = charging. The simulated bq769x0 presents the
cell voltages through its registers (quantised by its own gain and
offset), integrates the current into its coulomb counter every 250 ms, and
converts the temperature through its thermistor inputs; the firmware runs
its real control loop. OUT.csv gets, every --record-every-s simulated
seconds, what the firmware reports in its Modbus registers then (from its
first estimate on, a fraction of a second after it boots).
"""
import bisect
import csv
import os
import shutil
import sys
import tempfile
import time

from bms import params as P
from bms import regmap as M
from bms.bq769x0 import CC_PERIOD_MS, model_groups
from bms.crc import crc16
from bms_sim.chip import SimBq769x0
from bms_sim.link import DEFAULT_HEAP, SimError, SimServer


class TraceError(SimError):
    pass


def _open_csv(path, what):
    """(file, csv reader past the header, stripped header), or a TraceError."""
    try:
        f = open(path, newline="")
    except OSError as e:
        raise TraceError("cannot read %s %s: %s" % (what, path, e.strerror))
    rows = csv.reader(f)
    return f, rows, [h.strip() for h in next(rows, [])]


def read_trace(path):
    """(times_ms, currents_ma, temps_c, cells_mv rows) from TRACE.csv, checked."""
    f, rows, header = _open_csv(path, "the trace")
    with f:
        n = len(header) - 3
        want = ["t_s", "current_ma", "temp_c"] + ["cell%d_mv" % (i + 1) for i in range(n)]
        if header != want or not 3 <= n <= 15:
            raise TraceError("%s: the header must be t_s,current_ma,temp_c,cell1_mv,...,cellN_mv "
                             "with 3 to 15 cells; it is %s" % (path, ",".join(header)))
        times, currents, temps, cells = [], [], [], []
        for k, row in enumerate(rows, 2):
            if not row:
                continue
            try:
                t = float(row[0])
                vals = [float(x) for x in row[1:]]
            except (ValueError, IndexError):
                raise TraceError("%s line %d: not numbers: %s" % (path, k, ",".join(row)))
            if len(vals) != n + 2:
                raise TraceError("%s line %d: %d columns, the header has %d" % (path, k, len(row), n + 3))
            if times and t * 1000 <= times[-1]:
                raise TraceError("%s line %d: time %s does not increase" % (path, k, row[0]))
            times.append(int(round(t * 1000)))
            currents.append(vals[0])
            temps.append(vals[1])
            cells.append(vals[2:])
    if len(times) < 2:
        raise TraceError("%s: a trace needs at least two rows" % path)
    return times, currents, temps, cells


def read_ocv_table(path):
    """The user's rested OCV curve resampled to the firmware's 21 points
    (SOC 0, 5, ..., 100 %). Rows in any order; must rise with SOC and
    cover 0 and 100 %."""
    pts = []
    f, rows, header = _open_csv(path, "the OCV table")
    with f:
        if header != ["soc_pct", "ocv_mv"]:
            raise TraceError("%s: the header must be soc_pct,ocv_mv" % path)
        for k, row in enumerate(rows, 2):
            if not row:
                continue
            try:
                pts.append((float(row[0]), float(row[1])))
            except (ValueError, IndexError):
                raise TraceError("%s line %d: not two numbers" % (path, k))
    pts.sort()
    if not pts or pts[0][0] > 0 or pts[-1][0] < 100:
        raise TraceError("%s: the table must cover 0 %% and 100 %% SOC" % path)
    for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
        if s1 == s0 or v1 <= v0:
            raise TraceError("%s: the OCV must rise with SOC (at %g %% and %g %%)" % (path, s0, s1))
    socs = [p[0] for p in pts]
    out = []
    for k in range(P.OCV_POINTS):
        s = 5.0 * k
        i = min(max(bisect.bisect_left(socs, s), 1), len(pts) - 1)
        (s0, v0), (s1, v1) = pts[i - 1], pts[i]
        out.append(int(round(v0 + (v1 - v0) * (s - s0) / (s1 - s0))))
    for a, b in zip(out, out[1:]):
        if b <= a:
            raise TraceError("%s: resampled to 5 %% steps the OCV does not rise everywhere" % path)
    return out


class TracePack:
    """What the simulated chip reads from a pack, taken from the trace."""

    def __init__(self, times, temps, cells):
        self.times = times
        self._temps = temps
        self._cells = cells
        self.cells = [None] * len(cells[0])
        self.temperatures_c = [temps[0]] * 3
        self.i = 0

    def seek(self, t_ms):
        i = self.i
        while i + 1 < len(self.times) and self.times[i + 1] <= t_ms:
            i += 1
        self.i = i
        self.temperatures_c[0] = self.temperatures_c[1] = self.temperatures_c[2] = self._temps[i]

    def cell_mv(self, k):
        return self._cells[self.i][k]

    def cell_mvs(self):
        return list(self._cells[self.i])

    def pack_mv(self):
        return sum(self._cells[self.i])


class ReplayWorld:
    """The World's interface (chip, clock, advance) driven by a trace: the
    recorded current flows whatever the FETs do, because it was recorded."""

    def __init__(self, times, currents, temps, cells, shunt_uohm=1000, seed=0):
        self.pack = TracePack(times, temps, cells)
        self.times = times
        self.currents = currents
        n = len(cells[0])
        self.chip = SimBq769x0(self.pack, groups=model_groups(n), shunt_uohm=shunt_uohm, seed=seed)
        self.now_ms = times[0]
        self.end_ms = times[-1]

    @property
    def current_ma(self):
        return self.currents[self.pack.i]

    def fets(self):
        return self.chip.chg_on, self.chip.dsg_on

    def ms_to_next_window(self):
        return CC_PERIOD_MS - self.now_ms % CC_PERIOD_MS

    def advance(self, ms):
        while ms > 0:
            piece = CC_PERIOD_MS - self.now_ms % CC_PERIOD_MS
            nxt = self.pack.i + 1
            if nxt < len(self.times):
                piece = min(piece, self.times[nxt] - self.now_ms)  # a row's current starts on time
            piece = max(1, min(piece, ms))
            self.pack.seek(self.now_ms)
            self.chip.tick(piece, self.currents[self.pack.i])
            self.now_ms += piece
            ms -= piece
        self.pack.seek(self.now_ms)


_FIRST = M.IR_SOC_DPCT
_COUNT = M.IR_FULL_CAPACITY_MAH + 2 - M.IR_SOC_DPCT


def _request():
    body = bytes([1, 4, _FIRST >> 8, _FIRST & 0xFF, 0, _COUNT])
    c = crc16(body, 0, len(body))
    return body + bytes((c & 0xFF, c >> 8))


class Recorder:
    """Asks the firmware for its SOC registers every period of simulated time
    and writes what it answers, at that simulated time."""

    HEADER = ["t_s", "soc_pct", "remaining_mah", "full_capacity_mah", "soh_pct", "tte_min", "ttf_min"]

    def __init__(self, out, every_ms, t0_ms):
        self.out = out
        self.writer = csv.writer(out)
        self.writer.writerow(self.HEADER)
        self.every_ms = every_ms
        self.next_ms = t0_ms
        self.asked_at = None
        self.rx = bytearray()
        self.server = None
        self.rows = 0

    def on_advance(self, world):
        if self.asked_at is None and world.now_ms >= self.next_ms:
            self.asked_at = world.now_ms
            self.next_ms += self.every_ms
            self.server.send(_request())

    def on_transmit(self, data):
        self.rx += data
        n = 5 + 2 * _COUNT
        if self.asked_at is None or len(self.rx) < n:
            return
        frame, self.rx = bytes(self.rx[:n]), self.rx[n:]
        if frame[:3] != bytes([1, 4, 2 * _COUNT]) or crc16(frame, 0, n - 2) != frame[n - 2] | (frame[n - 1] << 8):
            raise SimError("the firmware answered the SOC read with %s" % frame.hex())
        w = [(frame[3 + 2 * k] << 8) | frame[4 + 2 * k] for k in range(_COUNT)]
        reg = lambda a: w[a - _FIRST]
        u32 = lambda a: (reg(a) << 16) | reg(a + 1)
        self.asked_at, asked = None, self.asked_at
        if u32(M.IR_FULL_CAPACITY_MAH) == 0:
            return  # no estimate yet (the first second after boot): nothing to report
        self.writer.writerow([
            "%g" % (asked / 1000.0), "%.1f" % (reg(M.IR_SOC_DPCT) / 10.0),
            u32(M.IR_REMAINING_MAH), u32(M.IR_FULL_CAPACITY_MAH), "%.1f" % (reg(M.IR_SOH_DPCT) / 10.0),
            reg(M.IR_TTE_MIN), reg(M.IR_TTF_MIN)])
        self.rows += 1


def replay(trace, chemistry, capacity_mah, out_path, ocv_table=None, record_every_s=10.0,
           micropython=None, heap=DEFAULT_HEAP, log=sys.stderr, target=None):
    from bms_sim.cli import provision

    times, currents, temps, cells = read_trace(trace)
    n = len(cells[0])
    # no LED bar: its animation frames would only slow the replay of a trace
    # that charges or discharges all the time; the SOC is what is replayed
    extra = {"led_count": 0}
    if ocv_table:
        for k, mv in enumerate(read_ocv_table(ocv_table)):
            extra["ocv_%d_mv" % (5 * k)] = mv
    state = tempfile.mkdtemp(prefix="bms-replay-")
    try:
        provision(state, n, chemistry, capacity_mah, 1000, extra=extra)
        world = ReplayWorld(times, currents, temps, cells)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w", newline="") as out:
            rec = Recorder(out, int(record_every_s * 1000), times[0])
            server = SimServer(world, state, speed=None, heap=heap, micropython=micropython, target=target,
                               on_advance=rec.on_advance)
            server.on_transmit = rec.on_transmit
            rec.server = server
            t0 = time.monotonic()
            with server:
                server.wait_sim_ms(world.end_ms, timeout=max(600.0, (world.end_ms - times[0]) / 1000.0))
                wall = time.monotonic() - t0
                if "Traceback" in server.log_tail():
                    raise SimError("the firmware failed during the replay:\n" + server.log_tail())
        log.write("replayed %.1f h of %d cells in %.1f s; %d rows in %s\n"
                  % ((world.end_ms - times[0]) / 3.6e6, n, wall, rec.rows, out_path))
        return rec.rows
    finally:
        shutil.rmtree(state, ignore_errors=True)
