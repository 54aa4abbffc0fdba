"""Every event code the firmware logs (bms.eventlog), in one place: the
firmware logs them, bmsctl words them (bmsctl/events), the docs list them.
Constants only: the device build folds them into the code that logs them.

Codes 1..191 are the protection table's: EV_TRIP + row + 1 when a row
trips, EV_RELEASE + row + 1 when it releases, EV_LATCH + row + 1 when it
latches after its retries (bms.spec.protrules, docs/PROTECTION.md).
"""
from micropython import const

# The application's (200 and up): bms.app and bms.cycle
EV_BOOT = const(200)  # value: boot number
EV_AFE_UP = const(201)  # value: 1 configured, 0 failed
EV_CONFIG_ERRORS = const(202)  # value: stored settings that were rejected
EV_OCV_TABLE_REJECTED = const(203)  # the stored OCV table does not rise: the chemistry's is used
EV_SOC_START = const(204)  # value: the SOC the estimate started from, 0.1 %
EV_CC_CAL = const(205)  # value: the coulomb-counter offset after a calibration, 1/16 LSB (logged up to 0.6: the calibration is retired)
EV_CONFIG_RULE = const(214)  # value: the consistency rule the stored set breaks: it runs unconfigured
EV_CONFIG_IMPORTED = const(215)  # a bms.cfg file was taken in as the stored set
EV_RESET = const(217)  # value: the boot's reset cause << 8 | wake reason (bms.boards RESET_, WAKE_)
EV_CRASH = const(222)  # value: where (AT_) << 8 | kind (bms.start KIND_): the guard reset the MCU
EV_FAULT = const(223)  # value: where (AT_) << 8 | kind: a non-critical path started failing (Cycle.fault)

# Where the firmware is (bms.cycle Cycle.at): a crash keeps it with its kind (bms.start),
# so the report says where it happened.
AT_START = const(1)  # App.start(): the logs, the kept record, the AFE, the network
AT_MODBUS = const(2)  # the Modbus slave: a request, its reply
AT_WRITES = const(3)  # parameter writes and commands, after their reply
AT_MODES = const(4)  # inputs, the button, power modes, low power and sleep
AT_MEASURE = const(5)  # the AFE: status, measurements, bring-up
AT_SOC = const(6)  # the SOC estimator and the lifetime counters
AT_PROTECT = const(7)  # the protection table
AT_SWITCH = const(8)  # latch release, calibration, switching the FETs
AT_FLASH = const(9)  # the kept record, events and saves to flash
AT_BALANCE = const(10)
AT_PUBLISH = const(11)  # the input-register image
AT_UPLINK = const(12)  # MQTT
AT_LEDS = const(13)
# The kind of a failure (EV_CRASH, EV_FAULT: where << 8 | kind)
KIND_MEMORY = const(1)  # the crash's kind: a MemoryError
KIND_OS = const(2)  # an OSError
KIND_OTHER = const(3)  # another exception

# bms.config: parameter changes, unlocking, commands, saves
EV_PARAM_SET = const(206)  # value: address << 20 | new value (20-bit signed)
EV_PARAM_SET_K = const(207)  # the same, the value in thousands
EV_UNLOCKED = const(208)
EV_LOCKED = const(209)  # by a write of 0 or the timeout
EV_BAD_PIN = const(210)  # value: wrong PINs in a row
EV_COMMAND = const(211)  # value: the command
EV_SAVE_FAILED = const(212)  # older firmware, per failed settings save (value: errors so far); now EV_STORE_SAVE
EV_PARAMS_MIGRATED = const(213)  # value: the format version the stored set came from
EV_STORE_SAVE = const(221)  # value: SAVE_ store << 8 | why (bms.store FAIL_), 0 when saving works again

# bms.power
EV_MODE = const(216)  # value: mode << 8 | cause

# bms.netcfg
EV_NET_CONFIG = const(220)  # value: the net.cfg line that is wrong (0: the whole file): the network stays off

# bms.protection: the code's base, plus the row's index + 1
EV_TRIP = const(0)
EV_RELEASE = const(64)
EV_LATCH = const(128)

# bms.uplink (MQTT)
EV_NET_UP = const(218)  # value: connections since boot
EV_NET_DOWN = const(219)  # value: NERR_ << 8 | detail (a change of error, not every retry)
