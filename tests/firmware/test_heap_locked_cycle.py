"""Proof, under real MicroPython with the heap locked, that the control
cycle and the Modbus path (reads, writes accepted and refused) allocate
nothing in steady state."""
import os

import pytest

from bms.spec import paramtable as PT
from bms.spec import protrules
from bms import regmap as M
from bms.crc import crc16
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World
from conftest import mpy_tests


ADDR = {r[1]: r[0] for r in PT.TABLE}


def frame(body):
    c = crc16(body, 0, len(body))
    return bytes(body) + bytes((c & 0xFF, c >> 8))


@pytest.mark.parametrize("cells,aged,cold", [(4, False, False), (15, False, False), (15, True, False),
                                             (4, False, True)])
def test_cycle_and_modbus_allocate_nothing(tmp_path, cells, aged, cold):
    """aged: uptime, lifetime charge and time start where 13 days of service
    leave them (past 2**30 ms): on the ESP32 twin's 31-bit small ints any
    value the cycle makes from them at 2**30 or more would allocate.
    cold: too cold to charge, the load going on and off: the charge FET
    switches for its body diode (bms.switching.switch_fets) with the heap locked."""
    provision(str(tmp_path), cells, "nmc", 20000, 500)
    world = World(cells=cells, chemistry="nmc", capacity_mah=20000, soc_pct=50.0, shunt_uohm=500)
    if cold:
        world.pack.temperatures_c[0] = -5.0
    diode_on = 0  # host-side samples with CHG on for its diode
    server = SimServer(world, str(tmp_path), speed=50.0,
                       main_py=os.path.join(mpy_tests(), "mpy_cycle_alloc.py"),
                       main_args=["20000", "aged"] if aged else [])
    ov = ADDR["cell_ov_mv"]
    same = frame(bytes([1, 6, 0, ov]) + (4250).to_bytes(2, "big"))  # NMC's default: accepted, nothing to save
    requests = [frame(bytes([1, 4, 0, M.IR_BALANCE_MASK, 0, 2])),  # exception 02 (0x1D is a gap)
                frame(bytes([1, 4, 0, M.IR_CELL_MV, 0, 15])),
                frame(bytes([1, 3, 0, 0, 0, 12])),
                frame(bytes([1, 1, 0, 0, 0, 1])),  # exception 01
                same,
                frame(bytes([1, 6, 0, ov]) + (9999).to_bytes(2, "big")),  # out of range: exception 03
                frame(bytes([1, 0x10, 0, ov, 0, 2, 4, 0x10, 0x68, 0, 0]))]  # half a 32-bit value: 02
    with server:
        world.load.set(4000)
        server.wait_sim_ms(1000)
        # unlocked while the heap is still free (the unlock is logged); the
        # writes below come with the heap locked
        server.send(frame(bytes([1, 6, 0, M.HR_UNLOCK]) + (1234).to_bytes(2, "big")))
        server.wait_sim_ms(4000)
        sent = 0
        t = world.now_ms
        while not server.exited.is_set() and sent < 40:
            server.send(requests[sent % len(requests)])
            sent += 1
            if cold and sent % 5 == 0:
                with server.lock:
                    diode_on += world.fets() == (True, True)
                    world.load.set(0 if world.load.current_ma else 4000)
            t += 300
            try:
                server.wait_sim_ms(t, timeout=10)
            except Exception:
                break
        server.exited.wait(30)
        log = server.log_tail()
    assert "OK" in log, log
    stats = dict(kv.split("=") for kv in log.split("OK", 1)[1].split())
    assert int(stats["cycles"]) >= 70  # 20 simulated seconds of 250 ms windows
    assert int(stats["modbus"]) >= 30
    chg_ut = [r[0] for r in protrules.ROWS].index("chg_ut")
    assert stats["faults"] == str(1 << chg_ut if cold else 0)
    if cold:
        assert diode_on >= 2, "the charge FET never went on for its diode"
    assert int(stats["uptime_s"]) > (13 * 86400 if aged else 20)
    assert server.tx.count(bytes([1, 0x84, 2])) >= 5 and server.tx.count(bytes([1, 0x81, 1])) >= 5
    assert server.tx.count(bytes([1, 3, 24])) >= 5 and server.tx.count(bytes([1, 4, 30])) >= 5
    assert server.tx.count(same) >= 5  # a write answered (FC 06 echo)
    assert server.tx.count(bytes([1, 0x86, 3])) >= 5 and server.tx.count(bytes([1, 0x90, 2])) >= 5
