"""The analog front end (AFE) boundary: what the firmware knows of any
cell-monitor chip, in its own terms. One folder per chip beside this one
(bms/afe/bq769x0/: its registers and its driver); nothing outside a chip's
folder imports its registers (tests/firmware/test_layers.py), and only
bms.afe.chips (the selector, boot-only) knows which chips exist.

A driver takes its I2C bus in the constructor (machine.I2C's memory API)
and offers:

    configure()              bring the chip up; False on a bus failure
    set_protection(...)      its own protection, the hardware backstop;
                             applied_* then hold what the chip applied
                             (occ_ma: charge over-current, where it has one)
    set_temp_protection(...) its own temperature protection, where it has
                             one (applied_otc_c ..., None where not)
    read(meas)               one cycle's reading into a Measurements:
                             status (ST_ bits below), fets (FET_ bits),
                             balance_mask, load_present, cells, pack and
                             temperatures, and the coulomb counter when a
                             window ended (ST_NEW_CC); the chip's own flags
                             it reported are cleared. READ_ result.
                             What cc_raw covers, in WINDOW_MS windows
                             (1/16 of its LSB is 8.44 uV x 250 ms / 16):
                             meas.cc_summed 0, the newest window only (the
                             bq769x0: a late cycle's missed windows are not
                             in it, bms.soc counts it once per window that
                             passed); 1, the sum of every window since the
                             previous reading (the bq76952's PASSQ: counted
                             once, divided by the windows for the current)
    set_fets(chg, dsg)       the FET bits the chip reports afterwards (bms.regmap
                             FET_CHG, FET_DSG, as input register fet_flags), -1
    fets_off()               both off without a read-back (in doubt)
    set_balancing(mask)      bit k = cell k+1; the mask applied, -1
    enter_ship()             the chip's lowest power
    model, cells, crc_errors, bus_errors

Both chips speak I2C with an optional CRC-8 per byte: i2c_read() and
i2c_write() below are their shared transport (retried, counted in the
driver's crc_errors and bus_errors).

Fault bits (meas.status, input register afe_stat) are the firmware's: a
driver maps its chip's flags onto them.
"""
from micropython import const

from bms.crc import crc8_byte
from bms.regmap import MAX_CELLS  # the cell inputs of the largest chip

# meas.status: what the chip reported this cycle
ST_OCD = const(0x01)  # the chip tripped on discharge over-current
ST_SCD = const(0x02)  # ... on a short circuit
ST_OV = const(0x04)  # ... on cell over-voltage
ST_UV = const(0x08)  # ... on cell under-voltage
ST_OVRD = const(0x10)  # an external fault input overrode the FETs
ST_DEVICE = const(0x20)  # the chip reset or found an internal fault: its settings are gone
ST_FAULTS = const(0x3F)  # the bits above (input register afe_stat)
ST_NEW_CC = const(0x80)  # a coulomb-counter window ended: meas.cc_raw and current_ma are new
ST_STOPPED = const(0x100)  # the chip's ADC is off: its cell readings are old

# read() results
READ_OK = const(0)
READ_NO_STATUS = const(1)  # the status read failed (meas.status is 0)
READ_NO_DATA = const(2)  # the measurement read failed
READ_NOT_CLEARED = const(3)  # measured, but the chip's flags could not be cleared


# The coulomb counter's window: every driver delivers one current (ST_NEW_CC)
# per window, and the cycle, the SOC and the power modes run on it (the
# bq769x0's own period, its regs.CC_PERIOD_MS; tests/firmware/test_afe_driver.py)
WINDOW_MS = const(250)

# a thermistor reading that is no temperature
TEMP_OPEN = const(-32767)
TEMP_SHORT = const(-32766)



def cell_count(cell_channels):
    """Cells in a cell_channels mask (bit n = cell input n+1 has a cell)."""
    n = 0
    while cell_channels:
        n += cell_channels & 1
        cell_channels >>= 1
    return n


def cell_inputs(cell_channels):
    """bytearray(MAX_CELLS): the input (0..) of each cell, bottom first, for
    a cell_channels mask; the cell count is the number of bits set."""
    ch = bytearray(MAX_CELLS)
    n = 0
    i = 0
    while i < MAX_CELLS:
        if cell_channels & (1 << i):
            ch[n] = i
            n += 1
        i += 1
    return ch


def cells_to_inputs(mask, ch, cells):
    """A mask of cells (bit k = cell k+1) as a mask of cell inputs (bit n =
    input n), through cell_inputs()'s table ch. Allocation-free."""
    m = 0
    i = 0
    while i < cells:
        if mask & (1 << i):
            m |= 1 << ch[i]
        i += 1
    return m


def inputs_to_cells(inputs, ch, cells):
    """A mask of cell inputs (bit n = input n) as a mask of cells (bit k =
    cell k+1), through cell_inputs()'s table ch. Allocation-free."""
    m = 0
    i = 0
    while i < cells:
        if inputs & (1 << ch[i]):
            m |= 1 << i
        i += 1
    return m


# -- the I2C transport both chips share -------------------------------------

I2C_TRIES = const(3)  # a NACK or a bad CRC is retried this often in all


def i2c_read(drv, reg, buf, n, seed):
    """n registers from reg into buf, in wire format (a CRC byte after each
    data byte when drv.crc); True on success. seed: the CRC of what the
    chip's first CRC covers before the first data byte (the chips differ);
    each later CRC covers its own byte. Allocation-free."""
    tries = I2C_TRIES
    while tries:
        tries -= 1
        try:
            drv.i2c.readfrom_mem_into(drv.addr, reg, buf)
        except OSError:
            drv.bus_errors += 1
            continue
        if not drv.crc:
            return True
        if crc8_byte(seed, buf[0]) != buf[1]:
            drv.crc_errors += 1
            continue
        i = 2
        end = 2 * n
        while i < end and crc8_byte(0, buf[i]) == buf[i + 1]:
            i += 2
        if i < end:
            drv.crc_errors += 1
            continue
        return True
    return False


def i2c_write(drv, reg, wire):
    """Send prepared wire bytes (CRCs included where the driver uses them)
    to reg, retrying a NACK; True when acknowledged."""
    tries = I2C_TRIES
    while tries:
        tries -= 1
        try:
            drv.i2c.writeto_mem(drv.addr, reg, wire)
            return True
        except OSError:
            drv.bus_errors += 1
    return False
