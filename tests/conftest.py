"""Shared test helpers: where things are, and running MicroPython scripts."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis' timing checks (input generation too slow, a deadline per
# example) measure the machine, not the code: the suite runs on three workers
# beside MicroPython processes and a browser. Correctness checks stay on.
settings.register_profile("suite", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("suite")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests by what they test (firmware, sim, e2e, bmsctl, build; tests/mpy
# holds the scripts MicroPython runs). A few share helpers across groups
# (test_sim_draw uses test_sim_chip's, test_soc_window test_e2e_power's):
# every group is importable, whichever file runs alone.
for _group in ("firmware", "sim", "e2e", "bmsctl", "build"):
    _dir = os.path.join(ROOT, "tests", _group)
    if _dir not in sys.path:
        sys.path.append(_dir)
LIB = os.path.join(ROOT, "lib")
MPY_TESTS = os.path.join(ROOT, "tests", "mpy")
# tests/mpy with the firmware's constants folded in, as the firmware is (bms_build.constfold)
MPY_TESTS_FOLDED = os.path.join(ROOT, "build", "mpy-tests")


def mpy_tests():
    """tests/mpy, folded against the firmware's constants: the directory to
    run those scripts from."""
    from bms_build.build import fold_scripts

    return fold_scripts(MPY_TESTS, MPY_TESTS_FOLDED)


_target = []


def firmware_target():
    """The MicroPython every firmware test runs on (bms_sim.target): the
    ESP32 twin, frozen firmware, where it can be built; else the 64-bit pip
    port, and the run's header says why."""
    if not _target:
        from bms_sim.target import TargetError, find_target

        try:
            _target.append(find_target())
        except TargetError as e:
            pytest.fail(str(e))
    return _target[0]


def pytest_sessionstart(session):
    """Say once, at the top (even under -q, which hides the header), which
    MicroPython the firmware tests run on, and why when it is not the twin."""
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller says it
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line("MicroPython: " + firmware_target().describe())


def micropython_binary():
    """The MicroPython binary the firmware tests run (firmware_target())."""
    return firmware_target().exe


@pytest.fixture(scope="session")
def micropython():
    return micropython_binary()


# A test script runs from source: MicroPython compiles it in the heap at
# start, on top of the firmware (which the end-to-end tests run alone, at
# the target's default heap: 56K on the twin). In word-sized K, so that it
# means the same on the 64-bit port.
SCRIPT_HEAP = "96wK"


