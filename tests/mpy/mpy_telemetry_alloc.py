# The telemetry state message under MicroPython: written with the heap
# locked (any allocation raises), for 16 cells (the most, MAX_CELLS) with a discharge current, a
# missing sensor and every flag word non-zero; printed for the host to parse.
import sys
from array import array

import micropython

from bms import regmap as M
from bms.telemetry import StateWriter

w = array("H", bytes(2 * M.IR_SIZE))


def put32(a, v):
    # no 0xFFFFFFFF mask: on a 32-bit port that is a long int, and allocates
    w[a] = (v >> 16) & 0xFFFF
    w[a + 1] = v & 0xFFFF


w[M.IR_CELL_COUNT] = M.MAX_CELLS
put32(M.IR_PACK_MV, 55123)
put32(M.IR_CURRENT_MA, -123456)
for i in range(M.MAX_CELLS):
    w[M.IR_CELL_MV + i] = 3600 + i
w[M.IR_CELL_MIN_MV] = 3600
w[M.IR_CELL_MAX_MV] = 3615
w[M.IR_CELL_SPREAD_MV] = 15
w[M.IR_TEMP_DC] = 251
w[M.IR_TEMP_DC + 1] = (-55) & 0xFFFF
w[M.IR_TEMP_DC + 2] = M.TEMP_INVALID & 0xFFFF
w[M.IR_FET_FLAGS] = M.FET_DSG
w[M.IR_BALANCE_MASK] = 0x4001
put32(M.IR_PROTECT_FLAGS, 1 << 28)
put32(M.IR_WARN_FLAGS, 1 << 22)
put32(M.IR_LATCHED_FLAGS, 1 << 6)
put32(M.IR_UPTIME_S, 86400 * 400)
w[M.IR_SOC_DPCT] = 583
w[M.IR_SOH_DPCT] = 1000
put32(M.IR_REMAINING_MAH, 5830)
put32(M.IR_REMAINING_DWH, 748)
put32(M.IR_CYCLES_DC, 11)
w[M.IR_POWER_MODE] = 1

sw = StateWriter()
n = sw.state(w)  # once unlocked: anything lazily set up is set up
micropython.heap_lock()
try:
    n = sw.state(w)
    n = sw.state(w)
finally:
    micropython.heap_unlock()
sys.stdout.write(bytes(sw.buf[:n]).decode())
sys.stdout.write("\n")

# store and forward: samples packed, kept and sent back with the heap locked
from bms.sfring import Ring  # noqa: E402
from bms.telemetry import SAMPLE_SIZE, sample_into  # noqa: E402

ring = Ring(SAMPLE_SIZE, 8)
rec = bytearray(SAMPLE_SIZE)
out = bytearray(SAMPLE_SIZE)
micropython.heap_lock()
try:
    for k in range(20):  # 12 more than it holds: the oldest 12 go
        put32(M.IR_UPTIME_S, 1000 + k)
        sample_into(w, rec)
        ring.push(rec)
    ring.oldest_into(out)
    ring.pop()
    n = sw.sample(out)
finally:
    micropython.heap_unlock()
sys.stdout.write("RING %d %d\n" % (ring.count, ring.dropped))
sys.stdout.write(bytes(sw.buf[:n]).decode())
sys.stdout.write("\n")
