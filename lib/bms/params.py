"""The parameters the firmware runs with: values by index, and the
compact per-parameter facts it needs at run time.

The table itself (names, registers, ranges, per-chemistry defaults) is
bms.paramtable, which the host tools read. The firmware reads it packed,
from bms.packed (generated from the table by `python -m
bms_sim.tablegen`): `Params` keeps what the loop and the Modbus path need
in small arrays (register address, width, range), and `release()` lets the
packed table go once the boot has applied it.

Values live in an array('l') indexed by the P_ constants below (the row
order of the table); the loop reads them as `values[P_X]`, never by name.
"""
from array import array

from micropython import const

CHEM_NONE = const(0)
CHEM_LFP = const(1)
CHEM_NMC = const(2)
CHEM_LTO = const(3)
CHEMISTRY_NAMES = ("none", "lfp", "nmc", "lto")

# Indices into the value array (the row order of bms.paramtable.TABLE).
P_CHEMISTRY = const(0)
P_CELL_CHANNELS = const(1)
P_CAPACITY_MAH = const(2)
P_SHUNT_UOHM = const(3)
P_AFE_GROUPS = const(4)
P_MODBUS_ADDRESS = const(5)
P_MODBUS_BAUD = const(6)
P_AFE_ADDR = const(7)
P_TEMP_SENSORS = const(8)
P_FET_TEMP_SENSOR = const(9)
P_CELL_OV_MV = const(10)
P_CELL_OV_DELAY_MS = const(11)
P_CELL_OV_RELEASE_MV = const(12)
P_CELL_OV_RELEASE_MS = const(13)
P_CELL_UV_MV = const(14)
P_CELL_UV_DELAY_MS = const(15)
P_CELL_UV_RELEASE_MV = const(16)
P_CELL_UV_RELEASE_MS = const(17)
P_PACK_OV_MV = const(18)
P_PACK_OV_DELAY_MS = const(19)
P_PACK_OV_RELEASE_MV = const(20)
P_PACK_OV_RELEASE_MS = const(21)
P_PACK_UV_MV = const(22)
P_PACK_UV_DELAY_MS = const(23)
P_PACK_UV_RELEASE_MV = const(24)
P_PACK_UV_RELEASE_MS = const(25)
P_CHG_OC_MA = const(26)
P_CHG_OC_DELAY_MS = const(27)
P_CHG_OC_RELEASE_MS = const(28)
P_DSG_OC_MA = const(29)
P_DSG_OC_DELAY_MS = const(30)
P_DSG_OC_RELEASE_MS = const(31)
P_HW_OCD_MA = const(32)
P_HW_OCD_DELAY_MS = const(33)
P_HW_SCD_MA = const(34)
P_HW_SCD_DELAY_US = const(35)
P_SCD_RETRIES = const(36)
P_SCD_RETRY_MS = const(37)
P_HW_OV_MV = const(38)
P_HW_OV_DELAY_S = const(39)
P_HW_UV_MV = const(40)
P_HW_UV_DELAY_S = const(41)
P_CHG_OT_DC = const(42)
P_CHG_OT_RELEASE_DC = const(43)
P_CHG_UT_DC = const(44)
P_CHG_UT_RELEASE_DC = const(45)
P_DSG_OT_DC = const(46)
P_DSG_OT_RELEASE_DC = const(47)
P_DSG_UT_DC = const(48)
P_DSG_UT_RELEASE_DC = const(49)
P_FET_OT_DC = const(50)
P_FET_OT_RELEASE_DC = const(51)
P_TEMP_DELAY_MS = const(52)
P_TEMP_RELEASE_MS = const(53)
P_FAULT_RELEASE_MS = const(54)
P_CELL_OV_WARN_MV = const(55)
P_CELL_UV_WARN_MV = const(56)
P_CHG_OC_WARN_MA = const(57)
P_DSG_OC_WARN_MA = const(58)
P_TEMP_HIGH_WARN_DC = const(59)
P_TEMP_LOW_WARN_DC = const(60)
P_SPREAD_WARN_MV = const(61)
P_WARN_DELAY_MS = const(62)
P_WARN_HYST_MV = const(63)
P_WARN_HYST_MA = const(64)
P_WARN_HYST_DC = const(65)
P_BAL_START_MV = const(66)
P_BAL_DIFF_MV = const(67)
P_BAL_AT_REST = const(68)
P_BAL_MIN_IDLE_MS = const(69)
P_BAL_MAX_CELLS = const(70)
P_BAL_MAX_TEMP_DC = const(71)
P_REST_CURRENT_MA = const(72)
P_FULL_CELL_MV = const(73)
P_FULL_TAIL_MA = const(74)
P_FULL_HOLD_MS = const(75)
P_EMPTY_CELL_MV = const(76)
P_EMPTY_HOLD_MS = const(77)
P_RELAX_CHG_MS = const(78)
P_RELAX_DSG_MS = const(79)
P_OCV_0_MV = const(80)  # 21 points: SOC 0, 5, ..., 100 %
OCV_POINTS = const(21)
P_CC_CAL_EVERY_MS = const(101)
P_CC_CAL_REST_MS = const(102)
P_MODBUS_PARITY = const(103)  # 0 none (2 stop bits), 1 even, 2 odd
P_PIN = const(104)  # never readable: reads as 0
P_UNLOCK_TIMEOUT_S = const(105)
P_LP_IDLE_MS = const(106)  # idle and trouble-free this long: low-power mode (0 = never)
P_LP_IDLE_MA = const(107)
P_LP_CHECK_MS = const(108)  # low power: a measurement this often
P_SLEEP_UV_MS = const(109)  # under-voltage held this long with no charger: sleep (0 = never)
P_LED_COUNT = const(110)
P_LED_BRIGHTNESS_PCT = const(111)
P_LED_SOC_SHOW_MS = const(112)
P_BUTTON_LONG_MS = const(113)
P_WDT_MS = const(114)
P_NET_ENABLE = const(115)  # the network module (Wi-Fi) is used: on while working
COUNT = const(116)


