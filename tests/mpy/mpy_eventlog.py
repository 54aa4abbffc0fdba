# Under the MicroPython unix port: EventLog appends, reloads, wraps, skips a
# corrupt record, survives a failed write, and newest_into()/encode() allocate
# nothing. Argument: a writable temp directory. Prints "OK" or exits 1 with
# the reason. Run by tests/firmware/test_eventlog.py.
import os
import sys

import micropython

from bms.eventlog import RECORD_SIZE, EventLog, decode, encode


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def main():
    if len(sys.argv) < 2:
        fail("usage: mpy_eventlog.py TMPDIR")
    d = sys.argv[1]
    path = d + "/events.bin"

    # fresh log, first boot
    log = EventLog(path, capacity=8, cache=5)
    check(log.load() == 0, "empty log count")
    check(log.boot == 0 and log.next_seq == 0, "empty log boot/seq")
    vals = (0, -1, 2147483647, -2147483648, 12345)
    i = 0
    while i < 5:
        check(log.append(250 + i, vals[i], 100 + i) == i, "seq")
        i += 1
    check(log.write_errors == 0, "write errors on a good path")
    check(log.newest(0) == (4, 0, 104, 254, 12345), "newest(0) %r" % (log.newest(0),))
    check(log.newest(2) == (2, 0, 102, 252, 2147483647), "newest(2)")
    check(log.newest(5) is None, "newest past the cache")

    # reboot: boot increments, seq continues
    log = EventLog(path, capacity=8, cache=5)
    check(log.load() == 5, "reload count")
    check(log.boot == 1 and log.next_seq == 5, "reload boot/seq %d %d" % (log.boot, log.next_seq))
    check(log.newest(1) == (3, 0, 103, 253, -2147483648), "reload newest(1)")

    # wrap: 20 more records, the file stays capacity * 16 bytes
    i = 0
    while i < 20:
        log.append(i, -i, i)
        i += 1
    check(log.count() == 8, "count after wrap")
    check(os.stat(path)[6] == 8 * RECORD_SIZE, "file size %d" % os.stat(path)[6])
    recs = log.read(0, 100)
    check(len(recs) == 8 and recs[0][0] == 17 and recs[7][0] == 24, "read after wrap")
    check(recs[7] == (24, 1, 19, 19, -19), "last record %r" % (recs[7],))

    # corrupt one record: it is skipped, nothing crashes
    f = open(path, "r+b")
    f.seek(3 * RECORD_SIZE + 13)
    f.write(b"\x5a")
    f.close()
    log = EventLog(path, capacity=8, cache=5)
    check(log.load() == 7, "corrupt record not skipped")
    check(log.boot == 2 and log.next_seq == 25, "after corruption boot/seq")
    check(log.newest(0)[0] == 24, "newest after corruption")

    # a failed write is counted and kept in RAM
    bad = EventLog(d + "/no_such_dir/events.bin", capacity=4)
    check(bad.load() == 0, "missing file load")
    check(bad.append(7, -7, 7) == 0, "append on a bad path")
    check(bad.write_errors == 1, "write_errors %d" % bad.write_errors)
    check(bad.newest(0) == (0, 0, 7, 7, -7), "failed record not cached")

    # allocation-free paths
    out = bytearray(RECORD_SIZE)
    buf = bytearray(RECORD_SIZE)
    micropython.heap_lock()
    try:
        ok1 = log.newest_into(0, out)
        encode(buf, 1000, 3, 5000, 9, -1000)
    except MemoryError:
        micropython.heap_unlock()
        fail("newest_into/encode allocated")
    micropython.heap_unlock()
    check(ok1 and decode(out)[0] == 24, "newest_into")
    check(decode(buf) == (1000, 3, 5000, 9, -1000), "encode")
    print("OK")


main()
