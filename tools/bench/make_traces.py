"""Generate the SOC benchmark traces with a physics-model ground truth (PyBaMM).

Development tool only: needs `pip install -r requirements-bench.txt`
(PyBaMM, casadi, numpy, scipy); nothing in `make test` imports it.

    .venv/bin/python -m bench.make_traces --out bench/traces [--only NAME ...]

For every trace it writes, into --out:
  NAME.csv        what `bms-sim replay` plays: t_s,current_ma,temp_c,cell1_mv..cell4_mv
                  as a BMS would measure it (sensor errors applied, integers)
  NAME.truth.csv  t_s,soc_pct: the true pack SOC (mean of the 4 cells' SOC)
  NAME.ocv.csv    soc_pct,ocv_mv: the cell's rested OCV curve (for --ocv-table)
and manifest.json describing all of them.

How a trace is made (see tools/bench/README.md for the why):
  * One SPM run (PyBaMM, parameter set per chemistry) of the *reference* cell
    under a PyBaMM Experiment: drive-like pulsed discharges with regen, rests,
    CC-CV charges (CV until C/20), standby loads.
  * The pack is 4 groups in series; each group is P identical cells in
    parallel (so the pack current is P x the cell current and the capacity
    P x the cell's). The three other series groups are separate SPM runs
    that carry exactly the reference cell's current (series string) but
    start 0.2..1.2 % lower in SOC and have 0..1.2 % more capacity (electrode
    width scaled), so their voltages differ by a few mV and drift apart over
    a discharge. The reference is thus the cell that reaches the top first:
    the charger's CV holds it at the limit (as a per-cell limited charge
    ends in a real pack) and the others end 0.2..1.5 % below full.
  * Truth: each cell's SOC = SOC0 - (charge out) / (its usable capacity),
    where the usable capacity is the model's window between its voltage
    cut-offs (PyBaMM's 0 and 100 % stoichiometries). The pack truth is the
    mean of the four cells (they stay within ~1.5 % of each other, so the
    mean and the minimum differ by under 1 %; the truth file also has the
    weakest cell's SOC in a third column).
  * Trace current of a row = the mean true current until the next row
    (`bms-sim replay` holds a row until the next one), so coulomb counting
    the true trace reproduces the true charge exactly.
  * Temperature: a lumped thermal model run after the fact (heat = I x
    (OCV - V), thermal mass and resistance of a cylindrical cell), ambient
    25 degC.
  * Sensor errors on what the trace shows: current gain error, current
    offset, cell voltage noise (seeded Gaussian); the rated capacity passed
    to the replay differs from the true usable capacity by a few %.
"""
import argparse
import csv
import json
import os
import sys
import time

F = 96485.33212

# P cells in parallel per series group; the bench is 4S.
N_SERIES = 4

