"""TI bq769x0 (bq76920/30/40): regs (the register header, shared with the
simulator's model of the chip, tools/bms_sim/afe/bq769x0.py) and driver."""
