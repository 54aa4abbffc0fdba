"""bmsctl's parameter handling without a serial link: parsing in
engineering units, whole-set validation, the write planner and profiles.

The device in these tests is the firmware's own write handling
(bms.config.Config over bms.regimage.RegisterImage) driven in-process: a
plan passes here only if the real validation takes every request in it.
"""
import io
import json

import pytest

from bms import paramcheck as C
from bms import params as P
from bms import paramload as PL
from bms.spec import paramtable as PT
from bms.spec import regdoc as D
from bms import regmap as M
from bms.spec import regtable as RT
from bms.config import Config
from bms.events import EV_PARAM_SET
from bms.regimage import RegisterImage
from bmsctl import cli as ctl
from bmsctl import client
from bmsctl import csvlog
from bmsctl import fmt
from bmsctl import prompt
from bmsctl import config as CF
from bmsctl import planner as PN

LFP_4S = "chemistry=lfp\ncells=4\ncapacity_mah=100000\n"


class _Store:
    write_errors = 0
    failing = 0

    def save(self, version, payload):
        return True


class FakeBms:
    """A BMS without Modbus: bms.config.Config on register images, with the
    methods bmsctl's Bms offers (parameters, control registers, restart)."""

    def __init__(self, text=None):
        prm = P.Params()
        if text:
            PL.load_text(prm, text)
            assert not prm.errors, prm.errors
        prm.store = _Store()
        self.prm = prm
        self.events = []
        self.boot = 0
        self.now = 0
        self.requests = []  # (address, registers) of every parameter write
        self.unit = 1
        self._boot()

    def _boot(self):
        self.hr = RegisterImage(M.HR_SIZE)
        self.ir = RegisterImage(M.IR_SIZE, RT.mapped_mask(RT.INPUT_REGS, M.IR_SIZE))
        self.cfg = Config(self.prm, self.hr, self.ir, lambda c, v, t: self.events.append((c, v)))

    def _w(self, addr, words):
        data = bytes(b for w in words for b in ((w >> 8) & 0xFF, w & 0xFF))
        code = self.cfg.write(addr, len(words), data, 0, False, self.now)
        self.now += 10
        work = self.cfg.service(self.now, 0)
        if work & 4:  # RESTART: the stored set boots again
            self.boot += 1
            self._boot()
        return code

    # -- what bmsctl.client.Bms offers -----------------------------------------
    def read_values(self):
        w = self.hr.words
        out = []
        for i, row in enumerate(CF.ROWS):
            a = row[0]
            if CF.WIDTH[i] == 2:
                v = (w[a] << 16) | w[a + 1]
            else:
                v = w[a]
                if row[2] == "int16" and v & 0x8000:
                    v -= 0x10000
            out.append(v)
        return out

    def write_params(self, addr, words):
        self.requests.append((addr, len(words)))
        return self._w(addr, words)

    def write_control(self, addr, value):
        return self._w(addr, [value])

    def read_input(self, addr, count):
        self.cfg.publish_state(self.now)
        return list(self.ir.words[addr:addr + count])

    def config_state(self):
        return self.read_input(M.IR_CONFIG_STATE, 1)[0]

    def config_error(self):
        return self.read_input(M.IR_CONFIG_ERROR, 1)[0]

    def newest_boot(self):
        return self.boot, 0

    def read_live(self):
        d = {r[1]: [0] * r[3] if r[3] > 1 else 0 for r in client.live_regs()}
        d["config_state"] = self.config_state()
        d["fet_flags"] = 3 if self.cfg.running_configured else 0
        d["cell_count"] = self.prm.cells()
        return d

    def device_id(self):
        return {"vendor": "open-bms", "product": "fake", "version": "0"}

    def follow(self, values):
        self.unit = values[P.P_MODBUS_ADDRESS]

    def quick(self):
        import contextlib

        return contextlib.nullcontext()

    def close(self):
        pass

    def unlock(self, pin=1234):
        return self._w(M.HR_UNLOCK, [pin])


