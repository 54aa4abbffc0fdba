"""The ESP32 board: the only module that touches `machine`, `esp32` and
`network`.

Reference board: ESP32-WROOM-32, bq769x0 on I2C0 with its ALERT output on
a GPIO, an RS485 transceiver on UART2 whose driver-enable (DE, with /RE
tied to it) is a plain GPIO, since MicroPython on the ESP32 has no RS485
mode. The pin numbers live in one place, the board_pins module
(firmware/boards/reference/board_pins.py for the reference board, with a
comment per pin: the bq769x0 on I2C with ALERT, the RS485 UART and its DE
pin, the button, ACC and charger inputs, the TS1 boot pulse, the LED bar).

Why RTC pins: in deep sleep only the RTC domain still watches pads, through
ext0 (one pin, one level) and ext1 (a set of pins, "any high" or "all low");
light sleep uses the same two. Both take RTC GPIOs only (0, 2, 4, 12-15,
25-27, 32-39), so every wake input is one: button, ACC, charger, RS485 RX.

Wake sources:

    deep sleep   ext0: the button low; ext1: ACC or charger high (ANY_HIGH)
    light sleep  ext0: RS485 RX low; ext1: ACC or charger high; the timer;
                 the button is polled every BUTTON_POLL_MS (see light_sleep)

A source already active when the MCU goes to sleep is left out (it would end
the sleep at once, over and over): its change has already been seen.
"""
import time

import esp32
import machine
from machine import I2C, PWM, UART, Pin

from bms.boards import (IN_ACC, IN_BUTTON, IN_CHARGER, REASON_CRASH, RESET_DEEPSLEEP, RESET_HARD,
                        RESET_POWER_ON, RESET_SOFT, RESET_WDT, WAKE_ACC, WAKE_BUTTON,
                        WAKE_CHARGER, WAKE_NONE, WAKE_RS485, WAKE_TIMER)

# Pin map: the board_pins module (firmware/boards/<board>/board_pins.py,
# compiled to lib/board_pins.mpy or frozen) is the one place with the numbers.
from board_pins import PINS
I2C_FREQ = 100000  # the bq769x0 is a standard-mode (100 kHz) device
UART_ID = 2
# parameter modbus_parity (0 none, 1 even, 2 odd) -> machine.UART's parity
# (None, 0 even, 1 odd) and stop bits: 11 bits a character either way
UART_PARITY = (None, 0, 1)
UART_STOP = (2, 1, 1)

