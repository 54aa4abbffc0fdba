# Freeze the BMS firmware into a MicroPython image for the ESP32: its
# bytecode then runs from flash, not RAM, and nothing is compiled or loaded
# from the filesystem at boot. firmware/README.md has the build commands:
#
#   make build        # first: writes build/device/.folded, what is frozen
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/to/firmware/manifest.py
#
# It freezes the firmware as `make build` compiles it: lib/ with its named
# constants folded in (tools/bms_sim/constfold.py) from build/device/.folded,
# less the host-only modules (the register map, parameter and protection
# tables the firmware reads packed, and the docs text). Frozen, the
# bytecode keeps its line numbers (they cost flash, not RAM).
#
# Read when the image is built (environment):
#   BMS_BOARD=NAME      the pin map firmware/boards/NAME/board_pins.py (default: reference)
#   BMS_FROZEN_MAIN=0   leave boot.py and main.py to the filesystem (default: frozen,
#                       the image runs the BMS on its own; a frozen main.py runs
#                       even when the filesystem has one)
#
# The manifest tool runs this file from its own directory: the paths are
# relative to firmware/. tests/test_build_deploy.py checks that it freezes
# exactly what `make build` compiles.
import os

# the port's own frozen modules (_boot.py, inisetup, asyncio, ...)
include("$(PORT_DIR)/boards/manifest.py")

FOLDED = "../build/device/.folded"
if not os.path.isdir(os.path.join(FOLDED, "bms")):
    raise SystemExit("firmware/manifest.py: %s is missing: run `make build` first" % FOLDED)

# the bms package as the build folded it (the build leaves host-only modules out)
_files = []
for _dir, _subdirs, _names in os.walk(os.path.join(FOLDED, "bms")):
    _subdirs[:] = sorted(d for d in _subdirs if d != "__pycache__")
    for _name in sorted(_names):
        if _name.endswith(".py"):
            _files.append(os.path.relpath(os.path.join(_dir, _name), os.path.join(FOLDED, "bms")).replace(os.sep, "/"))
package("bms", files=_files, base_path=FOLDED)

# the board's pin map, imported by bms.boards.esp32 as `board_pins`
module("board_pins.py", base_path="boards/" + os.environ.get("BMS_BOARD", "reference"))

if os.environ.get("BMS_FROZEN_MAIN", "1") != "0":
    module("boot.py", base_path="..")
    module("main.py", base_path="..")

# MQTT telemetry (bms.uplink): micropython-lib's client, from the MicroPython
# tree's lib/micropython-lib
require("umqtt.simple")
