"""Modbus RTU slave (server), allocation-free in steady state.

The board gives a non-blocking serial port and a register bank:

- port.readinto(buf) -> bytes read into buf[0:] (0 or None when nothing);
  port.write(buf, n) sends buf[0:n] (the board drives the RS485 DE line).
- bank.read_registers(fc, addr, count, out, off) -> 0 after writing `count`
  big-endian words to out[off:off + 2 * count], else a Modbus exception
  code (2 when any register of the range is unmapped). fc is 3 or 4.
- bank.write_registers(addr, count, data, off, broadcast) -> 0 after taking
  `count` big-endian words from data[off:] into holding registers addr..,
  else an exception code with nothing changed (all or nothing). A
  broadcast (address 0) is never answered: the bank decides what, if
  anything, it applies.

Framing: bytes are appended to a 256-byte receive buffer. A frame ends as
soon as the buffer holds the length its function code implies, or, as the
fallback (unknown function code, short frame), after t3.5 of silence. A
frame with a bad CRC is counted and the buffer is resynchronised one byte
at a time, so a good frame behind garbage is still found; what is left
after a silence with no valid frame is dropped.

The hot path (poll with nothing received, answering FC03/FC04/FC06/FC16, FC08
diagnostics, FC 0x2B/0x0E device identification, FC 0x11 or an exception)
allocates nothing under MicroPython: no slicing, no range(), no
tuples, no exceptions raised.
"""
from micropython import const

from bms.crc import crc16
from bms.ticks import ticks_diff

BUF_SIZE = const(256)  # the largest RTU ADU
# The receive side takes the longest frame an FC16 header can claim (9 +
# 255 bytes): a 124-register write is over the limit, and is answered with
# exception 03 rather than dropped as noise.
RX_SIZE = const(264)
_SCRATCH = const(64)
_MIN_FRAME = const(4)  # addr, fc, crc lo, crc hi
_MAX_READ_REGS = const(125)
_MAX_WRITE_REGS = const(123)

# Function codes
FC_READ_HOLDING = const(0x03)
FC_READ_INPUT = const(0x04)
FC_WRITE_SINGLE = const(0x06)
FC_DIAGNOSTICS = const(0x08)
FC_WRITE_MULTIPLE = const(0x10)
FC_REPORT_SERVER_ID = const(0x11)
FC_MEI = const(0x2B)

# Exception codes
EX_ILLEGAL_FUNCTION = const(0x01)
EX_ILLEGAL_ADDRESS = const(0x02)
EX_ILLEGAL_VALUE = const(0x03)
EX_DEVICE_FAILURE = const(0x04)

BROADCAST = const(0)

# FC08 sub-functions
_DIAG_QUERY = const(0x00)
_DIAG_RESTART = const(0x01)
_DIAG_LISTEN_ONLY = const(0x04)
_DIAG_CLEAR = const(0x0A)
_DIAG_BUS_MESSAGES = const(0x0B)
_DIAG_CRC_ERRORS = const(0x0C)
_DIAG_EXCEPTIONS = const(0x0D)
_DIAG_SERVER_MESSAGES = const(0x0E)
_DIAG_NO_RESPONSES = const(0x0F)
_DIAG_NAKS = const(0x10)
_DIAG_BUSY = const(0x11)
_DIAG_OVERRUNS = const(0x12)

# FC 0x2B MEI type 0x0E: read device identification
MEI_DEVICE_ID = const(0x0E)
_ID_MAX_OBJECT = const(244)  # one object must fit a reply on its own
_NO_REPLY_UNCOUNTED = const(-1)  # _dispatch: no reply, not a no-response

# Device identification objects 0..6: VendorName, ProductCode,
# MajorMinorRevision, VendorUrl, ProductName, ModelName, UserApplicationName.
DEFAULT_IDENT = (b"open-bms", b"BMS-ESP32", b"0.1", b"", b"open-bms", b"BMS-ESP32", b"")


def silence_ms(baud):
    """t3.5 in whole milliseconds (rounded up) for an 11-bit character.

    Above 19200 baud the spec fixes t3.5 at 1.75 ms, which rounds up to 2.
    Never less than 2 ms.
    """
    if baud > 19200:
        return 2
    t = (38500 + baud - 1) // baud  # 3.5 chars * 11 bits * 1000 ms
    if t < 2:
        t = 2
    return t


