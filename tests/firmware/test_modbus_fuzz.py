"""Fuzz: 100,000 random and mutated frames at the Modbus slave -- reads and
FC06/FC16 writes, valid, truncated, bent, with huge quantities, byte counts
that do not match, broadcasts. It never crashes or hangs, never answers what
it must not answer (another address, a broadcast, a frame it was not sent),
and answers a valid request correctly afterwards."""
import random
import struct
import time

import pytest

from test_modbus_rtu import (ADDR, Rig, crc_ok, expected_exc, expected_reply, read_req, with_crc, write1_req,
                             writen_reply, writen_req)

FRAMES = 100_000
CHECK_EVERY = 5000  # a clean valid exchange this often: the slave is not stuck


def good_frame(rng):
    """A valid request for us: a read, FC06, FC16 of 3 or of 1..123 registers."""
    kind = rng.randrange(4)
    if kind == 0:
        return read_req(ADDR, 4, 0, 10)
    if kind == 1:
        return write1_req(ADDR, rng.randrange(200), rng.randrange(0x10000))
    if kind == 2:
        return writen_req(ADDR, rng.randrange(0, 200 - 3), [rng.randrange(0x8000) for _ in range(3)])
    n = rng.randrange(1, 124)
    v = rng.randrange(0x10000)
    return writen_req(ADDR, rng.randrange(0, 77), [(v + 97 * i) & 0xFFFF for i in range(n)])


def bad_write(rng, addr):
    """A write with a valid CRC and a bad header: huge or zero quantity, byte
    count that does not match, short, start + quantity past 0xFFFF."""
    kind = rng.randrange(6)
    start = rng.randrange(0x10000)
    if kind == 0:  # huge quantity, a little data
        qty = rng.choice((124, 125, 0x7FFF, 0xFFFF, rng.randrange(124, 0x10000)))
        k = rng.randrange(0, 8)
        return writen_req(addr, start, [], qty=qty, nbytes=2 * k, data=bytes(2 * k))
    if kind == 1:  # quantity 0
        return writen_req(addr, start, [], qty=0, nbytes=0, data=b"")
    if kind == 2:  # byte count mismatch (the data matches the byte count, the quantity does not)
        qty = rng.randrange(1, 124)
        nb = rng.choice([b for b in (2 * qty - 2, 2 * qty + 2, 2 * qty - 1, 2 * qty + 1, qty) if 0 <= b <= 246
                         and b != 2 * qty] or [0])
        return writen_req(addr, start, [], qty=qty, nbytes=nb, data=bytes(rng.randrange(256) for _ in range(nb)))
    if kind == 3:  # past the end of the address space
        qty = rng.randrange(2, 124)
        start = rng.randrange(0x10000 - qty + 1, 0x10000)
        return writen_req(addr, start, [1] * qty)
    if kind == 4:  # short FC06 / FC16 frames (ended by the silence)
        fc = rng.choice((6, 16))
        return with_crc(bytes((addr, fc)) + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 4))))
    # a value the FakeBank refuses (above 0x7FFF), or an unmapped register
    if rng.random() < 0.5:
        return write1_req(addr, rng.choice((rng.randrange(200), rng.randrange(200, 0x10000))), 0x8000 | rng.randrange(0x8000))
    return writen_req(addr, rng.randrange(190, 0x1000), [1, 2, 3])


def mutated(rng, good):
    """A valid request bent in one of the ways a noisy bus bends frames."""
    f = bytearray(good)
    kind = rng.randrange(11)
    if kind == 0:  # truncated
        return bytes(f[:rng.randrange(len(f))])
    if kind == 1:  # one bit flipped
        i = rng.randrange(len(f))
        f[i] ^= 1 << rng.randrange(8)
        return bytes(f)
    if kind == 2:  # garbage glued in front
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))) + bytes(f)
    if kind == 3:  # an illegal function with a valid CRC
        return with_crc(bytes((ADDR, rng.choice((0x07, 0x09, 0x14, 0x30, 0x7F, 0x80, 0xFF)), 0, 0)))
    if kind == 4:  # a huge read quantity with a valid CRC
        return with_crc(bytes((ADDR, rng.choice((3, 4)), 0, 0, rng.randrange(126, 256), rng.randrange(256))))
    if kind == 5:  # random bytes of random length
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    if kind == 6:  # a write with a bad header, for us or broadcast
        return bad_write(rng, rng.choice((ADDR, ADDR, 0)))
    if kind == 7:  # a valid write, broadcast
        f[0] = 0
        return with_crc(bytes(f[:-2]))
    if kind == 8:  # a valid frame for another slave
        f[0] = rng.choice((1, 2, ADDR + 1, 247, 248, 255))
        return with_crc(bytes(f[:-2]))
    if kind == 9:  # a byte dropped from the middle (the length field now lies)
        i = rng.randrange(1, len(f) - 1)
        return bytes(f[:i] + f[i + 1:])
    return bytes(f)  # the good frame itself


def check_reply(window, w):
    """A reply goes to our address with a valid CRC, and is an answer to a
    request for our address that is in the bytes just sent: an FC06 reply is
    the request itself, an FC16 reply repeats its first six bytes, an
    exception names a function code we were sent (0x80 and up: itself)."""
    assert w[0] == ADDR and crc_ok(w), w.hex()
    fc = w[1]
    if fc == 6:
        assert len(w) == 8 and w in window, w.hex()
    elif fc == 16:
        assert len(w) == 8 and w[:6] in window, w.hex()
    elif fc & 0x80:
        assert len(w) == 5 and w[2] in (1, 2, 3, 4), w.hex()
        assert bytes((ADDR, fc & 0x7F)) in window or bytes((ADDR, fc)) in window, w.hex()


