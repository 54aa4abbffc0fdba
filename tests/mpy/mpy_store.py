# The A/B store on MicroPython's file API.
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
print("OK")
