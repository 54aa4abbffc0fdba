"""World: the pack, its chip, a charger and a load on one simulated clock.

Time only moves in advance(). It is cut into pieces that end exactly on the
chip's 250 ms window boundaries, so coulomb-counter windows, ADC updates and
protection delays are exact. Each piece's pack current follows the FETs:

- charger current flows only with CHG_ON (with DSG off, the DSG FET's body
  diode still passes charge current);
- load current flows only with DSG_ON (with CHG off, the CHG FET's body
  diode still passes discharge current);
- the charger and the load share the pack terminals: the charger feeds the
  load first. With CHG off the pack gives only what the charger lacks
  (nothing when it covers the load); with DSG off it takes only what the
  charger has over (a load above the charger gets just the charger's);
- net pack current = charge - load; balancing bleed currents circulate
  inside the pack (they do not pass the shunt).

The two FETs are in series in the pack's current path. Each piece knows
which one passes the current through its body diode (CHG off while
discharging, DSG off while charging) and what the FETs dissipate: the
diode's forward drop times the current, the channel's Rds(on) times the
current squared. `diode_ma`, `diode_over_ms`, `diode_mas` and `diode_mj`
keep the account per FET (index 0 = CHG, 1 = DSG) for tests to read.

The BMS board itself (the MCU, its radio, the AFE) is supplied from the
top of the pack, not through the shunt: `bms_ma` (mA, >= 0) is its draw
now, set by whoever runs the board (SimServer per MCU state, DirectBoard
per its state) from the reference board's figures (bms.boards DRAW_*_UA).
The cells see the net pack current minus bms_ma; the chip (its shunt, the
coulomb counter) sees only the net pack current. `bms_mas` counts the
charge the board drew so far (mA s). World(bms_draw=False) ignores bms_ma
(a pack whose figures must not move, or one whose board draw is already
in a recorded current).

Time is cut at every 250 ms window while the chip works. A shipped chip
does no window work and passes no current (FETs off, no bleeding), so
advance() then takes the time in one piece that still ends on a window
boundary: a month of shelf time costs a few pieces, and the window grid
stays exact afterwards (the cells, the RC pairs and the FET heatsink are
solved exactly for a constant current over any step).

With `fet_sensor` (an index into pack.temperatures_c: 0 = TS1) that
thermistor sits on the FETs' heatsink: a first-order model (`fet_ambient_c`
plus power x FET_RTH_K_PER_W, time constant FET_TAU_S) drives it, so a
diode heating shows where the firmware measures its FET temperature.
Without it, the temperatures stay as the test sets them.
"""
import math

from bms.afe.bq769x0.regs import CC_PERIOD_MS

from bms_sim.afe import afe_type, chip_class
from bms_sim.afe.bq769x0 import SimBq769x0
from .pack import Charger, Load, Pack

# A power MOSFET's body diode at a few amps to tens of amps conducts with
# 0.7-0.9 V; 0.7 V is the low end (the heat it gives is then not overstated).
DIODE_DROP_V = 0.7
# Rds(on) of one FET (or of its parallel set) when on: BMS boards use a few
# milliohms per switch, e.g. two 6 mOhm D2PAKs in parallel.
RDS_ON_MOHM = 3.0
# Heatsink above ambient per watt, at the FET thermistor: a TO-220 on a
# small clip-on heatsink, or a few D2PAKs on a large copper pour, 4-10 K/W.
FET_RTH_K_PER_W = 5.0
# Its time constant: tens of grams of aluminium or copper, about a minute.
FET_TAU_S = 60.0