def configured(text=LFP_4S):
    dev = FakeBms(text)
    assert dev.prm.configured()
    return dev


def with_changes(values, **changes):
    v = list(values)
    for name, raw in changes.items():
        v[CF.INDEX[name]] = raw
    return v


def run_plan(dev, target, **kw):
    steps = PN.plan(dev.read_values(), target, **kw)
    PN.execute(dev, steps)  # raises WriteRefused on any refused request
    got = dev.read_values()
    for i in range(CF.COUNT):
        if i != P.P_PIN:
            assert got[i] == target[i], CF.NAMES[i]
    return steps


# -- parsing ------------------------------------------------------------------

@pytest.mark.parametrize("name, text, param, raw", [
    ("cell_ov_mv", "3650", "cell_ov_mv", 3650),
    ("cell_ov_mv", "3650mV", "cell_ov_mv", 3650),
    ("cell_ov_mv", "3.65V", "cell_ov_mv", 3650),
    ("cell_ov", "3.65", "cell_ov_mv", 3650),
    ("cell_ov", "3.65V", "cell_ov_mv", 3650),
    ("cell_ov", "3.65 v", "cell_ov_mv", 3650),
    ("cell_ov", "3650mV", "cell_ov_mv", 3650),
    ("chg_ot", "45C", "chg_ot_dc", 450),
    ("chg_ot", "-20.5degC", "chg_ot_dc", -205),
    ("chg_ot_dc", "450", "chg_ot_dc", 450),
    ("capacity", "100Ah", "capacity_mah", 100000),
    ("capacity", "100", "capacity_mah", 100000),
    ("capacity", "2500mAh", "capacity_mah", 2500),
    ("capacity_mah", "2500", "capacity_mah", 2500),
    ("shunt", "0.5", "shunt_uohm", 500),
    ("shunt", "500uOhm", "shunt_uohm", 500),
    ("hw_scd_delay", "200us", "hw_scd_delay_us", 200),
    ("hw_scd_delay", "0.0002", "hw_scd_delay_us", 200),
    ("cell_ov_delay", "2s", "cell_ov_delay_ms", 2000),
    ("cell_ov_delay", "1500ms", "cell_ov_delay_ms", 1500),
    ("bal_min_idle", "30min", "bal_min_idle_ms", 1800000),
    ("cell_ov_release", "3.45V", "cell_ov_release_mv", 3450),
    ("cell_ov_release", "5s", "cell_ov_release_ms", 5000),
    ("chg_oc", "50A", "chg_oc_ma", 50000),
    ("modbus_baud", "38400", "modbus_baud", 38400),
    ("cell_channels", "0x17", "cell_channels", 0x17),
    ("CELL_OV", "3.6V", "cell_ov_mv", 3600),
])
def test_values_in_engineering_or_raw_units(name, text, param, raw):
    assert CF.parse_value(name, text) == [(CF.INDEX[param], raw)]


def test_chemistry_and_cells_shorthands():
    assert CF.parse_value("chemistry", "NMC") == [(P.P_CHEMISTRY, P.CHEM_NMC)]
    cur = FakeBms().read_values()
    # the default wiring for 4 cells on the smallest AFE that takes them
    assert CF.parse_value("cells", "4", cur) == [(P.P_CELL_CHANNELS, 0x17), (P.P_AFE_GROUPS, 1)]
    target, _ = CF.parse_assignments(["cells=8", "afe_groups=2"], cur)
    assert target[P.P_AFE_GROUPS] == 2 and bin(target[P.P_CELL_CHANNELS]).count("1") == 8


