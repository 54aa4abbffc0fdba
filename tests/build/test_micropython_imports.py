"""Every firmware module imports and runs its basics under real MicroPython."""
import os

from conftest import LIB, ROOT, run_mpy

FAKES = os.path.join(ROOT, "tests", "fakes")


def firmware_modules():
    mods = []
    for dirpath, _, files in os.walk(os.path.join(LIB, "bms")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), LIB)[:-3].replace(os.sep, ".")
                mods.append(rel[:-9] if rel.endswith(".__init__") else rel)
    return sorted(mods)


def test_every_firmware_module_imports_under_micropython(micropython):
    mods = firmware_modules()
    assert "bms.afe.bq769x0" in mods and "bms.boards.esp32" in mods
    from bms_build.build import compile_lib

    # lib/bms/spec: host-side tables and text, never on the device
    mods = [m for m in mods if not (m + ".").startswith("bms.spec.")]
    # both boards and every module at once (a device loads one board): more
    # than the ESP32's initial heap, which tests/firmware/test_heap_locked_cycle.py holds
    # heap: every module's __file__ is its full path, and a deep checkout makes those
    # long (a board's are /lib/...): 160wK leaves room for any checkout
    proc = run_mpy(micropython, "mpy_imports.py", *mods, path=compile_lib() + ":" + FAKES, heap="160wK")
    assert proc.stdout.strip() == "OK %d" % len(mods)


def test_firmware_files_use_no_cpython_only_modules():
    banned = ("typing", "dataclasses", "enum", "abc", "logging", "functools", "pathlib",
              "threading", "subprocess", "itertools", "contextlib", "decimal", "fractions", "statistics")
    files = [os.path.join(ROOT, "main.py"), os.path.join(ROOT, "boot.py")]
    for dirpath, _, fs in os.walk(os.path.join(LIB, "bms")):
        files += [os.path.join(dirpath, f) for f in fs if f.endswith(".py")]
    for path in files:
        with open(path) as fh:
            for n, line in enumerate(fh, 1):
                s = line.strip()
                for mod in banned:
                    assert not (s.startswith("import " + mod) or s.startswith("from " + mod + " ")), \
                        "%s:%d imports %s, which MicroPython lacks" % (path, n, mod)


def test_release_lets_boot_only_modules_go(micropython):
    """bms.release() on dotted names (bms.gen.packed, bms.afe.chips): the
    App's boot lets them go; their heap comes back, all of it (measured on a
    second import: loaded from .mpy files, the first also interns names for
    good, mpy_release.py)."""
    proc = run_mpy(micropython, "mpy_release.py")
    ok, took, freed = proc.stdout.split()
    assert ok == "OK" and int(freed) >= int(took) > 0, proc.stdout
