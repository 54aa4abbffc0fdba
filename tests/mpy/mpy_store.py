# The A/B store on MicroPython's file API.
import gc
import sys

from bms.store import Store

base = sys.argv[1]
s = Store(base, "p")
assert s.load() is None
assert s.save(1, b"one")
assert s.save(1, b"two")
assert s.save(1, b"two")
t = Store(base, "p")
r = t.load()
if r != (1, b"two") or t.seq != 2:
    print("FAIL", r, t.seq)
    sys.exit(1)

# A save needs little heap: the record is never built whole and the store
# keeps no copy of the payload, so a save of a parameter-set-sized payload
# allocates the file object and no more (building the record and copying
# the payload took 1,552 B for these 696 bytes on the twin); an unchanged
# one is compared with flash through a small chunk and writes nothing.
buf = bytearray(696)
assert s.save(1, buf)
most = 0
k = 0
while k < 3:
    buf[k] = k + 1
    gc.collect()
    before = gc.mem_alloc()
    ok = s.save(1, buf)
    used = gc.mem_alloc() - before
    if not ok:
        print("FAIL save", k)
        sys.exit(1)
    most = used if used > most else most
    k += 1
if most > 400:
    print("FAIL a save allocated", most, "B")
    sys.exit(1)
if Store(base, "p").load() != (1, buf):
    print("FAIL reload")
    sys.exit(1)
seq = s.seq
gc.collect()
before = gc.mem_alloc()
ok = s.save(1, buf)  # unchanged: compared with flash, not written
same = gc.mem_alloc() - before
if not ok or s.seq != seq or same > 400:
    print("FAIL unchanged save", ok, s.seq, seq, same)
    sys.exit(1)
buf[695] ^= 1
if not s.save(1, buf) or s.seq != seq + 1:
    print("FAIL changed last byte")
    sys.exit(1)
print("OK save_heap=%d same_heap=%d" % (most, same))