@pytest.mark.parametrize("item, words", [
    ("cell_ov_mv=9999", ["cell_ov_mv=9999 (9.999 V) is outside 1.500..5.000 V"]),
    ("cell_ov=9.999V", ["cell_ov_mv=9999 (9.999 V) is outside 1.500..5.000 V"]),
    ("chg_ot=130C", ["chg_ot_dc=1300 (130.0 degC) is outside -40.0..120.0 degC"]),
    ("cell_ov=3.6505", ["steps of 0.001 V"]),
    ("cell_ov=3.65A", ["'A' is not a unit of cell_ov_mv", "V"]),
    ("cell_ov_mv=3.65", ["whole number of mV", "cell_ov=3.65"]),
    ("cell_ov_release=3.4", ["ambiguous", "cell_ov_release_mv", "cell_ov_release_ms", "unit"]),
    ("cel_ov=3.6", ["unknown parameter 'cel_ov'", "did you mean cell_ov", "bmsctl config get"]),
    ("cell_ov=high", ["not a number", "cell_ov=3.650V"]),
    ("scd_retries=3s", ["has no unit"]),
    ("chemistry=lipo", ["lfp, nmc or lto"]),
    ("cells=20", ["3 to 16", "bq76952 3-16"]),
    ("cells=8", ["afe_groups=1", "bq76920", "3 to 5", "afe_groups=N"]),
    ("cell_ov", ["NAME=VALUE"]),
])
def test_bad_values_name_the_problem_and_the_fix(item, words):
    cur = configured().read_values()
    with pytest.raises(CF.ConfigError) as e:
        CF.parse_assignments([item], cur)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("item, words", [
    # 16 inputs: the map and the parameter take them, the bq769x0 family does not (a bq76952 does: afe_type=1)
    ("cell_channels=0xFFFF", ["cell_channels", "afe_groups 3: a bq76940, up to 15 cells", "nothing was written"]),
    ("cells=16", ["afe_groups=3, a bq76940", "9 to 15 cells", "afe_type=1 (a bq76952)"]),
    ("cells=17", ["3 to 16 cells in series", "bq76940 9-15", "bq76952 3-16"]),
])
def test_more_cells_than_the_afe_takes_are_refused_naming_its_limit(fake, capsys, item, words):
    fake["dev"] = configured("chemistry=lfp\ncells=15\ncapacity_mah=100000\n")  # a bq76940, every input
    rc, out, err = run(["config", "set", item, "--pin", "1234"], capsys)
    assert rc == 2
    for w in words:
        assert w in err, (w, err)
    assert fake["dev"].requests == []


def test_the_firmware_refuses_a_16_input_mask_on_a_bq769x0():
    """cell_channels is in range up to 0xFFFF (a 16-input AFE); on a
    bq76940 (afe_groups 3) the wiring rule refuses it, exception 03."""
    dev = configured("chemistry=lfp\ncells=15\ncapacity_mah=100000\n")
    assert dev.unlock() == 0
    assert PT.TABLE[P.P_CELL_CHANNELS][7] == 0xFFFF
    before = dev.read_values()[P.P_CELL_CHANNELS]
    assert dev.write_params(PT.TABLE[P.P_CELL_CHANNELS][0], [0xFFFF]) == 3
    rule = C.check(with_changes(dev.read_values(), cell_channels=0xFFFF))
    assert dev.config_error() == (M.ERR_RULE << 8) | rule and "up to 15 cells" in D.rule_text(rule)
    assert dev.read_values()[P.P_CELL_CHANNELS] == before == 0x7FFF


def test_a_rule_breach_names_the_rule_and_the_values():
    cur = configured().read_values()
    target = with_changes(cur, cell_ov_warn_mv=3700)  # above the trip at 3.650 V
    msg = CF.validate(cur, target)
    k = C.check(target)
    assert D.rule_text(k) in msg and "rule %d" % k in msg
    assert "cell_ov_warn_mv=3700 (3.700 V)" in msg and "cell_ov_mv=3650 (3.650 V)" in msg


def test_a_fresh_bms_cannot_be_configured_key_by_key():
    cur = FakeBms().read_values()
    target, _ = CF.parse_assignments(["chemistry=lfp", "cells=4", "capacity=100Ah"], cur)
    msg = CF.validate(cur, target)
    assert "bmsctl setup" in msg


def test_unconfiguring_a_configured_pack_is_refused():
    cur = configured().read_values()
    msg = CF.validate(cur, with_changes(cur, capacity_mah=0))
    assert "unconfigured" in msg and "factory-reset" in msg


