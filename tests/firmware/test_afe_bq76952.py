"""The bq76952 driver against the register-level simulated chip (CPython),
and the protocol's worked examples from TI's documents."""
import pytest

from bms import afe as A
from bms.afe.bq76952 import Bq76952
from bms.afe.bq76952 import regs as R
from bms.crc import crc8
from bms.measurements import Measurements
from bms.regmap import FET_CHG, FET_DSG
from bms_sim.world import World
from test_afe_driver import SpyBus  # noqa: E402


def make(cells=15, crc=True, detect=False, **kw):
    world = World(cells=cells, afe="bq76952", crc=crc, **kw)
    bus = SpyBus(world.chip)
    afe = Bq76952(bus, world.chip.cell_channels, world.chip.shunt_uohm, crc=None if detect else crc)
    assert afe.configure()
    meas = Measurements(3)
    return world, bus, afe, meas


def cycle(world, afe, meas, ms=250):
    world.advance(ms)
    got = afe.read(meas)
    meas.update_extremes()
    return got


# -- TI's worked examples -----------------------------------------------------

def test_i2c_crc_worked_examples():
    # SLUAA11B (BQ769x2 Software Development Guide) section 4, "I2C With CRC":
    # Figure 4-1, FET_ENABLE written to 0x3E at device address 0x10 (8-bit):
    # the first CRC over [0x10 0x3E 0x22] is 0x63, the second byte's [0x00] is 0x00
    assert crc8(bytes([0x10, 0x3E, 0x22]), 0, 3) == 0x63
    assert crc8(bytes([0x00]), 0, 1) == 0x00
    # Figure 4-2, reading Cell 1 Voltage (0x14): [0x10 0x14 0x11 0x68] -> 0x33, [0x0B] -> 0x31
    assert crc8(bytes([0x10, 0x14, 0x11, 0x68]), 0, 4) == 0x33
    assert crc8(bytes([0x0B]), 0, 1) == 0x31


class Wire:
    """A bus that answers one read with fixed wire bytes and records writes."""

    def __init__(self, answer):
        self.answer = answer
        self.writes = []

    def readfrom_mem_into(self, addr, reg, buf):
        buf[:] = self.answer

    def writeto_mem(self, addr, reg, buf):
        self.writes.append((addr, reg, bytes(buf)))


def test_driver_puts_the_worked_examples_on_the_wire():
    # SLUAA11B 4, Figure 4-1: FET_ENABLE (sent by configure: FET test mode after
    # reset) goes out as 0x22 0x63 0x00 0x00
    world, spy, afe, meas = make()
    assert ("w", 0x08, 0x3E, bytes([0x22, 0x63, 0x00, 0x00])) in spy.log
    # Figure 4-2: the chip answers Cell 1 Voltage with 0x68 0x33 0x0B 0x31 = 0x0B68 mV
    afe = Bq76952(Wire(bytes([0x68, 0x33, 0x0B, 0x31])), R.cell_channels_for(15), 1000, crc=True)
    assert afe.read_word(R.CMD_CELL1_VOLTAGE) == 0x0B68
    assert afe.crc_errors == 0
    # one bit off in the first byte: the CRC that covers the address bytes catches it
    afe = Bq76952(Wire(bytes([0x69, 0x33, 0x0B, 0x31])), R.cell_channels_for(15), 1000, crc=True)
    assert afe.read_word(R.CMD_CELL1_VOLTAGE) == -1
    assert afe.crc_errors == 3


