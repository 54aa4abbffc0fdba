"""Which AFE a pack has (afe_type, issue 18): the parameter, the wiring and
thermistor rules for each chip, bms.cfg text in any order, an older stored
set (no afe_type) still meaning a bq769x0, and the upper computer's words."""
import struct

import pytest

from bms import paramcheck as C
from bms import regmap as M
from bms import params as P
from bms import paramload as PL
from bms.afe import cell_count
from bms.afe import chips
from bms.spec import paramtable as PT
from bmsctl import config as CF

LFP_16S_952 = "chemistry=lfp\nafe_type=1\ncells=16\ncapacity_mah=280000\n"


def load(text):
    p = P.Params()
    PL.load_text(p, text)
    return p


def test_afe_type_is_a_new_row_at_a_free_address_and_the_last_index():
    rows = PT.TABLE
    assert rows[P.P_AFE_TYPE][1] == "afe_type" and P.P_AFE_TYPE == P.COUNT - 1
    assert rows[P.P_AFE_TYPE][0] == 0x000D
    assert len({r[0] for r in rows}) == len(rows)  # no address taken twice
    # ... nor by the reserved span (it was: afe_type could not be written over Modbus)
    assert not any(M.HR_RESERVED <= r[0] < M.HR_RESERVED + M.HR_RESERVED_COUNT for r in rows)
    assert P.P_AFE_GROUPS == 4 and P.P_DRAW_COUNTED == P.COUNT - 2  # nothing before it moved


def test_the_bq76952_wiring_rule_is_the_chips():
    """paramcheck (the vocabulary layer, which may not import the chips)
    holds the bq76952's wiring rule as bms.afe.bq76952.regs does, for every mask."""
    v = load(LFP_16S_952).values
    for mask in range(1 << 17):
        v[P.P_CELL_CHANNELS] = mask
        assert C._special(v, C.S_CELLS) is chips.bq76952_channels_fit(mask), hex(mask)


def test_the_bq76952_rules_take_its_three_thermistors_and_every_usual_wiring():
    p = load(LFP_16S_952)
    v = p.values
    assert chips.thermistor_inputs(chips.AFE_BQ76952, 0) == 3
    for ts, ok in ((7, True), (8, False)):
        v[P.P_TEMP_SENSORS] = ts
        assert (C.check(v) == 0) is ok
    v[P.P_TEMP_SENSORS] = 1
    for n in range(3, 17):
        # the wiring rule itself: check() stops at the pack-voltage rules first for the 16S set's limits
        v[P.P_CELL_CHANNELS] = chips.bq76952_cell_channels(n)
        assert C._special(v, C.S_CELLS), n
        v[P.P_CELL_CHANNELS] = chips.bq76952_cell_channels(n) & 0x7FFF  # VC16 unused
        assert not C._special(v, C.S_CELLS), n


@pytest.mark.parametrize("text", [
    LFP_16S_952,
    "chemistry=lfp\ncells=16\ncapacity_mah=280000\nafe_type=1\n",  # afe_type after cells
])
def test_a_16s_bq76952_pack_from_text_in_any_order(text):
    p = load(text)
    v = p.values
    assert not p.errors and p.configured()
    assert v[P.P_AFE_TYPE] == 1 and v[P.P_AFE_GROUPS] == 0 and p.cells() == 16
    assert v[P.P_CELL_CHANNELS] == 0xFFFF
    assert v[P.P_PACK_OV_MV] == 16 * 3625  # the chemistry's defaults for 16 cells
    again = load(PL.to_text(p))
    assert list(again.values) == list(v)


def test_a_12s_bq76952_uses_the_bottom_inputs_and_vc16():
    p = load("chemistry=lfp\ncells=12\nafe_type=1\ncapacity_mah=100000\n")
    assert p.configured() and p.values[P.P_CELL_CHANNELS] == 0x87FF


