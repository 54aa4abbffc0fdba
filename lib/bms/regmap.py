"""The Modbus register map's addresses and the values its registers carry:
the firmware's register header, which the host tools read too.

Input registers (FC 04) hold measurements and state, refreshed once per
measurement cycle into a register image (bms.regimage); holding registers
(FC 03) hold the parameters (bms.params). The rows that name, type and
scale each register are host-only: bms.spec.regtable (input and control
registers) and bms.spec.paramtable (parameters). Every name here is a
const(): the device build folds them into the code that reads them.
"""
from micropython import const

# Sentinel for a temperature with no sensor or a failed one (int16 -32768).
TEMP_INVALID = const(-32768)

# Input registers (FC 04)
IR_CELL_COUNT = const(0x0000)
IR_PACK_MV = const(0x0001)  # uint32
IR_CURRENT_MA = const(0x0003)  # int32
IR_CELL_MIN_MV = const(0x0005)
IR_CELL_MAX_MV = const(0x0006)
IR_CELL_SPREAD_MV = const(0x0007)
IR_CELL_MIN_NUM = const(0x0008)
IR_CELL_MAX_NUM = const(0x0009)
IR_TEMP_DC = const(0x000A)  # 3 x int16
IR_FET_FLAGS = const(0x000D)
IR_AFE_STAT = const(0x000E)
IR_PROTECT_FLAGS = const(0x000F)  # uint32
IR_WARN_FLAGS = const(0x0011)  # uint32
IR_CHG_OFF_REASON = const(0x0013)
IR_DSG_OFF_REASON = const(0x0014)
IR_LATCHED_FLAGS = const(0x0015)  # uint32
IR_UPTIME_S = const(0x0017)  # uint32
IR_MEAS_COUNT = const(0x0019)
IR_AFE_CRC_ERRORS = const(0x001A)
IR_AFE_BUS_ERRORS = const(0x001B)
IR_BALANCE_MASK = const(0x001C)
IR_EVENT_SEQ = const(0x001E)  # uint32
IR_CELL_MV = const(0x0020)  # MAX_CELLS x uint16: 0x0020-0x002F (cell 16 took 0x002F, a gap before)
IR_HW_OV_MV = const(0x0030)
IR_HW_UV_MV = const(0x0031)
IR_HW_OCD_MA = const(0x0032)  # uint32
IR_HW_OCD_DELAY_MS = const(0x0034)
IR_HW_SCD_MA = const(0x0035)  # uint32
IR_HW_SCD_DELAY_US = const(0x0037)
IR_SOC_DPCT = const(0x0038)
IR_SOH_DPCT = const(0x0039)
IR_TTE_MIN = const(0x003A)
IR_TTF_MIN = const(0x003B)
IR_REMAINING_MAH = const(0x003C)  # uint32
IR_FULL_CAPACITY_MAH = const(0x003E)  # uint32
IR_EVENTS = const(0x0040)  # EVENT_WINDOW records of EVENT_WORDS registers
EVENT_WINDOW = const(15)
EVENT_WORDS = const(8)
IR_REMAINING_DWH = const(0x00B8)  # uint32
IR_CYCLES_DC = const(0x00BA)  # uint32
IR_CC_OFFSET = const(0x00BC)  # int16
IR_CONFIG_STATE = const(0x00BD)  # CFG_ bits
IR_CONFIG_ERROR = const(0x00BE)  # why the last write was refused: reason << 8 | detail
IR_UNLOCK_LEFT_S = const(0x00BF)
IR_PARAM_SAVES = const(0x00C0)  # uint32
IR_LIFE_CHG_MAH = const(0x00C2)  # uint32
IR_LIFE_DSG_MAH = const(0x00C4)  # uint32
IR_LIFE_ON_S = const(0x00C6)  # uint32
IR_LIFE_CELL_MAX_MV = const(0x00C8)
IR_LIFE_CELL_MIN_MV = const(0x00C9)
IR_LIFE_TEMP_MAX_DC = const(0x00CA)  # int16
IR_LIFE_TEMP_MIN_DC = const(0x00CB)  # int16
IR_LIFE_TRIPS = const(0x00CC)
IR_POWER_MODE = const(0x00CD)
IR_MODE_CAUSE = const(0x00CE)
IR_MODE_TIME_S = const(0x00CF)  # uint32
IR_RESET_CAUSE = const(0x00D1)
IR_IO_STATE = const(0x00D2)
IR_NET_STATE = const(0x00D3)  # NET_ (bms.uplink)
IR_NET_ERROR = const(0x00D4)  # the last NERR_ << 8 | detail (0: none since the link came up)
IR_NET_CONNECTS = const(0x00D5)
IR_NET_STORED = const(0x00D6)  # state samples waiting in the store-and-forward ring
IR_NET_DROPPED = const(0x00D7)  # uint32: samples the full ring let go
IR_NET_SENT = const(0x00D9)  # uint32: messages the broker acknowledged
IR_NET_BLOCK_MAX_MS = const(0x00DB)  # the longest a network call held the control loop
IR_SAVE_ERRORS = const(0x00DC)  # failed saves to flash since boot (settings, SOC state, lifetime)
IR_FAULTS = const(0x00DD)  # failures a non-critical path caught since boot (bms.cycle Cycle.fault)
IR_FAULT_LAST = const(0x00DE)  # the last one: where (bms.events AT_) << 8 | kind (bms.events KIND_)
IR_SOC_STATE = const(0x00DF)  # SOC_ bits: the SOC window and storage mode
IR_DRAW_UA = const(0x00E0)  # uint32: the board's own supply current now (its model, bms.boards DRAW_)
IR_DRAWN_MAH = const(0x00E2)  # uint32: the board's own draw counted against the SOC since boot, sleep before it included
IR_SOC_RESTS = const(0x00E4)  # rests the SOC estimator judged since boot (no current, the voltage relaxed)
IR_SOC_OCV_FIXES = const(0x00E5)  # OCV corrections of the SOC since boot
IR_HW_OCC_MA = const(0x00E6)  # uint32: the chip's charge over-current as applied, 0 = none (no comparator, or beyond its range)
IR_HW_OCC_DELAY_MS = const(0x00E8)
IR_HW_OTC_DC = const(0x00E9)  # the chip's temperature protections as applied, HW_TEMP_NONE where it has none
IR_HW_OTD_DC = const(0x00EA)
IR_HW_UTC_DC = const(0x00EB)
IR_HW_UTD_DC = const(0x00EC)
IR_SIZE = const(0x00ED)
HW_TEMP_NONE = const(-32768)  # int16 0x8000: no such comparator on the chip

