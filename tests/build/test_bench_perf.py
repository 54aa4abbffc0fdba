"""The performance bench (tools/bench/perf.py, `make bench`) in its quick
mode: it runs, and every figure in its JSON is there and measured."""
import json
import os
import subprocess
import sys

import pytest

from bench import perf, report
from conftest import ROOT

REQUIRED = ("cycle_alloc_bytes", "modbus_alloc_bytes", "cycle_us_p50", "cycle_us_p99", "modbus_turnaround_ms_p50",
            "modbus_turnaround_ms_p99", "heap_after_import_bytes", "heap_after_start_bytes", "heap_peak_bytes",
            "heap_min_frozen_bytes", "heap_min_day_frozen_bytes", "fits_day_40k", "margin_day_40k_bytes",
            "margin_e2e_56k_bytes", "headroom_40k_peak_bytes", "heap_min_mpy_bytes", "boot_ms", "heap_size_used",
            "machine")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from conftest import firmware_target

    t = firmware_target()
    if t.kind != "twin":
        pytest.skip("make bench measures the ESP32 twin, which cannot be built here: " + t.why)
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench.perf", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out) as f:
        return json.load(f), proc.stdout


def test_every_key_with_a_measured_value_and_the_doc_from_them(quick, tmp_path):
    # one test for both: the quick bench takes ~25 s, run once (xdist would run a
    # module fixture once per worker that gets one of its tests)
    r, stdout = quick
    check_the_doc_section_comes_from_the_json(r, tmp_path)
    for k in REQUIRED:
        assert k in r, k
    assert r["quick"] is True
    # the steady-state paths allocate nothing (tests/firmware/test_heap_locked_cycle.py proves it too)
    assert r["cycle_alloc_bytes"] == 0
    assert r["modbus_alloc_bytes"] == 0
    assert r["loop_alloc_bytes"] == 0
    assert r["heap_locked_ok"] is True and r["heap_locked_cycles"] > 0 and r["heap_locked_requests"] > 0
    # times: positive, ordered
    assert 0 < r["cycle_us_p50"] <= r["cycle_us_p99"] <= r["cycle_us_max"]
    assert 0 < r["cycle_compute_us_p50"] <= r["cycle_wrapped_us_p50"]
    assert r["cycle_board_us_p50"] > 0
    assert r["cycle_us_samples"] >= 20 and r["cycle_compute_samples"] >= 20
    assert 0 < r["modbus_turnaround_ms_p50"] <= r["modbus_turnaround_ms_p99"] <= r["modbus_turnaround_ms_max"]
    assert r["modbus_turnaround_failures"] == 0 and r["modbus_turnaround_requests"] >= 30
    assert r["boot_ms"] > 0 and r["boot_fw_ms"] >= 0
    assert r["esp32_cycle_ms_p99_est"] == round(r["cycle_us_p99"] * perf.ESP32_FACTOR / 1000.0, 1)
    # the heap, on the twin with the firmware frozen: the figures within the probe's heap
    assert "ESP32 twin" in r["target"] and "frozen" in r["target"]
    assert r["heap_size_used"] == perf.PROBE_HEAP and r["heap_small"] == "56K" and r["heap_day"] == "40K"
    total = r["heap_total_bytes"]
    assert 0 < r["heap_after_import_bytes"] < r["heap_after_start_bytes"] < total
    assert r["heap_after_import_bytes"] < r["heap_peak_bytes"] < total
    assert r["heap_live_max_bytes"] <= r["heap_peak_bytes"]
    assert r["bench_probe_bytes"] > 0
    # the targets and their margins, measured: the smallest heaps are below the targets, the
    # frozen firmware needs less than its .mpy files, which need less on 32 bits than on 64
    assert r["fits_day_40k"] is True, r["fits_day_40k_detail"]
    assert r["heap_min_frozen_bytes"] <= r["heap_min_day_frozen_bytes"] < r["heap_day_total_bytes"]
    assert r["margin_day_40k_bytes"] == 40 * 1024 - r["heap_min_day_frozen_bytes"] > 0
    assert r["margin_e2e_56k_bytes"] == 56 * 1024 - r["heap_min_day_frozen_bytes"] > 0
    assert r["heap_min_frozen_bytes"] < r["heap_min_mpy_bytes"] < r["heap_min_64bit_mpy_bytes"]
    assert r["heap_peak_bytes"] < r["heap_min_frozen_bytes"]
    assert r["headroom_40k_peak_bytes"] == r["heap_day_total_bytes"] - r["heap_peak_bytes"] > 0
    # the bisected scenario ran whole at the smallest heap: the restart and the second boot included;
    # a step below, the heap ran out
    assert "restarted by command" in r["heap_min_frozen_detail"] and "after the restart" in r["heap_min_frozen_detail"]
    assert r["heap_min_frozen_below"] is None or "MemoryError" in r["heap_min_frozen_below"]
    assert r["heap_min_frozen_runs"] >= 2 and r["heap_runs_wall_s"]["all"] > 0
    # one firmware measured throughout: the twin's digest of the copy the bench made
    assert len(r["firmware_digest"]) == 64 and r["firmware_changed_during_run"] in (True, False)
    # the 64-bit pip port beside it: the same run, twice the object sizes and the bytecode in the heap
    b = r["bits64"]
    assert b["cycle_alloc_bytes"] == 0 and b["modbus_alloc_bytes"] == 0
    assert b["heap_after_start_bytes"] > 2 * r["heap_after_start_bytes"]
    # the bq76952's 16S LFP pack beside it (issue 18): the same run, the same targets
    b9 = r["bq76952"]
    assert b9["pack"] == perf.PACK_952 and b9["scenario"]["cells"] == 16
    assert b9["cycle_alloc_bytes"] == 0 and b9["modbus_alloc_bytes"] == 0 and b9["loop_alloc_bytes"] == 0
    assert b9["heap_locked_ok"] is True and b9["heap_locked_cycles"] > 0
    assert 0 < b9["cycle_compute_us_p50"] <= b9["cycle_compute_us_p99"]
    assert b9["heap_after_import_bytes"] < b9["heap_after_start_bytes"] < b9["heap_peak_bytes"]
    assert b9["heap_min_frozen_bytes"] and "after the restart" in b9["heap_min_frozen_detail"]
    assert b9["fits_day_40k"] is True, b9["fits_day_40k_detail"]
    assert b9["margin_e2e_56k_bytes"] == 56 * 1024 - b9["heap_min_frozen_bytes"] > 0
    s9 = b9["scenario"]
    assert s9["balancing_cycles"] > 0 and s9["charging_cycles"] > 0 and s9["discharging_cycles"] > 0
    assert s9["valid_replies"] == s9["requests_sent"] > 0
    # its checks that are not times (a loaded machine stretches those; make bench judges them)
    for k in ("cycle_alloc_zero", "modbus_alloc_zero", "heap_locked_ok", "fits_day_40k", "e2e_56k_has_margin"):
        assert r["checks"]["bq76952_" + k] is True, k
    assert "bq76952_esp32_half_period_free" in r["checks"] and "bq76952_cycle_p99_within_1500us" in r["checks"]
    assert report.packs_title(r) in stdout
    # the scenario did what it is there for
    s = r["scenario"]
    assert s["cells"] == perf.CELLS and s["soc_started"]
    assert s["balancing_cycles"] > 0 and s["charging_cycles"] > 0 and s["discharging_cycles"] > 0
    assert s["valid_replies"] == s["requests_sent"] > 0
    assert r["modbus_requests_measured"] > 0 and r["cycles_measured"] > 0 and r["samples_dropped"] == 0
    # the machine
    m = r["machine"]
    assert m["cpu_model"] and m["python"] and "MicroPython" in m["micropython"] and "MicroPython" in m["micropython_64bit"]
    # the table
    assert "cycle_us_p99" in stdout and "fits_day_40k" in stdout and "64-bit heap_peak_bytes" in stdout
    assert report.TWIN_TITLE in stdout and report.BITS64_TITLE in stdout


