"""The ESP32's twin (`make twin`, tools/bms_sim/twin.py) and the freeze
manifest it shares with the ESP32 image (firmware/manifest.py).

- the manifest freezes exactly the modules `make build` compiles, from the
  very source it compiled, and only its port line differs between the
  ESP32 and the twin;
- the twin that the tests run froze exactly those files, is 32-bit (2**30
  allocates, as on the ESP32) and boots them;
- where the source comes from: MICROPYTHON_SRC (a tree or a tarball), the
  shared tarball, a git clone; a clear reason when none can be had;
- a machine that cannot build the twin falls back to the 64-bit pip port
  and says why.
"""
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from bms_build import build as B
from bms_sim import target as T
from bms_sim import twin as TW
from conftest import ROOT, firmware_target

NOT_TWIN = "the firmware tests run on the 64-bit pip port here (see the run's header), not the twin"


def run_manifest(env=None):
    """Execute firmware/manifest.py as MicroPython's manifest tool does (from
    its own directory), with stand-ins that record what it freezes."""
    frozen, includes, required = {}, [], []
    here = os.path.join(ROOT, "firmware")

    def resolve(base):
        assert "$(" not in base, base
        return os.path.abspath(os.path.join(here, base))

    def package(name, files=None, base_path=".", opt=None):
        raise AssertionError("the manifest names each module (module()), not packages")

    def module(path, base_path=".", opt=None):
        assert path.endswith(".py")
        assert path not in frozen, "frozen twice: " + path
        frozen[path] = os.path.join(resolve(base_path), path)

    def freeze(path, script=None, opt=None):
        raise AssertionError("the manifest uses module(), not freeze()")

    g = {"include": includes.append, "require": required.append, "package": package, "module": module,
         "freeze": freeze, "options": None}
    old_env = dict(os.environ)
    os.environ.pop("BMS_PORT", None)
    os.environ.update(env or {})
    cwd = os.getcwd()
    os.chdir(here)
    try:
        with open("manifest.py") as f:
            exec(compile(f.read(), "manifest.py", "exec"), g)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(old_env)
    return frozen, includes, required


def built_modules():
    """What `make build` puts in lib/ (FILES.txt), as frozen names (.py)."""
    B.compile_lib()
    return {p[len("lib/"):-4] + ".py" for p, _, _ in B.read_manifest() if p.startswith("lib/") and p.endswith(".mpy")}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_manifest_freezes_exactly_what_make_build_compiles():
    frozen, includes, required = run_manifest()
    assert includes == ["$(PORT_DIR)/boards/manifest.py"] and required == []
    want = built_modules() | {"boot.py", "main.py"}
    assert set(frozen) == want
    assert {"bms/app.py", "board_pins.py", "umqtt/simple.py"} <= want
    assert "bms/spec/regdoc.py" not in frozen and "bms/spec/paramtable.py" not in frozen
    folded = B.folded_dir(B.OUT)
    # the very source the build compiled (its .build-state.json hashes it)
    with open(os.path.join(B.OUT, ".build-state.json")) as f:
        compiled = json.load(f)["files"]
    for name, path in frozen.items():
        if name in ("boot.py", "main.py"):
            assert path == os.path.join(ROOT, name)
            continue
        assert path == os.path.join(folded, name), name
        assert compiled[name[:-3] + ".mpy"] == sha256(path), name
    with open(frozen["bms/app.py"]) as f:
        assert "M.IR_" not in f.read()  # folded


def test_only_the_port_line_differs_for_the_twin_and_main_can_stay_on_the_filesystem():
    esp32, inc_esp32, _ = run_manifest()
    twin, inc_twin, _ = run_manifest({"BMS_PORT": "unix"})
    assert twin == esp32 and inc_twin == [] and inc_esp32 == ["$(PORT_DIR)/boards/manifest.py"]
    frozen, _, _ = run_manifest({"BMS_FROZEN_MAIN": "0"})
    assert "main.py" not in frozen and "boot.py" not in frozen and "bms/app.py" in frozen


@pytest.fixture(scope="module")
def twin():
    t = firmware_target()
    if t.kind != "twin":
        pytest.skip(NOT_TWIN + ": " + t.why)
    assert TW.is_current()
    return t


def test_the_twin_froze_exactly_the_files_make_build_compiled(twin):
    names = TW.frozen_names()
    assert set(names) == built_modules() | {"boot.py", "main.py"}
    stamp = TW.read_stamp()
    assert stamp["release"] == "v%s.0" % B.TARGET
    assert stamp["frozen"] == {n: sha256(p) for n, p in TW.frozen_sources().items()}
    # and the binary boots them from .frozen alone: every module imports
    mods = sorted(n[:-3].replace("/", ".") for n in names if n not in ("boot.py", "main.py"))
    mods = [m for m in mods if m not in ("bms.boards.esp32",)]  # needs machine.I2C and friends
    code = "import sys\nfor m in %r:\n    __import__(m)\nprint('imported', len(%r))\n" % (mods, mods)
    out = subprocess.run([twin.exe, "-X", "heapsize=" + T.TWIN_HEAP, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, MICROPYPATH=".frozen"), timeout=30)
    assert out.returncode == 0 and ("imported %d" % len(mods)) in out.stdout, out.stdout + out.stderr


