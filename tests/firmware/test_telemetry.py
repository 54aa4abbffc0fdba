"""The telemetry state message (lib/bms/telemetry.py): what a Modbus master
reads, as JSON, written without allocating."""
import json
from array import array

from bms import regmap as M
from bms.spec import regtable as RT
from bms.telemetry import MESSAGE_SIZE, StateWriter
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.world import World
from bmsctl import regs as RG
from conftest import run_mpy


def _message(words):
    sw = StateWriter()
    n = sw.state(words)
    assert n <= MESSAGE_SIZE
    return json.loads(bytes(sw.buf[:n]))


def test_the_message_says_what_the_registers_say(tmp_path):
    provision(str(tmp_path), 4, "lfp", 10000, 1000)
    world = World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0)
    world.load.set(5000)
    sim = DirectSim(world, str(tmp_path))
    sim.run(20000)
    words = sim.app.ir.words
    raw = RG.decode(RT.INPUT_REGS, words)
    got = _message(words)
    assert got["pack_v"] == raw["pack_mv"] / 1000 and got["current_a"] == raw["current_ma"] / 1000
    assert got["current_a"] < -4.9  # discharging at 5 A
    assert abs(got["power_w"] - got["pack_v"] * got["current_a"]) < 0.15
    assert got["cells_v"] == [v / 1000 for v in raw["cell_mv"][:4]]
    assert (got["cell_min_v"], got["cell_max_v"], got["cell_delta_mv"]) == (
        raw["cell_min_mv"] / 1000, raw["cell_max_mv"] / 1000, raw["cell_spread_mv"])
    assert got["soc_pct"] == raw["soc_dpct"] / 10 and got["remaining_ah"] == raw["remaining_mah"] / 1000
    assert got["remaining_wh"] == raw["remaining_dwh"] / 10 and got["soh_pct"] == raw["soh_dpct"] / 10
    assert got["temps_c"] == [raw["temp_dc"][0] / 10, None, None]  # one thermistor fitted
    assert got["chg_fet"] is True and got["dsg_fet"] is True
    assert got["mode"] == "working" and got["uptime_s"] == raw["uptime_s"]
    assert (got["balancing"], got["warnings"], got["protections"]) == (
        raw["balance_mask"], raw["warn_flags"], raw["protect_flags"])


def test_the_longest_message_fits_and_parses():
    # every register at its widest (whatever the firmware could put there)
    for fill in (0xFFFF, 0x7FFF, 0x8000):
        w = array("H", [fill] * M.IR_SIZE)
        w[M.IR_CELL_COUNT] = M.MAX_CELLS
        w[M.IR_POWER_MODE] = 7
        got = _message(w)
        assert len(got["cells_v"]) == 16 and got["cells_v"][0] == fill / 1000 and got["mode"] == "unknown"
        # a count past the cell registers stops at them
        w[M.IR_CELL_COUNT] = fill
        assert len(_message(w)["cells_v"]) == 16


def test_written_with_the_heap_locked_under_micropython(micropython):
    out = run_mpy(micropython, "mpy_telemetry_alloc.py").stdout.splitlines()
    got = json.loads(out[0])
    assert got["pack_v"] == 55.123 and got["current_a"] == -123.456
    assert got["power_w"] == -6805.3  # 55.123 V x -123.456 A = -6805.26 W
    assert got["cells_v"] == [(3600 + i) / 1000 for i in range(16)]
    assert got["temps_c"] == [25.1, -5.5, None]
    assert got["chg_fet"] is False and got["dsg_fet"] is True and got["mode"] == "low_power"
    assert (got["protections"], got["warnings"], got["latched"], got["balancing"]) == (1 << 28, 1 << 22, 64, 0x4001)
    assert got["uptime_s"] == 86400 * 400 and got["cycles"] == 0.11
    # the ring kept the newest 8 of 20 samples; the oldest kept one went out first
    assert out[1] == "RING 7 12"
    stored = json.loads(out[2])
    assert stored["stored"] is True and stored["uptime_s"] == 1012
    for k in ("mode", "pack_v", "current_a", "power_w", "soc_pct", "cell_min_v", "cell_max_v", "temps_c",
              "chg_fet", "dsg_fet", "warnings", "protections"):
        assert stored[k] == got[k], k


def test_a_sample_keeps_the_main_values_of_the_state(tmp_path):
    import random

    from bms.telemetry import SAMPLE_SIZE, sample_into

    rnd = random.Random(7)
    for _ in range(200):
        w = array("H", [rnd.randrange(0x10000) for _ in range(M.IR_SIZE)])
        w[M.IR_CELL_COUNT] = rnd.randrange(16)
        w[M.IR_CURRENT_MA] = rnd.choice((0, 0xFFFF, 0x0012, 0xFFED))  # currents of either sign
        w[M.IR_PACK_MV] = 0
        w[M.IR_UPTIME_S] &= 0x3FFF
        full = _message(w)
        rec = bytearray(SAMPLE_SIZE)
        sample_into(w, rec)
        sw = StateWriter()
        got = json.loads(bytes(sw.buf[:sw.sample(rec)]))
        for k in ("uptime_s", "mode", "pack_v", "current_a", "power_w", "soc_pct", "cell_min_v", "cell_max_v",
                  "temps_c", "chg_fet", "dsg_fet", "warnings", "protections"):
            assert got[k] == full[k], k


def test_discovery_and_state_carry_16_cells():
    """A 16-cell pack on MQTT: Home Assistant discovery has a sensor for
    every cell, cell 16's template picks cells_v[15], and the state message
    (the register image as bms.publish leaves it) has it there."""
    from bms import netcfg
    from bms import uplink as U

    class Board:  # what Uplink asks a board for before it goes on the network
        def device_id(self):
            return "bms-unused"

        def wall_us(self):
            return 0

    w = array("H", bytes(2 * M.IR_SIZE))
    w[M.IR_CELL_COUNT] = 16
    for i in range(16):
        w[M.IR_CELL_MV + i] = 3300 + 3 * i
    cfg = netcfg.parse("wifi_ssid = home\nhost = 192.168.1.5\ndevice_id = pack16\n")
    up = U.Uplink(Board(), cfg, w, None, None, 0, 0, 16)
    count = up.discovery_count()
    assert count == len(U._SENSORS) + 3 + 16 + len(U._FETS)  # every cell has its sensor
    configs = {}
    for k in range(count):
        n, t = up._discovery(k)
        configs[bytes(up.topic[:t]).decode()] = json.loads(bytes(up.writer.buf[:n]))
    assert len(configs) == count
    cells = sorted(int(t.split("/")[3][len("cells_v"):]) for t in configs if "/cells_v" in t)
    assert cells == list(range(1, 17))
    c16 = configs["homeassistant/sensor/pack16/cells_v16/config"]
    assert c16["name"] == "Cell 16" and c16["unique_id"] == "pack16_cells_v16"
    assert c16["value_template"] == "{{ value_json.cells_v[15] }}" and c16["unit_of_measurement"] == "V"
    assert _message(w)["cells_v"][15] == 3.345
