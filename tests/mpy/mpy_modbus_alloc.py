# Under the MicroPython unix port: ModbusSlave.poll() allocates nothing when
# idle, when answering FC03/FC04, FC06/FC16 writes (accepted, refused by the
# slave or the bank, a bank that raises, broadcasts), FC08 diagnostics (echo,
# counters, listen-only and restart), FC 0x2B/0x0E device identification,
# FC 0x11, and when answering exceptions.
# Prints "OK" or exits 1 with the reason. Run by tests/firmware/test_modbus_rtu.py.
import sys

import micropython

from bms.crc import crc16
from bms.modbus_rtu import ModbusSlave

ADDR = 17
NREGS = 200


class Port:
    """Allocation-free fake port: one preloaded request, one recorded reply."""

    def __init__(self):
        self.req = bytearray(256)
        self.req_n = 0
        self.pos = 0
        self.out = bytearray(256)
        self.out_n = 0
        self.writes = 0

    def load(self, frame, n):
        i = 0
        while i < n:
            self.req[i] = frame[i]
            i += 1
        self.req_n = n
        self.pos = 0

    def readinto(self, buf):
        room = len(buf)
        k = 0
        req = self.req
        p = self.pos
        while k < room and p < self.req_n:
            buf[k] = req[p]
            k += 1
            p += 1
        self.pos = p
        return k

    def write(self, buf, n):
        out = self.out
        i = 0
        while i < n:
            out[i] = buf[i]
            i += 1
        self.out_n = n
        self.writes += 1
        return n


RAISE_REG = NREGS - 1  # a write here raises (exception 04)
_FAIL = OSError(5)  # made before the heap is locked: raising it allocates nothing


class Bank:
    """NREGS registers at 0..NREGS-1 for both FC03 and FC04; above: unmapped.
    Writes go to a separate holding area (so the reads stay checkable): all
    or nothing, a word above 0x7FFF is 03, beyond NREGS 02."""

    def __init__(self):
        self.data = bytearray(2 * NREGS)
        self.hold = bytearray(2 * NREGS)
        self.writes = 0
        self.broadcasts = 0
        i = 0
        while i < NREGS:
            self.data[2 * i] = i >> 3
            self.data[2 * i + 1] = (i * 7) & 0xFF
            i += 1

    def write_registers(self, addr, count, data, off, broadcast):
        if addr + count > NREGS:
            return 2
        i = 0
        while i < count:
            if data[off + 2 * i] & 0x80:
                return 3
            i += 1
        if addr + count > RAISE_REG:
            raise _FAIL
        h = self.hold
        i = 2 * addr
        end = 2 * (addr + count)
        while i < end:
            h[i] = data[off]
            off += 1
            i += 1
        self.writes += 1
        if broadcast:
            self.broadcasts += 1
        return 0

    def read_registers(self, fc, addr, count, out, off):
        if addr + count > NREGS:
            return 2
        d = self.data
        i = 2 * addr
        end = 2 * (addr + count)
        while i < end:
            out[off] = d[i]
            off += 1
            i += 1
        return 0


def frame(body):
    b = bytearray(len(body) + 2)
    for i in range(len(body)):
        b[i] = body[i]
    c = crc16(b, 0, len(body))
    b[len(body)] = c & 0xFF
    b[len(body) + 1] = c >> 8
    return b


port = Port()
bank = Bank()
slave = ModbusSlave(port, bank, ADDR, 19200)

