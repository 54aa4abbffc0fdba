"""The dashboard's JSON, made from what a BMS tells: `decode_state` from
raw register values (as `Bms.read_live()` and `Bms.read_table("holding")`
return them), `mqtt_state` from the state message the firmware publishes
over MQTT (bms.telemetry), with None where the message says nothing; the
chart's samples, event records in words, the settings table. No I/O here:
the data sources (bmsctl.dashboard.source) read and call these.
"""
from bms import params as P
from bms import protection as PR
from bms.spec import protrules
from bms.spec import regdoc as D
from bms import regmap as M
from bms.spec import regtable as RT
from bmsctl import config as CF
from bmsctl import fmt
from bmsctl import regs as RG
from bmsctl.client import CtlError

EVENT_ROW = next(r for r in RT.INPUT_REGS if r[2] == "event")
_DESC = {row[0]: fmt.row_text(row) for row in protrules.ROWS}
_EFFECT = {PR.CHG: "charging is off", PR.DSG: "discharging is off", PR.BOTH: "charging and discharging are off",
           0: "reported only: the FETs stay as they are"}
_ROW = {row[0]: row for row in protrules.ROWS}


def _round(x, nd=4):
    return None if x is None else round(x, nd)


def _cells_alerts(d):
    """The page's cells (with their balancing mark) and alerts in words,
    from a status dict's cells_v, balancing_cells and flag names."""
    bal = set(d["balancing_cells"])
    cells = [{"n": i + 1, "v": _round(v), "balancing": (i + 1) in bal} for i, v in enumerate(d["cells_v"])]
    alerts = []
    for kind, key in (("protection", "protections"), ("latched", "latched"), ("warning", "warnings")):
        for name in d[key]:
            effect = _EFFECT.get(_ROW[name][7], "") if name in _ROW else ""
            if kind == "latched":
                effect += " until cleared (`bmsctl clear-latched`) or the load is removed"
            text = D.PROTECTION.get(name, name)
            alerts.append({"kind": kind, "name": name, "text": text[:1].upper() + text[1:], "detail": effect})
    return cells, alerts


def decode_state(live, holding, where=""):
    """/api/state from raw input registers (all but the event window) and
    the raw holding registers: `bmsctl status --json` plus what the page
    shows directly (cells with their balancing mark, alerts in words)."""
    d = fmt.status_dict({"input": dict(live, events=[]), "holding": holding})
    n = d["cell_count"]
    cells, alerts = _cells_alerts(d)
    cs = live["config_state"]
    chem = holding["chemistry"]

    def limit(name):
        return _round(CF.eng(CF.INDEX[name], holding[name]))

    d.update({
        "where": where,
        "cells": cells,
        "alerts": alerts,
        "charge_off_text": _DESC.get(d["charge_off_reason"]) if d["charge_off_reason"] else None,
        "discharge_off_text": _DESC.get(d["discharge_off_reason"]) if d["discharge_off_reason"] else None,
        "config_state": {
            "configured": bool(cs & M.CFG_CONFIGURED), "unlocked": bool(cs & M.CFG_UNLOCKED),
            "restart_pending": bool(cs & M.CFG_RESTART_PENDING), "save_failed": bool(cs & M.CFG_SAVE_FAILED),
            "pin_lockout": bool(cs & M.CFG_PIN_LOCKOUT), "unlock_left_s": live["unlock_left_s"],
        },
        "limits": {
            "cell_ov_v": limit("cell_ov_mv"), "cell_uv_v": limit("cell_uv_mv"),
            "cell_ov_warn_v": limit("cell_ov_warn_mv"), "cell_uv_warn_v": limit("cell_uv_warn_mv"),
            "bal_start_v": limit("bal_start_mv"),
        },
        "chemistry": P.CHEMISTRY_NAMES[chem] if 0 <= chem < len(P.CHEMISTRY_NAMES) else str(chem),
    })
    for k in ("pack_v", "current_a", "power_w", "cell_min_v", "cell_max_v", "cell_spread_v", "soc_pct",
              "remaining_ah", "full_capacity_ah", "soh_pct", "cycles", "remaining_wh"):
        d[k] = _round(d[k])
    d["cells_v"] = [_round(v) for v in d["cells_v"][:n]]
    return d


