"""End to end: parameter writes (FC06 / FC16) to the firmware under the
MicroPython unix port over the simulated RS485 link, with pymodbus.

Every refusal (01 locked, 02 unmapped / split 32-bit / control span,
03 range / rule / wrong PIN / bad quantity) leaves the parameters as they
were and says why in IR_CONFIG_ERROR; an accepted write is read back and
logged; broadcasts are never answered and only a lock is taken from one;
a new Modbus address, and the unlock timeout, take effect; the FC08
counters count the writes."""
import time

import pytest
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient

from bms.spec import paramtable
from bms import params as P
from bms import regmap as M
from bms.events import EV_LOCKED, EV_PARAM_SET
from bms.crc import crc16
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World

SPEED = 50.0  # simulated seconds per wall second: the default unlock (300 s) lasts 6 s of wall time
PIN = 1234
UNIT = 1
HA = {row[1]: row[0] for row in paramtable.TABLE}  # holding address by name
WIDE = {row[0] for row in paramtable.TABLE if row[2] == "uint32"}


def frame(body):
    c = crc16(bytes(body), 0, len(body))
    return bytes(body) + bytes((c & 0xFF, c >> 8))


def runs():
    """The parameter registers as contiguous (start, count) runs of at most 125."""
    regs = sorted(a + k for a in HA.values() for k in range(2 if a in WIDE else 1))
    out = []
    for a in regs:
        if out and out[-1][0] + out[-1][1] == a and out[-1][1] < 125:
            out[-1][1] += 1
        else:
            out.append([a, 1])
    return [tuple(r) for r in out]


RUNS = runs()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    state = tmp_path_factory.mktemp("bmsw")
    provision(str(state), 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, spread_mv=20, seed=5)
    server = SimServer(world, str(state), speed=SPEED, link_path=str(state / "ttyBMS"))
    with server:
        server.wait_sim_ms(2000, timeout=20)
        yield server
    assert "Traceback" not in server.log_tail(), server.log_tail()


@pytest.fixture
def client(sim):
    c = ModbusSerialClient(sim.link_path, framer=FramerType.RTU, baudrate=19200, parity="N",
                           stopbits=2, timeout=2, retries=0)  # 2 s: a loaded machine (conftest.rtu_client)
    assert c.connect()
    c.socket.reset_input_buffer()  # nothing an earlier test left on the port
    sim.test_clients = [c]  # raw() drops what its frames' replies leave on this port
    yield c
    sim.test_clients = []
    c.close()


@pytest.fixture
def unlocked(client):
    ok(client.write_register(M.HR_UNLOCK, PIN, device_id=UNIT))
    return client


def ok(rr):
    assert rr is not None and not rr.isError(), (rr, getattr(rr, "function_code", None),
                                                 getattr(rr, "exception_code", None))
    return rr


def refused(rr, code):
    assert rr.isError() and rr.exception_code == code, rr
    assert rr.dev_id == UNIT


def hr(client, addr, count=1, unit=UNIT):
    rr = client.read_holding_registers(addr, count=count, device_id=unit)
    if rr is not None and rr.isError() and getattr(rr, "function_code", 0) == 0x90:
        # an FC16 exception is no reply to a read: the late reply to a write a test
        # put on the bus raw (on a loaded machine it can reach the port after the
        # read went out). This read's own reply is still on its way: let it come
        # and drop it, or the next request would take it for its own, then read again
        time.sleep(0.5)
        client.socket.reset_input_buffer()
        rr = client.read_holding_registers(addr, count=count, device_id=unit)
    return ok(rr).registers


def ir(client, addr, count=1):
    return ok(client.read_input_registers(addr, count=count, device_id=UNIT)).registers


def config_error(client):
    return ir(client, M.IR_CONFIG_ERROR)[0]


def snapshot(client):
    """Every parameter register."""
    out = {}
    for a, n in RUNS:
        for k, w in enumerate(hr(client, a, n)):
            out[a + k] = w
    return out


def settle(sim, ms):
    sim.wait_sim_ms(sim.world.now_ms + ms, timeout=10)


