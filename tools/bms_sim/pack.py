"""The battery pack model of the host simulator: cells, a charger, a load.

Pure Python (no numpy) so it runs anywhere the tests run. Units are in the
names: _mv millivolts, _ma milliamps, _mah milliamp-hours, _mohm milliohms,
_s seconds. Current sign: positive = charging (into the cell).

Each cell is a first-order equivalent circuit:

    terminal = OCV(soc) + I * R0 + v_rc,   v_rc: one R1 || C pair (tau)

The state of charge is integrated from the cell's current and is NOT
clamped at 0 % / 100 %: over-charge and over-discharge are exactly what the
BMS under test must prevent, so the model lets them happen and shows them
as a steeply rising (or falling) open-circuit voltage beyond the table ends.
"""
import math
import random

# OCV tables: (soc_pct, ocv_mv), ascending in SOC, 5 % steps.
# LFP and NMC: LibreSolar defaults (shared/reference/cells-and-defaults.md).
_LFP_DESC_V = (3.392, 3.314, 3.309, 3.308, 3.304, 3.296, 3.283, 3.275, 3.271, 3.268, 3.265,
               3.264, 3.262, 3.252, 3.240, 3.226, 3.213, 3.190, 3.177, 3.132, 2.833)
_NMC_DESC_V = (4.198, 4.135, 4.089, 4.056, 4.026, 3.993, 3.962, 3.924, 3.883, 3.858, 3.838,
               3.819, 3.803, 3.787, 3.764, 3.745, 3.726, 3.702, 3.684, 3.588, 2.800)
# LTO: no reference table; a plausible monotonic curve (1.8 V empty, a
# sloped 2.2-2.4 V middle, 2.75 V full), same 5 % grid.
_LTO_DESC_V = (2.750, 2.590, 2.510, 2.465, 2.435, 2.410, 2.390, 2.370, 2.355, 2.340, 2.325,
               2.310, 2.295, 2.280, 2.265, 2.250, 2.230, 2.200, 2.150, 2.050, 1.800)


def _ascending(desc_v):
    n = len(desc_v)
    return [(5.0 * i, round(desc_v[n - 1 - i] * 1000.0)) for i in range(n)]


OCV_TABLES = {
    "lfp": _ascending(_LFP_DESC_V),
    "nmc": _ascending(_NMC_DESC_V),
    "lto": _ascending(_LTO_DESC_V),
}

# Beyond the table ends the OCV runs away: EXTRA_MV = a*x + b*x^2 with x the
# percent of SOC past 0 % or 100 %. About 8 mV per 0.1 % right past the end,
# steeper further out (a charger pushing LFP to 3.55 V ends ~1.5 % over).
_EXTRAP_MV_PER_PCT = 40.0
_EXTRAP_MV_PER_PCT2 = 40.0
# Numerical sanity: the OCV never leaves this range, and SOC stays within
# these hard limits (a cell that far out is destroyed in reality anyway).
_OCV_MIN_MV = 0.0
_OCV_MAX_MV = 5000.0
_SOC_MIN = -0.25
_SOC_MAX = 1.25

_S_PER_MONTH = 30.0 * 86400.0

# Per-chemistry cell defaults: series resistance and one RC pair for a
# 10 Ah cell (scaled inversely with capacity), self-discharge per month.
_CELL_DEFAULTS = {
    # chemistry: (r0_mohm @10Ah, r1_mohm @10Ah, tau_s, self_discharge_pct_per_month)
    "lfp": (5.0, 3.0, 60.0, 3.0),
    "nmc": (6.0, 4.0, 40.0, 2.0),
    "lto": (4.0, 2.0, 30.0, 1.0),
}


def ocv_mv(chemistry, soc_frac):
    """Open-circuit voltage (mV) at soc_frac (0..1), linear in the table.

    Beyond 0 / 1 the curve extrapolates steeply (see _EXTRAP_*), clamped to
    a sane range.
    """
    table = OCV_TABLES[chemistry]
    soc_pct = soc_frac * 100.0
    if soc_pct >= 100.0:
        x = soc_pct - 100.0
        v = table[-1][1] + _EXTRAP_MV_PER_PCT * x + _EXTRAP_MV_PER_PCT2 * x * x
        return v if v < _OCV_MAX_MV else _OCV_MAX_MV
    if soc_pct <= 0.0:
        x = -soc_pct
        v = table[0][1] - _EXTRAP_MV_PER_PCT * x - _EXTRAP_MV_PER_PCT2 * x * x
        return v if v > _OCV_MIN_MV else _OCV_MIN_MV
    # 5 % grid: index directly instead of searching.
    i = int(soc_pct / 5.0)
    if i >= len(table) - 1:
        i = len(table) - 2
    s0, v0 = table[i]
    s1, v1 = table[i + 1]
    return v0 + (v1 - v0) * (soc_pct - s0) / (s1 - s0)


