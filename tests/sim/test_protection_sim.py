"""Every protection in the simulator: the firmware's real control loop
(bms.app on CPython, DirectSim) against the simulated chip and pack.

For each row: it trips within its delay plus one measurement cycle of the
condition first being measured, the right FET goes off (and only that
one), the off-reason register and the event log say why, and it releases
only after its release condition has held for its release delay.
"""
import pytest

from bms import params as P
from bms import protection as PR
from bms.spec import protrules
from bms import regmap as M
from bms.spec import regtable as RT
from bms.afe.bq769x0.regs import CTRL1_ADC_EN, STAT_SCD, SYS_CTRL1, SYS_CTRL2, SYS_STAT
from bms.events import EV_AFE_UP, EV_BOOT, EV_RESET
from bms.events import EV_MODE
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.world import World
from bms.events import EV_LATCH, EV_RELEASE, EV_TRIP
from conftest import AFES

CYCLE_MS = 250
ROW = {r[0]: i for i, r in enumerate(protrules.ROWS)}
BIT = protrules.bit_of()  # a row's bit in its level's flags register


def make(tmp_path, cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=50.0, extra=None, afe=AFES[0], **kw):
    """The suite's pack on the bq769x0, or a 16S LFP bq76952 pack (tests/conftest.py afe)."""
    afe.provision(tmp_path, cells, chemistry, capacity_mah, 1000, extra=extra)
    world = afe.world(cells=cells, chemistry=chemistry, capacity_mah=capacity_mah, soc_pct=soc_pct, **kw)
    sim = DirectSim(world, str(tmp_path), on_cycle=_record)
    sim.trace = []
    sim.run(1500)
    assert sim.app.cycle.protection.protect_flags == 0, PR_names(sim.app.cycle.protection.protect_flags)
    assert sim.app.cycle.meas.fets == PR.BOTH
    return sim


def _record(sim):
    pr = sim.app.cycle.protection
    sim.trace.append((sim.world.now_ms, list(pr.q), protrules.row_bits(pr.protect_flags, pr.warn_flags),
                      sim.world.fets()))


def PR_names(bits):
    return protrules.names(bits)


def active(sim, name):
    pr = sim.app.cycle.protection
    return bool(protrules.row_bits(pr.protect_flags, pr.warn_flags) & (1 << ROW[name]))


def value(sim, index):
    return sim.app.values[index]


def cond_times(sim, name, trip):
    """(first time the row's trip (or release) condition held continuously up
    to the change, time of the change) from the recorded trace."""
    r = protrules.ROWS[ROW[name]]
    bit = 1 << ROW[name]
    v = sim.app.values
    changed_at = None
    for k in range(len(sim.trace) - 1, 0, -1):
        was = sim.trace[k - 1][2] & bit
        now = sim.trace[k][2] & bit
        if (not was and now) if trip else (was and not now):
            changed_at = k
            break
    assert changed_at is not None, "no %s of %s in the trace" % ("trip" if trip else "release", name)

    def holds(q):
        x = q[r[1]]
        if r[2] == PR.FLAG:
            return x != 0 if trip else x == 0
        t = v[r[3]]
        if r[2] == PR.ABOVE:
            return x >= t if trip else x < v[r[5]]
        if r[2] == PR.BELOW:
            return x <= t if trip else x > v[r[5]]
        if r[2] == PR.ABOVE_H:
            return x >= t if trip else x < t - v[r[5]]
        return x <= t if trip else x > t + v[r[5]]

    k = changed_at
    while k > 0 and holds(sim.trace[k - 1][1]):
        k -= 1
    return sim.trace[k][0], sim.trace[changed_at][0]


def check_trip(sim, name, limit_ms, fets_reachable=True):
    took = sim.run_until(lambda s: active(s, name), limit_ms)
    assert took is not None, "%s did not trip within %d ms" % (name, limit_ms)
    r = protrules.ROWS[ROW[name]]
    first, at = cond_times(sim, name, True)
    delay = value(sim, r[4]) if r[4] != PR.NONE else 0
    assert delay <= at - first <= delay + CYCLE_MS, (name, first, at, delay)
    pr = sim.app.cycle.protection
    if r[8] == PR.PROT:
        if fets_reachable:
            chg, dsg = sim.world.fets()
            if r[7] & PR.CHG:
                assert not chg
            if r[7] & PR.DSG:
                assert not dsg
        if r[7] & PR.CHG:
            assert pr.chg_reason, "the charge off-reason register must name a row"
        if r[7] & PR.DSG:
            assert pr.dsg_reason
        assert reg_u32(sim, M.IR_PROTECT_FLAGS) & (1 << BIT[name])
    else:
        assert sim.world.fets() == (True, True), "a warning leaves the FETs alone"
        assert reg_u32(sim, M.IR_WARN_FLAGS) & (1 << BIT[name])
    codes = [e[3] for e in _events(sim)]
    assert EV_TRIP + ROW[name] + 1 in codes
    return first, at


