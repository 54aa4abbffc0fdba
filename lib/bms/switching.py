"""What the cycle switches (bms.cycle): the FETs, with the latch release
and the body-diode rule, and the bleed resistors. Functions of the Cycle,
called in its order; pure policy over its state, the AFE driver's calls the
only I/O.

Nothing here switches the FETs off to measure the coulomb counter's offset
(the calibration of firmware 0.6 and before, cc_cal_every_ms, retired): it
cut a live load. bms.cc learns the offset whenever the FETs are off anyway.
"""
from micropython import const

from bms import params as P
from bms import protection as PR
from bms.regmap import FET_CHG, FET_DSG
from bms.gen.packed import DIODE_CHG_ROWS, DIODE_DSG_ROWS, OVER_VOLTAGE_ROWS, SOC_WINDOW_ROWS
from bms.power import WORKING
from bms.ticks import TICKS_LIMIT, held_since, ticks_diff

_LOAD_GONE_MS = const(2000)  # a latched short clears once the load is gone this long
CHARGE_HOLD_MS = const(1800000)  # balancing goes on this long after a charge (CV float, charger done)
# A FET closed for its diode whose current turned the blocked way within
# _DIODE_QUICK_MS (closing it is what made a charger charge, or a load draw,
# through it) stays open _DIODE_HOLD_MS before it may close again: closing
# and opening must not take turns every cycle, half of them the blocked way.
_DIODE_QUICK_MS = const(1000)
_DIODE_HOLD_MS = const(5000)

def latch_release(cy, now):
    """A short circuit latched after its retries clears once the load is
    removed (the chip senses a load on PACK- while DSG is off)."""
    pr = cy.protection
    if not pr.latched() or not cy.afe_ok:
        cy.load_gone_since = now
        return
    if cy.meas.fets & FET_CHG or cy.meas.load_present:
        # LOAD_PRESENT means something only while CHG is off
        cy.load_gone_since = now
    elif ticks_diff(now, cy.load_gone_since) >= _LOAD_GONE_MS:
        pr.clear_latched(True)


def track_rest(cy, now):
    """Since when the current has been under rest_current_ma (balancing's
    idle time)."""
    i = cy.meas.current_ma
    rest = cy.values[P.P_REST_CURRENT_MA]
    if i > rest or i < -rest:
        cy.rest_since = now
    else:
        # a rest of days must not wrap round to a fresh one
        cy.rest_since = held_since(now, cy.rest_since, TICKS_LIMIT)


def switch_fets(cy, now):
    """FETs on unless a protection holds them off. Read back, not assumed."""
    m = cy.meas
    was = cy.diode_fet & m.fets
    cy.diode_fet = 0
    if not cy.afe_ok:
        return
    working = cy.modes.power.mode == WORKING
    pr = cy.protection
    want = PR.BOTH & ~pr.block if working else 0
    # Body diodes: a FET held off for one direction still passes the other
    # direction's current through its body diode, at ~0.7 V: 14 W at 20 A.
    # With current flowing the allowed way above diode_on_ma it goes on;
    # decided afresh every cycle, so it goes off in the first cycle that
    # current is not seen (it stopped, or turned: through the on FET, it
    # would flow the blocked way for at most that cycle; a turn right after
    # it closed holds it open a while). The chip's own comparators (OV,
    # UV, OCD, SCD) keep watching with the FET on.
    i = m.current_ma
    v = cy.values
    rest = v[P.P_REST_CURRENT_MA]
    if was and (i > rest if was == PR.CHG else -i > rest):
        if ticks_diff(now, cy.diode_on_since) < _DIODE_QUICK_MS:
            cy.diode_held = was
            cy.diode_held_since = now
    elif cy.diode_held and ticks_diff(now, cy.diode_held_since) >= _DIODE_HOLD_MS:
        cy.diode_held = 0
    thr = v[P.P_DIODE_ON_MA]
    if thr and cy.evaluated:
        held = cy.diode_held
        if want == PR.DSG and -i >= thr and held != PR.CHG and not pr.protect_flags & ~DIODE_CHG_ROWS:
            want = PR.BOTH
            cy.diode_fet = PR.CHG
            if not was:
                cy.diode_on_since = now
        elif want == PR.CHG and i >= thr and held != PR.DSG and not pr.protect_flags & ~DIODE_DSG_ROWS:
            want = PR.BOTH
            cy.diode_fet = PR.DSG
            if not was:
                cy.diode_on_since = now
    if want != m.fets:
        got = cy.afe.set_fets(want & FET_CHG, want & FET_DSG)
        if got < 0:
            cy.afe_ok = False
        else:
            m.fets = got


def balance(cy, now):
    m = cy.meas
    v = cy.values
    i = m.current_ma
    rest = v[P.P_REST_CURRENT_MA]
    if i > rest:
        cy.charge_seen = now
    else:
        cy.charge_seen = held_since(now, cy.charge_seen, CHARGE_HOLD_MS)
    resting_ms = ticks_diff(now, cy.rest_since)
    # In CV the charger mostly replaces the bleed current, so the charge
    # current sags while bleeding: "charging" holds for a while after it.
    # A charge held off by over-voltage is the top of charge too: bleeding
    # the high cell is what lets the charge go on.
    pr = cy.protection
    over = pr.protect_flags & OVER_VOLTAGE_ROWS
    charging = i >= -rest and (over or ticks_diff(now, cy.charge_seen) < CHARGE_HOLD_MS)
    allowed = (cy.afe_ok and (pr.protect_flags & ~(OVER_VOLTAGE_ROWS | SOC_WINDOW_ROWS)) == 0
               and cy.modes.power.mode == WORKING)
    q = pr.q
    hottest = q[PR.Q_TEMP_MAX_DC]
    if q[PR.Q_FET_TEMP_DC] > hottest:
        hottest = q[PR.Q_FET_TEMP_DC]
    mask = cy.balancer.update(m, now, charging, resting_ms, allowed, hottest)
    if mask != m.balance_mask and cy.afe_ok:
        got = cy.afe.set_balancing(mask)
        if got < 0:
            cy.afe_ok = False
        else:
            m.balance_mask = got
