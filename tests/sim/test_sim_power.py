"""The simulated board's power side: light and deep sleep with their wake
sources, the watchdog, the reset cause, the LED bar, the network switch, the
AFE's boot pulse, the inputs, and the estimated current draw per mode.

Each test runs a small main script that calls the Board's methods directly
and prints what it saw; the test drives the inputs and the RS485 line."""
import os
import time

import pytest
from bms.boards import (RESET_DEEPSLEEP, RESET_POWER_ON, RESET_SOFT, RESET_WDT, WAKE_ACC,
                        WAKE_BUTTON, WAKE_CHARGER, WAKE_NONE, WAKE_RS485, WAKE_TIMER)
from bms_sim.boardmodel import BOOT_MS
from bms_sim.power import MA_AFE_NORMAL, MA_AFE_SHIP, MA_AWAKE, MA_DEEP_SLEEP, MA_LIGHT_SLEEP, MA_NETWORK
from bms_sim.process import SimError
from bms_sim.server import SimServer
from bms_sim.world import World

# the start of every script: a board, and its boot count kept in the flash
HEAD = '''
import micropython

from bms.boards.sim import Board
from bms.ticks import ticks_diff

b = Board()
try:
    with open(b.storage_dir + "boots") as f:
        boot = int(f.read()) + 1
except OSError:
    boot = 1
with open(b.storage_dir + "boots", "w") as f:
    f.write(str(boot))
print("boot", boot, "cause", b.reset_cause()[0], b.reset_cause()[1], "ticks", b.ticks_ms())


def ship():
    from bms.afe.bq769x0 import Bq769x0
    from bms.afe.chips import default_cell_channels

    afe = Bq769x0(b.i2c, default_cell_channels(4, 1), 1000, crc=True)
    print("ship", afe.enter_ship(), "read", afe.read_reg(0))
    return afe


LONG = 1000000000  # a light sleep only a wake source ends


def idle_forever():
    while True:
        b.idle(1000)
'''


LONG = 1000000000  # the scripts' LONG: ms of light sleep only a wake source ends


@pytest.fixture
def sim(tmp_path):
    """sim(script, speed=None) -> a started SimServer running HEAD + script."""
    servers = []

    def start(script, speed=None, attrs=(), **kw):
        main = tmp_path / ("main%d.py" % len(servers))
        main.write_text(HEAD + script)
        server = SimServer(World(cells=4), str(tmp_path / ("state%d" % len(servers))), speed=speed,
                           main_py=str(main), **kw)
        for k, v in dict(attrs).items():
            setattr(server, k, v)
        servers.append(server)
        return server.start()

    yield start
    for s in servers:
        s.stop()
        assert "Traceback" not in s.log_tail(200), s.log_tail(200)


def wait_log(server, text, timeout=10.0):
    """Block until the firmware printed a line starting with text; its words."""
    deadline = time.monotonic() + timeout
    while True:
        with open(server.log_path, "rb") as f:
            log = f.read().decode("utf-8", "replace")
        # whole lines only: print() writes a line in pieces
        for line in log.split("\n")[:-1]:
            if line.startswith(text):
                return line.split()
        if server.exited.is_set():
            raise SimError("the server stopped:\n" + server.log_tail())
        if time.monotonic() > deadline:
            raise SimError("no %r in the log after %.0f s:\n%s" % (text, timeout, server.log_tail()))
        time.sleep(0.005)


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_light_sleep_wakes_on_its_timer(sim):
    server = sim('''
t0 = b.ticks_ms()
w = 0  # (a new global would allocate)
micropython.heap_lock()  # the board's calls allocate nothing
w = b.light_sleep(2000)
micropython.heap_unlock()
print("wake", w, ticks_diff(b.ticks_ms(), t0))
idle_forever()
''')
    assert wait_log(server, "boot 1")[2:5] == ["cause", str(RESET_POWER_ON), str(WAKE_NONE)]
    assert wait_log(server, "wake") == ["wake", str(WAKE_TIMER), "2000"]
    e = server.energy()
    assert e["light_sleep"]["s"] == 2.0
    assert e["light_sleep"]["avg_ma"] == pytest.approx(MA_LIGHT_SLEEP + MA_AFE_NORMAL)
    assert server.reset_causes == [RESET_POWER_ON] and server.boots == 1


