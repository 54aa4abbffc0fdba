"""Device entry point: build the board, start the application."""
import sys

from bms.start import start

if sys.platform == "esp32":
    from bms.boards.esp32 import Board
else:
    # the MicroPython unix port: the board the host simulator provides
    from bms.boards.sim import Board

start(Board())