def test_engineering_text():
    assert CF.eng_text(CF.INDEX["cell_ov_mv"], 3650) == "3.650 V"
    assert CF.eng_text(CF.INDEX["chg_ut_dc"], -200) == "-20.0 degC"
    assert CF.range_text(CF.INDEX["capacity_mah"]) == "0.000..2000.000 Ah"
    assert CF.raw_unit(CF.INDEX["shunt_uohm"]) == "uOhm"
    assert CF.raw_unit(CF.INDEX["chg_ot_dc"]) == "0.1 degC"


# -- the planner, against the firmware's validation -----------------------------

def naive(dev, target):
    """Every changed parameter on its own, in address order: what a tool
    without a planner would send. The exception codes."""
    cur = dev.read_values()
    codes = []
    for i in sorted(CF.changes(cur, target), key=lambda i: CF.ROWS[i][0]):
        codes.append(dev.write_params(CF.ROWS[i][0], CF.words_of(i, target[i])))
    return codes


RAISED = dict(cell_ov_mv=3800, cell_ov_release_mv=3600, cell_ov_warn_mv=3750, hw_ov_mv=3850)
LOWERED = dict(cell_ov_mv=3400, cell_ov_release_mv=3250, cell_ov_warn_mv=3350, full_cell_mv=3300,
               bal_start_mv=3200)


@pytest.mark.parametrize("changes", [RAISED, LOWERED], ids=["raise", "lower"])
def test_trip_release_and_warning_move_together_in_either_direction(changes):
    dev = configured()
    assert dev.unlock() == 0
    target = with_changes(dev.read_values(), **changes)
    assert CF.validate(dev.read_values(), target) is None
    # sent in address order, the firmware refuses some of them
    probe = configured()
    probe.unlock()
    assert any(code == 3 for code in naive(probe, target))
    # planned, it takes every one; and back again
    before = dev.read_values()
    run_plan(dev, target)
    run_plan(dev, before)
    assert dev.prm.configured()


def test_trip_first_when_raising():
    dev = configured()
    dev.unlock()
    cur = dev.read_values()
    steps = run_plan(dev, with_changes(cur, cell_ov_mv=3700, cell_ov_release_mv=3500, cell_ov_warn_mv=3680))
    names = [n for s in steps for n in s.names()]
    assert names.index("cell_ov_mv") < names.index("cell_ov_release_mv")
    assert names.index("cell_ov_mv") < names.index("cell_ov_warn_mv")
    steps = run_plan(dev, cur)
    names = [n for s in steps for n in s.names()]
    assert names.index("cell_ov_mv") > names.index("cell_ov_warn_mv")


def test_setup_of_a_16s_280ah_bq76952_pack_is_written_over_modbus():
    """The usual DIY storage pack (16 LFP cells of 280 Ah) set up over
    Modbus: afe_type goes with the other pack keys (it sat in the reserved
    span, which takes only 0, and every such setup was refused), and the
    defaults that scale with the capacity stay in their rows' ranges
    (hw_scd_ma, 4 C, was 1120 A against a 1000 A limit: the plan refused it)."""
    dev = FakeBms()
    dev.unlock()
    target = CF.setup_target(dev.read_values(), "lfp", 16, 280000)
    assert target[P.P_AFE_TYPE] == 1 and target[P.P_HW_SCD_MA] == 1000000 and target[P.P_HW_OCD_MA] == 560000
    run_plan(dev, target)  # WriteRefused on any refused request; every value read back
    assert dev.prm.configured() and dev.prm.values[P.P_AFE_TYPE] == 1 and dev.prm.cells() == 16


