"""End to end, the firmware under MicroPython: a parameter written over
Modbus survives a real restart of the firmware; SOC state and lifetime
counters go to flash before it; a provisioning file is taken in once; a
factory reset leaves the BMS unconfigured with both FETs off."""
import os
import struct

import pytest
from bms import paramload as PL
from bms.spec import paramtable as PT
from bms import regmap as M
from bms.store import Store
from conftest import ir, lfp4_sim, rtu_client

ADDR = {r[1]: r[0] for r in PT.TABLE}


@pytest.fixture
def sim(tmp_path):
    with lfp4_sim(tmp_path / "flash", tmp_path / "tty", soc_pct=60.0, seed=5) as server:
        yield server


@pytest.fixture
def client(sim):
    c = rtu_client(sim.link_path, retries=2)
    yield c
    c.close()


def hr(client, name):
    rr = client.read_holding_registers(ADDR[name], count=1, device_id=1)
    assert not rr.isError(), rr
    return rr.registers[0]


def write(client, addr, value):
    rr = client.write_register(addr, value, device_id=1)
    assert not rr.isError(), rr


def restart(sim, client):
    n = sim.restarts
    write(client, M.HR_COMMAND, M.CMD_RESTART)
    sim.wait_restarts(n + 1, timeout=20)
    sim.wait_sim_ms(sim.world.now_ms + 3000, timeout=20)


def test_provisioning_file_is_taken_in_once(sim):
    state = sim.state_dir + "/"
    assert not os.path.exists(state + PL.CONFIG_FILE)
    assert os.path.exists(state + PL.CONFIG_FILE + ".imported")
    assert Store(state, PL.STORE_NAME).load() is not None


def test_a_written_parameter_survives_a_restart(sim, client):
    write(client, M.HR_UNLOCK, 1234)
    write(client, ADDR["cell_ov_warn_mv"], 3580)
    write(client, ADDR["shunt_uohm"], 1000)  # unchanged: no save, no restart pending
    assert ir(client, M.IR_CONFIG_STATE)[0] & M.CFG_RESTART_PENDING == 0
    saves = ir(client, M.IR_PARAM_SAVES, 2)
    boot_events = ir(client, M.IR_EVENT_SEQ, 2)
    restart(sim, client)
    assert sim.restarts == 1
    assert hr(client, "cell_ov_warn_mv") == 3580
    st = ir(client, M.IR_CONFIG_STATE)[0]
    assert st & M.CFG_CONFIGURED and not st & M.CFG_UNLOCKED  # a restart locks
    assert saves == [0, 1]
    assert ir(client, M.IR_EVENT_SEQ, 2) > boot_events
    # the FETs close again after the restart: the pack is configured
    sim.wait_sim_ms(sim.world.now_ms + 2000)
    assert ir(client, M.IR_FET_FLAGS)[0] == 3


def test_soc_and_lifetime_counters_are_saved_before_a_restart(sim, client):
    with sim.lock:
        sim.world.load.set(5000)
    sim.wait_sim_ms(sim.world.now_ms + 20000, timeout=30)
    dsg = struct.unpack(">I", struct.pack(">HH", *ir(client, M.IR_LIFE_DSG_MAH, 2)))[0]
    assert 20 <= dsg <= 35  # 5 A for about 20 s: 28 mAh
    on_s = struct.unpack(">I", struct.pack(">HH", *ir(client, M.IR_LIFE_ON_S, 2)))[0]
    write(client, M.HR_UNLOCK, 1234)
    restart(sim, client)
    state = sim.state_dir + "/"
    assert Store(state, "soc").load() is not None and Store(state, "life").load() is not None
    dsg2 = struct.unpack(">I", struct.pack(">HH", *ir(client, M.IR_LIFE_DSG_MAH, 2)))[0]
    on2 = struct.unpack(">I", struct.pack(">HH", *ir(client, M.IR_LIFE_ON_S, 2)))[0]
    assert dsg2 >= dsg and on2 >= on_s  # carried over the restart, not started again
    assert ir(client, M.IR_LIFE_CELL_MAX_MV)[0] > 3000


def test_factory_reset_leaves_the_bms_unconfigured(sim, client):
    write(client, M.HR_UNLOCK, 1234)
    n = sim.restarts
    write(client, M.HR_COMMAND, M.CMD_FACTORY_RESET)
    sim.wait_restarts(n + 1, timeout=20)
    sim.wait_sim_ms(sim.world.now_ms + 3000, timeout=20)
    assert hr(client, "chemistry") == 0
    assert ir(client, M.IR_CONFIG_STATE)[0] & M.CFG_CONFIGURED == 0
    assert ir(client, M.IR_FET_FLAGS)[0] == 0
    assert Store(sim.state_dir + "/", PL.STORE_NAME).load() is None


@pytest.mark.slow
def test_a_latched_short_stays_latched_through_a_restart(sim, client):
    # the rows' latches live in the board's RTC memory (keep()): a restart
    # keeps them, so DSG is not closed into the short again
    from bms.spec import protrules

    row = [r[0] for r in protrules.ROWS].index("afe_scd")
    with sim.lock:
        sim.world.load.set(100000)  # a dead short
    retries = hr(client, "scd_retries")
    rr = client.read_holding_registers(ADDR["scd_retry_ms"], count=2, device_id=1)  # a 32-bit parameter
    retry_ms = (rr.registers[0] << 16) | rr.registers[1]
    sim.wait_sim_ms(sim.world.now_ms + (retry_ms << (retries + 1)) + 30000, timeout=60)
    latched = ir(client, M.IR_LATCHED_FLAGS, 2)
    assert ((latched[0] << 16) | latched[1]) == 1 << row
    assert os.path.exists(os.path.join(sim.state_dir, "rtc.bin"))
    write(client, M.HR_UNLOCK, 1234)
    restart(sim, client)
    latched = ir(client, M.IR_LATCHED_FLAGS, 2)
    assert ((latched[0] << 16) | latched[1]) == 1 << row, "the latch survived the restart"
    assert ir(client, M.IR_FET_FLAGS)[0] & 2 == 0 and not sim.world.fets()[1]
