# Freeze the BMS firmware into a MicroPython image for the ESP32: its
# bytecode then runs from flash, not RAM, and nothing is compiled or loaded
# from the filesystem at boot. firmware/README.md has the build commands:
#
#   make build        # first: writes build/device/.folded, what is frozen
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/to/firmware/manifest.py
#
# It freezes the firmware as `make build` compiles it (`make build BOARD=NAME`
# for another pin map): lib/ with its named constants folded in
# (tools/bms_build/constfold.py) from build/device/.folded, less the host-only
# modules (the register map, parameter and protection tables the firmware
# reads packed, and the docs text). Frozen, the bytecode keeps its line
# numbers (they cost flash, not RAM).
#
# The same file builds the ESP32's twin (`make twin`, tools/bms_sim/twin.py):
# a 32-bit unix MicroPython with the same modules frozen in.
#
# Read when the image is built (environment):
#   BMS_PORT=unix       the twin: leave out the ESP32 port's own modules
#   BMS_FROZEN_MAIN=0   leave boot.py and main.py to the filesystem (default: frozen,
#                       the image runs the BMS on its own; a frozen main.py runs
#                       even when the filesystem has one)
#
# The manifest tool runs this file from its own directory: the paths are
# relative to firmware/. tests/build/test_twin.py checks that it freezes exactly
# what `make build` compiles.
import os

# The one port-specific line: the ESP32 port's own frozen modules (_boot.py,
# inisetup, asyncio, ...). The twin (`make twin`: the unix port, 32-bit,
# BMS_PORT=unix) has nothing of its own to add.
if os.environ.get("BMS_PORT", "esp32") == "esp32":
    include("$(PORT_DIR)/boards/manifest.py")

FOLDED = "../build/device/.folded"
if not os.path.isdir(os.path.join(FOLDED, "bms")):
    raise SystemExit("firmware/manifest.py: %s is missing: run `make build` first" % FOLDED)

# Everything `make build` compiles, from the source it compiled: the bms
# package folded (the build leaves host-only modules out), the board's pin
# map (board_pins, imported by bms.boards.esp32) and micropython-lib's
# umqtt.simple (MQTT telemetry, bms.uplink), the copy the build took.
for _dir, _subdirs, _names in os.walk(FOLDED):
    _subdirs[:] = sorted(d for d in _subdirs if d != "__pycache__" and not d.startswith("."))
    for _name in sorted(_names):
        if _name.endswith(".py"):
            module(os.path.relpath(os.path.join(_dir, _name), FOLDED).replace(os.sep, "/"), base_path=FOLDED)

if os.environ.get("BMS_FROZEN_MAIN", "1") != "0":
    module("boot.py", base_path="..")
    module("main.py", base_path="..")
