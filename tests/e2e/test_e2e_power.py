"""Power modes end to end: the firmware under MicroPython on the simulated
board walks every transition (working -> low power -> working on RS485,
charger, or a check that finds work; under-voltage -> sleep -> working on
ACC, the button or a charger; a long press -> sleep), each with its FET,
network, LED and event-log state; a hung control loop is reset by the
watchdog and the reset cause is reported after the reboot."""
import time

import pytest

from bms import regmap as M
from bms.boards import RESET_DEEPSLEEP, RESET_WDT, WAKE_ACC, WAKE_BUTTON, WAKE_CHARGER, WAKE_RS485
from bms.power import CAUSE_ATTENTION, CAUSE_IDLE, CAUSE_LONG_PRESS, CAUSE_UNDER_VOLTAGE, LOW_POWER, SLEEP, WORKING
from bms.events import EV_MODE
from bms_sim.server import SimServer
from conftest import AFES, ir, rtu_client

FAST = {"lp_idle_ms": 30000, "lp_check_ms": 5000, "sleep_uv_ms": 10000, "net_enable": 1, "led_count": 5}


def start(tmp_path, soc_pct=60.0, speed=20.0, afe=AFES[0], **extra):
    """A 4S LFP bq769x0 pack, or a 16S LFP bq76952 pack (tests/conftest.py afe)."""
    state = tmp_path / "flash"
    afe.provision(state, 4, "lfp", 10000, 1000, extra=dict(FAST, **extra))
    world = afe.world(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=soc_pct, seed=8)
    server = SimServer(world, str(state), speed=speed, link_path=str(tmp_path / "tty"))
    server.start()
    return server


def modes_logged(client):
    """(mode, cause) of the EV_MODE records in the event window, oldest first."""
    words = ir(client, M.IR_EVENTS, M.EVENT_WINDOW * M.EVENT_WORDS)
    out = []
    for k in range(M.EVENT_WINDOW):
        w = words[k * M.EVENT_WORDS:(k + 1) * M.EVENT_WORDS]
        if w[5] == EV_MODE:
            value = (w[6] << 16) | w[7]
            out.append((value >> 8, value & 0xFF))
    return out[::-1]


def working_again(server, timeout=20):
    """Wait for working mode: the network module is on only there (a timer
    check is awake too, but stays in low power)."""
    deadline = time.monotonic() + timeout
    while not server.network_on:
        assert time.monotonic() < deadline, "still in low power:\n" + server.log_tail()
        time.sleep(0.01)
    server.wait_sim_ms(server.world.now_ms + 500)  # a cycle publishes the registers and events


def asleep_light(server):
    server.wait_mcu_state("light_sleep", timeout=20)
    with server.lock:
        assert server.world.fets() == (False, False), "low power: both FETs off"
    assert not server.network_on and not any(server.leds)


@pytest.fixture
def lp(tmp_path, afe):
    server = start(tmp_path, afe=afe)
    yield server
    server.stop()
    assert "Traceback" not in server.log_tail(), server.log_tail()