def raw(sim, req, wait_ms=300):
    """Put bytes on the bus; what the BMS sent within wait_ms (simulated).
    The reply reaches the test's client port too, where no request waits
    for it: dropped, or the client's next read would take it for its own."""
    with sim.lock:
        n0 = len(sim.tx)
    sim.send(req)
    settle(sim, wait_ms)
    with sim.lock:
        got = bytes(sim.tx[n0:])
    if got:
        time.sleep(0.1)
        for c in getattr(sim, "test_clients", ()):
            c.socket.reset_input_buffer()
    return got


def events(client):
    """The event window, newest first: (seq, boot, time_s, code, value)."""
    w = ir(client, M.IR_EVENTS, M.EVENT_WINDOW * M.EVENT_WORDS)
    out = []
    for k in range(M.EVENT_WINDOW):
        r = w[k * M.EVENT_WORDS:(k + 1) * M.EVENT_WORDS]
        seq = (r[0] << 16) | r[1]
        if seq == 0xFFFFFFFF:
            break
        out.append((seq, r[2], (r[3] << 16) | r[4], r[5], (r[6] << 16) | r[7]))
    return out


# -- refusals: nothing changes, IR_CONFIG_ERROR says why ----------------------------

def test_locked_write_is_01(sim, client):
    ok(client.write_register(M.HR_UNLOCK, 0, device_id=UNIT))  # 0 locks (accepted even when locked)
    assert hr(client, M.HR_UNLOCK) == [0]
    assert not ir(client, M.IR_CONFIG_STATE)[0] & M.CFG_UNLOCKED
    before = snapshot(client)
    a = HA["cell_ov_warn_mv"]
    refused(client.write_register(a, before[a] - 10, device_id=UNIT), 1)
    assert config_error(client) == M.ERR_LOCKED << 8
    refused(client.write_registers(HA["cell_ov_mv"], [3600, 0, 1000], device_id=UNIT), 1)
    refused(client.write_register(M.HR_COMMAND, M.CMD_RESTART, device_id=UNIT), 1)
    assert config_error(client) == M.ERR_LOCKED << 8
    assert snapshot(client) == before
    assert sim.restarts == 0


def test_wrong_pin_is_03_and_right_pin_unlocks(sim, client):
    ok(client.write_register(M.HR_UNLOCK, 0, device_id=UNIT))
    before = snapshot(client)
    refused(client.write_register(M.HR_UNLOCK, PIN + 1, device_id=UNIT), 3)
    assert config_error(client) == (M.ERR_BAD_PIN << 8) | 4  # four tries left
    assert hr(client, M.HR_UNLOCK) == [0]
    assert snapshot(client) == before
    ok(client.write_register(M.HR_UNLOCK, PIN, device_id=UNIT))
    assert hr(client, M.HR_UNLOCK) == [1]
    state, error, left = ir(client, M.IR_CONFIG_STATE, 3)
    assert state & M.CFG_UNLOCKED and state & M.CFG_CONFIGURED and not state & M.CFG_PIN_LOCKOUT
    assert error == 0 and 0 < left <= 300
    assert hr(client, HA["pin"]) == [0]  # the PIN never reads back
    assert snapshot(client) == before


def test_unmapped_is_02(sim, unlocked):
    c = unlocked
    before = snapshot(c)
    refused(c.write_register(0x002C, 1, device_id=UNIT), 2)  # a gap in the map
    refused(c.write_registers(HA["pack_uv_release_ms"], [0, 2000, 0], device_id=UNIT), 2)  # runs into the gap
    refused(c.write_register(M.HR_SIZE, 1, device_id=UNIT), 2)
    refused(c.write_register(0xFFFF, 1, device_id=UNIT), 2)
    assert snapshot(c) == before


def test_split_32bit_is_02(sim, unlocked):
    c = unlocked
    a = HA["capacity_mah"]
    before = snapshot(c)
    refused(c.write_register(a, 0, device_id=UNIT), 2)  # the high word alone
    assert config_error(c) == (M.ERR_SPLIT << 8) | P.P_CAPACITY_MAH
    refused(c.write_register(a + 1, 20000, device_id=UNIT), 2)  # the low word alone
    assert config_error(c) == (M.ERR_SPLIT << 8) | P.P_CAPACITY_MAH
    refused(c.write_registers(a - 1, [before[a - 1], 0], device_id=UNIT), 2)  # ends in the middle
    assert config_error(c) == (M.ERR_SPLIT << 8) | P.P_CAPACITY_MAH
    d = HA["cell_ov_delay_ms"]
    refused(c.write_registers(d + 1, [1000, before[d + 2]], device_id=UNIT), 2)  # starts in the middle
    assert config_error(c) == (M.ERR_SPLIT << 8) | P.P_CELL_OV_DELAY_MS
    assert snapshot(c) == before


