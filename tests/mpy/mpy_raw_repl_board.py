# Under the MicroPython unix port: a stand-in for a board on a serial port,
# speaking the REPL protocol mpremote drives (the unix port's own REPL has no
# raw REPL). stdin/stdout are the master side of a pseudo-terminal; mpremote
# opens the slave. The current directory is the board's filesystem root.
#
#   friendly REPL   Ctrl-A: raw REPL; Ctrl-D: soft reboot
#   raw REPL        bytes then Ctrl-D: "OK", run, output, \x04, error, \x04, ">"
#                   \x05 A \x01: raw-paste mode (windowed flow control)
#                   Ctrl-D on an empty line: soft reboot; Ctrl-B: friendly REPL
#   machine.reset() a hard reset: the globals go, the banner, the friendly REPL
#
# Every soft and hard reset is logged to argv[1], with whether main.py is on
# the filesystem at that moment (a real board would run it).
import os
import sys

IN = sys.stdin.buffer
OUT = sys.stdout.buffer
WINDOW = 512
BANNER = b"MicroPython v1.28.0 on unix; raw REPL stand-in for an ESP32\r\n>>> "
RAW_HEADER = b"raw REPL; CTRL-B to exit\r\n"


class Reboot(Exception):
    pass


class machine:
    @staticmethod
    def reset():
        raise Reboot()


sys.modules["machine"] = machine


def log(event):
    with open(sys.argv[1], "a") as f:
        try:
            os.stat("main.py")
            main = "main.py"
        except OSError:
            main = "no main.py"
        f.write("%s %s\n" % (event, main))


def rd():
    b = IN.read(1)
    if not b:
        raise SystemExit(0)  # the test closed its side
    return b[0]


def run(code, g):
    err = None
    try:
        exec(code, g)
    except Reboot:
        raise
    except BaseException as e:  # noqa: B036 - the REPL reports everything, as a board does
        err = e
    OUT.write(b"\x04")
    if err is not None:
        sys.print_exception(err, sys.stdout)
    OUT.write(b"\x04")


def paste():
    """Raw-paste mode: the window size, then one \x01 per window consumed;
    the host ends with \x04, which is acknowledged."""
    OUT.write(b"R\x01" + bytes((WINDOW & 0xFF, WINDOW >> 8)))
    code = bytearray()
    used = 0
    while True:
        c = rd()
        if c == 4:
            OUT.write(b"\x04")
            return bytes(code)
        code.append(c)
        used += 1
        if used == WINDOW:
            used = 0
            OUT.write(b"\x01")


def main():
    g = {}
    raw = False
    line = bytearray()
    OUT.write(BANNER)
    while True:
        try:
            c = rd()
            if not raw:
                if c == 1:
                    raw = True
                    line = bytearray()
                    OUT.write(b"\r\n" + RAW_HEADER + b">")
                elif c == 4:
                    log("soft-reset")
                    g = {}
                    OUT.write(b"MPY: soft reboot\r\n" + BANNER)
                continue
            if c == 1:
                if bytes(line) == b"\x05A":
                    run(paste(), g)
                else:
                    OUT.write(RAW_HEADER)
                line = bytearray()
                OUT.write(b">")
            elif c == 2:
                raw = False
                OUT.write(b"\r\n" + BANNER)
            elif c == 3:
                line = bytearray()
            elif c == 4:
                if line:
                    OUT.write(b"OK")
                    run(bytes(line), g)
                    line = bytearray()
                    OUT.write(b">")
                else:
                    log("soft-reset")
                    g = {}
                    OUT.write(b"\r\nMPY: soft reboot\r\n" + RAW_HEADER + b">")
            else:
                line.append(c)
        except Reboot:
            log("hard-reset")
            g = {}
            raw = False
            line = bytearray()
            OUT.write(b"\r\nets Jun  8 2016 00:22:57\r\n\r\nrst:0xc (SW_CPU_RESET)\r\n" + BANNER)


main()
