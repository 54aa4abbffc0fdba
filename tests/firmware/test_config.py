"""Parameter writes (bms.config), the consistency rules (bms.paramcheck) and
the stored set (bms.params + bms.store): validation, the lock, persistence
through power cuts, migration."""
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bms import config as CF
from bms import paramcheck as C
from bms import params as P
from bms import paramload as PL
from bms.spec import paramtable as PT
from bms import regmap as M
from bms.spec import regtable as RT
from bms import store as S
from bms.regimage import RegisterImage
from bms.events import EV_COMMAND, EV_LOCKED, EV_PARAM_SET, EV_PARAM_SET_K, EV_STORE_SAVE

NAMES = [r[1] for r in PT.TABLE]
ADDR = {r[1]: r[0] for r in PT.TABLE}
TYPE = {r[1]: r[2] for r in PT.TABLE}
PIN = 1234


def pack(chem="lfp", cells=4, capacity_mah=100000):
    p = P.Params()
    PL.load_text(p, "chemistry=%s\ncells=%d\ncapacity_mah=%d\n" % (chem, cells, capacity_mah))
    assert p.configured(), p.errors
    return p


class Dev:
    """A Config as the firmware builds it, with its event log in a list."""

    def __init__(self, prm=None, directory=None):
        self.prm = prm or pack()
        if directory is not None:
            self.prm.store = S.Store(directory, PL.STORE_NAME)
        self.hr = RegisterImage(M.HR_SIZE)
        self.ir = RegisterImage(M.IR_SIZE, RT.mapped_mask(RT.INPUT_REGS, M.IR_SIZE))
        self.events = []
        self.cfg = CF.Config(self.prm, self.hr, self.ir, lambda c, v, t: self.events.append((c, v)))
        self.now = 1000

    def write(self, addr, words, broadcast=False):
        data = b"".join(struct.pack(">H", w & 0xFFFF) for w in words)
        return self.cfg.write(addr, len(words), data, 0, broadcast, self.now)

    def set(self, **kw):
        """Write named parameters one request each; the exception codes."""
        out = []
        for name, value in kw.items():
            if TYPE[name] == "uint32":
                out.append(self.write(ADDR[name], [value >> 16, value & 0xFFFF]))
            else:
                out.append(self.write(ADDR[name], [value]))
        return out

    def unlock(self, pin=PIN):
        return self.write(M.HR_UNLOCK, [pin])

    def read(self, name):
        words = bytearray(4)
        n = 2 if TYPE[name] == "uint32" else 1
        assert self.hr.read_into(ADDR[name], n, words, 0) == 0
        v = int.from_bytes(words[:2 * n], "big")
        if TYPE[name] == "int16" and v & 0x8000:
            v -= 0x10000
        return v

    def error(self):
        return self.ir.words[M.IR_CONFIG_ERROR]

    def service(self):
        return self.cfg.service(self.now, self.now // 1000)


# -- the rules -----------------------------------------------------------------

def test_rule_count_matches_the_table():
    assert len(C.RULES) % 3 == 0 and len(C.RULES) // 3 == C.RULE_COUNT


@pytest.mark.parametrize("chem", ["lfp", "nmc", "lto"])
@pytest.mark.parametrize("cells", range(3, 16))
def test_every_chemistry_default_passes_every_rule(chem, cells):
    p = pack(chem, cells, 50000)
    assert C.check(p.values, True) == 0
    assert all(PL.check(p, i, p.values[i]) is None for i in range(P.COUNT))


@pytest.mark.parametrize("k", [k for k in range(1, C.RULE_COUNT + 1) if C.rule(k)[0] == C.LT])
def test_each_order_rule_fails_on_equal_values_and_names_itself(k):
    kind, a, b = C.rule(k)
    p = pack("nmc", 8)
    v = p.values
    # move `a` up to `b` (or `b` down to `a`): equal is not below
    v[a] = v[b]
    got = C.check(v)
    if got != k:
        p = pack("nmc", 8)
        v = p.values
        v[b] = v[a]
        got = C.check(v)
    if got != k:
        # the change also broke an earlier rule over the same parameter
        assert 0 < got < k and set(C.rule(got)[1:]) & {a, b}, (k, got)
    else:
        assert got == k


def test_chemistry_limits():
    p = pack("lfp")
    v = p.values
    v[P.P_HW_OV_MV] = 3950  # above LFP's 3.90 V
    assert C.rule(C.check(v))[:2] == (C.CHEM_MAX, P.P_HW_OV_MV)
    v[P.P_HW_OV_MV] = 3900
    assert C.check(v) == 0


@pytest.mark.parametrize("mask,groups,ok", [
    (0b10111, 1, True), (0b11111, 1, True), (0b10011, 1, True), (0b00111, 1, False),  # top input unused
    (0b10001, 1, False), (0b1001110111, 2, True), (0b1000110111, 2, False), (0b110111, 1, False),
])
def test_cell_channels_fit_the_afe(mask, groups, ok):
    assert C.channels_fit(mask, groups) is ok


def test_ocv_table_all_zero_or_rising():
    p = pack("nmc")
    v = p.values
    for k in range(P.OCV_POINTS):
        v[P.P_OCV_0_MV + k] = 3000 + 50 * k
    assert C.check(v) == 0
    v[P.P_OCV_0_MV + 10] = v[P.P_OCV_0_MV + 9]
    assert C.rule(C.check(v)) == (C.SPECIAL, C.S_OCV, 0)
    v[P.P_OCV_0_MV] = 0
    assert C.check(v) != 0  # a partial table is not "the chemistry's"


def test_unconfigured_checks_only_framing():
    p = P.Params()
    PL.load_text(p, "")
    assert not C.configured(p.values)
    assert C.check(p.values) == 0
    p.values[P.P_MODBUS_BAUD] = 10000
    assert C.rule(C.check(p.values)) == (C.SPECIAL, C.S_BAUD, 0)


# -- writes --------------------------------------------------------------------

def test_locked_write_is_01_and_changes_nothing():
    d = Dev()
    before = list(d.prm.values)
    assert d.set(cell_ov_mv=3620) == [1]
    assert list(d.prm.values) == before and d.error() >> 8 == M.ERR_LOCKED
    assert d.hr.words[M.HR_UNLOCK] == 0


def test_unlock_write_lock():
    d = Dev()
    assert d.unlock() == 0 and d.hr.words[M.HR_UNLOCK] == 1
    assert d.set(cell_ov_mv=3620) == [0]
    assert d.prm.values[P.P_CELL_OV_MV] == 3620 and d.read("cell_ov_mv") == 3620
    assert d.write(M.HR_UNLOCK, [0]) == 0
    assert d.set(cell_ov_mv=3640) == [1]


def test_pin_reads_zero_and_can_change():
    d = Dev()
    d.unlock()
    assert d.read("pin") == 0
    assert d.set(pin=4321) == [0]
    assert d.read("pin") == 0
    d.write(M.HR_UNLOCK, [0])
    assert d.unlock(PIN) == 3 and d.unlock(4321) == 0


def test_wrong_pins_lock_out_for_a_minute():
    d = Dev()
    for k in range(5):
        assert d.unlock(1) == 3
        assert d.error() == (M.ERR_BAD_PIN << 8) | (4 - k)
    assert d.unlock(PIN) == 3 and d.error() >> 8 == M.ERR_PIN_LOCKOUT  # even the right one
    d.now += 60000
    assert d.unlock(PIN) == 0


def test_unlock_expires_and_writes_renew_it():
    d = Dev()
    d.unlock()
    d.now += 200000
    assert d.set(cell_ov_mv=3620) == [0]  # renews
    d.now += 299000
    assert d.set(cell_ov_mv=3630) == [0]
    d.now += 300000
    assert d.set(cell_ov_mv=3640) == [1]
    d.service()
    assert (EV_LOCKED, 0) in d.events


def test_range_refused_names_the_parameter():
    d = Dev()
    d.unlock()
    assert d.set(cell_ov_mv=9999) == [3]
    assert d.error() == (M.ERR_RANGE << 8) | P.P_CELL_OV_MV
    assert d.read("cell_ov_mv") == 3650


def test_rule_refused_and_the_order_that_works():
    d = Dev()
    d.unlock()
    # release above the trip: refused; the trip first, then the release
    assert d.set(cell_ov_release_mv=3700) == [3]
    assert C.rule(d.error() & 0xFF)[1:] == (P.P_CELL_OV_RELEASE_MV, P.P_CELL_OV_MV)
    assert d.set(cell_ov_mv=3750, hw_ov_mv=3800) == [3, 0]  # hw above the trip first
    assert d.set(cell_ov_mv=3750, cell_ov_release_mv=3700) == [0, 0]


def test_multi_register_write_is_all_or_nothing():
    d = Dev()
    d.unlock()
    a = ADDR["cell_ov_mv"]
    before = list(d.prm.values)
    # cell_ov_mv fine, cell_ov_delay_ms (32-bit) out of range: nothing changes
    assert d.write(a, [3620, 0x0001, 0x0000]) == 3
    assert list(d.prm.values) == before
    assert d.write(a, [3620, 0, 5000]) == 0
    assert d.prm.values[P.P_CELL_OV_MV] == 3620 and d.prm.values[P.P_CELL_OV_DELAY_MS] == 5000


def test_split_32_bit_and_unmapped_and_control_span():
    d = Dev()
    d.unlock()
    a = ADDR["cell_ov_delay_ms"]
    assert d.write(a + 1, [5]) == 2 and d.error() >> 8 == M.ERR_SPLIT
    assert d.write(a - 1, [3600, 0]) == 2 and d.error() >> 8 == M.ERR_SPLIT
    assert d.write(0x002C, [1]) == 2 and d.error() >> 8 == M.ERR_UNMAPPED  # a gap in the map
    assert d.write(M.HR_RESERVED + 1, [1]) == 3 and d.error() == (M.ERR_RESERVED << 8) | (M.HR_RESERVED + 1)
    assert d.write(M.HR_RESERVED, [0] * M.HR_RESERVED_COUNT) == 0  # reserved: takes 0
    assert d.write(M.HR_UNLOCK, [PIN, 1]) == 2
    assert d.write(M.HR_UNLOCK - 1, [0, PIN]) == 2
    assert d.write(M.HR_SIZE, [1]) == 2


def test_signed_parameter():
    d = Dev()
    d.unlock()
    assert d.set(dsg_ut_dc=-250) == [0]
    assert d.prm.values[P.P_DSG_UT_DC] == -250 and d.read("dsg_ut_dc") == -250


def test_huge_32_bit_word_is_refused_not_overflowed():
    d = Dev()
    d.unlock()
    assert d.write(ADDR["capacity_mah"], [0xFFFF, 0xFFFF]) == 3


def test_broadcast_never_writes_parameters_but_locks():
    d = Dev()
    d.unlock()
    assert d.write(ADDR["cell_ov_mv"], [3620], broadcast=True) == 0
    assert d.prm.values[P.P_CELL_OV_MV] == 3650
    assert d.write(M.HR_UNLOCK, [PIN], broadcast=True) == 0 and d.cfg.unlocked  # no new unlock...
    assert d.write(M.HR_UNLOCK, [0], broadcast=True) == 0 and not d.cfg.unlocked  # ...but a lock


def test_unconfigured_write_then_configure_checks_the_whole_set():
    p = P.Params()
    PL.load_text(p, "")
    d = Dev(p)
    d.unlock()
    assert d.set(cell_ov_mv=3600) == [0]  # range only while unconfigured
    # the pack keys alone: the rest (pack voltages 0) is out of range -> refused
    a = ADDR["chemistry"]
    assert d.write(a, [1, 0x17, 0, 50000 & 0xFFFF]) == 3  # chemistry, channels, capacity (32-bit)
    assert d.error() >> 8 == M.ERR_RANGE
    assert not C.configured(p.values)


def test_configured_set_cannot_be_unconfigured_by_a_write():
    d = Dev()
    d.unlock()
    assert d.set(chemistry=0) == [3] and d.error() >> 8 == M.ERR_UNCONFIGURE


def test_commands():
    d = Dev()
    assert d.write(M.HR_COMMAND, [M.CMD_RESTART]) == 1
    d.unlock()
    assert d.write(M.HR_COMMAND, [99]) == 3 and d.error() == (M.ERR_COMMAND << 8) | 99
    assert d.write(M.HR_COMMAND, [M.CMD_CLEAR_LATCHED]) == 0
    assert d.service() & CF.CLEAR_LATCHED
    assert d.write(M.HR_COMMAND, [M.CMD_RESTART]) == 0
    assert d.service() & CF.RESTART
    assert (EV_COMMAND, M.CMD_RESTART) in d.events


def test_storage_commands_set_the_parameter_and_save_it(tmp_path):
    base = _dir(tmp_path)
    d = Dev(directory=base)
    assert d.write(M.HR_COMMAND, [M.CMD_STORAGE_ON]) == 1, "locked: refused"
    assert d.prm.values[P.P_STORAGE] == 0
    d.unlock()
    assert d.write(M.HR_COMMAND, [M.CMD_STORAGE_ON]) == 0
    assert d.prm.values[P.P_STORAGE] == 1 and d.read("storage") == 1
    assert d.service() & CF.APPLY
    assert (EV_COMMAND, M.CMD_STORAGE_ON) in d.events
    assert PL.load(base).values[P.P_STORAGE] == 1, "saved: it survives a restart"
    assert d.write(M.HR_COMMAND, [M.CMD_STORAGE_OFF]) == 0 and d.read("storage") == 0
    d.service()
    # a set the rules refuse refuses the command too, and nothing changes
    assert d.set(soc_max_dpct=600) == [0] and d.set(storage_soc_dpct=550) == [0]
    d.prm.values[P.P_STORAGE_SOC_DPCT] = 700  # as a corrupt RAM value would be
    assert d.write(M.HR_COMMAND, [M.CMD_STORAGE_ON]) == 3 and d.error() >> 8 == M.ERR_RULE
    assert d.prm.values[P.P_STORAGE] == 0


def test_service_logs_each_change_and_reports_what_to_apply(tmp_path):
    d = Dev(directory=str(tmp_path) + "/")
    d.unlock()
    assert d.set(cell_ov_mv=3620, cell_ov_release_ms=3600000, modbus_address=9) == [0, 0, 0]
    work = d.service()
    assert work & CF.APPLY and work & CF.COMM
    changes = [(c, v) for c, v in d.events if c in (EV_PARAM_SET, EV_PARAM_SET_K)]
    assert (EV_PARAM_SET, (ADDR["cell_ov_mv"] << 20) | 3620) in changes
    assert (EV_PARAM_SET_K, (ADDR["cell_ov_release_ms"] << 20) | 3600) in changes
    assert (EV_PARAM_SET, (ADDR["modbus_address"] << 20) | 9) in changes
    assert d.cfg.saves == 1 and d.ir.words[M.IR_PARAM_SAVES + 1] == 1
    assert d.service() == 0  # nothing more to do
    # a restart key: the change waits for the restart
    d.set(shunt_uohm=500)
    d.service()
    assert d.ir.words[M.IR_CONFIG_STATE] & M.CFG_RESTART_PENDING


def test_a_write_of_the_values_already_set_is_accepted_and_saves_nothing(tmp_path):
    """Accepted (the host's retry of a write that worked is not an error),
    but nothing to apply, log or save: flash is not touched."""
    d = Dev(directory=str(tmp_path) + "/")
    d.unlock()
    assert d.set(cell_ov_mv=3620) == [0]
    assert d.service() & CF.APPLY and d.cfg.saves == 1
    stamp = sorted((f, os.stat(os.path.join(tmp_path, f)).st_mtime_ns) for f in os.listdir(tmp_path))
    before = list(d.events)
    assert d.set(cell_ov_mv=3620) == [0] and d.error() == 0
    assert d.service() == 0 and d.cfg.saves == 1 and d.events == before
    assert sorted((f, os.stat(os.path.join(tmp_path, f)).st_mtime_ns) for f in os.listdir(tmp_path)) == stamp


def test_a_failed_save_says_so_and_keeps_the_old_set(tmp_path):
    d = Dev(directory=str(tmp_path) + "/missing/")
    d.unlock()
    assert d.set(cell_ov_mv=3620) == [0]
    d.service()
    assert d.ir.words[M.IR_CONFIG_STATE] & M.CFG_SAVE_FAILED
    assert (EV_STORE_SAVE, (CF.SAVE_PARAMS << 8) | S.FAIL_FLASH) in d.events
    assert d.prm.values[P.P_CELL_OV_MV] == 3620  # the values in RAM stay


class FlashFault:
    """bms.store's open() refusing writes (raising `exc`) while `on`."""

    def __init__(self, monkeypatch, exc):
        self.on = False
        self.exc = exc
        self.tries = 0
        monkeypatch.setattr(S, "open", self.open, raising=False)

    def open(self, path, mode="r"):
        if self.on and "w" in mode:
            self.tries += 1
            raise self.exc
        return open(path, mode)


def stored_value(directory, name):
    rec = S.Store(directory, PL.STORE_NAME).load()
    payload = rec[1]
    for i in range(len(payload) // 6):
        a, v = struct.unpack_from("<Hi", payload, 6 * i)
        if a == ADDR[name]:
            return v
    raise KeyError(name)


@pytest.mark.parametrize("exc, why", [(OSError(28, "ENOSPC"), S.FAIL_FLASH), (MemoryError(), S.FAIL_MEMORY)])
def test_a_failed_save_is_retried_with_a_back_off_and_logged_once(tmp_path, monkeypatch, exc, why):
    directory = str(tmp_path) + "/"
    d = Dev(directory=directory)
    d.unlock()
    assert d.set(cell_ov_mv=3620) == [0]
    d.service()
    assert stored_value(directory, "cell_ov_mv") == 3620 and not d.cfg.save_failed
    fault = FlashFault(monkeypatch, exc)
    fault.on = True
    assert d.set(cell_ov_mv=3610) == [0]
    assert d.service() & CF.APPLY  # the change is applied although it is not stored
    assert fault.tries == 1 and d.cfg.save_failed
    assert d.ir.words[M.IR_CONFIG_STATE] & M.CFG_SAVE_FAILED
    assert d.prm.values[P.P_CELL_OV_MV] == 3610 and d.read("cell_ov_mv") == 3610
    assert stored_value(directory, "cell_ov_mv") == 3620  # the old set still loads
    failed = [(c, v) for c, v in d.events if c == EV_STORE_SAVE]
    assert failed == [(EV_STORE_SAVE, (CF.SAVE_PARAMS << 8) | why)]
    # retries: 1 s after the failure, then 2 s, 4 s, ... up to 64 s; none between
    tries = [d.now]
    for _ in range(600):  # 150 s
        d.now += 250
        before = fault.tries
        assert d.service() == 0
        if fault.tries != before:
            tries.append(d.now)
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert gaps == [1000, 2000, 4000, 8000, 16000, 32000, 64000], gaps
    assert d.prm.save_errors() == len(tries) and d.cfg.save_failed
    assert [c for c, _ in d.events].count(EV_STORE_SAVE) == 1  # once, not per retry
    assert stored_value(directory, "cell_ov_mv") == 3620
    # the flash works again: the next retry stores the set and says so
    fault.on = False
    d.now += 64000
    d.service()
    assert not d.cfg.save_failed and not d.ir.words[M.IR_CONFIG_STATE] & M.CFG_SAVE_FAILED
    assert stored_value(directory, "cell_ov_mv") == 3610
    assert [(c, v) for c, v in d.events if c == EV_STORE_SAVE][1:] == [(EV_STORE_SAVE, CF.SAVE_PARAMS << 8)]
    d.now += 100000
    assert d.service() == 0 and fault.tries == len(tries)  # nothing left to retry


def test_a_set_that_cannot_be_encoded_is_a_failed_save(tmp_path, monkeypatch):
    d = Dev(directory=str(tmp_path) + "/")
    d.unlock()

    def no_heap():
        raise MemoryError()

    monkeypatch.setattr(d.prm, "encode", no_heap)
    assert d.set(cell_ov_mv=3620) == [0]
    d.service()
    assert d.cfg.save_failed and d.prm.save_errors() == 1 and d.prm.save_failing() == S.FAIL_MEMORY
    assert (EV_STORE_SAVE, (CF.SAVE_PARAMS << 8) | S.FAIL_MEMORY) in d.events
    monkeypatch.undo()
    d.now += 1000
    d.service()
    assert not d.cfg.save_failed and S.Store(str(tmp_path) + "/", PL.STORE_NAME).load() is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.integers(-70000, 5000000)), min_size=1, max_size=6))
