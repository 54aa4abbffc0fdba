"""The BMS board's own supply current drains the simulated pack (from the
pack's top, never through the shunt), a shipped month of deep sleep runs in
seconds, and the board's RTC (clock_s) runs through deep sleep and resets.

The figures are the reference board's (bms.boards DRAW_*_UA): SimServer
and DirectBoard set world.bms_ma from them, the World takes it from the
cells and counts it in bms_mas."""
import time

import pytest
from bms.boards import (DRAW_AFE_SHIP_UA, DRAW_AFE_UA, DRAW_AWAKE_UA, DRAW_DEEP_SLEEP_UA, IN_ACC, IN_BUTTON,
                        RESET_DEEPSLEEP, RESET_SOFT, WAKE_ACC)
from bms.afe.bq769x0.regs import CC_HI, CC_NV_PER_LSB, CTRL2_CC_EN, CTRL2_CHG_ON, CTRL2_DSG_ON, SYS_CTRL2
from bms_sim.boardmodel import CLOCK_EPOCH_S
from bms_sim.cli import provision
from bms_sim.direct import DirectSim
from bms_sim.power import MA_AFE_NORMAL, MA_AFE_SHIP, MA_AWAKE, MA_DEEP_SLEEP, MA_LIGHT_SLEEP, MA_NETWORK
from bms_sim.server import SimServer
from bms_sim.world import World
from test_sim_chip import wr
from test_sim_power import HEAD, wait_log

MONTH_MS = 30 * 86400 * 1000


def no_self_discharge(world):
    """The cells lose only what flows: the board's draw is then all of it."""
    for c in world.pack.cells:
        c.self_discharge_pct_per_month = 0.0
    return world


def charge_mas(world):
    """Each cell's charge now, mA s."""
    return [c.soc * c.capacity_mah * 3600.0 for c in world.pack.cells]


def lost_mas(before, world):
    return [b - a for b, a in zip(before, charge_mas(world))]


def cc_ma(world):
    """The chip's last coulomb-counter reading as a current, mA."""
    raw = (world.chip.reg(CC_HI) << 8) | world.chip.reg(CC_HI + 1)
    raw -= 0x10000 if raw & 0x8000 else 0
    return raw * CC_NV_PER_LSB / world.chip.shunt_uohm


def test_the_figures_have_one_source():
    assert MA_AWAKE == DRAW_AWAKE_UA / 1000.0 == 40.0
    assert MA_NETWORK == 80.0 and MA_LIGHT_SLEEP == 0.8
    assert MA_DEEP_SLEEP == DRAW_DEEP_SLEEP_UA / 1000.0 == 0.01
    assert MA_AFE_NORMAL == DRAW_AFE_UA / 1000.0 == 0.04
    assert MA_AFE_SHIP == DRAW_AFE_SHIP_UA / 1000.0 == 0.001


def test_the_world_drains_the_board_draw_outside_the_shunt():
    w = no_self_discharge(World(cells=4, cc_offset_lsb=0))
    wr(w.chip, SYS_CTRL2, CTRL2_CC_EN | CTRL2_CHG_ON | CTRL2_DSG_ON)
    w.load.set(2000)
    w.bms_ma = 40.04
    before = charge_mas(w)
    w.advance(600 * 1000)
    assert w.bms_mas == pytest.approx(40.04 * 600)
    for lost in lost_mas(before, w):
        assert lost == pytest.approx((2000 + 40.04) * 600, rel=1e-9)
    # the shunt carries the load only: 2000 mA, not 2040 (one LSB is 8.44 mA here)
    assert cc_ma(w) == pytest.approx(-2000, abs=CC_NV_PER_LSB / 1000.0)
    # bms_draw=False: a pack whose board draw is already in its recorded current
    w2 = no_self_discharge(World(cells=4, bms_draw=False))
    w2.bms_ma = 40.0
    before = charge_mas(w2)
    w2.advance(60 * 1000)
    assert lost_mas(before, w2) == [0.0] * 4 and w2.bms_mas == 0.0


def test_a_shipped_world_takes_long_pieces_on_the_window_grid():
    w = no_self_discharge(World(cells=4))
    w.advance(100)
    w.chip._enter_ship()
    w.bms_ma = 0.011
    before = charge_mas(w)
    t0 = time.process_time()
    w.advance(MONTH_MS + 50)
    assert time.process_time() - t0 < 0.1, "one piece, not ten million"
    assert w.now_ms == MONTH_MS + 150 and w.chip.now_ms == w.now_ms
    # the long piece ended on a window; the 150 ms after it are a piece of their own
    assert w.piece_ms == 150
    # up to the limit, on the grid: 100 ms to the next window, then whole ones
    assert w.quiet_ms(60000) == 59850 and w.quiet_ms(300) == 100
    w.advance(100)
    assert w.quiet_ms(60000) == 60000 and w.quiet_ms(1000) == 1000 and w.quiet_ms(300) == 250
    for lost in lost_mas(before, w):
        assert lost == pytest.approx(w.bms_mas, rel=1e-9)
    assert w.bms_mas == pytest.approx(0.011 * (MONTH_MS + 150) / 1000.0)
    # awake again, the chip's windows come back at 250 ms
    w.chip.boot()
    assert w.quiet_ms(60000) == 250
    w.advance(1000)
    assert w.piece_ms == 250


# -- DirectSim ---------------------------------------------------------------

def direct(tmp_path, **kw):
    provision(str(tmp_path), 4, "lfp", 10000, 1000)
    world = no_self_discharge(World(cells=4, chemistry="lfp", capacity_mah=10000, soc_pct=60.0, seed=4,
                                    cc_offset_lsb=0, **kw))
    return DirectSim(world, str(tmp_path))


