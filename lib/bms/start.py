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


from bms.boards import REASON_CRASH
from bms.events import KIND_MEMORY, KIND_OS, KIND_OTHER

# The watchdog main.py starts before anything else, for the boot: about ten
# times the boot's time on an ESP32 (8 ms on the twin, docs/PERFORMANCE.md,
# times the 60-100x the ESP32 is slower, plus flash). App.start() then sets
# the user's wdt_ms.
BOOT_WDT_MS = 8000  # not const(): main.py, run as source, imports it

# every module bms.app needs that bms.params has not loaded, leaves first
# (tests/build/test_build_deploy.py checks the list is complete)
MODULES = ("bms.gen.packed", "bms.ticks", "bms.afe", "bms.afe.bq769x0.regs", "bms.paramcheck",
           "bms.measurements", "bms.afe.bq769x0",
           "bms.regimage", "bms.modbus_rtu", "bms.eventlog", "bms.protection", "bms.balancing", "bms.cc", "bms.soc",
           "bms.lifetime", "bms.config", "bms.led", "bms.button", "bms.power", "bms.switching", "bms.publish",
           "bms.cycle", "bms.modes", "bms.app")


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
    """The firmware, guarded: an exception that reaches here (none should:
    every non-critical path catches its own) switches the FETs off, is
    kept with where it happened for the next boot to log (event 222) and
    printed, and resets the MCU; the next boot counts it as unplanned (the
    reset-loop lockout, docs/PROTECTION.md). A reset or deep sleep
    (SystemExit) passes through."""
    app = None
    try:
        prm = load(board)
        from bms.app import App

        app = App(board, prm)
        app.start()
        while True:
            board.idle(app.step())
    except Exception as e:  # noqa: BLE001 - the guard: whatever it is, make safe and reset
        crashed(board, app, e)


def crashed(board, app, e):
    """Make safe after an exception, then reset: written to need as little
    heap as possible (the exception may be a MemoryError). The report,
    (where << 8) | kind, goes to the RTC record, not to flash: the next
    boot logs it (event 222), so nothing here waits on the file system.
    Before the App exists (loading the parameters and modules) there is no
    AFE driver to switch the FETs and no record to keep: the chip's own
    protection is all there is (docs/PROTECTION.md)."""
    kind = KIND_MEMORY if isinstance(e, MemoryError) else (KIND_OS if isinstance(e, OSError) else KIND_OTHER)
    if app is not None:
        try:
            app.cycle.afe.fets_off()  # preallocated buffers, the chip's own CRC mode
        except Exception:  # noqa: BLE001 - the next boot switches them off too
            pass
        try:
            pr = app.cycle.protection
            pr.crash = (app.cycle.at << 8) | kind
            board.keep(pr.kept())
        except Exception:  # noqa: BLE001
            pass
    try:
        import sys

        sys.print_exception(e)
    except Exception:  # noqa: BLE001
        pass
    board.reset(REASON_CRASH)
