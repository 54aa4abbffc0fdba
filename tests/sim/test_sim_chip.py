"""Host simulator: SimBq769x0 driven only through its I2C API, bytes by hand.

The firmware driver is not used here on purpose: these tests pin the chip
to the datasheet (shared/reference/bq769x0.md) on their own.
"""
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bms.afe.bq769x0.regs import ADCGAIN1, ADCGAIN2, ADCOFFSET, BAT_HI, CC_CFG, CC_CFG_VALUE, CC_HI, CELLBAL1, CELLBAL2, CTRL1_ADC_EN, CTRL1_LOAD_PRESENT, CTRL1_SHUT_A, CTRL1_SHUT_B, CTRL1_TEMP_SEL, CTRL2_CC_EN, CTRL2_CC_ONESHOT, CTRL2_DELAY_DIS, CTRL2_CHG_ON, CTRL2_DSG_ON, I2C_ADDR, OV_TRIP, PROT1_RSNS, PROTECT1, PROTECT2, PROTECT3, STAT_CC_READY, STAT_DEVICE_XREADY, STAT_OCD, STAT_OV, STAT_OVRD_ALERT, STAT_SCD, STAT_UV, SYS_CTRL1, SYS_CTRL2, SYS_STAT, TS1_HI, UV_TRIP, VC1_HI
from bms.afe.chips import default_cell_channels
from bms.crc import crc8
from bms_sim.afe.bq769x0 import SimBq769x0
from bms_sim.pack import Pack, soc_for_ocv
from bms_sim.world import World

A = I2C_ADDR


# ------------------------------------------------------------ helpers
def frame_write(reg, *data, addr=A):
    """data0,crc0,data1,crc1...: crc0 over [addr<<1, reg, data0], then per byte."""
    out = bytearray()
    for i, d in enumerate(data):
        out.append(d)
        if i == 0:
            out.append(crc8(bytes([addr << 1, reg, d]), 0, 3))
        else:
            out.append(crc8(bytes([d]), 0, 1))
    return bytes(out)


def wr(chip, reg, *data):
    chip.writeto_mem(A, reg, frame_write(reg, *data))


def rd(chip, reg, n=1):
    """Read n data bytes, checking every CRC as a driver must."""
    buf = bytearray(2 * n)
    chip.readfrom_mem_into(A, reg, buf)
    data = []
    for i in range(n):
        d, c = buf[2 * i], buf[2 * i + 1]
        exp = crc8(bytes([(A << 1) | 1, d]), 0, 2) if i == 0 else crc8(bytes([d]), 0, 1)
        assert c == exp, "CRC mismatch at byte %d" % i
        data.append(d)
    return data


def rd16(chip, reg):
    hi, lo = rd(chip, reg, 2)
    return hi << 8 | lo


def s16(v):
    return v - 0x10000 if v & 0x8000 else v


def decode_gain_offset(chip):
    g1 = rd(chip, ADCGAIN1)[0]
    off = rd(chip, ADCOFFSET)[0]
    g2 = rd(chip, ADCGAIN2)[0]
    gain = 365 + (((g1 & 0x0C) << 1) | ((g2 & 0xE0) >> 5))
    return gain, (off - 256 if off & 0x80 else off)


def cell_mv_from_code(chip, code):
    gain, off = decode_gain_offset(chip)
    return gain * code / 1000.0 + off


def start(w, fets=CTRL2_CHG_ON | CTRL2_DSG_ON):
    """What a driver does at start-up, by hand."""
    wr(w.chip, CC_CFG, CC_CFG_VALUE)
    wr(w.chip, SYS_CTRL1, CTRL1_ADC_EN | CTRL1_TEMP_SEL)
    wr(w.chip, SYS_CTRL2, CTRL2_CC_EN | fets)


def ov_reg_for_mv(chip, mv):
    gain, off = decode_gain_offset(chip)
    return (round((mv - off) * 1000 / gain) >> 4) & 0xFF


# ---------------------------------------------------------- framing
def test_crc_vectors_from_reference():
    assert crc8(bytes([0x10, 0x0B, 0x19]), 0, 3) == 0x7A
    assert crc8(bytes([0x11, 0x19]), 0, 2) == 0x0D


def test_write_cc_cfg_vector_and_read_back_vector():
    w = World()
    w.chip.writeto_mem(0x08, CC_CFG, bytes([0x19, 0x7A]))
    buf = bytearray(2)
    w.chip.readfrom_mem_into(0x08, CC_CFG, buf)
    assert bytes(buf) == bytes([0x19, 0x0D])
    assert w.chip.writes == 1 and w.chip.reads == 1


