"""The performance bench (tools/bench/perf.py, `make bench`) in its quick
mode: it runs, and every figure in its JSON is there and measured."""
import json
import os
import subprocess
import sys

import pytest

from bench import perf
from bms_sim.link import DEFAULT_HEAP
from conftest import ROOT

REQUIRED = ("cycle_alloc_bytes", "modbus_alloc_bytes", "cycle_us_p50", "cycle_us_p99", "modbus_turnaround_ms_p50",
            "modbus_turnaround_ms_p99", "heap_after_import_bytes", "heap_peak_bytes", "boot_ms", "fits_56wk",
            "heap_size_used", "machine")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench.perf", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(out) as f:
        return json.load(f), proc.stdout


def test_every_key_with_a_measured_value(quick):
    r, stdout = quick
    for k in REQUIRED:
        assert k in r, k
    assert r["quick"] is True
    # the steady-state paths allocate nothing (tests/test_heap_locked_cycle.py proves it too)
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
    # the heap: at the simulator's default size, the firmware's figures within it
    assert r["heap_size_used"] == perf.PROBE_HEAP and r["heap_small"] == DEFAULT_HEAP == "56wK"
    total = r["heap_total_bytes"]
    assert 0 < r["heap_after_import_bytes"] < r["heap_after_start_bytes"] < total
    assert r["heap_after_import_bytes"] < r["heap_peak_bytes"] < total
    assert r["heap_live_max_bytes"] <= r["heap_peak_bytes"]
    assert r["bench_probe_bytes"] > 0
    assert r["fits_56wk"] is True, r["fits_56wk_detail"]
    # the scenario did what it is there for
    s = r["scenario"]
    assert s["cells"] == perf.CELLS and s["soc_started"]
    assert s["balancing_cycles"] > 0 and s["charging_cycles"] > 0 and s["discharging_cycles"] > 0
    assert s["valid_replies"] == s["requests_sent"] > 0
    assert r["modbus_requests_measured"] > 0 and r["cycles_measured"] > 0 and r["samples_dropped"] == 0
    # the machine
    m = r["machine"]
    assert m["cpu_model"] and m["python"] and "MicroPython" in m["micropython"]
    # the table
    assert "cycle_us_p99" in stdout and "fits_56wk" in stdout


def test_the_doc_section_comes_from_the_json(quick, tmp_path):
    r, _ = quick
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# x\n\nbefore\n\n%s\nold\n%s\n\nafter\n" % (perf.DOC_BEGIN, perf.DOC_END))
    text = perf.write_doc(r, str(doc))
    assert text.startswith("# x\n\nbefore\n\n" + perf.DOC_BEGIN) and text.endswith(perf.DOC_END + "\n\nafter\n")
    assert "old" not in text
    assert "| `cycle_us_p99` | %d us |" % r["cycle_us_p99"] in text
    assert "| `heap_peak_bytes` | %d B |" % r["heap_peak_bytes"] in text
    assert r["machine"]["cpu_model"] in text
    # a quick run is not written into the real doc
    out = tmp_path / "quick.json"
    out.write_text(json.dumps(r))
    assert perf.main(["--write-doc", "--out", str(out), "--doc", str(doc)]) == 2


def test_the_doc_has_its_generated_section():
    with open(perf.DOC) as f:
        text = f.read()
    assert text.count(perf.DOC_BEGIN) == 1 and text.count(perf.DOC_END) == 1
    section = text.split(perf.DOC_BEGIN, 1)[1].split(perf.DOC_END, 1)[0]
    assert "Measured by `make bench`" in section
    for k in REQUIRED[:-1]:
        assert "`%s`" % k in section, k


def test_bench_target_in_makefile():
    with open(os.path.join(ROOT, "Makefile")) as f:
        mk = f.read()
    assert "\nbench: setup\n" in mk and "-m bench.perf" in mk


def test_heap_map_lists_every_module_and_adds_up():
    from bench import heapmap

    rows, total = heapmap.measure()
    assert [m for m, _ in rows] == list(heapmap.MODULES)
    assert sum(b for _, b in rows) == total
    assert total > 50000 and all(b >= 0 for _, b in rows)