def test_no_write_sequence_leaves_a_configured_set_breaking_a_rule(writes):
    d = Dev()
    d.unlock()
    for name, value in writes:
        if TYPE[name] == "uint32":
            value = abs(value)
        before = list(d.prm.values)
        code = d.set(**{name: value})[0]
        assert code in (0, 3)
        if code:
            assert list(d.prm.values) == before
        assert C.check(d.prm.values) == 0
        assert all(PL.check(d.prm, i, d.prm.values[i]) is None for i in range(P.COUNT))


# -- the stored set ------------------------------------------------------------

def _dir(tmp_path):
    return str(tmp_path) + "/"


def test_saved_set_loads_back(tmp_path):
    d = Dev(directory=_dir(tmp_path))
    d.unlock()
    assert d.set(cell_ov_mv=3620, dsg_ut_dc=-250, capacity_mah=120000) == [0, 0, 0]
    d.service()
    q = PL.load(_dir(tmp_path))
    assert list(q.values) == list(d.prm.values) and not q.errors


def test_unchanged_set_is_not_written_again(tmp_path):
    p = pack()
    p.store = S.Store(_dir(tmp_path), PL.STORE_NAME)
    assert p.save()
    stamp = sorted((f, os.stat(os.path.join(tmp_path, f)).st_mtime_ns) for f in os.listdir(tmp_path))
    assert p.save()
    assert sorted((f, os.stat(os.path.join(tmp_path, f)).st_mtime_ns) for f in os.listdir(tmp_path)) == stamp