def test_block_read_crc_interleaving():
    w = World()
    buf = bytearray(4)
    w.chip.readfrom_mem_into(A, OV_TRIP, buf)  # OV_TRIP, UV_TRIP defaults
    assert buf[0] == 0xAC and buf[2] == 0x97
    assert buf[1] == crc8(bytes([0x11, 0xAC]), 0, 2)
    assert buf[3] == crc8(bytes([0x97]), 0, 1)  # later bytes: CRC of the byte alone


def test_read_past_end_and_unimplemented_is_zero():
    w = World()
    assert rd(w.chip, 0x40, 2) == [0, 0]
    assert rd(w.chip, 0x59, 3)[1:] == [0, 0]
    with pytest.raises(ValueError):
        w.chip.readfrom_mem_into(A, SYS_STAT, bytearray(3))


def test_block_write_later_crcs_per_byte():
    w = World()
    wr(w.chip, OV_TRIP, 0xB0, 0x90)
    assert rd(w.chip, OV_TRIP, 2) == [0xB0, 0x90]


def test_bad_crc_write_nacked_and_ignored():
    w = World()
    with pytest.raises(OSError) as e:
        w.chip.writeto_mem(A, CC_CFG, bytes([0x19, 0x7B]))
    assert e.value.args[0] == 5
    assert rd(w.chip, CC_CFG) == [0]
    # Block write with only the second CRC bad: nothing applied.
    f = bytearray(frame_write(OV_TRIP, 0xB0, 0x90))
    f[3] ^= 0xFF
    with pytest.raises(OSError):
        w.chip.writeto_mem(A, OV_TRIP, bytes(f))
    assert rd(w.chip, OV_TRIP, 2) == [0xAC, 0x97]
    # The register address is covered by the first CRC.
    with pytest.raises(OSError):
        w.chip.writeto_mem(A, UV_TRIP, frame_write(OV_TRIP, 0xB0))
    assert rd(w.chip, UV_TRIP) == [0x97]
    assert w.chip.crc_errors_received == 3
    assert w.chip.writes == 0


def test_wrong_address_enodev():
    w = World()
    with pytest.raises(OSError) as e:
        w.chip.readfrom_mem_into(0x18, SYS_STAT, bytearray(2))
    assert e.value.args[0] == 19
    with pytest.raises(OSError) as e:
        w.chip.writeto_mem(0x18, CC_CFG, frame_write(CC_CFG, 0x19, addr=0x18))
    assert e.value.args[0] == 19
    assert rd(w.chip, CC_CFG) == [0]


def test_other_address_and_no_crc_part():
    w = World(addr=0x18, crc=False)
    w.chip.writeto_mem(0x18, CC_CFG, bytes([0x19]))
    buf = bytearray(2)
    w.chip.readfrom_mem_into(0x18, OV_TRIP, buf)
    assert bytes(buf) == bytes([0xAC, 0x97])
    w.chip.readfrom_mem_into(0x18, CC_CFG, buf)
    assert buf[0] == 0x19


def test_nack_all_and_corruption():
    w = World()
    w.chip.nack_all = True
    with pytest.raises(OSError) as e:
        rd(w.chip, SYS_STAT)
    assert e.value.args[0] == 5
    w.chip.nack_all = False
    w.chip.corrupt_next_reads = 2
    for _ in range(2):
        with pytest.raises(AssertionError, match="CRC mismatch"):
            rd(w.chip, OV_TRIP)
    assert rd(w.chip, OV_TRIP) == [0xAC]
    w.chip.corrupt_every = 3
    bad = 0
    for _ in range(9):
        try:
            rd(w.chip, OV_TRIP)
        except AssertionError:
            bad += 1
    assert bad == 3


# ------------------------------------------------ register behaviour
def test_power_up_defaults():
    w = World()
    c = w.chip
    assert rd(c, SYS_STAT, 12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0xAC, 0x97, 0]
    assert not c.alert


def test_sys_stat_write_one_to_clear():
    w = World()
    w.chip.power_on_reset()
    w.chip.set_ovrd_alert()
    assert rd(w.chip, SYS_STAT) == [STAT_DEVICE_XREADY | STAT_OVRD_ALERT]
    assert w.chip.alert
    wr(w.chip, SYS_STAT, 0x00)  # zeros do nothing
    assert rd(w.chip, SYS_STAT) == [STAT_DEVICE_XREADY | STAT_OVRD_ALERT]
    wr(w.chip, SYS_STAT, STAT_OVRD_ALERT)
    assert rd(w.chip, SYS_STAT) == [STAT_DEVICE_XREADY]
    wr(w.chip, SYS_STAT, 0xFF)
    assert rd(w.chip, SYS_STAT) == [0]
    assert not w.chip.alert