MAX_CELLS = const(16)  # cells of the largest pack: the cell inputs of the largest AFE (bms.afe)
MAX_TEMPS = const(3)  # thermistor inputs of the largest AFE

# FET flag bits (IR_FET_FLAGS), as read back from the AFE
FET_CHG = const(0x0001)
FET_DSG = const(0x0002)
FET_DIODE = const(0x0004)  # a FET is on only to spare its body diode: its direction stays blocked

# SOC window and storage bits (IR_SOC_STATE)
SOC_CHG_STOP = const(0x0001)  # soc_high holds charge off: the SOC reached soc_max
SOC_DSG_STOP = const(0x0002)  # soc_low holds discharge off: the SOC reached soc_min
SOC_LOW_WARN = const(0x0004)  # soc_low_warn
SOC_STORAGE = const(0x0008)  # storage mode is on
SOC_STORAGE_CHG = const(0x0010)  # storage_high holds charge off
SOC_STORAGE_DSG = const(0x0020)  # storage_low holds discharge off
SOC_STORAGE_AT = const(0x0040)  # storage mode within 1 % of storage_soc: arrived (it rests, then sleeps)
SOC_REST = const(0x0080)  # the SOC estimator judges the pack at rest now (no current, the voltage relaxed)


# IR_NET_STATE: the MQTT link (bms.uplink)
NET_OFF = const(0)  # no net.cfg, net_enable 0, or not in working mode
NET_JOINING = const(1)  # waiting for the Wi-Fi network
NET_CONNECTING = const(2)  # TCP (and TLS) to the broker
NET_ONLINE = const(3)
NET_BACKOFF = const(4)  # the last try failed (IR_NET_ERROR says why): waiting to retry
NET_CONFIG_ERROR = const(5)  # net.cfg is wrong (the event log has the line): the network stays off
# IR_NET_ERROR reasons (high byte); the low byte: the broker's CONNACK code or the errno
NERR_WIFI = const(1)  # no Wi-Fi connection (wrong SSID or password, out of range)
NERR_DNS = const(2)  # the broker's host name did not resolve
NERR_REFUSED = const(3)  # nothing answers at the broker's address and port
NERR_TIMEOUT = const(4)  # the broker did not answer in timeout_ms
NERR_AUTH = const(5)  # the broker refused the user name or password (CONNACK 4 or 5)
NERR_BROKER = const(6)  # the broker refused the connection for another reason (CONNACK code)
NERR_LOST = const(7)  # the connection broke while online
NERR_TLS = const(8)  # the TLS handshake failed (certificate, CA file)