def check_release(sim, name, limit_ms):
    took = sim.run_until(lambda s: not active(s, name), limit_ms)
    assert took is not None, "%s did not release within %d ms" % (name, limit_ms)
    r = protrules.ROWS[ROW[name]]
    first, at = cond_times(sim, name, False)
    delay = value(sim, r[6]) if r[6] != PR.NONE else 0
    assert delay <= at - first <= delay + CYCLE_MS, (name, first, at, delay)
    assert EV_RELEASE + ROW[name] + 1 in [e[3] for e in _events(sim)]
    sim.run(2 * CYCLE_MS)


def reg_u32(sim, addr):
    w = sim.app.ir.words
    return (w[addr] << 16) | w[addr + 1]


def _events(sim):
    log = sim.app.log
    return [log.newest(i) for i in range(M.EVENT_WINDOW) if log.newest(i)]


# -- voltage ------------------------------------------------------------------

def test_cell_over_voltage(tmp_path, afe):
    sim = make(tmp_path, soc_pct=97.0, spread_mv=10, afe=afe)
    sim.world.charger.set(5000, None)  # a charger that never stops
    check_trip(sim, "cell_ov", 3600 * 1000)
    assert sim.world.fets() == (False, True), "charge off, discharge still allowed"
    assert sim.app.cycle.protection.chg_reason == ROW["cell_ov"] + 1
    sim.world.charger.off()
    sim.world.load.set(3000)  # an over-charged pack can still be discharged
    check_release(sim, "cell_ov", 600 * 1000)
    assert sim.world.fets() == (True, True)


def test_the_fet_switches_before_the_trip_is_written_to_flash(tmp_path):
    # act first, write later: the trip's event reaches flash after the charge FET is off
    from bms.eventlog import decode

    sim = make(tmp_path, soc_pct=97.0, spread_mv=10)
    log = sim.app.log
    real = log._write
    trip = EV_TRIP + ROW["cell_ov"] + 1
    chg_at_write = []

    def write(slot, buf):
        if decode(buf)[3] == trip:
            chg_at_write.append(sim.world.fets()[0])
        real(slot, buf)

    log._write = write
    sim.world.charger.set(5000, None)  # a charger that never stops
    check_trip(sim, "cell_ov", 3600 * 1000)
    assert chg_at_write == [False], "CHG was still on when the trip went to flash"
    assert log.newest(0)[3] == trip or trip in [e[3] for e in _events(sim)]


@pytest.mark.slow
def test_cell_under_voltage(tmp_path, afe):
    n = afe.cells(4)
    sim = make(tmp_path, soc_pct=4.0, extra={"pack_uv_mv": n * 2000}, afe=afe)  # the cell row, not the pack's
    sim.world.load.set(5000)  # a load that never stops
    check_trip(sim, "cell_uv", 3600 * 1000)
    assert sim.world.fets() == (True, False)
    sim.world.load.off()
    sim.run(60000)
    assert active(sim, "cell_uv"), "resting alone does not lift an empty LFP cell above the release"
    sim.world.charger.set(2000, 3550)  # charging is still allowed
    check_release(sim, "cell_uv", 3600 * 1000)


def test_pack_over_and_under_voltage(tmp_path):
    # pack thresholds inside the cell ones, so the pack rows act first
    sim = make(tmp_path, soc_pct=90.0, extra={"pack_ov_mv": 4 * 3420, "pack_ov_release_mv": 4 * 3350,
                                               "pack_uv_mv": 4 * 3250, "pack_uv_release_mv": 4 * 3280})
    sim.world.charger.set(3000, None)
    check_trip(sim, "pack_ov", 3600 * 1000)
    assert not active(sim, "cell_ov")
    sim.world.charger.off()
    sim.world.load.set(3000)
    check_release(sim, "pack_ov", 3600 * 1000)
    sim.world.load.set(8000)
    check_trip(sim, "pack_uv", 4 * 3600 * 1000)
    assert not active(sim, "cell_uv")
    sim.world.load.off()
    check_release(sim, "pack_uv", 3600 * 1000)