def test_wrong_combinations_are_refused():
    p = load("chemistry=lfp\ncells=17\nafe_type=1\ncapacity_mah=100000\n")
    assert any("cells must be 3-16" in e for e in p.errors) and not p.configured()
    p = load("chemistry=lfp\ncells=16\ncapacity_mah=100000\n")  # no bq769x0 takes 16
    assert any("bq76952 3-16" in e for e in p.errors) and not p.configured()
    p = load("chemistry=lfp\ncells=15\ncapacity_mah=100000\n")  # a bq76940
    v = p.values
    assert p.configured() and v[P.P_AFE_GROUPS] == 3
    v[P.P_CELL_CHANNELS] = 0xFFFF
    assert C.rule(C.check(v)) == (C.SPECIAL, C.S_CELLS, 0)
    p = load("chemistry=lfp\nafe_type=2\ncells=8\ncapacity_mah=100000\n")
    assert any("afe_type=2 is outside 0..1" in e for e in p.errors)


def test_afe_groups_is_ignored_on_a_bq76952():
    p = load(LFP_16S_952 + "afe_groups=3\n")
    assert p.configured()  # the bq76940's 15-input rule does not apply


def test_an_older_stored_set_means_a_bq769x0():
    """A record from before afe_type (no row at 0x000D): a bq769x0 pack, as before."""
    p = load("chemistry=lfp\ncells=8\ncapacity_mah=100000\n")
    rec = bytearray()
    for i in range(P.COUNT - 1):
        rec += struct.pack("<Hi", p.addr[i], p.values[i])
    q = P.Params()
    PL.load_record(q, P.FORMAT, bytes(rec))
    assert not q.errors and q.values[P.P_AFE_TYPE] == 0 and q.values[P.P_AFE_GROUPS] == 2 and q.configured()


def test_bmsctl_setup_picks_and_checks_the_chip():
    cur = list(load("chemistry=lfp\ncells=15\ncapacity_mah=100000\n").values)
    t = CF.setup_target(cur, "lfp", 16, 280000)  # no bq769x0 takes 16: the bq76952
    assert t[P.P_AFE_TYPE] == 1 and t[P.P_AFE_GROUPS] == 0 and cell_count(t[P.P_CELL_CHANNELS]) == 16
    t = CF.setup_target(cur, "lfp", 15, 280000)  # the board's bq76940 takes 15
    assert t[P.P_AFE_TYPE] == 0 and t[P.P_AFE_GROUPS] == 3
    t = CF.setup_target(cur, "lfp", 15, 280000, thermistors=3, afe_type=1)
    assert t[P.P_AFE_TYPE] == 1 and t[P.P_CELL_CHANNELS] == 0xBFFF and t[P.P_TEMP_SENSORS] == 7
    with pytest.raises(CF.ConfigError, match="16 cells do not fit a bq76940 .*9 to 15.*--afe bq76952"):
        CF.setup_target(cur, "lfp", 16, 280000, groups=3)
    with pytest.raises(CF.ConfigError, match="the AFEs take 3 to 16"):
        CF.setup_target(cur, "lfp", 17, 280000)
    with pytest.raises(CF.ConfigError, match="4 thermistors: the bq76952 has 3"):
        CF.setup_target(cur, "lfp", 16, 280000, thermistors=4)


def test_bmsctl_config_set_names_afe_type_for_16_cells():
    cur = list(load("chemistry=lfp\ncells=15\ncapacity_mah=100000\n").values)
    with pytest.raises(CF.ConfigError, match="afe_type=1 \\(a bq76952\\)"):
        CF.parse_assignments(["cells=16"], cur)
    target, named = CF.parse_assignments(["cells=16", "afe_type=1"], cur)  # sorted: the chip first
    assert target[P.P_AFE_TYPE] == 1 and target[P.P_CELL_CHANNELS] == 0xFFFF and target[P.P_AFE_GROUPS] == 0
    assert CF.validate(cur, target) is None
