"""Modbus RTU slave: framing, CRC, FC03/FC04, exceptions, resync, and the
allocation-free hot path under the real MicroPython unix port."""
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bms.crc import crc16
from bms.modbus_rtu import ModbusSlave, silence_ms
from conftest import run_mpy

ADDR = 17


# -- independent helpers ----------------------------------------------------

def crc_bitwise(data):
    """Reference CRC-16/MODBUS, bit by bit (independent of the table)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body):
    body = bytes(body)
    c = crc_bitwise(body)
    return body + bytes((c & 0xFF, c >> 8))


def crc_ok(frame):
    return len(frame) >= 4 and crc_bitwise(frame[:-2]) == (frame[-2] | (frame[-1] << 8))


def read_req(addr, fc, start, count):
    return with_crc(struct.pack(">BBHH", addr, fc, start, count))


class FakePort:
    """Feeds scripted bytes (at most len(buf) per readinto), records writes."""

    def __init__(self):
        self.pending = bytearray()
        self.writes = []

    def feed(self, data):
        self.pending += data

    def readinto(self, buf):
        n = min(len(buf), len(self.pending))
        if n == 0:
            return None  # like machine.UART when nothing is waiting
        buf[0:n] = self.pending[:n]
        del self.pending[:n]
        return n

    def write(self, buf, n):
        self.writes.append(bytes(buf[:n]))
        return n


class FakeBank:
    """Registers in dicts; anything not in the dict is unmapped."""

    def __init__(self, holding=None, inputs=None):
        self.regs = {3: dict(holding or {}), 4: dict(inputs or {})}
        self.calls = 0

    def read_registers(self, fc, addr, count, out, off):
        self.calls += 1
        regs = self.regs[fc]
        for i in range(count):
            if addr + i not in regs:
                return 2
        for i in range(count):
            v = regs[addr + i]
            out[off + 2 * i] = v >> 8
            out[off + 2 * i + 1] = v & 0xFF
        return 0

    def write_registers(self, addr, count, data, off, broadcast):
        """All or nothing: unmapped -> 02; a value above 0x7FFF -> 03."""
        self.calls += 1
        self.writes = getattr(self, "writes", []) + [(addr, count, broadcast)]
        regs = self.regs[3]
        words = [(data[off + 2 * i] << 8) | data[off + 2 * i + 1] for i in range(count)]
        if any(addr + i not in regs for i in range(count)):
            return 2
        if any(w > 0x7FFF for w in words):
            return 3
        for i, w in enumerate(words):
            regs[addr + i] = w
        return 0


def default_bank():
    holding = {a: (0x1000 + a) & 0xFFFF for a in range(0, 200)}
    inputs = {a: (a * 37 + 5) & 0xFFFF for a in range(0, 50)}
    inputs.update({a: a for a in range(100, 300)})
    return FakeBank(holding, inputs)


class Rig:
    def __init__(self, bank=None, address=ADDR, baud=19200):
        self.port = FakePort()
        self.bank = bank or default_bank()
        self.slave = ModbusSlave(self.port, self.bank, address, baud)
        self.now = 1000

    def send(self, data, advance=0):
        """Feed bytes, poll once; returns poll()'s result."""
        self.port.feed(data)
        r = self.slave.poll(self.now)
        self.now += advance
        return r

    def silence(self):
        self.now += self.slave.t35_ms
        return self.slave.poll(self.now)

    def transact(self, data):
        """Send a frame, poll, then a silence; return the writes and clear them."""
        self.send(data)
        self.silence()
        w = self.port.writes
        self.port.writes = []
        return w


def expected_reply(addr, fc, values):
    return with_crc(bytes((addr, fc, 2 * len(values))) + b"".join(struct.pack(">H", v) for v in values))


def expected_exc(addr, fc, code):
    return with_crc(bytes((addr, fc | 0x80, code)))


# -- CRC ---------------------------------------------------------------------

def test_crc_check_values():
    assert crc16(b"123456789", 0, 9) == 0x4B37
    assert crc16(b"\x02\x07", 0, 2) == 0x1241
    assert crc16(bytearray(b"xx\x02\x07yy"), 2, 4) == 0x1241
    assert crc_bitwise(b"123456789") == 0x4B37


def test_crc_matches_pymodbus():
    from pymodbus.framer.rtu import FramerRTU
    rig = Rig()
    w = rig.transact(read_req(ADDR, 4, 0, 3))
    assert len(w) == 1
    frame = w[0]
    # pymodbus returns the CRC with the wire's first byte as the high byte
    assert FramerRTU.compute_CRC(frame[:-2]).to_bytes(2, "big") == frame[-2:]
    assert FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def test_pymodbus_decodes_reply():
    """pymodbus' own RTU framer parses our reply to the right registers."""
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU
    rig = Rig()
    w = rig.transact(read_req(ADDR, 3, 10, 4))
    framer = FramerRTU(DecodePDU(False))
    used, pdu = framer.handleFrame(w[0], ADDR, 0)
    assert used == len(w[0])
    assert pdu is not None
    assert pdu.dev_id == ADDR
    assert list(pdu.registers) == [0x1000 + a for a in range(10, 14)]


# -- FC03 / FC04 -----------------------------------------------------------

def test_fc03_reply_bytes():
    rig = Rig()
    w = rig.transact(read_req(ADDR, 3, 0x0002, 2))
    assert w == [expected_reply(ADDR, 3, [0x1002, 0x1003])]
    assert w[0][:7] == bytes((ADDR, 3, 4, 0x10, 0x02, 0x10, 0x03))


def test_fc04_reply_bytes_and_known_frame():
    # Known-good example: 01 04 00 00 00 01 -> CRC 31 CA on the wire.
    bank = FakeBank(inputs={0: 0x1234})
    rig = Rig(bank, address=1)
    req = bytes.fromhex("010400000001") + b"\x31\xca"
    assert crc_ok(req)
    w = rig.transact(req)
    assert w == [expected_reply(1, 4, [0x1234])]


def test_fc04_125_registers():
    rig = Rig()
    w = rig.transact(read_req(ADDR, 4, 100, 125))
    assert w == [expected_reply(ADDR, 4, list(range(100, 225)))]
    assert len(w[0]) == 5 + 250


def test_poll_returns_true_on_frame_only():
    rig = Rig()
    assert rig.slave.poll(rig.now) is False
    assert rig.send(read_req(ADDR, 3, 0, 1)) is True
    assert rig.slave.poll(rig.now) is False
    assert rig.silence() is False


# -- exceptions --------------------------------------------------------------

def test_exception_01_unknown_function():
    rig = Rig()
    # FC 0x41 has no known length: answered after the silence (fallback framing)
    req = with_crc(bytes((ADDR, 0x41, 1, 2, 3)))
    rig.send(req)
    assert rig.port.writes == []
    rig.silence()
    assert rig.port.writes == [expected_exc(ADDR, 0x41, 1)]
    assert rig.slave.exceptions_sent == 1


@pytest.mark.parametrize("fc", [1, 2, 5, 15, 23])
def test_exception_01_not_yet_implemented_codes(fc):
    rig = Rig()
    if fc in (15, 16):
        body = bytes((ADDR, fc, 0, 0, 0, 1, 2, 0, 7))
    elif fc == 23:
        body = bytes((ADDR, fc, 0, 0, 0, 1, 0, 0, 0, 1, 2, 0, 7))
    else:
        body = bytes((ADDR, fc, 0, 0, 0, 1))
    req = with_crc(body)
    rig.send(req)
    # known length: answered at once, no silence needed
    assert rig.port.writes == [expected_exc(ADDR, fc, 1)]