_SCALE_CELLS = const(1)
_SCALE_AH = const(2)

WIDE = const(1)  # flag: two registers (uint32)
SIGNED = const(2)  # flag: int16


class Params:
    """The parameter values, and per parameter its holding-register
    address, width and range."""

    def __init__(self):
        from bms import packed

        d = self._data = packed
        self.values = array("i", bytes(4 * COUNT))  # int32: the same width on the ESP32 and the host
        self.addr = array("H", d.ADDR)
        self.lo = array("i", bytes(4 * COUNT))
        self.hi = array("i", bytes(4 * COUNT))
        self.flags = bytearray(d.FLAGS)
        self.errors = []
        self.store = None  # bms.store.Store the set is saved in
        self.migrated_from = 0  # the older format a stored set came in, if any
        self.imported_text = False  # a bms.cfg file was taken in at this boot
        lim = array("i", d.LIMITS)
        dfl = array("i", d.DEFAULTS)
        i = 0
        while i < COUNT:
            self.lo[i] = lim[2 * i]
            self.hi[i] = lim[2 * i + 1]
            self.values[i] = dfl[3 * i]  # unconfigured: the first chemistry's column
            i += 1

    def release(self):
        """Let the packed table go (names, every chemistry's defaults): after
        this only values and the compact arrays stay in the heap."""
        from bms import release

        self._data = None
        release("packed")

    def _table(self):
        if self._data is None:  # released: a host tool asks after boot
            from bms import packed

            self._data = packed
        return self._data

    def name_of(self, i):
        return self._table().NAMES.split()[i]

    def index_of(self, name):
        names = self._table().NAMES
        at = names.find(" " + name + " ")
        return names.count(" ", 0, at) if at >= 0 else -1

    def cells(self):
        from bms.bq769x0 import cell_count

        return cell_count(self.values[P_CELL_CHANNELS])

    def configured(self):
        """The pack keys are set and the whole set passes its rules."""
        from bms import paramcheck

        return paramcheck.configured(self.values) and self.rule_error() == 0

    def rule_error(self):
        """0, or the number of the first consistency rule the set breaks."""
        from bms import paramcheck

        return paramcheck.check(self.values)

    # -- flash ---------------------------------------------------------------

    def encode(self):
        """The set as a store payload: (address u16, value i32) per
        parameter, so a later firmware finds each value by its register."""
        import struct

        buf = bytearray(6 * COUNT)
        i = 0
        while i < COUNT:
            struct.pack_into("<Hi", buf, 6 * i, self.addr[i], self.values[i])
            i += 1
        return buf

    def load_record(self, version, payload):
        """A stored set: the pack keys, the chemistry's defaults for that
        pack, then every stored value over them. A parameter the record
        lacks (it came from an older firmware) keeps its default; a value
        out of range or an address this firmware does not know is noted in
        `errors` and skipped."""
        import struct

        self.migrated_from = version if version != FORMAT else 0
        n = len(payload) // 6
        for pack in (True, False):
            k = 0
            while k < n:
                a, x = struct.unpack_from("<Hi", payload, 6 * k)
                i = self._index_at(a)
                if i < 0:
                    if not pack:
                        self.errors.append("stored value for unknown register 0x%04X dropped" % a)
                elif (i in _PACK_INDICES) == pack:
                    self._note(self.set_value(i, x))
                k += 1
            if pack:
                self._pack_defaults()

    def _index_at(self, a):
        i = 0
        while i < COUNT:
            if self.addr[i] == a:
                return i
            i += 1
        return -1

    def save(self):
        """Store the set (unless flash already holds it). False on a failed
        write: the previous set is still what flash holds."""
        if self.store is None:
            return False
        return self.store.save(FORMAT, self.encode())

    def save_errors(self):
        return self.store.write_errors if self.store is not None else 0

    def apply_defaults(self, chemistry, cells, capacity_mah):
        """The chemistry's defaults scaled to this pack, for every protection,
        warning, balancing and state-of-charge parameter (the pack's own
        settings and the device's - Modbus framing, PIN - stay)."""
        v = self.values
        d = self._table()
        dfl = array("i", d.DEFAULTS)
        scale = d.SCALE
        col = chemistry - 1 if chemistry else 0
        for i in range(P_CELL_OV_MV, COUNT):
            if i in _DEVICE_KEYS:
                continue  # the device's own settings are not the pack's
            x = dfl[3 * i + col]
            s = scale[i]
            if s == _SCALE_CELLS:
                x *= cells
            elif s == _SCALE_AH:
                x = x * capacity_mah // 1000
            v[i] = x

    def check(self, i, value):
        """None when parameter i may take value, else what is wrong."""
        if value < self.lo[i] or value > self.hi[i]:
            if self._data is None:
                return "parameter %d: %d is outside %d..%d" % (i, value, self.lo[i], self.hi[i])
            name = self.name_of(i)
            return "%s=%d is outside %d..%d %s" % (name, value, self.lo[i], self.hi[i], _raw_unit(name))
        return None

    def set_value(self, i, value):
        """Set parameter i if within its range; an error message or None."""
        err = self.check(i, value)
        if err is None:
            self.values[i] = value
        return err

    def set_text(self, key, text):
        """Set a parameter from `key=value` text; an error message or None."""
        if key == "chemistry":
            if text not in CHEMISTRY_NAMES[1:]:
                return "chemistry must be one of lfp, nmc, lto"
            self.values[P_CHEMISTRY] = CHEMISTRY_NAMES.index(text)
            return None
        if key == "cells":
            # shorthand: the default wiring for that many cells
            from bms.bq769x0 import default_cell_channels, model_groups

            try:
                n = int(text)
            except ValueError:
                return "cells must be a whole number"
            groups = self.values[P_AFE_GROUPS] or model_groups(n)
            mask = default_cell_channels(n, groups)
            if not mask:
                return "cells must be 3-15 and fit the AFE (3-5 per group)"
            self.values[P_CELL_CHANNELS] = mask
            self.values[P_AFE_GROUPS] = groups
            return None
        i = self.index_of(key)
        if i < 0:
            return "unknown parameter " + key
        try:
            value = int(text, 0)
        except ValueError:
            return key + " must be a whole number"
        return self.set_value(i, value)

    def load_lines(self, lines):
        """`key=value` lines (any iterable; a file is read twice): the pack
        keys first, then the chemistry's defaults for that pack, then every
        other setting over them. Line by line, to spare the heap at boot."""
        for line in lines:
            kv = _pair(line)
            if kv and kv[0] in _PACK_KEYS:
                self._note(self.set_text(kv[0], kv[1]))
        self._pack_defaults()

    def _pack_defaults(self):
        v = self.values
        if v[P_CELL_CHANNELS] and not v[P_AFE_GROUPS]:
            from bms.bq769x0 import model_groups

            v[P_AFE_GROUPS] = model_groups(self.cells())
        self.apply_defaults(v[P_CHEMISTRY], self.cells(), v[P_CAPACITY_MAH])

    def load_rest(self, lines):
        for line in lines:
            kv = _pair(line)
            if kv is None:
                if line.strip() and line.strip()[0] != "#":
                    self.errors.append("not key=value: " + line.strip())
            elif kv[0] not in _PACK_KEYS:
                self._note(self.set_text(kv[0], kv[1]))

    def load_text(self, text):
        lines = text.split("\n")
        self.load_lines(lines)
        self.load_rest(lines)

    def _note(self, err):
        if err:
            self.errors.append(err)

    def to_text(self):
        """The pack keys, then every parameter that differs from the
        chemistry's default for this pack."""
        v = self.values
        d = Params()
        d.values[P_CHEMISTRY] = v[P_CHEMISTRY]
        d.values[P_CELL_CHANNELS] = v[P_CELL_CHANNELS]
        d.apply_defaults(v[P_CHEMISTRY], self.cells(), v[P_CAPACITY_MAH])
        out = []
        if v[P_CHEMISTRY]:
            out.append("chemistry=%s\n" % CHEMISTRY_NAMES[v[P_CHEMISTRY]])
        for i in range(1, COUNT):
            if i < P_CELL_OV_MV or v[i] != d.values[i]:
                out.append("%s=%d\n" % (self.name_of(i), v[i]))
        return "".join(out)