def ocv_slope(chemistry, soc_frac):
    """(ocv_mv(chemistry, soc_frac), its slope in mV per unit SOC), from one
    table lookup: the charger's CV solve needs both every step."""
    table = OCV_TABLES[chemistry]
    soc_pct = soc_frac * 100.0
    if soc_pct >= 100.0 or soc_pct <= 0.0:
        v = ocv_mv(chemistry, soc_frac)
        return v, (ocv_mv(chemistry, soc_frac + 1e-4) - v) / 1e-4
    i = int(soc_pct / 5.0)
    if i >= len(table) - 1:
        i = len(table) - 2
    s0, v0 = table[i]
    s1, v1 = table[i + 1]
    k = (v1 - v0) / (s1 - s0)
    return v0 + k * (soc_pct - s0), k * 100.0


def soc_for_ocv(chemistry, target_mv):
    """Inverse of ocv_mv (bisection; the curve is strictly monotonic)."""
    lo, hi = _SOC_MIN, _SOC_MAX
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if ocv_mv(chemistry, mid) < target_mv:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class Cell:
    """One cell: OCV(soc) + R0 + one RC pair + self-discharge."""

    def __init__(self, capacity_mah=10000.0, soc=0.5, r0_mohm=None, r1_mohm=None, tau_s=None,
                 self_discharge_pct_per_month=None, chemistry="lfp"):
        if chemistry not in OCV_TABLES:
            raise ValueError("unknown chemistry %r" % chemistry)
        d_r0, d_r1, d_tau, d_sd = _CELL_DEFAULTS[chemistry]
        scale = 10000.0 / capacity_mah  # a bigger cell has a lower resistance
        self.chemistry = chemistry
        self.capacity_mah = float(capacity_mah)
        self.soc = float(soc)
        self.r0_mohm = d_r0 * scale if r0_mohm is None else float(r0_mohm)
        self.r1_mohm = d_r1 * scale if r1_mohm is None else float(r1_mohm)
        self.tau_s = d_tau if tau_s is None else float(tau_s)
        self.self_discharge_pct_per_month = d_sd if self_discharge_pct_per_month is None \
            else float(self_discharge_pct_per_month)
        self.v_rc_mv = 0.0
        self.current_ma = 0.0  # current of the last step (terminal voltage uses it)

    def ocv_mv(self):
        return ocv_mv(self.chemistry, self.soc)

    def terminal_mv(self, current_ma=None):
        """Terminal voltage at current_ma (default: the last step's current).

        mA * mOhm = uV, hence the /1000.
        """
        if current_ma is None:
            current_ma = self.current_ma
        return ocv_mv(self.chemistry, self.soc) + current_ma * self.r0_mohm / 1000.0 + self.v_rc_mv

    def step(self, dt_s, current_ma):
        """Advance dt_s seconds at a constant current_ma (positive = charge)."""
        if dt_s <= 0:
            self.current_ma = current_ma
            return
        soc = self.soc + current_ma * dt_s / (3600.0 * self.capacity_mah)
        soc -= self.self_discharge_pct_per_month / 100.0 * dt_s / _S_PER_MONTH
        if soc > _SOC_MAX:
            soc = _SOC_MAX
        elif soc < _SOC_MIN:
            soc = _SOC_MIN
        self.soc = soc
        # Exact solution of dv/dt = (I*R1 - v)/tau for constant I over dt.
        k = math.exp(-dt_s / self.tau_s)
        v_inf = current_ma * self.r1_mohm / 1000.0
        self.v_rc_mv = v_inf + (self.v_rc_mv - v_inf) * k
        self.current_ma = current_ma


