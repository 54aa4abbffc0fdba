"""The ESP32 board: the only module that touches `machine`.

Reference board: ESP32-WROOM-32, bq769x0 on I2C0 with its ALERT output on
a GPIO, an RS485 transceiver on UART2 whose driver-enable (DE, with /RE
tied to it) is a plain GPIO, since MicroPython on the ESP32 has no RS485
mode.
"""
import time

from machine import I2C, UART, Pin

# Pin map of the reference board. RTC-capable pins are used where later
# sleep modes need them as wake sources (ALERT, RS485 RX).
PINS = {
    "i2c_scl": 22,
    "i2c_sda": 21,
    "afe_alert": 4,
    "rs485_tx": 27,
    "rs485_rx": 26,
    "rs485_de": 14,
}
I2C_FREQ = 100000  # the bq769x0 is a standard-mode (100 kHz) device
UART_ID = 2
# parameter modbus_parity (0 none, 1 even, 2 odd) -> machine.UART's parity
# (None, 0 even, 1 odd) and stop bits: 11 bits a character either way
UART_PARITY = (None, 0, 1)
UART_STOP = (2, 1, 1)


class Rs485:
    """Half-duplex RS485 on a UART plus a driver-enable pin."""

    def __init__(self, uart, de, baud):
        self._uart = uart
        self._de = de
        self.set_baud(baud)
        de.value(0)

    def set_baud(self, baud):
        # one 11-bit character: the stop bit of the last byte must leave the
        # transceiver before DE drops
        self._char_us = (11 * 1000000 + baud - 1) // baud

    def readinto(self, buf):
        n = self._uart.readinto(buf)
        return n if n else 0

    def any(self):
        return self._uart.any()

    def write(self, buf, n):
        de = self._de
        de.value(1)
        self._uart.write(buf, n)
        self._uart.flush()
        time.sleep_us(self._char_us)
        de.value(0)
        return n


class Board:
    def __init__(self, baud=19200, pins=PINS):
        self.pins = pins
        self.storage_dir = "/"
        self.i2c = I2C(0, scl=Pin(pins["i2c_scl"]), sda=Pin(pins["i2c_sda"]), freq=I2C_FREQ)
        self._alert = Pin(pins["afe_alert"], Pin.IN)
        self._uart = UART(UART_ID, baudrate=baud, bits=8, parity=UART_PARITY[1], stop=1,
                          tx=pins["rs485_tx"], rx=pins["rs485_rx"],
                          rxbuf=512, timeout=0, timeout_char=0)
        self.serial = Rs485(self._uart, Pin(pins["rs485_de"], Pin.OUT, value=0), baud)

    def set_serial(self, baud, parity):
        """parity: 0 none (2 stop bits), 1 even, 2 odd (the modbus_parity parameter)."""
        if parity < 0 or parity > 2:
            parity = 1
        self._uart.init(baudrate=baud, bits=8, parity=UART_PARITY[parity], stop=UART_STOP[parity])
        self.serial.set_baud(baud)

    def set_baud(self, baud):
        self.set_serial(baud, 1)

    def reset(self, reason=0):
        """Restart the MCU (stored changes take effect; the AFE keeps its
        FET state and its hardware protection through it)."""
        import machine

        machine.reset()

    def ticks_ms(self):
        # machine ticks already wrap at 2**30, as bms.ticks expects
        return time.ticks_ms()

    def alert(self):
        return self._alert.value()

    def idle(self, ms):
        """Wait up to ms; back early on RS485 bytes or a rising ALERT."""
        start = time.ticks_ms()
        was = self._alert.value()
        uart = self._uart
        while time.ticks_diff(time.ticks_ms(), start) < ms:
            if uart.any():
                return
            now = self._alert.value()
            if now and not was:
                return
            was = now
            time.sleep_ms(1)