def test_exception_02_unmapped():
    rig = Rig()
    # inputs 0..49 mapped, 50..99 not
    assert rig.transact(read_req(ADDR, 4, 48, 3)) == [expected_exc(ADDR, 4, 2)]
    assert rig.transact(read_req(ADDR, 4, 60, 1)) == [expected_exc(ADDR, 4, 2)]
    assert rig.transact(read_req(ADDR, 3, 0xFFFF, 1)) == [expected_exc(ADDR, 3, 2)]
    # start + quantity beyond 0x10000 is 02 before the bank is asked
    calls = rig.bank.calls
    assert rig.transact(read_req(ADDR, 3, 0xFFF0, 100)) == [expected_exc(ADDR, 3, 2)]
    assert rig.bank.calls == calls


@pytest.mark.parametrize("count", [0, 126, 0xFFFF])
def test_exception_03_quantity(count):
    rig = Rig()
    assert rig.transact(read_req(ADDR, 3, 0, count)) == [expected_exc(ADDR, 3, 3)]
    assert rig.bank.calls == 0


def test_check_order_quantity_before_address():
    rig = Rig()
    # quantity 126 at an unmapped address: 03, not 02
    assert rig.transact(read_req(ADDR, 4, 60, 126)) == [expected_exc(ADDR, 4, 3)]
    assert rig.transact(read_req(ADDR, 4, 0xFFFF, 0)) == [expected_exc(ADDR, 4, 3)]


def test_check_order_function_first():
    rig = Rig()
    # FC 0x07-ish unknown code with a bogus quantity field: still 01
    req = with_crc(bytes((ADDR, 0x64, 0xFF, 0xFF, 0x00, 0x00)))
    assert rig.transact(req) == [expected_exc(ADDR, 0x64, 1)]


def test_exception_04_bank_failure():
    class Broken:
        def read_registers(self, fc, addr, count, out, off):
            raise OSError("i2c")
    rig = Rig(Broken())
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == [expected_exc(ADDR, 3, 4)]


def test_short_fc03_frame_with_good_crc_is_illegal_value():
    rig = Rig()
    req = with_crc(bytes((ADDR, 3, 0, 0)))
    assert rig.transact(req) == [expected_exc(ADDR, 3, 3)]


# -- no reply ----------------------------------------------------------------

def test_no_reply_bad_crc():
    rig = Rig()
    req = bytearray(read_req(ADDR, 3, 0, 1))
    req[-1] ^= 0x01
    assert rig.transact(bytes(req)) == []
    assert rig.slave.crc_errors == 1
    assert rig.slave.bus_messages == 0


def test_no_reply_other_address():
    rig = Rig()
    assert rig.send(read_req(ADDR + 1, 3, 0, 1)) is True
    assert rig.port.writes == []
    assert rig.slave.bus_messages == 1
    assert rig.slave.server_messages == 0
    # the foreign frame was skipped to its length: ours right behind it is answered
    rig.send(with_crc(bytes((ADDR + 1, 16, 0, 0, 0, 1, 2, 0, 9))) + read_req(ADDR, 3, 1, 1))
    assert rig.port.writes == [expected_reply(ADDR, 3, [0x1001])]
    assert rig.slave.bus_messages == 3
    assert rig.slave.server_messages == 1


def test_no_reply_broadcast():
    rig = Rig()
    assert rig.transact(read_req(0, 3, 0, 1)) == []
    assert rig.transact(read_req(0, 0x41, 0, 1)) == []  # not even an exception
    s = rig.slave
    assert s.server_messages == 2
    assert s.no_responses == 2
    assert s.exceptions_sent == 0


def test_listen_only_sends_nothing():
    rig = Rig()
    rig.slave.listen_only = True
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == []
    assert rig.transact(read_req(ADDR, 0x41, 0, 1)) == []
    assert rig.slave.server_messages == 2
    assert rig.slave.no_responses == 2
    rig.slave.listen_only = False
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == [expected_reply(ADDR, 3, [0x1000])]


def test_set_address():
    rig = Rig()
    rig.slave.set_address(5)
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == []
    assert rig.transact(read_req(5, 3, 0, 1)) == [expected_reply(5, 3, [0x1000])]
    for bad in (0, 248, 255):
        with pytest.raises(ValueError):
            rig.slave.set_address(bad)


# -- framing and resync ------------------------------------------------------

def test_corrupted_frame_then_good_frame():
    rig = Rig()
    bad = bytearray(read_req(ADDR, 3, 0, 1))
    bad[3] ^= 0x40
    assert rig.transact(bytes(bad)) == []
    assert rig.transact(read_req(ADDR, 3, 2, 1)) == [expected_reply(ADDR, 3, [0x1002])]
    assert rig.slave.crc_errors == 1


def test_corrupted_frame_and_good_frame_in_one_burst():
    rig = Rig()
    bad = bytearray(read_req(ADDR, 4, 1, 2))
    bad[4] ^= 0x10
    w = rig.transact(bytes(bad) + read_req(ADDR, 4, 0, 1))
    assert w == [expected_reply(ADDR, 4, [5])]


@pytest.mark.parametrize("garbage", [
    b"\xff",
    b"\x00\x00\x00",
    b"\x11\x03\x00",  # looks like our address and FC03
    b"\x11\x10\x00\x00\x00\x01\xf0",  # FC16 claiming 240 data bytes
    b"\x01\x02\x03\x04\x05\x06\x07\x08\x09",
    b"\xaa\x55\x63\x17\x2b",
])
def test_garbage_glued_before_good_frame(garbage):
    rig = Rig()
    w = rig.transact(garbage + read_req(ADDR, 3, 7, 2))
    assert w == [expected_reply(ADDR, 3, [0x1007, 0x1008])]
    assert rig.slave.crc_errors == 1


def test_garbage_before_good_frame_answered_without_silence():
    rig = Rig()
    # the garbage starts like an FC03 frame: its CRC fails, the slave
    # resynchronises at once and finds the good frame
    rig.send(b"\xaa\x03\x63" + read_req(ADDR, 3, 0, 1))
    assert rig.port.writes == [expected_reply(ADDR, 3, [0x1000])]


def test_frame_split_across_polls():
    rig = Rig()
    req = read_req(ADDR, 4, 2, 3)
    for i, b in enumerate(req):
        rig.port.feed(bytes((b,)))
        rig.slave.poll(rig.now)
        rig.now += 1  # 1 ms between bytes: below t3.5 (3 ms at 19200)
        if i < len(req) - 1:
            assert rig.port.writes == []
    assert rig.port.writes == [expected_reply(ADDR, 4, [(2 * 37 + 5), (3 * 37 + 5), (4 * 37 + 5)])]


def test_chunks_larger_than_scratch():
    # an FC16 frame of 255 bytes for another slave, in chunks, then ours
    rig = Rig()
    body = bytes((ADDR + 1, 16, 0, 0, 0, 123, 246)) + bytes(range(246))
    frame = with_crc(body)
    assert len(frame) == 255
    for i in range(0, len(frame), 50):
        rig.send(frame[i:i + 50], advance=1)
    assert rig.slave.bus_messages == 1
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == [expected_reply(ADDR, 3, [0x1000])]
    assert rig.slave.overruns == 0