# -- current --------------------------------------------------------------------

def test_charge_over_current_and_retry(tmp_path, afe):
    sim = make(tmp_path, soc_pct=30.0, afe=afe)
    sim.world.charger.set(13000, None)  # 1.3 C, above the 1 C limit
    check_trip(sim, "chg_oc", 60000)
    assert sim.world.fets() == (False, True)
    check_release(sim, "chg_oc", 60000)  # retry after chg_oc_release_ms
    check_trip(sim, "chg_oc", 60000)  # the charger is still too strong: off again
    sim.world.charger.set(5000, None)
    check_release(sim, "chg_oc", 60000)
    sim.run(5000)
    assert not active(sim, "chg_oc")


def test_discharge_over_current(tmp_path, afe):
    sim = make(tmp_path, soc_pct=60.0, afe=afe)
    sim.world.load.set(15000)  # 1.5 C: above dsg_oc (1 C), below the AFE's 2 C
    check_trip(sim, "dsg_oc", 60000)
    assert sim.world.fets() == (True, False)
    assert not active(sim, "afe_ocd")
    sim.world.load.set(3000)
    check_release(sim, "dsg_oc", 60000)


def test_afe_hardware_over_current_is_the_backstop(tmp_path, afe):
    sim = make(tmp_path, soc_pct=60.0, afe=afe)
    ir = sim.app.ir.words
    applied = (ir[M.IR_HW_OCD_MA] << 16) | ir[M.IR_HW_OCD_MA + 1]
    assert 0 < applied <= value(sim, P.P_HW_OCD_MA)
    assert applied > value(sim, P.P_DSG_OC_MA), "the hardware threshold sits outside the software one"
    sim.world.load.set(applied + 8000)
    took = sim.run_until(lambda s: active(s, "afe_ocd"), 5000)
    assert took is not None and took <= ir[M.IR_HW_OCD_DELAY_MS] + 2 * CYCLE_MS
    assert sim.world.fets() == (True, False)
    if not afe.is_952:
        assert sim.world.chip.reg(0x00) & 0x01 == 0, "the firmware cleared the chip's OCD flag"
    sim.world.load.set(2000)
    check_release(sim, "afe_ocd", 60000)
    assert sim.world.fets() == (True, True)
    if afe.is_952:  # its Safety Status follows the chip's own recovery; the latched alarm was cleared
        from bms.afe.bq76952 import regs as R952

        assert sim.world.chip.word(R952.CMD_ALARM_STATUS) & (R952.AL_SSA | R952.AL_SSBC) == 0


def test_short_circuit_retries_with_back_off_then_latches_until_the_load_goes(tmp_path, afe):
    sim = make(tmp_path, soc_pct=60.0, afe=afe)
    sim.world.load.set(100000)  # a dead short
    retry_ms = value(sim, P.P_SCD_RETRY_MS)
    retries = value(sim, P.P_SCD_RETRIES)
    for k in range(retries):
        check_trip(sim, "afe_scd", 5000)
        assert sim.world.fets() == (True, False)
        # in 50 ms steps: the bq76952's ALERT on a safety event runs a cycle at once, so the
        # retry's re-trip can follow its release within one 250 ms step
        took = sim.run_until(lambda s: not active(s, "afe_scd"), 10 * retry_ms << k, step_ms=50)
        assert took is not None
        first, at = cond_times(sim, "afe_scd", False)  # from the first cycle without the chip's flag
        assert retry_ms << k <= at - first <= (retry_ms << k) + CYCLE_MS, "back-off doubles"
    check_trip(sim, "afe_scd", 5000)
    sim.run(20 * retry_ms)
    assert active(sim, "afe_scd"), "after its retries a short circuit latches"
    assert sim.app.cycle.protection.latched() == 1 << BIT["afe_scd"]
    assert sim.world.fets() == (False, False), "latched: both off, so the chip can sense the load"
    codes = [e[3] for e in _events(sim)]
    assert EV_LATCH + ROW["afe_scd"] + 1 in codes
    sim.world.load.off()  # the load is taken away: the chip no longer senses it
    took = sim.run_until(lambda s: not active(s, "afe_scd"), 10000)
    assert took is not None
    sim.run(1000)
    assert sim.world.fets() == (True, True)