def check_the_doc_section_comes_from_the_json(r, tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# x\n\nbefore\n\n%s\nOLD-SECTION\n%s\n\nafter\n" % (report.DOC_BEGIN, report.DOC_END))
    text = perf.write_doc(r, str(doc))
    assert text.startswith("# x\n\nbefore\n\n" + report.DOC_BEGIN) and text.endswith(report.DOC_END + "\n\nafter\n")
    assert "OLD-SECTION" not in text
    assert "| `cycle_us_p99` | %d us |" % r["cycle_us_p99"] in text
    assert "| `heap_peak_bytes` | %d B |" % r["heap_peak_bytes"] in text
    assert "| `heap_peak_bytes` | %d B | %d B | (frozen) |" % (r["heap_peak_bytes"], r["bq76952"]["heap_peak_bytes"]) in text
    assert r["machine"]["cpu_model"] in text
    # a quick run is not written into the real doc
    out = tmp_path / "quick.json"
    out.write_text(json.dumps(r))
    assert perf.main(["--write-doc", "--out", str(out), "--doc", str(doc)]) == 2


def test_the_doc_has_its_generated_section():
    with open(perf.DOC) as f:
        text = f.read()
    assert text.count(report.DOC_BEGIN) == 1 and text.count(report.DOC_END) == 1
    section = text.split(report.DOC_BEGIN, 1)[1].split(report.DOC_END, 1)[0]
    assert "Measured by `make bench`" in section
    for k in REQUIRED[:-1]:
        assert "`%s`" % k in section, k


def test_bench_target_in_makefile():
    with open(os.path.join(ROOT, "Makefile")) as f:
        mk = f.read()
    assert "\nbench: setup\n" in mk and "-m bench.perf" in mk


def test_heap_map_lists_every_module_and_adds_up():
    from bench import heapmap
    from bms_sim.target import find_target

    rows, total = heapmap.measure()  # the twin's .mpy files (or the 64-bit port's where no twin)
    assert [m for m, _ in rows] == list(heapmap.MODULES)
    assert sum(b for _, b in rows) == total
    assert total > 30000 and all(b >= 0 for _, b in rows)
    twin = find_target()
    if twin.kind == "twin":
        # frozen, the bytecode stays out of the heap: a fraction of the .mpy figure
        rows_f, total_f = heapmap.measure(target=twin)
        assert [m for m, _ in rows_f] == list(heapmap.MODULES) and 0 < total_f < total // 2
