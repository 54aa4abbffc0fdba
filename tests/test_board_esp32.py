"""The ESP32 board against a fake `machine` that checks the calls it gets."""
import importlib
import os
import sys

import pytest

FAKES = os.path.join(os.path.dirname(__file__), "fakes")


class FakeTime:
    def __init__(self, events):
        self.events = events
        self.ms = 0

    def ticks_ms(self):
        return self.ms

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        self.ms += ms

    def sleep_us(self, us):
        self.events.append(("sleep_us", us))


@pytest.fixture
def esp32():
    sys.path.insert(0, FAKES)
    try:
        machine = importlib.import_module("machine")
        machine.clear_events()
        mod = importlib.import_module("bms.boards.esp32")
        mod = importlib.reload(mod)
        mod.time = FakeTime(machine.EVENTS)
        yield mod, machine
    finally:
        sys.path.remove(FAKES)
        sys.modules.pop("machine", None)
        sys.modules.pop("bms.boards.esp32", None)


def test_buses_are_opened_as_the_board_is_wired(esp32):
    mod, machine = esp32
    mod.Board()
    ev = machine.EVENTS
    assert ("I2C", 0, 22, 21, 100000) in ev  # the bq769x0 is a 100 kHz part
    uart = [e for e in ev if e[0] == "UART"][0]
    # Modbus RTU default: 19200 baud, 8 data bits, even parity, 1 stop bit
    assert uart[1:8] == (2, 19200, 8, 0, 1, 27, 26)
    assert uart[9:] == (0, 0)  # non-blocking reads
    # the driver-enable pin starts low: the bus is not ours until we answer
    assert ("Pin", 14, machine.Pin.OUT, 0) in ev


def test_rs485_driver_enable_wraps_the_whole_transmission(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    buf = bytearray(b"\x01\x04\x02\x00\x07\xf9\x32" + b"\0" * 20)
    assert board.serial.write(buf, 7) == 7
    ev = machine.EVENTS
    # DE up, write, flush (wait for the UART to drain), one character time, DE down
    assert ev == [("pin", 14, 1), ("uart.write", bytes(buf[:7])), ("uart.flush",),
                  ("sleep_us", 573), ("pin", 14, 0)]


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


def test_reset_restarts_the_mcu(esp32):
    mod, machine = esp32
    board = mod.Board()
    machine.clear_events()
    with pytest.raises(SystemExit):
        board.reset()
    assert machine.EVENTS == [("machine.reset",)]


def test_idle_returns_on_received_bytes(esp32):
    mod, machine = esp32
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


def test_fake_rejects_what_an_esp32_would(esp32):
    mod, machine = esp32
    with pytest.raises(ValueError):
        machine.Pin(34, machine.Pin.OUT)
    with pytest.raises(ValueError):
        mod.Board(pins=dict(mod.PINS, rs485_de=35))
    with pytest.raises(ValueError):
        mod.Board(pins=dict(mod.PINS, i2c_scl=24))