@pytest.mark.slow
def test_working_low_power_and_back(lp):
    server = lp
    server.wait_sim_ms(3000)
    assert server.mcu_state == "awake" and server.network_on
    with server.lock:
        assert server.world.fets() == (True, True)
    # at rest the bar is dark; a short press shows the SOC (60 %: 3 of 5) for led_soc_show_ms
    assert not any(server.leds)
    server.press_button(200)
    server.wait_sim_ms(server.world.now_ms + 1000)
    assert [d > 0 for d in server.leds] == [True, True, True, False, False]
    assert max(server.leds) == (255 * 50 + 50) // 100  # led_brightness_pct 50
    server.wait_sim_ms(server.world.now_ms + 5000)
    assert not any(server.leds)
    # idle for lp_idle_ms: low power
    asleep_light(server)
    # RS485: the frame that wakes it is lost, the retry is answered. A frame that comes while
    # a low-power check is awake (every 250 ms while it learns the offset) is answered in low
    # power without a wake: more likely the longer a check takes in wall time (a bq76952's reads
    # are more transfers over the simulator's link, and the machine may be loaded); ask again
    c = rtu_client(server.link_path, timeout=0.5, retries=3)
    try:
        for _ in range(20):
            mode = ir(c, M.IR_POWER_MODE, 2)
            if mode != [LOW_POWER, CAUSE_IDLE]:
                break
            time.sleep(0.1)
        assert mode == [WORKING, WAKE_RS485]
        assert server.network_on
        assert modes_logged(c)[-2:] == [(LOW_POWER, CAUSE_IDLE), (WORKING, WAKE_RS485)]
    finally:
        c.close()
    server.wait_sim_ms(server.world.now_ms + 1000)
    with server.lock:
        assert server.world.fets() == (True, True)

    # a charger: the detect input wakes it, and it charges
    asleep_light(server)
    with server.lock:
        server.world.charger.set(2000, 3600)
    server.set_input("charger", True)
    working_again(server)
    server.wait_sim_ms(server.world.now_ms + 1500)
    with server.lock:
        assert server.world.fets() == (True, True) and server.world.current_ma > 1000
    assert any(server.leds), "charging: the bar shows it"
    with server.lock:
        server.world.charger.off()
    server.set_input("charger", False)

    # a load hanging on the pack while the FETs are off: the next check sees it
    asleep_light(server)
    with server.lock:
        server.world.load.set(3000)
    working_again(server)
    server.wait_sim_ms(server.world.now_ms + 1500)
    with server.lock:
        assert server.world.fets() == (True, True) and server.world.current_ma < -2000
    c = rtu_client(server.link_path, timeout=0.5, retries=3)
    try:
        assert ir(c, M.IR_POWER_MODE, 2) == [WORKING, CAUSE_ATTENTION]
        causes = modes_logged(c)
        assert (WORKING, WAKE_CHARGER) in causes and causes[-1] == (WORKING, CAUSE_ATTENTION)
    finally:
        c.close()
    with server.lock:
        server.world.load.off()

    # a cell warming past its warning while asleep: the next check wakes it
    asleep_light(server)
    with server.lock:
        server.world.pack.temperatures_c[0] = 48.0
    working_again(server)
    c = rtu_client(server.link_path, timeout=0.5, retries=3)
    try:
        assert ir(c, M.IR_POWER_MODE, 2) == [WORKING, CAUSE_ATTENTION]
    finally:
        c.close()


