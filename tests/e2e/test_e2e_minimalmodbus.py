"""A second, independent Modbus client (minimalmodbus) against the firmware
under MicroPython over the simulated RS485 link: reads, exceptions,
diagnostics, and parameter writes (FC06 / FC16)."""
import minimalmodbus
import pytest

from bms.spec import paramtable
from bms import regmap as M
from bms import params as P
from bms_sim.server import SimServer

PIN = 1234
HA = {row[1]: row[0] for row in paramtable.TABLE}  # holding address by name


@pytest.fixture(scope="module")
def inst(tmp_path_factory, afe_module):
    """A 4S NMC bq769x0 pack, then a 16S LFP bq76952 pack (tests/conftest.py afe)."""
    afe = afe_module
    state = tmp_path_factory.mktemp("bms")
    afe.provision(state, 4, "nmc", 20000, 500)
    world = afe.world(cells=4, chemistry="nmc", capacity_mah=20000, soc_pct=55.0, shunt_uohm=500, seed=9)
    server = SimServer(world, str(state), speed=20.0, link_path=str(state / "tty"))
    with server:
        server.wait_sim_ms(3000, timeout=20)
        i = minimalmodbus.Instrument(server.link_path, 1, mode=minimalmodbus.MODE_RTU)
        i.serial.baudrate = 19200  # a pty has no parity (see ARCHITECTURE.md): 8N2
        i.serial.stopbits = 2
        i.serial.timeout = 1.0
        i.clear_buffers_before_each_transaction = True
        i.world = world
        i.afe = afe
        yield i
        i.serial.close()
    assert "Traceback" not in server.log_tail()


class refused:
    """pytest.raises for a Modbus exception reply, with a short serial
    timeout: minimalmodbus waits out the timeout for the longer normal
    reply it expected."""

    def __init__(self, inst, match):
        self.inst = inst
        self.raises = pytest.raises(minimalmodbus.IllegalRequestError, match=match)

    def __enter__(self):
        self.timeout = self.inst.serial.timeout
        self.inst.serial.timeout = 0.25
        return self.raises.__enter__()

    def __exit__(self, *exc):
        self.inst.serial.timeout = self.timeout
        return self.raises.__exit__(*exc)


@pytest.fixture
def short_timeout(inst):
    timeout = inst.serial.timeout
    inst.serial.timeout = 0.25
    yield
    inst.serial.timeout = timeout


def test_input_registers(inst):
    n = inst.afe.cells(4)
    assert inst.read_register(M.IR_CELL_COUNT, functioncode=4) == n
    cells = inst.read_registers(M.IR_CELL_MV, n, functioncode=4)
    truth = inst.world.pack.cell_mvs()
    assert all(abs(a - b) <= 5 for a, b in zip(cells, truth)), (cells, truth)
    pack = inst.read_long(M.IR_PACK_MV, functioncode=4, signed=False)
    assert abs(pack - sum(truth)) <= 20
    soc = inst.read_register(M.IR_SOC_DPCT, functioncode=4)
    assert 400 <= soc <= 700


def test_holding_registers(inst):
    # chemistry: NMC (LFP on the bq76952's pack)
    assert inst.read_register(0, functioncode=3) == P.CHEMISTRY_NAMES.index(inst.afe.chemistry("nmc"))
    assert inst.read_long(2, functioncode=3, signed=False) == 20000  # capacity_mah


def test_exceptions(inst):
    with refused(inst, "illegal data address"):  # exception 02: a gap in the map
        inst.read_register(M.IR_BALANCE_MASK + 1, functioncode=4)
    with refused(inst, "illegal function"):  # exception 01: coils do not exist
        inst.read_bit(0, functioncode=1)


def test_diagnostics_echo_and_device_id(inst, short_timeout):
    # (_perform_command does not know the reply's length: it reads until the timeout)
    # FC 08 sub-function 0x0000 echoes its data; 0x000B counts bus messages
    assert inst._perform_command(8, b"\x00\x00\xbe\xef") == b"\x00\x00\xbe\xef"
    count = inst._perform_command(8, b"\x00\x0b\x00\x00")
    assert count[:2] == b"\x00\x0b" and int.from_bytes(count[2:], "big") > 0
    # FC 0x11 report server ID: byte count, server id 1, run indicator 0xFF, product
    rid = inst._perform_command(0x11, b"")
    assert rid[1] == 1 and rid[2] == 0xFF and b"BMS-ESP32" in rid


# -- writes (FC06 / FC16) --------------------------------------------------------

def test_write_register_and_registers(inst):
    inst.write_register(M.HR_UNLOCK, PIN, functioncode=6)
    assert inst.read_register(M.HR_UNLOCK, functioncode=3) == 1
    a = HA["cell_ov_warn_mv"]
    old = inst.read_register(a, functioncode=3)
    inst.write_register(a, old - 5, functioncode=6)
    assert inst.read_register(a, functioncode=3) == old - 5
    inst.write_register(a, old - 6)  # minimalmodbus' default: FC16 of one register
    assert inst.read_register(a, functioncode=3) == old - 6
    inst.write_register(a, old, functioncode=6)
    # several parameters in one FC16, a 32-bit one among them
    ov = HA["cell_ov_mv"]
    before = inst.read_registers(ov, 4, functioncode=3)
    new = [before[0] - 10, 0, 1500, before[3] - 10]
    inst.write_registers(ov, new)
    assert inst.read_registers(ov, 4, functioncode=3) == new
    assert inst.read_long(ov + 1, functioncode=3, signed=False) == 1500
    inst.write_long(ov + 1, 2500, signed=False)
    assert inst.read_long(ov + 1, functioncode=3, signed=False) == 2500
    inst.write_registers(ov, before)
    assert inst.read_registers(ov, 4, functioncode=3) == before
    assert inst.read_register(M.IR_CONFIG_ERROR, functioncode=4) == 0


def test_write_while_locked_is_exception_01(inst):
    inst.write_register(M.HR_UNLOCK, 0, functioncode=6)
    a = HA["cell_ov_warn_mv"]
    old = inst.read_register(a, functioncode=3)
    with refused(inst, "illegal function"):
        inst.write_register(a, old - 5, functioncode=6)
    with refused(inst, "illegal function"):
        inst.write_registers(a, [old - 5])
    assert inst.read_register(a, functioncode=3) == old
    assert inst.read_register(M.IR_CONFIG_ERROR, functioncode=4) == M.ERR_LOCKED << 8


def test_write_out_of_range_is_exception_03(inst):
    inst.write_register(M.HR_UNLOCK, PIN, functioncode=6)
    a = HA["cell_ov_mv"]
    old = inst.read_register(a, functioncode=3)
    with refused(inst, "illegal data value"):
        inst.write_register(a, 6000, functioncode=6)
    assert inst.read_register(M.IR_CONFIG_ERROR, functioncode=4) == (M.ERR_RANGE << 8) | 10  # P_CELL_OV_MV
    with refused(inst, "illegal data value"):
        inst.write_registers(a, [old + 200, 0, 1000])  # above the chemistry's limit: a rule
    assert inst.read_register(M.IR_CONFIG_ERROR, functioncode=4) >> 8 == M.ERR_RULE
    with refused(inst, "illegal data address"):
        inst.write_register(HA["capacity_mah"], 0, functioncode=6)  # half a 32-bit parameter
    assert inst.read_register(a, functioncode=3) == old
    inst.write_register(M.HR_UNLOCK, 0, functioncode=6)
