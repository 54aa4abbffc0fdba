# Every target builds .venv itself on first use: a fresh machine needs only
# Python 3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_SECONDS ?= 0
DEMO_CELLS ?= 4
DEMO_SPEED ?= 60

.PHONY: setup test demo bench-traces bench-soc clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	@touch $@

# CPython unit and property tests, then the firmware under the MicroPython
# unix port (imports, heap-locked paths, end-to-end over the simulated link).
test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python -m bms_sim.demo --cells $(DEMO_CELLS) --speed $(DEMO_SPEED) --seconds $(DEMO_SECONDS)

# State-of-charge accuracy: regenerate the physics-model traces (PyBaMM, a
# development-only dependency) and score the firmware on them.
bench-traces: setup
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(BIN)/python -m bench.make_traces --out bench/traces

bench-soc: setup
	$(BIN)/python -m bench.score --traces bench/traces --out docs/SOC_ACCURACY.md --results build/bench-soc --replay-cmd $(BIN)/bms-sim

clean:
	rm -rf build .pytest_cache .hypothesis