def test_read_only_registers_ignore_writes():
    w = World()
    start(w)
    w.advance(250)
    c = w.chip
    before = rd(c, VC1_HI, 2)
    wr(c, VC1_HI, 0x00, 0x00)
    wr(c, ADCOFFSET, 0x55)
    wr(c, ADCGAIN1, 0xFF)
    assert rd(c, VC1_HI, 2) == before
    assert decode_gain_offset(c) == (377, -12)
    wr(c, SYS_CTRL1, CTRL1_LOAD_PRESENT | CTRL1_ADC_EN)
    assert rd(c, SYS_CTRL1) == [CTRL1_ADC_EN]


def test_load_present_bit():
    w = World()
    wr(w.chip, SYS_CTRL2, CTRL2_DSG_ON)
    w.load.set(1000)
    w.advance(10)
    assert rd(w.chip, SYS_CTRL1)[0] & CTRL1_LOAD_PRESENT
    w.load.off()
    w.advance(10)
    assert not rd(w.chip, SYS_CTRL1)[0] & CTRL1_LOAD_PRESENT


@pytest.mark.parametrize("gain,offset", [(377, -12), (365, 0), (396, 127), (380, 30), (371, -128)])
def test_gain_offset_encoding(gain, offset):
    w = World(gain_uv=gain, offset_mv=offset)
    assert decode_gain_offset(w.chip) == (gain, offset)


def test_default_trim_is_nontrivial():
    w = World()
    gain, off = decode_gain_offset(w.chip)
    assert off < 0 and gain != 365


# ----------------------------------------------------- measurements
@pytest.mark.parametrize("cells,groups", [(4, None), (5, None), (7, None), (13, None), (9, 3)])
def test_cell_codes_follow_pack(cells, groups):
    w = World(cells=cells, chemistry="nmc", soc_pct=60.0, spread_mv=40, groups=groups)
    start(w)
    w.load.set(3000)
    w.advance(1000)
    c = w.chip
    mask = c.cell_channels
    n_inputs = 5 * c.groups
    lsb_mv = 377 / 1000.0
    k = 0
    for n in range(n_inputs):
        mv = cell_mv_from_code(c, rd16(c, VC1_HI + 2 * n))
        if mask >> n & 1:
            assert mv == pytest.approx(w.pack.cell_mv(k), abs=lsb_mv / 2 + 1e-6)
            k += 1
        else:
            assert abs(mv) <= lsb_mv  # unused (shorted) input reads ~0
    assert k == cells
    gain, off = decode_gain_offset(c)
    bat_mv = 4 * gain * rd16(c, BAT_HI) / 1000.0 + cells * off
    assert bat_mv == pytest.approx(w.pack.pack_mv(), abs=2 * gain / 1000.0)


def test_cell_mapping_4_cells_on_bq76920():
    w = World(cells=4)
    assert w.chip.cell_channels == default_cell_channels(4, 1) == 0b10111
    start(w)
    w.advance(250)
    assert rd16(w.chip, VC1_HI + 2 * 3) < 40  # VC4 unused
    assert rd16(w.chip, VC1_HI + 2 * 4) > 8000  # VC5 = top cell


def test_adc_only_with_adc_en_and_every_250ms():
    w = World()
    w.advance(1000)
    assert rd16(w.chip, VC1_HI) == 0
    wr(w.chip, SYS_CTRL1, CTRL1_ADC_EN)
    w.advance(249)
    assert rd16(w.chip, VC1_HI) == 0
    w.advance(1)
    assert rd16(w.chip, VC1_HI) > 0


def test_noise_is_bounded_and_seeded():
    codes = []
    for _ in range(2):
        w = World(chemistry="nmc", noise_mv=1.0, seed=7)
        start(w)
        seq = []
        for _ in range(20):
            w.advance(250)
            mv = cell_mv_from_code(w.chip, rd16(w.chip, VC1_HI))
            assert mv == pytest.approx(w.pack.cell_mv(0), abs=1.0 + 0.2)
            seq.append(rd16(w.chip, VC1_HI))
        codes.append(seq)
    assert codes[0] == codes[1]
    assert len(set(codes[0])) > 1


# ----------------------------------------------------- coulomb counter
def test_cc_scaling_sign_and_ready_every_250ms():
    w = World(shunt_uohm=1000)
    start(w)
    w.charger.set(5000)  # pure CC
    w.advance(500)
    raw = s16(rd16(w.chip, CC_HI))
    assert raw == round(5000 * 1000 / 8440) + 1  # 592 + offset 1
    ma = (raw - 1) * 8.44 / 1.0
    assert ma == pytest.approx(5000, abs=8.44)
    wr(w.chip, SYS_STAT, STAT_CC_READY)
    assert not w.chip.alert
    w.advance(249)
    assert rd(w.chip, SYS_STAT)[0] & STAT_CC_READY == 0
    w.advance(1)
    assert rd(w.chip, SYS_STAT)[0] & STAT_CC_READY
    assert w.chip.alert
    w.charger.off()
    w.load.set(3000)
    w.advance(250)
    raw = s16(rd16(w.chip, CC_HI))
    assert raw == round(-3000 * 1000 / 8440) + 1  # -355 + 1
    assert raw < 0


