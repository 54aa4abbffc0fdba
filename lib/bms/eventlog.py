"""Persistent event log: a ring of fixed-size binary records in one file.

Record (16 bytes, little-endian):

    off  size  field
     0   u32   seq     sequence number (total records ever written, from 0)
     4   u32   time_s  seconds since this boot
     8   u16   boot    boot counter
    10   u8    code    event code
    11   u8    crc     bms.crc.crc8 (poly 0x07) with init 0xFF over
                       bytes 0..10 then 12..15
    12   i32   value   signed

Record `seq` lives in slot `seq % capacity` at file offset
`slot * RECORD_SIZE`. A record is valid when it is not blank (all 0x00 or
all 0xFF), its CRC matches and it sits in its own slot. The newest record
is the valid one with the largest seq, so the log survives wrapping, torn
writes (a power cut leaves at most the record being written invalid; the
next append simply overwrites it) and corrupt records (skipped).

Appending opens, seeks, writes 16 bytes and closes (LittleFS makes each
file operation power-fail safe). A failed write (OSError, or MemoryError
opening the file) is counted in
`write_errors`; the record still goes into the RAM cache of the newest
records, which `newest()` serves without touching the filesystem.
"""
import struct
from array import array

from micropython import const

from bms.crc import crc8

_ENOENT = const(2)

RECORD_SIZE = const(16)
_CRC_OFF = const(11)
_U32 = const(0xFFFFFFFF)
_I32_MAX = const(0x7FFFFFFF)
_CRC_INIT = const(0xFF)  # init 0 would give the all-zero record crc 0 == blank
_FMT = "<IIHBBi"


def encode(buf, seq, boot, time_s, code, value, off=0):
    """Write one record into buf[off:off + 16].

    seq and time_s are taken mod 2**32, boot mod 2**16, code mod 2**8;
    value is clamped to the i32 range. Allocation-free for small ints (the
    range checks use shifts, so no big-int constant is touched).
    """
    v = value >> 31
    if v > 0:
        value = _I32_MAX
    elif v < -1:
        value = -_I32_MAX - 1
    if seq < 0 or seq >> 32:
        seq &= _U32
    if time_s < 0 or time_s >> 32:
        time_s &= _U32
    struct.pack_into(_FMT, buf, off, seq, time_s, boot & 0xFFFF, code & 0xFF, 0, value)
    buf[off + _CRC_OFF] = _crc(buf, off)


def _crc(buf, off):
    return crc8(buf, off + _CRC_OFF + 1, off + RECORD_SIZE, crc8(buf, off, off + _CRC_OFF, _CRC_INIT))


def _blank(buf, off):
    b = buf[off]
    if b != 0 and b != 0xFF:
        return False
    i = off + 1
    end = off + RECORD_SIZE
    while i < end:
        if buf[i] != b:
            return False
        i += 1
    return True


def valid(buf, off=0):
    """True when buf[off:off + 16] holds a non-blank record with a good CRC."""
    return (not _blank(buf, off)) and buf[off + _CRC_OFF] == _crc(buf, off)


def _seq(buf, off):
    return buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)


def decode(buf, off=0):
    """(seq, boot, time_s, code, value) from buf[off:off + 16], or None if invalid."""
    if not valid(buf, off):
        return None
    seq, time_s, boot, code, _, value = struct.unpack_from(_FMT, buf, off)
    return (seq, boot, time_s, code, value)


