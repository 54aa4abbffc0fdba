"""The board interface: what every board (esp32.py, sim.py) provides, and
the codes they share with the core.

    i2c, serial, storage_dir          the buses and the flash directory
    ticks_ms(), idle(ms), alert()     the clock, waiting, the AFE's ALERT
    set_serial(baud, parity), reset()
    inputs() -> IN_ bits              button, ACC (ignition/enable), charger detect
    leds(duties)                      bytearray of 0..255 PWM duties, one per LED
    network(on)                       the network module's power (Wi-Fi)
    net_join(ssid, password)          start joining a Wi-Fi network (returns at once)
    net_ready()                       joined, with an address: sockets may connect
    dns_server()                      (IPv4 address, port) of the DNS server to ask, or None
    device_id() -> str                this board's name for MQTT topics (from its MAC)
    wall_us()                         real microseconds (wrapping like ticks_ms), to
                                      measure how long a call held the loop
    wdt_start(timeout_ms), wdt_feed() the watchdog (cannot be stopped)
    light_sleep(ms) -> WAKE_          RAM kept; back on a wake source or the timer
    deep_sleep()                      never returns: the MCU restarts on ACC,
                                      charger or button (reset_cause() says)
    reset_cause() -> (RESET_, WAKE_)  why this boot happened
    keep(data), kept() -> bytes       a record that survives resets, the watchdog and
                                      deep sleep, not a power cut (RTC memory)
    clock_s()                         seconds on a clock that runs through deep sleep
                                      and resets (the RTC), under 2**30
    afe_boot()                        the TS1 boot pulse that wakes a shipped AFE
"""
from micropython import const

# inputs() bits
IN_BUTTON = const(1)  # pressed
IN_ACC = const(2)  # ignition / enable input active
IN_CHARGER = const(4)  # a charger is connected

# wake reasons (light_sleep's result, and the second half of reset_cause())
WAKE_NONE = const(0)
WAKE_TIMER = const(1)
WAKE_RS485 = const(2)  # activity on the RS485 receive line (the first frame may be lost)
WAKE_CHARGER = const(3)
WAKE_ACC = const(4)
WAKE_BUTTON = const(5)

# reset causes (the first half of reset_cause())
RESET_POWER_ON = const(1)
RESET_HARD = const(2)
RESET_WDT = const(3)
RESET_DEEPSLEEP = const(4)
RESET_SOFT = const(5)  # machine.reset(): a restart the firmware asked for

# reset(reason): why the firmware resets the MCU
REASON_ASKED = const(0)  # a command, a setting that needs it: the next boot says RESET_SOFT
REASON_CRASH = const(1)  # the guard (bms.start) after an exception: the next boot says RESET_HARD

# The reference board's supply current, uA, per part and state: estimates
# from the datasheets. The firmware counts its own draw against the SOC
# with them (it comes from the pack and never passes the shunt: bms.cycle);
# the simulator drains its pack by the same figures (tools/bms_sim/power.py).
# Espressif ESP32 datasheet (v4.x), "Power consumption by power modes":
# modem-sleep (CPU running, radio off) at 160 MHz 27-44 mA, light sleep
# 0.8 mA, deep sleep with the RTC timer and RTC memory 10 uA; Wi-Fi
# transmitting/receiving 95-240 mA, about 80 mA more on average. The RS485
# transceiver (MAX3485-class, receiver on) about 0.5 mA while awake, inside
# the awake figure.
DRAW_AWAKE_UA = const(40000)
DRAW_NETWORK_UA = const(80000)
DRAW_LIGHT_SLEEP_UA = const(800)
DRAW_DEEP_SLEEP_UA = const(10)
# TI bq76920/30/40 datasheet (SLUSBK2), supply current IDD: NORMAL mode
# about 40 uA, SHIP mode about 1 uA.
DRAW_AFE_UA = const(40)
DRAW_AFE_SHIP_UA = const(1)
