"""The ESP32 board against fakes of `machine`, `esp32` and `network` that
check the calls and arguments they get (pins, wake levels, sleep durations):
tests/fakes, which reject what the ESP32 port rejects."""
import importlib
import os
import sys

import pytest

from bms.boards import (IN_ACC, IN_BUTTON, IN_CHARGER, RESET_DEEPSLEEP, RESET_HARD, RESET_POWER_ON,
                        RESET_SOFT, RESET_WDT, WAKE_ACC, WAKE_BUTTON, WAKE_CHARGER, WAKE_NONE,
                        WAKE_RS485, WAKE_TIMER)

FAKES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fakes")
FAKE_MODULES = ("machine", "machine_hw", "esp32", "network", "bms.boards.esp32", "board_pins")
# the pin map bms.boards.esp32 imports (board_pins): on the device it is
# lib/board_pins.mpy; here, the reference board's source
PINS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "firmware", "boards", "reference")

BUTTON, ACC, CHARGER, RX, DE, AFE_BOOT = 35, 34, 39, 26, 14, 13
LEDS = (16, 17, 18, 19, 23)


class FakeTime:
    def __init__(self, events):
        self.events = events
        self.ms = 0
        self.at = []  # (ms, function): run once the clock reaches ms

    def ticks_ms(self):
        return self.ms

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        self.events.append(("sleep_ms", ms))
        self.ms += ms
        for item in list(self.at):
            if item[0] <= self.ms:
                self.at.remove(item)
                item[1]()

    def sleep_us(self, us):
        self.events.append(("sleep_us", us))

    def ticks_us(self):
        return (self.ms * 1000) & 0x3FFFFFFF


@pytest.fixture
def esp32():
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)
    sys.path.insert(0, FAKES)
    sys.path.insert(0, PINS_DIR)
    try:
        machine = importlib.import_module("machine")
        machine.reset_fake()
        # the board at rest: button released (pull-up), RS485 bus idle (high),
        # no ACC, no charger
        machine.set_level(BUTTON, 1)
        machine.set_level(RX, 1)
        mod = importlib.import_module("bms.boards.esp32")
        mod.time = FakeTime(machine.EVENTS)
        yield mod, machine
    finally:
        sys.path.remove(FAKES)
        sys.path.remove(PINS_DIR)
        for name in FAKE_MODULES:
            sys.modules.pop(name, None)


def of(events, kind):
    return [e for e in events if e[0] == kind]


# -- buses -----------------------------------------------------------------------------


def test_buses_are_opened_as_the_board_is_wired(esp32):
    mod, machine = esp32
    mod.Board()
    ev = machine.EVENTS
    assert ("I2C", 0, 22, 21, 100000) in ev  # the bq769x0 is a 100 kHz part
    uart = of(ev, "UART")[0]
    # Modbus RTU default: 19200 baud, 8 data bits, even parity, 1 stop bit
    assert uart[1:8] == (2, 19200, 8, 0, 1, 27, 26)
    assert uart[9:] == (0, 0)  # non-blocking reads
    # the driver-enable pin starts low: the bus is not ours until we answer
    assert ("Pin", DE, machine.Pin.OUT, 0) in ev