# IR_CONFIG_STATE bits
CFG_CONFIGURED = const(0x0001)  # running with a configured pack (FETs may close)
CFG_UNLOCKED = const(0x0002)  # parameter writes are open
CFG_RESTART_PENDING = const(0x0004)  # a stored change takes effect at the next restart
CFG_SAVE_FAILED = const(0x0008)  # the last save to flash failed: the old set is still stored
CFG_PIN_LOCKOUT = const(0x0010)  # too many wrong PINs: unlocking refused for a while

# IR_CONFIG_ERROR reasons (high byte); the low byte says which
ERR_LOCKED = const(1)  # a parameter write while locked (exception 01)
ERR_RANGE = const(2)  # detail: the parameter's index (exception 03)
ERR_RULE = const(3)  # detail: the consistency rule's number (exception 03)
ERR_SPLIT = const(4)  # detail: the 32-bit parameter written in part (exception 02)
ERR_BAD_PIN = const(5)  # detail: tries left before a lockout (exception 03)
ERR_PIN_LOCKOUT = const(6)  # detail: seconds left, at most 255 (exception 03)
ERR_COMMAND = const(7)  # detail: the unknown command (exception 03)
ERR_UNCONFIGURE = const(8)  # a write would leave a configured pack unconfigured (exception 03)
ERR_CONTROL_SPAN = const(9)  # a control register written together with others (exception 02)
ERR_UNMAPPED = const(10)  # a register of the range is not in the map (exception 02)
ERR_RESERVED = const(11)  # detail: a reserved register written with other than 0 (exception 03)

# Holding registers (FC 03): the parameters, one row each of
# bms.spec.paramtable.TABLE (host tools read it there; the firmware maps them
# from bms.params.Params).
# Control registers after them: written alone (FC 06, or FC 16 of one register).
HR_UNLOCK = const(0x00F0)  # write the PIN to unlock, 0 to lock; reads 1 while unlocked
HR_COMMAND = const(0x00F1)  # write a CMD_ (unlocked); reads 0
HR_SIZE = const(0x00F2)
# Reserved: reads 0 and takes only 0, so one write can carry the pack keys
# (0x00..0x0D, afe_type the last) and the pack voltage limits (0x1C..0x2B)
# together, as a new cell count needs.
HR_RESERVED = const(0x000E)
HR_RESERVED_COUNT = const(2)
CMD_RESTART = const(1)  # restart the BMS after the reply: stored changes take effect
CMD_CLEAR_LATCHED = const(2)  # release protections latched after their retries (e.g. short circuit)
CMD_FACTORY_RESET = const(3)  # erase the stored parameters and restart unconfigured
CMD_STORAGE_ON = const(4)  # storage mode on (the parameter `storage`, saved): charge and discharge to storage_soc
CMD_STORAGE_OFF = const(5)  # storage mode off: the pack in use again