def test_partial_frame_then_silence_dropped():
    rig = Rig()
    rig.send(read_req(ADDR, 3, 0, 1)[:5])
    rig.silence()
    assert rig.port.writes == []
    assert rig.slave.crc_errors == 1
    assert rig.transact(read_req(ADDR, 3, 1, 1)) == [expected_reply(ADDR, 3, [0x1001])]


def test_gap_inside_frame_drops_it():
    """A gap is only seen by a poll that runs inside it (ticks are taken
    when bytes are read)."""
    rig = Rig()
    req = read_req(ADDR, 3, 0, 1)
    rig.send(req[:4])
    rig.now += rig.slave.t35_ms
    rig.send(req[4:])  # the poll sees the silence only after reading the tail
    rig.silence()
    # head and tail were read in the same poll, so no gap was seen: answered
    assert rig.port.writes == [expected_reply(ADDR, 3, [0x1000])]
    rig.port.writes = []
    rig.send(req[:4])
    rig.silence()  # a poll in the gap sees it
    rig.send(req[4:])
    rig.silence()
    assert rig.port.writes == []


def test_overrun():
    rig = Rig()
    rig.send(b"\x11\x41" + bytes(300))  # unknown FC: waits for silence, overflows
    assert rig.slave.overruns == 1
    rig.send(b"\x00" * 20)  # rest of the long frame: discarded
    assert rig.port.writes == []
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == []  # still inside the discard
    rig.silence()
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == [expected_reply(ADDR, 3, [0x1000])]


def test_ticks_wrap():
    rig = Rig()
    rig.now = (1 << 30) - 2
    rig.send(read_req(ADDR, 3, 0, 1)[:3])
    rig.now = 2  # wrapped: 4 ms later
    rig.slave.poll(rig.now)
    rig.send(read_req(ADDR, 3, 0, 1))
    assert rig.port.writes == [expected_reply(ADDR, 3, [0x1000])]


def test_silence_from_baud():
    assert silence_ms(9600) == 5  # 4.01 ms
    assert silence_ms(19200) == 3  # 2.005 ms
    assert silence_ms(38400) == 2
    assert silence_ms(115200) == 2  # fixed 1.75 ms
    assert silence_ms(1200) == 33  # 32.08 ms
    s = ModbusSlave(FakePort(), FakeBank(), 1, 9600)
    assert s.t35_ms == 5
    s.set_baud(115200)
    assert s.t35_ms == 2
    s.set_baud(19200)
    assert s.t35_ms == 3


def test_silence_boundary():
    rig = Rig(baud=9600)
    rig.send(read_req(ADDR, 3, 0, 1)[:3])
    rig.now += 4
    rig.slave.poll(rig.now)  # 4 ms < 5 ms: still one frame
    rig.send(read_req(ADDR, 3, 0, 1)[3:])
    assert rig.port.writes == [expected_reply(ADDR, 3, [0x1000])]


def test_counters_wrap():
    rig = Rig()
    rig.slave.bus_messages = 0xFFFF
    rig.slave.server_messages = 0xFFFF
    rig.transact(read_req(ADDR, 3, 0, 1))
    assert rig.slave.bus_messages == 0
    assert rig.slave.server_messages == 0
    rig.slave.clear_counters()
    assert rig.slave.crc_errors == 0


# -- FC08 diagnostics ------------------------------------------------------------

def diag_req(addr, sub, data=0):
    return with_crc(struct.pack(">BBHH", addr, 8, sub, data))


def diag_reply(addr, sub, value):
    return with_crc(struct.pack(">BBHH", addr, 8, sub, value))


def pymodbus_decode(frame, dev_id=ADDR):
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU
    used, pdu = FramerRTU(DecodePDU(False)).handleFrame(frame, dev_id, 0)
    assert used == len(frame)
    assert pdu is not None
    return pdu


@pytest.mark.parametrize("data", [0x0000, 0x1234, 0xA55A, 0xFFFF])
def test_fc08_return_query_data_echo(data):
    rig = Rig()
    req = diag_req(ADDR, 0x00, data)
    assert rig.transact(req) == [req]
    pdu = pymodbus_decode(req)
    assert pdu.function_code == 8 and pdu.sub_function_code == 0


def test_fc08_known_frame_bytes():
    # 01 08 00 00 A5 37 -> CRC DA 8D (independent bitwise CRC agrees)
    rig = Rig(address=1)
    req = bytes.fromhex("01080000a537")
    req = with_crc(req)
    assert rig.transact(req) == [req]


@pytest.mark.parametrize("sub,attr", [
    (0x0B, "bus_messages"), (0x0C, "crc_errors"), (0x0D, "exceptions_sent"),
    (0x0E, "server_messages"), (0x0F, "no_responses"), (0x12, "overruns"),
])
def test_fc08_counter_reply_bytes(sub, attr):
    rig = Rig()
    s = rig.slave
    s.bus_messages, s.crc_errors, s.exceptions_sent = 0x1000, 0x0203, 0x0304
    s.server_messages, s.no_responses, s.overruns = 0x2000, 0x0506, 0x0607
    expect = getattr(s, attr)
    if attr in ("bus_messages", "server_messages"):
        expect += 1  # the request itself is counted before it is answered
    w = rig.transact(diag_req(ADDR, sub))
    assert w == [diag_reply(ADDR, sub, expect)]
    assert w[0][:4] == bytes((ADDR, 8, 0, sub))


@pytest.mark.parametrize("sub", [0x10, 0x11])
def test_fc08_nak_and_busy_always_zero(sub):
    rig = Rig()
    rig.transact(read_req(ADDR, 0x41, 0, 0))
    assert rig.transact(diag_req(ADDR, sub)) == [diag_reply(ADDR, sub, 0)]


def test_fc08_counters_pymodbus_decodes():
    from pymodbus.pdu.diag_message import (ReturnBusCommunicationErrorCountResponse,
                                           ReturnBusMessageCountResponse)
    rig = Rig()
    bad = bytearray(read_req(ADDR, 3, 0, 1))
    bad[-1] ^= 0xFF
    rig.transact(bytes(bad))
    pdu = pymodbus_decode(rig.transact(diag_req(ADDR, 0x0B))[0])
    assert isinstance(pdu, ReturnBusMessageCountResponse)
    assert pdu.message == 1
    pdu = pymodbus_decode(rig.transact(diag_req(ADDR, 0x0C))[0])
    assert isinstance(pdu, ReturnBusCommunicationErrorCountResponse)
    assert pdu.message == 1


