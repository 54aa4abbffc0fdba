"""bms.config.Config.write() -- the path from a Modbus FC06/FC16 request into
the parameters -- allocates nothing under the real MicroPython unix port,
whether the write is accepted or refused (tests/mpy/mpy_config_alloc.py)."""
from conftest import run_mpy


def test_config_write_allocation_free(micropython):
    proc = run_mpy(micropython, "mpy_config_alloc.py")
    assert "OK" in proc.stdout.split(), proc.stdout
