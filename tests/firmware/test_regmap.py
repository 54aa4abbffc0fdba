"""The register map is one consistent table, and bmsctl publishes it."""
import io
import json

from bms.spec import paramtable as PT
from bms import protection as PR
from bms.spec import protrules
from bms.spec import regdoc as D
from bms import regmap as M
from bms.spec import regtable as RT
from bmsctl import cli as ctl
from bms.events import EV_RELEASE


def test_rows_do_not_overlap_and_fit_the_images():
    for regs, size in ((RT.INPUT_REGS, M.IR_SIZE), (PT.TABLE, M.HR_SIZE)):
        used = {}
        for row in regs:
            addr, name, typ, count = row[:4]
            assert typ in RT.WORDS, name
            for a in range(addr, addr + RT.WORDS[typ] * count):
                assert a not in used, "%s overlaps %s at 0x%04x" % (name, used[a], a)
                assert a < size, "%s runs past the image" % name
                used[a] = name
        names = [r[1] for r in regs]
        assert len(names) == len(set(names))


def test_every_name_has_its_words_and_no_more():
    assert set(D.INPUT) == {r[1] for r in RT.INPUT_REGS}
    assert set(D.HOLDING) == {r[1] for r in PT.TABLE}
    assert set(D.PROTECTION) == {r[0] for r in protrules.ROWS}
    for text in list(D.INPUT.values()) + list(D.HOLDING.values()) + list(D.PROTECTION.values()):
        assert text and text[0] != " "
    for regs in (RT.INPUT_REGS, PT.TABLE):
        for row in regs:
            assert -6 <= row[4] <= 3


def test_protection_rows_fit_small_int_flags():
    """Each level's flags word keeps one bit a row, and its last shift
    (1 << rows) must stay a small int on the ESP32 (under 2**30)."""
    assert len(protrules.ROWS) == PR.ROW_COUNT < EV_RELEASE
    for level in (PR.PROT, PR.WARN):
        assert len(protrules.level_rows(level)) <= 29


def test_mapped_mask_marks_exactly_the_rows():
    m = RT.mapped_mask(RT.INPUT_REGS, M.IR_SIZE)
    assert m[M.IR_CELL_MV + 14] == 1 and m[M.IR_BALANCE_MASK + 1] == 0


def test_bmsctl_registers_json_has_the_documented_keys():
    out = io.StringIO()
    assert ctl.main(["registers", "--json"], out=out) == 0
    rows = json.loads(out.getvalue())
    keys = {"name", "address", "table", "type", "count", "scale", "unit", "access", "description"}
    assert rows and all(set(r) == keys for r in rows)
    cell = [r for r in rows if r["name"] == "cell_mv"][0]
    assert cell == {"name": "cell_mv", "address": M.IR_CELL_MV, "table": "input", "type": "uint16",
                    "count": 15, "scale": 0.001, "unit": "V", "access": "r",
                    "description": cell["description"]}
    assert {r["table"] for r in rows} == {"input", "holding"}
    assert len(rows) == len(RT.INPUT_REGS) + len(PT.TABLE) + len(RT.HOLDING_CONTROLS)


def test_bmsctl_registers_table_needs_no_port():
    out = io.StringIO()
    assert ctl.main(["registers"], out=out) == 0
    assert "cell_mv" in out.getvalue() and "0x0020" in out.getvalue()
