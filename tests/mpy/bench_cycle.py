# The performance bench's firmware main (tools/bench/perf.py runs it through
# SimServer in place of main.py): boots the real App on the simulated board
# as bms.start does, records the firmware's own boot time and heap, then
# hands over to bench_probe (the measurements; imported only now, so its
# code is not in the heap figures). Kept as small as main.py + bms.start.
import time

_T0_MS = time.ticks_ms()  # the start of main: the firmware's own boot clock

import gc  # noqa: E402

from bms.boards.sim import Board  # noqa: E402
from bms.start import load  # noqa: E402

board = Board()
prm = load(board)  # as bms.start does: the parameters, then the modules
from bms.app import App  # noqa: E402

gc.collect()
heap_after_import = gc.mem_alloc()
heap_total = gc.mem_alloc() + gc.mem_free()
app = App(board, prm)
app.start()
boot_fw_ms = time.ticks_diff(time.ticks_ms(), _T0_MS)
prm = None
gc.collect()
heap_after_start = gc.mem_alloc()

# bench_probe as bytecode (tools/bench/perf.py compiles it with mpy-cross
# into BMS_BENCH_PATH): compiling its source here would need more heap than
# the firmware leaves
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.getenv("BMS_BENCH_PATH") or ".")
import bench_probe  # noqa: E402

bench_probe.main(board, app, heap_total, heap_after_import, heap_after_start, boot_fw_ms)