@pytest.mark.parametrize("speed", [None, 100.0])
def test_rs485_bytes_wake_light_sleep_and_are_lost(sim, tmp_path, speed):
    """speed None: bytes injected with send(); paced: a host writes the pty."""
    link = tmp_path / "tty"
    server = sim('''
buf = bytearray(64)
w = b.light_sleep(LONG)
print("wake", w, "rx", b.serial.readinto(buf))
while True:
    b.idle(100)
    n = b.serial.readinto(buf)
    if n:
        print("got", bytes(buf[:n]).decode())
''', speed=speed, link_path=str(link))
    fd = os.open(str(link), os.O_RDWR | os.O_NOCTTY)
    try:
        def host_sends(data):
            if speed:
                os.write(fd, data)
            else:
                server.send(data)

        server.wait_mcu_state("light_sleep")
        t0 = server.world.now_ms
        host_sends(b"hello")
        assert wait_log(server, "wake") == ["wake", str(WAKE_RS485), "rx", "0"]
        assert server.world.now_ms - t0 < LONG
        with server.lock:
            assert server.rxq == b""  # the bytes that woke it are gone
        host_sends(b"retry")  # the host's retry reaches the awake firmware
        assert wait_log(server, "got") == ["got", "retry"]
    finally:
        os.close(fd)


def test_inputs_wake_light_sleep_and_read_back(sim):
    server = sim('''
while True:
    w = b.light_sleep(LONG)
    print("wake", w, "inputs", b.inputs())
''')
    # a charger: WAKE_CHARGER, IN_CHARGER
    server.wait_mcu_state("light_sleep")
    server.set_input("charger", True)
    assert wait_log(server, "wake 3") == ["wake", str(WAKE_CHARGER), "inputs", "4"]
    # a falling edge does not wake it; ACC rising does
    server.wait_mcu_state("light_sleep")
    server.set_input("charger", False)
    time.sleep(0.05)
    assert server.mcu_state == "light_sleep"
    server.set_input("acc", True)
    assert wait_log(server, "wake 4") == ["wake", str(WAKE_ACC), "inputs", "2"]
    # the button, pressed for 100 ms of simulated time
    server.wait_mcu_state("light_sleep")
    t0 = server.world.now_ms
    server.press_button(100)
    assert wait_log(server, "wake 5") == ["wake", str(WAKE_BUTTON), "inputs", "3"]
    server.wait_sim_ms(t0 + 200)
    assert server.inputs == 2  # released on the simulated clock
    with pytest.raises(ValueError):
        server.set_input("door", True)


def test_deep_sleep_boots_anew_on_a_wake_input(sim):
    server = sim('''
if boot < 3:
    b.wdt_start(1000)  # stops with the MCU: it must not bite in deep sleep
    b.deep_sleep()
    print("deep_sleep returned")
idle_forever()
''')
    wait_log(server, "boot 1")
    server.wait_mcu_state("deep_sleep")
    t0 = server.world.now_ms
    server.wait_sim_ms(t0 + 5000)  # the world runs on, the watchdog sleeps
    server.send(b"\x01\x03")  # RS485 traffic does not wake deep sleep
    time.sleep(0.05)
    assert server.mcu_state == "deep_sleep" and server.boots == 1
    server.set_input("acc", True)
    assert wait_log(server, "boot 2")[2:5] == ["cause", str(RESET_DEEPSLEEP), str(WAKE_ACC)]
    server.wait_mcu_state("deep_sleep")
    server.press_button(50)
    assert wait_log(server, "boot 3")[2:5] == ["cause", str(RESET_DEEPSLEEP), str(WAKE_BUTTON)]
    server.wait_boots(3)
    server.wait_sim_ms(server.world.now_ms + 3000)
    assert server.reset_causes == [RESET_POWER_ON, RESET_DEEPSLEEP, RESET_DEEPSLEEP]
    assert server.restarts == 0 and server.reset_reasons == []
    assert server.energy()["deep_sleep"]["s"] >= 5.0
    assert "deep_sleep returned" not in server.log_tail()


