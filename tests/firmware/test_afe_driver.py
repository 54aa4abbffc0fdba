"""The bq769x0 driver against the register-level simulated chip (CPython)."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bms.afe.bq769x0 import regs as R
from bms import afe as A
from bms import regmap as M
from bms.afe import chips
from bms.afe import TEMP_OPEN, TEMP_SHORT
from bms.afe.bq769x0 import (TS_CODES, TS_TABLE_STEP_DC, TS_TABLE_T0_DC, Bq769x0, adc_to_mv,
                                    allowed_balance_channels, div_round, ts_code_to_dc)
from bms.measurements import Measurements
from bms_sim.world import World


class SpyBus:
    """Passes transfers to the chip and keeps the bytes that crossed the bus."""

    def __init__(self, chip):
        self.chip = chip
        self.log = []

    def readfrom_mem_into(self, addr, reg, buf):
        self.chip.readfrom_mem_into(addr, reg, buf)
        self.log.append(("r", addr, reg, bytes(buf)))

    def writeto_mem(self, addr, reg, buf):
        self.log.append(("w", addr, reg, bytes(buf)))
        self.chip.writeto_mem(addr, reg, buf)


def make(cells=4, crc=True, **kw):
    world = World(cells=cells, crc=crc, **kw)
    bus = SpyBus(world.chip)
    afe = Bq769x0(bus, R.default_cell_channels(cells, R.model_groups(cells)), world.chip.shunt_uohm)
    assert afe.configure()
    meas = Measurements(R.model_groups(cells))
    return world, bus, afe, meas


def cycle(world, afe, meas, ms=250):
    world.advance(ms)
    assert afe.read_status(meas)
    assert afe.read_measurements(meas, meas.status & R.STAT_CC_READY)
    afe.clear_status(meas.status & 0xBF)
    meas.update_extremes()


def test_crc_vectors_on_the_wire():
    world, bus, afe, meas = make()
    # the start-up write of 0x19 to CC_CFG at address 0x08 carries CRC 0x7A
    assert ("w", 0x08, R.CC_CFG, bytes([0x19, 0x7A])) in bus.log
    # and reading it back, the chip answers 0x19 with CRC 0x0D
    assert ("r", 0x08, R.CC_CFG, bytes([0x19, 0x0D])) in bus.log
    assert afe.crc is True


def test_configure_reports_the_trips_it_clears():
    # a trip flagged before a re-configure (after a bus hiccup, say) is not
    # wiped unread: the next status read reports it, once
    world, bus, afe, meas = make()
    # the chip trips on its own: SCD, then OV
    world.chip._trip(R.STAT_SCD, R.CTRL2_DSG_ON)
    world.chip._trip(R.STAT_OV, R.CTRL2_CHG_ON)
    assert afe.configure()
    assert world.chip.reg(R.SYS_STAT) & (R.STAT_SCD | R.STAT_OV) == 0, "configure clears the flags"
    assert afe.read_status(meas)
    assert meas.status & (R.STAT_SCD | R.STAT_OV) == R.STAT_SCD | R.STAT_OV
    assert afe.read_status(meas)
    assert meas.status & (R.STAT_SCD | R.STAT_OV) == 0, "reported once"


@pytest.mark.parametrize("crc", [True, False])
def test_set_protection_fails_when_the_chip_did_not_take_it(crc):
    world, bus, afe, meas = make(crc=crc)
    args = (4200, 2, 2500, 4, 20000, 320, 40000, 200)
    assert afe.set_protection(*args)
    applied = afe.applied_ov_mv
    chip = world.chip
    real = chip.writeto_mem
    # the chip acknowledges the block but keeps its old settings (a glitch)
    chip.writeto_mem = lambda addr, reg, buf: None if reg == R.PROTECT1 else real(addr, reg, buf)
    assert not afe.set_protection(4100, 2, 2500, 4, 20000, 320, 40000, 200)
    assert afe.applied_ov_mv == applied, "what the chip holds, not what was asked"
    chip.writeto_mem = real
    assert afe.set_protection(4100, 2, 2500, 4, 20000, 320, 40000, 200)
    assert afe.applied_ov_mv < applied


def test_detects_a_part_without_crc():
    world, bus, afe, meas = make(crc=False)
    assert afe.crc is False
    cycle(world, afe, meas)
    assert all(abs(v - t) <= 3 for v, t in zip(meas.cell_mv[:4], world.pack.cell_mvs()))


@pytest.mark.parametrize("gain_uv,offset_mv", [(377, -12), (365, 0), (396, 127), (380, -128), (381, -1)])
def test_gain_and_offset_decoding(gain_uv, offset_mv):
    world, bus, afe, meas = make(gain_uv=gain_uv, offset_mv=offset_mv)
    assert afe.gain_uv == gain_uv
    assert afe.offset_mv == offset_mv
    cycle(world, afe, meas)
    truth = world.pack.cell_mvs()
    for i in range(4):
        # one ADC LSB (<0.4 mV) of quantisation, plus integer truncation
        assert abs(meas.cell_mv[i] - truth[i]) <= 2, (i, meas.cell_mv[i], truth[i])
    assert abs(meas.pack_mv - world.pack.pack_mv()) <= 8


def test_datasheet_conversion_example():
    # GAIN 380 uV/LSB, OFFSET 30 mV: 0x1800 -> 2365 mV, 0x1F10 -> 3052 mV
    assert adc_to_mv(380, 30, 0x1800) == 2365
    assert adc_to_mv(380, 30, 0x1F10) == 3052


@pytest.mark.parametrize("load_ma,charge_ma", [(5000, 0), (0, 3000), (0, 0), (150, 0)])
def test_coulomb_counter_sign_and_scale(load_ma, charge_ma):
    world, bus, afe, meas = make(cc_offset_lsb=0)
    assert afe.set_fets(True, True) == R.CTRL2_CHG_ON | R.CTRL2_DSG_ON
    if load_ma:
        world.load.set(load_ma)
    if charge_ma:
        world.charger.set(charge_ma, None)
    cycle(world, afe, meas)  # a window with the current flowing for part of it
    cycle(world, afe, meas)
    assert meas.status & R.STAT_CC_READY
    expected = charge_ma - load_ma
    lsb_ma = 8.44 / (world.chip.shunt_uohm / 1000.0)
    assert abs(meas.current_ma - expected) <= lsb_ma
    if expected:
        assert (meas.current_ma > 0) == (expected > 0)
        assert (meas.cc_raw > 0) == (expected > 0)


@given(raw=st.integers(-32768, 32767), shunt=st.integers(100, 10000))
def test_current_scaling_is_exact_rounding(raw, shunt):
    got = div_round(raw * 8440, shunt)
    assert abs(got - raw * 8440 / shunt) <= 0.5


def test_ts_table_matches_the_thermistor_formula():
    for i, code in enumerate(TS_CODES):
        t = (TS_TABLE_T0_DC + i * TS_TABLE_STEP_DC) / 10.0
        r = 10000 * math.exp(3435 * (1 / (t + 273.15) - 1 / 298.15))
        v = 3.3 * r / (10000 + r)
        assert code == round(v / 382e-6)


@pytest.mark.parametrize("temp_c", [-20.0, 0.0, 25.0, 37.3, 60.0, 95.0])
def test_temperatures_through_the_chip(temp_c):
    world, bus, afe, meas = make(temps_c=(temp_c, temp_c, temp_c))
    cycle(world, afe, meas, 2000)
    assert abs(meas.temp_dc[0] - temp_c * 10) <= 3, meas.temp_dc[0]


def test_thermistor_open_and_short_are_reported():
    world, bus, afe, meas = make(cells=12)
    world.chip.thermistor_fault(0, "open")
    world.chip.thermistor_fault(2, "short")
    cycle(world, afe, meas, 2000)
    assert meas.temp_dc[0] == TEMP_OPEN
    assert 240 <= meas.temp_dc[1] <= 260
    assert meas.temp_dc[2] == TEMP_SHORT
    assert ts_code_to_dc(8600) == TEMP_OPEN and ts_code_to_dc(0) == TEMP_SHORT


def test_adjacent_inputs_never_balance_together():
    world, bus, afe, meas = make(cells=15)
    got = afe.set_balancing(0x7FFF)
    # per group only inputs 1, 3, 5 survive
    assert got == 0b101011010110101
    assert world.chip.adjacent_balance_violations == 0
    assert afe.set_balancing(0b0000000000001010) == 0b1010
    assert afe.set_balancing(0) == 0


@given(chan=st.integers(0, 0x7FFF))
def test_balance_filter_property(chan):
    out = allowed_balance_channels(chan)
    assert out & ~chan == 0
    for g in range(3):
        bits = (out >> (5 * g)) & 0x1F
        assert bits & (bits >> 1) == 0
    # the bottom input of each group asked for is always kept
    for g in range(3):
        if chan & (1 << (5 * g)):
            assert out & (1 << (5 * g))


def test_balancing_maps_cells_to_used_inputs():
    world, bus, afe, meas = make(cells=4)  # bq76920 4S: inputs 1, 2, 3, 5
    assert afe.set_balancing(0b1000) == 0b1000  # cell 4 sits on input 5
    assert world.chip.reg(R.CELLBAL1) == 0b10000


def test_chip_trips_on_its_own_and_never_turns_back_on():
    world, bus, afe, meas = make(soc_pct=99.0)
    assert afe.set_protection(3400, 1, 2000, 1, 20000, 320, 40000, 200)
    assert afe.set_fets(True, True) == 3
    world.charger.set(5000, None)  # a charger that never stops
    for _ in range(40):
        cycle(world, afe, meas)
        if not meas.fets & R.CTRL2_CHG_ON:
            break
    assert meas.status & R.STAT_OV
    assert not meas.fets & R.CTRL2_CHG_ON
    assert meas.fets & R.CTRL2_DSG_ON
    # the flag was cleared by cycle(); the chip still leaves CHG off itself
    world.advance(5000)
    assert afe.read_status(meas) and not meas.fets & R.CTRL2_CHG_ON


def test_fet_request_refused_while_fault_latched():
    world, bus, afe, meas = make()
    assert afe.set_protection(3650, 1, 2500, 1, 5000, 8, 40000, 70)
    assert afe.set_fets(False, True) == R.CTRL2_DSG_ON
    world.load.set(9000)  # above the 5 A OCD threshold
    world.advance(500)
    assert afe.read_status(meas) and meas.status & R.STAT_OCD
    assert afe.set_fets(False, True) == 0  # refused: OCD still latched
    world.load.off()
    assert afe.clear_status(R.STAT_OCD)
    assert afe.set_fets(False, True) == R.CTRL2_DSG_ON


def test_protection_applied_values_are_read_back_on_the_safe_side():
    world, bus, afe, meas = make()
    assert afe.set_protection(3700, 2, 2450, 4, 20000, 320, 60000, 200)
    assert 3700 - 7 <= afe.applied_ov_mv <= 3700
    assert 2450 <= afe.applied_uv_mv <= 2450 + 7
    assert afe.applied_ov_delay_s == 2 and afe.applied_uv_delay_s == 4
    assert afe.applied_ocd_ma <= 20000 and afe.applied_ocd_ma == 17000  # 17 mV over 1 mOhm
    assert afe.applied_ocd_delay_ms == 320
    assert afe.applied_scd_ma <= 60000 and afe.applied_scd_ma == 44000
    assert afe.applied_scd_delay_us == 200
    # what the chip holds is what the driver reports
    regs = bytes(world.chip.reg(a) for a in range(R.PROTECT1, R.UV_TRIP + 1))
    assert regs[0] & R.PROT1_RSNS


def test_crc_error_is_retried_and_counted():
    world, bus, afe, meas = make()
    world.chip.corrupt_next_reads = 1
    world.advance(250)
    assert afe.read_status(meas)
    assert afe.crc_errors == 1


def test_crc_storm_is_reported_not_swallowed():
    world, bus, afe, meas = make()
    world.chip.corrupt_every = 1
    world.advance(250)
    assert not afe.read_status(meas)
    assert afe.crc_errors == 3
    world.chip.corrupt_every = 0
    assert afe.read_status(meas)


def test_nack_is_retried_then_reported():
    world, bus, afe, meas = make()
    world.chip.nack_all = True
    assert not afe.read_measurements(meas, True)
    assert afe.bus_errors == 3
    assert afe.set_fets(True, True) == -1
    world.chip.nack_all = False
    assert afe.read_measurements(meas, False)


def test_reset_is_seen_and_configure_recovers():
    world, bus, afe, meas = make()
    assert afe.set_fets(True, True) == 3
    world.chip.power_on_reset()
    world.advance(250)
    assert afe.read_status(meas)
    assert meas.status & R.STAT_DEVICE_XREADY
    assert meas.fets == 0
    assert afe.configure()
    assert afe.read_status(meas) and not meas.status & R.STAT_DEVICE_XREADY


def test_cell_wire_open_shows_in_readings():
    world, bus, afe, meas = make()
    world.chip.cell_wire_open(1)
    cycle(world, afe, meas)
    assert meas.cell_mv[1] < 500
    assert meas.cell_mv[2] > 6000


@settings(max_examples=30, deadline=None)
@given(cells=st.integers(3, 15))
def test_every_cell_count_reads_right(cells):
    world, bus, afe, meas = make(cells=cells, spread_mv=40)
    cycle(world, afe, meas)
    assert meas.cells == cells
    truth = world.pack.cell_mvs()
    for i in range(cells):
        assert abs(meas.cell_mv[i] - truth[i]) <= 2


# -- the chip-neutral interface (bms.afe) ---------------------------------------------------------


def test_status_bits_are_the_firmwares_own():
    # the driver passes SYS_STAT through as the firmware's ST_ bits: they must be the same
    assert (A.ST_OCD, A.ST_SCD, A.ST_OV, A.ST_UV, A.ST_OVRD, A.ST_DEVICE, A.ST_NEW_CC) == (
        R.STAT_OCD, R.STAT_SCD, R.STAT_OV, R.STAT_UV, R.STAT_OVRD_ALERT, R.STAT_DEVICE_XREADY, R.STAT_CC_READY)
    assert A.ST_FAULTS == R.STAT_FAULTS and not A.ST_STOPPED & 0xFF
    assert (M.FET_CHG, M.FET_DSG) == (R.CTRL2_CHG_ON, R.CTRL2_DSG_ON)


def test_read_measures_and_clears_what_it_reported():
    world, bus, afe, meas = make()
    world.advance(250)
    assert afe.read(meas) == A.READ_OK
    assert meas.status & A.ST_NEW_CC and meas.cells == 4 and not meas.status & A.ST_STOPPED
    assert meas.fets == 0 and meas.load_present == 0
    # the window's flag is cleared: read again at once, no new window
    assert afe.read(meas) == A.READ_OK and not meas.status & A.ST_NEW_CC


def test_read_reports_a_stopped_adc_and_a_failed_status_read():
    world, bus, afe, meas = make()
    world.advance(250)
    assert afe.write_reg(R.SYS_CTRL1, 0)  # ADC off
    assert afe.read(meas) == A.READ_OK and meas.status & A.ST_STOPPED
    meas.status = A.ST_OV

    class Dead:
        def readfrom_mem_into(self, *a):
            raise OSError(19)

        def writeto_mem(self, *a):
            raise OSError(19)

    afe.i2c = Dead()
    assert afe.read(meas) == A.READ_NO_STATUS and meas.status == 0


def test_open_afe_names_the_family_member():
    world = World(cells=10)
    for groups, name in ((1, "bq76920"), (2, "bq76930"), (3, "bq76940"), (0, "bq769x0")):
        assert chips.open_afe(world.chip, 0x3FF, 1000, R.I2C_ADDR, groups).model == name
    assert chips.models()[:len(R.MODELS)] == R.MODELS, "the bq769x0 family first: index groups - 1"
    assert chips.models()[len(R.MODELS):] == (("bq76952", 0, 3, 16),)
    assert chips.model_groups(10) == R.model_groups(10) == 2
    assert chips.default_cell_channels(10, 2) == R.default_cell_channels(10, 2)


def test_the_firmware_window_is_the_chips_coulomb_counter_period():
    """The cycle, the SOC and the power modes run on bms.afe.WINDOW_MS; the
    bq769x0 delivers a coulomb-counter reading every CC_PERIOD_MS (SLUSBK2)."""
    assert A.WINDOW_MS == R.CC_PERIOD_MS == 250
