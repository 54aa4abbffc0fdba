"""The pack configuration the firmware runs with.

Stored as `key=value` lines in `bms.cfg` on the board's filesystem. A BMS
without that file is unconfigured: it measures and answers Modbus but keeps
both FETs off. Parsing happens once at boot, so it may allocate.
"""
from micropython import const

from bms.bq769x0 import default_cell_channels, model_groups

CONFIG_FILE = "bms.cfg"

CHEM_NONE = const(0)
CHEM_LFP = const(1)
CHEM_NMC = const(2)
CHEM_LTO = const(3)
CHEMISTRY_NAMES = ("none", "lfp", "nmc", "lto")

# Per chemistry: (cell over-voltage trip, release, under-voltage trip, release) mV.
# A first guard until the protection table (issue 3) takes over.
CELL_LIMITS_MV = (
    (0, 0, 0, 0),
    (3650, 3450, 2500, 3000),
    (4250, 4050, 3000, 3400),
    (2850, 2700, 1900, 2100),
)

_INT_KEYS = ("cell_channels", "afe_groups", "capacity_mah", "shunt_uohm",
             "modbus_address", "modbus_baud", "afe_addr")


class Config:
    def __init__(self):
        self.chemistry = CHEM_NONE
        self.cell_channels = 0
        self.afe_groups = 0
        self.capacity_mah = 0
        self.shunt_uohm = 1000
        self.modbus_address = 1
        self.modbus_baud = 19200
        self.afe_addr = 0x08
        self.errors = []  # problems found while loading, for the log

    def cells(self):
        n = 0
        m = self.cell_channels
        while m:
            n += m & 1
            m >>= 1
        return n

    def configured(self):
        return self.chemistry != CHEM_NONE and self.cells() >= 3 and self.capacity_mah > 0

    def set(self, key, value):
        """Set one key from text; returns an error message or None."""
        if key == "chemistry":
            if value not in CHEMISTRY_NAMES:
                return "chemistry must be one of lfp, nmc, lto"
            self.chemistry = CHEMISTRY_NAMES.index(value)
            return None
        if key == "cells":
            # shorthand: the default wiring for that many cells
            try:
                n = int(value)
            except ValueError:
                return "cells must be a whole number"
            groups = self.afe_groups or model_groups(n)
            mask = default_cell_channels(n, groups)
            if not mask:
                return "cells must be 3-15 and fit the AFE (3-5 per group)"
            self.cell_channels = mask
            self.afe_groups = groups
            return None
        if key in _INT_KEYS:
            try:
                setattr(self, key, int(value, 0))
            except ValueError:
                return key + " must be a whole number"
            return None
        return "unknown key " + key

    def load_text(self, text):
        for line in text.split("\n"):
            line = line.strip()
            if not line or line[0] == "#":
                continue
            kv = line.split("=", 1)
            err = self.set(kv[0].strip(), kv[1].strip()) if len(kv) == 2 else "not key=value: " + line
            if err:
                self.errors.append(err)
        if self.cell_channels and not self.afe_groups:
            self.afe_groups = model_groups(self.cells())

    def to_text(self):
        return "".join(
            "%s=%s\n" % kv for kv in (
                ("chemistry", CHEMISTRY_NAMES[self.chemistry]),
                ("cell_channels", "0x%04x" % self.cell_channels),
                ("afe_groups", self.afe_groups),
                ("capacity_mah", self.capacity_mah),
                ("shunt_uohm", self.shunt_uohm),
                ("modbus_address", self.modbus_address),
                ("modbus_baud", self.modbus_baud),
                ("afe_addr", "0x%02x" % self.afe_addr),
            )
        )


def load(directory):
    """The stored configuration, or an unconfigured default when none is stored."""
    cfg = Config()
    try:
        with open(directory + CONFIG_FILE) as f:
            cfg.load_text(f.read())
    except OSError:
        pass
    return cfg
