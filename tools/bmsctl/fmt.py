"""What bmsctl shows: a status read as engineering values (the --json
form, which the dashboard serves too) and as text, the register map and
the event log as tables.
"""
from bms.spec import paramtable as PT
from bms import params as P
from bms import protection as PR
from bms.spec import protrules
from bms.spec import regdoc as D
from bms import regmap as M
from bms.spec import regtable as RT
from bmsctl import regs as RG


# status_dict()'s "hardware_protection": what the chip applied (the dashboard's MQTT source has none of it)
HW_KEYS = ("ov_v", "uv_v", "ocd_a", "ocd_delay_s", "scd_a", "scd_delay_s",
           "occ_a", "occ_delay_s", "otc_c", "otd_c", "utc_c", "utd_c")


def _hw_temp(dc):
    """A chip's applied temperature limit in degC, None where it has none."""
    return None if dc == M.HW_TEMP_NONE else dc / 10.0


def status_dict(st):
    """The status as engineering values for --json."""
    raw = st["input"]
    ir = RG.scaled(RT.INPUT_REGS, raw)
    hr = RG.scaled(PT.TABLE, st["holding"])
    n = raw["cell_count"]
    temps = [None if t == M.TEMP_INVALID else t / 10.0 for t in raw["temp_dc"]]
    chem = st["holding"]["chemistry"]
    return {
        "pack_v": ir["pack_mv"],
        "current_a": ir["current_ma"],
        "power_w": round(ir["pack_mv"] * ir["current_ma"], 3),
        "cell_count": n,
        "cells_v": ir["cell_mv"][:n],
        "cell_min_v": ir["cell_min_mv"],
        "cell_max_v": ir["cell_max_mv"],
        "cell_spread_v": ir["cell_spread_mv"],
        "temps_c": temps,
        "charge_fet": bool(raw["fet_flags"] & M.FET_CHG),
        "discharge_fet": bool(raw["fet_flags"] & M.FET_DSG),
        # on only to spare its body diode: its own direction stays blocked (the off reason says by what)
        "fet_for_diode": bool(raw["fet_flags"] & M.FET_DIODE),
        "charge_off_reason": RG.reason_name(raw["chg_off_reason"]),
        "discharge_off_reason": RG.reason_name(raw["dsg_off_reason"]),
        "protections": RG.flag_names(raw["protect_flags"]),
        "warnings": RG.flag_names(raw["warn_flags"], warn=True),
        "latched": RG.flag_names(raw["latched_flags"]),
        "balancing_cells": [i + 1 for i in range(n) if raw["balance_mask"] & (1 << i)],
        "afe_stat": raw["afe_stat"],
        "meas_count": raw["meas_count"],
        "uptime_s": raw["uptime_s"],
        "afe_crc_errors": raw["afe_crc_errors"],
        "afe_bus_errors": raw["afe_bus_errors"],
        "save_errors": raw["save_errors"],
        "faults": raw["faults"],
        "fault_last": RG.fault_text(raw["fault_last"]) if raw["faults"] else None,
        "power": {
            "mode": RG.MODE_NAMES.get(raw["power_mode"], raw["power_mode"]),
            "cause": RG.CAUSE_NAMES.get(raw["mode_cause"], raw["mode_cause"]),
            "mode_time_s": raw["mode_time_s"],
            "reset_cause": RG.RESET_NAMES.get(raw["reset_cause"] >> 8, raw["reset_cause"] >> 8),
            "woken_by": RG.CAUSE_NAMES.get(raw["reset_cause"] & 0xFF),
            "button": bool(raw["io_state"] & 1), "acc": bool(raw["io_state"] & 2),
            "charger": bool(raw["io_state"] & 4), "network": bool(raw["io_state"] & 0x100),
        },
        "mqtt": {
            "state": RG.NET_STATES.get(raw["net_state"], raw["net_state"]),
            "error": RG.net_error_text(raw["net_error"]) or None,
            "connects": raw["net_connects"], "stored": raw["net_stored"], "dropped": raw["net_dropped"],
            "sent": raw["net_sent"], "block_max_s": ir["net_block_max_ms"],
        },
        "hardware_protection": {
            "ov_v": ir["hw_ov_applied_mv"], "uv_v": ir["hw_uv_applied_mv"],
            "ocd_a": ir["hw_ocd_applied_ma"], "ocd_delay_s": ir["hw_ocd_applied_delay_ms"],
            "scd_a": ir["hw_scd_applied_ma"], "scd_delay_s": ir["hw_scd_applied_delay_us"],
            # a chip without the comparator (the bq769x0), or a limit beyond its range: None
            "occ_a": ir["hw_occ_applied_ma"] if raw["hw_occ_applied_ma"] else None,
            "occ_delay_s": ir["hw_occ_applied_delay_ms"] if raw["hw_occ_applied_ma"] else None,
            "otc_c": _hw_temp(raw["hw_otc_applied_dc"]), "otd_c": _hw_temp(raw["hw_otd_applied_dc"]),
            "utc_c": _hw_temp(raw["hw_utc_applied_dc"]), "utd_c": _hw_temp(raw["hw_utd_applied_dc"]),
        },
        "soc_pct": ir["soc_dpct"],
        "remaining_ah": ir["remaining_mah"],
        "full_capacity_ah": ir["full_capacity_mah"],
        "soh_pct": ir["soh_dpct"],
        "cycles": ir["cycles_dc"],
        "remaining_wh": ir["remaining_dwh"],
        "time_to_empty_min": None if raw["tte_min"] == 0xFFFF else raw["tte_min"],
        "time_to_full_min": None if raw["ttf_min"] == 0xFFFF else raw["ttf_min"],
        "cc_offset_lsb": raw["cc_offset_dlsb"] / 16.0,
        "soc_window": {
            "charge_stop_pct": hr["soc_max_dpct"], "discharge_stop_pct": hr["soc_min_dpct"],
            "warn_low_pct": hr["soc_warn_low_dpct"], "hysteresis_pct": hr["soc_hyst_dpct"],
            "charge_stopped": bool(raw["soc_state"] & M.SOC_CHG_STOP),
            "discharge_stopped": bool(raw["soc_state"] & M.SOC_DSG_STOP),
            "low_warning": bool(raw["soc_state"] & M.SOC_LOW_WARN),
        },
        "storage": {
            "on": bool(raw["soc_state"] & M.SOC_STORAGE), "target_pct": hr["storage_soc_dpct"],
            "holds_charge": bool(raw["soc_state"] & M.SOC_STORAGE_CHG),
            "holds_discharge": bool(raw["soc_state"] & M.SOC_STORAGE_DSG),
            "at_target": bool(raw["soc_state"] & M.SOC_STORAGE_AT),
        },
        # the board's own supply: from the pack, never through the shunt, counted against the SOC
        "self_draw_a": ir["draw_ua"],
        "self_drawn_ah": ir["drawn_mah"],
        "event_seq": raw["event_seq"],
        "config": {
            "chemistry": P.CHEMISTRY_NAMES[chem] if chem < len(P.CHEMISTRY_NAMES) else chem,
            "cell_channels": st["holding"]["cell_channels"],
            "capacity_ah": hr["capacity_mah"],
            "shunt_mohm": hr["shunt_uohm"],
            "modbus_address": st["holding"]["modbus_address"],
            "modbus_baud": st["holding"]["modbus_baud"],
        },
    }