LED_FREQ = 1000  # Hz: no visible flicker, and LEDC keeps 16-bit resolution
AFE_BOOT_PULSE_MS = 5  # TS1 held above the boot threshold (bq769x0: > 2 ms)
AFE_BOOT_WAIT_MS = 10  # the bq769x0 answers on I2C 10 ms after the boot signal
BUTTON_POLL_MS = 200  # light sleep looks at the button this often
RELEASE_WAIT_MS = 10000  # deep sleep waits this long for the button to be let go
RECHECK_MS = 60000  # deep sleep with no wake source left: come back and look again
_RESET_MARK = b"bms:reset"  # RTC memory: the next boot is a restart we asked for


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
        try:
            self._uart.write(buf, n)
            self._uart.flush()
            time.sleep_us(self._char_us)
        finally:
            de.value(0)  # a driver left on holds the whole bus: never
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
        # hold=False: deep sleep left DE held low, and a held pad ignores
        # writes: the bus would never be driven again
        self._de = Pin(pins["rs485_de"], Pin.OUT, value=0, hold=False)
        self.serial = Rs485(self._uart, self._de, baud)
        self._rx = Pin(pins["rs485_rx"])  # the UART's pad (not reconfigured): its level, its wake
        # inputs: configuring them also hands pads a deep-sleep wake left as
        # RTC IO back to the GPIO matrix
        self._button = Pin(pins["button"], Pin.IN)
        self._acc = Pin(pins["acc"], Pin.IN)
        self._charger = Pin(pins["charger"], Pin.IN)
        self._afe_boot = Pin(pins["afe_boot"], Pin.OUT, value=0)
        # ext1's pin sets, by which of ACC (bit 0) and charger (bit 1) are
        # quiet (low) and may arm it: built once, sleeping allocates nothing
        self._ext1 = ((), (self._acc,), (self._charger,), (self._acc, self._charger))
        self._led_pins = pins["leds"]
        self._pwms = None  # created on the first leds()
        self._duties = bytearray(len(self._led_pins))  # what each PWM was last given
        self._wdt = None
        self._net = None  # unknown until the first network() call
        self._cause = self._read_reset_cause()

    # -- buses and the clock ----------------------------------------------------

    def set_serial(self, baud, parity):
        """parity: 0 none (2 stop bits), 1 even, 2 odd (the modbus_parity parameter)."""
        if parity < 0 or parity > 2:
            parity = 1
        self._uart.init(baudrate=baud, bits=8, parity=UART_PARITY[parity], stop=UART_STOP[parity])
        self.serial.set_baud(baud)

    def set_baud(self, baud):
        self.set_serial(baud, 1)

    def ticks_ms(self):
        # machine ticks already wrap at 2**30, as bms.ticks expects
        return time.ticks_ms()

    def alert(self):
        return self._alert.value()

    def idle(self, ms):
        """Wait up to ms; back early on RS485 bytes, a rising ALERT or the
        button changing (a short press must not fall between two passes)."""
        start = time.ticks_ms()
        was = self._alert.value()
        button = self._button.value()
        uart = self._uart
        while time.ticks_diff(time.ticks_ms(), start) < ms:
            if uart.any() or self._button.value() != button:
                return
            now = self._alert.value()
            if now and not was:
                return
            was = now
            time.sleep_ms(1)

    # -- restart and why this boot happened ---------------------------------------

    def reset(self, reason=0):
        """Restart the MCU (stored changes take effect; the AFE keeps its
        FET state and its hardware protection through it). Does not return.

        The port reports machine.reset() as HARD_RESET, like a crash (ESP-IDF
        5: ESP_RST_SW and ESP_RST_PANIC both), so a mark in RTC memory tells
        the next boot that this restart was asked for."""
        if reason != REASON_CRASH:
            machine.RTC().memory(_RESET_MARK + self._kept)
        # a crash: no mark, so the next boot counts it as unplanned (HARD_RESET)
        machine.reset()

    def keep(self, data):
        """data (bytes) in RTC memory: it survives a reset, the watchdog and
        deep sleep, not a power cut. One record; kept() gives it back at boot."""
        self._kept = bytes(data)
        machine.RTC().memory(self._kept)

    def kept(self):
        """What keep() stored before this boot (b"" after a power cut)."""
        return self._kept

    def clock_s(self):
        """The RTC's seconds: they run through deep sleep (ticks_ms restarts
        at every boot). Counted from 2000 unless a host set the time, so
        under 2**30 until 2034."""
        return time.time()

    def _read_reset_cause(self):
        rtc = machine.RTC()
        mem = rtc.memory()
        asked = mem[:len(_RESET_MARK)] == _RESET_MARK
        if asked:
            mem = mem[len(_RESET_MARK):]
            rtc.memory(mem)  # the mark is used once; what was kept stays
        self._kept = mem
        c = machine.reset_cause()
        if c == machine.DEEPSLEEP_RESET:
            w = machine.wake_reason()
            if w == machine.EXT0_WAKE:
                wake = WAKE_BUTTON
            elif w == machine.EXT1_WAKE:
                # ext1 does not say which pin (the port has no
                # esp_sleep_get_ext1_wakeup_status): the one still high
                if self._charger.value():
                    wake = WAKE_CHARGER
                elif self._acc.value():
                    wake = WAKE_ACC
                else:
                    wake = WAKE_NONE  # a pulse already gone
            elif w == machine.TIMER_WAKE:
                wake = WAKE_TIMER
            else:
                wake = WAKE_NONE
            return RESET_DEEPSLEEP, wake
        if c == machine.PWRON_RESET:
            return RESET_POWER_ON, WAKE_NONE
        if c == machine.HARD_RESET:
            return (RESET_SOFT if asked else RESET_HARD), WAKE_NONE
        if c == machine.WDT_RESET:
            return RESET_WDT, WAKE_NONE
        if c == machine.SOFT_RESET:
            return RESET_SOFT, WAKE_NONE
        return 0, WAKE_NONE  # a cause the port does not name

    def reset_cause(self):
        """(RESET_, WAKE_): why this boot happened, read once at construction."""
        return self._cause

    # -- inputs, LEDs, network, watchdog (every cycle: allocation-free) ------------

    def inputs(self):
        v = 0
        if not self._button.value():
            v |= IN_BUTTON
        if self._acc.value():
            v |= IN_ACC
        if self._charger.value():
            v |= IN_CHARGER
        return v

    def leds(self, duties):
        """duties: 0..255 per LED; LEDs past len(duties) are off. Only a
        changed duty reaches its PWM."""
        pwms = self._pwms
        if pwms is None:
            pwms = [PWM(Pin(p), freq=LED_FREQ, duty_u16=0) for p in self._led_pins]
            self._pwms = pwms
        last = self._duties
        n = len(duties)
        k = len(pwms)
        i = 0
        while i < k:
            d = duties[i] if i < n else 0
            if d != last[i]:
                last[i] = d
                pwms[i].duty_u16(d * 257)  # 255 -> 65535
            i += 1

    def _leds_off(self):
        pwms = self._pwms
        if pwms is not None:
            for pwm in pwms:
                pwm.deinit()
            self._pwms = None
        for p in self._led_pins:
            Pin(p, Pin.OUT, value=0)
        last = self._duties
        for i in range(len(last)):
            last[i] = 0

    def network(self, on):
        """The Wi-Fi station interface on or off (only a change reaches it)."""
        on = bool(on)
        if on == self._net:
            return
        import network

        network.WLAN(network.STA_IF).active(on)
        self._net = on

    def net_join(self, ssid, password):
        """Start joining (the Wi-Fi driver connects in the background)."""
        import network

        w = network.WLAN(network.STA_IF)
        try:
            w.connect(ssid, password)
        except OSError:
            pass  # interface not up yet: net_ready() stays False, the uplink retries

    def net_ready(self):
        import network

        return network.WLAN(network.STA_IF).isconnected()

    def dns_server(self):
        """(IPv4 address, port) of the DNS server DHCP gave the Wi-Fi
        (bms.dns asks it itself, never through the blocking resolver)."""
        import network

        ip = network.WLAN(network.STA_IF).ifconfig()[3]
        return (ip, 53) if ip and ip != "0.0.0.0" else None

    def device_id(self):
        import binascii

        return "bms-" + binascii.hexlify(machine.unique_id()).decode()

    def wall_us(self):
        return time.ticks_us()

    def wdt_start(self, timeout_ms):
        """Start the watchdog, or give the running one a new timeout: main.py
        starts it for the boot, App.start() sets the user's wdt_ms. It
        cannot be stopped. MicroPython v1.28's esp32 port re-creating
        machine.WDT reconfigures the task watchdog (esp_task_wdt_reconfigure,
        ports/esp32/machine_wdt.c), which also restarts its count."""
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        w = self._wdt
        if w is not None:
            w.feed()

    # -- sleep ------------------------------------------------------------------------

    def _quiet_highs(self):
        """Which active-high inputs are low now and may arm ext1 (bit 0 ACC,
        bit 1 charger)."""
        q = 0
        if not self._acc.value():
            q |= 1
        if not self._charger.value():
            q |= 2
        return q

    def light_sleep(self, ms):
        """Sleep up to ms with RAM kept; returns the WAKE_ reason.

        ext0 and ext1 each take one level: ext0 one pin, ext1 a set that
        wakes when ANY pin is high or when ALL are low (the ESP32 has no
        "any low"), and Pin.irq(wake=machine.SLEEP) is ext0 again. Two
        active-high inputs and two active-low ones cannot all be hardware
        wake sources, so: ext1 ANY_HIGH takes ACC and the charger, ext0 the
        RS485 RX pin going low (a start bit lasts 52 us at 19200 baud: only
        hardware catches it; the first frame is lost, the host's retry is
        answered), and the button, whose press lasts a tenth of a second or
        more, is polled: the sleep is cut into BUTTON_POLL_MS pieces.
        """
        self._de.value(0)  # listening: the receiver must pass the start bit on
        left = ms
        while left > 0:
            step = left if left < BUTTON_POLL_MS else BUTTON_POLL_MS
            # a low RX (an unbiased or busy bus) would end the sleep at once
            esp32.wake_on_ext0(pin=self._rx if self._rx.value() else None, level=0)
            esp32.wake_on_ext1(pins=self._ext1[self._quiet_highs()], level=esp32.WAKEUP_ANY_HIGH)
            machine.lightsleep(step)
            # ext0/ext1 leave their pads as RTC IO: give them back to the GPIO
            # matrix (the UART reads RX through it)
            self._rx.init(Pin.IN)
            self._acc.init(Pin.IN)
            self._charger.init(Pin.IN)
            if machine.wake_reason() != machine.TIMER_WAKE:
                if self._charger.value():
                    return WAKE_CHARGER
                if self._acc.value():
                    return WAKE_ACC
                if not self._button.value():
                    return WAKE_BUTTON
                return WAKE_RS485
            if not self._button.value():
                return WAKE_BUTTON
            left -= step
        return WAKE_TIMER

    def deep_sleep(self):
        """LEDs off, DE held low, wake on the button, ACC or charger, then
        deep sleep. Never returns: the next thing that runs is a boot, and
        reset_cause() says what woke it."""
        self._leds_off()
        self._de.init(Pin.OUT, value=0, hold=True)
        button = self._button
        waited = 0
        while not button.value() and waited < RELEASE_WAIT_MS:
            # a long press asked for this sleep: armed while still held,
            # the button would wake the MCU at once
            self.wdt_feed()
            time.sleep_ms(10)
            waited += 10
        armed = 0
        if button.value():
            esp32.wake_on_ext0(pin=button, level=0)
            armed = 1
        else:
            esp32.wake_on_ext0(pin=None)  # stuck pressed: leave it out
        quiet = self._quiet_highs()
        esp32.wake_on_ext1(pins=self._ext1[quiet], level=esp32.WAKEUP_ANY_HIGH)
        if armed or quiet:
            machine.deepsleep()
        machine.deepsleep(RECHECK_MS)  # nothing left to wake on: look again later

    def afe_boot(self):
        """The TS1 boot pulse: a bq769x0 in SHIP wakes, then needs 10 ms."""
        p = self._afe_boot
        p.value(1)
        time.sleep_ms(AFE_BOOT_PULSE_MS)
        p.value(0)
        time.sleep_ms(AFE_BOOT_WAIT_MS)