REQ_FC04_125 = frame(bytes((ADDR, 4, 0, 10, 0, 125)))
REQ_FC03_1 = frame(bytes((ADDR, 3, 0, 5, 0, 1)))
REQ_EX_QTY = frame(bytes((ADDR, 3, 0, 0, 0, 126)))  # exception 03
REQ_EX_ADDR = frame(bytes((ADDR, 4, 0, 199, 0, 2)))  # exception 02 from the bank
REQ_EX_FC = frame(bytes((ADDR, 0x41, 1, 2)))  # exception 01 after the silence
REQ_BAD_CRC = frame(bytes((ADDR, 3, 0, 5, 0, 1)))
REQ_BAD_CRC[7] ^= 0x55
REQ_OTHER = frame(bytes((ADDR + 1, 3, 0, 5, 0, 1)))
REQ_DIAG_ECHO = frame(bytes((ADDR, 8, 0, 0, 0xA5, 0x37)))
REQ_DIAG_BUS = frame(bytes((ADDR, 8, 0, 0x0B, 0, 0)))
REQ_DIAG_NORESP = frame(bytes((ADDR, 8, 0, 0x0F, 0, 0)))
REQ_DIAG_BADSUB = frame(bytes((ADDR, 8, 0, 0x02, 0, 0)))  # exception 01
REQ_DIAG_LISTEN = frame(bytes((ADDR, 8, 0, 0x04, 0, 0)))
REQ_DIAG_RESTART = frame(bytes((ADDR, 8, 0, 0x01, 0xFF, 0)))
REQ_MEI_BASIC = frame(bytes((ADDR, 0x2B, 0x0E, 1, 0)))
REQ_MEI_REGULAR = frame(bytes((ADDR, 0x2B, 0x0E, 2, 0)))
REQ_MEI_ONE = frame(bytes((ADDR, 0x2B, 0x0E, 4, 1)))
REQ_MEI_BADOBJ = frame(bytes((ADDR, 0x2B, 0x0E, 4, 9)))  # exception 02
REQ_SERVER_ID = frame(bytes((ADDR, 0x11)))
REQ_W1 = frame(bytes((ADDR, 6, 0, 150, 0x12, 0x34)))
REQ_W1_RANGE = frame(bytes((ADDR, 6, 0, 151, 0x80, 0)))  # exception 03 from the bank
REQ_W1_UNMAPPED = frame(bytes((ADDR, 6, 0, NREGS, 0, 1)))  # exception 02 from the bank
REQ_W1_RAISE = frame(bytes((ADDR, 6, 0, RAISE_REG, 0, 1)))  # the bank raises: 04
REQ_W1_SHORT = frame(bytes((ADDR, 6, 0, 1)))  # exception 03 after the silence
REQ_WN = frame(bytes((ADDR, 16, 0, 160, 0, 3, 6, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06)))
_body = bytearray(7 + 246)
_body[0] = ADDR
_body[1] = 16
_body[3] = 20  # registers 20..142
_body[5] = 123
_body[6] = 246
for _i in range(246):
    _body[7 + _i] = (_i * 5) & 0x7F
REQ_WN_123 = frame(_body)
REQ_WN_QTY0 = frame(bytes((ADDR, 16, 0, 0, 0, 0, 0)))  # exception 03
REQ_WN_QTY124 = frame(bytes((ADDR, 16, 0, 0, 0, 124, 2, 0, 1)))  # exception 03
REQ_WN_BYTES = frame(bytes((ADDR, 16, 0, 1, 0, 2, 2, 0, 1)))  # byte count mismatch: 03
REQ_WN_RANGE = frame(bytes((ADDR, 16, 0, 160, 0, 2, 4, 0, 9, 0xFF, 0xFF)))  # 03 from the bank
REQ_WN_OVERFLOW = frame(bytes((ADDR, 16, 0xFF, 0xFF, 0, 2, 4, 0, 1, 0, 2)))  # 02
REQ_WN_UNMAPPED = frame(bytes((ADDR, 16, 0, NREGS - 2, 0, 3, 6, 0, 1, 0, 2, 0, 3)))  # 02
REQ_WN_RAISE = frame(bytes((ADDR, 16, 0, RAISE_REG - 1, 0, 2, 4, 0, 1, 0, 2)))  # 04
REQ_WB_1 = frame(bytes((0, 6, 0, 170, 0x0B, 0x0C)))  # broadcasts: never answered
REQ_WB_N = frame(bytes((0, 16, 0, 171, 0, 2, 4, 0x0D, 0x0E, 0x0F, 0x10)))
REQ_WB_BAD = frame(bytes((0, 16, 0, 0, 0, 0, 0)))

