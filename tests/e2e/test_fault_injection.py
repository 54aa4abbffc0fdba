"""Fault injection end to end (docs/PROTECTION.md, "Fault injection: what
each fault does"): the firmware under MicroPython on the twin, started by
tests/mpy/fault_main.py with an exception raised at one named point, while
a charger pushes an NMC pack into over-voltage. Each point shows one
of two outcomes:

- carried on: the loop caught it, counted it (faults, fault_last, event
  223 once) and kept protecting: no reset, the over-voltage trips;
- guard: bms.start switched the FETs off and reset the MCU (event 222);
  the next boot protects: the over-voltage trips.

Either way, seen from the simulator: no FET was on longer than one period
plus the watchdog time after the last protecting cycle (the firmware feeds
the watchdog only once a cycle has measured, judged and switched), and the
firmware's log holds no traceback that ended it (the guard's, once, in the
guard cases)."""
import os
import re

import pytest

from bms import params as P
from bms.spec import paramtable
from bms import power as PW
from bms.spec import protrules
from bms import regmap as M
from bms.afe import WINDOW_MS as PERIOD_MS
from bms.events import (AT_FLASH, AT_LEDS, AT_MEASURE, AT_MODBUS, AT_MODES, AT_PROTECT, AT_SOC, AT_UPLINK,
                        EV_CRASH, EV_FAULT)
from bms.boards import REASON_CRASH
from bms.config import SAVE_PARAMS
from bms.events import EV_STORE_SAVE
from bms.eventlog import EventLog
from bms.events import KIND_MEMORY, KIND_OS, KIND_OTHER
from bms.store import FAIL_ERROR
from bms_sim.cli import provision
from bms_sim.server import SimServer
from bms_sim.world import World
from conftest import MPY_TESTS, ir, rtu_client

WDT_MS = 8000  # wdt_ms's default
RUN_MS = 60000  # without a fault, pack_ov trips ~20 s in
ROW_NAMES = [r[0] for r in protrules.ROWS]
OV_TRIPS = {ROW_NAMES.index("cell_ov") + 1, ROW_NAMES.index("pack_ov") + 1}  # their trip events' codes
AFE_COMM = ROW_NAMES.index("afe_comm") + 1
KINDS = {"error": KIND_OTHER, "memory": KIND_MEMORY, "os": KIND_OS}
HA = {row[1]: row[0] for row in paramtable.TABLE}

# point, kind, first failing call, failing calls (0: all from then on),
# outcome, the AT_ place the firmware reports. The first calls come a few
# seconds in, before the over-voltage; a persistent fault lasts past it.
CASES = [
    ("afe_read", "os", 60, 40, "carried on", None),  # ~2 s of a dead bus: the comm fault row, FETs off
    ("afe_read", "memory", 60, 1, "guard", AT_MEASURE),
    ("afe_write", "os", 20, 20, "carried on", None),
    ("afe_write", "memory", 20, 1, "guard", AT_MEASURE),
    ("protection", "error", 20, 1, "guard", AT_PROTECT),
    ("protection", "memory", 20, 1, "guard", AT_PROTECT),
    ("soc", "error", 10, 0, "carried on", AT_SOC),
    ("soc", "memory", 10, 0, "carried on", AT_SOC),
    ("modbus", "error", 20, 300, "carried on", AT_MODBUS),
    ("param_save", "error", 1, 0, "carried on", None),  # counted in save_errors, as every save
    ("event_write", "os", 5, 3, "carried on", AT_FLASH),  # events are few: 3 writes take seconds
    ("event_write", "error", 5, 3, "carried on", AT_FLASH),
    ("uplink", "error", 1, 0, "carried on", AT_UPLINK),
    ("led", "error", 20, 0, "carried on", AT_LEDS),
    ("sleep", "os", 1, 0, "carried on", AT_MODES),
]


def run(tmp_path, point, kind, first, count, extra=None, before=None, during=None):
    """The scenario with one fault: returns (server, trace, events). trace:
    (sim ms, chg on, dsg on, the last feed's sim ms) per simulated step."""
    state = str(tmp_path / "flash")
    provision(state, 4, "nmc", 10000, 1000, extra=extra)
    if before:
        before(state)
    world = World(cells=4, chemistry="nmc", capacity_mah=10000, soc_pct=99.0)
    world.charger.set(5000, None)  # a charger that never stops: over-voltage ~20 s in
    server = SimServer(world, state, speed=None, link_path=str(tmp_path / "tty"),
                       main_py=os.path.join(MPY_TESTS, "fault_main.py"), main_args=(point, kind, first, count))
    trace = []
    server.on_advance = lambda w: trace.append((w.now_ms, w.chip.chg_on, w.chip.dsg_on, server.wdt_feed_ms))
    with server:
        if during:
            during(server)
        server.wait_sim_ms(RUN_MS, timeout=120)
        with server.lock:
            fets = world.fets()
        registers = None
        if point != "modbus" or count:
            c = rtu_client(server.link_path, retries=3)
            try:
                registers = ir(c, M.IR_FAULTS, 2) + ir(c, M.IR_SAVE_ERRORS) + ir(c, M.IR_CONFIG_STATE) + \
                    ir(c, M.IR_POWER_MODE, 2)
            finally:
                c.close()
            if point == "soc":
                import test_e2e_protection as E
                from bmsctl.fmt import format_status

                registers.append(format_status(E.status(server.link_path)))
    log = EventLog(os.path.join(state, "events.bin"))
    log.load()
    events = [(r[3], r[4]) for r in log.read(0, 1000)]
    return server, trace, events, fets, registers