def test_subcommand_checksum_and_length_worked_examples():
    # SLUUBY2B (BQ76952 TRM) 13.1 "Data Memory Access": Cell 1 Gain (0x9180) = 12410
    # (0x307A): 0x80 0x91 to 0x3E/0x3F, 0x7A 0x30 to 0x40, checksum 0x44 and length 0x06
    assert R.checksum(bytes([0x80, 0x91, 0x7A, 0x30]), 0, 4) == 0x44
    bus = Wire(b"")
    afe = Bq76952(bus, R.cell_channels_for(15), 1000, crc=False)
    assert afe.dm_write(0x9180, 0x307A, 2)
    assert bus.writes == [(0x08, 0x3E, bytes([0x80, 0x91, 0x7A, 0x30])), (0x08, 0x60, bytes([0x44, 0x06]))]
    # SLUAA11B 3.3 "Write 'Enabled Protections A'": 0x8C to 0x9261, checksum over
    # (0x61, 0x92, 0x8C), the complement of their sum, 0x80, and length 5
    bus.writes.clear()
    assert afe.dm_write(R.DM_PROT_ENABLED_A, 0x8C, 1)
    assert bus.writes == [(0x08, 0x3E, bytes([0x61, 0x92, 0x8C])), (0x08, 0x60, bytes([0x80, 0x05]))]


def test_data_memory_write_sequence_on_the_wire():
    # SLUAA11B 3.2-3.5: SET_CFGUPDATE (0x0090), wait for Battery Status [CFGUPDATE],
    # the writes with checksum/length, EXIT_CFGUPDATE (0x0092)
    world, bus, afe, meas = make(crc=False)
    bus.log.clear()
    assert afe.set_protection(3600, 1, 2600, 2, 50000, 100, 100000, 100)
    writes = [(reg, data) for kind, addr, reg, data in bus.log if kind == "w"]
    enter = writes.index((0x3E, bytes([0x90, 0x00])))
    leave = writes.index((0x3E, bytes([0x92, 0x00])))
    cov = R.backstop(1000, 3600, 1, 2600, 2, 50000, 100, 100000, 100, 0, 0)[0][1]
    w_cov = writes.index((0x3E, bytes([0x78, 0x92, cov])))
    assert enter < w_cov < leave
    assert writes[w_cov + 1] == (0x60, bytes([R.checksum(bytes([0x78, 0x92, cov]), 0, 3), 5]))
    # the driver waited for the mode: Battery Status was read after SET_CFGUPDATE,
    # before the first Data Memory write
    log = [(kind, reg, data) for kind, addr, reg, data in bus.log]
    at_enter = log.index(("w", 0x3E, bytes([0x90, 0x00])))
    first_dm = next(i for i in range(at_enter + 1, len(log)) if log[i][0] == "w" and log[i][1] == 0x3E)
    assert any(k == "r" and reg == R.CMD_BATTERY_STATUS for k, reg, _ in log[at_enter + 1:first_dm])
    assert world.chip.dm(R.DM_COV_THRESHOLD) == cov


def test_the_model_refuses_data_memory_writes_outside_config_update():
    world, bus, afe, meas = make()
    before = world.chip.dm(R.DM_COV_THRESHOLD)
    assert afe.dm_write(R.DM_COV_THRESHOLD, before - 1, 1)  # acknowledged on the bus...
    assert world.chip.dm(R.DM_COV_THRESHOLD) == before  # ...but not taken
    assert world.chip.dm_writes_refused == 1


def test_a_wrong_checksum_is_not_taken():
    world, bus, afe, meas = make(crc=False)
    assert afe.config_update(True)
    afe._wd[0:3] = bytes([0x78, 0x92, 40])
    assert afe._send(R.CMD_SUBCMD, 3)
    afe._wd[0:2] = bytes([0x00, 5])
    assert afe._send(R.CMD_CHECKSUM, 2)
    assert world.chip.checksum_errors == 1
    assert world.chip.dm(R.DM_COV_THRESHOLD) != 40


# -- bring-up and reading -------------------------------------------------------