_ID = slave._ident
MEI_BASIC_LEN = 8 + 6 + len(_ID[0]) + len(_ID[1]) + len(_ID[2]) + 2
MEI_REGULAR_LEN = 8 + 2 * len(_ID) + 2
for _o in _ID:
    MEI_REGULAR_LEN += len(_o)
SERVER_ID_LEN = 5 + len(_ID[1]) + 1 + len(_ID[2]) + 2

# (frame, expected reply length (0: none), expected reply fc byte)
CASES = (
    (REQ_FC04_125, 5 + 250, 4),
    (REQ_FC03_1, 7, 3),
    (REQ_EX_QTY, 5, 0x83),
    (REQ_EX_ADDR, 5, 0x84),
    (REQ_EX_FC, 5, 0xC1),
    (REQ_BAD_CRC, 0, 0),
    (REQ_OTHER, 0, 0),
    (REQ_DIAG_ECHO, 8, 8),
    (REQ_DIAG_BUS, 8, 8),
    (REQ_DIAG_NORESP, 8, 8),
    (REQ_DIAG_BADSUB, 5, 0x88),
    (REQ_DIAG_LISTEN, 0, 0),  # listen-only: nothing answered ...
    (REQ_FC03_1, 0, 0),
    (REQ_DIAG_ECHO, 0, 0),
    (REQ_DIAG_RESTART, 0, 0),  # ... the restart ends it, unanswered
    (REQ_FC03_1, 7, 3),
    (REQ_MEI_BASIC, MEI_BASIC_LEN, 0x2B),
    (REQ_MEI_REGULAR, MEI_REGULAR_LEN, 0x2B),
    (REQ_MEI_ONE, 8 + 2 + len(_ID[1]) + 2, 0x2B),
    (REQ_MEI_BADOBJ, 5, 0xAB),
    (REQ_SERVER_ID, SERVER_ID_LEN, 0x11),
    (REQ_W1, 8, 6),
    (REQ_W1_RANGE, 5, 0x86),
    (REQ_W1_UNMAPPED, 5, 0x86),
    (REQ_W1_RAISE, 5, 0x86),
    (REQ_W1_SHORT, 5, 0x86),
    (REQ_WN, 8, 0x10),
    (REQ_WN_123, 8, 0x10),
    (REQ_WN_QTY0, 5, 0x90),
    (REQ_WN_QTY124, 5, 0x90),
    (REQ_WN_BYTES, 5, 0x90),
    (REQ_WN_RANGE, 5, 0x90),
    (REQ_WN_OVERFLOW, 5, 0x90),
    (REQ_WN_UNMAPPED, 5, 0x90),
    (REQ_WN_RAISE, 5, 0x90),
    (REQ_WB_1, 0, 0),
    (REQ_WB_N, 0, 0),
    (REQ_WB_BAD, 0, 0),
)
# the exception code each exception case must carry (by request)
EXC_CODES = (
    (REQ_EX_QTY, 3), (REQ_EX_ADDR, 2), (REQ_W1_RANGE, 3), (REQ_W1_UNMAPPED, 2), (REQ_W1_RAISE, 4),
    (REQ_W1_SHORT, 3), (REQ_WN_QTY0, 3), (REQ_WN_QTY124, 3), (REQ_WN_BYTES, 3), (REQ_WN_RANGE, 3),
    (REQ_WN_OVERFLOW, 2), (REQ_WN_UNMAPPED, 2), (REQ_WN_RAISE, 4),
)

# where a failure happened, written without allocating
state = bytearray(4)  # [0]: step, [1]: case, [2]: code
ST_OK = 0
ST_MEMORY = 1
ST_WRONG = 2


