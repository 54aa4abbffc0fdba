"""Run 5 of the bench (bench.perf): the heap runs. The firmware's real
entry under -X heapsize=N from a fresh copy of the provisioned flash
(fits_run), the smallest N bisected (bisect_heap), and the heap targets'
margins."""
import os
import shutil
import subprocess
import tempfile

from bench.config import DAY, DAY_HEAP, DAY_MS, PACK, SMALL_HEAP
from bench.frames import LED_BRIGHTNESS, MIX, UNLOCK, frame, parse_replies
from bench.harness import log_error, make_world, say
from bms import regmap as M
from bms_sim.process import SimError
from bms_sim.server import SimServer


def heap_arg_bytes(heap):
    """The bytes an -X heapsize= argument asks for ("40K" = 40960): the
    unit of the bisected smallest heaps, so margins compare like with like."""
    h = heap.strip()
    mult = {"K": 1024, "M": 1024 * 1024}.get(h[-1:].upper(), 1)
    return int(h[:-1] if mult > 1 else h) * mult


def margins(res):
    """The heap targets' margins: over the smallest heap that runs the day
    (both as -X heapsize bytes), and the cycle run's peak against the bytes
    the day's heap holds (gc.mem_alloc() + gc.mem_free() under 40K)."""
    base = res["heap_min_day_frozen_bytes"]
    res["margin_day_40k_bytes"] = heap_arg_bytes(DAY_HEAP) - base if base else None
    res["margin_e2e_56k_bytes"] = heap_arg_bytes(SMALL_HEAP) - base if base else None
    res["headroom_40k_peak_bytes"] = res["heap_day_total_bytes"] - res["heap_peak_bytes"]


def heap_bytes(micropython, heap):
    """The bytes MicroPython's heap holds under -X heapsize=heap."""
    proc = subprocess.run([micropython, "-X", "heapsize=" + heap, "-c",
                           "import gc; print(gc.mem_alloc() + gc.mem_free())"],
                          capture_output=True, text=True, timeout=10)
    return int(proc.stdout.strip())


def fresh_state(state):
    """A copy of the provisioned state directory: every heap run starts from
    the same flash (a first boot, bms.cfg still to take in), whatever the
    runs before it wrote."""
    tmp = tempfile.mkdtemp(prefix="bms-bench-fits-")
    dest = os.path.join(tmp, "state")
    shutil.copytree(state, dest, ignore=shutil.ignore_patterns("*.log"))
    return tmp, dest