def test_a_short_that_upsets_the_bus_still_counts_its_trips_and_latches(tmp_path):
    # every short-circuit trip also upsets I2C for 300 ms, as a real short
    # can: the firmware loses the chip and configures it again, and the trip
    # the chip flagged meanwhile must still count, or it re-closes DSG into
    # the short for ever (a retry per trip, never a latch)
    sim = make(tmp_path, soc_pct=60.0)
    chip = sim.world.chip
    trips = []
    state = {"scd": 0, "quiet_at": None}

    def upset_bus(w):
        scd = chip.reg(SYS_STAT) & STAT_SCD
        if scd and not state["scd"]:
            trips.append(w.now_ms)
            chip.nack_all = True
            state["quiet_at"] = w.now_ms + 300
        state["scd"] = scd
        if state["quiet_at"] is not None and w.now_ms >= state["quiet_at"]:
            chip.nack_all = False
            state["quiet_at"] = None

    sim.board.on_advance = upset_bus
    sim.world.load.set(100000)  # a dead short
    sim.run(180000)
    retries = value(sim, P.P_SCD_RETRIES)
    assert sim.app.cycle.protection.latched() == 1 << BIT["afe_scd"], PR_names(sim.app.cycle.protection.protect_flags)
    assert len(trips) == retries + 1, trips
    assert sim.world.fets() == (False, False)
    assert sim.app.cycle.afe.bus_errors > 0, "the bus really was upset"


def test_no_deep_sleep_while_the_fets_cannot_be_switched_off(tmp_path):
    from bms.boards import IN_BUTTON
    from bms.power import CAUSE_SLEEP_REFUSED, WORKING
    from bms.events import EV_MODE

    sim = make(tmp_path)
    chip = sim.world.chip
    write = chip.writeto_mem

    def nack_fet_writes(addr, reg, buf):
        if reg == SYS_CTRL2:
            raise OSError(5)
        write(addr, reg, buf)

    def long_press():
        sim.board.input_bits |= IN_BUTTON
        sim.run(3500)
        sim.board.input_bits &= ~IN_BUTTON
        sim.run(1000)

    chip.writeto_mem = nack_fet_writes
    long_press()
    assert sim.board.deep_sleeps == 0, "asleep with the FETs maybe on"
    assert (WORKING << 8) | CAUSE_SLEEP_REFUSED in [e[4] for e in _events(sim) if e[3] == EV_MODE]
    chip.writeto_mem = write  # the bus is well again: the FETs go off, and it sleeps
    sim.run(2000)
    long_press()
    assert sim.board.deep_sleeps == 1 and sim.world.fets() == (False, False)


def _command(sim, *words):
    """Holding-register writes, as the Modbus slave hands them to the app (unlock, then each word)."""
    app = sim.app
    for addr, value in words:
        assert app.write_registers(addr, 1, bytes((value >> 8, value & 0xFF)), 0, False) == 0
        app.step()  # the work that follows a write (as after the reply)


def test_a_reset_loop_locks_the_fets_off_until_a_host_clears_it(tmp_path):
    from bms.boards import RESET_SOFT, RESET_WDT

    sim = make(tmp_path)
    row = ROW["reset_lockout"]
    for k in range(5):
        sim.board.cause = (RESET_WDT, 0)  # the watchdog reset the MCU (a hang, a crash loop)
        sim._boot()
        sim.run(3000)
        assert active(sim, "reset_lockout") == (k == 4), k
    assert sim.world.fets() == (False, False) and sim.app.cycle.protection.chg_reason == row + 1
    assert EV_TRIP + row + 1 in [e[3] for e in _events(sim)]
    assert reg_u32(sim, M.IR_PROTECT_FLAGS) & (1 << BIT["reset_lockout"]), "Modbus still answers and says why"
    sim.board.cause = (RESET_SOFT, 0)  # a restart by command does not clear it
    sim._boot()
    sim.run(3000)
    assert active(sim, "reset_lockout")
    _command(sim, (M.HR_UNLOCK, 1234), (M.HR_COMMAND, M.CMD_CLEAR_LATCHED))
    sim.run(3000)
    assert not active(sim, "reset_lockout") and sim.world.fets() == (True, True)