def test_cc_averages_over_window_and_skips_partial_first_window():
    w = World(cc_offset_lsb=0)
    wr(w.chip, SYS_CTRL2, CTRL2_CHG_ON | CTRL2_DSG_ON)
    w.advance(100)
    wr(w.chip, SYS_CTRL2, CTRL2_CC_EN | CTRL2_CHG_ON | CTRL2_DSG_ON)  # mid-window
    w.charger.set(8440)
    w.advance(150)
    assert not rd(w.chip, SYS_STAT)[0] & STAT_CC_READY  # partial window: no reading
    w.advance(125)
    w.charger.off()
    w.advance(125)  # half the window at 8.44 A => 4.22 A average
    assert rd(w.chip, SYS_STAT)[0] & STAT_CC_READY
    assert s16(rd16(w.chip, CC_HI)) == round(4220 * 1000 / 8440) == 500


def test_cc_gain_error_and_shunt():
    w = World(shunt_uohm=500, cc_offset_lsb=-2, cc_gain_ppm=10000)
    wr(w.chip, PROTECT1, 0x07 | PROT1_RSNS)  # keep SCD/OCD (10 mV here) out of the way
    wr(w.chip, PROTECT2, 0x7F)
    start(w)
    w.load.set(20000)
    w.advance(500)
    assert s16(rd16(w.chip, CC_HI)) == round(-20000 * 500 / 8440 * 1.01) - 2


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-30000, max_value=30000), st.integers(min_value=-3, max_value=3))
def test_cc_property_sign_and_magnitude(current_ma, offset_lsb):
    w = World(cells=4, shunt_uohm=1000, cc_offset_lsb=offset_lsb, chemistry="nmc")
    wr(w.chip, PROTECT1, 0x07 | PROT1_RSNS)  # SCD at 200 mV: never trips here
    wr(w.chip, PROTECT2, 0x0F)  # OCD at 50 mV (RSNS=1 table is 100): never trips
    start(w)
    if current_ma >= 0:
        w.charger.set(current_ma)
    else:
        w.load.set(-current_ma)
    w.advance(250)
    raw = s16(rd16(w.chip, CC_HI))
    decoded_ma = (raw - offset_lsb) * 8440 / 1000.0
    assert abs(decoded_ma - current_ma) <= 8.44 / 2 + 1e-6
    if abs(current_ma) > 5:
        assert (raw - offset_lsb > 0) == (current_ma > 0)


# ----------------------------------------------------------- protection
def test_ov_trip_after_delay_clears_chg_and_is_never_undone():
    w = World(chemistry="nmc", soc_pct=80.0)
    start(w)
    c = w.chip
    wr(c, PROTECT3, 0x10)  # OV delay index 1 = 2 s
    w.advance(250)
    top_mv = max(w.pack.cell_mvs())
    wr(c, OV_TRIP, ov_reg_for_mv(c, top_mv) - 1)  # just below the top cell
    w.advance(250)  # first conversion showing OV
    w.advance(1750)
    assert rd(c, SYS_CTRL2)[0] & CTRL2_CHG_ON
    assert not rd(c, SYS_STAT)[0] & STAT_OV
    w.advance(250)  # 2 s after the first detection
    assert rd(c, SYS_STAT)[0] & STAT_OV
    ctrl2 = rd(c, SYS_CTRL2)[0]
    assert not ctrl2 & CTRL2_CHG_ON and ctrl2 & CTRL2_DSG_ON
    assert w.fets() == (False, True)
    # CHG_ON refused while OV latched; other bits of that write apply.
    wr(c, SYS_CTRL2, CTRL2_CC_EN | CTRL2_CHG_ON)
    assert rd(c, SYS_CTRL2) == [CTRL2_CC_EN]
    # The condition goes away: the chip does NOT turn CHG back on by itself.
    wr(c, OV_TRIP, 0xFF)
    wr(c, SYS_CTRL2, CTRL2_CC_EN | CTRL2_DSG_ON)
    w.advance(10000)
    assert rd(c, SYS_CTRL2)[0] & CTRL2_CHG_ON == 0
    assert rd(c, SYS_STAT)[0] & STAT_OV  # still latched
    wr(c, SYS_STAT, STAT_OV)
    wr(c, SYS_CTRL2, CTRL2_CC_EN | CTRL2_DSG_ON | CTRL2_CHG_ON)
    assert rd(c, SYS_CTRL2)[0] & CTRL2_CHG_ON
    w.advance(10000)
    assert rd(c, SYS_CTRL2)[0] & CTRL2_CHG_ON
    assert not rd(c, SYS_STAT)[0] & STAT_OV