def test_setup_plan_on_a_fresh_bms_writes_the_pack_keys_last():
    dev = FakeBms()
    dev.unlock()
    cur = dev.read_values()
    assert not C.configured(cur)
    target = CF.setup_target(cur, "lfp", 4, 100000)
    steps = run_plan(dev, target)
    pack = [k for k, s in enumerate(steps) if any(i in CF.PACK_KEYS for i in s.changed)]
    other = [k for k, s in enumerate(steps) if not any(i in CF.PACK_KEYS for i in s.changed)]
    assert other and pack and max(other) < min(pack)
    # the write that configures the set is the last one: it was judged whole
    assert "chemistry" in steps[-1].names() and "capacity_mah" in steps[-1].names()
    assert dev.prm.configured()
    assert dev.config_state() & M.CFG_RESTART_PENDING


@pytest.mark.parametrize("max_regs", [2, 3, 4, PN.MAX_WRITE_REGS])
def test_requests_are_capped_and_never_split_a_32_bit_parameter(max_regs):
    dev = FakeBms()
    dev.unlock()
    target = CF.setup_target(dev.read_values(), "nmc", 13, 250000)
    steps = run_plan(dev, target, max_regs=max_regs)
    starts = {r[0]: i for i, r in enumerate(CF.ROWS)}
    for s in steps:
        assert 1 <= s.count <= max_regs
        assert s.addr in starts
        assert sum(CF.WIDTH[i] for i in s.params) == s.count  # whole parameters only
    assert dev.cfg.error >> 8 != M.ERR_SPLIT
    assert all(n <= max_regs for _, n in dev.requests)


def test_adjacent_changes_share_a_request():
    dev = configured()
    dev.unlock()
    ocv = {"ocv_%d_mv" % (5 * k): 3000 + 10 * k for k in range(21)}  # a rising table: all 21 at once
    steps = run_plan(dev, with_changes(dev.read_values(), **ocv))
    assert len(steps) == 1 and steps[0].count == 21 and steps[0].addr == CF.ROWS[CF.INDEX["ocv_0_mv"]][0]


def test_no_valid_single_write_merges_a_span():
    # 5 -> 6 cells moves to a second AFE group: cell_channels and afe_groups
    # are valid only together, with capacity and shunt between them
    dev = configured("chemistry=lfp\ncells=5\ncapacity_mah=50000\n")
    dev.unlock()
    cur = dev.read_values()
    target = CF.setup_target(cur, "lfp", 6, 50000)
    steps = run_plan(dev, target)
    merged = [s for s in steps if "cell_channels" in s.names()][0]
    assert "afe_groups" in merged.names()
    assert merged.addr == CF.ROWS[P.P_CELL_CHANNELS][0] and merged.count == 5
    assert merged.words[1:3] == CF.words_of(P.P_CAPACITY_MAH, cur[P.P_CAPACITY_MAH])  # unchanged, as it was


def test_a_new_cell_count_goes_in_one_write_over_the_reserved_registers():
    """4 -> 8 cells: the pack keys and the pack voltage limits depend on each
    other both ways, so no order of separate writes is accepted; one write
    from the pack keys to the pack limits is (the reserved registers between
    written 0)."""
    dev = configured()
    dev.unlock()
    target = CF.setup_target(dev.read_values(), "lfp", 8, 100000)
    steps = run_plan(dev, target)
    assert dev.read_values() == target
    big = [s for s in steps if "cell_channels" in s.names()][0]
    assert "pack_ov_mv" in big.names() and big.addr <= CF.ROWS[P.P_CELL_CHANNELS][0]
    k = M.HR_RESERVED - big.addr
    assert big.words[k:k + M.HR_RESERVED_COUNT] == [0] * M.HR_RESERVED_COUNT


def test_an_unreachable_set_fails_before_anything_is_written(monkeypatch):
    dev = configured()
    dev.unlock()
    target = CF.setup_target(dev.read_values(), "lfp", 8, 100000)  # 4 -> 8 cells
    assert CF.validate(dev.read_values(), target) is None  # a valid set ...
    monkeypatch.setattr(PN, "RESERVED", set())  # ... with no register to bridge the gap
    with pytest.raises(PN.PlanError) as e:
        PN.plan(dev.read_values(), target)  # ... no write order reaches
    assert "factory-reset" in str(e.value) and "rule" in str(e.value)
    assert dev.requests == []


