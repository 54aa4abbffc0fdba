"""Pin map of the reference board: ESP32-WROOM-32, a bq76940 on I2C with its
ALERT on a GPIO, an RS485 transceiver on a UART with a driver-enable pin, a
5-LED bar, a push button, and the ACC and charger-detect inputs.

The one place that holds the board's GPIO numbers. bms.boards.esp32 reads
PINS from this module (`from board_pins import PINS`); `make build` compiles
it to lib/board_pins.mpy on the device, firmware/manifest.py freezes it.
Another board: copy this folder to firmware/boards/NAME, change the numbers,
then `make build BOARD=NAME` (or FROZEN_MANIFEST with BMS_BOARD=NAME).

Wake inputs must be RTC GPIOs (0, 2, 4, 12-15, 25-27, 32-39): deep and light
sleep watch only those (ext0/ext1). 34-39 are input-only, without internal
pull resistors.
"""

PINS = {
    # I2C0 to the bq76940 (SCL, SDA), 100 kHz, external pull-ups
    "i2c_scl": 22,
    "i2c_sda": 21,
    # the bq76940's ALERT output (an RTC pin)
    "afe_alert": 4,
    # UART2 to the RS485 transceiver: TX to DI, RX from RO. RX is an RTC pin:
    # light sleep wakes on its start bit
    "rs485_tx": 27,
    "rs485_rx": 26,
    # the transceiver's DE and /RE tied together: high drives the bus, low
    # listens; an RTC pad, held low (listening) through deep sleep
    "rs485_de": 14,
    # push button to GND with an external pull-up: pressed = low (deep-sleep
    # ext0 wake)
    "button": 35,
    # ignition / enable input, active high, external pull-down (ext1 wake)
    "acc": 34,
    # charger detect, active high, external pull-down (ext1 wake)
    "charger": 39,
    # drives the bq76940's TS1 through a diode: a high pulse boots an AFE in
    # SHIP
    "afe_boot": 13,
    # the LED bar, lowest first: PWM (LEDC) at 1 kHz, active high, each
    # driver pulled low (off while the pads are unpowered in deep sleep)
    "leds": (16, 17, 18, 19, 23),
}
