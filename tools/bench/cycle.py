"""Runs 1 and 2 of the bench (bench.perf): the cycle runs. bench_cycle.py
boots the real App and bench_probe.py measures its main loop from inside;
its output is parsed into the figures."""
import os

from bench.config import BENCH_MAIN, PACK, PERIOD_MS, BenchError
from bench.frames import LED_BRIGHTNESS, MIX, UNLOCK, frame, parse_replies
from bench.harness import compile_probe, log_error, make_world, with_env
from bms_sim.server import SimServer


def parse_probe(text):
    """The probe's output: (summary dict, cycles [(us, board_us or None, event)],
    requests [(us, event)])."""
    if "BENCH-END" not in text:
        raise BenchError("the bench firmware did not finish:\n" + "\n".join(text.splitlines()[-30:]))
    body = text.split("BENCH-BEGIN", 1)[1].split("BENCH-END", 1)[0]
    summary = {}
    cycles = []
    requests = []
    for line in body.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "BENCH":
            for kv in f[1:]:
                k, v = kv.split("=", 1)
                summary[k] = [int(x) for x in v.split(",")] if "," in v else int(v)
        elif f[0] == "C":
            us, board, ev = int(f[1]), int(f[2]), int(f[3])
            cycles.append((us, None if board == 65535 else board, ev))
        elif f[0] == "M":
            requests.append((int(f[1]), int(f[2])))
    return summary, cycles, requests


# the probe's counters (bench_probe.py K[])
COUNTERS = ("cycles", "polls", "passes", "idle_poll_alloc_max", "collections", "link_us", "rd", "rdb",
            "wr", "wrb", "measuring", "dropped", "cycle_alloc_max", "cycle_alloc_max_event",
            "cycle_alloc_sum", "request_alloc_max", "request_alloc_max_event", "request_alloc_sum",
            "pass_alloc_max", "pass_alloc_max_event", "pass_alloc_sum", "pass_events", "i2c_reads",
            "i2c_read_bytes", "i2c_writes", "i2c_write_bytes", "wrapped_cycles", "i2c_transfers_max",
            "cycle_transient_max", "cycle_transient_sum", "request_transient_max",
            "request_transient_sum", "balancing_cycles", "protection_cycles", "warning_cycles",
            "charging_cycles", "discharging_cycles")


def cycle_run(cfg, state, target, heap, speed, realtime=False, lib_dir=None, pack=PACK):
    """Run bench_cycle.py on the pack in state (provisioned for pack, bench.config);
    returns (summary, counters, cycles, requests, replies, requests_sent)."""
    world = make_world(pack)
    cv_mv = pack["cv_mv"]
    warm, measure, gap = cfg["warm_ms"], cfg["measure_ms"], cfg["gap_ms"]
    peak, locked = cfg["peak_ms"], cfg["locked_ms"]
    if realtime:
        warm, measure, gap, peak, locked = 1000, cfg["realtime_ms"], 0, 0, 0
    # sample buffers sized for the measure segment: a cycle per 250 ms window,
    # a request per request_every_ms, and some room
    n_cycles = measure // PERIOD_MS + 20
    n_requests = measure // cfg["request_every_ms"] + 20
    env = {"BMS_BENCH": "%d,%d,%d,%d,%d,%d,%d" % (warm, measure, gap, peak, locked, n_cycles, n_requests),
           "BMS_BENCH_PATH": compile_probe()}
    server = SimServer(world, state, speed=speed, heap=heap, target=target, main_py=BENCH_MAIN, lib_dir=lib_dir,
                       log_path=os.path.join(state, "bench-%s.log" % ("rt" if realtime else "cycle")))
    sent = [0]
    polled = [0]
    every = cfg["request_every_ms"]
    end_ms = warm + measure + gap + peak + locked

    def next_request():
        if world.now_ms >= end_ms:
            return
        send(MIX[polled[0] % len(MIX)][1])
        polled[0] += 1
        server.at(world.now_ms + every, next_request)

    def send(req):
        server.send(req)
        sent[0] += 1

    def at(ms, fn):
        server.at(ms, fn)

    # the scenario, in simulated ms from the boot (App.start() takes no
    # simulated time: the simulator advances only while the firmware idles)
    world.load.set(8000)  # 8 A discharge
    at(1000, lambda: send(UNLOCK))  # logged: before anything is measured
    at(1500, next_request)
    t = warm
    if measure >= 60000:
        # a discharge over-current: warning, trip (DSG off), release 30 s later
        at(t + 10000, lambda: world.load.set(25000))
        at(t + 13000, lambda: world.load.set(3000))
        at(t + 50000, lambda: (world.load.off(), world.charger.set(10000, cv_mv)))
    else:
        at(t + measure // 3, lambda: (world.load.off(), world.charger.set(10000, cv_mv)))
    if peak:
        # parameter writes that change a value (saved to flash) in the peak segment
        p = warm + measure + gap
        at(p + 200, lambda: send(UNLOCK))
        at(p + 1000, lambda: send(frame(bytes([1, 6, 0, LED_BRIGHTNESS, 0, 60]))))
        at(p + peak // 2 + 500, lambda: send(frame(bytes([1, 6, 0, LED_BRIGHTNESS, 0, 50]))))
    with_env(env, server.start)
    try:
        server.exited.wait(max(60.0, 3.0 * end_ms / 1000.0) if realtime else 60.0)
        if not server.exited.is_set():
            raise BenchError("the bench firmware did not finish in time:\n" + server.log_tail())
    finally:
        server.stop()
    with open(server.log_path) as f:
        text = f.read()
    err = log_error(text)
    if err:
        raise BenchError("the bench firmware failed (%s):\n%s" % (err, server.log_tail()))
    summary, cycles, requests = parse_probe(text)
    counters = dict(zip(COUNTERS, summary.pop("counters")))
    return summary, counters, cycles, requests, parse_replies(server.tx), sent[0]


def probe_figures(summary, cnt):
    """The heap and allocation figures of a cycle run."""
    probe = summary["heap_after_probe"] - summary["heap_after_start"]
    return {
        "cycle_alloc_bytes": cnt["cycle_alloc_max"],
        "modbus_alloc_bytes": cnt["request_alloc_max"],
        "loop_alloc_bytes": cnt["pass_alloc_max"],
        "heap_total_bytes": summary["heap_total"],
        "heap_after_import_bytes": summary["heap_after_import"],
        "heap_after_start_bytes": summary["heap_after_start"],
        "bench_probe_bytes": probe,
        # the probe's own code and buffers are in the heap from before the
        # peak segment on: taken off
        "heap_peak_bytes": summary["heap_peak_raw"] - probe,
        "heap_live_max_bytes": summary["heap_live_max_raw"] - probe,
        "heap_locked_ok": bool(summary["locked_ok"]),
    }