class ModbusSlave:
    def __init__(self, port, bank, address=1, baud=19200, ident=None):
        """ident: device identification objects (FC 0x2B/0x0E, FC 0x11) as a
        tuple of 3 to 7 bytes (or str) values indexed by object id, see
        DEFAULT_IDENT; objects 1 (ProductCode) and 2 (MajorMinorRevision)
        are also the additional data of FC 0x11."""
        self.port = port
        self.bank = bank
        self.address = 1
        self.set_address(address)
        self.baud = baud
        self.t35_ms = silence_ms(baud)
        self.listen_only = False
        # Diagnostic counters (FC08 sub-functions 0x0B..0x12), wrap at 65536.
        self.bus_messages = 0  # good CRC, any address
        self.crc_errors = 0  # bad CRC / incomplete frames dropped
        self.exceptions_sent = 0
        self.server_messages = 0  # addressed to us, broadcasts included
        self.no_responses = 0  # addressed to us (or broadcast), not answered
        self.overruns = 0  # receive buffer overflowed
        self.port_errors = 0  # the port raised OSError on a read or a write
        self._rx = bytearray(RX_SIZE)
        self._tx = bytearray(BUF_SIZE)
        self._scratch = bytearray(_SCRATCH)
        self._head = 0  # first unconsumed byte in _rx
        self._n = 0  # bytes in _rx
        self._last_rx = 0  # tick of the last byte arrival
        self._resync = False  # a bad frame was seen: hunting a frame start
        self._discard = False  # overflowed: drop bytes until a silence
        self._handled = False
        self._ident = None
        self.set_ident(DEFAULT_IDENT if ident is None else ident)

    # -- configuration ----------------------------------------------------

    def set_address(self, address):
        if address < 1 or address > 247:
            raise ValueError("modbus address 1..247")
        self.address = address

    def set_ident(self, ident):
        objs = []
        for o in ident:
            objs.append(bytes(o, "utf-8") if isinstance(o, str) else bytes(o))
        if len(objs) < 3 or len(objs) > 7:
            raise ValueError("ident: 3..7 objects")
        for o in objs:
            if len(o) > _ID_MAX_OBJECT:
                raise ValueError("ident object too long")
        if len(objs[1]) + len(objs[2]) > 248:
            raise ValueError("ident: product code + revision too long")
        self._ident = tuple(objs)

    def set_baud(self, baud):
        self.baud = baud
        self.t35_ms = silence_ms(baud)

    def clear_counters(self):
        self.bus_messages = 0
        self.crc_errors = 0
        self.exceptions_sent = 0
        self.server_messages = 0
        self.no_responses = 0
        self.overruns = 0

    def receiving(self):
        """True while a partial frame waits: the caller should poll again
        within t3.5 so the silence that ends (or drops) it is seen."""
        return self._n > self._head or self._discard

    def drop(self):
        """Forget what the receiver holds (after poll raised: a partial or
        half-handled frame is not trusted); the next frame starts afresh."""
        self._head = 0
        self._n = 0
        self._resync = False
        self._discard = False

    # -- receive side -----------------------------------------------------

    def poll(self, now_ms):
        """Read what the port has and handle complete frames.

        Returns True when at least one frame with a good CRC was handled
        (answered, or deliberately not answered: other address, broadcast,
        listen-only), else False.
        """
        self._handled = False
        port = self.port
        scratch = self._scratch
        rx = self._rx
        while True:
            try:
                k = port.readinto(scratch)
            except OSError:
                self.port_errors = (self.port_errors + 1) & 0xFFFF
                break
            if not k:
                break
            self._last_rx = now_ms
            if self._discard:
                continue
            n = self._n
            if n + k > RX_SIZE:
                self._compact()
                n = self._n
                if n + k > RX_SIZE:
                    # The frame cannot fit: drop it and the rest of it.
                    self.overruns = (self.overruns + 1) & 0xFFFF
                    self._head = 0
                    self._n = 0
                    self._resync = False
                    self._discard = True
                    continue
            i = 0
            while i < k:
                rx[n] = scratch[i]
                n += 1
                i += 1
            self._n = n
            self._scan(False)
        if (self._n > self._head or self._discard) and ticks_diff(now_ms, self._last_rx) >= self.t35_ms:
            if self._discard:
                self._discard = False
            else:
                self._scan(True)
            self._head = 0
            self._n = 0
            self._resync = False
        return self._handled

    def _compact(self):
        h = self._head
        if h == 0:
            return
        rx = self._rx
        n = self._n
        j = 0
        while h < n:
            rx[j] = rx[h]
            j += 1
            h += 1
        self._head = 0
        self._n = j

    def _expected(self, off, avail):
        """Request length implied by the function code at off.

        0: more bytes are needed to tell; -1: unknown function code.
        """
        if avail < 2:
            return 0
        rx = self._rx
        fc = rx[off + 1]
        if (fc >= 1 and fc <= 6) or fc == 8:
            return 8
        if fc == 15 or fc == 16:
            if avail < 7:
                return 0
            return 9 + rx[off + 6]
        if fc == 0x11:
            return 4
        if fc == 0x2B:
            return 7
        if fc == 23:
            if avail < 11:
                return 0
            return 13 + rx[off + 10]
        return -1

    def _bad(self):
        # One CRC error per bad frame, not per byte skipped while resyncing.
        if not self._resync:
            self.crc_errors = (self.crc_errors + 1) & 0xFFFF
            self._resync = True

    def _scan(self, silent):
        """Consume complete frames from the buffer.

        silent: t3.5 has passed since the last byte, so whatever is left is
        all there will be (the caller clears the buffer afterwards).
        """
        rx = self._rx
        n = self._n
        head = self._head
        while head < n:
            avail = n - head
            need = self._expected(head, avail)
            if need > RX_SIZE:
                self._bad()
                head += 1
                continue
            if need > 0 and need <= avail:
                if crc16(rx, head, head + need) == 0:
                    self._resync = False
                    self._frame(head, need)
                    head += need
                else:
                    self._bad()
                    head += 1
                continue
            # Unknown function code, or not all of the frame is here yet.
            if not silent:
                if need < 0 and self._resync:
                    head += 1  # garbage: a frame cannot start here
                    continue
                break
            # Silence: the remainder is the whole frame (fallback framing).
            if not self._resync and avail >= _MIN_FRAME and crc16(rx, head, n) == 0:
                self._frame(head, avail)
                head = n
                break
            self._bad()
            head += 1
        if head >= n:
            head = 0
            n = 0
            self._n = 0
        self._head = head

    # -- frame handling ---------------------------------------------------

    def _frame(self, off, length):
        """A frame with a good CRC at rx[off:off + length]."""
        self._handled = True
        self.bus_messages = (self.bus_messages + 1) & 0xFFFF
        addr = self._rx[off]
        if addr != self.address and addr != BROADCAST:
            return
        self.server_messages = (self.server_messages + 1) & 0xFFFF
        fc = self._rx[off + 1]
        if self.listen_only and fc != FC_DIAGNOSTICS:
            # Monitored, not acted on; only FC08 sub 01 may end this mode.
            self.no_responses = (self.no_responses + 1) & 0xFFFF
            return
        r = self._dispatch(fc, off, length, addr)
        if r > 0 and addr != BROADCAST and not self.listen_only:
            self._send(r)
            if self._tx[1] & 0x80:
                self.exceptions_sent = (self.exceptions_sent + 1) & 0xFFFF
        elif r >= 0:
            self.no_responses = (self.no_responses + 1) & 0xFFFF

    def _dispatch(self, fc, off, length, addr):
        """Run the handler for fc; returns the reply length in _tx without
        CRC (0: no reply). One method per function code."""
        if fc == FC_READ_HOLDING or fc == FC_READ_INPUT:
            return self._fc_read_registers(fc, off, length, addr)
        if fc == FC_DIAGNOSTICS:
            return self._fc_diagnostics(fc, off, length, addr)
        if fc == FC_MEI:
            return self._fc_mei(fc, off, length, addr)
        if fc == FC_REPORT_SERVER_ID:
            return self._fc_report_server_id(fc, off, length, addr)
        if fc == FC_WRITE_SINGLE:
            return self._fc_write_single(fc, off, length, addr)
        if fc == FC_WRITE_MULTIPLE:
            return self._fc_write_multiple(fc, off, length, addr)
        return self._exception(fc, EX_ILLEGAL_FUNCTION)

    def _exception(self, fc, code):
        tx = self._tx
        tx[0] = self.address
        tx[1] = (fc | 0x80) & 0xFF
        tx[2] = code & 0xFF
        return 3

    def _send(self, n):
        tx = self._tx
        crc = crc16(tx, 0, n)
        tx[n] = crc & 0xFF
        tx[n + 1] = crc >> 8
        try:
            self.port.write(tx, n + 2)
        except OSError:
            # a UART fault loses this reply, as noise on the bus would; the
            # master asks again, and the firmware carries on protecting
            self.port_errors = (self.port_errors + 1) & 0xFFFF

    def _fc_read_registers(self, fc, off, length, addr):
        """FC03 / FC04: [addr fc start_hi start_lo qty_hi qty_lo crc crc]."""
        if length != 8:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        rx = self._rx
        start = (rx[off + 2] << 8) | rx[off + 3]
        count = (rx[off + 4] << 8) | rx[off + 5]
        if count < 1 or count > _MAX_READ_REGS:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        if start + count > 0x10000:
            return self._exception(fc, EX_ILLEGAL_ADDRESS)
        if addr == BROADCAST:
            return 0  # a broadcast read has no one to answer
        tx = self._tx
        try:
            r = self.bank.read_registers(fc, start, count, tx, 3)
        except Exception:
            r = EX_DEVICE_FAILURE
        if r:
            return self._exception(fc, r)
        tx[0] = self.address
        tx[1] = fc
        tx[2] = count << 1
        return 3 + (count << 1)

    def _write(self, fc, req, start, count, data, addr):
        """Hand the words at rx[data:] to the bank. The reply to FC06 and
        FC16 alike is the request's first six bytes (FC06: register and
        value; FC16: start and quantity)."""
        rx = self._rx
        try:
            r = self.bank.write_registers(start, count, rx, data, addr == BROADCAST)
        except Exception:
            r = EX_DEVICE_FAILURE
        if addr == BROADCAST:
            return 0
        if r:
            return self._exception(fc, r)
        tx = self._tx
        tx[0] = self.address
        i = 1
        while i < 6:
            tx[i] = rx[req + i]
            i += 1
        return 6

    def _fc_write_single(self, fc, off, length, addr):
        """FC06: [addr 06 reg_hi reg_lo value_hi value_lo crc crc] -> echo."""
        if length != 8:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        rx = self._rx
        return self._write(fc, off, (rx[off + 2] << 8) | rx[off + 3], 1, off + 4, addr)

    def _fc_write_multiple(self, fc, off, length, addr):
        """FC16: [addr 10 start(2) qty(2) bytes data... crc crc] ->
        [addr 10 start(2) qty(2)]."""
        rx = self._rx
        if length < 9:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        start = (rx[off + 2] << 8) | rx[off + 3]
        count = (rx[off + 4] << 8) | rx[off + 5]
        nbytes = rx[off + 6]
        if count < 1 or count > _MAX_WRITE_REGS or nbytes != count << 1 or length != 9 + nbytes:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        if start + count > 0x10000:
            return self._exception(fc, EX_ILLEGAL_ADDRESS)
        return self._write(fc, off, start, count, off + 7, addr)

    def _fc_diagnostics(self, fc, off, length, addr):
        """FC08: [addr 08 sub_hi sub_lo data_hi data_lo crc crc].

        Replies echo the request or carry [08 sub_hi sub_lo value_hi
        value_lo]. While listen-only, only sub-function 01 is acted on, and
        it is not answered (the mode ends; the counters are cleared).
        """
        rx = self._rx
        if length < 6:
            if self.listen_only:
                return 0
            return self._exception(fc, EX_ILLEGAL_VALUE)
        sub = (rx[off + 2] << 8) | rx[off + 3]
        data = (rx[off + 4] << 8) | rx[off + 5]
        if self.listen_only:
            if sub != _DIAG_RESTART or length != 8 or (data != 0 and data != 0xFF00):
                return 0
            self.listen_only = False
            self.clear_counters()
            return _NO_REPLY_UNCOUNTED  # the counters were just cleared
        value = -1
        if sub == _DIAG_BUS_MESSAGES:
            value = self.bus_messages
        elif sub == _DIAG_CRC_ERRORS:
            value = self.crc_errors
        elif sub == _DIAG_EXCEPTIONS:
            value = self.exceptions_sent
        elif sub == _DIAG_SERVER_MESSAGES:
            value = self.server_messages
        elif sub == _DIAG_NO_RESPONSES:
            value = self.no_responses
        elif sub == _DIAG_NAKS or sub == _DIAG_BUSY:
            value = 0
        elif sub == _DIAG_OVERRUNS:
            value = self.overruns
        elif (sub != _DIAG_QUERY and sub != _DIAG_RESTART and sub != _DIAG_LISTEN_ONLY
              and sub != _DIAG_CLEAR):
            return self._exception(fc, EX_ILLEGAL_FUNCTION)
        if length != 8:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        tx = self._tx
        if value >= 0:
            tx[0] = self.address
            tx[1] = fc
            tx[2] = sub >> 8
            tx[3] = sub & 0xFF
            tx[4] = (value >> 8) & 0xFF
            tx[5] = value & 0xFF
            return 6
        if sub == _DIAG_RESTART:
            # 0xFF00 would also clear the comm event log, which we do not keep.
            if data != 0 and data != 0xFF00:
                return self._exception(fc, EX_ILLEGAL_VALUE)
            self.clear_counters()
        elif sub == _DIAG_CLEAR:
            self.clear_counters()
        elif sub == _DIAG_LISTEN_ONLY:
            self.listen_only = True
            return 0
        # echo: the request without its CRC
        tx[0] = self.address
        i = 1
        end = length - 2
        while i < end:
            tx[i] = rx[off + i]
            i += 1
        return end

    def _fc_mei(self, fc, off, length, addr):
        """FC 0x2B, MEI 0x0E: [addr 2B 0E code object_id crc crc] ->
        [addr 2B 0E code conformity more_follows next_id count {id len value}].
        """
        rx = self._rx
        if length >= 5 and rx[off + 2] != MEI_DEVICE_ID:
            return self._exception(fc, EX_ILLEGAL_FUNCTION)
        if length != 7:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        code = rx[off + 3]
        oid = rx[off + 4]
        ident = self._ident
        nobj = len(ident)
        if code < 1 or code > 4:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        if code == 4:
            if oid >= nobj:
                return self._exception(fc, EX_ILLEGAL_ADDRESS)
            last = oid
        else:
            last = 2 if code == 1 else nobj - 1
            if oid > last:
                oid = 0  # unknown object in a stream access: restart at 0
        tx = self._tx
        tx[0] = self.address
        tx[1] = fc
        tx[2] = MEI_DEVICE_ID
        tx[3] = code
        tx[4] = 0x81 if nobj <= 3 else 0x82
        tx[5] = 0  # more follows
        tx[6] = 0  # next object id
        count = 0
        n = 8
        while oid <= last:
            obj = ident[oid]
            k = len(obj)
            if n + 2 + k > BUF_SIZE - 2:
                tx[5] = 0xFF
                tx[6] = oid
                break
            tx[n] = oid
            tx[n + 1] = k
            n = self._put(obj, n + 2)
            count += 1
            oid += 1
        tx[7] = count
        return n

    def _put(self, obj, n):
        """Copy obj's bytes into the reply at n (a loop: no slice, no
        allocation); returns the offset after them."""
        tx = self._tx
        k = len(obj)
        j = 0
        while j < k:
            tx[n] = obj[j]
            n += 1
            j += 1
        return n

    def _fc_report_server_id(self, fc, off, length, addr):
        """FC 0x11: [addr 11 crc crc] -> [addr 11 byte_count server_id FF
        ProductCode ' ' MajorMinorRevision]."""
        if length != 4:
            return self._exception(fc, EX_ILLEGAL_VALUE)
        tx = self._tx
        tx[0] = self.address
        tx[1] = fc
        tx[3] = self.address
        tx[4] = 0xFF  # run indicator: on
        n = self._put(self._ident[1], 5)
        tx[n] = 0x20
        n = self._put(self._ident[2], n + 1)
        tx[2] = n - 3
        return n