def test_stop_ends_deep_sleep_promptly(sim):
    server = sim('''
b.deep_sleep()
''', speed=1.0)
    server.wait_mcu_state("deep_sleep")
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.0
    assert server.exited.is_set()


def test_the_watchdog_resets_a_starved_firmware(sim):
    server = sim('''
if boot == 1:
    b.wdt_start(1000)
    t0 = b.ticks_ms()
    micropython.heap_lock()
    while ticks_diff(b.ticks_ms(), t0) < 5000:  # fed: no reset
        b.idle(200)
        b.wdt_feed()
    micropython.heap_unlock()
    print("starve", b.ticks_ms())
    while True:
        b.idle(300)
elif boot == 2:
    b.wdt_start(2000)
    print("sleep", b.ticks_ms())
    print("slept", b.light_sleep(10000))  # the watchdog bites in light sleep too
elif boot == 3:
    b.reset(0)
idle_forever()
''')
    starve = int(wait_log(server, "starve")[1])
    boot2 = int(wait_log(server, "boot 2")[-1])
    # reset 1000 ms after the last feed, plus the boot
    assert (boot2 - starve) & 0x3FFFFFFF == 1000 + BOOT_MS
    sleep = int(wait_log(server, "sleep")[1])
    boot3 = int(wait_log(server, "boot 3")[-1])
    assert (boot3 - sleep) & 0x3FFFFFFF == 2000 + BOOT_MS
    wait_log(server, "boot 4")
    server.wait_boots(4)
    # after the reset the watchdog is off until the firmware starts it again
    server.wait_sim_ms(server.world.now_ms + 5000)
    assert server.reset_causes == [RESET_POWER_ON, RESET_WDT, RESET_WDT, RESET_SOFT]
    assert server.reset_reasons == ["wdt", "wdt", 0] and server.restarts == 3
    log = server.log_tail(200)
    assert "slept" not in log
    assert [w[2:5] for w in (wait_log(server, "boot %d" % n) for n in (2, 3, 4))] == [
        ["cause", str(RESET_WDT), "0"], ["cause", str(RESET_WDT), "0"], ["cause", str(RESET_SOFT), "0"]]


def test_the_watchdog_resets_a_hung_firmware(sim):
    server = sim('''
if boot == 1:
    b.wdt_start(5000)
    print("hang", b.ticks_ms())
    while True:
        pass
idle_forever()
''', attrs={"hang_s": 1.0})
    hang = int(wait_log(server, "hang")[1])
    boot2 = int(wait_log(server, "boot 2", timeout=15)[-1])
    assert (boot2 - hang) & 0x3FFFFFFF == 5000 + BOOT_MS
    assert server.reset_causes == [RESET_POWER_ON, RESET_WDT]
    assert server.reset_reasons == ["wdt"] and server.restarts == 1
    assert "watchdog reset (hung)" in server.log_tail()


