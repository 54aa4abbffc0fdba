"""Power-fail-safe records in flash: two slots (A/B), each a versioned,
sequence-numbered, CRC-checked record.

A save writes the slot that does not hold the newest record, so a power cut
at any moment (mid-write, or after the file was truncated) leaves the newest
record untouched: a load then finds either the old or the new record, never
a torn one. Saving an unchanged payload writes nothing (flash wear).

Record: magic b"BMSR", version u16, seq u32, length u16, payload, CRC-16
over all of it (little-endian). A record from an older firmware version is
returned with its version so the caller migrates it rather than dropping it.

A failed save (MemoryError: no heap for the file or a first buffer;
OSError: the filesystem refused, or wrote short) never raises: it
returns False, counts itself in `write_errors`, says why in `failing` (FAIL_),
and leaves the newest record in flash and what the store knows of it
(`seq`, `slot`, `version`, `length`, `crc`) as it was, so the next save
simply tries the same slot again. A later successful save clears `failing`.

A save needs little heap: the record is never built whole. The header and
the CRC go from two small preallocated buffers, the payload straight from
the caller's. What is left is the file object. The store keeps no copy of
the payload in RAM (the parameter set's is 744 bytes): a save whose payload
has the newest record's length and CRC is compared with flash, a chunk at a
time, and written only when it differs.

Not in the control loop: loads allocate (files, buffers), and so does
opening the file for a save.
"""
from micropython import const

from bms.crc import crc16

MAGIC = b"BMSR"
_HEAD = const(12)  # magic 4, version 2, seq 4, length 2
MAX_PAYLOAD = const(4096)

# Store.failing: why the last save failed (0: it did not)
FAIL_MEMORY = const(1)  # MemoryError: no heap for the file (or a payload's first buffer)
FAIL_FLASH = const(2)  # OSError, or a short write: the filesystem refused
FAIL_ERROR = const(3)  # another exception (a firmware bug): counted and retried all the same


# A save's header and CRC: saves never overlap, so every store shares them.
_head = bytearray(MAGIC + bytes(_HEAD - 4))
_tail = bytearray(2)


def _header(rec, version, seq, n):
    k = 0
    while k < 4:
        rec[k] = MAGIC[k]
        rec[6 + k] = (seq >> (8 * k)) & 0xFF
        k += 1
    rec[4] = version & 0xFF
    rec[5] = (version >> 8) & 0xFF
    rec[10] = n & 0xFF
    rec[11] = n >> 8


def encode(version, seq, payload):
    """The whole record in one new buffer (the tests' and tools' form:
    Store.save writes the same bytes without building it)."""
    n = len(payload)
    rec = bytearray(_HEAD + n + 2)
    _header(rec, version, seq, n)
    rec[_HEAD:_HEAD + n] = payload
    c = crc16(rec, 0, _HEAD + n)
    rec[_HEAD + n] = c & 0xFF
    rec[_HEAD + n + 1] = c >> 8
    return rec


def _whole(n, want):
    # a file's write() returns the count written (None: all of it)
    return n is None or n == want


def decode(rec):
    """(version, seq, payload) of a valid record, else None. The payload
    is a new bytearray, the caller's."""
    if rec is None or len(rec) < _HEAD + 2 or rec[0:4] != MAGIC:
        return None
    n = rec[10] | (rec[11] << 8)
    if n > MAX_PAYLOAD or len(rec) < _HEAD + n + 2:
        return None
    if crc16(rec, 0, _HEAD + n) != rec[_HEAD + n] | (rec[_HEAD + n + 1] << 8):
        return None
    version = rec[4] | (rec[5] << 8)
    seq = rec[6] | (rec[7] << 8) | (rec[8] << 16) | (rec[9] << 24)
    return version, seq, bytearray(rec[_HEAD:_HEAD + n])