@pytest.mark.parametrize("crc", [True, False])
def test_configure_detects_crc_and_reads_the_pack(crc):
    world, bus, afe, meas = make(crc=crc, detect=True, spread_mv=20)
    assert afe.crc is crc
    assert afe.model == "bq76952"
    assert cycle(world, afe, meas) == A.READ_OK
    truth = world.pack.cell_mvs()
    assert meas.cells == 15
    assert all(abs(meas.cell_mv[i] - truth[i]) <= 1 for i in range(15)), (list(meas.cell_mv), truth)
    assert abs(meas.pack_mv - world.pack.pack_mv()) <= 10
    assert list(meas.temp_dc) == [250, 250, 250]
    assert meas.fets == 0 and meas.status & A.ST_FAULTS == 0
    assert world.chip.dm(R.DM_VCELL_MODE, 2) == R.cell_channels_for(15)
    assert world.chip.fet_en, "FET_ENABLE left the FET test mode"


def test_configure_writes_the_shunt_gains():
    world, bus, afe, meas = make(shunt_uohm=250)
    import struct

    gain = struct.unpack("<f", struct.pack("<I", world.chip.dm(R.DM_CC_GAIN, 4)))[0]
    cap = struct.unpack("<f", struct.pack("<I", world.chip.dm(R.DM_CAP_GAIN, 4)))[0]
    assert gain == pytest.approx(7.5684 / 0.25, rel=1e-6)  # TRM 10.2: 7.5684 / Rsense(mOhm)
    assert cap == pytest.approx(gain * 298261.6178, rel=1e-6)
    assert afe.user_ma == 100 and world.chip.dm(R.DM_DA_CONFIG) & 3 == R.USER_AMPS_100MA


def test_sixteen_cells():
    world, bus, afe, meas = make(cells=16)
    assert cycle(world, afe, meas) == A.READ_OK
    assert meas.cells == 16
    assert abs(meas.cell_mv[15] - world.pack.cell_mvs()[15]) <= 1


def test_a_cell_input_beyond_the_chips_sixteen_is_a_clear_error():
    with pytest.raises(ValueError, match="16 cell inputs"):
        Bq76952(None, 0x1FFFF, 1000)


def test_a_bad_thermistor_and_an_open_wire():
    world, bus, afe, meas = make()
    world.chip.thermistor_fault(0, "open")
    world.chip.thermistor_fault(2, "short")
    world.chip.cell_wire_open(3)
    cycle(world, afe, meas)
    assert meas.temp_dc[0] == A.TEMP_OPEN and meas.temp_dc[2] == A.TEMP_SHORT and meas.temp_dc[1] == 250
    assert meas.cell_mv[3] < 10 and meas.cell_mv[4] > 6000


def test_crc_errors_and_nacks_are_retried_counted_and_reported():
    world, bus, afe, meas = make()
    world.chip.corrupt_next_reads = 2
    assert cycle(world, afe, meas) == A.READ_OK
    assert afe.crc_errors == 2
    world.chip.nack_all = True
    assert cycle(world, afe, meas) == A.READ_NO_STATUS and meas.status == 0
    assert afe.bus_errors == 3
    assert afe.set_fets(True, True) == -1 and not afe.fets_off()
    world.chip.nack_all = False
    world.chip.corrupt_every = 2  # every other read is bad: the retries carry it
    assert cycle(world, afe, meas) == A.READ_OK


def test_a_reset_is_reported_and_configure_brings_the_chip_back():
    world, bus, afe, meas = make()
    assert afe.set_protection(3650, 2, 2500, 2, 50000, 100, 100000, 100)
    world.chip.power_on_reset()
    cycle(world, afe, meas)
    assert meas.status & A.ST_DEVICE
    assert not meas.status & A.ST_NEW_CC, "a restarted charge counter is no reading"
    assert afe.configure() and afe.set_protection(3650, 2, 2500, 2, 50000, 100, 100000, 100)
    assert cycle(world, afe, meas) == A.READ_OK and not meas.status & A.ST_DEVICE


# -- protection -------------------------------------------------------------------

