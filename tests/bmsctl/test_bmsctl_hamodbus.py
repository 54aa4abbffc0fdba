"""`bmsctl ha-modbus`: the Home Assistant Modbus YAML follows the register
map, and every sensor it defines reads back sensibly from the simulated BMS."""
import io
import json
import struct

import pytest
import yaml
from bms import regmap as M
from bms.spec import regtable as RT
from bms import soc as S
from bmsctl import cli as ctl
from bmsctl import client
from bmsctl import hamodbus as HA
from conftest import lfp4_sim, rtu_client

ROWS = {r[1]: r for r in RT.INPUT_REGS}
HA_UNIT = {"degC": "°C"}
# What Home Assistant accepts for each device class we use (sensor/const.py).
DEVICE_CLASS_UNITS = {"voltage": {"V"}, "current": {"A"}, "battery": {"%"}, "temperature": {"°C"},
                      "energy_storage": {"Wh"}, "duration": {"s", "min", "h"}}
DEVICE_CLASS_STATES = {"voltage": {"measurement"}, "current": {"measurement"}, "battery": {"measurement"},
                       "temperature": {"measurement"}, "energy_storage": {"measurement"},
                       "duration": {"measurement", "total", "total_increasing"}}
STRUCT = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i"}


def hub_of(text):
    doc = yaml.safe_load(text)
    assert list(doc) == ["modbus"] and len(doc["modbus"]) == 1
    return doc["modbus"][0]


def entities(hub):
    return hub["sensors"] + hub.get("binary_sensors", [])


def register_of(sensor, prefix="bms"):
    """(register row, element index) a sensor names through its unique_id."""
    uid = sensor["unique_id"]
    assert uid.startswith(prefix + "_"), uid
    rest = uid[len(prefix) + 1:]
    if rest.endswith("_bit0"):  # a binary sensor
        rest = rest[:-5]
    if rest in ROWS:
        return ROWS[rest], 0
    base, _, k = rest.rpartition("_")
    assert base in ROWS and k.isdigit() and ROWS[base][3] > 1, "unique_id %r names no register" % uid
    return ROWS[base], int(k) - 1


def parser():
    return ctl.build_parser()


def run(argv):
    args = parser().parse_args(argv)
    out = io.StringIO()
    assert args.func(args, out) == 0
    return out.getvalue()


@pytest.mark.parametrize("unit,baud,parity,stopbits", [(1, 19200, "E", 1), (7, 9600, "N", 2), (247, 115200, "O", 1)])
def test_hub_follows_the_arguments(unit, baud, parity, stopbits):
    text = run(["--port", "/dev/ttyUSB1", "--unit", str(unit), "--baud", str(baud), "--parity", parity,
                "ha-modbus", "--cells", "4", "--name", "garage bms", "--scan-interval", "10"])
    hub = hub_of(text)
    assert hub["name"] == "garage bms" and hub["type"] == "serial" and hub["method"] == "rtu"
    assert hub["port"] == "/dev/ttyUSB1" and hub["baudrate"] == baud and hub["bytesize"] == 8
    assert hub["parity"] == parity and hub["stopbits"] == stopbits
    for e in entities(hub):
        assert e["device_address"] == unit and "slave" not in e
        assert e["scan_interval"] == 10
        assert e["name"].startswith("garage bms ") and e["unique_id"].startswith("garage_bms_")


def test_defaults_are_bmsctls():
    hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", 4))
    assert (hub["name"], hub["baudrate"], hub["parity"], hub["stopbits"]) == ("bms", 19200, "E", 1)
    assert all(e["scan_interval"] == 5 and e["device_address"] == 1 for e in entities(hub))


