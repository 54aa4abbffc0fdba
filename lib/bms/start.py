"""Boot order: the parameters first, then the rest of the firmware.

Reading the parameter table needs its full tuples in the heap for a
moment; doing that before the other modules are imported, and letting the
table go right after, keeps the peak heap at boot well under what the
ESP32 has.
"""
import gc


def start(board):
    from bms import params

    prm = params.load(board.storage_dir)
    prm.release()
    gc.collect()
    from bms.app import run

    run(board, prm)
