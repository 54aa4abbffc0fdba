"""The Modbus RTU requests the bench sends, as a host polling the BMS
does, and the valid replies found in what the firmware sent."""
from bms.spec import paramtable as PT
from bms import regmap as M
from bms.crc import crc16

ADDR = {r[1]: r[0] for r in PT.TABLE}
CELL_OV = ADDR["cell_ov_mv"]
LED_BRIGHTNESS = ADDR["led_brightness_pct"]


def frame(body):
    c = crc16(body, 0, len(body))
    return bytes(body) + bytes((c & 0xFF, c >> 8))


# Requests, as a host polling the BMS sends them: (name, frame). The writes
# are the ones tests/firmware/test_heap_locked_cycle.py proves allocation-free: the
# NMC default again (accepted, nothing to save) and an out-of-range value
# (exception 03).
R_STATUS = ("fc04_status", frame(bytes([1, 4, 0, M.IR_CELL_COUNT, 0, M.IR_BALANCE_MASK + 1])))
R_CELLS = ("fc04_cells", frame(bytes([1, 4, 0, M.IR_CELL_MV, 0, 15])))
R_SOC = ("fc04_soc", frame(bytes([1, 4, 0, M.IR_SOC_DPCT, 0, 8])))
R_HOLD = ("fc03_params", frame(bytes([1, 3, 0, 0, 0, 12])))
W_SAME = ("fc06_accepted", frame(bytes([1, 6, 0, CELL_OV]) + (4250).to_bytes(2, "big")))
W_RANGE = ("fc06_refused", frame(bytes([1, 6, 0, CELL_OV]) + (9999).to_bytes(2, "big")))
UNLOCK = frame(bytes([1, 6, 0, M.HR_UNLOCK]) + (1234).to_bytes(2, "big"))
MIX = (R_CELLS, R_STATUS, R_SOC, R_HOLD, R_CELLS, R_STATUS, W_SAME, R_CELLS, R_SOC, W_RANGE)


def reply_len(req):
    """The length of the normal reply to req (an exception reply is 5)."""
    fc = req[1]
    if fc in (3, 4):
        return 5 + 2 * ((req[4] << 8) | req[5])
    return 8


def parse_replies(data):
    """The valid RTU replies (address 1) in a byte stream, in order."""
    out = []
    i = 0
    while i + 5 <= len(data):
        fc = data[i + 1]
        if data[i] != 1:
            i += 1
            continue
        if fc & 0x80:
            n = 5
        elif fc in (3, 4):
            n = 5 + data[i + 2]
        elif fc in (6, 16):
            n = 8
        else:
            i += 1
            continue
        if i + n <= len(data) and crc16(data, i, i + n) == 0:
            out.append(bytes(data[i:i + n]))
            i += n
        else:
            i += 1
    return out
