# Under the MicroPython unix port: ModbusSlave.poll() allocates nothing when
# idle, when answering FC03/FC04, FC08 diagnostics (echo, counters,
# listen-only and restart), FC 0x2B/0x0E device identification, FC 0x11,
# and when answering exceptions.
# Prints "OK" or exits 1 with the reason. Run by tests/test_modbus_rtu.py.
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


class Bank:
    """NREGS registers at 0..NREGS-1 for both FC03 and FC04; above: unmapped."""

    def __init__(self):
        self.data = bytearray(2 * NREGS)
        i = 0
        while i < NREGS:
            self.data[2 * i] = i >> 3
            self.data[2 * i + 1] = (i * 7) & 0xFF
            i += 1

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
