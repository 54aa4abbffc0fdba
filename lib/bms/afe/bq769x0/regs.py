"""TI bq769x0 (bq76920/30/40) register map, bit fields and datasheet tables.

One header for both sides: the firmware driver (bms.afe.bq769x0)
and the host simulator's model of the chip (tools/bms_sim/afe/bq769x0.py)
import these names, so the two cannot disagree about the chip. Nothing
outside the chip's folder imports it (tests/firmware/test_layers.py): the rest of
the firmware talks to the chip through bms.afe. Facts from TI SLUSBK2.
"""
from micropython import const

I2C_ADDR = const(0x08)  # 0x18 on some part numbers

# Registers
SYS_STAT = const(0x00)
CELLBAL1 = const(0x01)
CELLBAL2 = const(0x02)
CELLBAL3 = const(0x03)
SYS_CTRL1 = const(0x04)
SYS_CTRL2 = const(0x05)
PROTECT1 = const(0x06)
PROTECT2 = const(0x07)
PROTECT3 = const(0x08)
OV_TRIP = const(0x09)
UV_TRIP = const(0x0A)
CC_CFG = const(0x0B)
VC1_HI = const(0x0C)  # VCn_HI = VC1_HI + 2 * (n - 1), 14-bit big-endian
BAT_HI = const(0x2A)
TS1_HI = const(0x2C)  # TSn_HI = TS1_HI + 2 * (n - 1)
CC_HI = const(0x32)
ADCGAIN1 = const(0x50)
ADCOFFSET = const(0x51)
ADCGAIN2 = const(0x59)
REG_COUNT = const(0x5A)

CC_CFG_VALUE = const(0x19)  # datasheet: write 0x19 at start-up

# SYS_STAT bits (write 1 to clear)
STAT_CC_READY = const(0x80)
STAT_DEVICE_XREADY = const(0x20)
STAT_OVRD_ALERT = const(0x10)
STAT_UV = const(0x08)
STAT_OV = const(0x04)
STAT_SCD = const(0x02)
STAT_OCD = const(0x01)
STAT_FAULTS = const(0x3F)  # everything but CC_READY

# SYS_CTRL1
CTRL1_LOAD_PRESENT = const(0x80)
CTRL1_ADC_EN = const(0x10)
CTRL1_TEMP_SEL = const(0x08)
CTRL1_SHUT_A = const(0x02)
CTRL1_SHUT_B = const(0x01)

# SYS_CTRL2
CTRL2_DELAY_DIS = const(0x80)
CTRL2_CC_EN = const(0x40)
CTRL2_CC_ONESHOT = const(0x20)
CTRL2_DSG_ON = const(0x02)
CTRL2_CHG_ON = const(0x01)

# PROTECT1
PROT1_RSNS = const(0x80)

# ADC facts
ADC_GAIN_BASE_UV = const(365)  # GAIN = 365 + 5-bit code, uV per LSB
CELL_ADC_MAX = const(0x3FFF)  # 14-bit
TS_UV_PER_LSB = const(382)
CC_NV_PER_LSB = const(8440)  # 8.44 uV per LSB
CC_PERIOD_MS = const(250)
TS_PERIOD_MS = const(2000)
OV_TRIP_BASE = const(0x2008)  # 14-bit pattern 10-xxxxxxxx-1000
UV_TRIP_BASE = const(0x1000)  # 14-bit pattern 01-xxxxxxxx-0000
UV_MINQUAL = const(0x0518)  # cells below this ADC code are ignored for UV

# Protection tables. Thresholds are sense-resistor voltages in mV with
# RSNS=1; with RSNS=0 each is about half (separate table, datasheet values).
SCD_THRESH_MV_RSNS1 = (44, 67, 89, 111, 133, 155, 178, 200)
SCD_THRESH_MV_RSNS0 = (22, 33, 44, 56, 67, 78, 89, 100)
SCD_DELAY_US = (70, 100, 200, 400)
OCD_THRESH_MV_RSNS1 = (17, 22, 28, 33, 39, 44, 50, 56, 61, 67, 72, 78, 83, 89, 94, 100)
OCD_THRESH_MV_RSNS0 = (8, 11, 14, 17, 19, 22, 25, 28, 31, 33, 36, 39, 42, 44, 47, 50)
OCD_DELAY_MS = (8, 20, 40, 80, 160, 320, 640, 1280)
UV_DELAY_S = (1, 4, 8, 16)
OV_DELAY_S = (1, 2, 4, 8)

# Family members: cell groups of five inputs (VC1-5, VC6-10, VC11-15), one
# thermistor input per group, and the supported series cell count.
GROUP_INPUTS = const(5)
MODELS = (
    # name, groups, min cells, max cells
    ("bq76920", 1, 3, 5),
    ("bq76930", 2, 6, 10),
    ("bq76940", 3, 9, 15),
)


def default_cell_channels(cells, groups):
    """Bit mask of the VC inputs a board with `cells` series cells uses.

    Cells are spread over the groups, lower groups taking the extra ones;
    within a group of k cells the inputs 1..k-1 and the top input 5 are used
    (unused inputs shorted below the top one, as in the datasheet's cell
    configuration table). Returns 0 when the count does not fit the chip.
    """
    if groups < 1 or groups > 3 or cells < 3 * groups or cells > 5 * groups:
        return 0
    mask = 0
    base = cells // groups
    extra = cells - base * groups
    g = 0
    while g < groups:
        k = base + (1 if g < extra else 0)
        i = 0
        while i < k - 1:
            mask |= 1 << (g * 5 + i)
            i += 1
        mask |= 1 << (g * 5 + 4)
        g += 1
    return mask


def model_groups(cells):
    """Smallest family member (its group count) that takes `cells` cells."""
    for m in MODELS:
        if m[2] <= cells <= m[3]:
            return m[1]
    return 0