class Pack:
    """N cells in series, with temperature sensors.

    Cells differ slightly in capacity (seeded, +/- 2 %) and start at SOCs
    chosen so the initial OCV spread (max - min) is about spread_mv, cell i
    offset linearly from the lowest (cell 0) to the highest (cell N-1).
    """

    N_TEMPS = 3

    def __init__(self, cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=50.0, spread_mv=0,
                 seed=0, temps_c=(25.0, 25.0, 25.0), **cell_kwargs):
        if cells < 1:
            raise ValueError("cells must be >= 1")
        rng = random.Random(seed)
        self.chemistry = chemistry
        base_mv = ocv_mv(chemistry, soc_pct / 100.0)
        self.cells = []
        for i in range(cells):
            cap = capacity_mah * (1.0 + rng.uniform(-0.02, 0.02))
            if spread_mv and cells > 1:
                target_mv = base_mv + spread_mv * (i / (cells - 1) - 0.5)
                soc = soc_for_ocv(chemistry, target_mv)
            else:
                soc = soc_pct / 100.0
            self.cells.append(Cell(cap, soc, chemistry=chemistry, **cell_kwargs))
        temps = list(temps_c)
        while len(temps) < self.N_TEMPS:
            temps.append(temps[-1] if temps else 25.0)
        self.temperatures_c = temps[:self.N_TEMPS]

    def __len__(self):
        return len(self.cells)

    def step(self, dt_s, pack_current_ma, bleed_ma_per_cell=None):
        """Advance dt_s: every cell carries the pack current, minus its own
        balancing bleed current (bleed_ma_per_cell[i], >= 0, or None)."""
        if bleed_ma_per_cell is None:
            for c in self.cells:
                c.step(dt_s, pack_current_ma)
        else:
            for c, b in zip(self.cells, bleed_ma_per_cell):
                c.step(dt_s, pack_current_ma - b)

    def cell_mv(self, i):
        """Terminal voltage of cell i at its last step's current (a cell
        being bled reads lower, as on real hardware)."""
        return self.cells[i].terminal_mv()

    def cell_mvs(self):
        return [c.terminal_mv() for c in self.cells]

    def pack_mv(self):
        return sum(c.terminal_mv() for c in self.cells)

    def true_soc_pct(self, cell=None):
        """Average true SOC in % (or of one cell when `cell` is given)."""
        if cell is not None:
            return self.cells[cell].soc * 100.0
        return 100.0 * sum(c.soc for c in self.cells) / len(self.cells)

    def cell_soc_pct(self):
        """True SOC of every cell in %."""
        return [c.soc * 100.0 for c in self.cells]


class Charger:
    """CC-CV source.

    CC at the set current until the pack terminal voltage reaches
    cells * cell_cv_mv; then CV: like a real charger it regulates its output
    (pack) voltage, so the current is whatever holds the pack there, never
    negative and never above the set current. The CV current is solved from
    the cell model (ideal fast voltage loop), which is stable at any step.
    Note: with unbalanced cells the highest cell ends above cell_cv_mv, as
    with a real charger; cutting charge then is the BMS's job.

    cell_cv_mv=None: a charger that never stops (pure constant current).
    """

    def __init__(self):
        self.on = False
        self.set_current_ma = 0.0
        self.cell_cv_mv = None
        self.phase = "off"  # "off", "cc" or "cv" at the last output_ma() call

    def set(self, current_ma, cell_cv_mv=None):
        self.on = current_ma > 0
        self.set_current_ma = float(current_ma)
        self.cell_cv_mv = cell_cv_mv

    def off(self):
        self.on = False
        self.set_current_ma = 0.0
        self.phase = "off"

    def output_ma(self, pack, load_ma=0.0, bleed_ma_per_cell=None, dt_s=0.0):
        """Charger output current for the pack's present state.

        load_ma: current a load draws from the same node (the charger
        supplies it too, so the pack current is output - load).
        dt_s: the step the current will be held for; the CV current is
        solved so the pack sits at the target at the END of that step
        (implicit in the RC and OCV change), which keeps CV exact and
        free of overshoot at any step size.
        """
        if not self.on:
            self.phase = "off"
            return 0.0
        i_set = self.set_current_ma
        if self.cell_cv_mv is None:
            self.phase = "cc"
            return i_set
        # Pack voltage at the end of the step, linear in the pack current
        # Ip: v0_mv + Ip * r_total (mV; r in mV per mA = Ohm).
        v0_mv = 0.0
        r_total = 0.0
        for k, c in enumerate(pack.cells):
            b = bleed_ma_per_cell[k] if bleed_ma_per_cell else 0.0
            ocv, slope = ocv_slope(c.chemistry, c.soc)  # slope: mV per unit SOC
            if dt_s > 0:
                decay = math.exp(-dt_s / c.tau_s)
                dsoc_per_ma = dt_s / (3600.0 * c.capacity_mah)
            else:
                decay = 1.0
                dsoc_per_ma = 0.0
                slope = 0.0
            r_cell = (c.r0_mohm + c.r1_mohm * (1.0 - decay)) / 1000.0 + slope * dsoc_per_ma
            v0_mv += ocv + c.v_rc_mv * decay - b * r_cell
            r_total += r_cell
        target_mv = self.cell_cv_mv * len(pack.cells)
        out_ma = (target_mv - v0_mv) / r_total + load_ma
        if out_ma >= i_set:
            self.phase = "cc"
            return i_set
        self.phase = "cv"
        return out_ma if out_ma > 0.0 else 0.0


class Load:
    """Constant-current discharge load."""

    def __init__(self):
        self.current_ma = 0.0

    def set(self, current_ma):
        self.current_ma = float(current_ma)

    def off(self):
        self.current_ma = 0.0

    @property
    def on(self):
        return self.current_ma > 0
