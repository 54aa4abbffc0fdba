"""Which chips exist, and the one this pack has: the only module outside a
chip's folder that imports it (tests/firmware/test_layers.py). Boot-only on the
device: the App lets it go (bms.release) once the driver is built; the
host tools ask it for the chips' models and wiring.
"""


# afe_type: which chip family drives the pack
AFE_BQ769X0 = 0
AFE_BQ76952 = 1


def open_afe(i2c, cell_channels, shunt_uohm, addr, groups, afe_type=AFE_BQ769X0):
    """The driver for the configured chip on this bus (groups: the
    bq769x0 family member, 0 when not set, ignored for a bq76952;
    afe_type: AFE_BQ769X0 or AFE_BQ76952). Only the selected chip's
    module is imported."""
    if afe_type == AFE_BQ76952:
        from bms.afe.bq76952 import Bq76952

        return Bq76952(i2c, cell_channels, shunt_uohm, addr, temps=thermistor_inputs(AFE_BQ76952, 0))
    if afe_type != AFE_BQ769X0:
        raise ValueError("afe_type %r: 0 (bq769x0) or 1 (bq76952)" % (afe_type,))
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
    """((name, groups, min cells, max cells), ...) of every chip: the
    bq769x0 family first (index groups - 1), then the bq76952 (groups 0:
    its 16 inputs are not grouped)."""
    from bms.afe.bq769x0.regs import MODELS
    from bms.afe.bq76952.regs import FAMILY

    return MODELS + tuple((m[0], 0, m[2], m[3]) for m in FAMILY)


def bq76952_cell_channels(cells):
    """The cell inputs a bq76952 board with `cells` cells uses; 0 when they do not fit."""
    from bms.afe.bq76952.regs import cell_channels_for

    return cell_channels_for(cells)


def bq76952_channels_fit(mask):
    """True when the cell inputs in `mask` suit a bq76952 board."""
    from bms.afe.bq76952.regs import channels_fit

    return channels_fit(mask)


def thermistor_inputs(afe_type, groups):
    """The thermistor inputs the chip has: one per group on a bq769x0, three
    (TS1-TS3) on a bq76952."""
    if afe_type == AFE_BQ76952:
        from bms.afe.bq76952.regs import TS_INPUTS

        return TS_INPUTS
    return groups


def wiring(cells, groups, afe_type):
    """(cell_channels, afe_groups) of the usual wiring of `cells` cells on
    the chip afe_type names (a bq769x0 of `groups` groups, or the smallest
    that takes them when 0); cell_channels 0 when they do not fit. A
    bq76952 has no groups: afe_groups 0."""
    if afe_type == AFE_BQ76952:
        return bq76952_cell_channels(cells), 0
    groups = groups or model_groups(cells)
    return default_cell_channels(cells, groups), groups