@pytest.mark.parametrize("ov_mv,uv_mv,ocd_ma,scd_ma,shunt", [
    (3650, 2500, 100000, 200000, 1000), (4200, 3000, 30000, 60000, 500), (3500, 2000, 7000, 12000, 3000)])
def test_set_protection_applies_on_the_safe_side_and_reads_back(ov_mv, uv_mv, ocd_ma, scd_ma, shunt):
    world, bus, afe, meas = make(shunt_uohm=shunt)
    assert afe.set_protection(ov_mv, 2, uv_mv, 4, ocd_ma, 320, scd_ma, 200)
    assert ov_mv - 51 < afe.applied_ov_mv <= ov_mv
    assert uv_mv <= afe.applied_uv_mv < uv_mv + 51
    assert afe.applied_ocd_ma <= ocd_ma and afe.applied_scd_ma <= scd_ma
    assert afe.applied_ocd_delay_ms <= 320 and afe.applied_scd_delay_us <= 200
    assert afe.applied_ov_delay_s == 2 and afe.applied_uv_delay_s == 4
    chip = world.chip
    assert afe.applied_ov_mv == chip.dm(R.DM_COV_THRESHOLD) * 506 // 10
    assert afe.applied_ocd_ma == chip.dm(R.DM_OCD1_THRESHOLD) * 2000 * 1000 // shunt
    assert chip.dm(R.DM_PROT_ENABLED_A) == R.SA_SCD | R.SA_OCD1 | R.SA_COV | R.SA_CUV
    # the same again: nothing to write, so no CONFIG_UPDATE (which would drop the FETs)
    bus.log.clear()
    assert afe.set_protection(ov_mv, 2, uv_mv, 4, ocd_ma, 320, scd_ma, 200)
    assert ("w", 0x08, 0x3E, bytes([0x90, 0x74, 0x00, 0x00])) not in bus.log
    assert not any(e[0] == "w" and e[2] == 0x3E and e[3][0] == 0x90 for e in bus.log)


def test_set_protection_fails_when_the_chip_did_not_take_it():
    world, bus, afe, meas = make()
    chip = world.chip
    real = chip._commit
    chip._commit = lambda: None  # acknowledged on the bus, never stored
    assert not afe.set_protection(3600, 2, 2500, 4, 20000, 320, 40000, 200)
    chip._commit = real
    assert afe.set_protection(3600, 2, 2500, 4, 20000, 320, 40000, 200)


def on(world, afe, meas):
    assert afe.set_fets(True, True) == FET_CHG | FET_DSG
    assert world.fets() == (True, True)


def test_ocd_trips_after_its_delay_and_stays_off_until_the_host_acts():
    world, bus, afe, meas = make(capacity_mah=100000)
    assert afe.set_protection(3650, 2, 2500, 2, 50000, 100, 150000, 100)
    on(world, afe, meas)
    world.load.set(60000)
    world.advance(50)
    assert afe.read(meas) == A.READ_OK and meas.fets == FET_CHG | FET_DSG, "inside the 99 ms delay"
    assert world.chip.reg(R.CMD_SAFETY_ALERT_A) & R.SA_OCD1, "the alert comes first"
    world.advance(200)
    afe.read(meas)
    assert meas.status & A.ST_OCD and meas.fets == FET_CHG
    world.load.set(0)
    for _ in range(40):  # 10 s: the chip recovers (3 s), the host's FET_CONTROL holds DSG off
        cycle(world, afe, meas)
    assert world.chip.reg(R.CMD_SAFETY_STATUS_A) == 0 and not meas.status & A.ST_OCD
    assert meas.fets == FET_CHG
    on(world, afe, meas)


