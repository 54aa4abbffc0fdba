"""Generated documentation: the register map and the protection table.

    python -m bmsctl.docs     # rewrites docs/registers.md and the generated part of docs/PROTECTION.md

Both are made from bms.regmap, bms.spec.paramtable, bms.protection and
bms.spec.regdoc; tests/bmsctl/test_docs.py fails when either is stale.
"""
import os
import sys

from bms.spec import paramtable as PT
from bms import params as P
from bms import protection as PR
from bms.spec import protrules
from bms.spec import regdoc as D

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTECTION_MD = os.path.join(ROOT, "docs", "PROTECTION.md")
REGISTERS_MD = os.path.join(ROOT, "docs", "registers.md")
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
    PR.Q_AFE_RESET: "AFE DEVICE_XREADY or its ADC off", PR.Q_AFE_STALE: "no CC_READY for 600 ms",
    PR.Q_TEMP_SENSOR: "thermistor open/short", PR.Q_CELL_IMPLAUSIBLE: "cell outside 500-5000 mV",
    PR.Q_UNCONFIGURED: "no configuration", PR.Q_AFE_OVRD: "AFE OVRD_ALERT",
    PR.Q_RESET_LOCKOUT: "5 unplanned resets (crash, watchdog), each within 10 min of the boot before",
    PR.Q_SOC_HIGH_DPCT: "SOC", PR.Q_SOC_LOW_DPCT: "SOC",
    PR.Q_STORE_HIGH_DPCT: "SOC in storage mode", PR.Q_STORE_LOW_DPCT: "SOC in storage mode",
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
        "| row | flag bit | name | level | trips when | delay | releases when | release delay | FETs off | LED code "
        "| roles | meaning |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    bits = protrules.bit_of()
    for i, r in enumerate(protrules.ROWS):
        name, q, cmp, trip, delay, rel, rel_delay, fets, level, retries, blink, roles = r
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
        lines.append("| %d | %s %d | `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            i, "protect_flags" if level == PR.PROT else "warn_flags", bits[name], name, "protection" if level == PR.PROT else "warning", trips, _p(delay, chem), releases, rd,
            _FETS[fets], blink or "-", ", ".join(x.lower() for x in roles) or "-", D.PROTECTION[name]))
    return "\n".join(lines)


