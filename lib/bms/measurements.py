"""What one measurement cycle knows about the pack, in preallocated arrays.

Filled by the AFE driver, read by the control logic and the register image.
"""
from array import array

from bms.regmap import MAX_CELLS, MAX_TEMPS



class Measurements:
    def __init__(self, temps):
        self.cells = 0
        self.cell_mv = array("h", [0] * MAX_CELLS)
        self.pack_mv = 0
        self.current_ma = 0
        self.cc_raw = 0  # the coulomb counter's last window, in the chip's LSB
        self.cc_summed = 0  # 1: cc_raw sums every window since the previous reading (bms.afe)
        self.temps = temps  # thermistor inputs on this AFE (one per group)
        self.temp_dc = array("h", [0] * MAX_TEMPS)
        self.status = 0  # bms.afe ST_ bits, as read this cycle
        self.load_present = 0  # the AFE sees a load on the pack terminals (FETs off)
        self.fets = 0  # bms.afe FET_CHG | FET_DSG, as read back
        self.balance_mask = 0  # bit k = cell k+1 bleeding
        self.cell_min_mv = 0
        self.cell_max_mv = 0
        self.cell_min_idx = 0
        self.cell_max_idx = 0

    def update_extremes(self):
        n = self.cells
        if n == 0:
            self.cell_min_mv = self.cell_max_mv = 0
            self.cell_min_idx = self.cell_max_idx = 0
            return
        v = self.cell_mv
        lo = hi = v[0]
        lo_i = hi_i = 0
        i = 1
        while i < n:
            x = v[i]
            if x < lo:
                lo = x
                lo_i = i
            if x > hi:
                hi = x
                hi_i = i
            i += 1
        self.cell_min_mv = lo
        self.cell_max_mv = hi
        self.cell_min_idx = lo_i
        self.cell_max_idx = hi_i
