"""The A/B record store: a power cut at any byte of a save loses nothing."""
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from bms.store import Store, decode, encode
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
    assert proc.stdout.strip().endswith("OK")
