"""Persistent event log: record format, persistence, wraparound, corruption,
torn writes, write failures, a property test, and a run under MicroPython."""
import os
import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bms.eventlog import RECORD_SIZE, EventLog, decode, encode
from conftest import run_mpy

I32_MAX = 2**31 - 1
I32_MIN = -(2**31)


# -- independent reference ----------------------------------------------------

def crc8_bitwise(data, crc=0xFF):
    """CRC-8 poly 0x07, init 0xFF, bit by bit (independent of the table)."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def ref_record(seq, boot, time_s, code, value):
    body = struct.pack("<IIHB", seq, time_s, boot, code)
    tail = struct.pack("<i", value)
    return body + bytes((crc8_bitwise(body + tail),)) + tail


def new_log(tmp_path, name="events.bin", **kw):
    log = EventLog(str(tmp_path / name), **kw)
    log.load()
    return log


def newest_all(log):
    out = []
    i = 0
    while True:
        r = log.newest(i)
        if r is None:
            return out
        out.append(r)
        i += 1


# -- record format ------------------------------------------------------------

def test_encode_matches_reference_layout():
    buf = bytearray(RECORD_SIZE)
    for args in [(0, 0, 0, 0, 0), (1, 2, 3, 4, -5), (2**32 - 1, 65535, 2**32 - 1, 255, I32_MIN),
                 (123456, 7, 86400, 42, I32_MAX)]:
        encode(buf, *args)
        assert bytes(buf) == ref_record(*args)
        assert decode(buf) == args


def test_encode_clamps_and_masks():
    buf = bytearray(RECORD_SIZE)
    encode(buf, 2**32 + 5, 65536 + 3, -1, 256 + 9, 2**40)
    assert decode(buf) == (5, 3, 2**32 - 1, 9, I32_MAX)
    encode(buf, 1, 1, 1, 1, -(2**40))
    assert decode(buf)[4] == I32_MIN


def test_decode_rejects_blank_and_bad_crc():
    assert decode(bytes(16)) is None
    assert decode(b"\xff" * 16) is None
    buf = bytearray(32)
    encode(buf, 9, 1, 2, 3, 4, off=16)
    assert decode(buf, 16) == (9, 1, 2, 3, 4)
    for i in range(16, 32):
        for bit in range(8):
            b = bytearray(buf)
            b[i] ^= 1 << bit
            assert decode(b, 16) is None


# -- round trip and persistence -------------------------------------------------

def test_append_newest_round_trip(tmp_path):
    log = new_log(tmp_path, capacity=300, cache=300)
    values = [0, 1, -1, I32_MAX, I32_MIN, -123456, 2**30]
    expect = []
    for code in range(256):
        v = values[code % len(values)]
        seq = log.append(code, v, code * 10)
        assert seq == code
        expect.append((code, 0, code * 10, code, v))
    assert log.next_seq == 256 and log.count() == 256 and log.write_errors == 0
    assert newest_all(log) == expect[::-1]
    assert log.newest(-1) is None
    assert log.read(0, 1000) == expect
    assert log.read(250, 3) == expect[250:253]


def test_held_records_reach_flash_at_flush_in_order_and_none_is_lost(tmp_path):
    path = str(tmp_path / "ev.bin")
    log = EventLog(path, capacity=16, cache=4)
    log.load()
    log.append(1, 0, 0)
    log.hold = True
    for k in range(2):
        log.append(10 + k, k, 1)
    assert log.count() == 1, "held: in RAM, not in flash"
    assert [r[3] for r in (log.newest(0), log.newest(1), log.newest(2))] == [11, 10, 1]
    log.hold = False
    log.flush()
    assert log.count() == 3 and [r[3] for r in log.read(0, 10)] == [1, 10, 11]
    # more held than the cache holds: the oldest go to flash first, nothing is lost
    log.hold = True
    for k in range(9):
        log.append(20 + k, k, 2)
    log.hold = False
    log.flush()
    assert [r[3] for r in log.read(0, 20)] == [1, 10, 11] + list(range(20, 29))
    again = EventLog(path, capacity=16, cache=4)
    again.load()
    assert [r[3] for r in again.read(0, 20)] == [1, 10, 11] + list(range(20, 29))


def test_persistence_boot_and_seq_continue(tmp_path):
    path = str(tmp_path / "ev.bin")
    a = EventLog(path, capacity=16)
    assert a.load() == 0 and a.boot == 0 and a.next_seq == 0
    for i in range(5):
        a.append(10 + i, -i, i)
    b = EventLog(path, capacity=16)
    assert b.load() == 5
    assert b.boot == 1 and b.next_seq == 5 and b.count() == 5
    assert newest_all(b) == newest_all(a)
    assert b.append(99, 7, 0) == 5
    assert b.newest(0) == (5, 1, 0, 99, 7)
    c = EventLog(path, capacity=16)
    c.load()
    assert c.boot == 2 and c.next_seq == 6 and c.count() == 6
    assert [r[1] for r in c.read(0, 100)] == [0] * 5 + [1]


def test_append_without_load_does_not_clobber(tmp_path):
    path = str(tmp_path / "ev.bin")
    a = new_log(tmp_path, "ev.bin", capacity=8)
    for i in range(3):
        a.append(1, i, i)
    b = EventLog(path, capacity=8)  # forgot load(): append loads first
    assert b.append(2, 0, 0) == 3
    assert b.boot == 1 and b.count() == 4


def test_wraparound(tmp_path):
    path = tmp_path / "ev.bin"
    log = new_log(tmp_path, "ev.bin", capacity=8)
    for i in range(20):
        log.append(i, i * 1000 - 5000, i)
    last8 = [(s, 0, s, s, s * 1000 - 5000) for s in range(12, 20)]
    assert newest_all(log)[:8] == last8[::-1]
    assert log.read(0, 100) == last8
    assert log.read(15, 2) == last8[3:5]
    assert log.count() == 8
    assert os.path.getsize(path) == 8 * RECORD_SIZE
    again = EventLog(str(path), capacity=8)
    assert again.load() == 8
    assert again.next_seq == 20
    assert newest_all(again) == last8[::-1]  # cache 15 > capacity: all 8


def test_cache_smaller_than_capacity(tmp_path):
    path = str(tmp_path / "ev.bin")
    log = new_log(tmp_path, "ev.bin", capacity=32, cache=4)
    for i in range(10):
        log.append(i, i, i)
    assert [r[0] for r in newest_all(log)] == [9, 8, 7, 6]
    re = EventLog(path, capacity=32, cache=4)
    re.load()
    assert [r[0] for r in newest_all(re)] == [9, 8, 7, 6]
    out = bytearray(20)
    assert re.newest_into(1, out, 2) and decode(out, 2) == re.newest(1)
    assert not re.newest_into(4, out)
    nocache = EventLog(path, capacity=32, cache=0)
    assert nocache.load() == 10 and nocache.newest(0) is None
    nocache.append(1, 1, 1)
    assert nocache.next_seq == 11


# -- corruption -------------------------------------------------------------------

def test_flipped_byte_is_skipped(tmp_path):
    path = tmp_path / "ev.bin"
    log = new_log(tmp_path, "ev.bin", capacity=8)
    for i in range(6):
        log.append(i, i, i)
    for off in range(16):  # any byte of record 3
        data = bytearray(path.read_bytes())
        good = bytes(data)
        data[3 * 16 + off] ^= 0x5A
        path.write_bytes(bytes(data))
        re = EventLog(str(path), capacity=8)
        assert re.load() == 5
        assert re.next_seq == 6 and re.boot == 1
        assert [r[0] for r in newest_all(re)] == [5, 4, 2, 1, 0]
        assert [r[0] for r in re.read(0, 10)] == [0, 1, 2, 4, 5]
        path.write_bytes(good)
    # the newest one corrupted: continue after the previous one
    data = bytearray(path.read_bytes())
    data[5 * 16 + 13] ^= 1
    path.write_bytes(bytes(data))
    re = EventLog(str(path), capacity=8)
    assert re.load() == 5 and re.next_seq == 5
    assert re.append(9, 9, 9) == 5
    assert EventLog(str(path), capacity=8).load() == 6


def test_truncated_file(tmp_path):
    path = tmp_path / "ev.bin"
    log = new_log(tmp_path, "ev.bin", capacity=8)
    for i in range(6):
        log.append(i, i, i)
    full = path.read_bytes()
    for cut in range(len(full) + 1):
        path.write_bytes(full[:cut])
        re = EventLog(str(path), capacity=8)
        n = cut // 16
        assert re.load() == n
        assert re.next_seq == n
        assert re.boot == (1 if n else 0)
        assert re.read(0, 100) == log.read(0, n)


def test_random_bytes_file(tmp_path):
    path = tmp_path / "ev.bin"
    rnd = random.Random(1234)
    for trial in range(50):
        size = rnd.randrange(0, 64 * 16 + 20)
        path.write_bytes(bytes(rnd.getrandbits(8) for _ in range(size)))
        log = EventLog(str(path), capacity=64)
        n = log.load()
        assert 0 <= n <= 64 and log.count() == n
        assert len(log.read(0, 1000)) == n
        seq = log.append(1, 2, 3)
        assert seq == log.next_seq - 1 and log.newest(0)[0] == seq


def test_blank_files(tmp_path):
    path = tmp_path / "ev.bin"
    for fill in (b"\x00", b"\xff"):
        path.write_bytes(fill * (16 * 16))
        log = EventLog(str(path), capacity=16)
        assert log.load() == 0 and log.next_seq == 0 and log.boot == 0


def test_missing_file(tmp_path):
    log = EventLog(str(tmp_path / "nope.bin"), capacity=8)
    assert log.load() == 0
    assert log.count() == 0 and log.newest(0) is None and log.read(0, 5) == []
    assert log.append(3, -3, 30) == 0
    assert (tmp_path / "nope.bin").exists() and log.write_errors == 0


def test_record_in_wrong_slot_is_ignored(tmp_path):
    path = tmp_path / "ev.bin"
    buf = bytearray(16)
    encode(buf, 5, 0, 0, 1, 1)  # seq 5 belongs in slot 5, put it in slot 2
    path.write_bytes(b"\xff" * 32 + bytes(buf))
    assert EventLog(str(path), capacity=8).load() == 0


# -- torn writes --------------------------------------------------------------------

def torn_case(tmp_path, capacity, before):
    """`before` records written, then the next one torn after k bytes, all k."""
    path = tmp_path / "ev.bin"
    if path.exists():
        path.unlink()
    log = new_log(tmp_path, "ev.bin", capacity=capacity)
    for i in range(before):
        log.append(i % 256, i * 7 - 100, i)
    old = path.read_bytes()
    seq = before
    slot = seq % capacity
    new = ref_record(seq, 0, 1000, 77, -424242)
    for k in range(17):
        data = bytearray(old)
        end = slot * 16 + k
        if len(data) < end:
            data.extend(b"\x00" * (end - len(data)))  # a file extended by seek+write
        data[slot * 16:end] = new[:k]
        path.write_bytes(bytes(data))
        re = EventLog(str(path), capacity=capacity)
        re.load()
        # complete when the bytes not yet written already matched
        if bytes(data[slot * 16:slot * 16 + 16]) == new:
            assert re.newest(0) == (seq, 0, 1000, 77, -424242), k
            assert re.next_seq == seq + 1
        else:
            assert re.newest(0) == log.newest(0), k
            assert re.next_seq == seq, k
        assert re.boot == 1
        # and it carries on: the next append overwrites the torn slot
        s = re.append(1, 1, 1)
        assert s == re.next_seq - 1
        assert EventLog(str(path), capacity=capacity).load() == re.count()


def test_torn_write_fresh_slot(tmp_path):
    torn_case(tmp_path, 8, 5)


def test_torn_write_over_old_record(tmp_path):
    torn_case(tmp_path, 4, 6)
    torn_case(tmp_path, 8, 8)
    torn_case(tmp_path, 8, 21)


# -- write failures -------------------------------------------------------------------

def test_write_failure_is_counted_not_raised(tmp_path):
    path = str(tmp_path / "no_such_dir" / "ev.bin")
    log = EventLog(path, capacity=8)
    assert log.load() == 0
    assert log.append(5, -9, 12) == 0
    assert log.write_errors == 1
    assert log.newest(0) == (0, 0, 12, 5, -9)
    assert log.count() == 0
    assert log.append(6, 1, 13) == 1 and log.write_errors == 2
    assert [r[0] for r in newest_all(log)] == [1, 0]


def test_no_heap_for_the_file_is_counted_not_raised(tmp_path, monkeypatch):
    from bms import eventlog as E

    log = new_log(tmp_path, "ev.bin", capacity=8)
    log.append(1, 1, 1)

    def no_heap(*a):
        raise MemoryError()

    monkeypatch.setattr(E, "open", no_heap, raising=False)
    assert log.append(2, 2, 2) == 1 and log.write_errors == 1
    assert log.newest(0) == (1, log.boot, 2, 2, 2)  # in the RAM cache all the same
    # not loaded yet, and no heap for the load: nothing raised, the file left alone
    fresh = EventLog(str(tmp_path / "ev.bin"), capacity=8)
    assert fresh.append(3, 3, 3) == 0 and fresh.write_errors == 1 and not fresh._loaded
    monkeypatch.undo()
    assert log.append(4, 4, 4) == 2 and log.write_errors == 1
    again = EventLog(str(tmp_path / "ev.bin"), capacity=8)
    assert again.load() == 2 and again.newest(0)[3] == 4  # the first record was not overwritten


def test_write_failure_on_readonly_file(tmp_path):
    path = tmp_path / "ev.bin"
    log = new_log(tmp_path, "ev.bin", capacity=4)
    for i in range(4):
        log.append(i, i, i)
    os.chmod(path, 0o444)
    try:
        if os.access(path, os.W_OK):  # running as root: cannot test this way
            return
        assert log.append(9, 9, 9) == 4
        assert log.write_errors == 1
        assert log.newest(0)[0] == 4
        assert log.count() == 3  # slot 0's old record is gone from the window
    finally:
        os.chmod(path, 0o644)


# -- property ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    capacity=st.integers(1, 12),
    cache=st.integers(1, 16),
    boots=st.lists(
        st.lists(st.tuples(st.integers(0, 255), st.integers(I32_MIN, I32_MAX),
                           st.integers(0, 2**32 - 1)), max_size=25),
        min_size=1, max_size=3),
)
def test_property_reload_equals_last_appended(tmp_path, capacity, cache, boots):
    path = tmp_path / "prop.bin"
    if path.exists():
        path.unlink()
    appended = []
    for b, events in enumerate(boots):
        log = EventLog(str(path), capacity=capacity, cache=cache)
        log.load()
        assert log.next_seq == len(appended)
        assert log.boot == (appended[-1][1] + 1 if appended else 0)
        for code, value, t in events:
            seq = log.append(code, value, t)
            appended.append((seq, log.boot, t, code, value))
    re = EventLog(str(path), capacity=capacity, cache=cache)
    re.load()
    n = len(appended)
    keep = appended[n - min(n, capacity):]
    assert re.count() == len(keep)
    assert re.next_seq == n
    assert re.read(0, capacity) == keep
    assert newest_all(re) == keep[::-1][:cache]


# -- MicroPython -------------------------------------------------------------------------

def test_runs_under_micropython(micropython, tmp_path):
    proc = run_mpy(micropython, "mpy_eventlog.py", str(tmp_path))
    assert "OK" in proc.stdout.split()
