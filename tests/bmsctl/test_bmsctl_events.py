"""The event log in plain words (bmsctl.regs.event_text): every code the
firmware logs reads as a sentence, measurements in engineering units."""
import re

import pytest

from bms import events as APP
from bms import config as FWCF
from bms import paramcheck as C
from bms.spec import paramtable as PT
from bms import power as PW
from bms.spec import protrules
from bmsctl import regs as RG
from bms.events import EV_BAD_PIN, EV_COMMAND, EV_LATCH, EV_LOCKED, EV_MODE, EV_NET_DOWN, EV_PARAMS_MIGRATED, EV_PARAM_SET, EV_PARAM_SET_K, EV_RELEASE, EV_SAVE_FAILED, EV_STORE_SAVE, EV_TRIP, EV_UNLOCKED


def firmware_codes():
    """{code: where it comes from} for every event code the firmware defines:
    the EV_ constants of bms.events, and each protection row's trip,
    release and latch (the table's codes are a base plus the row)."""
    codes = {}
    for name, v in vars(APP).items():
        if name.startswith("EV_") and isinstance(v, int) and name not in ("EV_TRIP", "EV_RELEASE", "EV_LATCH"):
            codes[v] = "%s.%s" % (APP.__name__, name)
    for i, row in enumerate(protrules.ROWS):
        for base, what in ((EV_TRIP, "trip"), (EV_RELEASE, "release"), (EV_LATCH, "latch")):
            codes[base + i + 1] = "%s %s" % (row[0], what)
    return codes


CODES = firmware_codes()
PARAM_NAMES = {r[1] for r in PT.TABLE}
IDENT = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+")