TRACES = [
    {
        "name": "nmc_chen2020_drive",
        "chemistry": "nmc",
        "params": "Chen2020",
        "cell": "LG M50 21700 NMC811/graphite (PyBaMM Chen2020), 5.0 Ah nameplate",
        "parallel": 3,
        "rated_mah": 15000,
        "gain_error": 0.005,
        "offset_ma": 30,
        "noise_mv": 1.5,
        "seed": 1,
        "start_soc": 0.62,
        "description": "4S3P NMC811: 30 min rest at 62 %, drive with regen to ~20 %, 45 min rest, "
                       "CC-CV 0.5C to 4.2 V until C/20, 30 min rest, two drives with rests between, "
                       "second CC-CV charge at 0.3C, 1 h rest, drive, 1 h rest.",
        "plan": [
            ("rest", 30), ("drive", 0.42, 2.0), ("rest", 45), ("cccv", 0.5), ("rest", 30),
            ("drive", 0.30, 2.0), ("rest", 20), ("drive", 0.25, 1.5), ("rest", 60), ("cccv", 0.3),
            ("rest", 60), ("drive", 0.35, 2.0), ("rest", 60),
        ],
    },
    {
        "name": "nmc_mohtat2020_drive",
        "chemistry": "nmc",
        "params": "Mohtat2020",
        "cell": "NMC532/graphite pouch (PyBaMM Mohtat2020), 5.0 Ah nameplate",
        "parallel": 3,
        "rated_mah": None,  # set below from the true capacity (+3 %)
        "rated_factor": 1.03,
        "gain_error": -0.004,
        "offset_ma": -20,
        "noise_mv": 2.0,
        "seed": 2,
        "start_soc": 0.88,
        "description": "4S3P NMC532: 20 min rest at 88 %, long drive to ~25 %, 60 min rest, CC-CV 0.7C "
                       "to 4.2 V until C/20, 20 min rest, drive, 30 min rest, drive to ~15 %, 2 h rest, "
                       "CC-CV 0.5C, 30 min rest.",
        "plan": [
            ("rest", 20), ("drive", 0.60, 1.5), ("rest", 60), ("cccv", 0.7), ("rest", 20),
            ("drive", 0.40, 2.0), ("rest", 30), ("drive", 0.40, 1.0), ("rest", 120), ("cccv", 0.5),
            ("rest", 30),
        ],
    },
    {
        "name": "lfp_prada2013_drive",
        "chemistry": "lfp",
        "params": "Prada2013",
        "cell": "A123 ANR26650 LFP/graphite (PyBaMM Prada2013), 2.3 Ah nameplate",
        "parallel": 20,
        "rated_mah": None,
        "rated_factor": 0.97,
        "gain_error": 0.005,
        "offset_ma": 30,
        "noise_mv": 1.5,
        "seed": 3,
        "start_soc": 0.55,
        "description": "4S20P LFP: 30 min rest at 55 % (plateau: the OCV says little), drive with regen "
                       "to ~30 %, 30 min rest, CC-CV 0.5C to 3.6 V until C/20 (first full charge), "
                       "1 h rest, two drives with a rest, 2 h rest, drive, CC-CV 0.3C, 1 h rest.",
        "plan": [
            ("rest", 30), ("drive", 0.25, 1.0), ("rest", 30), ("cccv", 0.5), ("rest", 60),
            ("drive", 0.30, 1.0), ("rest", 30), ("drive", 0.20, 0.8), ("rest", 120),
            ("drive", 0.15, 1.0), ("rest", 30), ("cccv", 0.3), ("rest", 60),
        ],
    },
    {
        "name": "lfp_prada2013_standby_day",
        "chemistry": "lfp",
        "params": "Prada2013",
        "cell": "A123 ANR26650 LFP/graphite (PyBaMM Prada2013), 2.3 Ah nameplate",
        "parallel": 20,
        "rated_mah": None,
        "rated_factor": 1.03,
        "gain_error": -0.005,
        "offset_ma": 30,
        "noise_mv": 1.5,
        "seed": 4,
        "start_soc": 0.60,
        "description": "4S20P LFP standby day: 30 min rest at 60 %, CC-CV 0.5C to full (the last "
                       "anchor the firmware gets), 1 h rest, 40 min at C/2 down onto the plateau, "
                       "30 min rest, then 24 h of small loads C/100..C/50 (blocks of 15-120 min, "
                       "some at zero) that never reach full again, 1 h rest. Scored through the "
                       "day: small currents must not vanish.",
        "plan": [("rest", 30), ("cccv", 0.5), ("rest", 60), ("dsg", 0.5, 40), ("rest", 30),
                 ("standby", 24 * 60), ("rest", 60)],
        # the standby day starts this long after the (first) full charge ends
        "standby_after_full_min": 60 + 40 + 30,
    },
    {
        # issue 19: a steady load under the old 100 mA rest threshold (C/40
        # of one 2.3 Ah cell), on the plateau where the OCV says nothing
        "name": "lfp_prada2013_standby_load",
        "chemistry": "lfp",
        "params": "Prada2013",
        "cell": "A123 ANR26650 LFP/graphite (PyBaMM Prada2013), 2.3 Ah nameplate",
        "parallel": 1,
        "rated_mah": None,
        "rated_factor": 1.0,
        "gain_error": 0.004,
        "offset_ma": 1.5,
        # a 2.3 Ah pack has a 10 mOhm shunt (0.84 mA per coulomb-counter LSB):
        # at 1 mOhm the bq769x0's +-3 LSB offset alone would be C/90
        "shunt_uohm": 10000,
        "noise_mv": 1.5,
        "seed": 5,
        "start_soc": 1.0,
        "description": "4S1P LFP on standby (an alarm system or router on its backup battery): 10 min "
                       "rest at full, then 12 h of a steady C/40 load (57 mA, under the firmware's old "
                       "100 mA rest threshold) with three 10-minute bursts at C/2, down the plateau to "
                       "~45 %, 30 min rest. Scored over the whole trace (it starts at a known full): "
                       "the steady load must count and must not be taken for rest.",
        "plan": [("rest", 10), ("steady", 12 * 60, 1 / 40.0, ((150, 10, 0.5), (390, 10, 0.5), (600, 10, 0.5))),
                 ("rest", 30)],
        # the targets over the whole trace (bench.score: a trace's own
        # targets replace its chemistry's)
        "targets": {"rms_pct": 1.0, "max_pct": 2.0},
    },
]


