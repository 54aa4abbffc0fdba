"""The firmware runs as written: lib/ copied as it is (no build, no
constant folding, no .mpy), the way a micropython-lib user copies a
package with mpremote, boots under MicroPython and answers Modbus. The
host-only folder lib/bms/spec is left out of the copy, so a device module
that still needed it fails here."""
import os
import shutil

from bms import regmap as M
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
