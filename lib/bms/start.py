"""Boot order: the parameters first, then the rest of the firmware.

Reading the parameters needs the loader (bms.paramload), the packed
parameter table, the stored record and perhaps a bms.cfg text in the heap
for a moment; doing that before the other modules are imported, and letting
it all go right after, keeps the boot's peak heap low.

Then the modules, one at a time with a collection after each (bms.app
imports them all anyway): loading a module leaves garbage between the code
it keeps, and collecting before the next one is laid down packs the code
tight and keeps the free heap in pieces large enough for the App's buffers.
"""
import gc

# every module bms.app needs that bms.params has not loaded, leaves first
# (tests/test_build_deploy.py checks the list is complete)
MODULES = ("bms.ticks", "bms.bq769x0", "bms.paramcheck", "bms.measurements", "bms.afe_bq769x0",
           "bms.regimage", "bms.modbus_rtu", "bms.eventlog", "bms.protection", "bms.balancing", "bms.soc",
           "bms.lifetime", "bms.config", "bms.led", "bms.button", "bms.power", "bms.modes", "bms.app")


def _load_params(board):
    from bms import paramload  # boot-only: the App lets it go (no reference kept here)

    return paramload.load(board.storage_dir)


def load(board):
    """The parameters, then every module of the firmware: ready to build
    the App (bms.app.App(board, prm)) with the returned parameters."""
    prm = _load_params(board)
    prm.release()
    gc.collect()
    for name in MODULES:
        __import__(name)
        gc.collect()
    return prm


def start(board):
    prm = load(board)
    from bms.app import run

    run(board, prm)
