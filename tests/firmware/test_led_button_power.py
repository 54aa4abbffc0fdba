"""The LED bar patterns (table-driven), the button's debouncing, and the
power-mode rules, all pure: no board needed."""
import pytest

from bms import button as B
from bms import led as L
from bms import power as PW
from bms.boards import IN_ACC, IN_CHARGER

W, LP, SL = L.MODE_WORKING, L.MODE_LOW_POWER, L.MODE_SLEEP


def bar(n, t, mode=W, configured=True, blink=0, soc=500, charging=False, discharging=False, show=False):
    out = bytearray(n)
    L.render(out, n, t, mode, configured, blink, soc, charging, discharging, show)
    return "".join("#" if x else "." for x in out)


# (description, n, t_ms, kwargs, expected)
CASES = [
    ("sleep: all off, even charging", 5, 0, dict(mode=SL, charging=True), "....."),
    ("unconfigured: first LED", 5, 0, dict(configured=False), "#...."),
    ("unconfigured: then the last", 5, 500, dict(configured=False), "....#"),
    ("unconfigured beats a fault", 4, 600, dict(configured=False, blink=3), "...#"),
    ("idle at rest: off", 5, 0, dict(), "....."),
    ("low power at rest: off", 5, 0, dict(mode=LP), "....."),
    ("low power with a trickle of charge: off", 5, 0, dict(mode=LP, charging=True, soc=500), "....."),
    ("low power with a trickle of load: off", 5, 0, dict(mode=LP, discharging=True, soc=500), "....."),
    ("discharging 50 %: 3 of 5", 5, 0, dict(discharging=True, soc=500), "###.."),
    ("discharging 100 %: all", 5, 0, dict(discharging=True, soc=1000), "#####"),
    ("discharging 81 %: 5 of 5", 5, 0, dict(discharging=True, soc=810), "#####"),
    ("discharging 80 %: 4 of 5", 5, 0, dict(discharging=True, soc=800), "####."),
    ("discharging 20 %: 1 of 5", 5, 0, dict(discharging=True, soc=200), "#...."),
    ("discharging 25 %: 2 of 4", 4, 0, dict(discharging=True, soc=251), "##.."),
    ("low SOC: LED 1 on...", 5, 0, dict(discharging=True, soc=80), "#...."),
    ("...and off: it blinks", 5, 250, dict(discharging=True, soc=80), "....."),
    ("button shows SOC at rest", 5, 0, dict(show=True, soc=700), "####."),
    ("button shows SOC in low power", 4, 0, dict(mode=LP, show=True, soc=1000), "####"),
    ("charging 50 %: run step 0", 5, 0, dict(charging=True, soc=500), "##..."),
    ("charging 50 %: run step 1", 5, 300, dict(charging=True, soc=500), "###.."),
    ("charging 50 %: run step 3", 5, 900, dict(charging=True, soc=500), "#####"),
    ("charging 50 %: run wraps", 5, 1200, dict(charging=True, soc=500), "##..."),
    ("charging full: top LED blinks", 5, 0, dict(charging=True, soc=1000), "####."),
    ("charging full: ...on", 5, 300, dict(charging=True, soc=1000), "#####"),
    ("charging empty: runs from the bottom", 4, 300, dict(charging=True, soc=0), "#..."),
    ("fault code 2: first flash", 5, 0, dict(blink=2, discharging=True), "#...."),
    ("fault code 2: between flashes", 5, 250, dict(blink=2, discharging=True), "....."),
    ("fault code 2: second flash", 5, 500, dict(blink=2, discharging=True), "#...."),
    ("fault code 2: pause", 5, 1100, dict(blink=2), "....."),
    ("fault code 2: again after 2.5 s", 5, 2500, dict(blink=2), "#...."),
    ("fault: the button shows SOC", 5, 250, dict(blink=2, show=True, soc=1000), "#####"),
    ("no LEDs fitted", 0, 0, dict(discharging=True), ""),
]


@pytest.mark.parametrize("what,n,t,kw,want", CASES, ids=[c[0] for c in CASES])
def test_led_patterns(what, n, t, kw, want):
    assert bar(n, t, **kw) == want


@pytest.mark.parametrize("soc,n,want", [(0, 5, 0), (1, 5, 1), (200, 5, 1), (201, 5, 2), (999, 5, 5),
                                       (1000, 4, 4), (1200, 4, 4), (250, 4, 1), (251, 4, 2)])