def fits_run(fits_ms, state, target, heap, lib_dir=None, day=None, pack=PACK):
    """(fits, detail): the firmware's real entry (the frozen boot.py and
    main.py, or main.py with lib_dir's .mpy files) under -X heapsize=heap
    for fits_ms simulated ms, from a fresh copy of the provisioned state.

    Modbus requests every 300 ms while polled; the unlock and two parameter
    writes that change a value (saved to flash, logged). A day (day=True;
    default: fits_ms is DAY_MS or more) runs DAY's phases. Any other run is
    the short scenario: it ends with a restart by command (the state saved,
    the MCU reset, the second boot from the saved records). It fits when it
    ran that long, logged no error and answered; the short scenario also
    when it came back from the restart and answered again, and, when it
    lasted past the first periodic save, saved the SOC state twice (A and B
    records: the periodic save and the restart's)."""
    world = make_world(pack)
    world.load.set(8000)
    tmp, run_state = fresh_state(state)
    server = SimServer(world, run_state, speed=None, heap=heap, target=target, lib_dir=lib_dir,
                       log_path=os.path.join(run_state, "bench-fits.log"))
    sent = [0]
    polled = [True]
    day = fits_ms >= DAY_MS if day is None else day
    restart_at = None if day else fits_ms - (20000 if fits_ms >= 60000 else 3000)
    mark = [None]  # len(server.tx) once the restarted firmware is up

    def next_request():
        if polled[0]:
            server.send(MIX[sent[0] % len(MIX)][1])
            sent[0] += 1
        server.at(world.now_ms + 300, next_request)

    def phase(k):
        _, load_ma, charger_ma, poll = DAY[k]
        if load_ma:
            world.load.set(load_ma)
        else:
            world.load.off()
        if charger_ma:
            world.charger.set(charger_ma, pack["full_mv"])  # CC-CV to the cell's full voltage
        else:
            world.charger.off()
        polled[0] = poll
        if k + 1 < len(DAY):
            server.at(DAY[k + 1][0] * 1000, lambda: phase(k + 1))

    def write(req):
        server.send(req)
        sent[0] += 1

    def up_again():
        mark[0] = len(server.tx)

    server.at(500, next_request)
    # parameter writes that change a value: saved to flash (A/B record), logged
    server.at(1000, lambda: write(UNLOCK))
    server.at(2000, lambda: write(frame(bytes([1, 6, 0, LED_BRIGHTNESS, 0, 60]))))
    server.at(6000, lambda: write(frame(bytes([1, 6, 0, LED_BRIGHTNESS, 0, 50]))))
    if day:
        server.at(1, lambda: phase(0))
    else:
        # a restart by command: the state saved, then the second boot from the records
        server.at(restart_at - 500, lambda: write(UNLOCK))
        server.at(restart_at, lambda: write(frame(bytes([1, 6, 0, M.HR_COMMAND, 0, M.CMD_RESTART]))))
        server.at(restart_at + 1500, up_again)
    ok = False
    detail = None
    try:
        try:
            server.start()
            # as fast as the firmware goes: a simulated minute allowed a second of wall time
            server.wait_sim_ms(fits_ms, timeout=max(30, fits_ms / 60000.0))
            ok = not server.exited.is_set()
            if not ok:
                detail = "the firmware stopped"
        except SimError as e:
            detail = str(e).splitlines()[0]
        finally:
            server.stop()
        try:
            with open(server.log_path) as f:
                text = f.read()
        except OSError:
            text = ""
        err = log_error(text)
        replies = len(parse_replies(server.tx))
        soc_saves = len([n for n in os.listdir(run_state) if n in ("soc.a", "soc.b")])
        if err:
            ok = False
            detail = err
        if ok and replies == 0:
            ok = False
            detail = "no Modbus reply"
        after = None
        if ok and not day:
            after = len(parse_replies(server.tx[mark[0]:])) if mark[0] is not None else 0
            if server.boots < 2 or not after:
                ok = False
                detail = "no reply after the restart (%d boots)" % server.boots
        if ok and not day and fits_ms > 610000 and soc_saves < 2:
            ok = False
            detail = "the SOC state not saved twice"
        if ok:
            ran = "%.1f h" % (fits_ms / 3600000.0) if fits_ms >= 3600000 else "%d s" % (fits_ms // 1000)
            if day:
                detail = "ran %s simulated (%s), answered %d of %d requests" % (
                    ran, "used, rested, charged, rested, used, rested" if fits_ms >= DAY_MS else "the day's start",
                    replies, sent[0])
            else:
                detail = ("ran %s simulated: the first boot (bms.cfg taken in), 2 parameter writes saved, %s"
                          "restarted by command (the state saved) and booted from the saved records; answered %d "
                          "of %d requests, %d after the restart"
                          % (ran, "the periodic SOC and lifetime save, " if fits_ms > 610000 else "", replies, sent[0],
                             after))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok, detail


def bisect_heap(fits_ms, state, target, lo, hi, step, progress=say, lib_dir=None, pack=PACK):
    """The smallest heap (bytes, a multiple of step) in [lo, hi] under which
    fits_run passes, by bisection (a run that fits at N fits above N: the
    firmware's allocations do not depend on the heap's size): {"bytes":
    N or None when even hi does not fit, "runs": the run's detail at N,
    "fails": what went wrong a step below, "runs_made": fits runs}.
    A failure that is not a MemoryError (a run starved of CPU on a busy
    machine, say) is run again once before it counts."""
    name = target.kind + (" frozen" if target.frozen else " .mpy") + ("" if pack is PACK else ", " + pack["key"])
    made = [0]

    def attempt(n):
        ok, detail = fits_run(fits_ms, state, target, str(n), lib_dir, pack=pack)
        made[0] += 1
        if not ok and "MemoryError" not in (detail or ""):
            progress("  %s at %d B: %s; once more" % (name, n, detail))
            ok, detail = fits_run(fits_ms, state, target, str(n), lib_dir, pack=pack)
            made[0] += 1
        progress("  %s at %d B: %s" % (name, n, "runs" if ok else "fails (%s)" % detail))
        return ok, detail

    ok, runs = attempt(hi)
    if not ok:
        return {"bytes": None, "runs": None, "fails": runs, "runs_made": made[0]}
    fails = None
    lo = (lo // step) * step
    while hi - lo > step:
        mid = ((lo + hi) // 2 // step) * step
        ok, detail = attempt(mid)
        if ok:
            hi, runs = mid, detail
        else:
            lo, fails = mid, detail
    return {"bytes": hi, "runs": runs, "fails": fails, "runs_made": made[0]}


def smallest_heap(fits_ms, state, target, lo, hi, step, progress=say, lib_dir=None):
    """bisect_heap's bytes alone."""
    return bisect_heap(fits_ms, state, target, lo, hi, step, progress, lib_dir)["bytes"]
