# The performance bench's measurements, on the firmware side (under the
# MicroPython unix port; bench_cycle.py boots the App and calls main();
# tools/bench/perf.py compiles this file to .mpy and runs it). After
# App.start() the main loop runs as bms.app.run does
# (board.idle(app.step())), in segments of simulated ms from the env
# variable BMS_BENCH = "warm,measure,gap,peak,locked,max_cycles,max_requests":
#
# - warm: nothing measured (the SOC starts, the unlock write is logged).
# - measure: every Cycle.run() timed with time.ticks_us(), and every
#   ModbusSlave.poll() that handled a request; around each, the bytes
#   gc.mem_alloc() grew by with the collector disabled (retained bytes:
#   what the path left in the heap; a collection runs, outside the paths,
#   only when little is left) and what micropython.mem_total() grew by
#   (every heap request, blocks given back before the path returned, such
#   as large call frames, included). A path that logged an event is
#   counted apart (logging may allocate). Every other cycle runs with the
#   board link's call() in a timing wrapper: the time spent in round trips
#   to the simulator (I2C, LEDs) is measured apart, the cycle's own
#   compute is the rest. The other cycles run untouched (the as-is time).
# - gap: the loop runs unmeasured (to reach the first periodic SOC save).
# - peak: gc.collect() before each main-loop pass (step + idle), the
#   collector off during it: the heap in use after the pass is the live
#   data plus everything the pass allocated.
# - locked: the main loop with micropython.heap_lock() held.
#
# Prints its figures at the end ("BENCH k=v ...", one line per sample).
import gc
import os
import sys

import micropython
from micropython import const
from array import array
from time import ticks_diff as us_diff
from time import ticks_us

from bms.cycle import Cycle
from bms.boards import sim as S
from bms.modbus_rtu import ModbusSlave
from bms.ticks import ticks_diff  # the board clock wraps at 2**30

_cfg = [int(x) for x in (os.getenv("BMS_BENCH") or "3000,20000,0,4000,3000,100,100").split(",")]
WARM_MS, MEASURE_MS, GAP_MS, PEAK_MS, LOCKED_MS, N, NM = _cfg

mem_alloc = gc.mem_alloc
mem_total = getattr(micropython, "mem_total", None) or (lambda: 0)

# sample buffers, made before anything is measured (compact: the heap is
# the firmware's; what they take is measured and taken off the heap figures)
C_US = array("H", bytes(2 * N))  # cycle wall time, us (65535: or more)
C_BOARD = array("H", bytes(2 * N))  # of it, in the board link's round trips (65535: not wrapped)
C_EVENT = bytearray(N)  # 1: an event was logged in it
M_US = array("H", bytes(2 * NM))  # poll() that handled a request: us
M_EVENT = bytearray(NM)
_NK = const(37)
# counters and maxima
K = array("i", bytes(4 * _NK))
_CYCLES = const(0)
_POLLS = const(1)  # answered polls recorded
_PASSES = const(2)
_IDLE_POLL_MAX = const(3)  # gc.mem_alloc() growth of a poll that handled nothing, at most
_COLLECTIONS = const(4)
_LINK_US = const(5)
_RD = const(6)
_RDB = const(7)
_WR = const(8)
_WRB = const(9)
_MEASURING = const(10)
_DROPPED = const(11)
_C_MAX = const(12)  # gc.mem_alloc() growth of a cycle that logged no event, at most
_C_MAX_EV = const(13)  # ... of a cycle that logged one
_C_SUM = const(14)
_M_MAX = const(15)  # ... of an answered request (no event)
_M_MAX_EV = const(16)
_M_SUM = const(17)
_P_MAX = const(18)  # ... of a main-loop pass (step + idle) with no event
_P_MAX_EV = const(19)
_P_SUM = const(20)
_P_EV = const(21)  # passes that logged an event
_W_RD = const(22)  # I2C totals over the wrapped cycles
_W_RDB = const(23)
_W_WR = const(24)
_W_WRB = const(25)
_W_N = const(26)
_W_XFER_MAX = const(27)
_C_TOT_MAX = const(28)  # micropython.mem_total() growth of a cycle (no event), at most
_C_TOT_SUM = const(29)
_M_TOT_MAX = const(30)  # ... of an answered request (no event)
_M_TOT_SUM = const(31)
_BAL = const(32)  # measured cycles that ended with bleeding on
_PROT = const(33)  # ... with a protection active
_WARN = const(34)  # ... with a warning active
_CHG = const(35)  # ... measuring a charge current
_DSG = const(36)  # ... measuring a discharge current