def test_ov_condition_must_persist_for_the_delay():
    w = World(chemistry="nmc", soc_pct=80.0)
    start(w)
    c = w.chip
    wr(c, PROTECT3, 0x00)  # 1 s
    w.advance(250)
    reg_trip = ov_reg_for_mv(c, max(w.pack.cell_mvs())) - 1
    for _ in range(5):
        wr(c, OV_TRIP, reg_trip)
        w.advance(750)  # 3 conversions over the limit: not long enough
        wr(c, OV_TRIP, 0xFF)
        w.advance(250)
    assert not rd(c, SYS_STAT)[0] & STAT_OV


def test_ov_needs_adc_en():
    w = World(chemistry="nmc", soc_pct=80.0)
    wr(w.chip, SYS_CTRL2, CTRL2_CHG_ON)
    wr(w.chip, OV_TRIP, 0x00)  # 0x2008: below any NMC cell
    w.advance(5000)
    assert not w.chip.alert and w.fets()[0]
    wr(w.chip, SYS_CTRL1, CTRL1_ADC_EN)
    w.advance(1250)
    assert rd(w.chip, SYS_STAT)[0] & STAT_OV and not w.fets()[0]


def test_chg_on_refused_by_xready_and_ovrd():
    w = World()
    w.chip.power_on_reset()
    wr(w.chip, SYS_CTRL2, CTRL2_CHG_ON | CTRL2_DSG_ON | CTRL2_CC_EN)
    assert rd(w.chip, SYS_CTRL2) == [CTRL2_CC_EN]
    wr(w.chip, SYS_STAT, STAT_DEVICE_XREADY)
    wr(w.chip, SYS_CTRL2, CTRL2_CHG_ON | CTRL2_DSG_ON)
    assert rd(w.chip, SYS_CTRL2) == [CTRL2_CHG_ON | CTRL2_DSG_ON]
    w.chip.set_ovrd_alert()
    assert rd(w.chip, SYS_CTRL2) == [0]
    wr(w.chip, SYS_CTRL2, CTRL2_CHG_ON | CTRL2_DSG_ON)
    assert rd(w.chip, SYS_CTRL2) == [0]


def test_uv_trip_clears_dsg_and_minqual():
    w = World(chemistry="lfp", soc_pct=2.0)  # ~2.95 V, inside the UV_TRIP range
    start(w)
    c = w.chip
    wr(c, PROTECT3, 0x40)  # UV delay index 1 = 4 s
    wr(c, UV_TRIP, 0x00)  # 0x1000 = ~1.53 V at gain 377
    w.advance(5000)
    assert not rd(c, SYS_STAT)[0] & STAT_UV
    gain, off = decode_gain_offset(c)
    reg = (round((min(w.pack.cell_mvs()) + 20 - off) * 1000 / gain) >> 4) - 0x100
    assert 0 <= reg <= 0xFF
    wr(c, UV_TRIP, reg)
    w.advance(4000)  # first detection at the next conversion (+250), trip 4 s later
    assert not rd(c, SYS_STAT)[0] & STAT_UV
    w.advance(250)
    assert rd(c, SYS_STAT)[0] & STAT_UV
    assert w.fets() == (True, False)
    wr(c, SYS_STAT, STAT_UV)
    # A cell below UV_MINQUAL (open wire, ~0 mV) is ignored for UV.
    wr(c, UV_TRIP, 0x00)
    w.chip.cell_wire_open(3)  # top cell reads ~0; nothing reads double
    w.advance(10000)
    assert not rd(c, SYS_STAT)[0] & STAT_UV


def test_ocd_trip_after_delay():
    w = World(chemistry="nmc", soc_pct=60.0, shunt_uohm=1000)
    start(w)
    c = w.chip
    wr(c, PROTECT2, 0x50)  # delay index 5 = 320 ms, threshold index 0 (RSNS=0) = 8 mV
    w.load.set(10000)  # 10 A * 1 mOhm = 10 mV
    for _ in range(31):
        w.advance(10)
    assert not rd(c, SYS_STAT)[0] & STAT_OCD and w.fets()[1]
    w.advance(10)
    assert rd(c, SYS_STAT)[0] & STAT_OCD
    assert w.fets() == (True, False)
    assert w.current_ma == 0  # load cut off
    # RSNS=1 doubles the thresholds: 10 mV < 17 mV, no trip.
    wr(c, SYS_STAT, STAT_OCD)
    wr(c, PROTECT1, PROT1_RSNS)
    wr(c, SYS_CTRL2, CTRL2_CC_EN | CTRL2_CHG_ON | CTRL2_DSG_ON)
    w.advance(5000)
    assert not rd(c, SYS_STAT)[0] & STAT_OCD


