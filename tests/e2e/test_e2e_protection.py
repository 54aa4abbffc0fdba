"""Protection end to end under the real MicroPython VM: the firmware trips
and recovers against the simulated pack, and bmsctl reads why over Modbus."""
import io
import json
import time

import pytest

from bms_sim.server import SimServer
from bmsctl import cli as ctl


class Out(io.StringIO):
    def isatty(self):
        return False


def status(link):
    out = Out()
    assert ctl.main(["--port", link, "--timeout", "2", "status", "--json"], out=out) == 0
    return json.loads(out.getvalue())


def events(link):
    out = Out()
    assert ctl.main(["--port", link, "events", "--json"], out=out) == 0
    return [e["text"] for e in json.loads(out.getvalue())]


def wait_for(link, cond, server, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = status(link)
        if cond(d):
            return d
        assert not server.exited.is_set(), server.log_tail()
        time.sleep(0.05)
    pytest.fail("condition not reached; last status: %s\n%s" % (d, server.log_tail()))


@pytest.fixture
def sim(tmp_path, afe):
    """A 4S LFP bq769x0 pack, or a 16S LFP bq76952 pack (tests/conftest.py afe)."""
    afe.provision(tmp_path, 4, "lfp", 10000, 1000)
    world = afe.world(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=97.0, spread_mv=10, seed=5)
    server = SimServer(world, str(tmp_path), speed=None, link_path=str(tmp_path / "tty"))
    server.afe = afe
    with server:
        yield server
    assert "Traceback" not in server.log_tail(), server.log_tail()


@pytest.mark.slow
def test_over_voltage_trip_and_release_read_over_modbus(sim):
    link = sim.link_path
    d = wait_for(link, lambda d: d["charge_fet"] and d["discharge_fet"], sim)
    with sim.lock:
        sim.world.charger.set(5000, None)  # a charger that never stops
    d = wait_for(link, lambda d: "cell_ov" in d["protections"], sim)
    assert d["charge_fet"] is False and d["discharge_fet"] is True
    assert d["charge_off_reason"] == "cell_ov" and d["discharge_off_reason"] is None
    assert "cell_ov_warn" in d["warnings"]
    assert d["cell_max_v"] > 3.5  # relaxing now that no charge current flows
    out = Out()
    assert ctl.main(["--port", link, "events"], out=out) == 0
    text = out.getvalue()
    assert "Cell over-voltage: protection tripped at " in text and "Firmware started (boot " in text
    with sim.lock:
        sim.world.charger.off()
        sim.world.load.set(5000)
    d = wait_for(link, lambda d: "cell_ov" not in d["protections"] and d["charge_fet"], sim)
    out = Out()
    assert ctl.main(["--port", link, "events", "--json"], out=out) == 0
    texts = [e["text"] for e in json.loads(out.getvalue())]
    assert any(t.startswith("Cell over-voltage released at ") for t in texts)


def test_thermistor_fault_under_micropython(sim):
    link = sim.link_path
    wait_for(link, lambda d: d["charge_fet"] and d["discharge_fet"], sim)
    with sim.lock:
        sim.world.chip.thermistor_fault(0, "open")
    d = wait_for(link, lambda d: "temp_sensor" in d["protections"], sim)
    assert d["charge_fet"] is False and d["discharge_fet"] is False
    assert d["temps_c"][0] is None
    out = Out()
    assert ctl.main(["--port", link, "status"], out=out) == 0
    assert "temp_sensor: a thermistor is open or shorted (both FETs off)" in out.getvalue()
    with sim.lock:
        sim.world.chip.thermistor_fault(0, None)
    wait_for(link, lambda d: not d["protections"] and d["charge_fet"] and d["discharge_fet"], sim)


def test_afe_reset_and_crc_storm_under_micropython(sim):
    link = sim.link_path
    wait_for(link, lambda d: d["charge_fet"] and d["discharge_fet"], sim)
    with sim.lock:
        sim.world.chip.power_on_reset()
    # the reset and its recovery take a few simulated seconds: the log keeps them
    wait_for(link, lambda d: any("AFE reset itself: protection released" in t for t in events(link)), sim)
    texts = events(link)
    assert any("AFE reset itself: protection tripped" in t for t in texts)
    d = wait_for(link, lambda d: not d["protections"] and d["charge_fet"], sim)
    with sim.lock:
        assert sim.afe.configured(sim.world.chip), "the firmware configured the chip again"
    with sim.lock:
        sim.world.chip.corrupt_every = 1
    d = wait_for(link, lambda d: "afe_comm" in d["protections"], sim)
    assert not d["charge_fet"] and not d["discharge_fet"]
    with sim.lock:
        assert sim.world.fets() == (False, False), "the chip itself has the FETs off"
        sim.world.chip.corrupt_every = 0
    d = wait_for(link, lambda d: not d["protections"] and d["charge_fet"], sim)
    assert d["afe_crc_errors"] > 0