def test_the_twin_is_32_bit_where_2_to_the_30_allocates(twin):
    code = ("import micropython, sys\n"
            "def add(a, b):\n"
            "    micropython.heap_lock()\n"
            "    try:\n"
            "        a + b\n"
            "        r = 'no'\n"
            "    except MemoryError:\n"
            "        r = 'allocates'\n"
            "    micropython.heap_unlock()\n"
            "    return r\n"
            "a = 1 << 29\n"
            # 2**30 - 1, the largest small int, does not allocate; 2**30 does
            "print(add(a - 1, a), add(a, a), sys.maxsize)\n")
    out = subprocess.run([twin.exe, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["no", "allocates", str(2 ** 31 - 1)], out.stdout + out.stderr


def test_the_default_target_runs_the_frozen_firmware_at_the_esp32_heap(twin):
    assert twin.frozen and twin.default_heap == "56K" and twin.bits == 32
    argv = twin.boot_argv(twin.default_heap)
    assert argv == [twin.exe, "-X", "heapsize=56K", "-c", T.FROZEN_BOOT]
    assert twin.path("/x/lib") == ".frozen"
    assert "ESP32 twin" in twin.describe() and "frozen" in twin.describe()


def test_bms_mpy_asks_the_twin_for_the_mpy_files(twin, monkeypatch):
    monkeypatch.setenv("BMS_MPY", "1")
    t = T.find_target()
    assert t.kind == "twin" and not t.frozen and t.default_heap == T.TWIN_MPY_HEAP
    assert t.path("/x/lib") == "/x/lib:.frozen"


# -- where the source comes from (no build: the lookup alone) ----------------------------------------

def fake_tree(root, minor=28):
    os.makedirs(os.path.join(root, "ports", "unix"))
    os.makedirs(os.path.join(root, "py"))
    open(os.path.join(root, "ports", "unix", "Makefile"), "w").close()
    with open(os.path.join(root, "py", "mpconfig.h"), "w") as f:
        f.write("#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR %d\n" % minor)
    return str(root)


def fake_tarball(path, tree):
    with tarfile.open(path, "w:xz") as tf:
        tf.add(tree, arcname="micropython-1.28.0")
    return str(path)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """TWIN under tmp_path, no shared tarball, no MICROPYTHON_SRC."""
    monkeypatch.setattr(TW, "TWIN", str(tmp_path / "twin"))
    monkeypatch.setattr(TW, "SHARED_GLOB", str(tmp_path / "shared" / "*.tar.xz"))
    monkeypatch.delenv(TW.ENV_SRC, raising=False)
    return tmp_path


def test_micropython_src_may_be_a_tree(sandbox, monkeypatch):
    tree = fake_tree(sandbox / "mp")
    monkeypatch.setenv(TW.ENV_SRC, tree)
    assert TW.find_source() == (TW.ENV_SRC, tree)


def test_micropython_src_may_be_a_tarball_unpacked_once(sandbox, monkeypatch):
    tar = fake_tarball(sandbox / "mp.tar.xz", fake_tree(sandbox / "mp"))
    monkeypatch.setenv(TW.ENV_SRC, tar)
    origin, tree = TW.find_source()
    assert origin == TW.ENV_SRC and tree.startswith(str(sandbox / "twin" / "src"))
    assert os.path.isfile(os.path.join(tree, "ports", "unix", "Makefile"))
    assert TW.find_source()[1] == tree


def test_micropython_src_comes_before_the_shared_tarball(sandbox, monkeypatch):
    os.makedirs(sandbox / "shared")
    fake_tarball(sandbox / "shared" / "micropython-1.28.0-unix-src.tar.xz", fake_tree(sandbox / "a"))
    assert TW.find_source()[0] == "shared"
    monkeypatch.setenv(TW.ENV_SRC, fake_tree(sandbox / "b"))
    assert TW.find_source()[0] == TW.ENV_SRC


def test_a_wrong_micropython_src_names_the_problem_and_the_fix(sandbox, monkeypatch):
    monkeypatch.setenv(TW.ENV_SRC, str(sandbox / "nope"))
    with pytest.raises(TW.TwinUnavailable) as e:
        TW.find_source()
    assert "no such directory or tarball" in str(e.value) and "unset it" in str(e.value)
    monkeypatch.setenv(TW.ENV_SRC, fake_tree(sandbox / "old", minor=22))
    with pytest.raises(TW.TwinUnavailable) as e:
        TW.find_source()
    assert "1.22" in str(e.value) and "v1.28.0" in str(e.value)


def test_without_either_it_clones_the_release_and_says_so_when_it_cannot(sandbox, monkeypatch):
    calls = []

    def refuse(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 128, "", "fatal: unable to access 'https://github.com/': failed")

    monkeypatch.setattr(TW.subprocess, "run", refuse)
    with pytest.raises(TW.TwinUnavailable) as e:
        TW.find_source()
    assert calls[0][:2] == ["git", "clone"] and "--depth" in calls[0] and "v1.28.0" in calls[0]
    assert "MICROPYTHON_SRC" in str(e.value) and "unable to access" in str(e.value)


def test_no_twin_falls_back_to_the_64_bit_port_and_says_why(monkeypatch):
    def unavailable(say=None):
        raise TW.TwinUnavailable("`gcc -m32` cannot build 32-bit programs: install gcc-multilib")

    monkeypatch.setattr(TW, "ensure", unavailable)
    monkeypatch.setattr(T, "_twin_result", {})
    monkeypatch.delenv("BMS_MICROPYTHON", raising=False)
    t = T.find_target()
    assert t.kind == "pip64" and not t.frozen and t.default_heap == T.FALLBACK_HEAP
    assert "64-bit pip port" in t.describe() and "gcc-multilib" in t.describe()


def test_the_compiler_check_names_gcc_multilib(monkeypatch):
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(TW.TwinUnavailable) as e:
        TW.check_compiler()
    assert "gcc-multilib" in str(e.value)