def test_every_sensor_matches_the_register_map():
    hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", M.MAX_CELLS))
    for s in hub["sensors"]:
        row, k = register_of(s)
        addr, name, typ, count, exp, unit = row[:6]
        assert typ in STRUCT, "%s: Home Assistant has no data_type for %s" % (name, typ)
        assert s["input_type"] == "input"
        assert s["address"] == addr + k * RT.WORDS[typ], name
        assert s["data_type"] == typ, name
        assert s["scale"] == pytest.approx(10.0 ** exp, rel=1e-12), name
        assert s["precision"] == max(0, -exp), name
        assert s.get("unit_of_measurement") == (HA_UNIT.get(unit, unit) or None), name
        dc = s.get("device_class")
        if dc:
            assert s.get("unit_of_measurement") in DEVICE_CLASS_UNITS[dc], name
            assert s.get("state_class") in DEVICE_CLASS_STATES[dc], name
        assert "count" not in s and "swap" not in s  # 32-bit: high word first, HA's default
    for b in hub["binary_sensors"]:
        row, k = register_of(b)
        assert b["input_type"] == "input" and b["address"] == row[0] and RT.WORDS[row[2]] == 1


def test_the_sensors_a_pack_owner_needs_are_there():
    hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", 4))
    regs = {register_of(s)[0][1] for s in hub["sensors"]}
    need = {"pack_mv", "current_ma", "soc_dpct", "soh_dpct", "remaining_mah", "remaining_dwh", "cycles_dc",
            "cell_mv", "cell_min_mv", "cell_max_mv", "cell_spread_mv", "temp_dc", "tte_min", "ttf_min",
            "fet_flags", "protect_flags", "warn_flags", "power_mode"}
    assert need <= regs, need - regs
    by_uid = {s["unique_id"]: s for s in hub["sensors"]}
    assert by_uid["bms_pack_mv"]["device_class"] == "voltage"
    assert by_uid["bms_current_ma"]["device_class"] == "current"
    assert by_uid["bms_soc_dpct"]["device_class"] == "battery"
    assert by_uid["bms_remaining_dwh"]["device_class"] == "energy_storage"


def test_names_unique_ids_and_addresses_are_unique():
    hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", M.MAX_CELLS))
    ents = entities(hub)
    names = [e["name"] for e in ents]
    uids = [e["unique_id"] for e in ents]
    assert len(set(names)) == len(names)
    assert len(set(uids)) == len(uids)
    # Home Assistant 2021.9-2024.x drops a second entity on the same address
    addrs = [(e["address"], e["input_type"]) for e in ents]
    assert len(set(addrs)) == len(addrs)


@pytest.mark.parametrize("cells", [3, 4, 15, 16])
def test_one_sensor_per_cell(cells):
    hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", cells))
    got = sorted(register_of(s)[1] for s in hub["sensors"] if register_of(s)[0][1] == "cell_mv")
    assert got == list(range(cells))


def test_cell_16_follows_cell_15_and_cells_1_to_15_keep_their_sensors():
    """A configuration written for 15 cells stays valid: cells 1-15 at
    0x0020-0x002E as ever, their unique_ids unchanged; cell 16 at 0x002F."""
    before = None
    for cells in (15, 16):
        hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", cells))
        by_uid = {s["unique_id"]: s for s in hub["sensors"]}
        assert [by_uid["bms_cell_mv_%d" % k]["address"] for k in range(1, 16)] == list(range(0x20, 0x2F))
        if before is not None:
            assert [s for s in hub["sensors"] if s["unique_id"] != "bms_cell_mv_16"] == before
        before = hub["sensors"]
    c16 = by_uid["bms_cell_mv_16"]
    assert c16["address"] == 0x002F and c16["name"] == "bms cell 16 voltage" and c16["data_type"] == "uint16"
    assert c16["scale"] == 0.001 and c16["unit_of_measurement"] == "V" and c16["device_class"] == "voltage"
    fifteen = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", 15))["sensors"]
    assert "bms_cell_mv_16" not in {s["unique_id"] for s in fifteen}