def unwatched_ms(trace):
    """The longest a FET was on since the last protecting cycle (or since
    power-on, before the first)."""
    worst = 0
    for now, chg, dsg, fed in trace:
        if chg or dsg:
            worst = max(worst, now - (fed or 0))
    return worst


@pytest.mark.parametrize("point, kind, first, count, outcome, at", CASES,
                         ids=["%s-%s" % (c[0], c[1]) for c in CASES])
def test_fault(tmp_path, point, kind, first, count, outcome, at):
    extra = None
    before = during = None
    if point == "uplink":
        # the network on, its broker refusing: up.step runs every pass
        extra = {"net_enable": 1}

        def before(state):
            with open(os.path.join(state, "net.cfg"), "w") as f:
                f.write("host = 127.0.0.1\nport = 9\ndevice_id = pack1\ntimeout_ms = 100\n")
    elif point == "sleep":
        def during(server):
            server.at(3000, lambda: server.press_button(4000))  # a long press: deep sleep
    elif point == "param_save":
        def during(server):
            server.wait_sim_ms(3000)
            c = rtu_client(server.link_path, retries=3)
            try:
                assert not c.write_register(M.HR_UNLOCK, 1234, device_id=1).isError()
                assert not c.write_register(HA["led_brightness_pct"], 40, device_id=1).isError()
            finally:
                c.close()
    server, trace, events, fets, regs = run(tmp_path, point, kind, first, count, extra, before, during)
    log = server.log_tail(400)
    codes = [e[0] for e in events]
    # protection went on: an over-voltage trip holds the charge FET off
    assert OV_TRIPS & set(codes), (events, log)
    assert fets == (False, True), (fets, log)
    worst = unwatched_ms(trace)
    assert worst <= PERIOD_MS + WDT_MS, worst
    # what the firmware achieves: a FET on only within a cycle or so of the last protecting one
    assert worst <= 2 * PERIOD_MS, worst
    if outcome == "guard":
        assert server.restarts == 1 and server.reset_reasons == [REASON_CRASH], (server.reset_reasons, log)
        assert (EV_CRASH, (at << 8) | KINDS[kind]) in events, events
        assert log.count("Traceback") == 1, log  # the guard's, printed on the way down
        return
    assert server.restarts == 0, log
    assert "Traceback" not in log, log
    faults, last, save_errors, cfg_state, mode, cause = regs[:6]
    if point == "param_save":
        assert save_errors >= 1 and cfg_state & M.CFG_SAVE_FAILED, regs
        assert (EV_STORE_SAVE, (SAVE_PARAMS << 8) | FAIL_ERROR) in events, events
        return
    if point.startswith("afe_"):
        assert AFE_COMM in codes, events  # FETs off on the comm fault, the AFE configured again
    if at is None:
        return  # caught where it happened: the AFE's comm fault
    assert last == (at << 8) | KINDS[kind], regs
    assert [e for e in events if e[0] == EV_FAULT] in ([(EV_FAULT, last)], []), events  # once, not per retry
    if point == "event_write":
        assert faults == count, regs  # its own EV_FAULT could not be written: it shows in fault_last
    else:
        assert (EV_FAULT, last) in events, events
    if point == "uplink":
        # a failure rests MQTT 1 s, doubling: in 60 s 1+2+4+8+16+32 s, not every pass
        assert 4 <= faults <= 8, regs
    elif point == "modbus":
        assert faults == count, regs
    elif point == "led":
        assert not any(server.leds), server.leds  # dark, not frozen mid-animation
    elif point == "sleep":
        assert (mode, cause) == (PW.WORKING, PW.CAUSE_SLEEP_REFUSED), regs
        assert faults == 1, regs
    elif point == "soc":
        assert faults >= 50, regs  # a persistent fault: counted on every try
        what = "an exception" if kind == "error" else "out of memory"
        assert re.search(r"\nFaults    \d+ caught since boot, protection went on; the last: "
                         r"The SOC estimator failed \(%s\)\n" % what, regs[6]), regs[6]
