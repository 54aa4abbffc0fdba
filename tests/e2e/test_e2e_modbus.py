"""End to end: the firmware under the MicroPython unix port, the simulated
pack behind its I2C, and pymodbus polling it over the pseudo-terminal link."""
import json
import resource
import time

import pytest
import serial
from bms import params as P
from bms import regmap as M
from bms.crc import crc16
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World
from bmsctl import cli as ctl
from conftest import lfp4_sim, rtu_client


def frame(body):
    c = crc16(body, 0, len(body))
    return bytes(body) + bytes((c & 0xFF, c >> 8))


@pytest.fixture(scope="module")
def sim(tmp_path_factory, afe_module):
    """A 4S LFP bq769x0 pack, then a 16S LFP bq76952 pack (tests/conftest.py afe)."""
    state = tmp_path_factory.mktemp("bms")
    with lfp4_sim(state, state / "ttyBMS", soc_pct=60.0, spread_mv=30, seed=3, afe=afe_module) as server:
        yield server


@pytest.fixture
def client(sim):
    c = rtu_client(sim.link_path, retries=1)
    yield c
    c.close()


def read_input(client, addr, count):
    rr = client.read_input_registers(addr, count=count, device_id=1)
    assert not rr.isError(), rr
    return rr.registers


def test_cell_voltages_match_the_pack(sim, client):
    regs = read_input(client, M.IR_CELL_MV, M.MAX_CELLS)
    with sim.lock:
        truth = sim.world.pack.cell_mvs()
    n = len(truth)
    assert read_input(client, M.IR_CELL_COUNT, 1) == [n]
    for i in range(n):
        assert abs(regs[i] - truth[i]) <= 5, (regs[:n], truth)
    assert regs[n:] == [0] * (M.MAX_CELLS - n)
    pack = read_input(client, M.IR_PACK_MV, 2)
    assert abs(((pack[0] << 16) | pack[1]) - sum(truth)) <= 20


def test_current_sign_and_fets_over_modbus(sim, client):
    flags = read_input(client, M.IR_FET_FLAGS, 1)[0]
    assert flags == M.FET_CHG | M.FET_DSG, "a healthy configured pack has both FETs on"
    with sim.lock:
        sim.world.load.set(3000)
        t = sim.world.now_ms
    sim.wait_sim_ms(t + 1000)
    w = read_input(client, M.IR_CURRENT_MA, 2)
    ma = ((w[0] << 16) | w[1]) - (1 << 32 if w[0] & 0x8000 else 0)
    assert -3020 <= ma <= -2980, ma
    with sim.lock:
        sim.world.load.off()


def test_measurements_keep_coming(sim, client):
    # the simulated time runs on while a request is on the wire: bracket each read
    t0 = sim.world.now_ms
    a = read_input(client, M.IR_MEAS_COUNT, 1)[0]
    t1 = sim.world.now_ms
    sim.wait_sim_ms(t1 + 2000)
    t2 = sim.world.now_ms
    b = read_input(client, M.IR_MEAS_COUNT, 1)[0]
    t3 = sim.world.now_ms
    # one measurement per 250 ms coulomb-counter window, none lost
    n = (b - a) % 65536
    assert (t2 - t1) // 250 - 1 <= n <= (t3 - t0) // 250 + 1, (a, b, t0, t1, t2, t3)
    assert n >= 7
    assert read_input(client, M.IR_PROTECT_FLAGS, 2) == [0, 0]


def test_holding_registers_show_the_configuration(sim, client):
    rr = client.read_holding_registers(0, count=P.P_FET_TEMP_SENSOR + 2, device_id=1)
    assert not rr.isError()
    assert rr.registers[0] == P.CHEM_LFP
    # cell_channels: 4S on a bq76920; 16S on a bq76952, every input
    assert rr.registers[1] == (0xFFFF if sim.afe.is_952 else 0x17)
    assert rr.registers[2:4] == [0, 10000]  # capacity_mah, uint32


