"""`bms-sim replay`: a recorded (or modelled) trace played through the
simulated AFE into the firmware under MicroPython, as fast as it runs.

    bms-sim replay TRACE.csv --chemistry lfp|nmc --capacity-mah N
                   [--ocv-table OCV.csv] --out OUT.csv [--record-every-s 10]
    bms-sim replay TRACE.csv --params pack.json [--set NAME=VALUE ...] --out OUT.csv

TRACE.csv: `t_s,current_ma,temp_c,cell1_mv,...,cellN_mv`, one row per second
or slower, current positive = charging. The simulated bq769x0 presents the
cell voltages through its registers (quantised by its own gain and
offset), integrates the current into its coulomb counter every 250 ms (the
trace's current as measured: no offset of the chip's own on top), and
converts the temperature through its thermistor inputs; the firmware runs
its real control loop. OUT.csv gets, every --record-every-s simulated
seconds, what the firmware reports in its Modbus registers then (from its
first estimate on, a fraction of a second after it boots).

The firmware runs with the chemistry's defaults for the pack, or with the
user's own set: `--params` takes the file `bmsctl config export` writes,
`--set` changes one parameter (as `bmsctl config set` does); the set must
pass the firmware's range and consistency checks.

A trace's current was recorded: it flows whatever the firmware does with
the FETs. Where the firmware had the FET of the current's direction off
(CHG for a charge, DSG for a discharge) it would have cut that current on a
real pack, so the SOC it reports there is not comparable with the trace's:
every such interval is reported (the summary, and the `fets` column of
OUT.csv), never silently scored.

So a user can see why an estimate moved, OUT.csv also has `rest` (1 while
the firmware judges the pack at rest: no current, the voltage relaxed),
`rests` and `ocv_fixes` (how many rests it judged, and how many times the
rested OCV corrected the SOC, since boot); the summary gives the totals and
the share of the trace at rest.
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
from bms.afe.bq769x0.regs import CC_PERIOD_MS
from bms.afe.chips import model_groups, thermistor_inputs
from bms.crc import crc16
from bms_sim.afe import AFES, afe_type, chip_class
from bms_sim.afe.bq769x0 import SimBq769x0
from bms_sim.process import DEFAULT_HEAP, SimError
from bms_sim.server import SimServer


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
        if header != want or not 3 <= n <= M.MAX_CELLS:
            raise TraceError("%s: the header must be t_s,current_ma,temp_c,cell1_mv,...,cellN_mv "
                             "with 3 to %d cells (16 on a bq76952, --afe); it is %s"
                             % (path, M.MAX_CELLS, ",".join(header)))
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


# A current under this is noise, not a flow the FETs would have cut.
CONFLICT_MIN_MA = 10
BOOT_GRACE_MS = 5000


class FetConflict:
    """An interval where the trace's current flowed against an off FET:
    charge with CHG off, or discharge with DSG off."""

    __slots__ = ("start_ms", "end_ms", "fet", "peak_ma", "mas")

    def __init__(self, start_ms, fet):
        self.start_ms = start_ms
        self.end_ms = start_ms
        self.fet = fet  # "CHG" or "DSG"
        self.peak_ma = 0
        self.mas = 0.0  # the charge that flowed against it

    def text(self):
        return "%s off from t=%gs for %gs while %s flowed (up to %d mA, %.0f mAh)" % (
            self.fet, self.start_ms / 1000.0, (self.end_ms - self.start_ms) / 1000.0,
            "charge" if self.fet == "CHG" else "discharge", self.peak_ma, self.mas / 3600.0)


class ReplayWorld:
    """The World's interface (chip, clock, advance) driven by a trace: the
    recorded current flows whatever the FETs do, because it was recorded;
    where that is a current the firmware had cut, it is logged in
    `conflicts`."""

    def __init__(self, times, currents, temps, cells, shunt_uohm=1000, seed=0, afe="bq769x0"):
        self.pack = TracePack(times, temps, cells)
        self.times = times
        self.currents = currents
        n = len(cells[0])
        if afe_type(afe):
            self.chip = chip_class(afe)(self.pack, shunt_uohm=shunt_uohm, seed=seed)
        else:
            # the trace's current is already what the BMS measured, its sensor's
            # offset in it: the chip adds none of its own (it did, +1 LSB, and
            # every trace was scored with two offsets), only its quantisation
            self.chip = SimBq769x0(self.pack, groups=model_groups(n), shunt_uohm=shunt_uohm, seed=seed,
                                   cc_offset_lsb=0)
        self.now_ms = times[0]
        self.end_ms = times[-1]
        self.conflicts = []  # FetConflict, in time order
        self._open = None  # the conflict going on, if any
        # the firmware boots with both FETs off and closes them after its
        # first judgement: watched from its first FET on (or BOOT_GRACE_MS)
        self._watch_from = times[0] + BOOT_GRACE_MS

    def _watch(self, ms, current_ma):
        """Log ms of current_ma against the FETs as they are now."""
        chip = self.chip
        if self._watch_from is not None:
            if not (chip.chg_on or chip.dsg_on) and self.now_ms < self._watch_from:
                return
            self._watch_from = None
        fet = None
        if current_ma >= CONFLICT_MIN_MA and not chip.chg_on:
            fet = "CHG"
        elif current_ma <= -CONFLICT_MIN_MA and not chip.dsg_on:
            fet = "DSG"
        c = self._open
        if fet is None or (c is not None and c.fet != fet):
            self._open = c = None
        if fet is None:
            return
        if c is None:
            self._open = c = FetConflict(self.now_ms, fet)
            self.conflicts.append(c)
        c.end_ms = self.now_ms + ms
        a = abs(current_ma)
        if a > c.peak_ma:
            c.peak_ma = int(a)
        c.mas += a * ms / 1000.0

    def conflict_ms_since(self, t_ms):
        """ms of conflict from t_ms to now."""
        total = 0
        for c in reversed(self.conflicts):
            if c.end_ms <= t_ms:
                break
            total += c.end_ms - max(c.start_ms, t_ms)
        return total

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
            i_ma = self.currents[self.pack.i]
            self._watch(piece, i_ma)
            self.chip.tick(piece, i_ma)
            self.now_ms += piece
            ms -= piece
        self.pack.seek(self.now_ms)


_FIRST = M.IR_SOC_DPCT
_COUNT = M.IR_FULL_CAPACITY_MAH + 2 - M.IR_SOC_DPCT


# the estimator's rest state and counters, read after the SOC registers
_REST_FIRST = M.IR_SOC_STATE
_REST_COUNT = M.IR_SOC_OCV_FIXES + 1 - M.IR_SOC_STATE


def _request(address, first=_FIRST, count=_COUNT):
    body = bytes([address, 4, first >> 8, first & 0xFF, 0, count])
    c = crc16(body, 0, len(body))
    return body + bytes((c & 0xFF, c >> 8))


def _fets_text(chg_on, dsg_on):
    return ("C" if chg_on else "-") + ("D" if dsg_on else "-")


class Recorder:
    """Asks the firmware for its SOC registers every period of simulated time
    and writes what it answers, at that simulated time."""

    # fets: CHG and DSG as the firmware held them ("CD" both on, "-D" CHG
    # off, ...), then "!" when the trace's current flowed against an off FET
    # since the previous row (the firmware would have cut it: not comparable)
    HEADER = ["t_s", "soc_pct", "remaining_mah", "full_capacity_mah", "soh_pct", "tte_min", "ttf_min", "fets",
              "rest", "rests", "ocv_fixes"]

    def __init__(self, out, every_ms, t0_ms, address=1):
        self.address = address
        self.world = None
        self.last_row_ms = t0_ms
        self.out = out
        self.writer = csv.writer(out)
        self.writer.writerow(self.HEADER)
        self.every_ms = every_ms
        self.next_ms = t0_ms
        self.asked_at = None
        self.rx = bytearray()
        self.server = None
        self.rows = 0
        self.row = None  # the SOC part of a row, waiting for its rest registers
        self.rest_rows = 0
        self.rests = 0
        self.ocv_fixes = 0

    def on_advance(self, world):
        if self.asked_at is None and world.now_ms >= self.next_ms:
            self.asked_at = world.now_ms
            self.next_ms += self.every_ms
            self.server.send(_request(self.address))

    def _frame(self, count):
        """The words of a complete reply of count registers, or None yet."""
        n = 5 + 2 * count
        if len(self.rx) < n:
            return None
        frame, self.rx = bytes(self.rx[:n]), self.rx[n:]
        if frame[:3] != bytes([self.address, 4, 2 * count]) or crc16(frame, 0, n - 2) != frame[n - 2] | (frame[n - 1] << 8):
            raise SimError("the firmware answered the SOC read with %s" % frame.hex())
        return [(frame[3 + 2 * k] << 8) | frame[4 + 2 * k] for k in range(count)]

    def on_transmit(self, data):
        self.rx += data
        if self.asked_at is None:
            return
        if self.row is not None:
            w = self._frame(_REST_COUNT)
            if w is None:
                return
            self.asked_at = None
            rest = 1 if w[0] & M.SOC_REST else 0
            self.rests = w[M.IR_SOC_RESTS - _REST_FIRST]
            self.ocv_fixes = w[M.IR_SOC_OCV_FIXES - _REST_FIRST]
            self.rest_rows += rest
            self.writer.writerow(self.row + [rest, self.rests, self.ocv_fixes])
            self.row = None
            self.rows += 1
            return
        w = self._frame(_COUNT)
        if w is None:
            return
        reg = lambda a: w[a - _FIRST]
        u32 = lambda a: (reg(a) << 16) | reg(a + 1)
        asked = self.asked_at
        if u32(M.IR_FULL_CAPACITY_MAH) == 0:
            self.asked_at = None
            return  # no estimate yet (the first second after boot): nothing to report
        fets = ""
        world = self.world
        if world is not None:
            fets = _fets_text(*world.fets()) + ("!" if world.conflict_ms_since(self.last_row_ms) else "")
            self.last_row_ms = world.now_ms
        self.row = [
            "%g" % (asked / 1000.0), "%.1f" % (reg(M.IR_SOC_DPCT) / 10.0),
            u32(M.IR_REMAINING_MAH), u32(M.IR_FULL_CAPACITY_MAH), "%.1f" % (reg(M.IR_SOH_DPCT) / 10.0),
            reg(M.IR_TTE_MIN), reg(M.IR_TTF_MIN), fets]
        self.server.send(_request(self.address, _REST_FIRST, _REST_COUNT))


def settings(cells, chemistry=None, capacity_mah=None, params=None, sets=(), ocv_table=None, afe="bq769x0"):
    """The parameter values (a list by index) the firmware replays with:
    the chemistry's defaults for the pack, or a profile (`params`: the path
    of a `bmsctl config export` file), then `sets` (NAME=VALUE, as `bmsctl
    config set` takes them), then the OCV table. chemistry and capacity_mah
    are needed without a profile, and change the profile's if given. Raises
    SimError naming the problem and the fix."""
    from bms import paramload as PL
    from bmsctl import config as CF

    prm = P.Params()
    if params:
        try:
            with open(params) as f:
                text = f.read()
        except OSError as e:
            raise SimError("cannot read --params %s: %s" % (params, e.strerror or e)) from None
        try:
            prof = CF.load_profile(text, params)
        except CF.ConfigError as e:
            raise SimError(str(e).replace("; nothing was written", "")) from None
        for i, raw in prof.items():
            prm.values[i] = raw
        if chemistry:
            prm.values[P.P_CHEMISTRY] = P.CHEMISTRY_NAMES.index(chemistry)
        if capacity_mah:
            prm.values[P.P_CAPACITY_MAH] = capacity_mah
        if prm.cells() != cells and not any(a.split("=", 1)[0].strip().lower() == "cells" for a in sets):
            raise SimError("--params %s is for %d cells but the trace has %d: export the set of this pack, "
                           "or add --set cells=%d" % (params, prm.cells(), cells, cells))
    else:
        if not chemistry or not capacity_mah:
            raise SimError("give --chemistry and --capacity-mah, or --params FILE (a `bmsctl config export`)")
        kind = afe_type(afe)
        lines = ["chemistry=%s" % chemistry, "afe_type=%d" % kind, "cells=%d" % cells,
                 "capacity_mah=%d" % capacity_mah, "shunt_uohm=1000",
                 "temp_sensors=%d" % ((1 << thermistor_inputs(kind, model_groups(cells))) - 1)]
        PL.load_text(prm, "\n".join(lines))
        if prm.errors:
            raise SimError("cannot configure %d %s cells: %s" % (cells, chemistry, "; ".join(prm.errors)))
    base = list(prm.values)
    try:
        target, _ = CF.parse_assignments(list(sets), base)
    except CF.ConfigError as e:
        raise SimError("--set: %s" % e) from None
    if ocv_table:
        for k, mv in enumerate(read_ocv_table(ocv_table)):
            target[P.P_OCV_0_MV + k] = mv
    # no LED bar: its animation frames would only slow the replay of a trace
    # that charges or discharges all the time; the SOC is what is replayed
    target[P.P_LED_COUNT] = 0
    # the trace's current is the whole pack's (a physics model, or a pack
    # measured at its terminals): no BMS of ours drained it beside the shunt
    target[P.P_DRAW_COUNTED] = 0
    after = P.Params()
    for i, raw in enumerate(target):
        after.values[i] = raw
    if after.cells() != cells:
        raise SimError("the set is for %d cells but the trace has %d: give --set cells=%d" % (
            after.cells(), cells, cells))
    err = CF.validate(base, target)
    if err:
        raise SimError("the firmware would refuse this set: %s" % err)
    return target


def write_settings(state_dir, values):
    """values as the simulated board's bms.cfg (the firmware takes it in at boot)."""
    from bms import paramload as PL

    prm = P.Params()
    for i, raw in enumerate(values):
        prm.values[i] = raw
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, PL.CONFIG_FILE), "w") as f:
        f.write(PL.to_text(prm))