def test_fc08_counters_after_scripted_sequence():
    rig = Rig()
    s = rig.slave
    bad = bytearray(read_req(ADDR, 3, 0, 1))
    bad[2] ^= 0x01
    assert rig.transact(bytes(bad)) == []  # CRC error
    assert rig.transact(read_req(ADDR, 3, 0, 126)) == [expected_exc(ADDR, 3, 3)]  # exception
    assert rig.transact(read_req(0, 3, 0, 1)) == []  # broadcast: no response
    assert rig.transact(read_req(ADDR + 1, 3, 0, 1)) == []  # other slaves
    assert rig.transact(read_req(ADDR + 2, 4, 0, 1)) == []
    assert rig.transact(read_req(ADDR, 4, 0, 1)) == [expected_reply(ADDR, 4, [5])]
    # good frames so far: exc, broadcast, 2 foreign, 1 read = 5; ours + broadcast = 3
    assert (s.bus_messages, s.crc_errors, s.exceptions_sent, s.server_messages,
            s.no_responses, s.overruns) == (5, 1, 1, 3, 1, 0)
    # each counter read is itself a bus and server message
    assert rig.transact(diag_req(ADDR, 0x0B)) == [diag_reply(ADDR, 0x0B, 6)]
    assert rig.transact(diag_req(ADDR, 0x0C)) == [diag_reply(ADDR, 0x0C, 1)]
    assert rig.transact(diag_req(ADDR, 0x0D)) == [diag_reply(ADDR, 0x0D, 1)]
    assert rig.transact(diag_req(ADDR, 0x0E)) == [diag_reply(ADDR, 0x0E, 7)]  # 3 + 4 reads
    assert rig.transact(diag_req(ADDR, 0x0F)) == [diag_reply(ADDR, 0x0F, 1)]
    assert rig.transact(diag_req(ADDR, 0x12)) == [diag_reply(ADDR, 0x12, 0)]
    # clear counters: echo, then everything restarts from the clear
    req = diag_req(ADDR, 0x0A)
    assert rig.transact(req) == [req]
    assert (s.bus_messages, s.crc_errors, s.exceptions_sent, s.server_messages,
            s.no_responses, s.overruns) == (0, 0, 0, 0, 0, 0)
    assert rig.transact(diag_req(ADDR, 0x0B)) == [diag_reply(ADDR, 0x0B, 1)]
    assert rig.transact(diag_req(ADDR, 0x0D)) == [diag_reply(ADDR, 0x0D, 0)]


def test_fc08_overrun_count():
    rig = Rig()
    rig.send(b"\x11\x41" + bytes(300))
    rig.silence()
    assert rig.transact(diag_req(ADDR, 0x12)) == [diag_reply(ADDR, 0x12, 1)]


@pytest.mark.parametrize("data", [0x0000, 0xFF00])
def test_fc08_restart_communications_echo_clears_counters(data):
    rig = Rig()
    rig.transact(read_req(ADDR, 0x41, 0, 0))
    assert rig.slave.exceptions_sent == 1
    req = diag_req(ADDR, 0x01, data)
    assert rig.transact(req) == [req]
    s = rig.slave
    assert (s.bus_messages, s.exceptions_sent, s.server_messages, s.no_responses) == (0, 0, 0, 0)
    assert s.listen_only is False


def test_fc08_restart_bad_data():
    rig = Rig()
    assert rig.transact(diag_req(ADDR, 0x01, 0x1234)) == [expected_exc(ADDR, 8, 3)]


def test_fc08_listen_only_then_restart():
    rig = Rig()
    s = rig.slave
    assert rig.transact(diag_req(ADDR, 0x04)) == []  # force listen-only: no reply
    assert s.listen_only is True
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == []
    assert rig.transact(read_req(ADDR, 4, 0, 1)) == []
    assert rig.transact(read_req(ADDR, 0x41, 0, 1)) == []  # not even an exception
    for sub in (0x00, 0x0A, 0x0B, 0x04, 0x99):
        assert rig.transact(diag_req(ADDR, sub, 0x1234)) == []
    assert rig.transact(diag_req(ADDR, 0x01, 0x1234)) == []  # bad data: stays
    assert s.listen_only is True
    assert s.exceptions_sent == 0
    assert s.bus_messages == 10 and s.server_messages == 10 and s.no_responses == 10
    # restart: ends the mode, clears the counters, no reply to itself
    assert rig.transact(diag_req(ADDR, 0x01, 0xFF00)) == []
    assert s.listen_only is False
    assert (s.bus_messages, s.server_messages, s.no_responses) == (0, 0, 0)
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == [expected_reply(ADDR, 3, [0x1000])]
    assert rig.transact(diag_req(ADDR, 0x0E)) == [diag_reply(ADDR, 0x0E, 2)]


def test_fc08_broadcast_listen_only_and_restart():
    rig = Rig()
    assert rig.transact(diag_req(0, 0x04)) == []
    assert rig.slave.listen_only is True
    assert rig.transact(diag_req(0, 0x01)) == []
    assert rig.slave.listen_only is False
    assert rig.transact(diag_req(0, 0x00, 7)) == []  # broadcast echo: not answered


@pytest.mark.parametrize("sub", [0x02, 0x03, 0x05, 0x09, 0x13, 0x14, 0x15, 0x100, 0xFF0B])
def test_fc08_unknown_sub_function(sub):
    rig = Rig()
    assert rig.transact(diag_req(ADDR, sub)) == [expected_exc(ADDR, 8, 1)]


@pytest.mark.parametrize("body", [
    (ADDR, 8, 0, 0x0B),  # no data field
    (ADDR, 8, 0, 0x00),
    (ADDR, 8, 0, 0x01),
    (ADDR, 8),  # no sub-function
])
def test_fc08_bad_length(body):
    rig = Rig()
    # short frame: ended by the silence (fallback framing)
    assert rig.transact(with_crc(bytes(body))) == [expected_exc(ADDR, 8, 3)]


def test_fc08_short_frame_unknown_sub_is_01():
    rig = Rig()
    assert rig.transact(with_crc(bytes((ADDR, 8, 0, 0x02)))) == [expected_exc(ADDR, 8, 1)]


# -- FC 0x2B / 0x0E device identification and FC 0x11 report server ID ------------

IDENT = (b"Acme", b"BMS-16S", b"1.2", b"https://acme.example", b"Pack", b"P16", b"fw")


def mei_req(addr, code, oid, mei=0x0E):
    return with_crc(bytes((addr, 0x2B, mei, code, oid)))


def mei_reply(addr, code, ids, ident=IDENT, conformity=0x82, more=0, next_id=0):
    body = bytes((addr, 0x2B, 0x0E, code, conformity, more, next_id, len(ids)))
    for i in ids:
        body += bytes((i, len(ident[i]))) + ident[i]
    return with_crc(body)


def ident_rig(ident=IDENT):
    port = FakePort()
    rig = Rig()
    rig.port = port
    rig.slave = ModbusSlave(port, rig.bank, ADDR, 19200, ident=ident)
    return rig


@pytest.mark.parametrize("code,oid,ids", [
    (1, 0, [0, 1, 2]),
    (1, 1, [1, 2]),
    (1, 2, [2]),
    (1, 3, [0, 1, 2]),  # outside the basic range: restart at 0
    (1, 0x80, [0, 1, 2]),
    (2, 0, list(range(7))),
    (2, 4, [4, 5, 6]),
    (2, 7, list(range(7))),
    (3, 0, list(range(7))),
    (3, 0xFF, list(range(7))),
    (4, 0, [0]),
    (4, 3, [3]),
    (4, 6, [6]),
])
def test_mei_read_device_id(code, oid, ids):
    rig = ident_rig()
    assert rig.transact(mei_req(ADDR, code, oid)) == [mei_reply(ADDR, code, ids)]