def test_soc_level(soc, n, want):
    assert L.soc_level(soc, n) == want


def test_blink_code_flash_count_over_one_period():
    for code in range(1, 7):
        period = code * 500 + 1500
        edges = 0
        prev = "."
        for t in range(0, period, 10):
            cur = bar(5, t, blink=code)[0]
            edges += cur == "#" and prev == "."
            prev = cur
        assert edges == code


# -- button ----------------------------------------------------------------------

def press(b, t0, held_ms, step=10):
    events = []
    t = t0
    while t < t0 + held_ms:
        events.append(b.update(True, t))
        t += step
    for _ in range(10):
        events.append(b.update(False, t))
        t += step
    return [e for e in events if e], t


def test_short_press():
    b = B.Button(long_ms=3000)
    ev, _ = press(b, 0, 300)
    assert ev == [B.SHORT]


def test_long_press_fires_once_while_held():
    b = B.Button(long_ms=3000)
    ev, _ = press(b, 0, 5000)
    assert ev == [B.LONG]


def test_bounce_is_ignored():
    b = B.Button()
    t = 0
    for k in range(20):  # contact bounce: 5 ms pulses
        assert b.update(k % 2 == 0, t) == B.NO_PRESS
        t += 5
    assert not b.pressed


def test_button_across_the_tick_wrap():
    b = B.Button(long_ms=3000)
    ev, _ = press(b, (1 << 30) - 100, 400)
    assert ev == [B.SHORT]


# -- power modes -------------------------------------------------------------------

ARGS = dict(v_idle_ma=100, v_idle_ms=60000, v_sleep_uv_ms=30000)


def run(p, t0, t1, step=250, **kw):
    k = dict(current_ma=0, trouble=0, uv=False, inputs=0, comm_at=-10 ** 6, long_press=False)
    k.update(kw)
    t = t0
    while t <= t1:
        m = p.working(t, k["current_ma"], k["trouble"], k["uv"], k["inputs"], k["comm_at"],
                      k["long_press"], **ARGS)
        if m[0] != PW.WORKING:
            return m, t
        t += step
    return (PW.WORKING, 0), t


def test_idle_leads_to_low_power_after_the_idle_time():
    p = PW.Power(0)
    (mode, cause), t = run(p, 0, 120000)
    assert (mode, cause) == (PW.LOW_POWER, PW.CAUSE_IDLE) and t == 60000


@pytest.mark.parametrize("kw", [dict(current_ma=150), dict(current_ma=-150), dict(trouble=1),
                                dict(inputs=IN_CHARGER), dict(inputs=IN_ACC), dict(comm_at=100000)])
def test_anything_going_on_keeps_it_working(kw):
    p = PW.Power(0)
    (mode, _), _ = run(p, 0, 120000, **kw)
    assert mode == PW.WORKING


def test_under_voltage_held_sends_it_to_sleep_unless_charging():
    p = PW.Power(0)
    (mode, cause), t = run(p, 0, 100000, uv=True, trouble=1)
    assert (mode, cause) == (PW.SLEEP, PW.CAUSE_UNDER_VOLTAGE) and 30000 <= t <= 30250
    p = PW.Power(0)
    (mode, _), _ = run(p, 0, 100000, uv=True, trouble=1, inputs=IN_CHARGER)
    assert mode == PW.WORKING


def test_long_press_sleeps_at_once():
    p = PW.Power(0)
    assert run(p, 0, 1000, long_press=True)[0] == (PW.SLEEP, PW.CAUSE_LONG_PRESS)


def test_idle_time_zero_never_goes_low_power():
    p = PW.Power(0)
    m = p.working(10 ** 6, 0, 0, False, 0, -10 ** 6, False, v_idle_ma=100, v_idle_ms=0, v_sleep_uv_ms=0)
    assert m == (PW.WORKING, 0)


@pytest.mark.parametrize("kw,want", [(dict(), False), (dict(attention=True), True),
                                     (dict(inputs=IN_CHARGER), True), (dict(current_ma=-500), True)])
def test_low_power_check(kw, want):
    k = dict(current_ma=0, attention=False, inputs=0)
    k.update(kw)
    assert PW.Power(0).check(k["current_ma"], k["attention"], k["inputs"], 100) is want
