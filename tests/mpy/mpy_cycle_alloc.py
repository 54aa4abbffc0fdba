# Under the MicroPython unix port, as the simulated board's firmware: warm the
# application up, then run the main loop with the heap locked. Any
# allocation raises MemoryError. Steady state means: measurement cycles every
# 250 ms, Modbus requests answered (the test sends them meanwhile).
#
# argv: [locked sim ms] ["aged"]. Aged: before the locked run every counter
# that grows with uptime or charge starts where 13 days of service leave it
# (uptime past 2**30 ms, lifetime charge and time near 2**30): on the ESP32's
# 31-bit small ints a value of 2**30 or more is a heap object, so the twin
# finds every one the cycle would make.
import sys

import gc

import micropython

from bms.start import load
from bms.boards.sim import Board
from bms.ticks import ticks_diff  # the board clock wraps at 2**30


def loop(app, board, sim_ms):
    start = board.ticks_ms()
    cycles = app.cycle.meas_count
    while ticks_diff(board.ticks_ms(), start) < sim_ms:
        board.idle(app.step())
    return app.cycle.meas_count - cycles


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


def age(app):
    days = 13 * 86400  # 1,123,200 s: 1.12e9 ms, past 2**30
    app.cycle.uptime_s = days
    app.modes.mode_start_s = 0
    life = app.cycle.life
    life.on_s = days
    life.chg_mah = 1000000000  # 1 GAh: 2**30 less 7 %, more than any pack sees
    life.dsg_mah = 1000000000
    app.cycle.protection.time_s = days


board = Board()
prm = load(board)  # as bms.start does: the parameters, then the modules
gc.collect()
from bms.app import App  # noqa: E402

app = App(board, prm)
app.start()
gc.collect()
print("heap after start: alloc", gc.mem_alloc(), "free", gc.mem_free())
loop(app, board, 3000)
if "aged" in sys.argv:
    age(app)
    loop(app, board, 1000)  # publish once unlocked: the registers take the new values
served = app.modbus.server_messages
n, err = locked(app, board, int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
if err is not None:
    print("FAIL: allocation with the heap locked:", repr(err))
    sys.print_exception(err)
    sys.exit(1)
print("OK cycles=%d modbus=%d faults=%d uptime_s=%d" % (n, app.modbus.server_messages - served,
                                                       app.cycle.protection.protect_flags, app.cycle.uptime_s))