def replay(trace, chemistry, capacity_mah, out_path, ocv_table=None, record_every_s=10.0,
           micropython=None, heap=DEFAULT_HEAP, log=sys.stderr, target=None, params=None, sets=(), afe=None,
           add_current_ma=0.0):
    """Replay a trace; returns the rows written. The FET conflicts (FetConflict)
    are written to `log` and kept in `replay.conflicts` of the last call.
    add_current_ma: added to every row's current (a what-if: the sensor's
    offset taken out, or one put in)."""
    times, currents, temps, cells = read_trace(trace)
    if add_current_ma:
        currents = [c + add_current_ma for c in currents]
    n = len(cells[0])
    values = settings(n, chemistry, capacity_mah, params, sets, ocv_table, afe or "bq769x0")
    if afe is not None and values[P.P_AFE_TYPE] != afe_type(afe):
        raise SimError("--afe %s, but the set names afe_type=%d: give --set afe_type=%d" % (
            afe, values[P.P_AFE_TYPE], afe_type(afe)))
    state = tempfile.mkdtemp(prefix="bms-replay-")
    try:
        write_settings(state, values)
        world = ReplayWorld(times, currents, temps, cells, shunt_uohm=values[P.P_SHUNT_UOHM],
                            afe=AFES[values[P.P_AFE_TYPE]])
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w", newline="") as out:
            rec = Recorder(out, int(record_every_s * 1000), times[0], address=values[P.P_MODBUS_ADDRESS])
            rec.world = world
            server = SimServer(world, state, speed=None, heap=heap, micropython=micropython, target=target,
                               on_advance=rec.on_advance)
            server.on_transmit = rec.on_transmit
            rec.server = server
            t0 = time.monotonic()
            with server:
                server.wait_sim_ms(world.end_ms, timeout=max(600.0, (world.end_ms - times[0]) / 1000.0))
                wall = time.monotonic() - t0
                # every boot after the first is a restart: the SOC comes back
                # from its last saved record, so an estimate can jump there
                restarts = list(server.reset_causes[1:])
                if "Traceback" in server.log_tail():
                    raise SimError("the firmware failed during the replay:\n" + server.log_tail())
        log.write("replayed %.1f h of %d cells in %.1f s; %d rows in %s\n"
                  % ((world.end_ms - times[0]) / 3.6e6, n, wall, rec.rows, out_path))
        log.write("rest: the firmware judged the pack at rest %d time%s (%.0f %% of the rows); the rested OCV "
                  "corrected the SOC %d time%s (columns rest, rests, ocv_fixes of the output)\n" % (
                      rec.rests, "" if rec.rests == 1 else "s", 100.0 * rec.rest_rows / max(1, rec.rows),
                      rec.ocv_fixes, "" if rec.ocv_fixes == 1 else "s"))
        if restarts:
            log.write("the firmware restarted %d time%s during the replay (bms.boards RESET_ causes: %s); the SOC "
                      "came back from its last saved record each time\n" % (
                          len(restarts), "" if len(restarts) == 1 else "s", ", ".join(str(c) for c in restarts)))
        replay.restarts = restarts
        replay.rest = {"rests": rec.rests, "rest_rows_pct": round(100.0 * rec.rest_rows / max(1, rec.rows), 1),
                       "ocv_fixes": rec.ocv_fixes}
        replay.conflicts = world.conflicts
        if world.conflicts:
            total_s = sum(c.end_ms - c.start_ms for c in world.conflicts) / 1000.0
            log.write("FET conflicts: %d interval%s, %gs in all, where the trace's current flowed against a FET "
                      "the firmware had off (on a real pack it would have been cut: the SOC there is not "
                      "comparable; rows marked ! in the fets column):\n" % (
                len(world.conflicts), "" if len(world.conflicts) == 1 else "s", total_s))
            for c in world.conflicts[:20]:
                log.write("  %s\n" % c.text())
            if len(world.conflicts) > 20:
                log.write("  ... and %d more\n" % (len(world.conflicts) - 20))
        else:
            log.write("FET conflicts: none (the firmware never had a FET off against the trace's current)\n")
        return rec.rows
    finally:
        shutil.rmtree(state, ignore_errors=True)


replay.conflicts = []
replay.rest = {}
replay.restarts = []