def test_device_identification_and_diagnostics(sim, client):
    from bms import VERSION

    rr = client.read_device_information(read_code=2, object_id=0, device_id=1)
    assert not rr.isError(), rr
    assert rr.information[0] == b"open-bms" and rr.information[1] == b"BMS-ESP32"
    assert rr.information[2] == VERSION.encode()
    assert (b"bq76952" if sim.afe.is_952 else b"bq76920") in rr.information[5]
    rr = client.diag_read_bus_message_count(device_id=1)
    assert not rr.isError() and rr.message > 0


def test_unmapped_register_gets_exception_02(sim, client):
    rr = client.read_input_registers(M.IR_BALANCE_MASK, count=2, device_id=1)  # 0x1D is a gap
    assert rr.isError() and rr.exception_code == 2
    rr = client.read_input_registers(M.IR_SIZE, count=1, device_id=1)
    assert rr.isError() and rr.exception_code == 2


def test_unsupported_function_gets_exception_01(sim, client):
    rr = client.read_coils(0, count=1, device_id=1)
    assert rr.isError() and rr.exception_code == 1


@pytest.fixture
def raw(sim):
    port = serial.Serial(sim.link_path, 19200, timeout=0.3)
    port.reset_input_buffer()
    yield port
    port.close()


def test_corrupted_frame_is_ignored_and_next_good_one_answered(sim, raw):
    good = frame(bytes([1, 4, 0, 0, 0, 1]))
    bad = bytearray(good)
    bad[3] ^= 0x10
    raw.write(bad)
    assert raw.read(64) == b"", "a frame with a bad CRC must get no reply"
    raw.write(good)
    reply = raw.read(7)
    assert len(reply) == 7 and reply[:3] == bytes([1, 4, 2]) and reply[3:5] == bytes([0, sim.afe.cells(4)])
    assert crc16(reply, 0, 5) == reply[5] | (reply[6] << 8)


def test_other_address_and_broadcast_get_no_reply(sim, raw):
    raw.write(frame(bytes([2, 4, 0, 0, 0, 1])))
    assert raw.read(64) == b""
    raw.write(frame(bytes([0, 4, 0, 0, 0, 1])))
    assert raw.read(64) == b""


def test_bmsctl_status_json(sim, capsys):
    class Out:
        buf = []

        def write(self, s):
            self.buf.append(s)

        def isatty(self):
            return False

    out = Out()
    assert ctl.main(["--port", sim.link_path, "status", "--json"], out=out) == 0
    d = json.loads("".join(out.buf))
    n = sim.afe.cells(4)
    assert d["cell_count"] == n and len(d["cells_v"]) == n
    assert all(3.0 < v < 3.5 for v in d["cells_v"])
    assert d["protections"] == [] and d["config"]["chemistry"] == "lfp"
    out.buf = []
    assert ctl.main(["--port", sim.link_path, "status"], out=out) == 0
    text = "".join(out.buf)
    assert "cell %2d" % n in text and "Protect   none" in text


def test_bmsctl_wrong_unit_says_what_to_check(sim, capsys):
    assert ctl.main(["--port", sim.link_path, "--unit", "9", "--timeout", "0.3", "status"]) == 3
    err = capsys.readouterr().err
    assert "no reply from unit 9" in err and "--unit" in err


@pytest.mark.slow
def test_one_simulated_hour_takes_under_twenty_cpu_seconds(tmp_path):
    # CPU time (this process's link and World, and the MicroPython firmware),
    # not wall time: the suite shares the machine's cores with other tests
    provision(str(tmp_path), 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=50.0)
    t0 = time.monotonic()
    p0 = time.process_time()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with SimServer(world, str(tmp_path), speed=None) as server:
        server.wait_sim_ms(3600 * 1000, timeout=60)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - p0 + (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    print("one simulated hour, 4 cells: %.2f s of CPU, %.2f s of wall time, %d link requests"
          % (cpu, time.monotonic() - t0, server.requests))
    assert cpu < 20.0
    assert "Traceback" not in server.log_tail()