# the state message's power modes (bms.telemetry) as decode_state names them (bmsctl.regs.MODE_NAMES)
MQTT_MODES = {"working": "working", "low_power": "low-power", "sleep": "sleep"}


def number(x):
    """x when it is a number (a bool is not), else None: a message field as given."""
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _mask(x):
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else 0


def mqtt_state(msg, where="", event_seq=None):
    """/api/state from the state message the firmware publishes over MQTT
    (bms.telemetry `StateWriter.state`, or the fewer keys of a stored
    sample): the keys decode_state gives, None (or empty) for what the
    message does not carry: off reasons, time to full or empty, full
    capacity, the settings and their limits, counters, inputs."""
    def num(key):
        return _round(number(msg.get(key)))

    cells_v = [_round(number(v)) for v in msg.get("cells_v") or ()]
    n = len(cells_v)
    bal = _mask(msg.get("balancing"))
    delta = number(msg.get("cell_delta_mv"))
    mode = msg.get("mode")
    fet = msg.get("chg_fet"), msg.get("dsg_fet")
    d = {
        "pack_v": num("pack_v"), "current_a": num("current_a"), "power_w": num("power_w"),
        "cell_count": n, "cells_v": cells_v, "cell_min_v": num("cell_min_v"), "cell_max_v": num("cell_max_v"),
        "cell_spread_v": None if delta is None else _round(delta / 1000.0),
        "temps_c": [number(t) for t in msg.get("temps_c") or ()],
        "charge_fet": fet[0] if isinstance(fet[0], bool) else None,
        "discharge_fet": fet[1] if isinstance(fet[1], bool) else None,
        "fet_for_diode": None, "charge_off_reason": None, "discharge_off_reason": None,
        "protections": RG.flag_names(_mask(msg.get("protections"))),
        "warnings": RG.flag_names(_mask(msg.get("warnings")), warn=True),
        "latched": RG.flag_names(_mask(msg.get("latched"))),
        "balancing_cells": [i + 1 for i in range(n) if bal >> i & 1],
        "afe_stat": None, "meas_count": None, "uptime_s": number(msg.get("uptime_s")),
        "afe_crc_errors": None, "afe_bus_errors": None, "save_errors": None, "faults": None, "fault_last": None,
        "mqtt": {"state": "online", "error": None, "connects": None, "stored": None, "dropped": None, "sent": None,
                 "block_max_s": None},
        # it publishes, so its network is on; the message carries no inputs
        "power": {"mode": MQTT_MODES.get(mode, mode), "cause": None, "mode_time_s": None, "reset_cause": None,
                  "woken_by": None, "button": None, "acc": None, "charger": None, "network": True},
        "hardware_protection": dict.fromkeys(fmt.HW_KEYS),
        "soc_pct": num("soc_pct"), "remaining_ah": num("remaining_ah"), "full_capacity_ah": None,
        "soh_pct": num("soh_pct"), "cycles": num("cycles"), "remaining_wh": num("remaining_wh"),
        "time_to_empty_min": None, "time_to_full_min": None, "cc_offset_lsb": None, "event_seq": event_seq,
        "config": dict.fromkeys(("chemistry", "cell_channels", "capacity_ah", "shunt_mohm", "modbus_address",
                                 "modbus_baud")),
    }
    ss = msg.get("soc_state")
    known = isinstance(ss, int) and not isinstance(ss, bool)
    ss = ss if known else 0
    # the message carries the states, not the settings (the settings tab reads those over Modbus)
    d["soc_window"] = {"charge_stop_pct": None, "discharge_stop_pct": None, "warn_low_pct": None,
                       "hysteresis_pct": None,
                       "charge_stopped": bool(ss & M.SOC_CHG_STOP) if known else None,
                       "discharge_stopped": bool(ss & M.SOC_DSG_STOP) if known else None,
                       "low_warning": bool(ss & M.SOC_LOW_WARN) if known else None}
    d["storage"] = {"on": bool(ss & M.SOC_STORAGE) if known else None, "target_pct": None,
                    "holds_charge": bool(ss & M.SOC_STORAGE_CHG) if known else None,
                    "holds_discharge": bool(ss & M.SOC_STORAGE_DSG) if known else None,
                    "at_target": bool(ss & M.SOC_STORAGE_AT) if known else None}
    ma = number(msg.get("self_draw_ma"))
    d["self_draw_a"] = None if ma is None else _round(ma / 1000.0)
    d["self_drawn_ah"] = num("self_drawn_ah")
    cells, alerts = _cells_alerts(d)
    d.update({
        "where": where, "cells": cells, "alerts": alerts, "charge_off_text": None, "discharge_off_text": None,
        "config_state": None,
        "limits": dict.fromkeys(("cell_ov_v", "cell_uv_v", "cell_ov_warn_v", "cell_uv_warn_v", "bal_start_v")),
        "chemistry": None,
    })
    return d


