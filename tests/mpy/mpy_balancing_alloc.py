# Under the MicroPython unix port: Balancer.update() allocates nothing, in
# every phase (idle, bleeding, settling, the decisions between them, the
# conditions switching off and on, the ticks wrap).
# argv: [cells] (default 15: every input of a bq76940); 16, every input of a
# 16-cell AFE, puts cell 16 at bit 15 of the masks.
# Prints "OK ..." or exits 1 with the reason. Run by tests/firmware/test_balancing.py.
import sys

import micropython

from bms.balancing import PHASE_BLEEDING, PHASE_IDLE, PHASE_SETTLING, Balancer
from bms.measurements import Measurements
from bms.ticks import TICKS_PERIOD, ticks_add

CELLS = int(sys.argv[1]) if len(sys.argv) > 1 else 15
CHANNELS = (1 << CELLS) - 1  # every input: 15 cells on 3 groups, or 16 on a 16-input chip
BASE = (3300, 3450, 3460, 3470, 3480, 3490, 3500, 3510, 3520, 3530, 3540, 3550, 3560, 3570, 3580, 3590)


def fill(meas, mask, t):
    """Readings as the AFE gives them: bled cells read low, some noise."""
    v = meas.cell_mv
    i = 0
    while i < CELLS:
        x = BASE[i] + (t >> 8) % 7
        if mask & (1 << i):
            x -= 300
        v[i] = x
        i += 1
    meas.balance_mask = mask
    meas.update_extremes()


def run(b, meas, t, steps, counts):
    """The control loop for `steps` x 250 ms; the conditions change on the way."""
    mask = 0
    k = 0
    while k < steps:
        fill(meas, mask, t)
        phase_k = k % 400
        allowed = phase_k != 150  # a protection blip mid-run
        charging = phase_k < 300
        resting = 0 if charging else (phase_k - 300) * 250
        temp = 500 if 200 <= phase_k < 210 else 250
        mask = b.update(meas, t, charging, resting, allowed, temp)
        counts[b.phase] += 1
        if mask >> (CELLS - 1):
            top[0] = 1  # the top cell bled (cell 16: bit 15)
        if b.mask != mask:
            return -1
        t = ticks_add(t, 250)
        k += 1
    return t


def locked(b, meas, t, steps, counts):
    micropython.heap_lock()
    try:
        t = run(b, meas, t, steps, counts)
        err = None
    except MemoryError as e:
        err = e
    finally:
        micropython.heap_unlock()
    return t, err


top = bytearray(1)  # preallocated: the locked run may not make an int box for it
meas = Measurements(3)
meas.cells = CELLS
b = Balancer(CHANNELS, on_ms=3000, settle_ms=600)
b.configure(3400, 10, True, 5000, 4, 450)
counts = [0, 0, 0]
t = TICKS_PERIOD - 120000  # the ticks wrap while locked (after the 100 s warm-up)
t = run(b, meas, t, 400, counts)  # warm-up: every path once
counts = [0, 0, 0]
t, err = locked(b, meas, t, 4000, counts)
if err is not None:
    print("FAIL: allocation with the heap locked in Balancer.update():", repr(err))
    sys.print_exception(err)
    sys.exit(1)
if t < 0:
    print("FAIL: update() returned something else than .mask")
    sys.exit(1)
if not (counts[PHASE_IDLE] and counts[PHASE_BLEEDING] and counts[PHASE_SETTLING]):
    print("FAIL: not every phase was run:", counts)
    sys.exit(1)
print("OK updates=4000 idle=%d bleeding=%d settling=%d periods=%d top=%d"
      % (counts[PHASE_IDLE], counts[PHASE_BLEEDING], counts[PHASE_SETTLING], b.periods, top[0]))
