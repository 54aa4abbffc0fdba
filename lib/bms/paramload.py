"""Reading the parameters in: the stored record, a bms.cfg text, the
chemistry's defaults, and the key=value text the host tools use.

A boot-time module: bms.start loads the set with it, then
bms.params.Params.release() lets it go (with the packed parameter table,
bms.gen.paramdata) before the rest of the firmware loads, so none of this code
stays in the heap while the BMS runs. The host tools import it as it is.
"""
from array import array

from micropython import const

from bms.params import (CHEM_NONE, CHEMISTRY_NAMES, COUNT, DEVICE_KEYS, FORMAT, P_AFE_GROUPS, P_AFE_TYPE,
                        P_CAPACITY_MAH,
                        P_CC_CAL_EVERY_MS, P_CELL_CHANNELS, P_CELL_OV_MV, P_CHEMISTRY, P_LP_IDLE_MA, Params)

_SCALE_CELLS = const(1)
_SCALE_AH = const(2)

CONFIG_FILE = "bms.cfg"  # key=value text: a whole set, taken in at boot (provisioning)
STORE_NAME = "params"  # the A/B record pair: params.a, params.b
PACK_KEYS = ("chemistry", "cells", "afe_type", "afe_groups", "cell_channels", "capacity_mah")
_PACK_INDICES = (P_CHEMISTRY, P_CELL_CHANNELS, P_CAPACITY_MAH, P_AFE_GROUPS, P_AFE_TYPE)


def name_of(i):
    from bms.gen import paramdata

    return paramdata.NAMES.split()[i]


def index_of(name):
    """The parameter called name, or -1."""
    from bms.gen import paramdata

    names = paramdata.NAMES
    at = names.find(" " + name + " ")
    return names.count(" ", 0, at) if at >= 0 else -1


def _raw_unit(name):
    # the raw unit is in the name (cell_ov_mv is mV)
    k = name.rfind("_")
    return name[k + 1:] if k >= 0 else ""


def check(p, i, value):
    """None when parameter i may take value, else what is wrong."""
    if p.in_range(i, value):
        return None
    name = name_of(i)
    return "%s=%d is outside %d..%d %s" % (name, value, p.lo[i], p.hi[i], _raw_unit(name))


def set_value(p, i, value):
    """Set parameter i if within its range; an error message or None."""
    err = check(p, i, value)
    if err is None:
        p.values[i] = value
    return err


def _note(p, err):
    if err:
        p.errors.append(err)


def apply_defaults(p, chemistry, cells, capacity_mah):
    """The chemistry's defaults scaled to this pack, for every protection,
    warning, balancing and state-of-charge parameter (the pack's own
    settings and the device's - Modbus framing, PIN - stay)."""
    from bms.gen import paramdata

    v = p.values
    dfl = array("i", paramdata.DEFAULTS)
    scale = paramdata.SCALE
    col = chemistry - 1 if chemistry != CHEM_NONE else 0
    for i in range(P_CELL_OV_MV, COUNT):
        if i in DEVICE_KEYS or i == P_AFE_TYPE:
            continue  # the device's own settings (and its chip) are not the chemistry's
        x = dfl[3 * i + col]
        s = scale[i]
        if s == _SCALE_CELLS:
            x *= cells
        elif s == _SCALE_AH:
            x = x * capacity_mah // 1000
        if x > p.hi[i]:
            x = p.hi[i]  # a big pack's scaled default past its row's range (hw_scd_ma: 4 C of 280 Ah)
        v[i] = x


def pack_defaults(p):
    """The chemistry's defaults for the pack the pack keys describe."""
    v = p.values
    if v[P_CELL_CHANNELS] and not v[P_AFE_GROUPS] and not v[P_AFE_TYPE]:  # a bq76952 has no groups
        from bms.afe.chips import model_groups

        v[P_AFE_GROUPS] = model_groups(p.cells())
    apply_defaults(p, v[P_CHEMISTRY], p.cells(), v[P_CAPACITY_MAH])


def _index_at(p, a):
    i = 0
    while i < COUNT:
        if p.addr[i] == a:
            return i
        i += 1
    return -1


def load_record(p, version, payload):
    """A stored set: the pack keys, the chemistry's defaults for that
    pack, then every stored value over them. A parameter the record
    lacks (it came from an older firmware) keeps its default; a value
    out of range or an address this firmware does not know is noted in
    `errors` and skipped."""
    import struct

    p.migrated_from = version if version != FORMAT else 0
    n = len(payload) // 6
    for pack in (True, False):
        k = 0
        while k < n:
            a, x = struct.unpack_from("<Hi", payload, 6 * k)
            i = _index_at(p, a)
            if i < 0:
                if not pack:
                    p.errors.append("stored value for unknown register 0x%04X dropped" % a)
            elif (i in _PACK_INDICES) == pack:
                _note(p, set_value(p, i, x))
            k += 1
        if pack:
            pack_defaults(p)
    if version < 2:
        # Format 1's defaults cut a live load (docs/POWER.md, no live load
        # cut): the offset calibration every 4 h, and low power below 10 mA
        # per Ah. A set still holding them takes the new ones; one the user
        # changed keeps what the user chose.
        v = p.values
        if v[P_CC_CAL_EVERY_MS] == 14400000:
            v[P_CC_CAL_EVERY_MS] = 0
        if v[P_LP_IDLE_MA] == v[P_CAPACITY_MAH] // 100:
            v[P_LP_IDLE_MA] = 20