def history_sample(state):
    """One point of /api/history: what the charts draw."""
    return {"t": state["t"], "v": state["pack_v"], "a": state["current_a"], "w": state["power_w"],
            "soc": state["soc_pct"], "cmin": state["cell_min_v"], "cmax": state["cell_max_v"],
            "tmax": max((t for t in state["temps_c"] if t is not None), default=None)}


def event_dict(rec):
    t = rec["time_s"]
    return dict(rec, text=fmt.event_text(rec["code"], rec["value"]), kind=RG.event_kind(rec["code"], rec["value"]),
                uptime="%d:%02d:%02d" % (t // 3600, t // 60 % 60, t % 60))


def assignment_list(assignments):
    """["name=value", ...] from {"name": "value"} or a list of NAME=VALUE."""
    if isinstance(assignments, dict):
        return ["%s=%s" % (k, v) for k, v in assignments.items()]
    if isinstance(assignments, (list, tuple)) and all(isinstance(a, str) for a in assignments):
        return list(assignments)
    raise CtlError('give the parameters as {"set": {"cell_ov": "3.60V"}} or {"set": ["cell_ov=3.60V"]}; '
                   "nothing was written")


def config_table(values, state_word, unlock_left_s=0):
    """/api/config: every parameter, in engineering units (`bmsctl config get --json`)."""
    params = []
    for i, row in enumerate(CF.ROWS):
        name = row[1]
        params.append({
            "name": name, "short": CF.short_name(name) or name, "address": row[0],
            "value": None if i == P.P_PIN else CF.eng(i, values[i]), "text": CF.display(i, values[i]),
            "raw": None if i == P.P_PIN else values[i], "unit": row[5], "raw_unit": CF.raw_unit(i),
            "min": CF.eng(i, CF.PRM.lo[i]), "max": CF.eng(i, CF.PRM.hi[i]), "range": CF.range_text(i),
            "description": D.HOLDING.get(name, ""), "restart": i in CF.PACK_KEYS,
            # the short name stands for two parameters (V and s): a value needs its unit
            "ambiguous": len(CF.SHORT.get(CF.short_name(name), ())) > 1,
        })
    return {"parameters": params, "state": {
        "configured": bool(state_word & M.CFG_CONFIGURED), "unlocked": bool(state_word & M.CFG_UNLOCKED),
        "restart_pending": bool(state_word & M.CFG_RESTART_PENDING),
        "pin_lockout": bool(state_word & M.CFG_PIN_LOCKOUT), "unlock_left_s": unlock_left_s}}
