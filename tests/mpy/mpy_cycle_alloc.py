# Under the MicroPython unix port, as the simulated board's firmware: warm the
# application up, then run the main loop with the heap locked. Any
# allocation raises MemoryError. Steady state means: measurement cycles every
# 250 ms, Modbus requests answered (the test sends them meanwhile).
import sys

import gc

import micropython

from bms.start import load
from bms.boards.sim import Board
from bms.ticks import ticks_diff  # the board clock wraps at 2**30


def loop(app, board, sim_ms):
    start = board.ticks_ms()
    cycles = app.meas_count
    while ticks_diff(board.ticks_ms(), start) < sim_ms:
        board.idle(app.step())
    return app.meas_count - cycles


def locked(app, board, sim_ms):
    micropython.heap_lock()
    try:
        n = loop(app, board, sim_ms)
        err = None
    except MemoryError as e:
        n = -1
        err = e
    micropython.heap_unlock()
    return n, err


board = Board()
prm = load(board)  # as bms.start does: the parameters, then the modules
gc.collect()
from bms.app import App  # noqa: E402

app = App(board, prm)
app.start()
gc.collect()
print("heap after start: alloc", gc.mem_alloc(), "free", gc.mem_free())
loop(app, board, 3000)
served = app.modbus.server_messages
n, err = locked(app, board, int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
if err is not None:
    print("FAIL: allocation with the heap locked:", repr(err))
    sys.print_exception(err)
    sys.exit(1)
print("OK cycles=%d modbus=%d faults=%d" % (n, app.modbus.server_messages - served, app.protection.protect_flags))