def test_serial_settings_go_last():
    dev = configured()
    dev.unlock()
    steps = run_plan(dev, with_changes(dev.read_values(), modbus_address=7, cell_ov_mv=3620, pin=4321))
    assert steps[-1].names() == ["modbus_address"] and steps[-2].names() == ["pin"]


# -- the commands, on the in-process BMS --------------------------------------------

@pytest.fixture
def fake(monkeypatch):
    box = {"dev": configured()}
    monkeypatch.setattr(client, "connect", lambda args: box["dev"])
    return box


def run(argv, capsys):
    out = io.StringIO()
    rc = ctl.main(argv, out=out)
    return rc, out.getvalue(), capsys.readouterr().err


def test_config_set_locked_says_how_to_unlock(fake, capsys):
    rc, out, err = run(["config", "set", "cell_ov=3.62V"], capsys)
    assert rc == 2 and "bmsctl unlock" in err and "--pin" in err and "nothing was written" in err
    assert fake["dev"].requests == []


def test_config_set_out_of_range_writes_nothing(fake, capsys):
    rc, out, err = run(["config", "set", "cell_ov_mv=9999", "--pin", "1234"], capsys)
    assert rc == 2
    assert "cell_ov_mv=9999 (9.999 V) is outside 1.500..5.000 V" in err and "nothing was written" in err
    assert fake["dev"].requests == [] and fake["dev"].events == []


def test_config_set_with_pin_relocks_and_reports(fake, capsys):
    dev = fake["dev"]
    rc, out, err = run(["config", "set", "cell_ov=3.7V", "cell_ov_release=3.5V", "cell_ov_warn=3.68",
                        "--pin", "1234"], capsys)
    assert rc == 0, err
    assert "cell_ov_mv" in out and "3.650 V -> 3.700 V" in out
    assert not dev.config_state() & M.CFG_UNLOCKED, "locked again: it was locked before"
    # already unlocked: stays unlocked
    dev.unlock()
    rc, out, err = run(["config", "set", "cell_ov=3.72V", "--pin", "1234", "--json"], capsys)
    assert rc == 0 and dev.config_state() & M.CFG_UNLOCKED
    d = json.loads(out)
    assert d["changed"][0]["name"] == "cell_ov_mv" and d["changed"][0]["new"] == 3720


def test_config_set_wrong_pin(fake, capsys):
    rc, out, err = run(["config", "set", "cell_ov=3.62V", "--pin", "1111"], capsys)
    assert rc == 2 and "wrong PIN" in err and "tries left" in err and "nothing was written" in err


def test_pack_change_says_restart(fake, capsys):
    rc, out, err = run(["config", "set", "shunt=0.5", "--pin", "1234"], capsys)
    assert rc == 0, err
    assert "restart needed" in out and "shunt_uohm" in out and "bmsctl restart" in out


def test_config_get_names_and_close_matches(fake, capsys):
    rc, out, err = run(["config", "get", "cell_ov", "capacity", "chemistry"], capsys)
    assert rc == 0
    assert "3.650 V" in out and "100.000 Ah" in out and "lfp" in out
    rc, out, err = run(["config", "get", "cell_ov_mv", "--json"], capsys)
    d = json.loads(out)
    assert d["cell_ov_mv"] == {"value": 3.65, "unit": "V", "raw": 3650, "raw_unit": "mV", "address": 0x10,
                               "min": 1.5, "max": 5.0}
    rc, out, err = run(["config", "get", "cel_ov"], capsys)
    assert rc == 2 and "did you mean cell_ov" in err


def test_export_import_round_trip_with_restart(fake, capsys, tmp_path):
    dev = fake["dev"]
    path = str(tmp_path / "p.json")
    assert run(["config", "export", path], capsys)[0] == 0
    doc = json.load(open(path))
    assert doc["format"] == "bms-profile" and doc["version"] == 1 and "pin" not in doc["parameters"]
    assert doc["units"]["cell_ov_mv"] == "mV" and doc["firmware"]["vendor"] == "open-bms"
    assert len(doc["parameters"]) == CF.COUNT - 1
    before = dev.read_values()
    assert run(["config", "set", "cell_ov=3.5", "cell_ov_release=3.3V", "cell_ov_warn=3.45", "full_cell=3.3",
                "bal_start=3.2", "--pin", "1234"], capsys)[0] == 0
    assert dev.read_values() != before
    rc, out, err = run(["config", "import", path, "--pin", "1234", "--restart"], capsys)
    assert rc == 0, err
    assert dev.boot == 1 and "restarted" in out
    assert dev.read_values() == before


