"""Wrap-safe ticks and the stored parameters."""
from hypothesis import given
from hypothesis import strategies as st

from bms.spec import paramtable as PT
from bms import params as P
from bms import paramload as PL
from bms.ticks import TICKS_PERIOD, ticks_add, ticks_diff


@given(start=st.integers(0, TICKS_PERIOD - 1), delta=st.integers(-(TICKS_PERIOD // 2) + 1, TICKS_PERIOD // 2 - 1))
def test_ticks_diff_inverts_ticks_add_across_the_wrap(start, delta):
    end = ticks_add(start, delta)
    assert 0 <= end < TICKS_PERIOD
    assert ticks_diff(end, start) == delta


def test_ticks_wrap_example():
    assert ticks_diff(5, TICKS_PERIOD - 5) == 10
    assert ticks_diff(TICKS_PERIOD - 5, 5) == -10


def test_table_rows_are_consistent():
    assert len(PT.TABLE) == P.COUNT
    for row in PT.TABLE:
        lo, hi = row[6], row[7]
        assert lo <= hi, row[1]
        for d in row[8:11]:
            if row[11] == 0:
                assert lo <= d <= hi, (row[1], d)


def test_chemistry_defaults_scale_to_the_pack():
    p = P.Params()
    PL.load_text(p, "chemistry=nmc\ncells=13\ncapacity_mah=50000\n")
    v = p.values
    assert p.errors == [] and p.configured() and p.cells() == 13
    assert v[P.P_CELL_OV_MV] == 4250 and v[P.P_PACK_OV_MV] == 13 * 4225
    assert v[P.P_CHG_OC_MA] == 50000 and v[P.P_HW_SCD_MA] == 200000


def test_parameters_round_trip_through_their_text():
    p = P.Params()
    PL.load_text(p, "chemistry=lfp\ncells=4\ncapacity_mah=10000\ncell_ov_mv=3600\nbal_diff_mv=15\n")
    q = P.Params()
    PL.load_text(q, PL.to_text(p))
    assert q.errors == [] and list(q.values) == list(p.values)


def test_parameter_errors_name_the_problem_and_the_range():
    p = P.Params()
    assert "lfp, nmc, lto" in PL.set_text(p, "chemistry", "lead")
    assert "3-16" in PL.set_text(p, "cells", "20")  # the bq76952 takes 16
    assert "whole number" in PL.set_text(p, "capacity_mah", "ten")
    err = PL.set_text(p, "cell_ov_mv", "9999")
    assert "cell_ov_mv=9999" in err and "1500..5000 mv" in err
    assert p.values[P.P_CELL_OV_MV] == 3650, "a rejected value changes nothing"
    PL.load_text(p, "capacity_mah=ten\nfoo=1\n")
    assert len(p.errors) == 2 and not p.configured()


def test_no_file_means_unconfigured(tmp_path):
    p = PL.load(str(tmp_path) + "/")
    assert not p.configured() and p.values[P.P_CELL_CHANNELS] == 0


def test_index_constants_name_their_rows():
    import bms.params as mod

    for name in dir(mod):
        if name.startswith("P_"):
            i = getattr(mod, name)
            assert PT.TABLE[i][1] == name[2:].lower(), (name, PT.TABLE[i][1])


def test_release_keeps_what_the_firmware_needs():
    p = P.Params()
    PL.load_text(p, "chemistry=lfp\ncells=4\ncapacity_mah=10000\n")
    p.release()
    assert PL.check(p, P.P_CELL_OV_MV, 9999) and PL.check(p, P.P_CELL_OV_MV, 3600) is None
    assert p.addr[P.P_CELL_OV_MV] == 0x0010 and p.flags[P.P_CAPACITY_MAH] & P.WIDE


def test_every_timer_parameter_fits_the_ticks_range():
    # ticks_diff is right up to 2**29 ms; the firmware's timers stay under TICKS_LIMIT (2**28)
    from bms.ticks import TICKS_LIMIT

    for row in PT.TABLE:
        if row[1].endswith("_ms"):
            assert row[7] <= TICKS_LIMIT, row[1]
        if row[1].endswith("_s"):
            assert row[7] * 1000 <= TICKS_LIMIT, row[1]


@given(st.integers(0, TICKS_PERIOD - 1), st.integers(0, 40 * 86400000), st.integers(0, 2**28))
def test_held_since_keeps_an_old_start_due_forever(now, age, limit):
    # a start age ms ago (maybe weeks, when a tick difference has wrapped many times),
    # refreshed as held_since does every cycle, still measures at least limit once age does
    from bms.ticks import held_since

    since = held_since(now, ticks_add(now, -min(age, 2**29 - 1)), limit)
    d = ticks_diff(now, since)
    assert 0 <= d <= max(limit, 0)
    assert (d >= limit) == (min(age, 2**29 - 1) >= limit)


def test_a_long_back_off_still_releases():
    # scd_retry_ms at its 600 s maximum and 10 retries: the doubling back-off
    # (600 s << 9 = 3.6 days) is held to TICKS_LIMIT, like every other timer
    from bms import protection as PR
    from bms.params import P_SCD_RETRIES, P_SCD_RETRY_MS, Params
    from bms.ticks import TICKS_LIMIT

    prm = Params()
    v = prm.values
    v[P_SCD_RETRY_MS] = 600000
    v[P_SCD_RETRIES] = 10
    pr = PR.Protection(v)
    from bms.spec import protrules

    row = protrules.bit_of()["afe_scd"]
    now = 0
    step = 60000
    for k in range(10):
        pr.q[PR.Q_AFE_SCD] = 1
        pr.evaluate(now)
        assert pr.protect_flags & (1 << row)
        pr.q[PR.Q_AFE_SCD] = 0
        start = now
        while pr.protect_flags & (1 << row):
            now = ticks_add(now, step)
            pr.evaluate(now)
            assert ticks_diff(now, start) <= TICKS_LIMIT + 2 * step, "retry %d: back-off past the limit" % k