class World:
    def __init__(self, cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=50.0, spread_mv=0,
                 shunt_uohm=1000, groups=None, seed=0, temps_c=(25.0, 25.0, 25.0), fet_sensor=None,
                 bms_draw=True, afe=None, **chip_kwargs):
        """afe: the chip's --afe name (bms_sim.afe.AFES), the bq769x0 when None."""
        self.pack = Pack(cells=cells, chemistry=chemistry, capacity_mah=capacity_mah,
                         soc_pct=soc_pct, spread_mv=spread_mv, seed=seed, temps_c=temps_c)
        if afe is None or not afe_type(afe):
            self.chip = SimBq769x0(self.pack, groups=groups, shunt_uohm=shunt_uohm, seed=seed, **chip_kwargs)
        else:  # another chip's model (bms_sim.afe): the same tick() and I2C API
            self.chip = chip_class(afe)(self.pack, shunt_uohm=shunt_uohm, seed=seed, **chip_kwargs)
        self.charger = Charger()
        self.load = Load()
        self.now_ms = 0
        # LOAD_PRESENT: the chip senses a load hanging on PACK-.
        self.chip.load_sense = lambda: self.load.current_ma > 0
        if fet_sensor is not None and not 0 <= fet_sensor < len(self.pack.temperatures_c):
            raise ValueError("fet_sensor %r: no such thermistor; use 0..%d (an index into temps_c) or None"
                             % (fet_sensor, len(self.pack.temperatures_c) - 1))
        self.fet_sensor = fet_sensor
        self.fet_ambient_c = self.pack.temperatures_c[fet_sensor] if fet_sensor is not None else 25.0
        self.fet_temp_c = self.fet_ambient_c
        self.fet_w = 0.0  # what the two FETs dissipate now
        self.diode_ma = [0.0, 0.0]  # the current through each FET's body diode now (CHG, DSG)
        self.diode_over_ma = 1000.0  # diode_over_ms counts the time above this
        self.diode_over_ms = [0, 0]
        self.diode_mas = [0.0, 0.0]  # charge through each diode, mA s
        self.diode_mj = [0.0, 0.0]  # heat in each diode, mJ
        self.piece_ms = 0
        self.piece_ma = 0.0
        self.bms_draw = bms_draw  # False: bms_ma does not drain the pack
        self.bms_ma = 0.0  # the board's own supply current now, from the pack top
        self.bms_mas = 0.0  # the charge it drew so far, mA s

    def fets(self):
        """(chg_on, dsg_on) as the chip drives them now."""
        return self.chip.chg_on, self.chip.dsg_on

    def _currents(self, dt_s=0.0):
        """(net pack current mA, bleed mA per cell) for the present state
        (dt_s: the step about to be taken, for the charger's CV solve)."""
        chip = self.chip
        chg_on = chip.chg_on
        dsg_on = chip.dsg_on
        bleed = chip.bleed_ma()
        load_ma = self.load.current_ma
        if chg_on and dsg_on:
            return self.charger.output_ma(self.pack, load_ma, bleed, dt_s) - load_ma, bleed
        if dsg_on:
            # CHG off: the terminals sit a diode drop under the pack, below
            # any charger's CV, so the charger gives its set current
            net = (self.charger.set_current_ma if self.charger.on else 0.0) - load_ma
            return (net if net < 0 else 0.0), bleed
        if chg_on:
            net = self.charger.output_ma(self.pack, load_ma, bleed, dt_s) - load_ma
            return (net if net > 0 else 0.0), bleed
        return 0.0, bleed

    @property
    def current_ma(self):
        """Present net pack current (positive = charging)."""
        return self._currents()[0]

    def ms_to_next_window(self):
        """ms until the next 250 ms chip window boundary (1..250)."""
        return CC_PERIOD_MS - self.now_ms % CC_PERIOD_MS

    def advance(self, ms):
        """Advance the world by ms (integer) milliseconds."""
        if ms != int(ms) or ms < 0:
            raise ValueError("advance() takes a non-negative integer of ms")
        ms = int(ms)
        pack = self.pack
        chip = self.chip
        while ms > 0:
            piece = self.quiet_ms(ms)  # to the next window, or many when shipped
            if piece > ms:
                piece = ms
            net_ma, bleed = self._currents(piece / 1000.0)
            self._fets(piece, net_ma)
            bms_ma = self.bms_ma if self.bms_draw else 0.0
            if bms_ma:
                self.bms_mas += bms_ma * piece / 1000.0
            pack.step(piece / 1000.0, net_ma - bms_ma, bleed if any(bleed) else None)
            chip.tick(piece, net_ma)
            self.now_ms += piece
            ms -= piece

    def quiet_ms(self, limit_ms):
        """How much time a caller that only watches its own wake sources
        (deep sleep) may pass in one advance(): up to limit_ms, ending on a
        window boundary, while the chip is shipped; else up to the next
        window (the chip's work there may raise ALERT or trip a FET)."""
        piece = CC_PERIOD_MS - self.now_ms % CC_PERIOD_MS
        if self.chip.shipped and limit_ms >= piece + CC_PERIOD_MS:
            # no window work, no current (FETs off, no bleeding): whole windows at once
            piece += (limit_ms - piece) // CC_PERIOD_MS * CC_PERIOD_MS
        return piece

    def _fets(self, ms, net_ma):
        """The FETs over a piece of ms carrying net_ma: which body diode
        conducts, the heat, the FET thermistor."""
        chip = self.chip
        self.piece_ms = ms  # the last piece, for a test watching every one
        self.piece_ma = net_ma
        d = self.diode_ma
        d[0] = -net_ma if net_ma < 0 and not chip.chg_on else 0.0
        d[1] = net_ma if net_ma > 0 and not chip.dsg_on else 0.0
        a = abs(net_ma) / 1000.0
        channel_w = RDS_ON_MOHM / 1000.0 * a * a  # each FET that is on
        w = 0.0
        for k in (0, 1):
            if d[k] > 0:
                dw = DIODE_DROP_V * d[k] / 1000.0
                self.diode_mas[k] += d[k] * ms / 1000.0
                self.diode_mj[k] += dw * ms
                if d[k] > self.diode_over_ma:
                    self.diode_over_ms[k] += ms
                w += dw
            elif a > 0:
                w += channel_w
        self.fet_w = w
        target = self.fet_ambient_c + w * FET_RTH_K_PER_W
        self.fet_temp_c += (target - self.fet_temp_c) * (1.0 - math.exp(-ms / 1000.0 / FET_TAU_S))
        if self.fet_sensor is not None:
            self.pack.temperatures_c[self.fet_sensor] = self.fet_temp_c