def test_mei_basic_known_bytes():
    rig = ident_rig((b"AB", b"C", b""))
    w = rig.transact(mei_req(ADDR, 1, 0))
    assert w[0][:-2] == bytes((ADDR, 0x2B, 0x0E, 1, 0x81, 0, 0, 3, 0, 2, 0x41, 0x42, 1, 1, 0x43, 2, 0))


def test_mei_default_ident():
    from bms.modbus_rtu import DEFAULT_IDENT
    rig = Rig()
    w = rig.transact(mei_req(ADDR, 1, 0))
    assert w == [mei_reply(ADDR, 1, [0, 1, 2], DEFAULT_IDENT)]
    assert DEFAULT_IDENT[0] and DEFAULT_IDENT[1] and DEFAULT_IDENT[2]


def test_mei_str_ident_and_validation():
    rig = ident_rig(("Acme", "X", "2.0"))
    assert rig.transact(mei_req(ADDR, 2, 0)) == [
        mei_reply(ADDR, 2, [0, 1, 2], (b"Acme", b"X", b"2.0"), conformity=0x81)]
    for bad in ((b"a", b"b"), (b"",) * 8, (b"x" * 245, b"", b"")):
        with pytest.raises(ValueError):
            ModbusSlave(FakePort(), FakeBank(), ADDR, ident=bad)


def test_mei_more_follows_when_too_long():
    ident = (b"a" * 200, b"b" * 100, b"c", b"d" * 238, b"", b"", b"")
    rig = ident_rig(ident)
    w = rig.transact(mei_req(ADDR, 2, 0))
    assert w == [mei_reply(ADDR, 2, [0], ident, more=0xFF, next_id=1)]
    w = rig.transact(mei_req(ADDR, 2, 1))
    assert w == [mei_reply(ADDR, 2, [1, 2], ident, more=0xFF, next_id=3)]
    w = rig.transact(mei_req(ADDR, 2, 3))
    assert w == [mei_reply(ADDR, 2, [3, 4, 5, 6], ident)]
    assert len(w[0]) == 256
    w = rig.transact(mei_req(ADDR, 4, 3))
    assert w == [mei_reply(ADDR, 4, [3], ident)]
    # the longest object (244 bytes) fills a reply on its own
    ident = (b"a", b"b", b"c", b"d" * 244, b"", b"", b"")
    rig = ident_rig(ident)
    w = rig.transact(mei_req(ADDR, 2, 3))
    assert w == [mei_reply(ADDR, 2, [3], ident, more=0xFF, next_id=4)]
    assert len(w[0]) == 256
    assert rig.transact(mei_req(ADDR, 4, 3)) == [mei_reply(ADDR, 4, [3], ident)]


def test_mei_pymodbus_decodes():
    from pymodbus.pdu.mei_message import ReadDeviceInformationResponse
    rig = ident_rig()
    pdu = pymodbus_decode(rig.transact(mei_req(ADDR, 2, 0))[0])
    assert isinstance(pdu, ReadDeviceInformationResponse)
    assert pdu.read_code == 2 and pdu.conformity == 0x82
    assert pdu.more_follows == 0 and pdu.number_of_objects == 7
    assert pdu.information == {i: IDENT[i] for i in range(7)}


@pytest.mark.parametrize("code", [0, 5, 0xFF])
def test_mei_bad_read_code(code):
    rig = ident_rig()
    assert rig.transact(mei_req(ADDR, code, 0)) == [expected_exc(ADDR, 0x2B, 3)]


@pytest.mark.parametrize("oid", [7, 0x80, 0xFF])
def test_mei_bad_object_id(oid):
    rig = ident_rig()
    assert rig.transact(mei_req(ADDR, 4, oid)) == [expected_exc(ADDR, 0x2B, 2)]
    rig3 = ident_rig((b"a", b"b", b"c"))
    assert rig3.transact(mei_req(ADDR, 4, 3)) == [expected_exc(ADDR, 0x2B, 2)]


@pytest.mark.parametrize("mei", [0x0D, 0x0F, 0x00])
def test_mei_other_type_is_01(mei):
    rig = ident_rig()
    assert rig.transact(mei_req(ADDR, 1, 0, mei)) == [expected_exc(ADDR, 0x2B, 1)]


def test_mei_short_frame_is_03():
    rig = ident_rig()
    assert rig.transact(with_crc(bytes((ADDR, 0x2B, 0x0E, 1)))) == [expected_exc(ADDR, 0x2B, 3)]


def test_mei_and_report_id_broadcast_not_answered():
    rig = ident_rig()
    assert rig.transact(mei_req(0, 1, 0)) == []
    assert rig.transact(with_crc(bytes((0, 0x11)))) == []
    assert rig.slave.no_responses == 2


def test_report_server_id_bytes():
    rig = ident_rig()
    w = rig.transact(with_crc(bytes((ADDR, 0x11))))
    data = b"BMS-16S 1.2"
    assert w == [with_crc(bytes((ADDR, 0x11, 2 + len(data), ADDR, 0xFF)) + data)]


def test_report_server_id_pymodbus_decodes():
    from pymodbus.pdu.other_message import ReportDeviceIdResponse
    rig = ident_rig()
    pdu = pymodbus_decode(rig.transact(with_crc(bytes((ADDR, 0x11))))[0])
    assert isinstance(pdu, ReportDeviceIdResponse)
    # pymodbus reads the run indicator from the last byte (its own layout);
    # the spec's order is id, run indicator, additional data: check the
    # byte count and the payload it sliced off
    assert pdu.byte_count == 13
    assert pdu.identifier == bytes((ADDR, 0xFF)) + b"BMS-16S 1."


def test_report_server_id_follows_address():
    rig = ident_rig()
    rig.slave.set_address(200)
    w = rig.transact(with_crc(bytes((200, 0x11))))
    assert w[0][:5] == bytes((200, 0x11, 13, 200, 0xFF))


# -- FC06 / FC16 writes --------------------------------------------------------

def write1_req(addr, reg, value):
    return with_crc(struct.pack(">BBHH", addr, 6, reg, value))


def writen_req(addr, start, values, qty=None, nbytes=None, data=None):
    """FC16 request; qty / nbytes / data override the fields (bad requests)."""
    if data is None:
        data = b"".join(struct.pack(">H", v) for v in values)
    qty = len(values) if qty is None else qty
    nbytes = len(data) if nbytes is None else nbytes
    return with_crc(struct.pack(">BBHHB", addr, 16, start, qty, nbytes) + data)


def writen_reply(addr, start, qty):
    return with_crc(struct.pack(">BBHH", addr, 16, start, qty))


class CodeBank(FakeBank):
    """Refuses every write with one exception code (0: accepts, stores nothing)."""

    def __init__(self, code):
        super().__init__({a: 0 for a in range(10)})
        self.code = code
        self.writes = []

    def write_registers(self, addr, count, data, off, broadcast):
        self.calls += 1
        self.writes.append((addr, count, bytes(data[off:off + 2 * count]), broadcast))
        return self.code


class RaisingBank(FakeBank):
    def __init__(self):
        super().__init__({a: 0 for a in range(10)})

    def write_registers(self, addr, count, data, off, broadcast):
        self.calls += 1
        raise OSError("flash")


