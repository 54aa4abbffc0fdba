"""The parameters the firmware runs with: values by index, and the
compact per-parameter facts it needs at run time.

The table itself (names, registers, ranges, per-chemistry defaults) is
bms.spec.paramtable, which the host tools read. The firmware reads it packed,
from bms.gen.paramdata (generated from the table by `python -m
bms_sim.tablegen`): `Params` keeps what the loop and the Modbus path need
in small arrays (register address, width, range), and `release()` lets the
packed table go once the boot has applied it. Reading the set in (the
stored record, a bms.cfg text, the chemistry's defaults) is bms.paramload.

Values live in an array('i') indexed by the P_ constants below (the row
order of the table); the loop reads them as `values[P_X]`, never by name.
"""
from array import array

from micropython import const

CHEM_NONE = const(0)
CHEM_LFP = const(1)
CHEM_NMC = const(2)
CHEM_LTO = const(3)
CHEMISTRY_NAMES = ("none", "lfp", "nmc", "lto")

# Indices into the value array (the row order of bms.spec.paramtable.TABLE).
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
P_DIODE_ON_MA = const(116)  # a one-direction block's FET goes on above this current the other way (0 = never)
P_SOC_MAX_DPCT = const(117)  # charge stops at this SOC (100 % = off)
P_SOC_MIN_DPCT = const(118)  # discharge stops at this SOC (0 = off)
P_SOC_WARN_LOW_DPCT = const(119)  # a warning at this SOC (0 = off)
P_SOC_HYST_DPCT = const(120)  # the SOC window's and storage's resume hysteresis
P_STORAGE = const(121)  # 1: storage mode (bms.spec.protrules storage_high/storage_low)
P_STORAGE_SOC_DPCT = const(122)
P_DRAW_COUNTED = const(123)  # 1: the board's own draw (above the shunt) is counted against the SOC
COUNT = const(124)


WIDE = const(1)  # flag: two registers (uint32)
SIGNED = const(2)  # flag: int16


class Params:
    """The parameter values, and per parameter its holding-register
    address, width and range. Reading them in (the stored record, a
    bms.cfg text, chemistry defaults) is bms.paramload, a boot-time module."""

    def __init__(self):
        from bms.gen import paramdata

        self.values = array("i", bytes(4 * COUNT))  # int32: the same width on the ESP32 and the host
        self.addr = array("H", paramdata.ADDR)
        self.lo = array("i", bytes(4 * COUNT))
        self.hi = array("i", bytes(4 * COUNT))
        self.flags = bytearray(paramdata.FLAGS)
        self.errors = []
        self.store = None  # bms.store.Store the set is saved in
        self.migrated_from = 0  # the older format a stored set came in, if any
        self.imported_text = False  # a bms.cfg file was taken in at this boot
        # the stored form, made at boot: a save later needs no heap for it
        self._record = bytearray(6 * COUNT)
        lim = array("i", paramdata.LIMITS)
        dfl = array("i", paramdata.DEFAULTS)
        i = 0
        while i < COUNT:
            self.lo[i] = lim[2 * i]
            self.hi[i] = lim[2 * i + 1]
            self.values[i] = dfl[3 * i]  # unconfigured: the first chemistry's column
            i += 1

    def release(self):
        """Let the boot-time modules go (bms.paramload and the packed
        parameter table): after this only values and the compact arrays
        stay. bms.start does it before the rest of the firmware loads."""
        from bms import release

        release("paramload")
        release("gen.paramdata")
        release("afe.chips")  # paramload's question: which inputs a pack of n cells uses

    def cells(self):
        from bms.afe import cell_count

        return cell_count(self.values[P_CELL_CHANNELS])

    def configured(self):
        """The pack keys are set and the whole set passes its rules."""
        from bms import paramcheck

        return paramcheck.configured(self.values) and self.rule_error() == 0

    def rule_error(self):
        """0, or the number of the first consistency rule the set breaks."""
        from bms import paramcheck

        return paramcheck.check(self.values)

    def in_range(self, i, value):
        return self.lo[i] <= value <= self.hi[i]

    def encode(self):
        """The set as a store payload: (address u16, value i32) per
        parameter, so a later firmware finds each value by its register.
        Always the same buffer (the store copies what it keeps)."""
        import struct

        buf = self._record
        i = 0
        while i < COUNT:
            struct.pack_into("<Hi", buf, 6 * i, self.addr[i], self.values[i])
            i += 1
        return buf

    def save(self):
        """Store the set (unless flash already holds it). False on a failed
        save (no heap for the record, the filesystem refused): counted in
        the store, the previous set is still what flash holds, the values
        here are untouched. Never raises MemoryError or OSError."""
        st = self.store
        if st is None:
            return False
        try:
            payload = self.encode()  # allocation-free; the catch is the guarantee
        except MemoryError:
            return st.fail(1)  # bms.store.FAIL_MEMORY
        except Exception:  # noqa: BLE001 - a bug in encoding: a failed save, not a crash
            return st.fail(3)  # bms.store.FAIL_ERROR
        return st.save(FORMAT, payload)

    def save_errors(self):
        return self.store.write_errors if self.store is not None else 0

    def save_failing(self):
        """Why the last save failed (bms.store FAIL_), 0 when it did not."""
        return self.store.failing if self.store is not None else 0


# Settings of the device, not of the pack: a chemistry's defaults leave them.
DEVICE_KEYS = (P_MODBUS_PARITY, P_PIN, P_UNLOCK_TIMEOUT_S, P_LED_COUNT, P_LED_BRIGHTNESS_PCT,
               P_LED_SOC_SHOW_MS, P_BUTTON_LONG_MS, P_WDT_MS, P_NET_ENABLE, P_DRAW_COUNTED)
FORMAT = const(2)  # of the stored record (2: 0.6.0's no-live-cut defaults); bump with a migration in bms.paramload.load_record
