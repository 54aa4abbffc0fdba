"""Generated documentation is current."""
from bmsctl import docs


def test_protection_doc_is_current():
    with open(docs.PROTECTION_MD) as f:
        text = f.read()
    assert docs.render(text) == text, "docs/PROTECTION.md is stale: run `.venv/bin/python -m bmsctl.docs`"


def test_protection_doc_names_every_row():
    table = docs.protection_table()
    from bms.spec import protrules

    for row in protrules.ROWS:
        assert "`%s`" % row[0] in table


def test_register_doc_is_current():
    with open(docs.REGISTERS_MD) as f:
        text = f.read()
    assert text == docs.registers_md(), "docs/registers.md is stale: run `.venv/bin/python -m bmsctl.docs`"
    assert "`cell_mv`" in text and "`cell_ov_mv`" in text