def test_leds_and_network_reach_the_simulator(sim):
    server = sim('''
d = bytearray(4)
d[1] = 128
d[2] = 255
micropython.heap_lock()  # the board's calls allocate nothing
b.leds(d)
b.leds(d)  # unchanged: not sent
d[1] = 0
b.leds(d)
b.network(False)  # off already: not sent
b.network(True)
b.idle(1000)
b.network(True)
b.network(False)
b.network(True)
b.inputs()
b.reset_cause()
b.idle(1000)
micropython.heap_unlock()
b.deep_sleep()
''')
    server.wait_mcu_state("deep_sleep")
    # HELLO, 2 LED changes, 3 network changes, 2 idles, deep sleep
    assert server.requests == 9
    hist = server.leds_history
    assert [d for _, d in hist] == [bytes((0, 128, 255, 0)), bytes((0, 0, 255, 0)), bytes(4)]
    assert server.leds == bytes(4)  # dark in deep sleep
    assert [(t - hist[0][0], on) for t, on in server.network_history] == [
        (0, True), (1000, False), (1000, True), (2000, False)]
    assert not server.network_on
    e = server.energy()
    assert e["awake"]["avg_ma"] == pytest.approx(MA_AWAKE + MA_NETWORK + MA_AFE_NORMAL)


def test_afe_boot_wakes_a_shipped_afe(sim):
    server = sim('''
afe = ship()
b.afe_boot()
print("booted read", afe.read_reg(0))
b.afe_boot()  # an awake chip ignores the pulse
print("again read", afe.read_reg(0))
idle_forever()
''')
    assert wait_log(server, "ship") == ["ship", "True", "read", "-1"]
    assert wait_log(server, "booted") == ["booted", "read", "0"]
    assert wait_log(server, "again") == ["again", "read", "0"]
    assert not server.world.chip.shipped


def test_deep_sleep_draws_a_thousandth_of_awake(sim):
    server = sim('''
if boot == 1:
    t0 = b.ticks_ms()
    while ticks_diff(b.ticks_ms(), t0) < 10000:
        b.idle(500)
    ship()
    b.deep_sleep()
b.afe_boot()
idle_forever()
''')
    server.wait_mcu_state("deep_sleep")
    assert server.world.chip.shipped
    wait_until(lambda: server.energy()["deep_sleep"]["s"] >= 600)
    t_deep = [seg[0] for seg in server.segments if seg[2] == "deep_sleep"][0]
    server.set_input("acc", True)
    server.wait_boots(2)
    wait_until(lambda: not server.world.chip.shipped)
    e = server.energy()
    awake, deep = e["awake"], e["deep_sleep"]
    assert awake["s"] >= 10.0 and deep["s"] >= 600
    # (the AFE stays shipped through the boot after the wake, until afe_boot())
    assert MA_AWAKE + MA_AFE_SHIP < awake["avg_ma"] < MA_AWAKE + MA_AFE_NORMAL
    assert deep["avg_ma"] == pytest.approx(MA_DEEP_SLEEP + MA_AFE_SHIP)
    assert deep["avg_ma"] * 1000 < awake["avg_ma"]
    assert e["total"]["s"] == pytest.approx(awake["s"] + deep["s"] + e["light_sleep"]["s"])
    assert e["total"]["mah"] == pytest.approx(awake["mah"] + deep["mah"] + e["light_sleep"]["mah"])
    assert awake["mah"] == pytest.approx(awake["avg_ma"] * awake["s"] / 3600)
    # the same over windows of simulated time
    assert server.average_ma(0, 10000) == pytest.approx(MA_AWAKE + MA_AFE_NORMAL)
    t_end = t_deep + int(deep["s"] * 1000)
    assert server.average_ma(t_deep, t_end) == pytest.approx(MA_DEEP_SLEEP + MA_AFE_SHIP)
    mixed = server.average_ma(0, t_end)
    assert MA_DEEP_SLEEP < mixed < MA_AWAKE
    assert mixed == pytest.approx((t_deep * (MA_AWAKE + MA_AFE_NORMAL) + (t_end - t_deep) * (
        MA_DEEP_SLEEP + MA_AFE_SHIP)) / t_end)
    # a handful of segments, not one per window
    assert len(server.segments) <= 4, server.segments
