"""Fuzz: 100,000 random and mutated frames at the Modbus slave. It never
crashes or hangs, never answers what it must not answer, and answers a
valid request correctly afterwards."""
import random
import time

from test_modbus_rtu import ADDR, Rig, crc_ok, expected_reply, read_req, with_crc

FRAMES = 100_000


def mutated(rng, good):
    """A valid request bent in one of the ways a noisy bus bends frames."""
    f = bytearray(good)
    kind = rng.randrange(7)
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
    if kind == 4:  # a huge quantity with a valid CRC
        return with_crc(bytes((ADDR, rng.choice((3, 4)), 0, 0, rng.randrange(126, 256), rng.randrange(256))))
    if kind == 5:  # random bytes of random length
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    return bytes(f)  # the good frame itself


def legal_reply(req_addr, reply):
    """A reply may only go to our own address, carry a valid CRC, and never
    answer a broadcast or another address."""
    return reply[0] == ADDR and crc_ok(reply)


def test_a_hundred_thousand_bad_frames(capsys):
    rng = random.Random(2026)
    rig = Rig()
    good = read_req(ADDR, 4, 0, 10)
    t0 = time.monotonic()
    answered = 0
    for k in range(FRAMES):
        frame = mutated(rng, good) if rng.random() < 0.85 else read_req(rng.choice((0, 2, 99, 247)), 4, 0, 2)
        rig.port.feed(frame)
        rig.slave.poll(rig.now)
        # mostly the bus's silence between frames, sometimes none (glued on)
        rig.now += rng.choice((0, 1, rig.slave.t35_ms, rig.slave.t35_ms))
        rig.slave.poll(rig.now)
        for w in rig.port.writes:
            assert legal_reply(frame[0] if frame else None, w), (k, frame.hex(), w.hex())
            answered += 1
        rig.port.writes = []
    wall = time.monotonic() - t0
    rig.silence()
    rig.silence()
    rig.port.writes = []
    assert rig.transact(good) == [expected_reply(ADDR, 4, [rig.bank.regs[4][a] for a in range(10)])]
    with capsys.disabled():
        print("\n%d fuzz frames in %.1f s, %d legal replies, %d CRC errors counted"
              % (FRAMES, wall, answered, rig.slave.crc_errors))
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
