"""Lifetime counters: charge throughput without drift, extremes, the record."""
from hypothesis import given
from hypothesis import strategies as st

from bms.lifetime import LIFE_SIZE, Lifetime


def test_charge_and_discharge_in_whole_mah_without_drift():
    life = Lifetime()
    # 1 A for one hour in 250 ms windows: exactly 1000 mAh
    for _ in range(4 * 3600):
        life.update(250, 1000, True, 3300, 3310, 200, 210)
    assert life.chg_mah == 1000 and life.dsg_mah == 0 and life.on_s == 3600
    for _ in range(4 * 1800):
        life.update(250, -2000, True, 3300, 3310, 200, 210)
    assert life.dsg_mah == 1000
    # no fresh coulomb-counter window: nothing counted
    life.update(250, 5000, False, 3300, 3310, 200, 210)
    assert life.chg_mah == 1000


def test_extremes_and_unknown_temperatures():
    life = Lifetime()
    life.update(250, 0, True, 3100, 3500, 0x7FFF, -32768)  # no sensor (as the app passes it)
    life.update(250, 0, True, 0, 3400, 150, 300)  # no cells read: min stays
    assert (life.cell_min_mv, life.cell_max_mv) == (3100, 3500)
    assert (life.temp_min_dc, life.temp_max_dc) == (150, 300)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 65535), st.integers(0, 65535), st.integers(-32768, 32766),
       st.integers(-32768, 32766), st.integers(0, 65535))
def test_record_round_trip(chg, dsg, on_s, cmax, cmin, tmax, tmin, trips):
    a = Lifetime()
    a.chg_mah, a.dsg_mah, a.on_s, a.cell_max_mv, a.cell_min_mv = chg, dsg, on_s, cmax, cmin
    a.temp_max_dc, a.temp_min_dc, a.trips = tmax, tmin, trips
    rec = a.encode()
    assert len(rec) == LIFE_SIZE
    b = Lifetime()
    assert b.decode(rec)
    assert b.encode() == rec
    assert not Lifetime().decode(rec[:10])
