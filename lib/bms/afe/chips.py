"""Which chips exist, and the one this pack has: the only module outside a
chip's folder that imports it (tests/firmware/test_layers.py). Boot-only on the
device: the App lets it go (bms.release) once the driver is built; the
host tools ask it for the chips' models and wiring.
"""


def open_afe(i2c, cell_channels, shunt_uohm, addr, groups):
    """The driver for the configured chip on this bus (groups: the
    family member, 0 when not set)."""
    from bms.afe.bq769x0 import Bq769x0

    return Bq769x0(i2c, cell_channels, shunt_uohm, addr, groups=groups)


def model_groups(cells):
    """The chip family's smallest member (its group count) for `cells`
    series cells; 0 when none takes them."""
    from bms.afe.bq769x0.regs import model_groups as groups

    return groups(cells)


def default_cell_channels(cells, groups):
    """The cell inputs a board with `cells` cells on a chip of `groups`
    groups uses (its datasheet's wiring); 0 when they do not fit."""
    from bms.afe.bq769x0.regs import default_cell_channels as channels

    return channels(cells, groups)


def models():
    """((name, groups, min cells, max cells), ...) of the chip family."""
    from bms.afe.bq769x0.regs import MODELS

    return MODELS
