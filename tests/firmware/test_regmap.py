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
    assert m[M.IR_CELL_MV + 15] == 1  # cell 16


# Every input register's address in the 15-cell map (0.6): Home Assistant
# configurations, inverters and scripts poll them, so none may move.
MAP_15_CELLS = {
    "IR_CELL_COUNT": 0x0000, "IR_PACK_MV": 0x0001, "IR_CURRENT_MA": 0x0003, "IR_CELL_MIN_MV": 0x0005,
    "IR_CELL_MAX_MV": 0x0006, "IR_CELL_SPREAD_MV": 0x0007, "IR_CELL_MIN_NUM": 0x0008, "IR_CELL_MAX_NUM":
    0x0009, "IR_TEMP_DC": 0x000A, "IR_FET_FLAGS": 0x000D, "IR_AFE_STAT": 0x000E, "IR_PROTECT_FLAGS":
    0x000F, "IR_WARN_FLAGS": 0x0011, "IR_CHG_OFF_REASON": 0x0013, "IR_DSG_OFF_REASON": 0x0014,
    "IR_LATCHED_FLAGS": 0x0015, "IR_UPTIME_S": 0x0017, "IR_MEAS_COUNT": 0x0019, "IR_AFE_CRC_ERRORS":
    0x001A, "IR_AFE_BUS_ERRORS": 0x001B, "IR_BALANCE_MASK": 0x001C, "IR_EVENT_SEQ": 0x001E, "IR_CELL_MV":
    0x0020, "IR_HW_OV_MV": 0x0030, "IR_HW_UV_MV": 0x0031, "IR_HW_OCD_MA": 0x0032, "IR_HW_OCD_DELAY_MS":
    0x0034, "IR_HW_SCD_MA": 0x0035, "IR_HW_SCD_DELAY_US": 0x0037, "IR_SOC_DPCT": 0x0038, "IR_SOH_DPCT":
    0x0039, "IR_TTE_MIN": 0x003A, "IR_TTF_MIN": 0x003B, "IR_REMAINING_MAH": 0x003C,
    "IR_FULL_CAPACITY_MAH": 0x003E, "IR_EVENTS": 0x0040, "IR_REMAINING_DWH": 0x00B8, "IR_CYCLES_DC":
    0x00BA, "IR_CC_OFFSET": 0x00BC, "IR_CONFIG_STATE": 0x00BD, "IR_CONFIG_ERROR": 0x00BE,
    "IR_UNLOCK_LEFT_S": 0x00BF, "IR_PARAM_SAVES": 0x00C0, "IR_LIFE_CHG_MAH": 0x00C2, "IR_LIFE_DSG_MAH":
    0x00C4, "IR_LIFE_ON_S": 0x00C6, "IR_LIFE_CELL_MAX_MV": 0x00C8, "IR_LIFE_CELL_MIN_MV": 0x00C9,
    "IR_LIFE_TEMP_MAX_DC": 0x00CA, "IR_LIFE_TEMP_MIN_DC": 0x00CB, "IR_LIFE_TRIPS": 0x00CC,
    "IR_POWER_MODE": 0x00CD, "IR_MODE_CAUSE": 0x00CE, "IR_MODE_TIME_S": 0x00CF, "IR_RESET_CAUSE": 0x00D1,
    "IR_IO_STATE": 0x00D2, "IR_NET_STATE": 0x00D3, "IR_NET_ERROR": 0x00D4, "IR_NET_CONNECTS": 0x00D5,
    "IR_NET_STORED": 0x00D6, "IR_NET_DROPPED": 0x00D7, "IR_NET_SENT": 0x00D9, "IR_NET_BLOCK_MAX_MS":
    0x00DB, "IR_SAVE_ERRORS": 0x00DC, "IR_FAULTS": 0x00DD, "IR_FAULT_LAST": 0x00DE, "IR_SOC_STATE":
    0x00DF, "IR_DRAW_UA": 0x00E0, "IR_DRAWN_MAH": 0x00E2
}


def test_no_input_register_moved_and_cell_16_follows_cell_15():
    for name, addr in MAP_15_CELLS.items():
        assert getattr(M, name) == addr, name
    cell = [r for r in RT.INPUT_REGS if r[1] == "cell_mv"][0]
    # cell 16 is 0x002F, the gap the 15-cell map left before hw_ov_applied_mv: one run, one request
    assert cell[:4] == (0x0020, "cell_mv", "uint16", 16) and M.IR_HW_OV_MV == 0x0020 + M.MAX_CELLS
    # the map grew only at its end (0x00E4-0x00E5: the SOC estimator's rests and OCV corrections;
    # 0x00E6-0x00EC: the bq76952's charge over-current and temperature backstop as applied)
    assert M.IR_SOC_RESTS == 0x00E4 and M.IR_HW_OCC_MA == 0x00E6 and M.IR_HW_UTD_DC == 0x00EC
    assert M.IR_SIZE == 0x00ED


def test_bmsctl_registers_json_has_the_documented_keys():
    out = io.StringIO()
    assert ctl.main(["registers", "--json"], out=out) == 0
    rows = json.loads(out.getvalue())
    keys = {"name", "address", "table", "type", "count", "scale", "unit", "access", "description"}
    assert rows and all(set(r) == keys for r in rows)
    cell = [r for r in rows if r["name"] == "cell_mv"][0]
    assert cell == {"name": "cell_mv", "address": M.IR_CELL_MV, "table": "input", "type": "uint16",
                    "count": M.MAX_CELLS, "scale": 0.001, "unit": "V", "access": "r",
                    "description": cell["description"]}
    assert {r["table"] for r in rows} == {"input", "holding"}
    assert len(rows) == len(RT.INPUT_REGS) + len(PT.TABLE) + len(RT.HOLDING_CONTROLS)


def test_bmsctl_registers_table_needs_no_port():
    out = io.StringIO()
    assert ctl.main(["registers"], out=out) == 0
    assert "cell_mv" in out.getvalue() and "0x0020" in out.getvalue()
