"""A second, independent Modbus client (minimalmodbus) against the firmware
under MicroPython over the simulated RS485 link."""
import minimalmodbus
import pytest

from bms import regmap as M
from bms_sim.cli import provision
from bms_sim.link import SimServer
from bms_sim.world import World


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    state = tmp_path_factory.mktemp("bms")
    provision(str(state), 4, "nmc", 20000, 500)
    world = World(cells=4, chemistry="nmc", capacity_mah=20000, soc_pct=55.0, shunt_uohm=500, seed=9)
    server = SimServer(world, str(state), speed=20.0, link_path=str(state / "tty"))
    with server:
        server.wait_sim_ms(3000, timeout=20)
        i = minimalmodbus.Instrument(server.link_path, 1, mode=minimalmodbus.MODE_RTU)
        i.serial.baudrate = 19200  # a pty has no parity (see ARCHITECTURE.md): 8N2
        i.serial.stopbits = 2
        i.serial.timeout = 1.0
        i.clear_buffers_before_each_transaction = True
        i.world = world
        yield i
        i.serial.close()
    assert "Traceback" not in server.log_tail()


def test_input_registers(inst):
    assert inst.read_register(M.IR_CELL_COUNT, functioncode=4) == 4
    cells = inst.read_registers(M.IR_CELL_MV, 4, functioncode=4)
    truth = inst.world.pack.cell_mvs()
    assert all(abs(a - b) <= 5 for a, b in zip(cells, truth)), (cells, truth)
    pack = inst.read_long(M.IR_PACK_MV, functioncode=4, signed=False)
    assert abs(pack - sum(truth)) <= 20
    soc = inst.read_register(M.IR_SOC_DPCT, functioncode=4)
    assert 400 <= soc <= 700


def test_holding_registers(inst):
    assert inst.read_register(0, functioncode=3) == 2  # chemistry: NMC
    assert inst.read_long(2, functioncode=3, signed=False) == 20000  # capacity_mah


def test_exceptions(inst):
    with pytest.raises(minimalmodbus.IllegalRequestError):  # exception 02: a gap in the map
        inst.read_register(M.IR_BALANCE_MASK + 1, functioncode=4)
    with pytest.raises(minimalmodbus.IllegalRequestError):  # exception 01: coils do not exist
        inst.read_bit(0, functioncode=1)


def test_diagnostics_echo_and_device_id(inst):
    # FC 08 sub-function 0x0000 echoes its data; 0x000B counts bus messages
    assert inst._perform_command(8, b"\x00\x00\xbe\xef") == b"\x00\x00\xbe\xef"
    count = inst._perform_command(8, b"\x00\x0b\x00\x00")
    assert count[:2] == b"\x00\x0b" and int.from_bytes(count[2:], "big") > 0
    # FC 0x11 report server ID: byte count, server id 1, run indicator 0xFF, product
    rid = inst._perform_command(0x11, b"")
    assert rid[1] == 1 and rid[2] == 0xFF and b"BMS-ESP32" in rid