def test_control_register_with_others_is_02(sim, unlocked):
    c = unlocked
    before = snapshot(c)
    refused(c.write_registers(M.HR_UNLOCK, [PIN, 0], device_id=UNIT), 2)
    assert config_error(c) == M.ERR_CONTROL_SPAN << 8
    refused(c.write_registers(M.HR_UNLOCK - 1, [0, PIN], device_id=UNIT), 2)
    assert config_error(c) == M.ERR_CONTROL_SPAN << 8
    refused(c.write_register(M.HR_COMMAND, 99, device_id=UNIT), 3)  # unknown command
    assert config_error(c) == (M.ERR_COMMAND << 8) | 99
    assert snapshot(c) == before
    assert hr(c, M.HR_UNLOCK) == [1]


def test_out_of_range_is_03(sim, unlocked):
    c = unlocked
    before = snapshot(c)
    refused(c.write_register(HA["cell_ov_mv"], 6000, device_id=UNIT), 3)
    assert config_error(c) == (M.ERR_RANGE << 8) | P.P_CELL_OV_MV
    refused(c.write_registers(HA["capacity_mah"], [0x001E, 0x8481], device_id=UNIT), 3)  # 2000001 mAh
    assert config_error(c) == (M.ERR_RANGE << 8) | P.P_CAPACITY_MAH
    refused(c.write_register(HA["chg_ot_dc"], 0x10000 - 500, device_id=UNIT), 3)  # -50.0 degC < -40.0
    assert config_error(c) == (M.ERR_RANGE << 8) | P.P_CHG_OT_DC
    assert snapshot(c) == before


def test_rule_is_03_and_all_or_nothing(sim, unlocked):
    c = unlocked
    before = snapshot(c)
    ov = before[HA["cell_ov_mv"]]
    # the over-voltage release above the trip breaks rule 1
    refused(c.write_register(HA["cell_ov_release_mv"], ov + 10, device_id=UNIT), 3)
    assert config_error(c) == (M.ERR_RULE << 8) | 1
    # one FC16: a good trip and delay, a release that breaks the rule -> none of them
    a = HA["cell_ov_mv"]
    refused(c.write_registers(a, [ov - 20, 0, 1500, ov + 5], device_id=UNIT), 3)
    assert config_error(c) == (M.ERR_RULE << 8) | 1
    # a write that would leave the configured pack unconfigured
    refused(c.write_register(HA["chemistry"], P.CHEM_NONE, device_id=UNIT), 3)
    assert config_error(c) == M.ERR_UNCONFIGURE << 8
    assert snapshot(c) == before


def test_fc16_quantity_124_is_03(sim, client):
    before = snapshot(client)
    # quantity 124 (byte count 2: the frame still fits the 256-byte ADU)
    req = frame((UNIT, 16, 0, HA["cell_ov_mv"], 0, 124, 2, 0x0E, 0x10))
    assert raw(sim, req) == frame((UNIT, 0x90, 3))
    req = frame((UNIT, 16, 0, 0, 0, 0, 0))  # quantity 0
    assert raw(sim, req) == frame((UNIT, 0x90, 3))
    assert snapshot(client) == before


def test_fc16_124_registers_from_pymodbus_is_03(sim, unlocked):
    rr = unlocked.write_registers(HA["cell_ov_mv"], [0] * 124, device_id=UNIT)
    refused(rr, 3)


def test_still_serving_after_oversized_frame(sim, client):
    before = snapshot(client)
    with sim.lock:
        n0 = len(sim.tx)
    raw(sim, frame((UNIT, 16, 0, 0, 0, 124, 248) + (0,) * 248), wait_ms=500)
    # a 124-register write is over the limit: exception 03 (bms.modbus_rtu RX_SIZE). Wait for
    # that reply: on a loaded machine it can come after the 500 ms, and a reply still on its
    # way would be taken for the next read's
    deadline = time.monotonic() + 5.0
    while True:
        with sim.lock:
            got = bytes(sim.tx[n0:])
        if len(got) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert got[:3] == bytes((UNIT, 0x90, 3)), got.hex()
    # that reply is on the client's port too, unread (the test put the frame on the bus
    # itself): drop it, so the next read takes its own reply
    time.sleep(0.1)
    client.socket.reset_input_buffer()
    assert snapshot(client) == before