def test_ocd_needs_discharge_not_charge():
    w = World(chemistry="nmc", soc_pct=20.0)
    start(w)
    wr(w.chip, PROTECT2, 0x00)  # 8 mV, 8 ms
    w.charger.set(20000)
    w.advance(2000)
    assert not rd(w.chip, SYS_STAT)[0] & (STAT_OCD | STAT_SCD)


def test_scd_trip_instant():
    w = World(chemistry="nmc", soc_pct=60.0, shunt_uohm=1000)
    start(w)
    wr(w.chip, PROTECT1, 0x00)  # SCD 22 mV (RSNS=0)
    wr(w.chip, PROTECT2, 0x7F)  # OCD out of the way: 50 mV... 1280 ms
    w.load.set(25000)
    w.advance(1)
    stat = rd(w.chip, SYS_STAT)[0]
    assert stat & STAT_SCD and not stat & STAT_OCD
    assert w.fets() == (True, False)
    wr(w.chip, SYS_CTRL2, CTRL2_CC_EN | CTRL2_CHG_ON | CTRL2_DSG_ON)
    assert w.fets() == (True, False)  # refused while SCD latched


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=0xFF), st.floats(min_value=3000, max_value=4300))
def test_ov_never_trips_below_threshold(ov_reg, cell_mv_target):
    w = World(cells=4, chemistry="nmc", soc_pct=50.0, offset_mv=-12, gain_uv=377)
    c = w.chip
    ov_code = 0x2008 | ov_reg << 4
    ov_mv = 377 * ov_code / 1000.0 - 12
    # Put every cell a little below the threshold (or at the target if lower).
    target = min(cell_mv_target, ov_mv - 1.0)
    for cell in w.pack.cells:
        cell.soc = soc_for_ocv("nmc", target)
        cell.self_discharge_pct_per_month = 0.0
    wr(c, OV_TRIP, ov_reg)
    wr(c, PROTECT3, 0x00)
    start(w)
    w.advance(3000)
    assert not rd(c, SYS_STAT)[0] & STAT_OV


# --------------------------------------------------------- thermistors
def _ts_temp_c(code):
    v = code * 382e-6
    r = 10000.0 * v / (3.3 - v)
    return 1.0 / (1.0 / 298.15 + math.log(r / 10000.0) / 3435.0) - 273.15


def test_thermistor_temperatures_and_faults():
    w = World(cells=12, groups=3)
    w.pack.temperatures_c[:] = [25.0, -10.0, 55.0]
    start(w)
    w.advance(250)
    temps = [_ts_temp_c(rd16(w.chip, TS1_HI + 2 * i)) for i in range(3)]
    assert temps == [pytest.approx(t, abs=0.2) for t in (25.0, -10.0, 55.0)]
    # Refresh every 2 s, not every 250 ms.
    w.pack.temperatures_c[0] = 40.0
    w.advance(1500)
    assert _ts_temp_c(rd16(w.chip, TS1_HI)) == pytest.approx(25.0, abs=0.2)
    w.advance(250)
    assert _ts_temp_c(rd16(w.chip, TS1_HI)) == pytest.approx(40.0, abs=0.2)
    w.chip.thermistor_fault(1, "open")
    w.chip.thermistor_fault(2, "short")
    w.advance(2000)
    assert rd16(w.chip, TS1_HI + 2) == round(3.3e6 / 382)
    assert rd16(w.chip, TS1_HI + 4) == 0
    w.chip.thermistor_fault(1, None)
    w.advance(2000)
    assert _ts_temp_c(rd16(w.chip, TS1_HI + 2)) == pytest.approx(-10.0, abs=0.2)


def test_die_temperature_without_temp_sel():
    w = World(die_temp_c=35.0)
    wr(w.chip, SYS_CTRL1, CTRL1_ADC_EN)
    w.advance(250)
    v = rd16(w.chip, TS1_HI) * 382e-6
    assert 25 - (v - 1.200) / 0.0042 == pytest.approx(35.0, abs=0.2)