def set_text(p, key, text):
    """Set a parameter from `key=value` text; an error message or None."""
    if key == "chemistry":
        if text not in CHEMISTRY_NAMES[1:]:
            return "chemistry must be one of lfp, nmc, lto"
        p.values[P_CHEMISTRY] = CHEMISTRY_NAMES.index(text)
        return None
    if key == "cells":
        # shorthand: the default wiring for that many cells
        from bms.afe.chips import models, wiring

        try:
            n = int(text)
        except ValueError:
            return "cells must be a whole number"
        mask, groups = wiring(n, p.values[P_AFE_GROUPS], p.values[P_AFE_TYPE])
        if not mask:
            # the chips' own ranges (bms.afe.chips): the one that fits names itself
            fam = models()
            return "cells must be %d-%d and fit the AFE (%s)" % (
                min(m[2] for m in fam), max(m[3] for m in fam),
                ", ".join("%s %d-%d" % (m[0], m[2], m[3]) for m in fam))
        p.values[P_CELL_CHANNELS] = mask
        p.values[P_AFE_GROUPS] = groups
        return None
    i = index_of(key)
    if i < 0:
        return "unknown parameter " + key
    try:
        value = int(text, 0)
    except ValueError:
        return key + " must be a whole number"
    return set_value(p, i, value)


def _pair(line):
    line = line.strip()
    if not line or line[0] == "#":
        return None
    kv = line.split("=", 1)
    if len(kv) != 2:
        return None
    return kv[0].strip(), kv[1].strip()


def load_lines(p, lines):
    """`key=value` lines (any iterable; a file is read twice): the pack
    keys first, then the chemistry's defaults for that pack, then every
    other setting over them (load_rest). Line by line, to spare the heap."""
    cells = None
    for line in lines:
        kv = _pair(line)
        if kv and kv[0] in PACK_KEYS:
            if kv[0] == "cells":
                cells = kv[1]  # after afe_type and afe_groups, whatever the order: its wiring depends on them
            else:
                _note(p, set_text(p, kv[0], kv[1]))
    if cells is not None:
        _note(p, set_text(p, "cells", cells))
    pack_defaults(p)


def load_rest(p, lines):
    for line in lines:
        kv = _pair(line)
        if kv is None:
            if line.strip() and line.strip()[0] != "#":
                p.errors.append("not key=value: " + line.strip())
        elif kv[0] not in PACK_KEYS:
            _note(p, set_text(p, kv[0], kv[1]))


def load_text(p, text):
    lines = text.split("\n")
    load_lines(p, lines)
    load_rest(p, lines)


def to_text(p):
    """The pack keys, then every parameter that differs from the
    chemistry's default for this pack."""
    v = p.values
    d = Params()
    d.values[P_CHEMISTRY] = v[P_CHEMISTRY]
    d.values[P_CELL_CHANNELS] = v[P_CELL_CHANNELS]
    apply_defaults(d, v[P_CHEMISTRY], p.cells(), v[P_CAPACITY_MAH])
    out = []
    if v[P_CHEMISTRY]:
        out.append("chemistry=%s\n" % CHEMISTRY_NAMES[v[P_CHEMISTRY]])
    for i in range(1, COUNT):
        if i < P_CELL_OV_MV or v[i] != d.values[i]:
            out.append("%s=%d\n" % (name_of(i), v[i]))
    return "".join(out)


def load(directory):
    """The stored parameters, or the unconfigured defaults when none are
    stored. A `bms.cfg` file found beside them is a whole new set (how a
    pack is provisioned by copying one file): it is taken in, saved as the
    record, and renamed to bms.cfg.imported so it is taken only once. Its
    older layout (firmware 0.3) is how earlier releases stored the set."""
    import os

    from bms.store import Store

    p = Params()
    p.store = Store(directory, STORE_NAME)
    rec = p.store.load()
    if rec is not None:
        load_record(p, rec[0], rec[1])
    path = directory + CONFIG_FILE
    try:
        with open(path) as f:
            load_lines(p, f)
        with open(path) as f:
            load_rest(p, f)
        p.imported_text = True
    except OSError:
        pass
    if p.imported_text and p.save():
        try:
            os.rename(path, path + ".imported")
        except OSError:
            pass  # taken in again next boot: the same set, no harm
    return p