# -- accepted writes ------------------------------------------------------------

def test_fc16_multi_parameter_write_read_back_and_logged(sim, unlocked):
    c = unlocked
    a = HA["cell_ov_mv"]
    assert (HA["cell_ov_delay_ms"], HA["cell_ov_release_mv"]) == (a + 1, a + 3)
    before = snapshot(c)
    saves = ir(c, M.IR_PARAM_SAVES, 2)
    ov, delay, release = before[a], (before[a + 1] << 16) | before[a + 2], before[a + 3]
    new = [ov - 10, 0, 3000 if delay != 3000 else 2500, release - 10]
    rr = ok(c.write_registers(a, new, device_id=UNIT))
    assert rr.address == a and rr.count == 4
    assert hr(c, a, 4) == new
    after = snapshot(c)
    assert {k: v for k, v in after.items() if v != before[k]} == {a: new[0], a + 2: new[2], a + 3: new[3]}
    assert config_error(c) == 0
    settle(sim, 1000)  # logged and saved after the reply; the event window follows at the next cycle
    ev = events(c)
    changes = [(code, value) for _, _, _, code, value in ev[:3]]
    assert changes == [(EV_PARAM_SET, ((a + 3) << 20) | new[3]), (EV_PARAM_SET, ((a + 1) << 20) | new[2]),
                       (EV_PARAM_SET, (a << 20) | new[0])], ev
    assert ev[0][0] == ev[1][0] + 1 == ev[2][0] + 2
    s = ir(c, M.IR_PARAM_SAVES, 2)
    assert ((s[0] << 16) | s[1]) == ((saves[0] << 16) | saves[1]) + 1
    assert not ir(c, M.IR_CONFIG_STATE)[0] & M.CFG_RESTART_PENDING  # live parameters: no restart
    # and back
    ok(c.write_registers(a, [before[a], before[a + 1], before[a + 2], before[a + 3]], device_id=UNIT))
    assert snapshot(c) == before


def test_fc06_write_read_back(sim, unlocked):
    c = unlocked
    a = HA["cell_ov_warn_mv"]
    old = hr(c, a)[0]
    rr = ok(c.write_register(a, old - 5, device_id=UNIT))
    assert rr.address == a and rr.registers == [old - 5]
    assert hr(c, a) == [old - 5]
    a2 = HA["chg_ut_dc"]  # int16: a negative value
    old2 = hr(c, a2)[0]
    ok(c.write_register(a2, 0x10000 - 50, device_id=UNIT))  # -5.0 degC
    assert hr(c, a2) == [0x10000 - 50]
    ok(c.write_register(a, old, device_id=UNIT))
    ok(c.write_register(a2, old2, device_id=UNIT))
    assert hr(c, a) == [old] and hr(c, a2) == [old2]


# -- broadcasts -----------------------------------------------------------------

def test_broadcast_parameter_write_not_applied(sim, unlocked):
    c = unlocked
    a = HA["cell_ov_warn_mv"]
    before = snapshot(c)
    with sim.lock:
        n0 = len(sim.tx)
    assert c.write_registers(a, [before[a] - 7], device_id=0, no_response_expected=True) is None
    assert c.write_register(a, before[a] - 8, device_id=0, no_response_expected=True) is None
    assert raw(sim, frame((0, 6, a >> 8, a & 0xFF, 0x0D, 0xAC))) == b""
    settle(sim, 300)
    with sim.lock:
        assert bytes(sim.tx[n0:]) == b"", "a broadcast must never be answered"
    assert snapshot(c) == before
    assert hr(c, M.HR_UNLOCK) == [1]  # and it did not lock