def test_a_save_encodes_into_the_sets_own_buffer_and_the_store_keeps_no_copy(tmp_path):
    p = pack()
    p.store = S.Store(_dir(tmp_path), PL.STORE_NAME)
    buf = p.encode()
    assert p.encode() is buf  # made at boot: a save needs no heap for it
    assert p.save() and not hasattr(p.store, "payload")  # one copy of the set in RAM, not two
    p.values[P.P_CELL_OV_MV] = 3620
    p.encode()
    assert PL.load(_dir(tmp_path)).values[P.P_CELL_OV_MV] != 3620  # flash did not change with the buffer
    assert p.save() and PL.load(_dir(tmp_path)).values[P.P_CELL_OV_MV] == 3620


class _CutFile:
    """A file whose power goes after `budget` more bytes."""

    def __init__(self, f, budget):
        self.f = f
        self.budget = budget

    def write(self, data):
        n = min(len(data), self.budget[0])
        self.f.write(bytes(data[:n]))
        self.budget[0] -= n
        if n < len(data):
            raise OSError(5, "power cut")
        return n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.slow
def test_power_cut_at_every_byte_of_a_parameter_save(tmp_path, monkeypatch):
    base = _dir(tmp_path)
    old = pack()
    old.store = S.Store(base, PL.STORE_NAME)
    assert old.save()
    old_values = list(old.values)
    new = pack()
    new.values[P.P_CELL_OV_MV] = 3620
    new_values = list(new.values)
    size = len(S.encode(P.FORMAT, 2, new.encode()))
    real_open = open
    for k in range(size + 1):
        for f in os.listdir(base):
            if f.endswith(".b"):
                os.remove(base + f)
        budget = [k]

        def cut_open(path, mode="r", *a):
            f = real_open(path, mode, *a)
            return _CutFile(f, budget) if "w" in mode else f

        new.store = S.Store(base, PL.STORE_NAME)
        new.store.load()
        monkeypatch.setattr(S, "open", cut_open, raising=False)
        saved = new.save()
        monkeypatch.undo()
        got = list(PL.load(base).values)
        if k < size:
            assert not saved and got == old_values, k
        else:
            assert saved and got == new_values