_call = S._Link.call
_OP_R = S.OP_I2C_READ
_OP_W = S.OP_I2C_WRITE
_cycle = Cycle.run
_poll = ModbusSlave.poll
_app = [None, None, None]  # the app's Cycle, its ModbusSlave, its EventLog
# the measure segment runs with the collector off; a collection (outside
# the measured paths) when less than this is left
_MIN_FREE = const(12288)


def _u16(v):
    return v if v < 65535 else 65535


def timed_call(self, op, a, b, n, arg):
    """The board link's call(), timed (installed on every other measured cycle)."""
    t0 = ticks_us()
    r = _call(self, op, a, b, n, arg)
    K[_LINK_US] += us_diff(ticks_us(), t0)
    if op == _OP_R:
        K[_RD] += 1
        K[_RDB] += n
    elif op == _OP_W:
        K[_WR] += 1
        K[_WRB] += n
    return r


def timed_cycle(now):
    cy = _app[0]
    if not K[_MEASURING]:
        _cycle(cy, now)
        return
    i = K[_CYCLES]
    if i >= N:
        K[_DROPPED] += 1
        _cycle(cy, now)
        return
    log = _app[2]
    wrap = i & 1
    if wrap:
        S._Link.call = timed_call
        K[_LINK_US] = 0
        K[_RD] = 0
        K[_RDB] = 0
        K[_WR] = 0
        K[_WRB] = 0
    seq = log.next_seq
    a0 = mem_alloc()
    m0 = mem_total()
    t0 = ticks_us()
    _cycle(cy, now)
    t1 = ticks_us()
    m1 = mem_total()
    a1 = mem_alloc()
    if wrap:
        S._Link.call = _call
        C_BOARD[i] = _u16(K[_LINK_US])
        K[_W_RD] += K[_RD]
        K[_W_RDB] += K[_RDB]
        K[_W_WR] += K[_WR]
        K[_W_WRB] += K[_WRB]
        K[_W_N] += 1
        x = K[_RD] + K[_WR]
        if x > K[_W_XFER_MAX]:
            K[_W_XFER_MAX] = x
    else:
        C_BOARD[i] = 65535
    C_US[i] = _u16(us_diff(t1, t0))
    a = a1 - a0
    if log.next_seq != seq:
        C_EVENT[i] = 1
        if a > K[_C_MAX_EV]:
            K[_C_MAX_EV] = a
    else:
        C_EVENT[i] = 0
        K[_C_SUM] += a
        if a > K[_C_MAX]:
            K[_C_MAX] = a
        if not wrap:  # (the wrapper's own frames would count)
            m = m1 - m0
            K[_C_TOT_SUM] += m
            if m > K[_C_TOT_MAX]:
                K[_C_TOT_MAX] = m
    K[_CYCLES] = i + 1
    meas = cy.meas
    pr = cy.protection
    if meas.balance_mask:
        K[_BAL] += 1
    if pr.protect_flags:
        K[_PROT] += 1
    if pr.warn_flags:
        K[_WARN] += 1
    if meas.current_ma > 0:
        K[_CHG] += 1
    elif meas.current_ma < 0:
        K[_DSG] += 1


def timed_poll(now):
    mb = _app[1]
    if not K[_MEASURING]:
        return _poll(mb, now)
    log = _app[2]
    seq = log.next_seq
    a0 = mem_alloc()
    m0 = mem_total()
    t0 = ticks_us()
    r = _poll(mb, now)
    t1 = ticks_us()
    m1 = mem_total()
    a1 = mem_alloc()
    a = a1 - a0
    if r:
        i = K[_POLLS]
        if i < NM:
            M_US[i] = _u16(us_diff(t1, t0))
            K[_POLLS] = i + 1
        else:
            K[_DROPPED] += 1
        if log.next_seq != seq:
            if i < NM:
                M_EVENT[i] = 1
            if a > K[_M_MAX_EV]:
                K[_M_MAX_EV] = a
        else:
            if i < NM:
                M_EVENT[i] = 0
            K[_M_SUM] += a
            if a > K[_M_MAX]:
                K[_M_MAX] = a
            m = m1 - m0
            K[_M_TOT_SUM] += m
            if m > K[_M_TOT_MAX]:
                K[_M_TOT_MAX] = m
    elif a > K[_IDLE_POLL_MAX]:
        K[_IDLE_POLL_MAX] = a
    return r