class EventLog:
    def __init__(self, path, capacity=256, cache=15):
        if capacity < 1:
            raise ValueError("capacity")
        if cache < 0:
            cache = 0
        self.path = path
        self.capacity = capacity
        self.cache = cache
        self.boot = 0
        self.next_seq = 0
        self.write_errors = 0
        self.error_kind = 0  # the last failed write's: 1 MemoryError, 2 OSError, 3 another (bms.start KIND_)
        self._buf = bytearray(RECORD_SIZE)
        self._cbuf = bytearray(cache * RECORD_SIZE)  # ring of raw records
        self._chead = 0  # cache position the next record goes to
        self._cn = 0  # records in the cache
        self._valid = bytearray((capacity + 7) >> 3)  # slot holds a valid record
        self._count = 0
        self._loaded = False
        # hold: append() keeps records in the RAM cache until flush(), so a
        # control cycle switches its FETs before it spends time on flash
        self.hold = False
        self._held = 0  # the newest records not yet written
        self._hslot = array("H", bytes(2 * cache))  # their file slots, by cache position

    # -- boot ---------------------------------------------------------------

    def load(self):
        """Scan the file; set boot, next_seq, count and the RAM cache.

        Tolerates a missing, short or corrupt file. Returns count().
        """
        self._loaded = True
        cap = self.capacity
        bits = self._valid
        i = 0
        while i < len(bits):
            bits[i] = 0
            i += 1
        self._count = 0
        self._chead = 0
        self._cn = 0
        buf = self._buf
        best = -1
        best_slot = 0
        best_boot = -1
        try:
            f = open(self.path, "rb")
        except OSError:
            f = None
        if f is not None:
            try:
                slot = 0
                while slot < cap:
                    if f.readinto(buf) != RECORD_SIZE:
                        break
                    if valid(buf, 0):
                        s = _seq(buf, 0)
                        if s % cap == slot:
                            bits[slot >> 3] |= 1 << (slot & 7)
                            self._count += 1
                            if s > best:
                                best = s
                                best_slot = slot
                                best_boot = buf[8] | (buf[9] << 8)
                    slot += 1
                if best >= 0:
                    self._fill_cache(f, best_slot)
            except OSError:
                pass
            finally:
                f.close()
        self.next_seq = (best + 1) & _U32
        self.boot = (best_boot + 1) & 0xFFFF
        return self._count

    def _fill_cache(self, f, top):
        # The newest `cache` valid slots, walking back from the newest slot.
        n = self.cache
        cap = self.capacity
        cb = self._cbuf
        buf = self._buf
        got = 0
        k = 0
        while k < cap and got < n:
            slot = (top - k) % cap
            k += 1
            if not self._bit(slot):
                continue
            f.seek(slot * RECORD_SIZE)
            if f.readinto(buf) != RECORD_SIZE:
                continue
            pos = (n - 1 - got) * RECORD_SIZE
            j = 0
            while j < RECORD_SIZE:
                cb[pos + j] = buf[j]
                j += 1
            got += 1
        self._cn = got
        self._chead = 0

    def _bit(self, slot):
        return (self._valid[slot >> 3] >> (slot & 7)) & 1

    # -- runtime ------------------------------------------------------------

    def append(self, code, value, time_s):
        """Log one event; returns its seq. Never raises on a filesystem
        error or a full heap (MemoryError: the file could not be opened):
        the write is counted as failed, the record stays in the cache."""
        if not self._loaded:
            try:
                self.load()  # never overwrite an existing log from seq 0
            except MemoryError:
                self._loaded = False  # the file is left alone until a load works
        seq = self.next_seq
        buf = self._buf
        encode(buf, seq, self.boot, time_s, code, value)
        self.next_seq = 0 if seq >= _U32 else seq + 1
        if self._held >= self.cache and self._held:
            self.flush()  # the cache is full of held records: the oldest must not be overwritten unwritten
            buf = self._buf
            encode(buf, seq, self.boot, time_s, code, value)
        self._push(buf)
        slot = seq % self.capacity
        if self.hold and self.cache:
            # in the RAM cache now, in flash at flush(): the cycle acts first
            self._hslot[(self._chead - 1) % self.cache] = slot
            self._held += 1
            return seq
        self._write(slot, buf)
        return seq

    def flush(self):
        """Write the records held back (hold), oldest first. Never raises."""
        n = self._held
        self._held = 0
        buf = self._buf
        cb = self._cbuf
        while n:
            n -= 1
            pos = self._cpos(n)
            j = 0
            while j < RECORD_SIZE:
                buf[j] = cb[pos + j]
                j += 1
            self._write(self._hslot[pos // RECORD_SIZE], buf)

    def _write(self, slot, buf):
        """buf, one record, to its slot in the file; counted when it fails."""
        ok = False
        # separate except clauses: `except (A, B)` builds a tuple, which an
        # exhausted heap cannot give. Not loaded (no heap for the load):
        # where the records are is unknown, so the file is left alone.
        if self._loaded:
            try:
                try:
                    f = open(self.path, "r+b")
                except OSError as e:
                    if e.errno != _ENOENT:
                        raise  # only a missing file is created: "wb" on an I/O error would empty the log
                    f = open(self.path, "wb")
                try:
                    f.seek(slot * RECORD_SIZE)
                    n = f.write(buf)
                finally:
                    f.close()
                ok = n is None or n == RECORD_SIZE
                if not ok:
                    self.error_kind = 2  # a short write: the filesystem's
            except MemoryError:
                self.error_kind = 1
            except OSError:
                self.error_kind = 2
            except Exception:  # noqa: BLE001 - a bug: a failed write all the same; logging never raises
                self.error_kind = 3
        if not ok:
            self.write_errors += 1
        # the slot's old record leaves the log either way
        m = 1 << (slot & 7)
        old = self._valid[slot >> 3] & m
        if ok and not old:
            self._valid[slot >> 3] |= m
            self._count += 1
        elif old and not ok:
            self._valid[slot >> 3] &= ~m & 0xFF
            self._count -= 1

    def _push(self, buf):
        n = self.cache
        if n == 0:
            return
        cb = self._cbuf
        pos = self._chead * RECORD_SIZE
        j = 0
        while j < RECORD_SIZE:
            cb[pos + j] = buf[j]
            j += 1
        self._chead = (self._chead + 1) % n
        if self._cn < n:
            self._cn += 1

    def _cpos(self, i):
        if i < 0 or i >= self._cn:
            return -1
        return ((self._chead - 1 - i) % self.cache) * RECORD_SIZE

    def newest(self, i):
        """The i-th newest record (0 = newest) from the RAM cache, or None."""
        pos = self._cpos(i)
        if pos < 0:
            return None
        return decode(self._cbuf, pos)

    def newest_into(self, i, out, off=0):
        """Copy the i-th newest raw record into out[off:off + 16], allocation-free.

        Returns True, or False (out untouched) when there is no such record.
        """
        pos = self._cpos(i)
        if pos < 0:
            return False
        cb = self._cbuf
        j = 0
        while j < RECORD_SIZE:
            out[off + j] = cb[pos + j]
            j += 1
        return True

    def count(self):
        """Valid records in the file (at most capacity)."""
        return self._count

    def read(self, start_seq, n):
        """Up to n valid records with seq >= start_seq from the file, oldest first."""
        out = []
        try:
            f = open(self.path, "rb")
        except OSError:
            return out
        buf = bytearray(RECORD_SIZE)
        cap = self.capacity
        try:
            slot = 0
            while slot < cap:
                if f.readinto(buf) != RECORD_SIZE:
                    break
                r = decode(buf, 0)
                if r is not None and r[0] % cap == slot and r[0] >= start_seq:
                    out.append(r)
                slot += 1
        except OSError:
            pass
        finally:
            f.close()
        out.sort()
        return out[:n] if n < len(out) else out