def transact(req, exp_len, exp_fc, now):
    """Send req, poll until the silence has passed; check the reply.
    Returns the new time, or -1 when the reply is wrong."""
    port.load(req, len(req))
    writes = port.writes
    slave.poll(now)
    end = now + 10
    while now < end:
        now += 1
        slave.poll(now)
    if exp_len == 0:
        if port.writes != writes:
            return -1
        return now
    if port.writes != writes + 1 or port.out_n != exp_len:
        return -1
    out = port.out
    if out[0] != ADDR or out[1] != exp_fc or crc16(out, 0, exp_len) != 0:
        return -1
    if exp_fc & 0x80:
        k = 0
        while k < len(EXC_CODES):
            if EXC_CODES[k][0] is req and out[2] != EXC_CODES[k][1]:
                return -1
            k += 1
    elif exp_fc == 6 or exp_fc == 0x10:
        k = 1
        while k < 6:  # FC06 echoes, FC16 repeats start and quantity
            if out[k] != req[k]:
                return -1
            k += 1
    return now


def run_all(rounds):
    now = 1000
    state[0] = 1
    i = 0
    while i < 1000:  # idle polls
        slave.poll(now)
        now += 1
        i += 1
    state[0] = 2
    r = 0
    while r < rounds:
        c = 0
        while c < len(CASES):
            state[1] = c
            case = CASES[c]
            now = transact(case[0], case[1], case[2], now)
            if now < 0:
                state[2] = ST_WRONG
                return
            c += 1
        r += 1
    # the FC04 reply carries the bank's data
    out = port.out
    state[0] = 3
    port.load(REQ_FC04_125, len(REQ_FC04_125))
    now = transact(REQ_FC04_125, 255, 4, now)
    if now < 0 or out[3] != 10 >> 3 or out[4] != 70 or out[3 + 248] != 134 >> 3:
        state[2] = ST_WRONG
        return
    # what the accepted writes (and the broadcasts the bank took) left
    state[0] = 5
    h = bank.hold
    if h[300] != 0x12 or h[301] != 0x34 or h[302] != 0 or h[303] != 0:
        state[2] = ST_WRONG
        return
    i = 0
    while i < 6:
        if h[320 + i] != i + 1 or h[40 + i] != (i * 5) & 0x7F or h[40 + 240 + i] != ((240 + i) * 5) & 0x7F:
            state[2] = ST_WRONG
            return
        i += 1
    if h[340] != 0x0B or h[341] != 0x0C or h[342] != 0x0D or h[345] != 0x10 or h[2 * RAISE_REG + 1] != 0:
        state[2] = ST_WRONG
        return
    if slave.exceptions_sent == 0 or bank.broadcasts == 0:
        state[2] = ST_WRONG
        return
    state[0] = 4


def locked(rounds):
    micropython.heap_lock()
    try:
        run_all(rounds)
    except MemoryError:
        state[2] = ST_MEMORY
    finally:
        micropython.heap_unlock()


def main():
    # the mechanism itself: an allocation under heap_lock must fail
    ok = False
    micropython.heap_lock()
    try:
        bytearray(8)
    except MemoryError:
        ok = True
    finally:
        micropython.heap_unlock()
    if not ok:
        print("heap_lock does not stop allocation in this build")
        sys.exit(1)
    run_all(1)  # warm-up, unlocked
    if state[2] != ST_OK or state[0] != 4:
        print("FAIL unlocked: step", state[0], "case", state[1], "code", state[2])
        sys.exit(1)
    state[0] = 0
    state[1] = 0
    locked(20)
    if state[2] == ST_MEMORY:
        print("FAIL: allocation (MemoryError) in step", state[0], "case", state[1])
        sys.exit(1)
    if state[2] != ST_OK or state[0] != 4:
        print("FAIL: wrong reply in step", state[0], "case", state[1])
        sys.exit(1)
    print("OK")


main()
