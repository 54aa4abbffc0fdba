"""The simulator's models of the AFE chips, one module per chip (named as its folder in lib/bms/afe/)."""

# `--afe` names, by the firmware's afe_type (bms.afe.chips AFE_BQ769X0, AFE_BQ76952)
AFES = ("bq769x0", "bq76952")


def afe_type(name):
    """The firmware's afe_type for an --afe name; a ValueError names the choices."""
    if name not in AFES:
        raise ValueError("AFE %r: give %s" % (name, " or ".join(AFES)))
    return AFES.index(name)


def chip_class(name):
    """The model of the chip an --afe name names."""
    if afe_type(name):
        from bms_sim.afe.bq76952 import SimBq76952

        return SimBq76952
    from bms_sim.afe.bq769x0 import SimBq769x0

    return SimBq769x0


def cell_range(name):
    """(fewest, most) cells the chip (the family, for the bq769x0) takes."""
    from bms.afe.chips import models

    fam = [m for m in models() if (m[1] == 0) == (afe_type(name) == 1)]
    return min(m[2] for m in fam), max(m[3] for m in fam)
