# Under the MicroPython unix port (the twin), as the simulated board's
# firmware: saves to flash that fail (the store's file write raising
# MemoryError or OSError; the periodic save and an accepted write's save
# with the heap locked) never end the firmware. The App's loop goes on, the failures are counted in
# save_errors, logged once per change, the old record still loads, and a
# later save succeeds.
#
# argv: HR_UNLOCK, the cell_ov_mv register, IR_SAVE_ERRORS, EV_STORE_SAVE
# (the firmware folds these constants away, so the test passes them).
import gc
import struct
import sys

import micropython

from bms import store as S
from bms.boards.sim import Board
from bms.start import load
from bms.ticks import ticks_add, ticks_diff

HR_UNLOCK, OV_ADDR, IR_SAVE_ERRORS, EV_STORE_SAVE = [int(a) for a in sys.argv[1:5]]
FAIL_MEMORY = 1
FAIL_FLASH = 2

_open = open


class Fault:
    """bms.store's open(): for a write, the file truncated, half the record
    written, then `exc` raised (None: no fault)."""
    exc = None
    tries = 0


class Broken:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        raise Fault.exc


def faulty_open(path, mode="r"):
    f = _open(path, mode)
    if Fault.exc is not None and "w" in mode:
        Fault.tries += 1
        return Broken(f)
    return f


S.open = faulty_open  # the store's module globals come before the builtins


def check(cond, *what):
    if not cond:
        print("FAIL", *what)
        sys.exit(1)


def loop(app, board, sim_ms):
    start = board.ticks_ms()
    while ticks_diff(board.ticks_ms(), start) < sim_ms:
        board.idle(app.step())


def stored(board, name):
    return S.Store(board.storage_dir, name).load()


def stored_ov(board):
    payload = stored(board, "params")[1]
    i = 0
    while i < len(payload):
        a, v = struct.unpack_from("<Hi", payload, i)
        if a == OV_ADDR:
            return v
        i += 6
    return None


def write(app, addr, value):
    data = bytes(((value >> 8) & 0xFF, value & 0xFF))
    return app.config.write(addr, 1, data, 0, False, app.now)


def events(app, code):
    return [r[4] for r in app.log.read(0, 256) if r[3] == code]


def heap_locked(fn):
    """fn() with the heap locked after a collection: None, or what it raised
    (printed). fn is made before the lock: a call with *args would allocate."""
    gc.collect()
    micropython.heap_lock()
    try:
        fn()
        err = None
    except Exception as e:  # noqa: BLE001 - anything escaping is the failure shown
        err = e
    micropython.heap_unlock()
    if err is not None:
        sys.print_exception(err)
    return err


def save_errors(app):
    return app.ir.words[IR_SAVE_ERRORS]


board = Board()
prm = load(board)
gc.collect()
from bms.app import App  # noqa: E402

app = App(board, prm)
app.start()
gc.collect()
loop(app, board, 3000)
check(app.cycle.soc_started, "the SOC did not start")
app.cycle.save_state(app.now)  # a good SOC and lifetime record to keep
old_soc = stored(board, "soc")
old_life = stored(board, "life")
check(old_soc is not None and old_life is not None, "no first records")
old_ov = stored_ov(board)
check(save_errors(app) == 0, "errors before any fault")

# -- a parameter save whose write raises MemoryError ------------------------------
check(write(app, HR_UNLOCK, 1234) == 0, "unlock")
new_ov = old_ov - 10
Fault.exc = MemoryError()
check(write(app, OV_ADDR, new_ov) == 0, "write refused")
cycles = app.cycle.meas_count
loop(app, board, 8000)  # the save, then retries after 1, 2 and 4 s
check(app.cycle.meas_count > cycles + 20, "the loop stopped", app.cycle.meas_count - cycles)
check(app.config.save_failed, "no failed save seen")
check(Fault.tries >= 3, "not retried", Fault.tries)
check(app.params.store.failing == FAIL_MEMORY, "why", app.params.store.failing)
check(save_errors(app) == Fault.tries, "save_errors", save_errors(app), Fault.tries)
check(stored_ov(board) == old_ov, "the old set does not load", stored_ov(board))
check(events(app, EV_STORE_SAVE) == [(1 << 8) | FAIL_MEMORY], "events", events(app, EV_STORE_SAVE))
param_tries = Fault.tries

