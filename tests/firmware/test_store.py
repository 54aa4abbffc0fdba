"""The A/B record store: a power cut at any byte of a save loses nothing."""
import os

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from bms import store as S
from bms.crc import crc16
from bms.store import FAIL_FLASH, FAIL_MEMORY, Store, decode, encode
from conftest import run_mpy


def d(tmp_path):
    return str(tmp_path) + "/"


def test_round_trip_and_reload(tmp_path):
    s = Store(d(tmp_path), "params")
    assert s.load() is None
    assert s.save(3, b"hello")
    assert s.save(3, b"world")
    t = Store(d(tmp_path), "params")
    assert t.load() == (3, b"world")
    assert t.seq == 2


def test_unchanged_payload_writes_nothing(tmp_path):
    s = Store(d(tmp_path), "params")
    s.save(1, b"abc")
    mtimes = [os.stat(p).st_mtime_ns for p in s.paths if os.path.exists(p)]
    files = sorted(os.listdir(tmp_path))
    assert s.save(1, b"abc")
    assert sorted(os.listdir(tmp_path)) == files
    assert [os.stat(p).st_mtime_ns for p in s.paths if os.path.exists(p)] == mtimes


def test_power_cut_at_every_byte_of_a_save(tmp_path):
    base = d(tmp_path)
    old_payload = bytes(range(40))
    new_payload = bytes(reversed(range(60)))
    for older in (None, b"older"):
        # the slots before the save: A holds the newest record (seq 2); B an older one or nothing
        s = Store(base, "p")
        for f in s.paths:
            if os.path.exists(f):
                os.remove(f)
        if older is not None:
            with open(s.paths[1], "wb") as f:
                f.write(encode(1, 1, older))
        with open(s.paths[0], "wb") as f:
            f.write(encode(1, 2, old_payload))
        before = [open(p, "rb").read() if os.path.exists(p) else None for p in s.paths]
        rec = encode(1, 3, new_payload)
        for k in range(len(rec) + 1):
            # restore, then a save that stops after k bytes of the record
            for p, content in zip(s.paths, before):
                if content is None:
                    if os.path.exists(p):
                        os.remove(p)
                else:
                    with open(p, "wb") as f:
                        f.write(content)
            t = Store(base, "p")
            assert t.load() == (1, old_payload)
            assert t.slot == 0, "the save goes to the other slot"
            with open(t.paths[1], "wb") as f:
                f.write(rec[:k])
            got = Store(base, "p").load()
            assert got == ((1, new_payload) if k == len(rec) else (1, old_payload)), k


def test_a_corrupt_byte_falls_back_to_the_other_slot(tmp_path):
    s = Store(d(tmp_path), "p")
    s.save(1, b"first")
    s.save(1, b"second")
    with open(s.paths[s.slot], "r+b") as f:
        f.seek(14)
        b = f.read(1)
        f.seek(14)
        f.write(bytes([b[0] ^ 0x40]))
    assert Store(d(tmp_path), "p").load() == (1, b"first")


def test_an_older_version_is_returned_for_migration(tmp_path):
    s = Store(d(tmp_path), "p")
    s.save(1, b"v1 data")
    assert Store(d(tmp_path), "p").load() == (1, b"v1 data")


def test_a_failed_write_keeps_the_old_record(tmp_path):
    s = Store(d(tmp_path) + "missing/", "p")
    assert s.save(1, b"x") is False and s.write_errors == 1 and s.slot == -1