def values_for(code):
    """Values the firmware logs with this code (a few of each kind)."""
    kind, row = divmod(code, 64)
    if 1 <= row <= len(protrules.ROWS) and kind < 3:
        return (0, 1, 3, 100, 3712, -200, 462, 52100)
    if code in (EV_PARAM_SET, EV_PARAM_SET_K):
        return tuple((r[0] << 20) | (x & 0xFFFFF) for r in PT.TABLE for x in (r[6], r[7]))
    if code == EV_MODE:
        return tuple((m << 8) | c for m in (0, 1, 2) for c in range(11))
    if code == APP.EV_RESET:
        return tuple((c << 8) | w for c in range(1, 6) for w in range(6))
    if code == EV_NET_DOWN:
        return tuple((r << 8) | d for r in range(1, 9) for d in (0, 5, 111))
    if code == EV_STORE_SAVE:
        return tuple((s << 8) | w for s in (1, 2, 3, 4) for w in (0, 1, 2, 3))
    if code in (APP.EV_CRASH, APP.EV_FAULT):
        places = [v for k, v in vars(APP).items() if k.startswith("AT_")]
        return tuple((at << 8) | kind for at in places for kind in (1, 2, 3))
    if code == APP.EV_CONFIG_RULE:
        return tuple(range(1, len(C.RULES) // 3 + 1))
    return (0, 1, 2, 3, 5, 950, -40)


def cases():
    return [(code, v) for code in sorted(CODES) for v in values_for(code)]


def test_the_firmware_defines_the_codes_we_word():
    assert len(CODES) == 3 * len(protrules.ROWS) + 24, sorted(CODES)
    assert set(range(200, 224)) <= set(CODES)
    assert set(RG.ROW_TITLES) == {r[0] for r in protrules.ROWS}
    assert RG.MAX_BAD_PINS == FWCF._MAX_BAD_PINS


@pytest.mark.parametrize("code, value", cases())
def test_every_event_reads_as_a_sentence(code, value):
    text = RG.event_text(code, value)
    assert text and text.strip() == text and text[0].isupper(), (CODES[code], text)
    assert not text.startswith("event "), "%s renders as an unknown code: %r" % (CODES[code], text)
    # no internal identifier leaks; a parameter's name (settings, rules) is what users look up
    leaks = [w for w in IDENT.findall(text) if w not in PARAM_NAMES]
    assert not leaks, (CODES[code], text)
    assert RG.event_kind(code, value) in ("trip", "warn", "release", "")
    kind, row = divmod(code, 64)
    if 1 <= row <= len(protrules.ROWS) and kind < 2:
        x = RG.quantity_text(protrules.ROWS[row - 1][1], value)
        assert x is None or x in text, "the measurement in its unit: %r" % text


def param(name, x, code=EV_PARAM_SET):
    addr = next(r[0] for r in PT.TABLE if r[1] == name)
    return code, (addr << 20) | (x & 0xFFFFF)


def row_code(name, base):
    return base + [r[0] for r in protrules.ROWS].index(name) + 1


@pytest.mark.parametrize("code, value, text", [
    (row_code("cell_ov", EV_TRIP), 3712, "Cell over-voltage: protection tripped at 3.712 V (charging stopped)"),
    (row_code("cell_ov", EV_RELEASE), 3412, "Cell over-voltage released at 3.412 V"),
    (row_code("cell_uv", EV_TRIP), 2480, "Cell under-voltage: protection tripped at 2.480 V (discharging stopped)"),
    (row_code("pack_ov", EV_TRIP), 58420, "Pack over-voltage: protection tripped at 58.42 V (charging stopped)"),
    (row_code("dsg_oc", EV_TRIP), 105300,
     "Discharge over-current: protection tripped at 105.30 A (discharging stopped)"),
    (row_code("chg_ut", EV_TRIP), -15,
     "Charge under-temperature: protection tripped at -1.5 degC (charging stopped)"),
    (row_code("temp_low_warn", EV_RELEASE), 0x7FFF, "Warning cleared: low temperature (no reading)"),
    (row_code("afe_scd", EV_TRIP), 1, "Short circuit: protection tripped (discharging stopped)"),
    (row_code("afe_scd", EV_LATCH), 3, "Short circuit: latched after 3 retries (clear with bmsctl clear-latched)"),
    (row_code("afe_scd", EV_RELEASE), 1, "Short circuit: protection released (load removed)"),
    (row_code("afe_comm", EV_TRIP), 1,
     "AFE not answering or failing CRC: protection tripped (charging and discharging stopped)"),
    (row_code("temp_sensor", EV_RELEASE), 0, "Thermistor open or shorted: protection released"),
    (row_code("spread_warn", EV_TRIP), 100, "Warning: cell spread 100 mV"),
    (row_code("cell_ov_warn", EV_RELEASE), 3570, "Warning cleared: high cell voltage 3.570 V"),
    (APP.EV_SOC_START, 950, "State of charge started at 95.0 %"),
    (APP.EV_AFE_UP, 1, "AFE configured"),
    (APP.EV_AFE_UP, 0, "AFE configuration failed"),
    (APP.EV_BOOT, 3, "Firmware started (boot 3)"),
    (APP.EV_CONFIG_ERRORS, 1, "Stored settings rejected at start: 1 (defaults used)"),
    (APP.EV_CC_CAL, -40, "Coulomb-counter offset calibrated: -2.5 LSB"),
    (APP.EV_CONFIG_RULE, 1,
     "Stored settings break a rule (cell_ov_release_mv must be below cell_ov_mv): running unconfigured"),
    (*param("cell_ov_mv", 3600), "Setting cell_ov_mv changed to 3.600 V"),
    (*param("chg_ot_dc", -50), "Setting chg_ot_dc changed to -5.0 degC"),
    (*param("capacity_mah", 280, EV_PARAM_SET_K), "Setting capacity_mah changed to about 280.000 Ah"),
    (*param("pin", 0), "PIN changed"),
    (EV_PARAM_SET, (0x7FF << 20) | 5, "Unknown setting at register 0x7FF changed to 5"),
    (EV_UNLOCKED, 0, "Settings unlocked"),
    (EV_LOCKED, 0, "Settings locked"),
    (EV_BAD_PIN, 2, "Wrong PIN (3 tries left)"),
    (EV_BAD_PIN, 4, "Wrong PIN (1 try left)"),
    (EV_BAD_PIN, 5, "Wrong PIN: unlocking refused for a minute"),
    (EV_COMMAND, 2, "Host command: clear latched protections"),
    (EV_SAVE_FAILED, 2,
     "Saving settings to flash failed (2 write errors so far): the previous settings stay stored"),
    (EV_STORE_SAVE, (FWCF.SAVE_PARAMS << 8) | 1,
     "Saving the settings to flash failed (out of memory): the previous record stays stored, retried later"),
    (EV_STORE_SAVE, (FWCF.SAVE_SOC << 8) | 2,
     "Saving the SOC state to flash failed (filesystem error): the previous record stays stored, retried later"),
    (EV_STORE_SAVE, FWCF.SAVE_LIFE << 8, "Saving the lifetime counters to flash works again"),
    (EV_PARAMS_MIGRATED, 1, "Stored settings converted from format 1"),
    (APP.EV_CONFIG_IMPORTED, 0, "Settings imported from bms.cfg"),
    (EV_MODE, (PW.LOW_POWER << 8) | PW.CAUSE_IDLE, "Entered low-power mode (idle)"),
    (EV_MODE, (PW.WORKING << 8) | 3, "Entered working mode (charger)"),
    (APP.EV_RESET, 1 << 8, "Reset cause: power-on"),
    (APP.EV_RESET, (4 << 8) | 5, "Reset cause: wake from deep sleep, woken by button"),
    (250, 7, "event 250 (value 7)"),
    (len(protrules.ROWS) + 1, -3, "event %d (value -3)" % (len(protrules.ROWS) + 1)),
])
def test_representative_texts(code, value, text):
    assert RG.event_text(code, value) == text


@pytest.mark.parametrize("code, value, kind", [
    (row_code("cell_ov", EV_TRIP), 3712, "trip"),
    (row_code("afe_scd", EV_LATCH), 3, "trip"),
    (row_code("spread_warn", EV_TRIP), 100, "warn"),
    (row_code("spread_warn", EV_RELEASE), 80, "release"),
    (row_code("cell_ov", EV_RELEASE), 3412, "release"),
    (APP.EV_AFE_UP, 0, "trip"),
    (APP.EV_AFE_UP, 1, ""),
    (EV_BAD_PIN, 1, "trip"),
    (EV_STORE_SAVE, (FWCF.SAVE_SOC << 8) | 1, "trip"),
    (EV_STORE_SAVE, FWCF.SAVE_SOC << 8, ""),
    (APP.EV_BOOT, 1, ""),
    (250, 7, ""),
])
def test_event_kind(code, value, kind):
    assert RG.event_kind(code, value) == kind