# ----------------------------------------------------------- balancing
def test_balancing_bleed_and_adjacency_counter():
    w = World(cells=5, chemistry="nmc", soc_pct=60.0, bleed_ohm=33.0)
    start(w)
    c = w.chip
    wr(c, CELLBAL1, 0b00101)  # cells 1 and 3: not adjacent
    assert c.adjacent_balance_violations == 0
    b = c.bleed_ma()
    assert b[0] == pytest.approx(w.pack.cell_mv(0) / 33.0)
    assert b[1] == 0 and b[3] == 0 and b[2] > 100
    w.advance(3600 * 1000)
    socs = w.pack.cell_soc_pct()
    assert socs[1] - socs[0] > 0.9  # ~115 mA for 1 h out of ~10 Ah
    assert socs[1] == pytest.approx(socs[3], abs=0.05)
    assert w.current_ma == 0  # bleeding does not pass the shunt
    wr(c, CELLBAL1, 0b00011)
    assert c.adjacent_balance_violations == 1
    wr(c, CELLBAL1, 0b11000)
    assert c.adjacent_balance_violations == 2
    wr(c, CELLBAL1, 0)
    assert c.bleed_ma() == [0.0] * 5


def test_cellbal_of_missing_group_ignored():
    w = World(cells=4)
    wr(w.chip, CELLBAL2, 0x01)
    assert rd(w.chip, CELLBAL2) == [0]


# ------------------------------------------------- ship, reset, wires
def test_ship_mode_and_boot():
    w = World()
    start(w)
    c = w.chip
    wr(c, CELLBAL1, 0x01)
    # 10 directly is not the sequence.
    wr(c, SYS_CTRL1, CTRL1_ADC_EN | CTRL1_SHUT_A)
    assert not c.shipped
    wr(c, SYS_CTRL1, CTRL1_ADC_EN)
    wr(c, SYS_CTRL1, CTRL1_ADC_EN | CTRL1_SHUT_B)
    wr(c, SYS_CTRL1, CTRL1_ADC_EN | CTRL1_SHUT_A)
    assert c.shipped
    with pytest.raises(OSError) as e:
        rd(c, SYS_STAT)
    assert e.value.args[0] == 19
    with pytest.raises(OSError):
        wr(c, SYS_CTRL2, CTRL2_DSG_ON)
    assert w.fets() == (False, False)
    assert c.bleed_ma() == [0.0] * 4
    w.load.set(1000)
    w.advance(1000)
    assert w.current_ma == 0
    w.load.off()
    c.boot()
    assert rd(c, SYS_STAT) == [0]  # normal start: no XREADY
    assert rd(c, SYS_CTRL1, 2) == [0, 0]
    assert rd(c, CELLBAL1) == [0]
    assert rd(c, OV_TRIP, 2) == [0xAC, 0x97]


def test_power_on_reset():
    w = World()
    start(w)
    c = w.chip
    wr(c, CELLBAL1, 0x01)
    wr(c, OV_TRIP, 0xB5)
    w.advance(500)
    c.power_on_reset()
    assert rd(c, SYS_STAT) == [STAT_DEVICE_XREADY]
    assert rd(c, SYS_CTRL2) == [0] and w.fets() == (False, False)
    assert rd(c, CELLBAL1) == [0]
    assert rd(c, OV_TRIP) == [0xAC]
    assert rd(c, CC_CFG) == [0]
    assert c.alert


def test_cell_wire_open():
    # LTO: two cells in series still fit the 14-bit range (max ~6.16 V).
    w = World(cells=4, chemistry="lto", soc_pct=50.0, spread_mv=30)
    start(w)
    c = w.chip
    c.cell_wire_open(1)
    w.advance(250)
    inputs = [0, 1, 2, 4]  # 4 cells on bq76920
    mvs = [cell_mv_from_code(c, rd16(c, VC1_HI + 2 * n)) for n in inputs]
    p = w.pack
    assert abs(mvs[1]) < 1.0
    assert mvs[2] == pytest.approx(p.cell_mv(1) + p.cell_mv(2), abs=0.5)
    assert mvs[0] == pytest.approx(p.cell_mv(0), abs=0.5)
    assert p.cell_mv(1) > 2000  # the real pack is unchanged
    c.cell_wire_open(1, False)
    w.advance(250)
    assert cell_mv_from_code(c, rd16(c, VC1_HI + 2)) == pytest.approx(p.cell_mv(1), abs=0.5)


