"""Wrap-safe ticks and the stored configuration."""
from hypothesis import given
from hypothesis import strategies as st

from bms import config as C
from bms.ticks import TICKS_PERIOD, ticks_add, ticks_diff


@given(start=st.integers(0, TICKS_PERIOD - 1), delta=st.integers(-(TICKS_PERIOD // 2) + 1, TICKS_PERIOD // 2 - 1))
def test_ticks_diff_inverts_ticks_add_across_the_wrap(start, delta):
    end = ticks_add(start, delta)
    assert 0 <= end < TICKS_PERIOD
    assert ticks_diff(end, start) == delta


def test_ticks_wrap_example():
    assert ticks_diff(5, TICKS_PERIOD - 5) == 10
    assert ticks_diff(TICKS_PERIOD - 5, 5) == -10


def test_config_round_trips_through_its_text():
    c = C.Config()
    assert c.set("chemistry", "nmc") is None and c.set("cells", "13") is None
    c.capacity_mah = 50000
    c.shunt_uohm = 250
    d = C.Config()
    d.load_text(c.to_text())
    assert d.errors == []
    assert (d.chemistry, d.cell_channels, d.afe_groups, d.capacity_mah, d.shunt_uohm) == \
        (C.CHEM_NMC, c.cell_channels, 3, 50000, 250)
    assert d.cells() == 13 and d.configured()


def test_config_errors_name_the_problem():
    c = C.Config()
    assert "lfp, nmc, lto" in c.set("chemistry", "lead")
    assert "3-15" in c.set("cells", "20")
    assert "whole number" in c.set("capacity_mah", "ten")
    c.load_text("capacity_mah=ten\nfoo=1\n")
    assert len(c.errors) == 2 and not c.configured()


def test_no_file_means_unconfigured(tmp_path):
    c = C.load(str(tmp_path) + "/")
    assert not c.configured() and c.cell_channels == 0