@pytest.mark.parametrize("content, words", [
    ('{"format": "bms-profile", "version": 1, "parameters": {"cell_ov_mv": 3650,}}',
     ["not valid JSON", "line 1 column"]),
    ('{"version": 1, "parameters": {}}', ["not a BMS profile", "bmsctl config export"]),
    ('{"format": "bms-profile", "version": 9, "parameters": {"cell_ov_mv": 3650}}', ["version 9"]),
    ('{"format": "bms-profile", "version": 1, "parameters": {"cell_ovv_mv": 3650}}',
     ["unknown parameter 'cell_ovv_mv'", "did you mean cell_ov_mv"]),
    ('{"format": "bms-profile", "version": 1, "parameters": {"cell_ov_mv": 9999}}',
     ["cell_ov_mv=9999 (9.999 V) is outside 1.500..5.000 V"]),
    ('{"format": "bms-profile", "version": 1, "parameters": {"cell_ov_mv": 3.65}}', ["raw whole numbers", "mV"]),
    ('{"format": "bms-profile", "version": 1, "parameters": {"pin": 1}}', ["pin is not taken from a profile"]),
    ('{"format": "bms-profile", "version": 1, "parameters": {"cell_ov_warn_mv": 3700}}',
     ["rule", "cell_ov_warn_mv must be below cell_ov_mv"]),
])
def test_bad_profiles_are_refused_before_writing(fake, capsys, tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    rc, out, err = run(["config", "import", str(path), "--pin", "1234"], capsys)
    assert rc == 2
    for w in words:
        assert w in err, (w, err)
    assert "nothing was written" in err or "not a BMS profile" in err or "version 9" in err
    assert fake["dev"].requests == []


def test_setup_on_a_fresh_bms(fake, capsys):
    fake["dev"] = FakeBms()
    rc, out, err = run(["setup", "--chemistry", "lfp", "--cells", "4", "--capacity", "100", "--yes"], capsys)
    assert rc == 0, err + out
    assert "Setup done" in out and "Cell over-voltage" in out
    dev = fake["dev"]
    assert dev.boot == 1 and dev.prm.configured() and dev.cfg.running_configured
    assert dev.read_values()[P.P_CAPACITY_MAH] == 100000


def test_setup_without_a_terminal_needs_its_options(fake, capsys):
    fake["dev"] = FakeBms()
    rc, out, err = run(["setup", "--chemistry", "lfp"], capsys)
    assert rc == 2 and "--cells" in err and "--capacity" in err and "--yes" in err
    rc, out, err = run(["setup", "--chemistry", "lfp", "--cells", "4", "--capacity", "100"], capsys)
    assert rc == 2 and "--yes" in err and "nothing was written" in err
    rc, out, err = run(["setup", "--chemistry", "lfp", "--cells", "4", "--capacity", "100", "--temp-sensors",
                        "2", "--yes"], capsys)
    assert rc == 2 and "bq76920 has 1 thermistor input" in err
    assert fake["dev"].requests == []


def test_setup_asks_in_a_terminal(fake, capsys, monkeypatch):
    fake["dev"] = FakeBms()
    answers = iter(["nmc", "x", "5", "50Ah", "", "", "y"])
    secrets = iter(["", "4321", "4321"])  # PIN: the default 1234; a new one, twice
    monkeypatch.setattr(prompt, "interactive", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    monkeypatch.setattr(prompt.getpass, "getpass", lambda prompt="": next(secrets))
    rc, out, err = run(["setup"], capsys)
    assert rc == 0, err + out
    dev = fake["dev"]
    v = dev.read_values()
    assert v[P.P_CHEMISTRY] == P.CHEM_NMC and bin(v[P.P_CELL_CHANNELS]).count("1") == 5
    assert v[P.P_CAPACITY_MAH] == 50000 and v[P.P_SHUNT_UOHM] == 1000 and v[P.P_TEMP_SENSORS] == 1
    assert dev.prm.values[P.P_PIN] == 4321 and dev.unlock(1234) == 3 and dev.unlock(4321) == 0


def test_unlock_without_pin_or_terminal(fake, capsys):
    rc, out, err = run(["unlock"], capsys)
    assert rc == 2 and "--pin" in err


def test_restart_and_clear_latched(fake, capsys):
    rc, out, err = run(["restart"], capsys)
    assert rc == 2 and "bmsctl unlock" in err
    rc, out, err = run(["restart", "--pin", "1234"], capsys)
    assert rc == 0 and fake["dev"].boot == 1
    rc, out, err = run(["clear-latched", "--pin", "1234", "--json"], capsys)
    assert rc == 0 and json.loads(out) == {"cleared": True}


def test_parameter_change_events_in_words():
    dev = configured()
    dev.unlock()
    run_plan(dev, with_changes(dev.read_values(), cell_ov_mv=3700, chg_ot_dc=500))
    texts = [fmt.event_text(c, v) for c, v in dev.events if c == EV_PARAM_SET]
    assert "Setting cell_ov_mv changed to 3.700 V" in texts
    assert "Setting chg_ot_dc changed to 50.0 degC" in texts
    assert fmt.event_text(208, 0) == "Settings unlocked"
    assert fmt.event_text(211, 1) == "Host command: restart"


# -- log ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, s", [("500ms", 0.5), ("1s", 1.0), ("2m", 120.0), ("1h", 3600.0), ("1.5", 1.5),
                                     ("10min", 600.0)])