@pytest.mark.slow
def test_under_voltage_sleep_and_every_wake_source(tmp_path, afe):
    # sleep_uv_ms 40 s: a wake from the under-voltage sleep stays up 0.8 s of
    # wall time (at 50x) before it sleeps again, long enough for the reads
    # below on a loaded machine (the cells at rest stay under the release)
    server = start(tmp_path, soc_pct=2.0, speed=50.0, sleep_uv_ms=40000, afe=afe)
    try:
        with server.lock:
            server.world.load.set(5000)
        # the cells sag under the load: under-voltage, discharge off, then sleep
        server.wait_mcu_state("deep_sleep", timeout=30)
        with server.lock:
            assert server.world.chip.shipped and server.world.fets() == (False, False)
            server.world.load.off()
        assert not server.network_on and not any(server.leds)
        awake = server.energy()["awake"]["avg_ma"]
        t0 = server.world.now_ms
        server.wait_sim_ms(t0 + 60000)
        asleep = server.average_ma(t0, server.world.now_ms)
        print("\nboard current: working %.1f mA, sleep %.4f mA (%.0fx less)" % (awake, asleep, awake / asleep))
        assert asleep * 1000 < awake, (asleep, awake)

        # ACC wakes it: a boot that says so
        boots = len(server.reset_causes)
        server.set_input("acc", True)
        server.wait_boots(boots + 1)
        server.wait_sim_ms(server.world.now_ms + 2000)
        c = rtu_client(server.link_path)
        try:
            assert ir(c, M.IR_RESET_CAUSE)[0] == (RESET_DEEPSLEEP << 8) | WAKE_ACC
            assert ir(c, M.IR_POWER_MODE, 2) == [WORKING, WAKE_ACC]
            assert (SLEEP, CAUSE_UNDER_VOLTAGE) in modes_logged(c)
        finally:
            c.close()
        assert not server.world.chip.shipped and server.network_on
        server.set_input("acc", False)

        # a long press: sleep at once
        server.press_button(3500)
        server.wait_mcu_state("deep_sleep", timeout=20)
        server.wait_sim_ms(server.world.now_ms + 1000)  # the button let go
        # a press wakes it
        boots = len(server.reset_causes)
        server.press_button(300)
        server.wait_boots(boots + 1)
        server.wait_sim_ms(server.world.now_ms + 2000)
        c = rtu_client(server.link_path)
        try:
            assert ir(c, M.IR_RESET_CAUSE)[0] == (RESET_DEEPSLEEP << 8) | WAKE_BUTTON
            assert (SLEEP, CAUSE_LONG_PRESS) in modes_logged(c)
        finally:
            c.close()

        # at rest the cells recover above the trip, so it stays up; under load
        # again: under-voltage and asleep after sleep_uv_ms; a charger wakes it
        with server.lock:
            server.world.load.set(5000)
        server.wait_mcu_state("deep_sleep", timeout=30)
        with server.lock:
            server.world.load.off()
        boots = len(server.reset_causes)
        with server.lock:
            server.world.charger.set(3000, 3600)
        server.set_input("charger", True)
        server.wait_boots(boots + 1)
        server.wait_sim_ms(server.world.now_ms + 3000)
        with server.lock:
            assert server.world.current_ma > 1000, "charging after the wake"
        assert server.reset_causes[-1] == RESET_DEEPSLEEP
    finally:
        server.stop()
    assert "Traceback" not in server.log_tail(), server.log_tail()


def test_a_hung_control_loop_is_reset_by_the_watchdog(tmp_path):
    server = start(tmp_path, wdt_ms=4000)
    try:
        server.wait_sim_ms(3000)
        boots = len(server.reset_causes)
        server.hang_s = 1.0  # no request for 1 s of wall time: hung
        server.hang_i2c = True  # the AFE's bus hangs: the driver never returns
        server.wait_boots(boots + 1, timeout=30)
        assert server.reset_causes[-1] == RESET_WDT
        server.wait_sim_ms(server.world.now_ms + 2000)
        c = rtu_client(server.link_path)
        try:
            assert ir(c, M.IR_RESET_CAUSE)[0] >> 8 == RESET_WDT
        finally:
            c.close()
        with server.lock:
            assert server.world.fets() == (True, True), "back at work after the reset"
    finally:
        server.stop()


def test_the_bar_goes_dark_in_low_power_even_over_a_trickle(tmp_path):
    """A 300 mA trickle of charge lights the bar (charging); under
    lp_idle_ma it is idle, and entering low power turns the bar off: the
    light sleep must not hold it lit (it did before: low power never
    rendered the bar)."""
    server = start(tmp_path, lp_idle_ma=500, net_enable=0)
    try:
        with server.lock:
            server.world.charger.set(300)
        server.wait_sim_ms(3000)
        assert any(server.leds), "charging at 300 mA: the bar runs"
        server.wait_mcu_state("light_sleep", timeout=20)
        with server.lock:
            assert server.world.fets() == (False, False)
        lit = [t for t, duties in server.leds_history if any(duties)]
        dark = [t for t, duties in server.leds_history if not any(duties)]
        assert dark and dark[-1] > lit[-1], "the bar went dark and stayed dark"
        server.wait_sim_ms(server.world.now_ms + 20000)  # checks come and go in low power
        assert not any(server.leds)
    finally:
        server.stop()
    assert "Traceback" not in server.log_tail(), server.log_tail()