class Faults:
    """The store's open() with a fault to inject: `where` is "open" (the open
    itself raises), "write" (the file is truncated, then write number `at` of
    the save writes half its piece and raises: 1 the header, 2 the payload,
    3 the CRC) or "short" (that write stops half way and says so); `exc` is
    the exception raised."""

    def __init__(self, monkeypatch):
        self.where = None
        self.at = 1
        self.exc = OSError(28, "ENOSPC")
        self.opens = 0
        monkeypatch.setattr(S, "open", self.open, raising=False)

    def open(self, path, mode="r"):
        if "w" not in mode or self.where is None:
            return open(path, mode)
        self.opens += 1
        if self.where == "open":
            raise self.exc
        f = open(path, mode)
        faults = self
        calls = [0]

        class Broken:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                calls[0] += 1
                if calls[0] < faults.at:
                    return f.write(data)
                f.write(data[:len(data) // 2])
                if faults.where == "short":
                    return len(data) // 2
                raise faults.exc

        return Broken()


@pytest.mark.parametrize("where, at, exc, why", [
    ("open", 1, OSError(28, "ENOSPC"), FAIL_FLASH),
    ("write", 1, OSError(5, "EIO"), FAIL_FLASH),
    ("write", 2, OSError(28, "ENOSPC"), FAIL_FLASH),
    ("write", 3, OSError(5, "EIO"), FAIL_FLASH),
    ("short", 1, None, FAIL_FLASH),
    ("short", 2, None, FAIL_FLASH),
    ("short", 3, None, FAIL_FLASH),
    ("open", 1, MemoryError(), FAIL_MEMORY),
    ("write", 2, MemoryError(), FAIL_MEMORY),
])
def test_a_failed_save_keeps_the_newest_record_counts_and_a_later_save_works(
        tmp_path, monkeypatch, where, at, exc, why):
    faults = Faults(monkeypatch)
    s = Store(d(tmp_path), "p")
    assert s.save(1, b"one") and s.save(1, b"two")
    newest = s.slot
    faults.where = where
    faults.at = at
    if exc is not None:
        faults.exc = exc
    for n in (1, 2, 3):  # every retry fails the same way and is counted
        assert s.save(1, b"three") is False
        assert s.write_errors == n and s.failing == why
        # the newest record, in flash and as the store knows it, is what it was
        assert (s.slot, s.seq, s.version, s.length, s.crc) == (newest, 2, 1, 3, crc16(b"two", 0, 3))
        assert Store(d(tmp_path), "p").load() == (1, b"two")
    assert s.save(1, b"two") is True and s.failing == 0  # flash already holds it
    faults.where = None
    assert s.save(1, b"three") is True
    assert s.failing == 0 and s.write_errors == 3 and s.slot == 1 - newest
    t = Store(d(tmp_path), "p")
    assert t.load() == (1, b"three") and t.seq == 3


def test_a_save_writes_the_record_without_building_it(tmp_path):
    """The header, the payload and the CRC go out in pieces; the file is
    byte for byte the record encode() builds."""
    s = Store(d(tmp_path), "p")
    for seq, payload in enumerate((b"", b"a", bytes(range(200)), b"\xff" * 696), 1):
        assert s.save(7, payload)
        with open(s.paths[s.slot], "rb") as f:
            assert f.read() == encode(7, seq, payload)


def _same_crc(payload):
    """Another payload of the same length and CRC-16 (its last two bytes
    chosen to match): only a comparison of the bytes tells them apart."""
    want = crc16(payload, 0, len(payload))
    other = bytearray(payload)
    other[0] ^= 0xFF
    for v in range(65536):
        other[-2] = v & 0xFF
        other[-1] = v >> 8
        if crc16(other, 0, len(other)) == want:
            return bytes(other)
    raise AssertionError("no collision")


def test_the_store_keeps_no_copy_and_compares_an_unchanged_save_with_flash(tmp_path):
    s = Store(d(tmp_path), "p")
    buf = bytearray(b"abcdefgh" * 9)  # longer than the comparison's chunk
    assert s.save(1, buf)
    assert not hasattr(s, "payload")  # no copy in RAM: the length and CRC only
    slot, seq = s.slot, s.seq
    buf[0] = ord("x")  # the caller fills its buffer again: flash keeps what was saved
    assert Store(d(tmp_path), "p").load() == (1, b"abcdefgh" * 9)
    assert s.save(1, b"abcdefgh" * 9) and (s.slot, s.seq) == (slot, seq)  # unchanged: nothing written
    twin = _same_crc(b"abcdefgh" * 9)  # the same length and CRC, other bytes
    assert s.save(1, twin) and (s.slot, s.seq) == (1 - slot, seq + 1)
    assert Store(d(tmp_path), "p").load() == (1, twin)
    t = Store(d(tmp_path), "p")
    loaded = t.load()[1]
    assert isinstance(loaded, bytearray)
    loaded[0] ^= 1  # the caller's own: the store did not keep it
    assert t.save(1, twin) and t.seq == seq + 1  # flash already holds it
    assert t.save(2, twin) and t.seq == seq + 2  # a new version is a new record
    assert t.save(2, b"longer") and Store(d(tmp_path), "p").load() == (2, b"longer")


def test_an_unreadable_newest_record_is_written_again(tmp_path):
    s = Store(d(tmp_path), "p")
    assert s.save(1, b"same")
    os.remove(s.paths[s.slot])  # flash lost it (or cannot read it): the same payload goes out again
    assert s.save(1, b"same") and Store(d(tmp_path), "p").load() == (1, b"same")


def test_erase_never_raises_for_want_of_heap(tmp_path, monkeypatch):
    import os as real_os

    s = Store(d(tmp_path), "p")
    assert s.save(1, b"one") and s.save(1, b"two")

    class NoHeapOs:
        @staticmethod
        def remove(path):
            raise MemoryError()

    monkeypatch.setitem(__import__("sys").modules, "os", NoHeapOs)
    assert s.erase() is False
    monkeypatch.setitem(__import__("sys").modules, "os", real_os)
    assert Store(d(tmp_path), "p").load() == (1, b"two")  # nothing went
    assert Store(d(tmp_path), "p").erase() is True
    assert Store(d(tmp_path), "p").load() is None


def test_fail_counts_a_callers_failure(tmp_path):
    s = Store(d(tmp_path), "p")
    assert s.fail(FAIL_MEMORY) is False
    assert s.write_errors == 1 and s.failing == FAIL_MEMORY
    assert s.save(1, b"x") and s.failing == 0 and s.write_errors == 1


@given(st.integers(0, 0xFFFFFFFF), st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_encode_decode(seq, payload, version):
    rec = encode(version, seq, payload)
    assert decode(rec) == (version, seq, payload)
    for i in (0, len(rec) // 2, len(rec) - 1):
        bad = bytearray(rec)
        bad[i] ^= 0x01
        assert decode(bad) is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=12))
def test_any_sequence_of_saves_reloads_the_last(tmp_path_factory, payloads):
    base = str(tmp_path_factory.mktemp("s")) + "/"
    s = Store(base, "p")
    for p in payloads:
        s.save(2, p)
    assert Store(base, "p").load() == (2, payloads[-1])


def test_store_under_micropython(micropython, tmp_path):
    proc = run_mpy(micropython, "mpy_store.py", d(tmp_path))
    # a 696-byte save allocates the file object and no more (it checks: at most 400 B)
    assert proc.stdout.strip().startswith("OK save_heap="), proc.stdout
