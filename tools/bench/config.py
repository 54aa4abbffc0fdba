"""The performance bench's fixed choices (bench.perf): its paths, the
simulated pack, the heap targets, the runs' lengths (MODES, the short
scenario, the simulated DAY) and the targets the figures are checked
against."""
import os

from bms.afe import WINDOW_MS
from bms_sim.target import TWIN_HEAP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPY_TESTS = os.path.join(ROOT, "tests", "mpy")
SCRIPTS = os.path.join(ROOT, "build", "mpy-tests")  # tests/mpy folded as the firmware is
BENCH_MAIN = os.path.join(SCRIPTS, "bench_cycle.py")
PROBE_SRC = os.path.join(SCRIPTS, "bench_probe.py")
PROBE_DIR = os.path.join(ROOT, "build", "bench")
DEFAULT_OUT = os.path.join(ROOT, "build", "bench.json")

# The packs. Every figure is measured on the bq76940's 15S NMC pack; the
# cycle, allocation and heap figures again on a 16S LFP home-storage pack on
# a bq76952 (issue 18), beside them. cv_mv: the charger's CC-CV voltage per
# cell in the cycle run; full_mv: the day's charge, to the cell's full.
# The LFP pack starts at the top of its plateau (99 %, about 3.37 V at
# rest), where its cells pass bal_start_mv (3.4 V) once charged and a 40 mV
# spread is a real imbalance.
PACK = {"key": "bq76940", "title": "bq76940, 15S NMC, 20 Ah", "afe": "bq769x0", "cells": 15, "chemistry": "nmc",
        "capacity_mah": 20000, "shunt_uohm": 500, "soc_pct": 75.0, "spread_mv": 40, "cv_mv": 4200, "full_mv": 4150}
PACK_952 = {"key": "bq76952", "title": "bq76952, 16S LFP, 20 Ah", "afe": "bq76952", "cells": 16,
            "chemistry": "lfp", "capacity_mah": 20000, "shunt_uohm": 500, "soc_pct": 99.0, "spread_mv": 40,
            "cv_mv": 3550, "full_mv": 3450}
CELLS = PACK["cells"]
CHEMISTRY = PACK["chemistry"]
CAPACITY_MAH = PACK["capacity_mah"]
SHUNT_UOHM = PACK["shunt_uohm"]
# the ESP32 translation: the unix port on a PC runs MicroPython 60-100x
# faster than an ESP32 (pystone ~110,000 vs ~1,700); estimates use 80x
ESP32_FACTOR = 80
PERIOD_MS = WINDOW_MS  # the control cycle's period (the AFE's coulomb-counter window)
# The heap targets, on the twin with the firmware frozen: every end-to-end
# test runs at the ESP32's initial heap (bms_sim.target TWIN_HEAP, 56K), and
# a simulated day must run in DAY_HEAP.
SMALL_HEAP = TWIN_HEAP
DAY_HEAP = "40K"
# The short scenario the heap bisection runs, in simulated ms (fits_run):
# a board's first boot (the provisioned bms.cfg taken in), Modbus requests
# every 300 ms, two parameter writes saved to flash (events logged), the
# first periodic SOC and lifetime save (600 s after the SOC starts), then a
# restart by command (the state saved again) and the second boot, from the
# saved records, answering again. --quick: the same less the SOC save.
SHORT_MS = 640000
QUICK_SHORT_MS = 10000
# bisection range and step (bytes) per target
HEAP_RANGE = {"frozen": (12 * 1024, 64 * 1024), "mpy": (40 * 1024, 160 * 1024), "pip64": (64 * 1024, 320 * 1024)}
HEAP_STEP = 1024
QUICK_HEAP_STEP = 8192

# targets (the issue's)
CYCLE_P99_MAX_US = 1500  # x 80 leaves half of the 250 ms period free
TURN_P50_MAX_MS = 2.0
TURN_P99_MAX_MS = 10.0

# A simulated day for the 56wK run, in phases: (start s, load mA, charger
# mA, Modbus polled). The pack (75 % at the start) is used, rests (the
# firmware goes to low-power mode when nobody polls it), charges, rests,
# is used again: SOC saves, events, lifetime records and power-mode changes
# all happen with the heap at its smallest.
DAY = ((0, 6000, 0, True), (3600, 0, 0, False), (3 * 3600, 0, 4000, True), (7 * 3600, 0, 0, False),
       (12 * 3600, 3000, 0, True), (16 * 3600, 0, 0, False))
DAY_MS = 24 * 3600 * 1000

MODES = {
    # simulated ms for the cycle run's segments (bench_probe.py): the full
    # run's peak segment spans the first periodic SOC save (600 s after the
    # SOC starts); the unlock (written at 1 s, again as the peak segment
    # begins) lasts 300 s, so the measure segment's writes are accepted
    "full": {"warm_ms": 3000, "measure_ms": 200000, "gap_ms": 387000, "peak_ms": 20000, "locked_ms": 10000,
             "request_every_ms": 230, "realtime_ms": 15000, "boots": 4,
             "turn_requests": 500, "fits_ms": DAY_MS},
    "quick": {"warm_ms": 2000, "measure_ms": 25000, "gap_ms": 0, "peak_ms": 5000, "locked_ms": 3000,
              "request_every_ms": 230, "realtime_ms": 0, "boots": 0,
              "turn_requests": 40, "fits_ms": 2000},
}


class BenchError(RuntimeError):
    pass
