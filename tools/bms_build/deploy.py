"""Put the firmware on a real board: the commands behind `make deploy`,
`make repl` and `make flash-micropython`.

    python -m bms_build.deploy --port /dev/ttyUSB0 [--dry-run]        build, copy, reset
    python -m bms_build.deploy --port /dev/ttyUSB0 --repl             the board's REPL
    python -m bms_build.deploy --port /dev/ttyUSB0 --flash FW.bin     erase, write MicroPython

--dry-run prints the exact commands (a shell script) instead of running them.

Deploying builds build/device (bms_build.build) and copies the files its
FILES.txt lists with mpremote, in four steps:

 1. stop: interrupt the running firmware (mpremote's Ctrl-C), delete main.py
    and the old library (lib/bms, lib/board_pins: a stale .py would shadow
    the new .mpy), then hard-reset. The firmware's watchdog cannot be
    stopped, only a reset ends it; without main.py the board then boots to
    the REPL and nothing feeds or restarts it. Stored parameters and logs
    (the other files at the root) are kept.
 2. wait for the boot.
 3. copy: `fs mkdir` every library directory, parents first, then `fs cp`
    every file, main.py last: a copy cut short never boots a half library.
 4. reset: the new firmware starts.
"""
import argparse
import os
import shlex
import shutil
import sys
import time

from bms_build import build as B

BOOT_WAIT_S = 2.0  # the ESP32 boots (ROM, MicroPython, boot.py) in about one second
ESPTOOL_BAUD = 460800
FLASH_OFFSET = "0x1000"  # the original ESP32's bootloader offset (0x0 on S3/C3)
USAGE_PORT = "the board's USB serial port, e.g. PORT=/dev/ttyUSB0"
LIST_PORTS = "`.venv/bin/mpremote connect list` lists the serial ports"


class DeployError(RuntimeError):
    pass


def short(path):
    """path relative to the current directory when it is below it."""
    rel = os.path.relpath(path)
    if rel.startswith(".."):
        return path
    return rel if os.sep in rel else os.path.join(".", rel)  # never a bare name (a PATH lookup)


def _tool(name, hint):
    cand = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(cand):
        return short(cand)
    found = shutil.which(name)
    if found:
        return found
    raise DeployError("%s not found: %s" % (name, hint))


def mpremote_exe(required=True):
    try:
        return _tool("mpremote", "run `make setup` (requirements.txt pins it)")
    except DeployError:
        if required:
            raise
        return "mpremote"


def esptool_exe(required=True):
    try:
        return _tool("esptool", "`make flash-micropython` installs it (requirements-device.txt)")
    except DeployError:
        if required:
            raise
        return "esptool"


def check_port(port, must_exist=True):
    if not port:
        raise DeployError("PORT is not set: give %s (%s)" % (USAGE_PORT, LIST_PORTS))
    # a device path must be there; mpremote's other forms (COM3, rfc2217://) are not files
    if must_exist and port.startswith("/") and not os.path.exists(port):
        raise DeployError("PORT %s does not exist: is the board plugged in? (%s)" % (port, LIST_PORTS))
    return port


def check_firmware(path):
    if not path:
        raise DeployError("FIRMWARE is not set: give the MicroPython image, e.g. "
                          "FIRMWARE=ESP32_GENERIC-v1.28.0.bin (see firmware/README.md)")
    if not os.path.isfile(path):
        raise DeployError("FIRMWARE %s does not exist (or is not a file)" % path)
    if not path.endswith(".bin"):
        raise DeployError("FIRMWARE %s is not a .bin image: esptool writes the combined firmware.bin" % path)
    return path


def stop_code(files):
    """MicroPython source run on the board at step 1: delete main.py and
    every library entry the plan replaces (with the .py twin of a .mpy), and
    make sure lib/ exists."""
    doomed = ["main.py"]
    for path, _, _ in files:
        parts = path.split("/")
        if parts[0] != "lib" or len(parts) < 2:
            continue
        top = "lib/" + parts[1]
        for p in (top, top[:-4] + ".py") if top.endswith(".mpy") else (top,):
            if p not in doomed:
                doomed.append(p)
    # double quotes only: the shell form (--dry-run) quotes it with single ones
    return ("import os\n"
            "def rm(p):\n"
            " try:m=os.stat(p)[0]\n"
            " except OSError:return\n"
            " if m&0x4000:\n"
            "  for e in list(os.ilistdir(p)):rm(p+\"/\"+e[0])\n"
            "  os.rmdir(p)\n"
            " else:os.remove(p)\n"
            "for p in (%s,):rm(p)\n"
            "try:os.mkdir(\"lib\")\n"
            "except OSError:pass\n" % ",".join('"%s"' % p for p in doomed))


