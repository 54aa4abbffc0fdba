"""The firmware runs as written: lib/ copied as it is (no build, no
constant folding, no .mpy), the way a micropython-lib user copies a
package with mpremote, boots under MicroPython and answers Modbus. The
host-only folder lib/bms/spec is left out of the copy, so a device module
that still needed it fails here."""
import os
import shutil

from bms import regmap as M
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World
from conftest import LIB, ROOT, rtu_client

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
    state = tmp_path / "state"
    provision(str(state), 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, seed=1)
    server = SimServer(world, str(state), speed=20.0, link_path=str(tmp_path / "tty"), heap=SOURCE_HEAP,
                       lib_dir=str(lib), main_py=str(main_py))
    with server:
        server.wait_sim_ms(3000, timeout=60)
        client = rtu_client(server.link_path, retries=2)
        try:
            rr = client.read_input_registers(M.IR_CELL_COUNT, count=1, device_id=1)
            assert not rr.isError(), rr
            assert rr.registers == [4]
            rr = client.read_input_registers(M.IR_FET_FLAGS, count=1, device_id=1)
            assert not rr.isError(), rr
            assert rr.registers[0] & (M.FET_CHG | M.FET_DSG) == M.FET_CHG | M.FET_DSG
        finally:
            client.close()
        log = server.log_tail(200)
    assert "Traceback" not in log, log
