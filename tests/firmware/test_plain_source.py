"""The firmware runs as written: lib/ copied as it is (no build, no
constant folding, no .mpy), the way a micropython-lib user copies a
package with mpremote, boots under MicroPython and answers Modbus. The
host-only folder lib/bms/spec is left out of the copy, so a device module
that still needed it fails here."""
import os
import shutil
import subprocess

from bms import regmap as M
from bms_sim.target import find_target
from conftest import LIB, ROOT, ir, lfp4_sim, rtu_client

# MicroPython compiles every module from source at import, which takes far
# more heap than running the frozen image: this is a test of the source,
# not of the ESP32's heap (tests/firmware/test_heap_locked_cycle.py and make bench are)
SOURCE_HEAP = "4M"


def test_plain_lib_copy_boots_and_answers_modbus(tmp_path):
    lib = tmp_path / "board" / "lib"
    shutil.copytree(LIB, lib, ignore=shutil.ignore_patterns("__pycache__", "*.mpy", "spec"))
    assert not (lib / "bms" / "spec").exists()
    assert not [f for _, _, fs in os.walk(lib) for f in fs if not f.endswith(".py")]
    # the path the simulator gives it: the copy first, the twin's frozen
    # modules after it. What the firmware imports must come from the copy,
    # and lib/bms/spec must be out of reach (the frozen image leaves it out
    # too), or this test would pass on the frozen firmware alone.
    target = find_target(mpy=True)  # as SimServer picks it for a lib_dir of the test's own
    probe = ("import bms.app, bms.cycle, bms.afe.bq769x0, bms.gen.packed\n"
             "print(bms.app.__file__, bms.cycle.__file__, bms.afe.bq769x0.__file__, bms.gen.packed.__file__)\n"
             "try:\n import bms.spec.regtable\n print('SPEC')\nexcept ImportError:\n print('NOSPEC')\n")
    out = subprocess.run([target.exe, "-X", "heapsize=" + SOURCE_HEAP, "-c", probe], capture_output=True, text=True,
                         env=dict(os.environ, MICROPYPATH=target.path(str(lib))), timeout=60)
    files, spec = out.stdout.split("\n")[:2]
    assert all(f.startswith(str(lib)) for f in files.split()), out.stdout + out.stderr
    assert spec == "NOSPEC", out.stdout
    main_py = tmp_path / "board" / "main.py"
    shutil.copy(os.path.join(ROOT, "main.py"), main_py)
    with lfp4_sim(tmp_path / "state", tmp_path / "tty", soc_pct=60.0, seed=1,
                  server_kw=dict(heap=SOURCE_HEAP, lib_dir=str(lib), main_py=str(main_py))) as server:
        client = rtu_client(server.link_path, retries=2)
        try:
            assert ir(client, M.IR_CELL_COUNT) == [4]
            fets = ir(client, M.IR_FET_FLAGS)[0]
            assert fets & (M.FET_CHG | M.FET_DSG) == M.FET_CHG | M.FET_DSG
        finally:
            client.close()