def _pybamm():
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    import pybamm

    pybamm.set_logging_level("ERROR")
    return pybamm


def usable_capacity_ah(pv):
    """The model's usable capacity between its voltage cut-offs (PyBaMM's
    0 % and 100 % stoichiometries of the negative electrode)."""
    pybamm = _pybamm()
    x0, x100, _y100, _y0 = pybamm.lithium_ion.get_min_max_stoichiometries(pv)
    q_n = (pv["Negative electrode active material volume fraction"]
           * pv["Maximum concentration in negative electrode [mol.m-3]"]
           * pv["Negative electrode thickness [m]"] * pv["Electrode height [m]"]
           * pv["Electrode width [m]"] * F / 3600.0)
    q_n *= pv["Number of electrodes connected in parallel to make a cell"]
    return float(q_n * (x100 - x0))


def drive_profile(rng, depth, peak_c, cap_ah, chem):
    """A 1 s drive-like current array (A, PyBaMM sign: + = discharge) that takes
    out about `depth` of the capacity: pulses of 30-120 s at 0.5..peak_c C,
    short regen pulses (5-15 s at 0.2-0.6 C), coasting at ~0.05 C."""
    import numpy as np

    out = []
    target = depth * cap_ah * 3600.0
    taken = 0.0
    while taken < target:
        n = int(rng.integers(30, 121))
        c = float(rng.uniform(0.5, peak_c))
        out += [c * cap_ah] * n
        taken += c * cap_ah * n
        if rng.random() < 0.7:
            n = int(rng.integers(5, 16))
            c = float(rng.uniform(0.2, 0.6))
            out += [-c * cap_ah] * n
            taken -= c * cap_ah * n
        n = int(rng.integers(5, 31))
        c = float(rng.uniform(0.0, 0.08))
        out += [c * cap_ah] * n
        taken += c * cap_ah * n
    out.append(0.0)
    t = np.arange(len(out), dtype=float)
    return np.column_stack([t, np.array(out)])


def build_steps(spec, cap_ah, pv, rng):
    pybamm = _pybamm()
    vmax = pv["Upper voltage cut-off [V]"]
    steps = []
    for item in spec["plan"]:
        kind = item[0]
        if kind == "rest":
            steps.append(pybamm.step.rest(duration=item[1] * 60, period=60))
        elif kind == "drive":
            arr = drive_profile(rng, item[1], item[2], cap_ah, spec["chemistry"])
            steps.append(pybamm.step.current(arr, period=1))
        elif kind == "cccv":
            c = item[1]
            steps.append(pybamm.step.current(-c * cap_ah, period=10,
                                             termination="%.3f V" % vmax))
            steps.append(pybamm.step.voltage(vmax, period=10,
                                             termination="%.4f A" % (cap_ah / 20.0)))
        elif kind == "dsg":
            steps.append(pybamm.step.current(item[1] * cap_ah, duration=item[2] * 60, period=10))
        elif kind == "steady":
            # a steady load of item[2] C for item[1] minutes, with bursts
            # (start minute, minutes, C) in it, in time order
            at = 0
            for start, dur, c in item[3]:
                if start > at:
                    steps.append(pybamm.step.current(item[2] * cap_ah, duration=(start - at) * 60, period=60))
                steps.append(pybamm.step.current(c * cap_ah, duration=dur * 60, period=10))
                at = start + dur
            if item[1] > at:
                steps.append(pybamm.step.current(item[2] * cap_ah, duration=(item[1] - at) * 60, period=60))
        elif kind == "standby":
            total = item[1] * 60
            done = 0
            while done < total:
                dur = int(rng.integers(15, 121)) * 60
                dur = min(dur, total - done)
                c = 0.0 if rng.random() < 0.15 else float(rng.uniform(1 / 100.0, 1 / 50.0))
                if c == 0.0:
                    steps.append(pybamm.step.rest(duration=dur, period=60))
                else:
                    steps.append(pybamm.step.current(c * cap_ah, duration=dur, period=60))
                done += dur
        else:
            raise ValueError(kind)
    return steps