def test_missing_values_carry_nan_value():
    hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", 4))
    temps = [s for s in hub["sensors"] if register_of(s)[0][5] == "degC"]
    assert len(temps) == ROWS["temp_dc"][3]
    assert all(s["nan_value"] == M.TEMP_INVALID for s in temps)
    times = [s for s in hub["sensors"] if register_of(s)[0][1] in ("tte_min", "ttf_min")]
    assert len(times) == 2 and all(s["nan_value"] == S.NO_TIME for s in times)


def test_output_is_deterministic_and_json_says_the_same():
    args = ["--port", "/dev/ttyUSB0", "ha-modbus", "--cells", "8"]
    text = run(args)
    assert text == run(args)
    assert text == HA.generate("/dev/ttyUSB0", 1, 19200, "E", 8)
    assert yaml.safe_load(text) == json.loads(run(args + ["--json"]))


def test_scalars_stay_what_they_are():
    for v in ("N", "y", "no", "on", "true", "null", "%", "°C", "a: b", "x #y", "", "0x10", "1", " a"):
        assert yaml.safe_load("k: " + HA._scalar(v)) == {"k": v}, v
    for v in (0.001, 0.1, 0.01, 1e-06, 1.0):
        assert yaml.safe_load("k: " + HA._scalar(v)) == {"k": v}, v
        assert "e" not in HA._scalar(v)  # YAML 1.1 reads 1e-06 as a string
    assert HA._scalar("/dev/ttyUSB0") == "/dev/ttyUSB0"


