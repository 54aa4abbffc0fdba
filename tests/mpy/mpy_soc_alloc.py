# Under the MicroPython unix port: Soc.update() allocates nothing, through
# every branch: counting both ways, rest, offset learning with the FETs off,
# the OCV correction and its slew, a rest the load cut short, empty and full
# syncs, capacity learning,
# TTE/TTF, across the ticks wrap.
# Prints "OK ..." or exits 1 with the reason. Run by tests/firmware/test_soc.py.
import sys

import micropython

from bms.measurements import Measurements
from bms.params import CHEM_NMC
from bms.soc import STATE_SIZE, Soc
from bms.ticks import TICKS_PERIOD, ticks_add

CELLS = 4
CAP = 1000  # mAh: a full discharge at 10 A takes 6 min
SHUNT = 844  # 1 LSB = 10 mA
EMPTY_MV = 3100
FULL_MV = 4150

# (cc raw, updates, both FETs off, cell voltages: 0 = OCV of the SOC,
#  1 = at full, 2 = at empty, 3 = OCV of the SOC + 60 mV, 4 = OCV - 60 mV,
#  5 = 3700 mV,
#  relax times from this phase on: 0 = unchanged, 1 = 10 min, 2 = 20 / 30 s)
SCENARIO = (
    (2, 300, True, 0, 0),  # rest, FETs off: offset learning (offset 2 LSB)
    (-998, 1700, False, 0, 0),  # 10 A discharge down to 0 % (clamped at the end)
    (-8, 60, False, 2, 0),  # at empty: empty sync (anchor)
    (1002, 1600, False, 0, 0),  # 10 A charge: 1111 mAh counted (a bigger pack)
    (12, 60, False, 1, 0),  # CV tail at full: full sync, capacity learned
    (-498, 700, False, 0, 0),  # 5 A discharge to about 50 %
    (2, 2600, False, 3, 0),  # rest (FETs on): a voltage step, then relaxed over 5 min: OCV correction up, slewed in
    (-498, 100, False, 5, 1),
    (2, 2000, False, 5, 0),  # 500 s rest, relaxed, 100 s short of its 10 min
    (-498, 100, False, 0, 0),  # the load comes back: the rest cut short corrects
    (3, 2600, True, 4, 2),  # rest with FETs off: OCV correction down
    (-998, 1700, False, 0, 0),  # down to empty again: learning from the OCV anchor
    (-8, 60, False, 2, 0),
)

BRANCHES = ("offset", "empty", "full", "learn", "ocv", "slew", "tte", "ttf", "rest", "cut")


def fill(s, meas, mode):
    if mode == 1:
        v = FULL_MV + 10
    elif mode == 2:
        v = EMPTY_MV - 10
    elif mode == 5:
        v = 3700
    else:
        v = s.soc_to_ocv(s.soc_dpct)
        if mode == 3:
            v += 60
        elif mode == 4:
            v -= 60
    cv = meas.cell_mv
    i = 0
    while i < CELLS:
        cv[i] = v
        i += 1
    meas.cell_min_mv = v
    meas.cell_max_mv = v


def run(s, meas, t, seen):
    k = 0
    n_phases = len(SCENARIO)
    while k < n_phases:
        ph = SCENARIO[k]
        raw = ph[0]
        n = ph[1]
        off = ph[2]
        mode = ph[3]
        if ph[4] == 1:
            s.relax_chg_ms = 600000
            s.relax_dsg_ms = 600000
        elif ph[4] == 2:
            s.relax_chg_ms = 20000
            s.relax_dsg_ms = 30000
        j = 0
        while j < n:
            if j & 15 == 0:
                fill(s, meas, mode)
            meas.cc_raw = raw + (j & 1)  # a little noise
            t = ticks_add(t, 250)
            learned = s.learn_count
            pend = s._pending
            fixes = s.ocv_count
            s.update(t, meas, (j & 3) != 3, off)  # a missing reading now and then
            if s.offset_learned:
                seen[0] = 1
            if s._empty_synced:
                seen[1] = 1
            if s._full_synced:
                seen[2] = 1
            if s.learn_count != learned:
                seen[3] = 1
            if s.ocv_soc_dpct >= 0:
                seen[4] = 1
            if pend and s._pending != pend:
                seen[5] = 1
            if s.tte_min != 0xFFFF:
                seen[6] = 1
            if s.ttf_min != 0xFFFF:
                seen[7] = 1
            if s.resting():
                seen[8] = 1
            if s.ocv_count != fixes and raw < -100:
                seen[9] = 1
            if s.soc_dpct < 0 or s.soc_dpct > 1000:
                return -1
            j += 1
        k += 1
    return t


def locked(s, meas, t, seen):
    micropython.heap_lock()
    try:
        t = run(s, meas, t, seen)
        err = None
    except MemoryError as e:
        err = e
    finally:
        micropython.heap_unlock()
    return t, err


meas = Measurements(3)
meas.cells = CELLS
s = Soc(CHEM_NMC, CELLS, CAP, SHUNT)
s.configure(FULL_MV, 300, 3000, EMPTY_MV, 3000, 100, 20000, 30000)
t = TICKS_PERIOD - 600000  # the ticks wrap while locked
fill(s, meas, 0)
meas.cell_mv[0] = 3800
meas.cell_min_mv = meas.cell_max_mv = 3800
meas.update_extremes()
s.start(t, meas)
seen = bytearray(len(BRANCHES))
t, err = locked(s, meas, t, seen)
if err is not None:
    print("FAIL: allocation with the heap locked in Soc.update():", repr(err))
    sys.print_exception(err)
    sys.exit(1)
if t < 0:
    print("FAIL: SOC out of 0..100 %")
    sys.exit(1)
missing = [BRANCHES[i] for i in range(len(BRANCHES)) if not seen[i]]
if missing:
    print("FAIL: branches not run:", missing)
    sys.exit(1)
buf = bytearray(STATE_SIZE)
s.save_state(buf)
s2 = Soc(CHEM_NMC, CELLS, CAP, SHUNT)
s2.start(t, meas, bytes(buf))
print("OK soc=%d full=%d soh=%d cycles=%d offset=%d learned=%d restored=%d"
      % (s.soc_dpct, s.full_capacity_mah, s.soh_dpct, s.cycles_dc, s.offset_dlsb, s.learn_count,
         s2.started_from_state))