# -- a periodic SOC and lifetime save whose write raises OSError -------------------
Fault.exc = OSError(28)
app.cycle.soc_saved = ticks_add(app.now, -600000)  # the 10 minutes are up: the next cycle saves
loop(app, board, 1000)
check(app.cycle.soc_store.failing == FAIL_FLASH and app.cycle.life_store.failing == FAIL_FLASH, "SOC save did not fail")
check(stored(board, "soc") == old_soc and stored(board, "life") == old_life, "the old SOC record is gone")
ev = events(app, EV_STORE_SAVE)
check((2 << 8) | FAIL_FLASH in ev and (3 << 8) | FAIL_FLASH in ev, "events", ev)
n_ev = len(ev)
app.cycle.soc_saved = ticks_add(app.now, -600000)  # and again: counted, not logged again
loop(app, board, 1000)
check(len(events(app, EV_STORE_SAVE)) == n_ev, "logged per retry", events(app, EV_STORE_SAVE))
check(save_errors(app) == Fault.tries, "save_errors", save_errors(app), Fault.tries)

# -- a save with no heap at all: not even the file can be opened ------------------
Fault.exc = None
before = save_errors(app)
err = heap_locked(lambda: app.cycle.save_state(app.now))
check(err is None, "save_state raised with the heap locked:", repr(err))
check(app.cycle.life_store.failing == FAIL_MEMORY, "heap-locked save did not fail", app.cycle.life_store.failing)
loop(app, board, 500)
check(save_errors(app) > before, "not counted")
check(stored(board, "soc") == old_soc and stored(board, "life") == old_life, "the old records are gone")

# -- the path that ended the firmware in CI, with no heap at all: an accepted -----
# -- write's save (step -> _after_writes -> Config.service -> Params.save) --------
newer_ov = new_ov - 10
check(write(app, OV_ADDR, newer_ov) == 0, "write refused")
before = app.params.save_errors()
err = heap_locked(lambda: app.config.service(app.now, app.cycle.uptime_s))  # the events, the save
check(err is None, "the write's save raised with the heap locked:", repr(err))
app._apply_params()  # the rest of _after_writes (applying a change allocates: not a save)
check(app.params.save_errors() == before + 1, "not counted", app.params.save_errors(), before)
check(app.params.store.failing == FAIL_MEMORY, "why", app.params.store.failing)
check(app.hr.words[OV_ADDR] == newer_ov, "the value in RAM is gone", app.hr.words[OV_ADDR])
check(stored_ov(board) == old_ov, "the old set does not load", stored_ov(board))
loop(app, board, 500)  # the loop goes on; the register is every store's count
total = app.params.save_errors() + app.cycle.soc_store.write_errors + app.cycle.life_store.write_errors
check(save_errors(app) == total, "save_errors", save_errors(app), total)

# -- the flash works again: the next tries succeed --------------------------------
loop(app, board, 70000)  # the parameter retry's back-off is at most 64 s
check(not app.config.save_failed, "the parameters were not saved again")
check(stored_ov(board) == newer_ov, "the new set does not load", stored_ov(board))
app.cycle.soc_saved = ticks_add(app.now, -600000)
loop(app, board, 1000)
check(app.cycle.soc_store.failing == 0 and app.cycle.life_store.failing == 0, "the SOC save did not recover")
soc = stored(board, "soc")
check(soc is not None and soc != old_soc and stored(board, "life") != old_life, "no new SOC record")
ev = events(app, EV_STORE_SAVE)
check(ev.count((1 << 8) | FAIL_MEMORY) == 1, "the settings' failure logged per retry", ev)
for which in (1, 2, 3):
    check(ev.count(which << 8) == 1, "no recovery event", which, ev)
print("OK cycles=%d param_tries=%d tries=%d save_errors=%d events=%d" % (
    app.cycle.meas_count, param_tries, Fault.tries, save_errors(app), len(ev)))