def long_press(sim):
    sim.board.input_bits |= IN_BUTTON
    sim.run(3500)
    sim.board.input_bits &= ~IN_BUTTON


def test_direct_sim_drains_its_board_draw(tmp_path):
    sim = direct(tmp_path)
    w = sim.world
    sim.run(2000)
    before = charge_mas(w)
    mas0 = w.bms_mas
    t0 = w.now_ms
    sim.run(600 * 1000)
    s = (w.now_ms - t0) / 1000.0
    drawn = w.bms_mas - mas0
    awake_ma = MA_AWAKE + MA_AFE_NORMAL + (MA_NETWORK if sim.board.network_on else 0.0)
    assert drawn == pytest.approx(awake_ma * s, rel=1e-6)
    for lost in lost_mas(before, w):
        assert lost == pytest.approx(drawn, rel=1e-3)
    # no current through the shunt: the coulomb counter sees none of it
    assert w.fets() == (True, True) and cc_ma(w) == 0


@pytest.mark.parametrize("bms_draw", [True, False])
def test_direct_sim_sleeps_a_month_in_seconds(tmp_path, bms_draw):
    sim = direct(tmp_path, bms_draw=bms_draw)
    w = sim.world
    sim.run(1500)
    clock0 = sim.board.clock_s()
    assert clock0 == CLOCK_EPOCH_S + w.now_ms // 1000
    long_press(sim)
    assert sim.board.deep_sleeps == 1 and w.chip.shipped
    before = charge_mas(w)
    mas0 = w.bms_mas
    t0 = time.monotonic()
    sim.run(MONTH_MS)
    wall = time.monotonic() - t0
    assert wall < 5.0, "a month of deep sleep took %.1f s" % wall
    assert sim.board.asleep and sim.boots == 1
    drawn = w.bms_mas - mas0
    if bms_draw:
        assert drawn == pytest.approx((MA_DEEP_SLEEP + MA_AFE_SHIP) * MONTH_MS / 1000.0, rel=1e-6)
    else:
        assert drawn == 0.0
    for lost in lost_mas(before, w):
        assert lost == pytest.approx(drawn, rel=1e-3, abs=1e-6)
    # ACC wakes it: a new App boots, the clock ran through the sleep
    sim.board.input_bits |= IN_ACC
    sim.run(2000)
    assert sim.boots == 2 and sim.board.cause == (RESET_DEEPSLEEP, WAKE_ACC)
    assert not w.chip.shipped and w.fets() == (True, True)
    assert sim.board.clock_s() - clock0 >= MONTH_MS // 1000
    assert sim.board.clock_s() == CLOCK_EPOCH_S + w.now_ms // 1000
    print("DirectSim: a month of deep sleep in %.2f s wall" % wall)


# -- SimServer, the firmware under MicroPython --------------------------------

SCRIPT = '''
print("clock", b.clock_s(), "boot", boot)
if boot == 1:
    t0 = b.ticks_ms()
    b.network(True)
    while ticks_diff(b.ticks_ms(), t0) < 10000:
        b.idle(500)
    b.network(False)
    b.light_sleep(20000)
    ship()
    b.deep_sleep()
if boot == 2:
    b.idle(5000)
    b.reset()
idle_forever()
'''


def clock_line(server, boot, timeout=10.0):
    """The words of boot's "clock S boot N" line."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.log_tail(400).split("\n"):
            words = line.split()
            if words[:1] == ["clock"] and words[2:] == ["boot", str(boot)]:
                return words
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.005)


def test_server_drain_a_month_of_deep_sleep_and_the_clock(tmp_path):
    main = tmp_path / "main.py"
    main.write_text(HEAD + SCRIPT)
    world = no_self_discharge(World(cells=4))
    before = charge_mas(world)
    server = SimServer(world, str(tmp_path / "state"), speed=None, main_py=str(main))
    server.start()
    try:
        assert wait_log(server, "clock")[1:] == [str(CLOCK_EPOCH_S), "boot", "1"]
        server.wait_mcu_state("deep_sleep")
        t_deep = world.now_ms
        t0 = time.monotonic()
        server.wait_sim_ms(t_deep + MONTH_MS, timeout=10)
        wall = time.monotonic() - t0
        assert wall < 5.0, "a month of deep sleep took %.1f s" % wall
        with server.lock:
            assert server.mcu_state == "deep_sleep" and server.boots == 1
            e = server.energy()
            total_mas = e["total"]["mah"] * 3600.0
            # the pack lost what the board drew, all of it (FETs off: nothing else flowed)
            assert world.bms_mas == pytest.approx(total_mas, rel=1e-9)
            for lost in lost_mas(before, world):
                assert lost == pytest.approx(world.bms_mas, rel=1e-3)
            assert e["awake"]["avg_ma"] > MA_AWAKE + MA_AFE_NORMAL  # the network was on a while
            assert e["light_sleep"]["avg_ma"] == pytest.approx(MA_LIGHT_SLEEP + MA_AFE_NORMAL)
            assert e["deep_sleep"]["avg_ma"] == pytest.approx(MA_DEEP_SLEEP + MA_AFE_SHIP)
        server.set_input("acc", True)
        words = clock_line(server, 2)  # the clock ran through the sleep
        assert int(words[1]) - CLOCK_EPOCH_S >= (t_deep + MONTH_MS) // 1000
        words3 = clock_line(server, 3)
        # and through the reset: 5 s idle and BOOT_MS later
        assert 5 <= int(words3[1]) - int(words[1]) <= 6
        assert server.reset_causes[1:] == [RESET_DEEPSLEEP, RESET_SOFT]
    finally:
        server.stop()
    print("SimServer: a month of deep sleep in %.2f s wall" % wall)