def test_short_circuit_trips_at_once():
    world, bus, afe, meas = make(capacity_mah=100000)
    assert afe.set_protection(3650, 2, 2500, 2, 50000, 100, 100000, 100)
    on(world, afe, meas)
    world.load.set(150000)
    world.advance(1)
    # the firmware's afe_scd row: DSG off (CHG FET Protections A holds COV and OCC alone)
    assert world.fets() == (True, False), "SCD switches the DSG FET off"
    afe.read(meas)
    assert meas.status & A.ST_SCD


def test_cell_over_voltage_drops_charge_only():
    world, bus, afe, meas = make(soc_pct=90)
    high = max(world.pack.cell_mvs())
    assert afe.set_protection(int(high) - 60, 1, 2500, 2, 50000, 100, 100000, 100)
    on(world, afe, meas)
    seen = []
    for _ in range(6):
        cycle(world, afe, meas)
        seen.append(meas.status & A.ST_OV)
    # reported once, when it starts (as the bq769x0's latched flag, cleared once read)
    assert seen.count(A.ST_OV) == 1 and meas.fets == FET_DSG


# -- balancing and FETs ---------------------------------------------------------------

def test_balancing_follows_the_chips_rules():
    world, bus, afe, meas = make()
    assert afe.set_balancing(0b0111) == 0b0101, "of adjacent inputs the upper is dropped"
    assert world.chip.adjacent_balance_violations == 0
    assert world.chip.reg(R.CMD_ALARM_RAW) & R.AL_CB
    assert world.chip.bleed_ma()[0] > 0 and world.chip.bleed_ma()[1] == 0
    cycle(world, afe, meas)
    assert meas.balance_mask == 0b0101
    # the top cell sits on VC16: cells 14 and 15 are inputs 13 and 15, not adjacent
    assert afe.set_balancing(1 << 13 | 1 << 14) == 1 << 13 | 1 << 14
    afe.max_balance = 2
    assert afe.set_balancing(0b1010101) == 0b101
    assert afe.set_balancing(0) == 0
    cycle(world, afe, meas)
    assert meas.balance_mask == 0


def test_the_model_refuses_adjacent_cells():
    world, bus, afe, meas = make()
    afe._wd[0:4] = bytes([0x83, 0x00, 0x03, 0x00])
    assert afe._sub_write(2)
    assert world.chip.adjacent_balance_violations == 1 and world.chip.reg(R.CMD_ALARM_RAW) & R.AL_CB == 0


def test_set_fets_reports_what_the_chip_does():
    world, bus, afe, meas = make()
    assert afe.set_fets(True, False) == FET_CHG
    assert afe.set_fets(False, True) == FET_DSG
    assert afe.fets_off() and world.fets() == (False, False)


def test_ship():
    world, bus, afe, meas = make()
    on(world, afe, meas)
    assert afe.enter_ship()
    assert world.chip.shipped
    assert cycle(world, afe, meas) == A.READ_NO_STATUS


# -- the coulomb counter --------------------------------------------------------------

@pytest.mark.parametrize("load_ma,charge_ma", [(5000, 0), (0, 3000), (150, 0)])
def test_current_sign_and_scale(load_ma, charge_ma):
    world, bus, afe, meas = make()
    on(world, afe, meas)
    world.load.set(load_ma)
    if charge_ma:
        world.charger.set(charge_ma, None)
    cycle(world, afe, meas)
    cycle(world, afe, meas)
    expected = charge_ma - load_ma
    assert abs(meas.current_ma - expected) <= afe.user_ma
    assert meas.status & A.ST_NEW_CC
    assert (meas.cc_raw > 0) == (expected > 0)
    assert abs(meas.cc_raw * 8440 / world.chip.shunt_uohm - expected) <= 8440 / world.chip.shunt_uohm