def _dedupe(t, *cols):
    """Times rounded to 0.1 s, rows closer than 0.5 s to the next dropped
    (step ends fall just after a period point); the last row is kept."""
    import numpy as np

    t = np.round(t, 1)
    keep = np.ones(len(t), dtype=bool)
    last = t[-1]
    for k in range(len(t) - 2, -1, -1):
        if last - t[k] < 0.5:
            keep[k] = False
        else:
            last = t[k]
    return (t[keep],) + tuple(c[keep] for c in cols)


def run_reference(spec, pv, cap_ah):
    """The reference cell through the experiment: (t, discharge Ah, V, OCV)."""
    import numpy as np

    pybamm = _pybamm()
    rng = np.random.default_rng(spec["seed"])
    steps = build_steps(spec, cap_ah, pv, rng)
    model = pybamm.lithium_ion.SPM()
    exp = pybamm.Experiment(steps)
    sim = pybamm.Simulation(model, parameter_values=pv.copy(), experiment=exp)
    sol = sim.solve(initial_soc=spec["start_soc"])
    t = sol["Time [s]"].entries
    d = sol["Discharge capacity [A.h]"].entries
    v = sol["Voltage [V]"].entries
    ocv = sol["Bulk open-circuit voltage [V]"].entries
    # a full charge ends each voltage-hold step (CV until C/20)
    flat = [st for cyc in sol.cycles for st in cyc.steps]
    full_times = [float(st["Time [s]"].entries[-1]) for st, spec_step in zip(flat, steps)
                  if "Voltage" in type(spec_step).__name__]
    t, d, v, ocv = _dedupe(t, d, v, ocv)
    return t, d, v, ocv, full_times


def run_follower(pv, cap_scale, soc0, t, i_mean):
    """Another series cell: the reference's current, its own SOC and capacity."""
    import numpy as np

    pybamm = _pybamm()
    p = pv.copy()
    p["Electrode width [m]"] = pv["Electrode width [m]"] * cap_scale
    p.set_initial_state(soc0, inplace=True)
    p["Upper voltage cut-off [V]"] = pv["Upper voltage cut-off [V]"] + 0.3
    p["Lower voltage cut-off [V]"] = max(0.5, pv["Lower voltage cut-off [V]"] - 0.5)
    # piecewise-constant current (the row means), as nodes at t_i and just before t_(i+1)
    eps = 0.05
    tt = np.empty(2 * (len(t) - 1))
    ii = np.empty_like(tt)
    tt[0::2] = t[:-1]
    tt[1::2] = t[1:] - eps
    ii[0::2] = i_mean
    ii[1::2] = i_mean
    tt = np.append(tt, t[-1])
    ii = np.append(ii, i_mean[-1])
    p["Current function [A]"] = pybamm.Interpolant(tt, ii, pybamm.t, interpolator="linear")
    model = pybamm.lithium_ion.SPM()
    sim = pybamm.Simulation(model, parameter_values=p)
    sol = sim.solve(t_eval=t, t_interp=t)
    if len(sol.t) != len(t):
        raise RuntimeError("a follower cell stopped at t=%.0f s of %.0f: %s (scale %.4f, SOC0 %.3f)"
                           % (sol.t[-1], t[-1], sol.termination, cap_scale, soc0))
    return sol["Discharge capacity [A.h]"].entries, sol["Voltage [V]"].entries