def event_codes():
    from bmsctl import regs as RG

    return "\n".join([
        "| code | event | value |",
        "|---|---|---|",
        "| 1-%d | a row trips (code = row + 1) | the quantity when it tripped |" % PR.ROW_COUNT,
        "| 65-%d | a row releases (code = 64 + row + 1) | the quantity when it released |" % (64 + PR.ROW_COUNT),
        "| 129-%d | a row latches after its retries (128 + row + 1) | retries used |" % (128 + PR.ROW_COUNT),
        "| 200 | boot | boot number |",
        "| 201 | AFE configured | 1 ok, 0 failed |",
        "| 202 | stored settings rejected at boot | how many |",
        "| 203 | the stored OCV table does not rise: the chemistry's is used | 0 |",
        "| 204 | the state-of-charge estimate started | SOC in 0.1 % |",
        "| 205 | coulomb-counter offset calibrated (both FETs off 20 s at rest) | offset, 1/16 LSB |",
        "| 206 | a parameter changed (over Modbus) | register address << 20, new value (20-bit signed) |",
        "| 207 | a parameter changed, value too big for 20 bits | as 206, the value in thousands |",
        "| 208 | parameter writes unlocked | 0 |",
        "| 209 | parameter writes locked (a write of 0, or the timeout) | 0 |",
        "| 210 | a wrong PIN | wrong PINs in a row (5: a one-minute lockout) |",
        "| 211 | a command (1 restart, 2 clear latched, 3 factory reset, 4 storage on, 5 storage off) | the command |",
        "| 212 | saving the parameters failed (older firmware; now 221) | save errors so far |",
        "| 213 | the stored parameters came in another format and were migrated | that format |",
        "| 214 | the stored parameters break a consistency rule: running unconfigured | the rule |",
        "| 215 | a `bms.cfg` file was taken in as the stored parameters | 0 |",
        "| 216 | the power mode changed (docs/POWER.md) | new mode << 8 \\| cause (0 working, 1 low power, 2 sleep; "
        "causes in docs/POWER.md) |",
        "| 217 | why this boot happened | reset cause << 8 \\| wake reason |",
        "| 221 | saving to flash started failing (the previous record stays stored; retried later), "
        "or works again | store << 8 \\| why: store 1 settings, 2 SOC state, 3 lifetime counters; "
        "why 1 out of memory, 2 filesystem error, 0 saved again |",
        "| 222 | an exception reached the guard (bms.start) before the last reset: FETs off, MCU reset; "
        "logged by the boot after it (the report is kept in RTC memory), which counts it as unplanned | "
        "where << 8 \\| kind: where " + ", ".join("%d %s" % kv for kv in sorted(RG.CRASH_PLACES.items()))
        + "; kind 1 MemoryError, 2 OSError, 3 another exception |",
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


def registers_md():
    from bmsctl import regs as RG

    out = [
        "# Modbus register map",
        "",
        "Generated by `python -m bmsctl.docs` from `lib/bms/spec/regtable.py`, `lib/bms/regmap.py`, `lib/bms/spec/paramtable.py`",
        "and `lib/bms/spec/regdoc.py`; do not edit by hand. `bmsctl registers --json` gives the same rows.",
        "",
        "Modbus RTU, default address 1, 19200 baud 8E1. Input registers (FC 04) are measurements and",
        "state, refreshed every 250 ms; holding registers (FC 03 read, FC 06/16 write) are the parameters. 32-bit values",
        "take two registers, high word first. A value in `unit` is the raw register value x `scale`.",
        "Reading an address that is not in the map answers exception 02.",
        "",
    ]
    out += writing_md()
    for table, title in (("input", "Input registers (FC 04)"), ("holding", "Holding registers (FC 03, FC 06, FC 16)")):
        out += ["## " + title, ""]
        if table == "input":
            out += cells_md()
        out += [ "| address | name | type | count | scale | unit | description |",
                "|---|---|---|---|---|---|---|"]
        for r in RG.rows():
            if r["table"] == table:
                out.append("| 0x%04X | `%s` | %s | %d | %g | %s | %s |" % (
                    r["address"], r["name"], r["type"], r["count"], r["scale"], r["unit"],
                    r["description"].replace("|", "/")))
        out.append("")
    return "\n".join(out)


def cells_md():
    """Where the cells are, and why cell 16 fitted without moving anything."""
    from bms import regmap as M

    last = M.IR_CELL_MV + M.MAX_CELLS - 1
    return [
        "**Cell voltages.** `cell_mv` holds up to %d cells at 0x%04X-0x%04X, cell 1 (the bottom) first, so"
        % (M.MAX_CELLS, M.IR_CELL_MV, last),
        "one request reads them all. Cell 16 (16-cell AFEs) took 0x%04X: in the 15-cell map it was a gap" % last,
        "before `hw_ov_applied_mv` (a read over it answered exception 02), so no register moved and",
        "Home Assistant configurations, inverters and scripts written for 15 cells read what they always did.",
        "",
    ]


def writing_md():
    """How parameters are written: the lock, the answers, the rules."""
    from bms import paramcheck as C
    from bms.spec import regdoc as D
    from bms import regmap as M

    out = [
        "## Writing parameters",
        "",
        "Holding registers are written with FC 06 (one register) or FC 16 (up to 123). Reads need",
        "nothing; writes need the unlock: write the PIN (parameter `pin`, 1234 from the factory;",
        "it always reads 0) to `unlock` (0x%04X). The unlock lasts `unlock_timeout_s` after the last" % M.HR_UNLOCK,
        "accepted write; 0 written to `unlock` locks at once, and so does a restart. Five wrong PINs",
        "refuse unlocking for a minute. `bmsctl unlock`, `bmsctl config set` and `bmsctl setup` do",
        "all of this for you.",
        "",
        "A write request is judged whole before anything changes; a refused one changes nothing,",
        "and `config_error` (input 0x%04X) then says why (`bmsctl` prints it in words):" % M.IR_CONFIG_ERROR,
        "",
        "| answer | when |",
        "|---|---|",
        "| exception 01 | parameters are locked (the function is refused in this state) |",
        "| exception 02 | a register of the range is not in the map; half of a 32-bit parameter; "
        "`unlock` or `command` written together with other registers |",
        "| exception 03 | quantity outside 1..123 or a byte count that does not match; a value outside "
        "its range; a wrong PIN; a set that breaks a rule below; an unknown command |",
        "| exception 04 | the device failed while writing |",
        "| no answer | a CRC error, another address, or a broadcast (address 0): a broadcast is "
        "applied only when it locks (0 to `unlock`), never to a parameter |",
        "",
        "Accepted changes go to flash right after the reply (two slots with a CRC and a sequence",
        "number: a power cut during the save leaves the previous set), each one is logged as an",
        "event, and most take effect at once. The pack's own settings (`chemistry`, `cell_channels`,",
        "`capacity_mah`, `shunt_uohm`, `afe_type`, `afe_groups`, `afe_addr`, `temp_sensors`, `fet_temp_sensor`)",
        "take effect at the next restart (`command` = 1; `config_state` bit 2 says one is due).",
        "`modbus_address`, `modbus_baud` and `modbus_parity` take effect right after the reply",
        "that accepted them.",
        "",
        "A BMS from the factory is unconfigured: it measures and answers but keeps both FETs off",
        "until a pack (chemistry, cells, capacity, thermistors) has been written and the BMS",
        "restarted. From the write that makes the set configured on, every parameter must be in",
        "its range and every rule below must hold:",
        "",
        "| rule | |",
        "|---|---|",
    ]
    for k in range(1, C.RULE_COUNT + 1):
        out.append("| %d | %s |" % (k, D.rule_text(k)))
    out += ["", "Commands (write to `command`, 0x%04X, unlocked):" % M.HR_COMMAND, "",
            "| value | does |", "|---|---|",
            "| %d | restart: the reply goes out, then the BMS restarts (stored changes take effect) |"
            % M.CMD_RESTART,
            "| %d | clear protections latched after their retries (a short circuit) |" % M.CMD_CLEAR_LATCHED,
            "| %d | factory reset: erase the stored parameters and restart unconfigured |" % M.CMD_FACTORY_RESET,
            ""]
    return out


def _write(path, new):
    try:
        with open(path) as f:
            old = f.read()
    except OSError:
        old = None
    if new != old:
        with open(path, "w") as f:
            f.write(new)
        print("updated", path)
    else:
        print("up to date", path)


def main(argv=None):
    with open(PROTECTION_MD) as f:
        text = f.read()
    _write(PROTECTION_MD, render(text))
    _write(REGISTERS_MD, registers_md())
    return 0


if __name__ == "__main__":
    sys.exit(main())
