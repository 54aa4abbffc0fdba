"""The SOC window's and storage's rows in the protection engine, and the
flags words they share with every other row (one bit per row of a level)."""
from array import array

import pytest

from bms.gen import packed
from bms import protection as PR
from bms.spec import protrules
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.world import World
from bms.events import EV_RELEASE, EV_TRIP

ROW = {r[0]: i for i, r in enumerate(protrules.ROWS)}
BIT = protrules.bit_of()


class Log:
    def __init__(self):
        self.codes = []

    def append(self, code, value, time_s):
        self.codes.append((code, value))


def engine(**settings):
    from bms_sim.replay import settings as defaults

    v = array("i", defaults(4, "lfp", 10000, sets=["%s=%s" % kv for kv in settings.items()]))
    log = Log()
    pr = PR.Protection(v, log)
    pr.q[PR.Q_CELL_MIN_MV] = 3300
    pr.q[PR.Q_CELL_MAX_MV] = 3300
    pr.q[PR.Q_PACK_MV] = 13200
    pr.q[PR.Q_TEMP_MAX_DC] = pr.q[PR.Q_TEMP_MIN_DC] = 250
    pr.q[PR.Q_FET_TEMP_DC] = -32768
    for q in (PR.Q_SOC_HIGH_DPCT, PR.Q_STORE_HIGH_DPCT):
        pr.q[q] = 0
    for q in (PR.Q_SOC_LOW_DPCT, PR.Q_STORE_LOW_DPCT):
        pr.q[q] = 1000
    return pr, log


def soc(pr, dpct, storage=False):
    """The quantities as bms.app fills them from an SOC estimate."""
    pr.set_soc(dpct, storage)


def test_flags_words_hold_a_bit_per_row_of_their_level():
    for level in (PR.PROT, PR.WARN):
        rows = protrules.level_rows(level)
        assert [BIT[r[0]] for r in rows] == list(range(len(rows)))
        assert len(rows) <= 29, "1 << rows must stay a small int on the ESP32"
    assert protrules.row_bits(1 << BIT["soc_high"], 1 << BIT["soc_low_warn"]) == \
        (1 << ROW["soc_high"]) | (1 << ROW["soc_low_warn"])
    assert protrules.names(packed.SOC_WINDOW_ROWS) == ["soc_high", "soc_low", "storage_high", "storage_low"]
    assert protrules.names(0, packed.SOC_WINDOW_WARN_ROWS) == ["soc_low_warn"]


def test_off_by_default_even_at_full_and_empty():
    pr, log = engine()
    for dpct in (1000, 999, 500, 1, 0):
        soc(pr, dpct)
        pr.evaluate(0)
        assert pr.protect_flags == 0 and pr.warn_flags == 0, dpct
    assert not log.codes


def test_the_window_stops_one_direction_with_hysteresis():
    pr, log = engine(soc_max_dpct=800, soc_min_dpct=200, soc_warn_low_dpct=250, soc_hyst_dpct=50)
    soc(pr, 799)
    pr.evaluate(0)
    assert pr.block == 0
    soc(pr, 800)
    pr.evaluate(250)
    assert pr.block == PR.CHG and pr.chg_reason == ROW["soc_high"] + 1
    assert pr.protect_flags == 1 << BIT["soc_high"]
    assert (EV_TRIP + ROW["soc_high"] + 1, 800) in log.codes
    soc(pr, 751)
    pr.evaluate(500)
    assert pr.block == PR.CHG, "inside the hysteresis: still stopped"
    soc(pr, 749)
    pr.evaluate(750)
    assert pr.block == 0 and (EV_RELEASE + ROW["soc_high"] + 1, 749) in log.codes
    soc(pr, 250)
    pr.evaluate(1000)
    pr.evaluate(2500)  # the warning's delay (warn_delay_ms)
    assert pr.warn_flags == 1 << BIT["soc_low_warn"] and pr.block == 0
    soc(pr, 200)
    pr.evaluate(2750)
    assert pr.block == PR.DSG and pr.dsg_reason == ROW["soc_low"] + 1


@pytest.mark.parametrize("dpct, held", [(950, PR.CHG), (100, PR.DSG), (500, PR.BOTH)])
def test_storage_holds_towards_its_target(dpct, held):
    pr, _ = engine(storage_soc_dpct=500)
    soc(pr, dpct, storage=False)
    pr.evaluate(0)
    assert pr.block == 0, "storage off: the rows hold nothing"
    soc(pr, dpct, storage=True)
    pr.evaluate(250)
    assert pr.block == held
    both = packed.STORAGE_HIGH_ROW | packed.STORAGE_LOW_ROW
    assert (pr.protect_flags & both == both) == (held == PR.BOTH)


def test_the_storage_rest_survives_a_reset():
    pr, _ = engine(storage_soc_dpct=500)
    soc(pr, 500, storage=True)
    pr.evaluate(0)
    pr.asleep_s = 123456789
    kept = bytes(pr.kept())
    again, _ = engine(storage_soc_dpct=500)
    assert again.restore(kept, 0)
    assert again.asleep_s == 123456789
    again.set_soc(PR.UNKNOWN, True)  # the boot's first cycles: no SOC estimate yet
    again.evaluate(250, True)
    again.evaluate(500)
    assert again.block == PR.BOTH, "the kept rows hold until the SOC says otherwise"
    soc(again, 600, storage=True)
    again.evaluate(750)
    assert again.block == PR.CHG


def test_soc_window_in_the_loop_with_the_body_diode(tmp_path):
    """A pack stopped at soc_max still powers its load through both FETs
    (the body-diode rule), and the stop shows in the registers."""
    from bms import regmap as M

    provision(str(tmp_path), 4, "lfp", 2000, 1000, extra={"soc_max_dpct": 600, "lp_idle_ms": 0})
    world = World(cells=4, chemistry="lfp", capacity_mah=2000, soc_pct=50.0, seed=2)
    sim = DirectSim(world, str(tmp_path))
    sim.run(2000)
    world.charger.set(1800)  # under chg_oc (1C)
    assert sim.run_until(lambda s: not s.world.fets()[0], 3600 * 1000) is not None
    st = sim.app.ir.words[M.IR_SOC_STATE]
    assert st & M.SOC_CHG_STOP and abs(sim.app.cycle.soc.soc_dpct - 600) <= 2
    world.charger.off()
    world.load.set(1800)
    sim.run(3000)
    assert world.fets() == (True, True) and sim.app.ir.words[M.IR_FET_FLAGS] & M.FET_DIODE
    assert sim.app.cycle.protection.block == PR.CHG, "charge is still stopped"
