# The firmware's entry with a fault injected at a named point, for
# tests/e2e/test_fault_injection.py: `fault_main.py POINT KIND FIRST COUNT`.
# KIND: error (a ValueError: a firmware bug), memory (MemoryError), os
# (OSError, as a driver or the filesystem raises it). From the FIRST call of
# the point's function on, COUNT calls raise (0: every call from then on).
# Only the first boot of a run is faulty: it leaves fault.fired in the
# storage dir, so a boot after the guard's reset runs clean and shows the
# recovery (a fault in every boot is tests/mpy/crash_main.py's crash loop).
import os
import sys

POINTS = {
    # point: (module, class or None for a module function, function)
    "afe_read": ("bms.boards.sim", "SimI2C", "readfrom_mem_into"),  # the board's I2C bus
    "afe_write": ("bms.boards.sim", "SimI2C", "writeto_mem"),
    "afe_driver": ("bms.afe.bq769x0", "Bq769x0", "read_measurements"),  # the driver itself
    "protection": ("bms.protection", "Protection", "evaluate"),
    "soc": ("bms.soc", "Soc", "update"),
    "modbus": ("bms.modbus_rtu", "ModbusSlave", "poll"),
    "param_save": ("bms.params", "Params", "encode"),
    "event_write": ("bms.eventlog", None, "open"),  # the filesystem, as the event log sees it
    "uplink": ("bms.uplink", "Uplink", "step"),
    "led": ("bms.led", None, "render"),
    "sleep": ("bms.boards.sim", "Board", "deep_sleep"),
}

point, kind, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if point not in POINTS or kind not in ("error", "memory", "os"):
    raise SystemExit("fault_main.py: unknown point %r or kind %r; points: %s; kinds: error, memory, os"
                     % (point, kind, " ".join(sorted(POINTS))))
marker = os.getenv("BMS_SIM_STATE") + "/fault.fired"
try:
    os.stat(marker)
    armed = False  # a boot after the faulty one
except OSError:
    armed = True

if armed:
    modname, clsname, fname = POINTS[point]
    mod = __import__(modname, None, None, ("x",))
    owner = getattr(mod, clsname) if clsname else mod
    real = getattr(owner, fname, None)
    if real is None:
        import builtins

        real = getattr(builtins, fname)  # a builtin the module uses: shadowed in the module
    calls = [0]

    def faulty(*args):
        calls[0] += 1
        n = calls[0]
        if n >= first and (count == 0 or n < first + count):
            if n == first:
                with open(marker, "w") as f:
                    f.write(point)
            if kind == "memory":
                raise MemoryError("injected fault")
            if kind == "os":
                raise OSError(5)  # EIO
            raise ValueError("injected fault")
        return real(*args)

    setattr(owner, fname, faulty)

from bms.boards.sim import Board  # noqa: E402
from bms.start import start  # noqa: E402

start(Board())
