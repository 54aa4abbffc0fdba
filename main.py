"""Device entry point: build the board, start the watchdog, start the firmware."""
import sys

from bms.start import BOOT_WDT_MS, start

if sys.platform == "esp32":
    from bms.boards.esp32 import Board
else:
    # the MicroPython unix port: the board the host simulator provides
    from bms.boards.sim import Board

board = Board()
# First, before anything can hang: a boot that stops anywhere (the
# parameters, the imports, the AFE) resets. App.start() then sets wdt_ms.
board.wdt_start(BOOT_WDT_MS)
start(board)
