"""The AFE chips in the upper computer's words: names, cell ranges, and
which chip a pack's settings (afe_type, afe_groups) name. Every fact comes
from bms.afe.chips, so a new chip shows up here by itself."""
from bms.afe.chips import AFE_BQ769X0, AFE_BQ76952, models, thermistor_inputs, wiring


class AfeError(ValueError):
    """A chip that cannot take the pack; the text names the fix."""


def cell_range():
    """(fewest, most) cells in series an AFE the firmware knows takes, and
    each chip's own range in words."""
    family = models()
    return (min(m[2] for m in family), max(m[3] for m in family),
            ", ".join("%s %d-%d" % (m[0], m[2], m[3]) for m in family))


def names():
    """Every chip's name, as `--afe` takes it."""
    return [m[0] for m in models()]


def by_name(name):
    """(afe_type, afe_groups) of a chip named as in names()."""
    for m in models():
        if m[0] == name:
            return (AFE_BQ76952, 0) if not m[1] else (AFE_BQ769X0, m[1])
    raise AfeError("AFE %r: give one of %s" % (name, ", ".join(names())))


def _bq769x0s():
    """The bq769x0 family's models, by groups (index groups - 1)."""
    return [m for m in models() if m[1]]


def _model(groups, afe_type):
    if afe_type == AFE_BQ76952:
        return [m for m in models() if not m[1]][0]
    family = _bq769x0s()
    return family[groups - 1] if 0 < groups <= len(family) else None


def afe_name(groups, afe_type=AFE_BQ769X0):
    m = _model(groups, afe_type)
    return m[0] if m else "AFE with %d groups" % groups


def afe_cells(groups, afe_type=AFE_BQ769X0):
    """(fewest, most) cells the chip takes."""
    m = _model(groups, afe_type)
    return tuple(m[2:4]) if m else (0, 0)


def setup_chip(cur_type, cur_groups, cells, afe_type=None, groups=None):
    """(afe_type, afe_groups, thermistor inputs) for `cells` cells: the chip
    asked for, else the board's when it takes them, else the smallest
    bq769x0 that does, else the bq76952. An AfeError names the fix."""
    if afe_type is None:
        if groups:
            afe_type = AFE_BQ769X0
        elif wiring(cells, cur_groups, cur_type)[0]:
            afe_type, groups = cur_type, cur_groups
        else:
            afe_type = AFE_BQ769X0 if wiring(cells, 0, AFE_BQ769X0)[0] else AFE_BQ76952
    mask, groups = wiring(cells, 0 if afe_type else groups, afe_type)
    if not mask:
        lo, hi = afe_cells(groups, afe_type)
        most = max(m[3] for m in _bq769x0s())  # 15: past it only the bq76952
        other = "" if afe_type or cells > most else "; give the AFE with --afe"
        if afe_type == AFE_BQ769X0 and most < cells <= afe_cells(0, AFE_BQ76952)[1]:
            other = "; %d cells take a bq76952 (--afe bq76952)" % cells
        raise AfeError("%d cells do not fit a %s (it takes %d to %d)%s"
                       % (cells, afe_name(groups, afe_type), lo, hi, other))
    return afe_type, groups, thermistor_inputs(afe_type, groups)