def test_broadcast_lock_is_applied(sim, unlocked):
    c = unlocked
    assert hr(c, M.HR_UNLOCK) == [1]
    assert raw(sim, frame((0, 6, 0, M.HR_UNLOCK, 0, 0))) == b""
    assert hr(c, M.HR_UNLOCK) == [0]
    assert not ir(c, M.IR_CONFIG_STATE)[0] & M.CFG_UNLOCKED
    a = HA["cell_ov_warn_mv"]
    refused(c.write_register(a, hr(c, a)[0] - 5, device_id=UNIT), 1)
    # a broadcast unlock is not taken
    assert raw(sim, frame((0, 6, 0, M.HR_UNLOCK, PIN >> 8, PIN & 0xFF))) == b""
    assert hr(c, M.HR_UNLOCK) == [0]
    refused(c.write_register(a, hr(c, a)[0] - 5, device_id=UNIT), 1)


# -- what takes effect after the reply ------------------------------------------

def test_modbus_address_change(sim, unlocked):
    c = unlocked
    a = HA["modbus_address"]
    assert hr(c, a) == [UNIT]
    read1 = frame((UNIT, 3, 0, a, 0, 1))
    rr = ok(c.write_register(a, 7, device_id=UNIT))  # the reply comes from the old address
    assert rr.dev_id == UNIT and rr.registers == [7]
    assert raw(sim, read1) == b"", "the old address must be silent now"
    assert hr(c, a, unit=7) == [7]
    assert raw(sim, frame((7, 3, 0, a, 0, 1))) == frame((7, 3, 2, 0, 7))
    # and back, the reply from 7
    rr = ok(c.write_register(a, UNIT, device_id=7))
    assert rr.dev_id == 7
    assert raw(sim, frame((7, 3, 0, a, 0, 1))) == b""
    assert hr(c, a) == [UNIT]


def test_unlock_expires(sim, unlocked):
    c = unlocked
    t = HA["unlock_timeout_s"]
    old = hr(c, t)[0]
    ok(c.write_register(t, 10, device_id=UNIT))
    start = sim.world.now_ms
    left = ir(c, M.IR_UNLOCK_LEFT_S)[0]
    assert left <= 10
    a = HA["cell_ov_warn_mv"]
    v = hr(c, a)[0]
    sim.wait_sim_ms(start + 11000, timeout=10)
    assert hr(c, M.HR_UNLOCK) == [0]
    assert ir(c, M.IR_UNLOCK_LEFT_S) == [0]
    refused(c.write_register(a, v - 5, device_id=UNIT), 1)
    assert config_error(c) == M.ERR_LOCKED << 8
    assert hr(c, a) == [v]
    assert EV_LOCKED in [e[3] for e in events(c)]
    # restore: the unlock lasts 10 simulated seconds, half a wall second at
    # SPEED, which a loaded machine can let pass between two requests
    for _ in range(5):
        ok(c.write_register(M.HR_UNLOCK, PIN, device_id=UNIT))
        rr = c.write_register(t, old, device_id=UNIT)
        if not rr.isError():
            break
    assert hr(c, t) == [old]


# -- FC08 counters ----------------------------------------------------------------

def test_diagnostic_counters_count_writes(sim, client):
    c = client
    a = HA["cell_ov_warn_mv"]
    v = hr(c, a)[0]
    ok(c.diag_clear_counters(device_id=UNIT))
    ok(c.write_register(M.HR_UNLOCK, PIN, device_id=UNIT))  # 1: accepted
    ok(c.write_registers(a, [v], device_id=UNIT))  # 2: accepted (the same value)
    refused(c.write_register(HA["cell_ov_mv"], 9999, device_id=UNIT), 3)  # 3: exception
    assert raw(sim, frame((0, 16, 0, a, 0, 1, 2, 0, 1))) == b""  # 4: broadcast, no response
    bad = bytearray(frame((UNIT, 6, 0, a, 0, 1)))
    bad[-1] ^= 0x5A
    assert raw(sim, bytes(bad)) == b""  # a CRC error
    assert raw(sim, frame((9, 6, 0, a, 0, 1))) == b""  # 5: another slave's
    assert ok(c.diag_read_bus_message_count(device_id=UNIT)).message == 6  # 0x0B: + itself
    assert ok(c.diag_read_bus_comm_error_count(device_id=UNIT)).message == 1  # 0x0C
    assert ok(c.diag_read_bus_exception_error_count(device_id=UNIT)).message == 1  # 0x0D
    assert ok(c.diag_read_device_message_count(device_id=UNIT)).message == 8  # 0x0E: 4 + 4 reads
    assert ok(c.diag_read_device_no_response_count(device_id=UNIT)).message == 1  # 0x0F
    assert hr(c, a) == [v]
