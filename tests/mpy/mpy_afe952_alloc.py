# Under MicroPython (the twin): the bq76952 driver's read(), set_fets() and
# set_balancing() allocate nothing. The chip's model runs on CPython only, so
# tests/firmware/test_afe_bq76952.py records every transfer between the
# driver and the model; here a bus replays the chip's answers byte for byte
# and checks that the driver writes what it wrote there. configure() and
# set_protection() run unlocked (start-up), then the recorded cycles run with
# the heap locked: any allocation raises MemoryError.
#
# argv: recording file, crc (1/0), cells mask, shunt uOhm, locked calls.
# Prints "OK ..." or exits 1 with the reason.
import sys

import binascii
import micropython

from bms.afe.bq76952 import Bq76952
from bms.measurements import Measurements


class Replay:
    def __init__(self, items):
        self.items = items
        self.i = 0
        self.bad = 0

    def readfrom_mem_into(self, addr, reg, buf):
        kind, r, data = self.items[self.i]
        self.i += 1
        n = len(buf)
        if kind != 0 or r != reg or len(data) != n:
            self.bad += 1
            return
        j = 0
        while j < n:
            buf[j] = data[j]
            j += 1

    def writeto_mem(self, addr, reg, buf):
        kind, r, data = self.items[self.i]
        self.i += 1
        n = len(buf)
        if kind != 1 or r != reg or len(data) != n:
            self.bad += 1
            return
        j = 0
        while j < n:
            if buf[j] != data[j]:
                self.bad += 1
                return
            j += 1


def load(path):
    items = []
    with open(path) as f:
        for line in f:
            kind, reg, data = line.split()
            items.append((0 if kind == "r" else 1, int(reg, 16), binascii.unhexlify(data)))
    return items


path, crc, mask, shunt, calls = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
bus = Replay(load(path))
afe = Bq76952(bus, mask, shunt, crc=crc)
if not afe.configure() or not afe.set_protection(3650, 2, 2500, 2, 100000, 320, 200000, 200, 50000, 100):
    print("FAIL: start-up did not replay (transfer %d, %d mismatches)" % (bus.i, bus.bad))
    sys.exit(1)
meas = Measurements(3)
masks = (0b0101, 0b1010, 0)
results = [0, 0, 0]
counts = [0, 0, 0]
micropython.heap_lock()
try:
    k = 0
    for c in calls:
        if c == "r":
            results[0] |= afe.read(meas)
            counts[0] += 1
        elif c == "f":
            results[1] |= 1 if afe.set_fets(True, True) < 0 else 0
            results[1] |= 1 if afe.set_fets(False, True) < 0 else 0
            counts[1] += 2
        else:
            results[2] |= 1 if afe.set_balancing(masks[k % 3]) < 0 else 0
            k += 1
            counts[2] += 1
    err = None
except MemoryError as e:
    err = e
micropython.heap_unlock()
if err is not None:
    print("FAIL: allocation with the heap locked:", repr(err))
    sys.print_exception(err)
    sys.exit(1)
if bus.bad or bus.i != len(bus.items):
    print("FAIL: the driver did something else than on CPython (%d mismatches, %d of %d transfers)"
          % (bus.bad, bus.i, len(bus.items)))
    sys.exit(1)
if results != [0, 0, 0]:
    print("FAIL: a call failed:", results)
    sys.exit(1)
print("OK reads=%d set_fets=%d set_balancing=%d transfers=%d cc_raw=%d" % (counts[0], counts[1], counts[2],
                                                                           bus.i, meas.cc_raw))