@pytest.mark.parametrize("bad", ["0", "2", "17", "four", "-1"])
def test_bad_cells_says_what_to_give(bad, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["ha-modbus", "--cells", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--cells" in err and "series cell count, 3-16" in err  # the register map's limit, MAX_CELLS


def test_cells_is_required(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["ha-modbus"])
    assert "--cells" in capsys.readouterr().err


def test_bad_serial_settings_are_refused():
    with pytest.raises(client.CtlError, match="1-247"):
        run(["--unit", "0", "ha-modbus", "--cells", "4"])
    with pytest.raises(client.CtlError, match="9600, 19200"):
        run(["--baud", "4800", "ha-modbus", "--cells", "4"])
    with pytest.raises(ValueError, match="series cell count"):
        HA.generate("/dev/ttyUSB0", 1, 19200, "E", 17)
    with pytest.raises(ValueError, match="--name"):
        HA.generate("/dev/ttyUSB0", 1, 19200, "E", 4, name="--")


def test_the_simulator_port_gets_a_note(capsys):
    hub = hub_of(run(["ha-modbus", "--cells", "4"]))
    assert hub["port"] == client.DEFAULT_PORT
    assert "--port /dev/ttyUSB0" in capsys.readouterr().err
    run(["--port", "/dev/ttyUSB0", "ha-modbus", "--cells", "4"])
    assert capsys.readouterr().err == ""


def test_the_doc_names_every_register_used():
    import os

    from conftest import ROOT

    with open(os.path.join(ROOT, "docs", "HOME_ASSISTANT.md"), encoding="utf-8") as f:
        doc = f.read()
    hub = hub_of(HA.generate("/dev/ttyUSB0", 1, 19200, "E", 4))
    for e in entities(hub):
        name = register_of(e)[0][1]
        assert "`%s`" % name in doc, "docs/HOME_ASSISTANT.md does not explain %s" % name


def test_bmsctl_main_runs_it(capsys):
    out = io.StringIO()
    assert ctl.main(["--port", "/dev/ttyUSB0", "ha-modbus", "--cells", "4"], out=out) == 0
    assert out.getvalue() == HA.generate("/dev/ttyUSB0", 1, 19200, "E", 4)
    with pytest.raises(SystemExit) as e:
        ctl.main(["ha-modbus", "--cells", "17"])
    assert e.value.code == 2


# -- end to end: read every generated entity from the simulated BMS as Home Assistant would

# Plausible engineering values for the 4-cell 10 Ah LFP pack of conftest.lfp4_sim, at rest.
# None: the sensor's nan_value (Home Assistant shows "unknown"); OR_UNKNOWN: either.
OR_UNKNOWN = "or unknown"
PLAUSIBLE = {
    "pack_mv": (10.0, 15.0), "current_ma": (-0.2, 0.2), "soc_dpct": (1.0, 99.0), "soh_dpct": (90.0, 101.0),
    "remaining_mah": (0.1, 10.0), "full_capacity_mah": (9.0, 11.0), "remaining_dwh": (1.0, 140.0),
    "cycles_dc": (0.0, 1.0), "tte_min": (0, 65534, OR_UNKNOWN), "ttf_min": (0, 65534, OR_UNKNOWN),
    "cell_mv": (2.5, 3.65), "cell_min_mv": (2.5, 3.65), "cell_max_mv": (2.5, 3.65), "cell_spread_mv": (0.0, 0.1),
    "cell_min_num": (1, 4), "cell_max_num": (1, 4),
    "temp_dc": [(15.0, 35.0), None, None],  # a bq76920 has TS1 only
    "fet_flags": (3, 3), "chg_off_reason": (0, 0), "dsg_off_reason": (0, 0), "protect_flags": (0, 0),
    "warn_flags": (0, 0), "latched_flags": (0, 0), "balance_mask": (0, 15), "power_mode": (0, 0),
    "uptime_s": (1, 3600), "soc_state": (0, 0), "draw_ua": (0.03, 0.13), "drawn_mah": (0.0, 0.01),
}


def ha_value(sensor, words):
    """The state Home Assistant's Modbus sensor computes from the registers."""
    raw = struct.unpack(STRUCT[sensor["data_type"]], struct.pack(">%dH" % len(words), *words))[0]
    nan = sensor.get("nan_value")
    if nan is not None and raw in (nan, -nan):
        return None
    return round(raw * sensor["scale"], sensor["precision"])


def test_every_entity_reads_back_from_the_simulated_bms(tmp_path):
    with lfp4_sim(tmp_path, tmp_path / "ttyBMS", soc_pct=60.0, spread_mv=20, seed=5) as sim:
        # the pty carries no parity: 8N2, as bmsctl uses it there
        hub = hub_of(HA.generate(sim.link_path, 1, 19200, "N", 4))
        client = rtu_client(hub["port"], retries=1)
        try:
            values = []
            for e in entities(hub):
                n = RT.WORDS[e.get("data_type", "uint16")]
                read = (client.read_input_registers if e["input_type"] == "input"
                        else client.read_holding_registers)
                rr = read(e["address"], count=n, device_id=e["device_address"])
                assert not rr.isError(), (e["name"], rr)
                assert len(rr.registers) == n
                values.append((e, rr.registers))
        finally:
            client.close()

    cells = []
    for e, words in values:
        row, k = register_of(e)
        if "data_type" not in e:  # a binary sensor: bit 0
            assert row[1] == "config_state" and words[0] & 1, e["name"]
            continue
        v = ha_value(e, words)
        assert row[1] in PLAUSIBLE, "%s: add its plausible range to PLAUSIBLE" % row[1]
        want = PLAUSIBLE[row[1]]
        if isinstance(want, list):
            want = want[k]
        if want is None:
            assert v is None, (e["name"], words)
        elif not (v is None and OR_UNKNOWN in want):
            assert v is not None and want[0] <= v <= want[1], (e["name"], v, want)
        if row[1] == "cell_mv":
            cells.append(v)
    vals = {e["unique_id"]: ha_value(e, w) for e, w in values if "data_type" in e}
    assert len(cells) == 4
    assert vals["bms_pack_mv"] == pytest.approx(sum(cells), abs=0.05)
    assert vals["bms_cell_min_mv"] == pytest.approx(min(cells), abs=0.005)
    assert vals["bms_cell_max_mv"] == pytest.approx(max(cells), abs=0.005)
