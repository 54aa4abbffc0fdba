"""The machine the bench runs on, and the one firmware it measures: the
twin and the .mpy files copied at the start (snapshot)."""
import datetime
import os
import platform
import shutil
import subprocess

from bench.config import ROOT, BenchError
from bench.harness import say
from bms_build.build import compile_lib, find_mpy_cross
from bms_sim.target import Target, TargetError, find_target


def machine_info_mp(micropython):
    return subprocess.run([micropython, "-c", "import sys; print(sys.version)"], capture_output=True,
                          text=True, timeout=10).stdout.strip()


def machine_info(micropython):
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mp = subprocess.run([micropython, "-c", "import sys; print(sys.version)"], capture_output=True,
                        text=True, timeout=10).stdout.strip()
    try:
        cross = subprocess.run([find_mpy_cross(), "--version"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except Exception as e:  # noqa: BLE001 - informational only
        cross = "unknown (%s)" % e

    def git(*a):
        try:
            return subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except OSError:
            return ""

    status = git("status", "--porcelain", "--", "lib", "main.py", "boot.py")
    return {
        "cpu_model": cpu or platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "micropython": mp,
        "mpy_cross": cross,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "firmware_modified": bool(status),  # lib/ differs from the commit
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- one firmware for the whole run ---------------------------------------------


def snapshot(dest, progress=say):
    """The firmware as it is now, copied into dest: the twin's binary and
    build/device/lib's .mpy files, from one build. A bench lasts minutes,
    others may edit lib/ meanwhile (and a test run rebuilds the twin): every
    run here measures this copy. Returns (frozen Target, .mpy Target, the
    .mpy directory, the twin's digest)."""
    import filecmp

    from bms_sim import twin as TW

    for _ in range(5):
        lib = compile_lib()
        try:
            target = find_target(mpy=False, say=progress)
        except TargetError as e:
            raise BenchError(str(e))
        if target.kind != "twin":
            raise BenchError("the bench measures the ESP32 twin, which cannot be built here: %s" % target.why)
        exe = os.path.join(dest, "micropython")
        lib_copy = os.path.join(dest, "lib")
        shutil.rmtree(lib_copy, ignore_errors=True)
        with open(os.path.join(TW.TWIN, ".lock"), "w") as lock:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # no twin build meanwhile
            stamp = TW.read_stamp() or {}
            before = TW.digest()
            shutil.copy2(target.exe, exe)
            shutil.copytree(lib, lib_copy)
            same = stamp.get("digest") == before == TW.digest() and filecmp.cmp(target.exe, exe, shallow=False)
        if same:
            return Target(exe, "twin", frozen=True), Target(exe, "twin", frozen=False), lib_copy, before
        progress("the firmware changed while the bench copied it: again")
    raise BenchError("the firmware kept changing while the bench copied it (lib/ being edited?)")


def firmware_digest():
    """The digest the twin would have for lib/ as it is now (bms_sim.twin.digest)."""
    from bms_sim import twin as TW

    compile_lib()
    return TW.digest()