@pytest.mark.slow
def test_resets_far_apart_are_not_a_loop(tmp_path):
    from bms.boards import RESET_WDT

    sim = make(tmp_path)
    for k in range(6):
        sim.board.cause = (RESET_WDT, 0)
        sim._boot()
        sim.run(11 * 60 * 1000)  # up for 11 min each time: not a loop
    assert not active(sim, "reset_lockout") and sim.app.cycle.protection.resets == 0


# -- temperature ------------------------------------------------------------------

@pytest.mark.parametrize("name,temp_c,fet_off", [
    ("chg_ot", 50.0, "chg"), ("chg_ut", -5.0, "chg"), ("dsg_ot", 65.0, "both"), ("dsg_ut", -25.0, "both"),
])
def test_temperature_protections(tmp_path, name, temp_c, fet_off, afe):
    sim = make(tmp_path, soc_pct=50.0, afe=afe)
    sim.world.pack.temperatures_c[0] = temp_c
    check_trip(sim, name, 30000)
    chg, dsg = sim.world.fets()
    assert not chg  # too hot or cold to discharge is too hot or cold to charge too
    assert dsg == (fet_off == "chg")
    sim.world.pack.temperatures_c[0] = 25.0
    check_release(sim, name, 60000)
    sim.run(10000)
    assert sim.world.fets() == (True, True)


def test_a_reset_never_closes_the_charge_fet_into_a_hot_pack(tmp_path):
    # a pack too hot to charge, a charger on: after every MCU restart the
    # charge over-temperature holds at once (its trip delay skipped), so
    # CHG is never on, not even for the delay
    sim = make(tmp_path, soc_pct=50.0)
    sim.world.pack.temperatures_c[0] = 50.0
    sim.world.charger.set(5000, 3550)
    check_trip(sim, "chg_ot", 30000)
    chg_seen = []
    sim.on_cycle = lambda s: chg_seen.append(s.world.fets()[0])
    for restart in range(3):
        sim._boot()  # the MCU restarts (a crash, the watchdog, a command); the AFE keeps running
        sim.run(5000)
        assert active(sim, "chg_ot")
        sim.board.rtc = b""  # and once more without the kept record (lost, or torn): the first pass holds it
    assert chg_seen and not any(chg_seen), "CHG closed into the hot pack after a restart"
    assert sim.boots == 4


def _scd_trips(sim):
    """Count the chip's short-circuit trips (rising SCD flags) as the World runs."""
    chip = sim.world.chip
    trips = []
    last = [0]

    def watch(w):
        scd = chip.reg(SYS_STAT) & STAT_SCD
        if scd and not last[0]:
            trips.append(w.now_ms)
        last[0] = scd

    sim.board.on_advance = watch
    return trips


def test_a_latched_short_stays_latched_across_resets(tmp_path):
    sim = make(tmp_path, soc_pct=60.0)
    trips = _scd_trips(sim)
    sim.world.load.set(100000)  # a dead short
    retries = value(sim, P.P_SCD_RETRIES)
    sim.run((value(sim, P.P_SCD_RETRY_MS) << (retries + 1)) + 30000)
    assert sim.app.cycle.protection.latched() == 1 << BIT["afe_scd"]
    n = len(trips)
    assert n == retries + 1
    dsg_seen = []
    sim.on_cycle = lambda s: dsg_seen.append(s.world.fets()[1])
    for restart in range(4):
        sim._boot()
        sim.run(20000)
        assert sim.app.cycle.protection.latched() == 1 << BIT["afe_scd"], "the latch survived the reset"
    assert not any(dsg_seen) and len(trips) == n, "DSG closed into the short after a reset"


def test_a_crash_loop_never_closes_dsg_into_the_short_again(tmp_path):
    # the MCU resets every 3 s (a crash loop) while a short is there: the
    # trip is kept across the resets, so DSG is not closed into it again
    sim = make(tmp_path, soc_pct=60.0)
    trips = _scd_trips(sim)
    sim.world.load.set(100000)
    assert sim.run_until(lambda s: active(s, "afe_scd"), 5000) is not None
    dsg_seen = []
    sim.on_cycle = lambda s: dsg_seen.append(s.world.fets()[1])
    for boot in range(12):
        sim._boot()
        sim.run(3000)
        assert active(sim, "afe_scd")
    assert len(trips) == 1 and not any(dsg_seen), (trips, sum(dsg_seen))




def _hot_pack_charging(sim):
    sim.world.pack.temperatures_c[0] = 50.0
    sim.world.charger.set(5000, 3550)
    check_trip(sim, "chg_ot", 30000)
    return 0, "chg_ot"  # CHG must stay off


