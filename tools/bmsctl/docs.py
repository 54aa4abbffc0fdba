"""Generated documentation: the protection table as a pack builder reads it.

    python -m bmsctl.docs          # rewrites the generated part of docs/PROTECTION.md

The text between the BEGIN/END markers is made from bms.protection,
bms.params and bms.regdoc; tests/test_docs.py fails when it is stale.
"""
import os
import sys

from bms import paramtable as PT
from bms import params as P
from bms import protection as PR
from bms import regdoc as D

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTECTION_MD = os.path.join(ROOT, "docs", "PROTECTION.md")
BEGIN = "<!-- BEGIN GENERATED: python -m bmsctl.docs -->"
END = "<!-- END GENERATED -->"

_CMP = {PR.ABOVE: ">=", PR.BELOW: "<=", PR.ABOVE_H: ">=", PR.BELOW_H: "<=", PR.FLAG: "is set"}
_QUANTITY = {
    PR.Q_CELL_MAX_MV: "highest cell", PR.Q_CELL_MIN_MV: "lowest cell", PR.Q_PACK_MV: "pack voltage",
    PR.Q_CHG_MA: "charge current", PR.Q_DSG_MA: "discharge current",
    PR.Q_TEMP_MAX_DC: "hottest cell sensor", PR.Q_TEMP_MIN_DC: "coldest cell sensor",
    PR.Q_FET_TEMP_DC: "FET/board sensor", PR.Q_SPREAD_MV: "cell spread",
    PR.Q_AFE_SCD: "AFE SCD flag", PR.Q_AFE_OCD: "AFE OCD flag", PR.Q_AFE_OV: "AFE OV flag",
    PR.Q_AFE_UV: "AFE UV flag", PR.Q_AFE_COMM: "AFE silent or failing CRC",
    PR.Q_AFE_RESET: "AFE DEVICE_XREADY", PR.Q_AFE_STALE: "no CC_READY for 600 ms",
    PR.Q_TEMP_SENSOR: "thermistor open/short", PR.Q_CELL_IMPLAUSIBLE: "cell outside 500-5000 mV",
    PR.Q_UNCONFIGURED: "no configuration", PR.Q_AFE_OVRD: "AFE OVRD_ALERT",
}
_FETS = {PR.CHG: "charge", PR.DSG: "discharge", PR.BOTH: "both", 0: "none"}


def _p(i, chem):
    if i == PR.NONE:
        return "-"
    row = PT.TABLE[i]
    name = row[1]
    scale = {0: "", 1: " per cell", 2: " per Ah"}[row[11]]
    return "`%s` (%s%s)" % (name, row[8 + chem - 1], scale)


def protection_table(chem=P.CHEM_LFP):
    lines = [
        "| bit | row | level | trips when | delay | releases when | release delay | FETs off | meaning |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(PR.ROWS):
        name, q, cmp, trip, delay, rel, rel_delay, fets, level, retries = r
        what = _QUANTITY[q]
        if cmp == PR.FLAG:
            trips, releases = what + " is set", "it is clear"
        else:
            trips = "%s %s %s" % (what, _CMP[cmp], _p(trip, chem))
            if cmp in (PR.ABOVE, PR.BELOW):
                releases = "%s %s %s" % (what, "<" if cmp == PR.ABOVE else ">", _p(rel, chem))
            else:
                releases = "%s back inside by %s" % (what, _p(rel, chem))
        rd = _p(rel_delay, chem)
        if retries != PR.NONE:
            rd += ", doubling per retry; latches after %s" % _p(retries, chem)
        lines.append("| %d | `%s` | %s | %s | %s | %s | %s | %s | %s |" % (
            i, name, "protection" if level == PR.PROT else "warning", trips, _p(delay, chem), releases, rd,
            _FETS[fets], D.PROTECTION[name]))
    return "\n".join(lines)


def event_codes():
    return "\n".join([
        "| code | event | value |",
        "|---|---|---|",
        "| 1-%d | a row trips (code = bit + 1) | the quantity when it tripped |" % PR.ROW_COUNT,
        "| 65-%d | a row releases (code = 64 + bit + 1) | the quantity when it released |" % (64 + PR.ROW_COUNT),
        "| 129-%d | a row latches after its retries (128 + bit + 1) | retries used |" % (128 + PR.ROW_COUNT),
        "| 200 | boot | boot number |",
        "| 201 | AFE configured | 1 ok, 0 failed |",
        "| 202 | stored settings rejected at boot | how many |",
        "| 203 | the stored OCV table does not rise: the chemistry's is used | 0 |",
        "| 204 | the state-of-charge estimate started | SOC in 0.1 % |",
        "| 205 | coulomb-counter offset calibrated (both FETs off 20 s at rest) | offset, 1/16 LSB |",
    ])


def generated():
    return "\n".join([
        BEGIN,
        "",
        "### The table (defaults shown for LiFePO4)",
        "",
        protection_table(),
        "",
        "### Event codes",
        "",
        event_codes(),
        "",
        END,
    ])


def render(text):
    a = text.index(BEGIN)
    b = text.index(END) + len(END)
    return text[:a] + generated() + text[b:]


def main(argv=None):
    with open(PROTECTION_MD) as f:
        text = f.read()
    new = render(text)
    if new != text:
        with open(PROTECTION_MD, "w") as f:
            f.write(new)
        print("updated", PROTECTION_MD)
    else:
        print("up to date", PROTECTION_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