_PACK_KEYS = ("chemistry", "cells", "afe_groups", "cell_channels", "capacity_mah")


def _pair(line):
    line = line.strip()
    if not line or line[0] == "#":
        return None
    kv = line.split("=", 1)
    if len(kv) != 2:
        return None
    return kv[0].strip(), kv[1].strip()


def _raw_unit(name):
    # the raw unit is in the name (cell_ov_mv is mV)
    k = name.rfind("_")
    return name[k + 1:] if k >= 0 else ""


_PACK_INDICES = (P_CHEMISTRY, P_CELL_CHANNELS, P_CAPACITY_MAH, P_AFE_GROUPS)
# Settings of the device, not of the pack: a chemistry's defaults leave them.
_DEVICE_KEYS = (P_MODBUS_PARITY, P_PIN, P_UNLOCK_TIMEOUT_S, P_LED_COUNT, P_LED_BRIGHTNESS_PCT,
                P_LED_SOC_SHOW_MS, P_BUTTON_LONG_MS, P_WDT_MS, P_NET_ENABLE)

CONFIG_FILE = "bms.cfg"  # key=value text: a whole set, taken in at boot (provisioning)
STORE_NAME = "params"  # the A/B record pair: params.a, params.b
FORMAT = const(1)  # of the stored record; bump with a migration in load_record


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
        p.load_record(rec[0], rec[1])
    path = directory + CONFIG_FILE
    try:
        with open(path) as f:
            p.load_lines(f)
        with open(path) as f:
            p.load_rest(f)
        p.imported_text = True
    except OSError:
        pass
    if p.imported_text and p.save():
        try:
            os.rename(path, path + ".imported")
        except OSError:
            pass  # taken in again next boot: the same set, no harm
    return p