def test_fc06_known_frame_bytes():
    # Known example (slave 0x11, register 1 := 3): 11 06 00 01 00 03 9A 9B;
    # the reply echoes the request.
    rig = Rig()
    req = bytes.fromhex("110600010003") + b"\x9a\x9b"
    assert crc_ok(req) and req == write1_req(ADDR, 1, 3)
    assert rig.transact(req) == [req]
    assert rig.bank.regs[3][1] == 3
    assert rig.bank.writes == [(1, 1, False)]
    assert rig.slave.exceptions_sent == 0


def test_fc16_known_frame_bytes():
    # Known example: registers 1..2 := 000A 0102 -> reply 11 10 00 01 00 02 12 98
    rig = Rig()
    req = bytes.fromhex("11100001000204000a0102") + b"\xc6\xf0"
    assert crc_ok(req) and req == writen_req(ADDR, 1, [0x000A, 0x0102])
    w = rig.transact(req)
    assert w == [bytes.fromhex("111000010002") + b"\x12\x98"]
    assert w == [writen_reply(ADDR, 1, 2)]
    assert (rig.bank.regs[3][1], rig.bank.regs[3][2]) == (0x000A, 0x0102)
    assert rig.bank.writes == [(1, 2, False)]


def test_write_requests_match_pymodbus_encoding():
    """The requests these tests build are the bytes pymodbus puts on the wire."""
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU
    from pymodbus.pdu.register_message import WriteMultipleRegistersRequest, WriteSingleRegisterRequest
    framer = FramerRTU(DecodePDU(False))
    one = framer.buildFrame(WriteSingleRegisterRequest(address=0x0123, registers=[0xBEEF], dev_id=ADDR))
    assert one == write1_req(ADDR, 0x0123, 0xBEEF)
    many = framer.buildFrame(WriteMultipleRegistersRequest(address=7, registers=[1, 2, 0x7FFF], dev_id=ADDR))
    assert many == writen_req(ADDR, 7, [1, 2, 0x7FFF])
    rig = Rig()
    assert rig.transact(many) == [writen_reply(ADDR, 7, 3)]
    assert [rig.bank.regs[3][a] for a in (7, 8, 9)] == [1, 2, 0x7FFF]


def test_fc06_reply_pymodbus_decodes():
    from pymodbus.pdu.register_message import WriteSingleRegisterResponse
    rig = Rig()
    w = rig.transact(write1_req(ADDR, 42, 0x1234))
    pdu = pymodbus_decode(w[0])
    assert isinstance(pdu, WriteSingleRegisterResponse)
    assert pdu.dev_id == ADDR and pdu.address == 42 and list(pdu.registers) == [0x1234]


def test_fc16_reply_pymodbus_decodes():
    from pymodbus.pdu.register_message import WriteMultipleRegistersResponse
    rig = Rig()
    w = rig.transact(writen_req(ADDR, 100, list(range(10))))
    pdu = pymodbus_decode(w[0])
    assert isinstance(pdu, WriteMultipleRegistersResponse)
    assert pdu.dev_id == ADDR and pdu.address == 100 and pdu.count == 10


def test_write_exception_pymodbus_decodes():
    from pymodbus.pdu import ExceptionResponse
    rig = Rig()
    w = rig.transact(write1_req(ADDR, 300, 1))  # unmapped
    pdu = pymodbus_decode(w[0])
    assert isinstance(pdu, ExceptionResponse)
    assert pdu.function_code == 0x86 and pdu.exception_code == 2


@pytest.mark.parametrize("reg,value", [(0, 0), (0, 0x7FFF), (199, 0x0001), (17, 0x1111)])
def test_fc06_echo_and_applied(reg, value):
    rig = Rig()
    req = write1_req(ADDR, reg, value)
    assert rig.transact(req) == [req]
    assert rig.bank.regs[3][reg] == value
    assert rig.transact(read_req(ADDR, 3, reg, 1)) == [expected_reply(ADDR, 3, [value])]


def test_fc16_123_registers():
    rig = Rig()
    values = [(0x0100 + 3 * i) & 0x7FFF for i in range(123)]
    req = writen_req(ADDR, 50, values)
    assert len(req) == 255
    assert rig.transact(req) == [writen_reply(ADDR, 50, 123)]
    assert [rig.bank.regs[3][50 + i] for i in range(123)] == values
    assert rig.bank.writes == [(50, 123, False)]
    assert rig.slave.overruns == 0 and rig.slave.crc_errors == 0


def test_fc16_123_registers_in_chunks():
    rig = Rig()
    values = list(range(123))
    req = writen_req(ADDR, 10, values)
    for i in range(0, len(req), 40):
        rig.send(req[i:i + 40], advance=1)
    assert rig.port.writes == [writen_reply(ADDR, 10, 123)]
    assert [rig.bank.regs[3][10 + i] for i in range(123)] == values


@pytest.mark.parametrize("qty,nbytes,ndata", [
    (0, 0, 0),  # quantity 0
    (124, 2, 2),  # quantity 124 (a frame that still fits the ADU)
    (0xFFFF, 2, 2),
    (0x7D, 2, 2),
    (2, 2, 2),  # byte count mismatch: too few
    (2, 6, 6),  # too many
    (1, 0, 0),
    (1, 3, 3),  # odd byte count
    (123, 244, 244),
])
def test_fc16_exception_03_quantity_and_byte_count(qty, nbytes, ndata):
    rig = Rig()
    req = writen_req(ADDR, 0, [], qty=qty, nbytes=nbytes, data=bytes(range(ndata)))
    rig.send(req)
    rig.silence()
    assert rig.port.writes == [expected_exc(ADDR, 16, 3)]
    assert rig.bank.calls == 0
    assert rig.slave.exceptions_sent == 1


@pytest.mark.parametrize("body", [
    (ADDR, 16),
    (ADDR, 16, 0),
    (ADDR, 16, 0, 1),
    (ADDR, 16, 0, 1, 0),
])
def test_fc16_short_frame_is_03(body):
    """A frame too short for its header (ended by the silence) is 03."""
    req = with_crc(bytes(body))
    if len(req) == 7:
        assert 9 + req[6] <= 256  # the CRC byte read as byte count must not make it "too long"
    rig = Rig()
    assert rig.transact(req) == [expected_exc(ADDR, 16, 3)]
    assert rig.bank.calls == 0


@pytest.mark.parametrize("body", [(ADDR, 6), (ADDR, 6, 0, 1), (ADDR, 6, 0, 1, 0)])
def test_fc06_short_frame_is_03(body):
    rig = Rig()
    assert rig.transact(with_crc(bytes(body))) == [expected_exc(ADDR, 6, 3)]
    assert rig.bank.calls == 0


def test_fc16_257_byte_frame_is_dropped_safely():
    """124 registers with a matching byte count is a 257-byte frame: longer
    than the RTU ADU (256) and the receive buffer. Whatever the answer, it
    is never written, and the next request is answered."""
    rig = Rig()
    req = writen_req(ADDR, 0, [0x0101] * 124)
    assert len(req) == 257
    rig.send(req)
    rig.silence()
    assert rig.bank.calls == 0
    assert all(w == expected_exc(ADDR, 16, 3) for w in rig.port.writes)
    rig.port.writes = []
    assert rig.transact(write1_req(ADDR, 0, 5)) == [write1_req(ADDR, 0, 5)]


def test_fc16_124_registers_full_frame_gets_03():
    rig = Rig()
    rig.send(writen_req(ADDR, 0, [0x0101] * 124))
    rig.silence()
    assert rig.port.writes == [expected_exc(ADDR, 16, 3)]