def ocv_curve(pv, cap_ah):
    """Rested OCV vs SOC at 1 % steps from a C/50 discharge (bulk OCV at the
    particles' mean stoichiometry); 0 and 100 % are the model's cut-offs."""
    import numpy as np

    pybamm = _pybamm()
    model = pybamm.lithium_ion.SPM()
    exp = pybamm.Experiment([pybamm.step.current(cap_ah / 50.0, period=300, duration=60 * 3600,
                                                 termination="%.3f V" % pv["Lower voltage cut-off [V]"])])
    sol = pybamm.Simulation(model, parameter_values=pv.copy(), experiment=exp).solve(initial_soc=1.0)
    soc = 100.0 * (1.0 - sol["Discharge capacity [A.h]"].entries / cap_ah)
    ocv = sol["Bulk open-circuit voltage [V]"].entries
    order = np.argsort(soc)
    grid = np.arange(0, 101, 1.0)
    out = np.interp(grid, soc[order], ocv[order])
    out[0] = min(out[0], pv["Lower voltage cut-off [V]"])
    out[-1] = max(out[-1], pv["Upper voltage cut-off [V]"])
    # strictly rising (the plateau of LFP is flat to a fraction of a mV)
    mv = np.round(out * 1000.0).astype(int)
    for k in range(1, len(mv)):
        if mv[k] <= mv[k - 1]:
            mv[k] = mv[k - 1] + 1
    return grid, mv


def lumped_temperature(t, i_cell, v, ocv, mass_kg):
    """First-order lumped thermal model, ambient 25 degC: C dT/dt = I(OCV-V) - (T-25)/R."""
    import numpy as np

    c_th = mass_kg * 1000.0  # ~1 J/(g K)
    r_th = 12.0  # K/W, a cell in a pack with little airflow
    temp = np.empty_like(t)
    temp[0] = 25.0
    for k in range(1, len(t)):
        dt = t[k] - t[k - 1]
        q = abs(i_cell[k - 1] * (ocv[k - 1] - v[k - 1]))
        tau = r_th * c_th
        target = 25.0 + q * r_th
        temp[k] = target + (temp[k - 1] - target) * np.exp(-dt / tau)
    return temp