def _bar(mv, lo, hi, width=24):
    if hi <= lo:
        return ""
    k = int(round((mv - lo) * width / (hi - lo)))
    return "#" * max(0, min(width, k))


def _hms(s):
    return "%d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60)


def _fet_text(on, reason, for_diode, direction):
    if on and for_diode and reason:
        # the firmware switched it on while the other direction's current flows: its diode would heat
        return "ON for the %s current (%s still blocks %s)" % (
            "discharge" if direction == "charge" else "charge", reason, direction)
    return "ON" if on else "off (%s)" % (reason or "-")


def format_status(d, where=""):
    up = d["uptime_s"]
    lines = []
    lines.append("BMS %s   uptime %d:%02d:%02d   measurement #%d" % (
        where, up // 3600, up // 60 % 60, up % 60, d["meas_count"]))
    lines.append("Pack      %7.3f V  %+8.3f A  %+8.1f W" % (d["pack_v"], d["current_a"], d["power_w"]))
    tte, ttf = d["time_to_empty_min"], d["time_to_full_min"]
    eta = ("  empty in %d:%02d" % divmod(tte, 60) if tte is not None else "") + \
          ("  full in %d:%02d" % divmod(ttf, 60) if ttf is not None else "")
    if d["full_capacity_ah"]:
        lines.append("Charge    %5.1f %%  %.2f of %.2f Ah  %.1f Wh  SOH %.1f %%  %.2f cycles%s" % (
            d["soc_pct"], d["remaining_ah"], d["full_capacity_ah"], d["remaining_wh"], d["soh_pct"],
            d["cycles"], eta))
    else:
        lines.append("Charge    not estimated yet (no pack configured, or no measurement yet)")
    n = d["cell_count"]
    if n:
        lines.append("Cells     %d in series; min %.3f V, max %.3f V, spread %d mV" % (
            n, d["cell_min_v"], d["cell_max_v"], round(d["cell_spread_v"] * 1000)))
        lo = min(d["cells_v"]) - 0.005
        hi = max(d["cells_v"]) + 0.005
        for i, v in enumerate(d["cells_v"]):
            mark = " bleeding" if (i + 1) in d["balancing_cells"] else ""
            lines.append("  cell %2d %6.3f V %-24s%s" % (i + 1, v, _bar(v, lo, hi), mark))
    else:
        lines.append("Cells     none configured")
    lines.append("Temps     " + "  ".join("--" if t is None else "%.1f degC" % t for t in d["temps_c"]))
    lines.append("FETs      charge %s, discharge %s" % (
        _fet_text(d["charge_fet"], d["charge_off_reason"], d.get("fet_for_diode"), "charge"),
        _fet_text(d["discharge_fet"], d["discharge_off_reason"], d.get("fet_for_diode"), "discharge")))
    desc = {row[0]: row_text(row) for row in protrules.ROWS}
    for label, key in (("Protect", "protections"), ("Warnings", "warnings"), ("Latched", "latched")):
        names = d[key]
        if names or key == "protections":
            lines.append("%-9s %s" % (label, ", ".join(names) if names else "none"))
            for name in names:
                lines.append("          %s: %s" % (name, desc[name]))
    if d["balancing_cells"]:
        lines.append("Balancing cells " + ", ".join(str(c) for c in d["balancing_cells"]))
    lines.append("AFE       flags 0x%02x, CRC errors %d, bus errors %d" % (
        d["afe_stat"], d["afe_crc_errors"], d["afe_bus_errors"]))
    if d.get("save_errors"):  # none over MQTT
        lines.append("Flash     %d failed save(s) since boot: the previous records stay stored (see events)"
                     % d["save_errors"])
    if d.get("faults"):  # none over MQTT
        lines.append("Faults    %d caught since boot, protection went on; the last: %s"
                     % (d["faults"], d["fault_last"]))
    w = d.get("soc_window")
    if w:  # none over MQTT
        on = w["charge_stop_pct"] < 100 or w["discharge_stop_pct"] > 0 or w["warn_low_pct"] > 0
        held = [t for k, t in (("charge_stopped", "charge stopped at the top"),
                               ("discharge_stopped", "discharge stopped at the bottom"),
                               ("low_warning", "SOC low")) if w[k]]
        lines.append("SOC use   %s%s" % (
            ("%.1f-%.1f %% (hysteresis %.1f %%)" % (w["discharge_stop_pct"], w["charge_stop_pct"],
                                                   w["hysteresis_pct"]) if on else "0-100 % (no SOC window)"),
            "; " + ", ".join(held) if held else ""))
        sto = d["storage"]
        if sto["on"]:
            hold = ("at the target: resting, then sleep" if sto["at_target"] else
                    "discharging to the target (charge held off)" if sto["holds_charge"] else
                    "charging to the target (discharge held off)" if sto["holds_discharge"] else
                    "on its way to the target")
            lines.append("Storage   ON: to %.1f %%, %s; `bmsctl storage off` to use the pack" % (
                sto["target_pct"], hold))
        lines.append("Self-use  %.2f mA now; %.3f Ah counted against the charge since boot (the board's own "
                     "supply, never through the shunt)" % (d["self_draw_a"] * 1000, d["self_drawn_ah"]))
    pw = d["power"]
    inputs = [k for k in ("acc", "charger", "button") if pw[k]]
    lines.append("Power     %s for %s (%s); network %s; inputs %s; this boot: %s%s" % (
        pw["mode"], _hms(pw["mode_time_s"]), pw["cause"], "on" if pw["network"] else "off",
        ", ".join(inputs) or "none", pw["reset_cause"],
        ", woken by " + pw["woken_by"] if pw["woken_by"] else ""))
    mq = d["mqtt"]
    if mq["state"] != "off" or mq["error"]:
        lines.append("MQTT      %s; %d connection(s), %d sent, %d waiting, %d dropped; longest hold %d ms%s" % (
            mq["state"], mq["connects"], mq["sent"], mq["stored"], mq["dropped"], round(mq["block_max_s"] * 1000),
            "; last error: " + mq["error"] if mq["error"] else ""))
    c = d["config"]
    lines.append("Config    %s, %.3f Ah, shunt %.3f mOhm, Modbus address %d at %d baud" % (
        c["chemistry"], c["capacity_ah"], c["shunt_mohm"], c["modbus_address"], c["modbus_baud"]))
    return "\n".join(lines)


def row_text(row):
    fets = {PR.CHG: "charge off", PR.DSG: "discharge off", PR.BOTH: "both FETs off", 0: "reported only"}[row[7]]
    return "%s (%s)" % (D.PROTECTION[row[0]], fets)


def format_registers(rows):
    out = ["%-8s %-7s %-16s %-6s %5s %-7s %-6s %s" % ("table", "address", "name", "type", "count", "scale", "unit", "description")]
    for r in rows:
        out.append("%-8s 0x%04x  %-16s %-6s %5d %-7g %-6s %s" % (
            r["table"], r["address"], r["name"], r["type"].replace("int", "i").replace("ui", "u"),
            r["count"], r["scale"], r["unit"], r["description"]))
    return "\n".join(out)


def event_text(code, value):
    """An event-log record in words (bmsctl.regs.event_text)."""
    return RG.event_text(code, value)


def format_events(records):
    out = ["%8s %5s %10s  %s" % ("seq", "boot", "time", "event")]
    for r in records:
        t = r["time_s"]
        out.append("%8d %5d %4d:%02d:%02d  %s" % (r["seq"], r["boot"], t // 3600, t // 60 % 60, t % 60,
                                                event_text(r["code"], r["value"])))
    return "\n".join(out)