def test_bms_cfg_is_taken_in_once_and_saved_as_the_record(tmp_path):
    base = _dir(tmp_path)
    with open(base + PL.CONFIG_FILE, "w") as f:
        f.write("chemistry=nmc\ncells=5\ncapacity_mah=20000\ncell_ov_mv=4200\ncell_ov_warn_mv=4150\n")
    p = PL.load(base)
    assert p.imported_text and p.configured() and p.values[P.P_CELL_OV_MV] == 4200
    assert not os.path.exists(base + PL.CONFIG_FILE) and os.path.exists(base + PL.CONFIG_FILE + ".imported")
    q = PL.load(base)
    assert not q.imported_text and list(q.values) == list(p.values)


def _record(pairs, version=P.FORMAT):
    return b"".join(struct.pack("<Hi", a, x) for a, x in pairs)


def test_record_from_an_older_firmware_keeps_defaults_for_new_parameters(tmp_path):
    """A 0.3-era set lacks modbus_parity, pin and unlock_timeout_s: they take
    their defaults, everything stored is kept."""
    base = _dir(tmp_path)
    full = pack("lto", 6, 40000)
    full.values[P.P_CELL_OV_MV] = 2800
    full.values[P.P_CELL_OV_WARN_MV] = 2780
    pairs = [(full.addr[i], full.values[i]) for i in range(P.COUNT)
             if i not in (P.P_MODBUS_PARITY, P.P_PIN, P.P_UNLOCK_TIMEOUT_S, P.P_DIODE_ON_MA)]
    S.Store(base, PL.STORE_NAME).save(P.FORMAT, _record(pairs))
    q = PL.load(base)
    assert q.values[P.P_CELL_OV_MV] == 2800 and q.values[P.P_PIN] == 1234
    assert q.values[P.P_MODBUS_PARITY] == 1 and q.configured() and not q.errors
    assert q.values[P.P_DIODE_ON_MA] == 1000  # a 0.4 set has no diode_on_ma: the policy is on