class Store:
    def __init__(self, directory, name):
        self.paths = (directory + name + ".a", directory + name + ".b")
        self.seq = 0  # of the newest valid record
        self.slot = -1  # which slot holds it (-1: none)
        self.version = 0
        self.length = -1  # the newest record's payload length (-1: none)
        self.crc = 0  # and its payload's CRC-16: a save of the same is compared with flash
        self.write_errors = 0  # failed saves since boot (any cause)
        self.failing = 0  # FAIL_ of the last save, 0 when it worked

    def fail(self, why):
        """Count a failed save (the caller's own, say building the payload
        ran out of memory). Allocation-free. Returns False."""
        self.write_errors += 1
        self.failing = why
        return False

    def _read(self, path):
        """The record's bytes as the file holds them (decode() judges them).
        The header first, then exactly the length it gives: a read of the
        largest possible record would ask the heap for 4 KB in one piece."""
        try:
            with open(path, "rb") as f:
                head = f.read(_HEAD)
                if len(head) < _HEAD or head[0:4] != MAGIC:
                    return head
                n = head[10] | (head[11] << 8)
                return head + f.read(min(n, MAX_PAYLOAD) + 2)
        except OSError:
            return None

    def _holds(self, payload, n):
        """True when the newest record's payload in flash is `payload`
        (compared a chunk at a time: no copy of it in RAM). An unreadable
        record is not the same (the save writes the other slot). Allocates
        a 16-byte chunk and the file object, as a save does."""
        buf = bytearray(16)
        try:
            with open(self.paths[self.slot], "rb") as f:
                f.seek(_HEAD)
                i = 0
                while i < n:
                    k = f.readinto(buf)
                    if not k:
                        return False
                    k = k if k < n - i else n - i
                    j = 0
                    while j < k:
                        if buf[j] != payload[i + j]:
                            return False
                        j += 1
                    i += k
        except OSError:
            return False
        return True

    def load(self):
        """(version, payload) of the newest valid record, or None. The
        payload is a new bytearray, the caller's: the store keeps its
        length and CRC only."""
        best = None
        slot = 0
        while slot < 2:
            r = decode(self._read(self.paths[slot]))
            # sequence numbers are 32-bit and only grow: compare as serial numbers
            if r is not None and (best is None or ((r[1] - best[1]) & 0xFFFFFFFF) < 0x80000000):
                best = r
                self.slot = slot
            slot += 1
        if best is None:
            self.slot = -1
            return None
        self.version, self.seq, payload = best
        self.length = len(payload)
        self.crc = crc16(payload, 0, self.length)
        return self.version, payload

    def save(self, version, payload):
        """Write a new record unless the newest one already holds this.
        True when the record is in flash (written now or before). False
        when it failed (counted, `failing` says why): the newest record,
        in flash and here, stays what it was. Never raises MemoryError or
        OSError. (Separate except clauses: `except (A, B)` builds a tuple,
        which an exhausted heap cannot give.) The caller's payload is not
        kept: it may fill the same buffer again."""
        try:
            n = len(payload)
            pc = crc16(payload, 0, n)
            if (self.slot >= 0 and self.version == version and self.length == n and self.crc == pc
                    and self._holds(payload, n)):
                self.failing = 0
                return True
            seq = (self.seq + 1) & 0xFFFFFFFF
            # never the newest record's slot: a failure from here on (no
            # heap for the file, a refused or short write, a power cut)
            # damages at most the older slot
            slot = 1 - self.slot if self.slot >= 0 else 0
            h = _head
            _header(h, version, seq, n)
            c = crc16(payload, 0, n, crc16(h, 0, _HEAD))
            t = _tail
            t[0] = c & 0xFF
            t[1] = c >> 8
            with open(self.paths[slot], "wb") as f:
                ok = _whole(f.write(h), _HEAD) and _whole(f.write(payload), n) and _whole(f.write(t), 2)
            if not ok:
                return self.fail(FAIL_FLASH)
        except MemoryError:
            return self.fail(FAIL_MEMORY)
        except OSError:
            return self.fail(FAIL_FLASH)
        except Exception:  # noqa: BLE001 - a save is not protection: never to the guard
            return self.fail(FAIL_ERROR)
        self.seq = seq
        self.slot = slot
        self.version = version
        self.length = n
        self.crc = pc
        self.failing = 0
        return True

    def erase(self):
        """Remove both slots (a factory reset). True when neither is left;
        False, never MemoryError or OSError, when one may be."""
        import os

        ok = True
        for path in self.paths:
            try:
                os.remove(path)
            except MemoryError:
                ok = False
            except OSError:
                try:
                    open(path, "rb").close()
                    ok = False  # it is there and would not go
                except MemoryError:
                    ok = False
                except OSError:
                    pass  # it was not there
        self.seq = 0
        self.slot = -1
        self.length = -1
        return ok