def _latched_short(sim):
    sim.world.load.set(100000)
    retries = value(sim, P.P_SCD_RETRIES)
    sim.run((value(sim, P.P_SCD_RETRY_MS) << (retries + 1)) + 30000)
    assert sim.app.cycle.protection.latched() == 1 << BIT["afe_scd"]
    return 1, "afe_scd"  # DSG must stay off


def _over_current(sim):
    # 1.5 times dsg_oc_ma, under the chip's own OCD: the firmware's row
    # trips, and would trip again after every boot that closed DSG
    sim.world.load.set(value(sim, P.P_DSG_OC_MA) * 3 // 2)
    check_trip(sim, "dsg_oc", 5000)
    return 1, "dsg_oc"


@pytest.mark.parametrize("fault", [_hot_pack_charging, _latched_short, _over_current],
                         ids=["hot pack, charger on", "latched short", "over-current"])
def test_unplanned_resets_never_reclose_the_fet_and_end_in_the_lockout(tmp_path, fault):
    """A fault that holds a FET off, then the MCU resets every 3 s (the
    watchdog, a crash): the FET is never on again, at any simulated
    millisecond, and the fifth reset in a row locks both FETs off."""
    from bms.boards import RESET_HARD, RESET_WDT

    sim = make(tmp_path, soc_pct=60.0)
    fet, row = fault(sim)
    seen = []
    sim.board.on_advance = lambda w: seen.append(w.fets()[fet])
    for k in range(5):
        sim.board.cause = (RESET_WDT if k % 2 else RESET_HARD, 0)
        sim._boot()
        sim.run(3000)
        assert active(sim, row), (k, row)
        assert active(sim, "reset_lockout") == (k == 4), k
    assert seen and not any(seen), "%s: the FET closed after a reset" % row
    assert sim.world.fets() == (False, False), "locked out: both off"
    assert sim.app.cycle.protection.resets == 5


def test_fet_over_temperature_uses_its_own_sensor(tmp_path):
    sim = make(tmp_path, cells=10, extra={"fet_temp_sensor": 2})
    sim.world.pack.temperatures_c[1] = 90.0
    check_trip(sim, "fet_ot", 30000)
    assert sim.world.fets() == (False, False)
    assert not active(sim, "chg_ot") and not active(sim, "dsg_ot"), "the FET sensor is not a cell sensor"
    sim.world.pack.temperatures_c[1] = 40.0
    check_release(sim, "fet_ot", 60000)


# -- warnings come first ---------------------------------------------------------------

def test_warnings_come_before_the_trips(tmp_path):
    sim = make(tmp_path, soc_pct=97.0, spread_mv=10)
    sim.world.charger.set(5000, None)
    check_trip(sim, "cell_ov_warn", 3600 * 1000)
    assert not active(sim, "cell_ov")
    assert sim.world.fets() == (True, True)
    check_trip(sim, "cell_ov", 3600 * 1000)


@pytest.mark.parametrize("name,setup", [
    ("chg_oc_warn", lambda w: w.charger.set(9000, None)),
    ("dsg_oc_warn", lambda w: w.load.set(9000)),
    ("temp_high_warn", lambda w: w.pack.temperatures_c.__setitem__(0, 42.0)),
    ("temp_low_warn", lambda w: w.pack.temperatures_c.__setitem__(0, 3.0)),
])
def test_warning_rows(tmp_path, name, setup):
    sim = make(tmp_path, soc_pct=40.0)
    setup(sim.world)
    check_trip(sim, name, 30000)
    assert sim.app.cycle.protection.protect_flags == 0


def test_spread_warning(tmp_path):
    # a spread there at boot: active from the first pass (a row that holds at
    # boot skips its trip delay), logged, the FETs left alone
    sim = make(tmp_path, soc_pct=50.0, chemistry="nmc", spread_mv=150)
    assert active(sim, "spread_warn") and sim.world.fets() == (True, True)
    assert reg_u32(sim, M.IR_WARN_FLAGS) & (1 << BIT["spread_warn"])
    assert EV_TRIP + ROW["spread_warn"] + 1 in [e[3] for e in _events(sim)]
    assert sim.trace[0][2] & (1 << ROW["spread_warn"]), "active at the first cycle"


# -- sensor and link faults --------------------------------------------------------------

def _fault_cycle(sim, name, inject, heal):
    inject(sim.world)
    check_trip(sim, name, 10000)
    assert sim.world.fets() == (False, False) or sim.app.cycle.meas.fets == 0
    heal(sim.world)
    check_release(sim, name, 30000)
    sim.run(2000)
    assert sim.world.fets() == (True, True), PR_names(sim.app.cycle.protection.protect_flags)


def test_thermistor_open_and_short(tmp_path, afe):
    sim = make(tmp_path, afe=afe)
    _fault_cycle(sim, "temp_sensor", lambda w: w.chip.thermistor_fault(0, "open"),
                 lambda w: w.chip.thermistor_fault(0, None))
    _fault_cycle(sim, "temp_sensor", lambda w: w.chip.thermistor_fault(0, "short"),
                 lambda w: w.chip.thermistor_fault(0, None))


def test_cell_wire_open(tmp_path):
    sim = make(tmp_path, chemistry="lto", soc_pct=50.0)
    _fault_cycle(sim, "cell_implausible", lambda w: w.chip.cell_wire_open(1, True),
                 lambda w: w.chip.cell_wire_open(1, False))


def test_afe_nack_storm(tmp_path):
    sim = make(tmp_path)
    sim.world.chip.nack_all = True
    check_trip(sim, "afe_comm", 10000, fets_reachable=False)
    # a chip that acknowledges nothing cannot be told anything: its own
    # protection is the backstop; the firmware keeps trying
    sim.run(5000)
    assert sim.app.cycle.afe.bus_errors > 0
    sim.world.chip.nack_all = False
    sim.run(CYCLE_MS * 2)
    assert sim.world.fets() == (False, False), "as soon as the chip answers: FETs off"
    check_release(sim, "afe_comm", 30000)
    sim.run(2000)
    assert sim.world.fets() == (True, True)


def test_afe_crc_storm(tmp_path, afe):
    sim = make(tmp_path, afe=afe)
    _fault_cycle(sim, "afe_comm", lambda w: setattr(w.chip, "corrupt_every", 1),
                 lambda w: setattr(w.chip, "corrupt_every", 0))
    assert sim.app.cycle.afe.crc_errors > 0


def test_afe_reset(tmp_path, afe):
    sim = make(tmp_path, afe=afe)
    sim.world.chip.power_on_reset()
    check_trip(sim, "afe_reset", 2000)
    check_release(sim, "afe_reset", 30000)
    sim.run(2000)
    assert sim.world.fets() == (True, True)
    assert afe.configured(sim.world.chip), "the firmware configured the chip again"


def test_afe_adc_switched_off_counts_as_a_reset(tmp_path):
    # a glitch clears ADC_EN: the chip still answers, with cell voltages that
    # no longer change; the firmware must not trust them
    sim = make(tmp_path)
    chip = sim.world.chip
    chip._regs[SYS_CTRL1] &= ~CTRL1_ADC_EN & 0xFF
    check_trip(sim, "afe_reset", 2000)
    check_release(sim, "afe_reset", 30000)
    assert chip.reg(SYS_CTRL1) & CTRL1_ADC_EN, "the firmware configured the chip again"
    sim.run(2000)
    assert sim.world.fets() == (True, True)


def test_unconfigured_bms_keeps_fets_off(tmp_path):
    world = World(cells=4)
    sim = DirectSim(world, str(tmp_path))
    sim.run(5000)
    assert active(sim, "unconfigured")
    assert world.fets() == (False, False)
    assert sim.app.ir.words[M.IR_CHG_OFF_REASON] == ROW["unconfigured"] + 1


def test_event_log_survives_a_restart(tmp_path):
    sim = make(tmp_path, soc_pct=97.0, spread_mv=10)
    sim.world.charger.set(5000, None)
    check_trip(sim, "cell_ov", 3600 * 1000)
    before = _events(sim)
    again = DirectSim(sim.world, str(tmp_path))
    after = [again.app.log.newest(i) for i in range(M.EVENT_WINDOW) if again.app.log.newest(i)]
    # the new boot logs its start, reset cause, AFE bring-up and mode, then the old records follow
    assert [r[3] for r in after[:4]] == [EV_MODE, EV_AFE_UP, EV_RESET, EV_BOOT]
    assert after[3][1] == before[0][1] + 1, "boot number counts up"
    assert after[4:] == before[:len(after) - 4]
    assert any(r[3] == EV_TRIP + ROW["cell_ov"] + 1 for r in after)


def test_bmsctl_shows_the_factory_state_plainly(tmp_path):
    from bms.spec import paramtable as PT
    from bmsctl import fmt
    from bmsctl import regs as RG

    sim = DirectSim(World(cells=4), str(tmp_path))
    sim.run(3000)
    st = {"input": RG.decode(RT.INPUT_REGS, list(sim.app.ir.words)),
          "holding": RG.decode(PT.TABLE, list(sim.app.hr.words))}
    text = fmt.format_status(fmt.status_dict(st), "sim")
    assert "charge off (unconfigured), discharge off (unconfigured)" in text
    assert "no pack configuration stored" in text and "not estimated yet" in text


def test_the_bq76952_backstop_follows_the_firmwares_limits_and_acts_when_the_mcu_hangs(tmp_path):
    """The chip's charge over-current and temperature protection come from
    the firmware's own limits, outside them (OCC at 1.5x chg_oc_ma, the
    temperatures 10 degC beyond): the firmware acts first; with the MCU
    hung, the chip alone switches the FET off."""
    from bms.afe.bq76952 import regs as R952

    sim = make(tmp_path, afe=AFES[1])
    v = sim.app.values
    chip = sim.world.chip
    a = sim.app.cycle.afe
    assert (a.applied_otc_c, a.applied_otd_c) == (v[P.P_CHG_OT_DC] // 10 + 10, v[P.P_DSG_OT_DC] // 10 + 10)
    assert (a.applied_utc_c, a.applied_utd_c) == (v[P.P_CHG_UT_DC] // 10 - 10, v[P.P_DSG_UT_DC] // 10 - 10)
    assert R952.i1(chip.dm(R952.DM_OTC_THRESHOLD, 1)) == a.applied_otc_c
    assert chip.dm(R952.DM_PROT_ENABLED_A, 1) & R952.SA_OCC
    assert v[P.P_CHG_OC_MA] < a.applied_occ_ma <= v[P.P_CHG_OC_MA] * 3 // 2
    # the MCU hangs (the firmware runs no more); the pack heats past the chip's OTC
    sim.world.pack.temperatures_c[0] = a.applied_otc_c + 1.0
    sim.world.advance(5000)
    assert chip.reg(R952.CMD_SAFETY_STATUS_B) & R952.SB_OTC
    assert sim.world.fets() == (False, True), "the chip's OTC: CHG off, DSG on"


@pytest.mark.parametrize("afe", AFES)
def test_the_backstop_the_chip_applied_is_in_the_input_registers(tmp_path, afe):
    """hw_occ_applied_ma and the four temperature limits read back what the
    chip holds; a chip without those comparators (the bq769x0) says none,
    and bmsctl shows None."""
    from bms.spec import paramtable as PT
    from bmsctl import fmt
    from bmsctl import regs as RG

    sim = make(tmp_path, afe=afe)
    a = sim.app.cycle.afe
    raw = RG.decode(RT.INPUT_REGS, list(sim.app.ir.words))
    hw = fmt.status_dict({"input": raw, "holding": RG.decode(PT.TABLE, list(sim.app.hr.words))})["hardware_protection"]
    temps = ("hw_otc_applied_dc", "hw_otd_applied_dc", "hw_utc_applied_dc", "hw_utd_applied_dc")
    assert tuple(hw) == fmt.HW_KEYS  # the dashboard's MQTT state names the same keys
    if afe == AFES[0]:
        assert raw["hw_occ_applied_ma"] == 0 and [raw[k] for k in temps] == [M.HW_TEMP_NONE] * 4
        assert [hw[k] for k in ("occ_a", "occ_delay_s", "otc_c", "otd_c", "utc_c", "utd_c")] == [None] * 6
        return
    v = sim.app.values
    assert raw["hw_occ_applied_ma"] == a.applied_occ_ma > v[P.P_CHG_OC_MA]
    assert raw["hw_occ_applied_delay_ms"] == a.applied_occ_delay_ms > 0
    assert [raw[k] for k in temps] == [10 * a.applied_otc_c, 10 * a.applied_otd_c,
                                       10 * a.applied_utc_c, 10 * a.applied_utd_c]
    assert hw["otc_c"] == a.applied_otc_c > v[P.P_CHG_OT_DC] / 10 and hw["utd_c"] == a.applied_utd_c < 0
    assert hw["occ_a"] == a.applied_occ_ma / 1000

