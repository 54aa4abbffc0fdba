"""Boot order: the parameters first, then the rest of the firmware.

Reading the parameters needs the stored record, perhaps a bms.cfg text,
and the packed tables (bms.packed) in the heap for a moment; doing that
before the other modules are imported keeps the boot's peak heap low, and
the App lets the packed tables go once it is built.
"""
import gc


def start(board):
    from bms import params

    prm = params.load(board.storage_dir)
    gc.collect()
    from bms.app import run

    run(board, prm)