@pytest.mark.parametrize("cal_ms, idle_ma, want_cal, want_idle", [
    (14400000, 400, 0, 20),  # format 1's defaults for a 40 Ah pack: they cut a live load
    (3600000, 150, 3600000, 150),  # the user's own choices stay
])
def test_format_1_defaults_that_cut_a_live_load_are_migrated(tmp_path, cal_ms, idle_ma, want_cal, want_idle):
    base = _dir(tmp_path)
    full = pack("lfp", 4, 40000)
    full.values[P.P_CC_CAL_EVERY_MS] = cal_ms
    full.values[P.P_LP_IDLE_MA] = idle_ma
    pairs = [(full.addr[i], full.values[i]) for i in range(P.COUNT) if i < P.P_SOC_MAX_DPCT]
    S.Store(base, PL.STORE_NAME).save(1, _record(pairs))
    q = PL.load(base)
    assert q.migrated_from == 1 and not q.errors and q.configured()
    assert (q.values[P.P_CC_CAL_EVERY_MS], q.values[P.P_LP_IDLE_MA]) == (want_cal, want_idle)
    assert q.values[P.P_SOC_MAX_DPCT] == 1000 and q.values[P.P_STORAGE] == 0  # new: off


def test_record_with_unknown_and_out_of_range_values(tmp_path):
    base = _dir(tmp_path)
    full = pack()
    pairs = [(full.addr[i], full.values[i]) for i in range(P.COUNT)]
    pairs.append((0x01FF, 7))  # a register a newer firmware had
    pairs[P.P_CELL_OV_MV] = (full.addr[P.P_CELL_OV_MV], 9999)
    S.Store(base, PL.STORE_NAME).save(P.FORMAT + 1, _record(pairs))
    q = PL.load(base)
    assert len(q.errors) == 2 and q.migrated_from == P.FORMAT + 1
    assert q.values[P.P_CELL_OV_MV] == 3650  # the chemistry's default stays


def test_factory_reset_erases_the_record(tmp_path):
    base = _dir(tmp_path)
    p = pack()
    p.store = S.Store(base, PL.STORE_NAME)
    p.save()
    assert p.store.erase()
    assert not PL.load(base).configured()