def test_durations(text, s):
    assert CF.parse_duration(text) == s


@pytest.mark.parametrize("text", ["", "0s", "-1s", "1x", "fast"])
def test_bad_durations(text):
    with pytest.raises(CF.ConfigError) as e:
        CF.parse_duration(text)
    assert "500ms" in str(e.value)


def test_log_columns_and_cells():
    heads = [c[0] for c in csvlog.log_columns()]
    assert heads[:2] == ["cell_count", "pack_mv"]
    assert ["cell_mv_%d" % k for k in range(1, M.MAX_CELLS + 1)] == [h for h in heads if h.startswith("cell_mv_")]
    assert not any(h.startswith("events") for h in heads)
    assert csvlog.log_cell("cell_mv", 3271) == "3.271"
    assert csvlog.log_cell("temp_dc", 251) == "25.1" and csvlog.log_cell("temp_dc", M.TEMP_INVALID) == ""
    assert csvlog.log_cell("current_ma", -2500) == "-2.500"
    assert csvlog.log_cell("tte_min", 0xFFFF) == ""


def test_log_survives_a_missed_reply_and_ctrl_c(fake, capsys, tmp_path):
    dev = fake["dev"]
    calls = []
    real = dev.read_live

    def read_live():
        calls.append(1)
        if len(calls) == 2:
            raise client.CtlError("no reply from unit 1", code=3)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real()

    dev.read_live = read_live
    path = tmp_path / "l.csv"
    rc, out, err = run(["log", "--out", str(path), "--every", "10ms"], capsys)
    assert rc == 0
    assert "warning: no sample" in err and "no reply from unit 1" in err
    assert "wrote 2 rows" in out and "1 sample missed" in out
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("time,elapsed_s,cell_count,")
    # --append keeps the header, --count stops
    rc, out, err = run(["log", "--out", str(path), "--every", "10ms", "--count", "2", "--append"], capsys)
    assert rc == 0 and len(path.read_text().splitlines()) == 5
    rc, out, err = run(["log", "--out", str(path), "--every", "soon"], capsys)
    assert rc == 2 and "500ms" in err