@pytest.mark.parametrize("start,qty", [(0xFFFF, 2), (0xFF86, 123), (0xFFF0, 17)])
def test_fc16_start_plus_quantity_overflow_is_02(start, qty):
    rig = Rig()
    assert start + qty > 0x10000
    req = writen_req(ADDR, start, [1] * qty)
    assert rig.transact(req) == [expected_exc(ADDR, 16, 2)]
    assert rig.bank.calls == 0


def test_fc16_up_to_the_last_register_reaches_the_bank():
    rig = Rig(full_bank())
    req = writen_req(ADDR, 0xFFFE, [1, 2])
    assert rig.transact(req) == [writen_reply(ADDR, 0xFFFE, 2)]
    assert rig.bank.writes == [(0xFFFE, 2, False)]
    assert rig.transact(write1_req(ADDR, 0xFFFF, 9)) == [write1_req(ADDR, 0xFFFF, 9)]


def test_write_check_order_quantity_before_address():
    rig = Rig()
    # quantity 0 / 124 / byte-count mismatch where the address range is also bad: 03
    assert rig.transact(writen_req(ADDR, 0xFFFF, [], qty=0, nbytes=0, data=b"")) == [expected_exc(ADDR, 16, 3)]
    assert rig.transact(writen_req(ADDR, 0xFFF0, [1], qty=124)) == [expected_exc(ADDR, 16, 3)]
    assert rig.transact(writen_req(ADDR, 0xFFFF, [1], qty=2)) == [expected_exc(ADDR, 16, 3)]
    # a good quantity at a bad range: 02; at an unmapped but in-range start: the bank's 02
    assert rig.transact(writen_req(ADDR, 0xFFFF, [1, 2])) == [expected_exc(ADDR, 16, 2)]
    assert rig.bank.calls == 0
    assert rig.transact(writen_req(ADDR, 0x8000, [1, 2])) == [expected_exc(ADDR, 16, 2)]
    assert rig.bank.calls == 1


def test_fakebank_refusals_all_or_nothing():
    rig = Rig()
    regs = rig.bank.regs[3]
    before = dict(regs)
    assert rig.transact(write1_req(ADDR, 300, 1)) == [expected_exc(ADDR, 6, 2)]
    assert rig.transact(write1_req(ADDR, 3, 0x8000)) == [expected_exc(ADDR, 6, 3)]
    assert rig.transact(writen_req(ADDR, 198, [1, 2, 3])) == [expected_exc(ADDR, 16, 2)]
    assert rig.transact(writen_req(ADDR, 10, [1, 0xFFFF, 3])) == [expected_exc(ADDR, 16, 3)]
    assert regs == before
    assert rig.slave.exceptions_sent == 4


@pytest.mark.parametrize("code", [1, 2, 3, 4])
def test_bank_exception_codes_propagate(code):
    bank = CodeBank(code)
    rig = Rig(bank)
    assert rig.transact(write1_req(ADDR, 2, 0xABCD)) == [expected_exc(ADDR, 6, code)]
    assert rig.transact(writen_req(ADDR, 1, [0x0102, 0x0304])) == [expected_exc(ADDR, 16, code)]
    assert bank.writes == [(2, 1, b"\xab\xcd", False), (1, 2, b"\x01\x02\x03\x04", False)]
    assert rig.slave.exceptions_sent == 2


def test_bank_accepting_gets_normal_replies():
    bank = CodeBank(0)
    rig = Rig(bank)
    req = write1_req(ADDR, 2, 0xABCD)  # the bank decides: 0xABCD taken
    assert rig.transact(req) == [req]
    assert rig.transact(writen_req(ADDR, 0, [0xFFFF] * 5)) == [writen_reply(ADDR, 0, 5)]
    assert bank.writes[1] == (0, 5, b"\xff" * 10, False)


def test_bank_that_raises_is_04():
    rig = Rig(RaisingBank())
    assert rig.transact(write1_req(ADDR, 2, 1)) == [expected_exc(ADDR, 6, 4)]
    assert rig.transact(writen_req(ADDR, 2, [1, 2])) == [expected_exc(ADDR, 16, 4)]
    assert rig.slave.exceptions_sent == 2
    # still serving
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == [expected_reply(ADDR, 3, [0])]


def test_broadcast_writes_reach_the_bank_unanswered():
    rig = Rig()
    s = rig.slave
    assert rig.transact(write1_req(0, 5, 0x1234)) == []
    assert rig.transact(writen_req(0, 20, [7, 8, 9])) == []
    # the slave passes broadcast=True; what is applied is the bank's choice
    assert rig.bank.writes == [(5, 1, True), (20, 3, True)]
    assert rig.bank.regs[3][5] == 0x1234 and rig.bank.regs[3][21] == 8
    assert (s.server_messages, s.no_responses, s.exceptions_sent) == (2, 2, 0)
    assert rig.port.writes == []


def test_broadcast_write_refused_or_failing_still_unanswered():
    rig = Rig()
    s = rig.slave
    assert rig.transact(write1_req(0, 5, 0x8000)) == []  # bank: 03
    assert rig.transact(write1_req(0, 500, 1)) == []  # bank: 02
    assert rig.transact(writen_req(0, 0, [], qty=0, nbytes=0, data=b"")) == []  # slave: 03
    assert rig.transact(writen_req(0, 0xFFFF, [1, 2])) == []  # slave: 02
    assert rig.transact(with_crc(bytes((0, 6, 0, 1)))) == []  # short: 03
    assert rig.bank.calls == 2
    assert (s.no_responses, s.exceptions_sent) == (5, 0)
    for code in (1, 2, 3, 4):
        r = Rig(CodeBank(code))
        assert r.transact(writen_req(0, 1, [1])) == []
        assert r.slave.no_responses == 1
    r = Rig(RaisingBank())
    assert r.transact(write1_req(0, 1, 1)) == [] and r.transact(writen_req(0, 1, [1])) == []
    assert r.slave.no_responses == 2 and r.slave.exceptions_sent == 0
    assert r.transact(read_req(ADDR, 3, 0, 1)) == [expected_reply(ADDR, 3, [0])]


def test_write_for_another_address_or_in_listen_only_not_applied():
    rig = Rig()
    assert rig.transact(write1_req(ADDR + 1, 5, 1)) == []
    assert rig.transact(writen_req(ADDR + 1, 5, [1, 2])) == []
    assert rig.bank.calls == 0
    rig.slave.listen_only = True
    assert rig.transact(write1_req(ADDR, 5, 1)) == []
    assert rig.transact(writen_req(ADDR, 5, [1, 2])) == []
    assert rig.bank.calls == 0
    assert rig.bank.regs[3][5] == 0x1005


def test_write_counters():
    rig = Rig()
    s = rig.slave
    rig.transact(write1_req(ADDR, 1, 1))  # accepted
    rig.transact(writen_req(ADDR, 1, [1, 2]))  # accepted
    rig.transact(write1_req(ADDR, 1, 0x8000))  # exception
    rig.transact(writen_req(0, 1, [3]))  # broadcast
    rig.transact(write1_req(ADDR + 1, 1, 1))  # another slave
    bad = bytearray(write1_req(ADDR, 1, 1))
    bad[5] ^= 1
    rig.transact(bytes(bad))  # CRC error
    assert (s.bus_messages, s.crc_errors, s.exceptions_sent, s.server_messages,
            s.no_responses) == (5, 1, 1, 4, 1)
    assert rig.bank.calls == 4