def make_trace(spec, out_dir, log=sys.stderr):
    import numpy as np

    pybamm = _pybamm()
    t0 = time.monotonic()
    pv = pybamm.ParameterValues(spec["params"])
    cap_ah = usable_capacity_ah(pv)
    t, d, v, ocv, full_times = run_reference(spec, pv, cap_ah)
    # the mean current of each row until the next (PyBaMM: + = discharge)
    i_mean = np.diff(d) * 3600.0 / np.diff(t)

    rng = np.random.default_rng(100 + spec["seed"])
    # the reference is the cell that tops out first (highest SOC, smallest
    # capacity): the charge's CV holds it at the limit, the others sit a
    # little lower, as a per-cell-limited charge ends in a real pack
    scales = [1.0] + list(rng.uniform(1.0, 1.012, N_SERIES - 1))
    offsets = [0.0] + list(rng.uniform(-0.012, -0.002, N_SERIES - 1))
    socs, volts = [], []
    for k in range(N_SERIES):
        if k == 0:
            dk, vk = d, v
        else:
            soc0 = min(0.995, max(0.005, spec["start_soc"] + offsets[k]))
            offsets[k] = soc0 - spec["start_soc"]
            dk, vk = run_follower(pv, scales[k], soc0, t, i_mean)
            dk = np.asarray(dk)
            vk = np.asarray(vk)
        socs.append(100.0 * (spec["start_soc"] + offsets[k] - dk / (cap_ah * scales[k])))
        volts.append(vk)
    socs = np.array(socs)
    soc_pack = socs.mean(axis=0)
    soc_min = socs.min(axis=0)

    p = spec["parallel"]
    true_ma = np.append(i_mean, 0.0) * -1000.0 * p  # + = charging, pack current
    temp = lumped_temperature(t, np.append(i_mean, 0.0), v, ocv, 0.07 if spec["chemistry"] == "nmc" else 0.076)

    noise = np.random.default_rng(spec["seed"])
    meas_ma = np.round(true_ma * (1.0 + spec["gain_error"]) + spec["offset_ma"]).astype(int)
    cells_mv = [np.round(vk * 1000.0 + noise.normal(0.0, spec["noise_mv"], len(t))).astype(int)
                for vk in volts]
    true_cap_mah = cap_ah * p * 1000.0 * float(np.mean(scales))
    rated = spec.get("rated_mah") or int(round(true_cap_mah * spec["rated_factor"] / 100.0) * 100)

    ts = t - t[0]
    name = spec["name"]
    with open(os.path.join(out_dir, name + ".csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["t_s", "current_ma", "temp_c"] + ["cell%d_mv" % (k + 1) for k in range(N_SERIES)])
        for k in range(len(ts)):
            w.writerow(["%g" % round(ts[k], 1), int(meas_ma[k]), "%.1f" % temp[k]]
                       + [int(c[k]) for c in cells_mv])
    with open(os.path.join(out_dir, name + ".truth.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["t_s", "soc_pct", "soc_min_cell_pct"])
        for k in range(len(ts)):
            w.writerow(["%g" % round(ts[k], 1), "%.3f" % soc_pack[k], "%.3f" % soc_min[k]])
    grid, mv = ocv_curve(pv, cap_ah)
    with open(os.path.join(out_dir, name + ".ocv.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["soc_pct", "ocv_mv"])
        for s, m in zip(grid, mv):
            w.writerow(["%g" % s, int(m)])

    first_full = round(float(full_times[0] - t[0]), 1) if full_times else None
    wall = time.monotonic() - t0
    log.write("%s: %.1f h simulated, %d rows, true capacity %.0f mAh, rated %d mAh, first full at %s s, "
              "%.1f s\n" % (name, ts[-1] / 3600.0, len(ts), true_cap_mah, rated, first_full, wall))
    return {
        "name": name,
        "trace": name + ".csv",
        "truth": name + ".truth.csv",
        "ocv_table": name + ".ocv.csv",
        "chemistry": spec["chemistry"],
        "pybamm_parameters": spec["params"],
        "model": "SPM (PyBaMM %s)" % pybamm.__version__,
        "cell": spec["cell"],
        "pack": "%dS%dP" % (N_SERIES, p),
        "capacity_mah": rated,
        "true_capacity_mah": round(true_cap_mah, 1),
        "capacity_error_pct": round(100.0 * (rated / true_cap_mah - 1.0), 2),
        "shunt_uohm": spec.get("shunt_uohm", 1000),
        "targets": spec.get("targets"),
        "sensor_errors": {
            "current_gain_error": spec["gain_error"],
            "current_offset_ma": spec["offset_ma"],
            "cell_voltage_noise_mv_rms": spec["noise_mv"],
            "noise_seed": spec["seed"],
        },
        "cells": {
            "capacity_scale": [round(float(s), 4) for s in scales],
            "initial_soc_offset_pct": [round(100.0 * float(o), 2) for o in offsets],
            "truth": "mean of the 4 cells' SOC (soc_min_cell_pct column: the weakest cell)",
            "max_spread_pct": round(float((socs.max(axis=0) - socs.min(axis=0)).max()), 2),
        },
        "start_soc_pct": round(float(soc_pack[0]), 2),
        "duration_s": round(float(ts[-1]), 1),
        "duration_h": round(float(ts[-1]) / 3600.0, 2),
        "rows": int(len(ts)),
        "first_full_charge_s": first_full,
        "full_charge_s": [round(float(x - t[0]), 1) for x in full_times],
        "reaches_full": bool(full_times),
        "truth_soc_at_full_pct": [round(float(np.interp(x, t, soc_pack)), 2) for x in full_times],
        "standby_from_s": (round(first_full + 60 * spec["standby_after_full_min"], 1)
                           if first_full is not None and "standby_after_full_min" in spec else None),
        "soc_range_pct": [round(float(soc_pack.min()), 2), round(float(soc_pack.max()), 2)],
        "description": spec["description"],
        "generate_seconds": round(wall, 1),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/traces")
    ap.add_argument("--only", nargs="*", help="trace names to (re)generate; the manifest keeps the others")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    man_path = os.path.join(args.out, "manifest.json")
    old = {}
    if args.only and os.path.exists(man_path):
        with open(man_path) as f:
            old = {t["name"]: t for t in json.load(f)["traces"]}
    entries = []
    t0 = time.monotonic()
    for spec in TRACES:
        if args.only and spec["name"] not in args.only:
            if spec["name"] in old:
                entries.append(old[spec["name"]])
            continue
        entries.append(make_trace(spec, args.out))
    manifest = {
        "generator": "tools/bench/make_traces.py",
        "command": ".venv/bin/python -m bench.make_traces --out bench/traces",
        "sign": "current_ma positive = charging; pack current (P cells in parallel per group)",
        "soc_window": "0 and 100 % = the parameter set's lower and upper voltage cut-offs (rested)",
        "traces": entries,
    }
    with open(man_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    sys.stderr.write("wrote %d traces in %.1f s\n" % (len(entries), time.monotonic() - t0))


if __name__ == "__main__":
    main()
