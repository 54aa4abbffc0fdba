"""bms.gen.packed (what the firmware reads) against the tables it is generated
from: bms.spec.paramtable, bms.spec.regtable.INPUT_REGS and bms.spec.protrules."""
import subprocess
import sys

import pytest

from bms.gen import packed, paramdata
from bms import params
from bms.spec import paramtable, protrules

from bms import paramload as PL
from bms import protection as PR
from bms import regmap as M
from bms.spec import regtable as RT
from bms_build import tablegen
from conftest import ROOT


def test_packed_is_generated_from_the_tables():
    for path, text in tablegen.outputs():
        with open(path) as f:
            assert f.read() == text, "%s is stale: run python -m bms_build.tablegen" % path
    proc = subprocess.run([sys.executable, "-m", "bms_build.tablegen", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_params_read_from_packed_match_the_table():
    p = params.Params()
    assert paramdata.PARAM_COUNT == params.COUNT == len(paramtable.TABLE)
    for i, row in enumerate(paramtable.TABLE):
        assert PL.name_of(i) == row[1]
        assert PL.index_of(row[1]) == i
        assert p.addr[i] == row[0]
        assert bool(p.flags[i] & params.WIDE) == (row[2] == "uint32")
        assert bool(p.flags[i] & params.SIGNED) == (row[2] == "int16")
        assert (p.lo[i], p.hi[i]) == (row[6], row[7])
        assert p.values[i] == row[8]
    assert PL.index_of("cell_ov") == -1 and PL.index_of("") == -1 and PL.index_of("cell_ov_mv cell") == -1


def test_chemistry_defaults_scale_as_the_table_says():
    cells, cap = 13, 123456
    for chem in (params.CHEM_LFP, params.CHEM_NMC, params.CHEM_LTO):
        p = params.Params()
        PL.apply_defaults(p, chem, cells, cap)
        for i, row in enumerate(paramtable.TABLE):
            if i < params.P_CELL_OV_MV or i in params.DEVICE_KEYS:
                continue
            d = row[8 + chem - 1]
            want = d * cells if row[11] == 1 else d * cap // 1000 if row[11] == 2 else d
            assert p.values[i] == want, row[1]


def test_input_register_spans_map_exactly_the_table():
    from bms.app import _input_mapped

    assert bytes(_input_mapped()) == bytes(RT.mapped_mask(RT.INPUT_REGS, M.IR_SIZE))


def test_protection_reads_every_row_field_from_packed():
    pr = PR.Protection(params.Params().values)
    assert len(packed.PROT_ROWS) == PR.ROW_COUNT * packed.PROT_ROW_BYTES
    for i, row in enumerate(protrules.ROWS):
        assert tuple(-1 if b == 255 else b for b in
                     packed.PROT_ROWS[i * packed.PROT_ROW_BYTES:(i + 1) * packed.PROT_ROW_BYTES]) == row[1:protrules.ROLE]
        assert pr.level(i) == row[8] and pr.blink(i) == row[10]


def test_a_row_that_does_not_fit_a_byte_is_refused():
    with pytest.raises(ValueError, match="does not fit a byte"):
        tablegen.pack_rule(("x", 0, 0, 300, -1, -1, -1, 1, 1, -1, 0, ()))


def test_stale_packed_is_reported(tmp_path, monkeypatch):
    stale = tmp_path / "paramdata.py"
    stale.write_text(tablegen.render_params().replace("PARAM_COUNT = ", "PARAM_COUNT = 1"))
    fresh = tmp_path / "packed.py"
    fresh.write_text(tablegen.render())
    monkeypatch.setattr(tablegen, "PARAMS_TARGET", str(stale))
    monkeypatch.setattr(tablegen, "TARGET", str(fresh))
    assert tablegen.main(["--check"]) == 1
    assert tablegen.main([]) == 0 and stale.read_text() == tablegen.render_params()
    assert tablegen.main(["--check"]) == 0


def test_role_masks_follow_the_roles_column_not_the_row_order():
    """A row's roles are a column: reorder the rows and every generated mask
    still names the same rows (bit positions move with the rows)."""
    def by_name(rows):
        bits = protrules.bit_of(rows)
        level = {r[0]: r[8] for r in rows}
        out = {}
        for mask_name, mask in protrules.role_masks(rows):
            lv = PR.WARN if mask_name.endswith("_WARN_ROWS") or (
                mask_name.endswith("_ROW") and level[mask_name[:-4].lower()] == PR.WARN) else PR.PROT
            out[mask_name] = sorted(n for n, b in bits.items() if level[n] == lv and mask >> b & 1)
        return out

    as_is = by_name(protrules.ROWS)
    assert by_name(tuple(reversed(protrules.ROWS))) == as_is
    assert as_is["OVER_VOLTAGE_ROWS"] == ["afe_ov", "cell_ov", "pack_ov"]
    assert as_is["DIODE_CHG_ROWS"] == sorted(r[0] for r in protrules.ROWS
                                             if protrules.DIODE in r[protrules.ROLE] and r[7] == PR.CHG)
    assert as_is["SOC_WINDOW_WARN_ROWS"] == ["soc_low_warn"]
    assert as_is["STORAGE_LOW_ROW"] == ["storage_low"]
    # the firmware's copies are these masks
    for mask_name, mask in protrules.role_masks():
        assert getattr(packed, mask_name) == mask
    assert PR.ROW_COUNT == len(protrules.ROWS)


def test_a_role_that_cannot_hold_is_refused():
    rows = list(protrules.ROWS)
    i = next(k for k, r in enumerate(rows) if r[0] == "afe_comm")  # holds both FETs
    rows[i] = rows[i][:protrules.ROLE] + ((protrules.DIODE,),)
    with pytest.raises(ValueError, match="one FET"):
        protrules.role_masks(rows)
    rows[i] = rows[i][:protrules.ROLE] + (("DIODES",),)
    with pytest.raises(ValueError, match="unknown role"):
        protrules.role_masks(rows)
    w = next(k for k, r in enumerate(rows) if r[8] == PR.WARN)
    rows = list(protrules.ROWS)
    rows[w] = rows[w][:protrules.ROLE] + ((protrules.DIODE,),)
    with pytest.raises(ValueError, match="warning holds no FET"):
        protrules.role_masks(rows)