@pytest.mark.parametrize("req", [
    write1_req(ADDR, 33, 0x0444),
    writen_req(ADDR, 33, [0x0444, 0x0555, 0x0666]),
])
def test_write_split_across_polls(req):
    rig = Rig()
    for i, b in enumerate(req):
        rig.port.feed(bytes((b,)))
        rig.slave.poll(rig.now)
        rig.now += 1  # below t3.5
        if i < len(req) - 1:
            assert rig.port.writes == [] and rig.bank.calls == 0
    reply = req if req[1] == 6 else writen_reply(ADDR, 33, 3)
    assert rig.port.writes == [reply]
    assert rig.bank.regs[3][33] == 0x0444


@pytest.mark.parametrize("garbage", [
    b"\xff",
    b"\x00\x00\x00",
    b"\x11\x06\x00",  # looks like our address and FC06
    b"\x11\x10\x00\x00\x00\x01\xf0",  # FC16 claiming 240 data bytes
    b"\x11\x10\x00\x00\x00\x7b\xf6\x01\x02",  # FC16 of 123 registers, cut short
    b"\x01\x02\x03\x04\x05\x06\x07\x08\x09",
    b"\xaa\x55\x63\x17\x2b",
])
@pytest.mark.parametrize("fc", [6, 16])
def test_write_glued_behind_garbage(garbage, fc):
    rig = Rig()
    if fc == 6:
        req, reply = write1_req(ADDR, 44, 0x0ABC), write1_req(ADDR, 44, 0x0ABC)
    else:
        req, reply = writen_req(ADDR, 44, [0x0ABC, 0x0DEF]), writen_reply(ADDR, 44, 2)
    w = rig.transact(garbage + req)
    assert w == [reply]
    assert rig.bank.regs[3][44] == 0x0ABC
    assert rig.bank.calls == 1
    assert rig.slave.crc_errors == 1


def test_writes_and_reads_in_one_burst():
    rig = Rig()
    burst = (read_req(ADDR + 1, 3, 0, 1) + write1_req(ADDR, 1, 0x0111) + writen_req(ADDR + 1, 0, [1])
             + writen_req(ADDR, 2, [0x0222, 0x0333]) + read_req(ADDR, 3, 1, 3))
    rig.send(burst)
    assert rig.port.writes == [write1_req(ADDR, 1, 0x0111), writen_reply(ADDR, 2, 2),
                               expected_reply(ADDR, 3, [0x0111, 0x0222, 0x0333])]


def test_corrupted_write_not_applied():
    rig = Rig()
    req = bytearray(writen_req(ADDR, 1, [0x0AAA, 0x0BBB]))
    req[8] ^= 0x04  # a data bit
    assert rig.transact(bytes(req)) == []
    assert rig.bank.calls == 0 and rig.slave.crc_errors == 1
    assert rig.transact(writen_req(ADDR, 1, [0x0AAA, 0x0BBB])) == [writen_reply(ADDR, 1, 2)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(0, 0xFFFF), values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123),
       addr=st.integers(1, 247))
def test_prop_fc16_roundtrip(start, values, addr):
    values = values[:0x10000 - start]
    bank = CodeBank(0)
    rig = Rig(bank, address=addr)
    w = rig.transact(writen_req(addr, start, values))
    assert w == [writen_reply(addr, start, len(values))]
    assert bank.writes == [(start, len(values), b"".join(struct.pack(">H", v) for v in values), False)]


# -- properties ----------------------------------------------------------------

def full_bank():
    return FakeBank({a: (a * 7919 + 3) & 0xFFFF for a in range(0x10000)},
                    {a: (a * 104729 + 11) & 0xFFFF for a in range(0x10000)})


FULL = full_bank()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(fc=st.sampled_from([3, 4]), start=st.integers(0, 0xFFFF), count=st.integers(1, 125),
       addr=st.integers(1, 247))
def test_prop_read_roundtrip(fc, start, count, addr):
    count = min(count, 0x10000 - start)
    rig = Rig(FULL, address=addr)
    w = rig.transact(read_req(addr, fc, start, count))
    assert len(w) == 1
    frame = w[0]
    assert crc_ok(frame)
    assert frame[0] == addr and frame[1] == fc and frame[2] == 2 * count
    values = struct.unpack(">%dH" % count, frame[3:-2])
    regs = FULL.regs[fc]
    assert list(values) == [regs[start + i] for i in range(count)]


def _frameish():
    """Byte chunks that look like traffic: garbage, requests for us, for
    others, broadcasts, cut short or not."""
    req = st.builds(read_req, st.sampled_from([ADDR, ADDR + 1, 0]), st.sampled_from([3, 4, 16, 0x41]),
                    st.integers(0, 0xFFFF), st.integers(0, 130))
    cut = st.tuples(req, st.integers(0, 8)).map(lambda t: t[0][:t[1]])
    return st.one_of(st.binary(min_size=0, max_size=80), req, cut)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(_frameish(), min_size=1, max_size=8),
       gaps=st.lists(st.integers(0, 6), min_size=8, max_size=8))
def test_prop_garbage_never_crashes(chunks, gaps):
    rig = Rig(FULL, address=ADDR)
    for chunk, gap in zip(chunks, gaps):
        rig.send(chunk, advance=gap)
    rig.silence()
    rig.silence()
    for frame in rig.port.writes:
        assert crc_ok(frame)
        assert frame[0] == ADDR
    rig.port.writes = []
    w = rig.transact(read_req(ADDR, 4, 1000, 3))
    assert w == [expected_reply(ADDR, 4, [FULL.regs[4][1000 + i] for i in range(3)])]


@FAST
@given(fc=st.sampled_from([3, 4]), start=st.integers(0, 200), count=st.integers(1, 125),
       bit=st.integers(0, 63))
def test_prop_single_bit_flip_never_answered(fc, start, count, bit):
    rig = Rig(FULL, address=ADDR)
    req = bytearray(read_req(ADDR, fc, start, count))
    req[bit // 8] ^= 1 << (bit % 8)
    w = rig.transact(bytes(req))
    assert w == []
    assert rig.slave.bus_messages == 0


# -- MicroPython: no allocation on the hot path ----------------------------------

def test_micropython_alloc_free(micropython):
    proc = run_mpy(micropython, "mpy_modbus_alloc.py")
    assert "OK" in proc.stdout.split()


def test_a_port_that_raises_loses_the_reply_not_the_slave():
    # a UART fault (OSError) on a write or a read is counted; the slave answers again once the port works
    rig = Rig()
    good = rig.port.write

    def broken(buf, n):
        raise OSError(5)

    rig.port.write = broken
    assert rig.transact(read_req(ADDR, 4, 0, 2)) == []
    assert rig.slave.port_errors == 1
    rig.port.write = good
    assert len(rig.transact(read_req(ADDR, 4, 0, 2))) == 1
    feed = rig.port.readinto
    rig.port.readinto = lambda buf: (_ for _ in ()).throw(OSError(5))
    rig.slave.poll(rig.now)
    assert rig.slave.port_errors == 2
    rig.port.readinto = feed
    assert len(rig.transact(read_req(ADDR, 4, 0, 2))) == 1