@pytest.mark.slow
def test_a_hundred_thousand_bad_frames(capsys):
    rng = random.Random(2026)
    rig = Rig()
    t0 = time.process_time()  # CPU time: the suite shares the cores
    answered = 0
    window = b""
    checks = 0
    k = 0
    while k < FRAMES:
        if k and k % CHECK_EVERY == 0:
            # a clean exchange after the bus went quiet: answered, and right
            rig.silence()
            rig.silence()
            for w in rig.port.writes:
                check_reply(window, w)
            rig.port.writes = []
            value = rng.randrange(0x8000)
            req = write1_req(ADDR, 123, value)
            assert rig.transact(req) == [req]
            assert rig.transact(read_req(ADDR, 3, 123, 1)) == [expected_reply(ADDR, 3, [value])]
            window = b""
            checks += 1
            k += 2
            continue
        good = good_frame(rng)
        r = rng.random()
        if r < 0.80:
            frame = mutated(rng, good)
        elif r < 0.90:
            frame = read_req(rng.choice((0, 2, 99, 247)), 4, 0, 2)
        else:
            frame = good
        window = window[-600:] + frame
        rig.port.feed(frame)
        rig.slave.poll(rig.now)
        # mostly the bus's silence between frames, sometimes none (glued on)
        rig.now += rng.choice((0, 1, rig.slave.t35_ms, rig.slave.t35_ms))
        rig.slave.poll(rig.now)
        for w in rig.port.writes:
            check_reply(window, w)
            answered += 1
        rig.port.writes = []
        k += 1
    wall = time.process_time() - t0
    rig.silence()
    rig.silence()
    rig.port.writes = []
    regs = rig.bank.regs
    assert rig.transact(read_req(ADDR, 4, 0, 10)) == [expected_reply(ADDR, 4, [regs[4][a] for a in range(10)])]
    assert rig.transact(writen_req(ADDR, 5, [0x0102, 0x0304])) == [writen_reply(ADDR, 5, 2)]
    assert rig.transact(read_req(ADDR, 3, 4, 3)) == [expected_reply(ADDR, 3, [regs[3][4], 0x0102, 0x0304])]
    assert checks == FRAMES // CHECK_EVERY - 1
    with capsys.disabled():
        print("\n%d fuzz frames in %.1f s of CPU, %d legal replies, %d CRC errors counted, %d bank writes"
              % (FRAMES, wall, answered, rig.slave.crc_errors, len(rig.bank.writes)))
    assert answered > 10_000
    assert wall < 60


def test_never_answers_other_addresses_or_broadcasts():
    rng = random.Random(7)
    rig = Rig()
    for _ in range(10_000):
        addr = rng.choice([0] + [a for a in range(1, 248) if a != ADDR])
        fc = rng.choice((3, 4, 6, 8, 16, 0x11, 0x2B))
        body = bytes((addr, fc)) + bytes(rng.randrange(256) for _ in range(4))
        assert rig.transact(with_crc(body)) == []
    assert rig.transact(read_req(ADDR, 3, 0, 1)) == [expected_reply(ADDR, 3, [rig.bank.regs[3][0]])]


@pytest.mark.slow
def test_broadcast_writes_never_answered():
    """Broadcast FC06/FC16 of every kind -- valid, bad header, refused by the
    bank, bent -- never produce a reply; the valid ones reach the bank with
    broadcast=True, and each one the slave took is a no-response."""
    rng = random.Random(11)
    rig = Rig()
    s = rig.slave
    sent = 0
    for i in range(20_000):
        kind = rng.randrange(4)
        if kind == 0:
            frame = write1_req(0, rng.randrange(0x10000), rng.randrange(0x10000))
        elif kind == 1:
            n = rng.randrange(1, 124)
            frame = writen_req(0, rng.randrange(0x10000 - n + 1), [rng.randrange(0x10000) for _ in range(n)])
        elif kind == 2:
            frame = bad_write(rng, 0)
        else:
            frame = mutated(rng, write1_req(0, rng.randrange(200), rng.randrange(0x8000)))
            if not frame or frame[0] != 0:
                frame = writen_req(0, 1, [rng.randrange(0x10000)])
        assert frame[0] == 0
        before = s.server_messages
        assert rig.transact(frame) == [], frame.hex()
        sent += s.server_messages - before
        assert all(w[2] for w in rig.bank.writes[-1:])  # a broadcast reaches the bank as one
    assert s.exceptions_sent == 0
    assert s.no_responses == s.server_messages == sent
    assert sent > 15_000
    assert rig.bank.writes and all(b for _, _, b in rig.bank.writes)
    # still a normal slave for its own address
    req = write1_req(ADDR, 1, 0x0777)
    assert rig.transact(req) == [req]
    assert rig.transact(writen_req(ADDR, 2, [0x7FFF] * 3)) == [writen_reply(ADDR, 2, 3)]
    assert rig.transact(write1_req(ADDR, 1, 0x8000)) == [expected_exc(ADDR, 6, 3)]
    assert rig.transact(read_req(ADDR, 3, 1, 4)) == [expected_reply(ADDR, 3, [0x0777] + [0x7FFF] * 3)]
    assert struct.unpack(">H", rig.transact(read_req(ADDR, 3, 1, 1))[0][3:5])[0] == 0x0777