def main(board, app, heap_total, heap_after_import, heap_after_start, boot_fw_ms):
    mb = app.modbus
    log = app.log
    _app[0] = app.cycle
    _app[1] = mb
    _app[2] = log
    # step() calls self.cycle.run(now) and self.modbus.poll(now): an instance
    # attribute (a plain function: no bound method is made) takes the call
    app.cycle.run = timed_cycle
    mb.poll = timed_poll
    gc.collect()
    # the bench's own code and buffers, now in the heap: taken off the peak
    heap_after_probe = mem_alloc()
    base = board.ticks_ms()

    def until(end):
        return ticks_diff(board.ticks_ms(), base) < end

    def run(end):
        while until(end):
            board.idle(app.step())

    def measure(end):
        gc.collect()
        gc.disable()
        K[_MEASURING] = 1
        while until(end):
            seq = log.next_seq
            a0 = mem_alloc()
            board.idle(app.step())
            a = mem_alloc() - a0
            K[_PASSES] += 1
            if log.next_seq != seq:
                K[_P_EV] += 1
                if a > K[_P_MAX_EV]:
                    K[_P_MAX_EV] = a
            else:
                K[_P_SUM] += a
                if a > K[_P_MAX]:
                    K[_P_MAX] = a
            if gc.mem_free() < _MIN_FREE:
                gc.collect()  # outside the measured paths
                K[_COLLECTIONS] += 1
        K[_MEASURING] = 0
        gc.enable()

    def peak(end):
        """(highest heap in use after a pass, highest live heap before one,
        passes, SOC saves, events)."""
        hi = 0
        live = 0
        n = 0
        saves = 0
        seq = log.next_seq
        gc.disable()
        while until(end):
            gc.collect()
            a = mem_alloc()
            if a > live:
                live = a
            saved = app.cycle.soc_saved
            board.idle(app.step())
            a = mem_alloc()
            if a > hi:
                hi = a
            if app.cycle.soc_saved != saved:
                saves += 1
            n += 1
        gc.enable()
        return hi, live, n, saves, log.next_seq - seq

    def locked(end):
        """(ok, cycles, requests, events) with the heap locked."""
        cycles = app.cycle.meas_count
        served = mb.server_messages
        seq = log.next_seq
        gc.collect()
        micropython.heap_lock()
        try:
            run(end)
            ok = 1
        except MemoryError:
            ok = 0
        micropython.heap_unlock()
        return ok, (app.cycle.meas_count - cycles) & 0xFFFF, (mb.server_messages - served) & 0xFFFF, log.next_seq - seq

    t = WARM_MS
    run(t)
    t += MEASURE_MS
    measure(t)
    t += GAP_MS
    run(t)
    t += PEAK_MS
    heap_peak, heap_live_max, peak_passes, peak_saves, peak_events = peak(t)
    t += LOCKED_MS
    lock_ok, lock_cycles, lock_requests, lock_events = locked(t)

    print("BENCH-BEGIN")
    print("BENCH heap_total=%d heap_after_import=%d heap_after_start=%d heap_after_probe=%d boot_fw_ms=%d"
          % (heap_total, heap_after_import, heap_after_start, heap_after_probe, boot_fw_ms))
    print("BENCH heap_peak_raw=%d heap_live_max_raw=%d peak_passes=%d peak_soc_saves=%d peak_events=%d"
          % (heap_peak, heap_live_max, peak_passes, peak_saves, peak_events))
    print("BENCH locked_ok=%d locked_cycles=%d locked_requests=%d locked_events=%d"
          % (lock_ok, lock_cycles, lock_requests, lock_events))
    print("BENCH cells=%d protect_flags=%d soc_started=%d balance_mask=%d"
          % (app.cycle.meas.cells, app.cycle.protection.protect_flags, 1 if app.cycle.soc_started else 0, app.cycle.meas.balance_mask))
    print("BENCH counters=" + ",".join([str(K[i]) for i in range(_NK)]))
    for i in range(K[_CYCLES]):
        print("C", C_US[i], C_BOARD[i], C_EVENT[i])
    for i in range(K[_POLLS]):
        print("M", M_US[i], M_EVENT[i])
    print("BENCH-END")
    sys.exit(0)