def test_cc_raw_adds_up_to_the_chips_charge_exactly():
    # a unit of cc_raw is 8.44 uV across the shunt for 250 ms (2110 / shunt mAs), as
    # on the bq769x0; the remainder is carried, so the sum is the chip's PASSQ
    world, bus, afe, meas = make(capacity_mah=200000)
    on(world, afe, meas)
    start = world.chip._passq
    total = 0
    for k, ms in enumerate([250] * 20 + [1000, 250, 5000, 250]):
        world.load.set(37000 if k % 3 else 1234)
        cycle(world, afe, meas, ms)
        total += meas.cc_raw
    world.load.set(0)
    for _ in range(4):  # anything past int16 comes out in the next readings
        cycle(world, afe, meas)
        total += meas.cc_raw
    chip_mas = (world.chip._passq - start) * 3600 * afe.user_ma
    assert abs(total * 2110 / world.chip.shunt_uohm - chip_mas) <= 2110 / world.chip.shunt_uohm + 1


# -- MicroPython: nothing allocated in the cycle ----------------------------------------

@pytest.mark.parametrize("crc", [True, False])
def test_read_set_fets_set_balancing_allocate_nothing_under_micropython(micropython, tmp_path, crc):
    from conftest import run_mpy

    world, bus, afe, meas = make(crc=crc, capacity_mah=100000)
    assert afe.set_protection(3650, 2, 2500, 2, 100000, 320, 200000, 200, 50000, 100)
    calls = ""
    for k in range(32):
        # charge, discharge (past the int16 range once: the carry), rest; balancing on and off
        world.load.set((0, 90000, 40000, 0)[k % 4])
        world.charger.set(5000 if k % 4 == 3 else 0, None)
        world.advance(1000 if k % 8 == 5 else 250)
        assert afe.read(meas) == A.READ_OK
        calls += "r"
        if k % 3 == 0:
            afe.set_fets(True, True)
            afe.set_fets(False, True)
            calls += "f"
        if k % 4 == 1:
            assert afe.set_balancing((0b0101, 0b1010, 0)[(k // 4) % 3]) >= 0
            calls += "b"
    rec = tmp_path / "afe952.rec"
    rec.write_text("".join("%s %02x %s\n" % (kind, reg, data.hex()) for kind, addr, reg, data in bus.log))
    proc = run_mpy(micropython, "mpy_afe952_alloc.py", str(rec), 1 if crc else 0, world.chip.cell_channels,
                   world.chip.shunt_uohm, calls, heap="1024wK")
    assert "OK" in proc.stdout, proc.stdout


def test_open_afe_selects_the_chip_and_imports_only_it():
    from bms.afe import chips

    world = World(cells=15, afe="bq76952")
    afe = chips.open_afe(world.chip, chips.bq76952_cell_channels(15), 1000, R.DEV_ADDR, 0, chips.AFE_BQ76952)
    assert isinstance(afe, Bq76952) and afe.configure() and afe.cells == 15
    with pytest.raises(ValueError, match="afe_type"):
        chips.open_afe(world.chip, 0x7FFF, 1000, R.DEV_ADDR, 0, 7)


# -- the temperature and charge over-current backstop ---------------------------

def test_temperature_protection_rounds_outwards_and_reads_back_signed():
    world, bus, afe, meas = make()
    assert afe.applied_otc_c is None
    # 0.1 degC in: over-temperatures rounded up, under-temperatures down, to the chip's whole degrees
    assert afe.set_temp_protection(505, 650, -55, -250)
    assert (afe.applied_otc_c, afe.applied_otd_c, afe.applied_utc_c, afe.applied_utd_c) == (51, 65, -6, -25)
    chip = world.chip
    assert chip.dm(R.DM_UTC_THRESHOLD, 1) == 256 - 6, "an I1 is written as its two's complement"
    assert R.i1(chip.dm(R.DM_UTC_THRESHOLD + 2, 1)) == -1, "recovers 5 degC inside"
    assert chip.dm(R.DM_OTC_THRESHOLD + 2, 1) == 46
    assert chip.dm(R.DM_PROT_ENABLED_B, 1) == R.SB_OTC | R.SB_OTD | R.SB_UTC | R.SB_UTD
    assert chip.dm(R.DM_CHG_FET_PROT_B, 1) == R.SB_OTC | R.SB_UTC
    assert chip.dm(R.DM_DSG_FET_PROT_B, 1) == R.SB_OTD | R.SB_UTD
    n = len(bus.log)
    assert afe.set_temp_protection(505, 650, -55, -250), "held already: nothing written again"
    enter = R.SUB_SET_CFGUPDATE.to_bytes(2, "little")
    assert not [x for x in bus.log[n:] if x[0] == "w" and x[2] == R.CMD_SUBCMD and x[3][:2] == enter]
    # beyond the chip's range: clamped to it
    assert afe.set_temp_protection(2000, 2000, -900, -900)
    assert (afe.applied_otc_c, afe.applied_utd_c) == (R.TEMP_MAX_C, R.TEMP_MIN_C)


def test_over_temperature_in_charge_trips_the_chg_fet_after_its_delay_and_recovers():
    world, bus, afe, meas = make(temps_c=(25.0, 25.0, 25.0))
    assert afe.set_protection(3650, 2, 2500, 2, 50000, 100, 100000, 100)
    assert afe.set_temp_protection(500, 600, 0, -200)
    on(world, afe, meas)
    world.pack.temperatures_c[0] = 52.0  # over OTC (50), under OTD (60)
    for _ in range(6):  # 1.5 s: inside the 2 s delay
        cycle(world, afe, meas)
    assert world.fets() == (True, True)
    seen = 0
    for _ in range(8):
        cycle(world, afe, meas)
        seen |= meas.status  # a fault is reported once, as it starts
    assert world.chip.reg(R.CMD_SAFETY_STATUS_B) == R.SB_OTC
    assert world.fets()[0] is False, "OTC switches the CHG FET off"
    assert seen & A.ST_OVRD, "the firmware hears of it as the chip's own switch-off"
    world.pack.temperatures_c[0] = 44.0  # under the recovery (45)
    for _ in range(8):
        cycle(world, afe, meas)
    assert world.chip.reg(R.CMD_SAFETY_STATUS_B) == 0


def test_an_open_thermistor_reads_cold_and_trips_under_temperature():
    world, bus, afe, meas = make()
    assert afe.set_temp_protection(500, 600, 0, -200)
    on(world, afe, meas)
    world.chip.thermistor_fault(1, "open")
    for _ in range(16):
        cycle(world, afe, meas)
    assert world.chip.reg(R.CMD_SAFETY_STATUS_B) & (R.SB_UTC | R.SB_UTD) == R.SB_UTC | R.SB_UTD
    assert world.fets() == (False, False)


def test_charge_over_current_is_set_when_asked_and_trips_the_chg_fet():
    world, bus, afe, meas = make(capacity_mah=100000)
    assert afe.set_protection(3650, 2, 2500, 2, 50000, 100, 100000, 100, 30000, 100)
    assert afe.applied_occ_ma == 30000 and afe.applied_occ_delay_ms <= 100
    assert world.chip.dm(R.DM_PROT_ENABLED_A, 1) & R.SA_OCC
    on(world, afe, meas)
    world.charger.set(40000)
    for _ in range(4):
        cycle(world, afe, meas)
    assert world.chip.reg(R.CMD_SAFETY_STATUS_A) & R.SA_OCC
    assert world.fets()[0] is False


def test_charge_over_current_beyond_the_comparator_is_left_off_not_clamped_inside():
    # 1 mOhm: OCC reaches 124 A at most; 200 A asked would trip at 124 A, inside the firmware's limit
    world, bus, afe, meas = make(shunt_uohm=1000)
    assert afe.set_protection(3650, 2, 2500, 2, 50000, 100, 100000, 100, 200000, 100)
    assert afe.applied_occ_ma == 0 and not world.chip.dm(R.DM_PROT_ENABLED_A, 1) & R.SA_OCC
