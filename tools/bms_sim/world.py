"""World: the pack, its chip, a charger and a load on one simulated clock.

Time only moves in advance(). It is cut into pieces that end exactly on the
chip's 250 ms window boundaries, so coulomb-counter windows, ADC updates and
protection delays are exact. Each piece's pack current follows the FETs:

- charger current flows only with CHG_ON (with DSG off, the DSG FET's body
  diode still passes charge current);
- load current flows only with DSG_ON (with CHG off, the CHG FET's body
  diode still passes discharge current);
- net pack current = charge - load; balancing bleed currents circulate
  inside the pack (they do not pass the shunt).
"""
from bms.bq769x0 import CC_PERIOD_MS

from .chip import SimBq769x0
from .pack import Charger, Load, Pack


class World:
    def __init__(self, cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=50.0, spread_mv=0,
                 shunt_uohm=1000, groups=None, seed=0, temps_c=(25.0, 25.0, 25.0), **chip_kwargs):
        self.pack = Pack(cells=cells, chemistry=chemistry, capacity_mah=capacity_mah,
                         soc_pct=soc_pct, spread_mv=spread_mv, seed=seed, temps_c=temps_c)
        self.chip = SimBq769x0(self.pack, groups=groups, shunt_uohm=shunt_uohm, seed=seed,
                               **chip_kwargs)
        self.charger = Charger()
        self.load = Load()
        self.now_ms = 0
        # LOAD_PRESENT: the chip senses a load hanging on PACK-.
        self.chip.load_sense = lambda: self.load.current_ma > 0

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
        load_ma = self.load.current_ma if dsg_on else 0.0
        charge_ma = self.charger.output_ma(self.pack, load_ma, bleed, dt_s) if chg_on else 0.0
        return charge_ma - load_ma, bleed

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
            piece = CC_PERIOD_MS - self.now_ms % CC_PERIOD_MS
            if piece > ms:
                piece = ms
            net_ma, bleed = self._currents(piece / 1000.0)
            pack.step(piece / 1000.0, net_ma, bleed if any(bleed) else None)
            chip.tick(piece, net_ma)
            self.now_ms += piece
            ms -= piece