# --------------------------------------------------------------- world
def test_body_diode_rules():
    w = World(chemistry="nmc")
    start(w, fets=0)
    w.charger.set(2000)
    w.load.set(500)
    assert w.current_ma == 0
    # the charger feeds the load first (they share the terminals)
    wr(w.chip, SYS_CTRL2, CTRL2_CC_EN | CTRL2_DSG_ON)  # DSG only: discharge flows, through CHG's diode
    assert w.current_ma == 0 and w.diode_ma == [0.0, 0.0]  # the charger covers the load
    w.load.set(3000)
    assert w.current_ma == -1000  # the pack gives what the charger lacks
    w.advance(250)
    assert w.diode_ma == [1000.0, 0.0] and w.diode_mj[0] == pytest.approx(0.7 * 1.0 * 250)
    wr(w.chip, SYS_CTRL2, CTRL2_CC_EN | CTRL2_CHG_ON)  # CHG only: charge flows, through DSG's diode
    assert w.current_ma == 0  # a load above the charger: nothing left to charge with
    w.load.set(500)
    assert w.current_ma == 1500
    wr(w.chip, SYS_CTRL2, CTRL2_CC_EN | CTRL2_CHG_ON | CTRL2_DSG_ON)
    assert w.current_ma == 1500
    soc0 = w.pack.true_soc_pct()
    w.advance(3600 * 1000)
    cap = sum(x.capacity_mah for x in w.pack.cells) / 4
    assert w.pack.true_soc_pct() - soc0 == pytest.approx(1500 * 100.0 / cap, rel=0.02)


def test_world_cc_cv_charge_with_fets():
    w = World(chemistry="lfp", soc_pct=95.0)
    start(w)
    w.charger.set(5000, 3550)
    w.advance(250)
    assert w.charger.phase == "cc" and w.current_ma == 5000
    w.advance(3 * 3600 * 1000)
    assert w.charger.phase == "cv"
    assert w.pack.pack_mv() == pytest.approx(4 * 3550, abs=1.0)
    assert 0 <= w.current_ma < 300
    assert w.chip.reg(SYS_STAT) & STAT_OV == 0  # default OV_TRIP (~4.1 V) not reached


def test_ms_to_next_window_and_clock():
    w = World()
    assert w.ms_to_next_window() == 250
    w.advance(1)
    assert w.ms_to_next_window() == 249
    w.advance(249)
    assert w.ms_to_next_window() == 250 and w.now_ms == 250
    w.advance(1234)
    assert w.now_ms == 1484 and w.ms_to_next_window() == 16
    with pytest.raises(ValueError):
        w.advance(1.5)


def test_advance_one_hour_is_fast():
    w = World(cells=4)
    start(w)
    w.charger.set(2000, 3550)
    t0 = time.process_time()  # CPU time: the suite shares the cores with other tests
    for _ in range(4 * 3600):
        w.advance(250)
    dt = time.process_time() - t0
    assert w.now_ms == 3600 * 1000
    assert dt < 2.0, "one simulated hour took %.2f s of CPU" % dt


def test_chip_rejects_impossible_cell_count():
    with pytest.raises(ValueError):
        SimBq769x0(Pack(cells=2))
    with pytest.raises(ValueError):
        SimBq769x0(Pack(cells=4), cell_channels=0b111)


def test_cell_wire_open_saturates_adc():
    # Two NMC cells on one input exceed the 14-bit range: the code clamps.
    w = World(cells=4, chemistry="nmc", soc_pct=50.0)
    start(w)
    w.chip.cell_wire_open(0)
    w.advance(250)
    assert rd16(w.chip, VC1_HI + 2) == 0x3FFF
    assert rd16(w.chip, VC1_HI) < 40


def test_delay_dis_trips_at_first_detection():
    w = World(chemistry="nmc", soc_pct=80.0)
    start(w)
    wr(w.chip, PROTECT3, 0x30)  # OV delay 8 s ...
    wr(w.chip, SYS_CTRL2, CTRL2_DELAY_DIS | CTRL2_CC_EN | CTRL2_CHG_ON | CTRL2_DSG_ON)
    wr(w.chip, OV_TRIP, 0x00)
    w.advance(250)  # ... ignored with DELAY_DIS
    assert rd(w.chip, SYS_STAT)[0] & STAT_OV and not w.fets()[0]


def test_cc_oneshot():
    w = World(cc_offset_lsb=0)
    wr(w.chip, PROTECT2, 0x7F)  # OCD (8.44 mV here) out of the way
    wr(w.chip, SYS_CTRL2, CTRL2_CHG_ON | CTRL2_DSG_ON)
    w.load.set(8440)
    wr(w.chip, SYS_CTRL2, CTRL2_CC_ONESHOT | CTRL2_CHG_ON | CTRL2_DSG_ON)
    w.advance(250)
    assert rd(w.chip, SYS_STAT)[0] & STAT_CC_READY
    assert s16(rd16(w.chip, CC_HI)) == -1000
    assert rd(w.chip, SYS_CTRL2)[0] & CTRL2_CC_ONESHOT == 0  # self-clearing
    wr(w.chip, SYS_STAT, STAT_CC_READY)
    w.advance(1000)
    assert rd(w.chip, SYS_STAT) == [0]  # no more readings
    assert w.current_ma == -8440