def directories(files):
    """The directories the plan needs under lib/, parents first (lib/ itself
    is made at step 1)."""
    dirs = set()
    for path, _, _ in files:
        parts = path.split("/")[:-1]
        for i in range(2, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def copy_order(files):
    """boot.py first, main.py last, the library between."""
    rank = {"boot.py": 0, "main.py": 2}
    return sorted(files, key=lambda f: (rank.get(f[0], 1), f[0]))


def deploy_steps(port, files, dest=B.DEVICE, mpremote="mpremote", boot_wait=BOOT_WAIT_S):
    """[(kind, argv or seconds, label)], kind "run" or "sleep": the whole deploy."""
    con = [mpremote, "connect", port]
    copy = list(con)
    for d in directories(files):
        copy += ["fs", "mkdir", ":" + d, "+"]
    for path, _, _ in copy_order(files):
        copy += ["fs", "cp", short(os.path.join(dest, *path.split("/"))), ":" + path, "+"]
    return [
        ("run", con + ["exec", stop_code(files), "+", "reset"],
         "stop: delete main.py and the old library, then reset (ends the watchdog)"),
        ("sleep", boot_wait, "let the board boot (to the REPL: there is no main.py)"),
        ("run", copy[:-1], "copy %d files: directories first, main.py last" % len(files)),
        ("run", con + ["reset"], "reset: the new firmware starts"),
    ]


def flash_steps(port, firmware, esptool="esptool"):
    base = [esptool, "--chip", "esp32", "--port", port]
    return [
        ("run", base + ["erase-flash"], "erase the whole flash (the filesystem too)"),
        ("run", base + ["--baud", str(ESPTOOL_BAUD), "write-flash", "-z", FLASH_OFFSET, firmware],
         "write MicroPython at %s" % FLASH_OFFSET),
    ]


def repl_steps(port, mpremote="mpremote"):
    return [("run", [mpremote, "connect", port, "repl"], "the REPL (Ctrl-] or Ctrl-x leaves)")]


def render(steps):
    """The steps as a shell script: one command a line, `+` chains continued."""
    out = []
    for kind, arg, label in steps:
        out.append("# " + label)
        if kind == "sleep":
            out.append("sleep %g" % arg)
            continue
        words = [shlex.quote(a) for a in arg]
        line, lines = [], []
        for w in words:
            if w == "+" and line:
                lines.append(" ".join(line))
                line = []
            line.append(w)
        lines.append(" ".join(line))
        out.append(" \\\n    ".join(lines))
    return "\n".join(out) + "\n"


HINTS = {
    ("deploy", 1): "mpremote could not reach the board's REPL. If the firmware is asleep, press the "
                   "board's EN (reset) button and run `make deploy` again at once; check PORT, and that "
                   "no other program (a terminal, bmsctl) has the port open",
    ("deploy", 3): "the board has no main.py now (the firmware does not start): run `make deploy` again",
    ("flash", 1): "hold the board's BOOT (IO0) button while esptool connects, or check PORT",
}


def run(steps, what, runner=None):
    """Run the steps; DeployError at the first command that fails."""
    import subprocess

    runner = runner or (lambda argv: subprocess.run(argv).returncode)
    for n, (kind, arg, label) in enumerate(steps, 1):
        print("%s %d/%d: %s" % (what, n, len(steps), label), flush=True)
        if kind == "sleep":
            time.sleep(arg)
            continue
        rc = runner(arg)
        if rc != 0:
            hint = HINTS.get((what, n))
            raise DeployError("step %d/%d (%s) failed, exit %d%s"
                              % (n, len(steps), label, rc, (": " + hint) if hint else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bms_build.deploy",
                                 description="Copy the built firmware to a board with mpremote (make deploy), "
                                             "open its REPL (--repl) or flash MicroPython with esptool (--flash).")
    ap.add_argument("--port", default="", help=USAGE_PORT)
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--board", default=B.DEFAULT_BOARD, help="firmware/boards/BOARD (default %(default)s)")
    ap.add_argument("--boot-wait", type=float, default=BOOT_WAIT_S, metavar="S",
                    help="seconds to let the board boot after the stop step (default %(default)s)")
    act = ap.add_mutually_exclusive_group()
    act.add_argument("--repl", action="store_true", help="open the board's REPL (Ctrl-] leaves)")
    act.add_argument("--flash", metavar="FIRMWARE", default=None,
                     help="erase the flash and write this MicroPython image (.bin) with esptool")
    ap.add_argument("--check", action="store_true", help="check the arguments only")
    args = ap.parse_args(argv)
    try:
        check_port(args.port, must_exist=not args.dry_run)
        if args.flash is not None:
            check_firmware(args.flash)
        if args.check:
            return 0
        if args.flash is not None:
            what, steps = "flash", flash_steps(args.port, args.flash, esptool_exe(not args.dry_run))
        elif args.repl:
            what, steps = "repl", repl_steps(args.port, mpremote_exe(not args.dry_run))
        else:
            what = "deploy"
            B.build_device(B.DEVICE, args.board)
            files = B.read_manifest(B.DEVICE)  # the plan
            if args.dry_run:
                sys.stdout.write("# %d files from %s (FILES.txt), board %s\n"
                                 % (len(files), os.path.relpath(B.DEVICE), args.board))
            steps = deploy_steps(args.port, files, B.DEVICE, mpremote_exe(not args.dry_run), args.boot_wait)
        if args.dry_run:
            sys.stdout.write(render(steps))
            return 0
        run(steps, what)
    except (DeployError, B.BuildError) as e:
        name = "flash-micropython" if args.flash is not None else "repl" if args.repl else "deploy"
        print("%s: %s" % (name, e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if what == "deploy":
        print("deploy: done; the board restarted with the new firmware (`make repl PORT=%s` to watch it)"
              % args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