def run_mpy(exe, script, *args, heap=None, path=None, timeout=60):
    """Run a script from tests/mpy under MicroPython with the firmware on its
    path: the target's (frozen in the twin, or compiled to .mpy as the device
    loads it), or path= (.mpy directories) to override.

    Returns the CompletedProcess; fails the test with the output when the
    script exits non-zero.
    """
    if heap is None:
        heap = SCRIPT_HEAP
    from bms_build.build import compile_lib

    scripts = mpy_tests()
    if path is None:
        path = firmware_target().path(compile_lib(), scripts)
    else:
        path = path + ":" + scripts
    env = dict(os.environ)
    env["MICROPYPATH"] = path
    cmd = [exe, "-X", "heapsize=" + heap, os.path.join(scripts, script)] + [str(a) for a in args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail("MicroPython %s failed (%d):\n%s\n%s" % (script, proc.returncode, proc.stdout, proc.stderr))
    return proc


def rtu_client(link_path, timeout=1, retries=2):
    """A connected pymodbus RTU client on the simulator's pty (no parity:
    Linux refuses it on a pseudo-terminal, so 8N2 keeps 11-bit characters)."""
    from pymodbus import FramerType
    from pymodbus.client import ModbusSerialClient

    # at least 2 s: a reply that comes after the timeout (the simulator's
    # process not scheduled in time on a loaded machine) would be taken for
    # the next request's, and a retry makes a second reply
    c = ModbusSerialClient(link_path, framer=FramerType.RTU, baudrate=19200, parity="N",
                           stopbits=2, timeout=max(timeout, 2.0), retries=retries)
    assert c.connect(), "cannot open " + link_path
    return c


def ir(client, addr, count=1):
    """Input registers addr.. from the BMS at address 1 (a pymodbus client).
    A reply of another length is a late reply to an earlier request (the
    simulator's process was not scheduled in time on a loaded machine, and
    RTU has no transaction id): the rest is let come and dropped, and the
    read asked again."""
    for _ in range(3):
        rr = client.read_input_registers(addr, count=count, device_id=1)
        if not rr.isError() and len(rr.registers) == count:
            return rr.registers
        time.sleep(0.5)
        client.socket.reset_input_buffer()
    assert not rr.isError() and len(rr.registers) == count, rr
    return rr.registers


@contextlib.contextmanager
def lfp4_sim(state, link_path, speed=20.0, server_kw=None, afe=None, **world_kw):
    """A provisioned 4-cell 10 Ah LFP pack (16 cells on afe bq76952), the
    firmware under MicroPython serving it on a pty at link_path, 3 simulated
    seconds in; afterwards the firmware's log must hold no traceback.
    server_kw: more for SimServer (lib_dir and main_py: a firmware of the
    test's own)."""
    from bms_sim.server import SimServer

    afe = afe or AFES[0]
    afe.provision(state, 4, "lfp", 10000, 1000)
    world = afe.world(cells=4, chemistry="lfp", capacity_mah=10000, **world_kw)
    server = SimServer(world, str(state), speed=speed, link_path=str(link_path), **(server_kw or {}))
    server.afe = afe
    with server:
        server.wait_sim_ms(3000, timeout=20)
        yield server
    assert "Traceback" not in server.log_tail(), server.log_tail()
class Afe:
    """One AFE chip the suites run on (issue 18): its --afe name and the pack
    it is tested with. The bq769x0 keeps each suite's own pack; the bq76952
    runs a 16S LFP home-storage pack, whatever the suite's bq769x0 pack is."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name

    @property
    def is_952(self):
        return self.name == "bq76952"

    def cells(self, suite_cells):
        return 16 if self.is_952 else suite_cells

    def chemistry(self, suite_chemistry):
        return "lfp" if self.is_952 else suite_chemistry

    def provision(self, state, cells, chemistry, capacity_mah, shunt_uohm, **kw):
        """bms_sim.cli.provision for this chip's pack (cells and chemistry as above)."""
        from bms_sim.cli import provision

        return provision(str(state), self.cells(cells), self.chemistry(chemistry), capacity_mah, shunt_uohm,
                         afe=self.name, **kw)

    def world(self, cells=4, chemistry="lfp", **kw):
        from bms_sim.world import World

        return World(cells=self.cells(cells), chemistry=self.chemistry(chemistry), afe=self.name, **kw)


    def configured(self, chip):
        """The simulated chip holds the settings the firmware gives it at
        start-up (gone after a reset until the firmware configures it again)."""
        if self.is_952:
            from bms.afe.bq76952 import regs as R

            return (chip.dm(R.DM_VCELL_MODE, 2) == chip.cell_channels
                    and chip.dm(R.DM_POWER_CONFIG, 2) == R.POWER_CONFIG_HOST)
        return chip.reg(0x0B) == 0x19  # CC_CFG, which the datasheet says to set at start-up


AFES = [Afe("bq769x0"), Afe("bq76952")]


@pytest.fixture(params=AFES, ids=str)
def afe(request):
    """Each chip in turn: a suite's pack fixture takes it, so the suite's core
    tests run on the bq769x0 pack and on a 16S LFP bq76952 pack."""
    return request.param


@pytest.fixture(scope="module", params=AFES, ids=str)
def afe_module(request):
    """afe for a module-scoped pack: the module's tests run on one chip, then the other."""
    return request.param


from mqtt_broker import mqtt_broker  # noqa: E402,F401  (the real-broker fixture: tests/mqtt_broker.py)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs simulated hours or a browser (tens of seconds): started first")


def pytest_collection_modifyitems(config, items):
    """The slow tests first (the order within each group kept): on two
    workers, one left for the end runs alone while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def ctrl_c_stops():
    """preexec_fn for a child a test stops with SIGINT, as Ctrl-C does: a
    shell starts background jobs (a CI runner's, say) with SIGINT ignored,
    the child inherits that, and Python then raises no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
