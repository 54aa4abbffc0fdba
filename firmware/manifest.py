# Freeze the BMS firmware into a MicroPython image for the ESP32: its
# bytecode then runs from flash, not RAM, and nothing is compiled or loaded
# from the filesystem at boot. firmware/README.md has the build commands:
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/to/firmware/manifest.py
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

# the bms package, less its host-only modules (tools/bms_sim/build.py HOST_ONLY)
HOST_ONLY = ("regdoc.py", "paramtable.py", "regmap.py", "protrules.py")
_files = []
for _dir, _subdirs, _names in os.walk("../lib/bms"):
    _subdirs[:] = sorted(d for d in _subdirs if d != "__pycache__")
    for _name in sorted(_names):
        _rel = os.path.relpath(os.path.join(_dir, _name), "../lib/bms").replace(os.sep, "/")
        if _name.endswith(".py") and _rel not in HOST_ONLY:
            _files.append(_rel)
package("bms", files=_files, base_path="../lib")

# the board's pin map, imported by bms.boards.esp32 as `board_pins`
module("board_pins.py", base_path="boards/" + os.environ.get("BMS_BOARD", "reference"))

if os.environ.get("BMS_FROZEN_MAIN", "1") != "0":
    module("boot.py", base_path="..")
    module("main.py", base_path="..")

# when the firmware gets MQTT: require("umqtt.simple")