def test_rs485_driver_enable_wraps_the_whole_transmission(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    buf = bytearray(b"\x01\x04\x02\x00\x07\xf9\x32" + b"\0" * 20)
    assert board.serial.write(buf, 7) == 7
    ev = machine.EVENTS
    # DE up, write, flush (wait for the UART to drain), one character time, DE down
    assert ev == [("pin", DE, 1), ("uart.write", bytes(buf[:7])), ("uart.flush",),
                  ("sleep_us", 573), ("pin", DE, 0)]


def test_rs485_driver_enable_drops_when_the_uart_fails(esp32):
    mod, machine = esp32
    board = mod.Board()

    def broken():
        raise OSError(5)

    board.serial._uart.flush = broken
    machine.clear_events()
    with pytest.raises(OSError):
        board.serial.write(bytearray(b"\x01\x04\x02\x00\x07"), 5)
    assert machine.EVENTS[-1] == ("pin", DE, 0), "the bus is let go"


def test_baud_change_reaches_uart_and_character_time(esp32):
    mod, machine = esp32
    board = mod.Board()
    board.set_baud(9600)
    assert ("uart.init", 9600, 8, 0, 1) in machine.EVENTS
    machine.clear_events()
    board.serial.write(b"\x01", 1)
    assert ("sleep_us", 1146) in machine.EVENTS


@pytest.mark.parametrize("parity,uart_parity,stop", [(0, None, 2), (1, 0, 1), (2, 1, 1)])
def test_serial_settings_parity_and_stop_bits(esp32, parity, uart_parity, stop):
    """modbus_parity 0 none (2 stop bits: still 11 bits a character), 1 even, 2 odd."""
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    board.set_serial(38400, parity)
    assert machine.EVENTS == [("uart.init", 38400, 8, uart_parity, stop)]
    board.serial.write(b"\x01", 1)
    assert ("sleep_us", 287) in machine.EVENTS  # one 11-bit character at 38400


def test_idle_returns_on_received_bytes(esp32):
    mod, _ = esp32
    board = mod.Board()
    board._uart.rx += b"\x01\x04"
    t0 = mod.time.ms
    board.idle(250)
    assert mod.time.ms == t0  # returned at once
    buf = bytearray(8)
    assert board.serial.readinto(buf) == 2
    assert board.serial.readinto(buf) == 0
    board.idle(20)
    assert mod.time.ms - t0 == 20


# -- pins and inputs ------------------------------------------------------------------


def test_pin_map_puts_every_wake_input_on_an_rtc_pin(esp32):
    mod, machine = esp32
    p = mod.PINS
    assert (p["button"], p["acc"], p["charger"], p["afe_boot"], p["leds"]) == (BUTTON, ACC, CHARGER,
                                                                               AFE_BOOT, LEDS)
    for name in ("button", "acc", "charger", "rs485_rx", "rs485_de", "afe_boot"):
        assert p[name] in machine.RTC_PINS, name
    mod.Board()
    ev = machine.EVENTS
    # plain inputs: 34-39 have no pulls (the board's resistors hold them)
    for pin in (BUTTON, ACC, CHARGER):
        assert ("Pin", pin, machine.Pin.IN, None) in ev
    assert ("Pin", AFE_BOOT, machine.Pin.OUT, 0) in ev  # no boot pulse until asked
    assert ("pin.hold", DE, False) in ev  # a hold left by deep sleep is released
    assert not of(ev, "PWM")  # the LED PWMs come with the first leds()


@pytest.mark.parametrize("button,acc,charger,bits", [
    (1, 0, 0, 0),
    (0, 0, 0, IN_BUTTON),  # pressed pulls the pin low
    (1, 1, 0, IN_ACC),
    (1, 0, 1, IN_CHARGER),
    (0, 1, 1, IN_BUTTON | IN_ACC | IN_CHARGER),
])
def test_inputs_follow_the_pin_levels(esp32, button, acc, charger, bits):
    mod, machine = esp32
    board = mod.Board()
    machine.set_level(BUTTON, button)
    machine.set_level(ACC, acc)
    machine.set_level(CHARGER, charger)
    machine.clear_events()
    assert board.inputs() == bits
    assert machine.EVENTS == []  # reading pins reconfigures nothing


# -- LEDs -------------------------------------------------------------------------------


def test_leds_write_only_changed_duties_at_1khz(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    board.leds(bytearray((255, 0, 128, 0, 1)))
    ev = machine.EVENTS
    # five LEDC channels at 1 kHz, off, created once
    assert of(ev, "PWM") == [("PWM", pin, 1000, 0) for pin in LEDS]
    assert of(ev, "pwm.duty_u16") == [("pwm.duty_u16", 16, 65535), ("pwm.duty_u16", 18, 128 * 257),
                                      ("pwm.duty_u16", 23, 257)]
    machine.clear_events()
    board.leds(bytearray((255, 0, 128, 0, 1)))
    assert machine.EVENTS == []  # nothing changed: nothing written
    board.leds(bytearray((255, 10, 128, 0, 0)))
    assert machine.EVENTS == [("pwm.duty_u16", 17, 2570), ("pwm.duty_u16", 23, 0)]


def test_leds_past_the_duties_given_are_off(esp32):
    mod, machine = esp32
    board = mod.Board()
    board.leds(bytearray((9, 9, 9, 9, 9)))
    machine.clear_events()
    board.leds(bytearray((9, 9)))
    assert machine.EVENTS == [("pwm.duty_u16", pin, 0) for pin in (18, 19, 23)]
    machine.clear_events()
    board.leds(bytearray(0))
    assert machine.EVENTS == [("pwm.duty_u16", 16, 0), ("pwm.duty_u16", 17, 0)]


# -- network and watchdog -------------------------------------------------------------


def test_network_switches_the_station_interface_once_each_way(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    board.network(True)
    board.network(1)
    board.network(False)
    board.network(0)
    assert machine.EVENTS == [("network.WLAN", 0), ("wlan.active", 0, True),
                              ("network.WLAN", 0), ("wlan.active", 0, False)]


def test_wifi_joins_only_when_on_and_reports_ready(esp32):
    mod, machine = esp32
    import network

    board = mod.Board()
    network.set_connected(True)
    board.net_join("workshop", "secret")  # the interface is off: refused, no exception
    assert not board.net_ready()
    board.network(True)
    machine.clear_events()
    board.net_join("workshop", "secret")
    assert of(machine.EVENTS, "wlan.connect") == [("wlan.connect", 0, "workshop")]
    assert board.net_ready()
    network.set_connected(False)
    assert not board.net_ready()
    assert board.device_id() == "bms-240ac4123456"
    a = board.wall_us()
    assert isinstance(a, int) and 0 <= a < 2 ** 30


def test_watchdog_starts_then_takes_the_users_timeout_and_is_fed(esp32):
    mod, machine = esp32
    board = mod.Board()
    board.wdt_feed()  # not started yet: nothing to feed
    assert not of(machine.EVENTS, "wdt.feed")
    board.wdt_start(8000)  # main.py: the boot's watchdog
    board.wdt_start(4000)  # App.start(): the user's wdt_ms, the same watchdog reconfigured
    board.wdt_feed()
    board.wdt_feed()
    assert of(machine.EVENTS, "WDT") == [("WDT", 8000), ("WDT", 4000)]
    assert len(machine._WDT) == 1 and machine._WDT[0].timeout == 4000
    assert len(of(machine.EVENTS, "wdt.feed")) == 2


def test_fake_watchdog_rejects_what_the_port_does(esp32):
    _, machine = esp32
    with pytest.raises(ValueError):
        machine.WDT(timeout=0)  # v1.28: "WDT timeout too short"
    with pytest.raises(ValueError):
        machine.WDT(id=1, timeout=5000)
    wdt = machine.WDT(timeout=5000)
    again = machine.WDT(timeout=9000)  # v1.28 reconfigures the one watchdog
    assert machine._WDT == [again] and again.timeout == 9000
    assert not hasattr(wdt, "deinit") and not hasattr(wdt, "stop")


# -- light sleep ------------------------------------------------------------------------


def test_light_sleep_arms_rx_low_and_acc_or_charger_high_then_sleeps(esp32):
    mod, machine = esp32
    board = mod.Board()
    board._de.value(1)
    machine.clear_events()
    assert board.light_sleep(150) == WAKE_TIMER
    ev = machine.EVENTS
    assert ev[0] == ("pin", DE, 0)  # the transceiver listens through the sleep
    assert ("esp32.wake_on_ext0", RX, 0) in ev
    assert ("esp32.wake_on_ext1", (ACC, CHARGER), 1) in ev  # WAKEUP_ANY_HIGH
    sleeps = of(ev, "machine.lightsleep")
    assert sleeps == [("machine.lightsleep", 150, (RX, 0, (ACC, CHARGER), 1))]
    # after the sleep the wake pads are GPIOs again (the UART reads RX)
    after = ev[ev.index(sleeps[0]) + 1:]
    for pin in (RX, ACC, CHARGER):
        assert ("pin.init", pin, machine.Pin.IN, None) in after
    assert machine.level(DE) == 0


def test_light_sleep_polls_the_button_in_pieces(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    assert board.light_sleep(1000) == WAKE_TIMER
    assert [e[1] for e in of(machine.EVENTS, "machine.lightsleep")] == [200] * 5
    machine.clear_events()
    assert board.light_sleep(450) == WAKE_TIMER
    assert [e[1] for e in of(machine.EVENTS, "machine.lightsleep")] == [200, 200, 50]
    # pressed while asleep: seen at the next piece's end
    machine.clear_events()
    machine.queue_wake(machine.TIMER_WAKE)
    machine.queue_wake(machine.TIMER_WAKE, {BUTTON: 0})
    assert board.light_sleep(1000) == WAKE_BUTTON
    assert len(of(machine.EVENTS, "machine.lightsleep")) == 2
    assert board.light_sleep(0) == WAKE_TIMER  # nothing to sleep


@pytest.mark.parametrize("reason,levels,expected", [
    ("TIMER_WAKE", {}, WAKE_TIMER),
    ("EXT0_WAKE", {}, WAKE_RS485),  # RX went low: a frame is arriving (and lost)
    ("EXT1_WAKE", {CHARGER: 1}, WAKE_CHARGER),
    ("EXT1_WAKE", {ACC: 1}, WAKE_ACC),
    ("EXT1_WAKE", {ACC: 1, CHARGER: 1}, WAKE_CHARGER),
    ("EXT0_WAKE", {BUTTON: 0}, WAKE_BUTTON),
    ("TIMER_WAKE", {BUTTON: 0}, WAKE_BUTTON),
])
def test_light_sleep_says_what_woke_it(esp32, reason, levels, expected):
    mod, machine = esp32
    board = mod.Board()
    machine.queue_wake(getattr(machine, reason), levels)
    assert board.light_sleep(100) == expected


def test_light_sleep_leaves_out_sources_already_active(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.set_level(RX, 0)  # an unbiased bus: a low RX would end every sleep at once
    machine.set_level(ACC, 1)
    machine.clear_events()
    board.light_sleep(100)
    assert of(machine.EVENTS, "machine.lightsleep") == [("machine.lightsleep", 100, (None, 0, (CHARGER,), 1))]


# -- deep sleep -------------------------------------------------------------------------


def test_deep_sleep_turns_leds_off_holds_de_low_and_arms_button_acc_charger(esp32):
    mod, machine = esp32
    board = mod.Board()
    board.leds(bytearray((255, 255, 0, 0, 0)))
    board.wdt_start(8000)
    machine.clear_events()
    with pytest.raises(SystemExit):
        board.deep_sleep()
    ev = machine.EVENTS
    assert of(ev, "pwm.deinit") == [("pwm.deinit", pin) for pin in LEDS]
    for pin in LEDS:
        assert ("Pin", pin, machine.Pin.OUT, 0) in ev
        assert machine.level(pin) == 0
    assert ("pin.init", DE, machine.Pin.OUT, 0) in ev and ("pin.hold", DE, True) in ev
    assert machine.HELD.get(DE) and machine.level(DE) == 0
    assert ("esp32.wake_on_ext0", BUTTON, 0) in ev  # pressed = low
    assert ("esp32.wake_on_ext1", (ACC, CHARGER), 1) in ev  # either high
    # the last thing: deep sleep with no timer, woken by those three
    assert ev[-1] == ("machine.deepsleep", None, (BUTTON, 0, (ACC, CHARGER), 1))
    for pin in (BUTTON, ACC, CHARGER):
        assert pin in machine.RTC_PINS


def test_deep_sleep_waits_for_the_long_press_to_end(esp32):
    mod, machine = esp32
    board = mod.Board()
    board.wdt_start(2000)
    machine.set_level(BUTTON, 0)  # still held: the long press that asked for sleep
    mod.time.at.append((300, lambda: machine.set_level(BUTTON, 1)))
    machine.clear_events()
    with pytest.raises(SystemExit):
        board.deep_sleep()
    assert mod.time.ms == 300
    assert len(of(machine.EVENTS, "wdt.feed")) == 30  # fed while waiting
    assert machine.EVENTS[-1] == ("machine.deepsleep", None, (BUTTON, 0, (ACC, CHARGER), 1))


def test_deep_sleep_leaves_out_a_stuck_button_and_active_inputs(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.set_level(BUTTON, 0)
    machine.set_level(CHARGER, 1)
    with pytest.raises(SystemExit):
        board.deep_sleep()
    assert mod.time.ms == mod.RELEASE_WAIT_MS
    assert machine.EVENTS[-1] == ("machine.deepsleep", None, (None, 0, (ACC,), 1))
    # nothing left to wake on: a timer brings it back to look again
    machine.set_level(ACC, 1)
    with pytest.raises(SystemExit):
        board.deep_sleep()
    assert machine.EVENTS[-1] == ("machine.deepsleep", mod.RECHECK_MS, (None, 0, (), 1))


def test_boot_after_deep_sleep_releases_the_de_hold(esp32):
    mod, machine = esp32
    board = mod.Board()
    with pytest.raises(SystemExit):
        board.deep_sleep()
    machine.set_boot(machine.DEEPSLEEP_RESET, machine.EXT0_WAKE)
    board = mod.Board()
    assert board.reset_cause() == (RESET_DEEPSLEEP, WAKE_BUTTON)
    assert not machine.HELD.get(DE)
    board._de.value(1)
    assert machine.level(DE) == 1  # the bus can be driven again
    board._de.value(0)


# -- reset causes -------------------------------------------------------------------------


@pytest.mark.parametrize("cause,wake,levels,expected", [
    ("PWRON_RESET", 0, {}, (RESET_POWER_ON, WAKE_NONE)),
    ("HARD_RESET", 0, {}, (RESET_HARD, WAKE_NONE)),
    ("WDT_RESET", 0, {}, (RESET_WDT, WAKE_NONE)),
    ("SOFT_RESET", 0, {}, (RESET_SOFT, WAKE_NONE)),
    ("DEEPSLEEP_RESET", "EXT0_WAKE", {}, (RESET_DEEPSLEEP, WAKE_BUTTON)),
    ("DEEPSLEEP_RESET", "EXT1_WAKE", {ACC: 1}, (RESET_DEEPSLEEP, WAKE_ACC)),
    ("DEEPSLEEP_RESET", "EXT1_WAKE", {CHARGER: 1}, (RESET_DEEPSLEEP, WAKE_CHARGER)),
    ("DEEPSLEEP_RESET", "EXT1_WAKE", {}, (RESET_DEEPSLEEP, WAKE_NONE)),  # gone before we looked
    ("DEEPSLEEP_RESET", "TIMER_WAKE", {}, (RESET_DEEPSLEEP, WAKE_TIMER)),
])
def test_reset_cause_is_decoded_once_at_construction(esp32, cause, wake, levels, expected):
    mod, machine = esp32
    machine.set_boot(getattr(machine, cause), getattr(machine, wake) if wake else 0)
    for pin, level in levels.items():
        machine.set_level(pin, level)
    board = mod.Board()
    assert board.reset_cause() == expected
    machine.set_boot(machine.WDT_RESET)
    machine.set_level(ACC, 0)
    machine.set_level(CHARGER, 0)
    assert board.reset_cause() == expected  # stored, not read again


def test_a_requested_restart_reads_back_as_soft(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    with pytest.raises(SystemExit):
        board.reset()
    assert machine.EVENTS == [("rtc.memory", b"bms:reset"), ("machine.reset",)]
    # the port reports machine.reset() as HARD_RESET, like a crash
    machine.set_boot(machine.HARD_RESET)
    assert mod.Board().reset_cause() == (RESET_SOFT, WAKE_NONE)
    machine.set_boot(machine.HARD_RESET)  # the mark is used once
    assert mod.Board().reset_cause() == (RESET_HARD, WAKE_NONE)


def test_a_kept_record_survives_a_restart_and_the_watchdog(esp32):
    mod, machine = esp32
    board = mod.Board()
    assert board.kept() == b""
    board.keep(bytearray(b"\xb7rows"))
    assert machine.EVENTS[-1] == ("rtc.memory", b"\xb7rows")
    with pytest.raises(SystemExit):
        board.reset()
    machine.set_boot(machine.HARD_RESET)
    again = mod.Board()
    assert again.reset_cause() == (RESET_SOFT, WAKE_NONE) and again.kept() == b"\xb7rows"
    machine.set_boot(machine.WDT_RESET)  # the watchdog: the record is still there, no restart mark
    third = mod.Board()
    assert third.kept() == b"\xb7rows" and third.reset_cause()[0] != RESET_SOFT


# -- the AFE boot pulse ----------------------------------------------------------------------


def test_afe_boot_pulses_ts1_high_for_5_ms_then_waits_10_ms(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    board.afe_boot()
    assert machine.EVENTS == [("pin", AFE_BOOT, 1), ("sleep_ms", 5), ("pin", AFE_BOOT, 0), ("sleep_ms", 10)]
    assert machine.level(AFE_BOOT) == 0


# -- the fakes reject what an ESP32 would ----------------------------------------------------


def test_fake_rejects_what_an_esp32_would(esp32):
    mod, machine = esp32
    with pytest.raises(ValueError):
        machine.Pin(34, machine.Pin.OUT)
    with pytest.raises(ValueError):
        mod.Board(pins=dict(mod.PINS, rs485_de=35))
    with pytest.raises(ValueError):
        mod.Board(pins=dict(mod.PINS, i2c_scl=24))
    with pytest.raises(ValueError):
        machine.Pin(35, machine.Pin.IN, machine.Pin.PULL_UP)  # no pulls on 34-39
    with pytest.raises(ValueError):
        machine.PWM(machine.Pin(16), freq=1000, duty_u16=65536)
    with pytest.raises(ValueError):
        machine.PWM(machine.Pin(36), freq=1000, duty_u16=0)  # input-only
    with pytest.raises(ValueError):
        machine.PWM(machine.Pin(16), freq=0)
    with pytest.raises(ValueError):
        machine.lightsleep(-1)


def test_fake_rejects_wake_pins_outside_the_rtc_domain(esp32):
    mod, machine = esp32
    import esp32 as fake_esp32

    Pin = machine.Pin
    with pytest.raises(ValueError):
        fake_esp32.wake_on_ext0(pin=Pin(16), level=0)
    with pytest.raises(ValueError):
        fake_esp32.wake_on_ext0(pin=(Pin(34), Pin(39)), level=1)  # ext0 takes one pin
    with pytest.raises(ValueError):
        fake_esp32.wake_on_ext1(pins=(Pin(34), Pin(23)), level=fake_esp32.WAKEUP_ANY_HIGH)
    with pytest.raises(ValueError):
        fake_esp32.wake_on_ext0(pin=Pin(35), level=Pin.WAKE_LOW)  # 4: the port would take it as high
    with pytest.raises(ValueError):
        Pin(16).irq(trigger=Pin.WAKE_LOW, wake=machine.SLEEP)
    # Pin.irq(wake=) is ext0 again: a second pin finds it taken
    Pin(26).irq(trigger=Pin.WAKE_LOW, wake=machine.SLEEP)
    with pytest.raises(ValueError):
        Pin(35).irq(trigger=Pin.WAKE_LOW, wake=machine.SLEEP)
    # a board wired to a non-RTC button cannot sleep
    board = mod.Board(pins=dict(mod.PINS, button=5))
    machine.set_level(5, 1)
    with pytest.raises(ValueError):
        board.deep_sleep()
    # ext1 pins=None keeps the set armed before; () clears it
    fake_esp32.wake_on_ext1(pins=(Pin(34),), level=1)
    fake_esp32.wake_on_ext1(pins=None, level=1)
    assert machine.wake_config()[2] == (34,)
    fake_esp32.wake_on_ext1(pins=(), level=1)
    assert machine.wake_config()[2] == ()


# -- under MicroPython: the per-cycle calls allocate nothing -----------------------------------


def test_per_cycle_calls_allocate_nothing_under_micropython(micropython, tmp_path):
    from bms_build.build import compile_lib
    from conftest import run_mpy

    script = tmp_path / "esp32_alloc.py"
    script.write_text(
        "import micropython\n"
        "import machine\n"
        "from bms.boards.esp32 import Board\n"
        "\n"
        "\n"
        "def run(b, d):\n"
        "    n = 0\n"
        "    for i in range(200):\n"
        "        d[i % 5] = i & 0xFF\n"
        "        b.leds(d)\n"
        "        n += b.inputs()\n"
        "        b.wdt_feed()\n"
        "    return n\n"
        "\n"
        "\n"
        "machine.set_level(35, 1)\n"
        "b = Board()\n"
        "d = bytearray(5)\n"
        "b.leds(d)\n"
        "b.wdt_start(8000)\n"
        "machine.QUIET = True  # the fake's recording allocates, the board must not\n"
        "result = 'FAIL'\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    result = run(b, d)\n"
        "except MemoryError:\n"
        "    pass\n"
        "micropython.heap_unlock()\n"
        "print('OK' if result == 0 else result)\n")
    proc = run_mpy(micropython, str(script), path=compile_lib() + ":" + FAKES)
    assert proc.stdout.strip() == "OK"


def test_the_dns_server_is_the_one_dhcp_gave(esp32):
    mod, machine = esp32
    import network

    board = mod.Board()
    board.network(True)
    network.set_connected(False)
    assert board.dns_server() is None  # no address yet: nothing to ask
    network.set_connected(True)
    assert board.dns_server() == ("192.168.4.1", 53)
