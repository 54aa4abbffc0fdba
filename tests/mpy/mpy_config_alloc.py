# Under the MicroPython unix port: bms.config.Config.write() -- the Modbus
# FC06/FC16 path into the parameters -- allocates nothing, accepted or
# refused: unlock, single and multi-register writes (a 32-bit parameter
# among them), range / rule / unconfigure refusals, a locked write, a split
# 32-bit write, control-register spans, commands, broadcasts, wrong PINs up
# to the lockout. Config.service() (after the reply) may allocate and is not
# called here.
# Prints "OK" or exits 1 with the reason. Run by tests/firmware/test_config_alloc.py.
import sys
from array import array

import micropython

from bms import params as P

from bms import paramload as PL
from bms import regmap as M
from bms.config import APPLY, CLEAR_LATCHED, Config
from bms.app import _input_mapped
from bms.regimage import RegisterImage

PIN = 1234
OFF = 7  # data at the offset an FC16 frame carries it


def fail(*why):
    print("FAIL", *why)
    sys.exit(1)


prm = P.Params()
PL.load_text(prm, "chemistry=lfp\ncells=4\ncapacity_mah=100000\n")
if prm.errors or not prm.configured():
    fail("the pack is not configured:", prm.errors, prm.rule_error())

# holding addresses by name, found before the heap is locked
HA = {}
for _name in ("cell_ov_mv", "cell_ov_delay_ms", "cell_ov_release_mv", "cell_ov_warn_mv", "capacity_mah",
              "chemistry", "chg_oc_ma", "cell_channels"):
    HA[_name] = prm.addr[PL.index_of(_name)]
A_CELL_OV = HA["cell_ov_mv"]
A_CELL_OV_DELAY = HA["cell_ov_delay_ms"]
A_CELL_OV_RELEASE = HA["cell_ov_release_mv"]
A_CELL_OV_WARN = HA["cell_ov_warn_mv"]
A_CAPACITY = HA["capacity_mah"]
A_CHEMISTRY = HA["chemistry"]
A_CHG_OC = HA["chg_oc_ma"]
if A_CELL_OV_DELAY != A_CELL_OV + 1 or A_CELL_OV_RELEASE != A_CELL_OV + 3:
    fail("the table moved: cell_ov_mv, cell_ov_delay_ms (32-bit), cell_ov_release_mv are not adjacent")
if HA["cell_channels"] != A_CAPACITY - 1:
    fail("the table moved: cell_channels is not right before capacity_mah")
UNMAPPED = 0x002C  # a gap in the holding map
for _i in range(P.COUNT):
    _n = 2 if prm.flags[_i] & P.WIDE else 1
    if prm.addr[_i] <= UNMAPPED < prm.addr[_i] + _n:
        fail("0x002C is mapped now: pick another gap")


def data(*words):
    b = bytearray(OFF + 2 * len(words))
    i = OFF
    for w in words:
        b[i] = (w >> 8) & 0xFF
        b[i + 1] = w & 0xFF
        i += 2
    return b


def err(reason, detail=0):
    return (reason << 8) | detail


ANY = -1  # IR_CONFIG_ERROR not checked (a refusal without a reason code)

# (address, count, data, broadcast, expected code, expected IR_CONFIG_ERROR)
CASES = (
    # locked at start
    (A_CELL_OV_WARN, 1, data(3590), False, 1, err(M.ERR_LOCKED)),
    # a broadcast unlock with the right PIN is not taken
    (M.HR_UNLOCK, 1, data(PIN), True, 0, err(M.ERR_LOCKED)),
    (A_CELL_OV_WARN, 1, data(3590), False, 1, err(M.ERR_LOCKED)),
    # unlock with the right PIN
    (M.HR_UNLOCK, 1, data(PIN), False, 0, 0),
    # accepted single write
    (A_CELL_OV_WARN, 1, data(3590), False, 0, 0),
    # the same value again: accepted, nothing to do
    (A_CELL_OV_WARN, 1, data(3590), False, 0, 0),
    # accepted multi-register write spanning a 32-bit parameter
    (A_CELL_OV, 4, data(3640, 0, 3000, 3440), False, 0, 0),
    # a 32-bit parameter with a non-zero high word (120000 mAh)
    (A_CAPACITY, 2, data(0x0001, 0xD4C0), False, 0, 0),
    (A_CHG_OC, 2, data(0x0001, 0x86A0), False, 0, 0),  # 100000 mA
    # range refusals
    (A_CELL_OV, 1, data(6000), False, 3, err(M.ERR_RANGE, P.P_CELL_OV_MV)),
    (A_CAPACITY, 2, data(0x4000, 0), False, 3, err(M.ERR_RANGE, P.P_CAPACITY_MAH)),
    (A_CAPACITY, 2, data(0xFFFF, 0xFFFF), False, 3, err(M.ERR_RANGE, P.P_CAPACITY_MAH)),
    (A_CAPACITY, 2, data(0x001E, 0x8481), False, 3, err(M.ERR_RANGE, P.P_CAPACITY_MAH)),  # 2000001
    # rule refusal: the over-voltage release above the trip (rule 1)
    (A_CELL_OV_RELEASE, 1, data(3700), False, 3, err(M.ERR_RULE, 1)),
    # a write that would leave the configured pack unconfigured
    (A_CHEMISTRY, 1, data(0), False, 3, err(M.ERR_UNCONFIGURE)),
    # split 32-bit writes: the high word alone, the low word alone, a range ending in one
    (A_CAPACITY, 1, data(1), False, 2, err(M.ERR_SPLIT, P.P_CAPACITY_MAH)),
    (A_CAPACITY + 1, 1, data(1), False, 2, err(M.ERR_SPLIT, P.P_CAPACITY_MAH)),
    (A_CAPACITY - 1, 2, data(0x17, 1), False, 2, err(M.ERR_SPLIT, P.P_CAPACITY_MAH)),
    (A_CELL_OV, 2, data(3640, 0), False, 2, err(M.ERR_SPLIT, P.P_CELL_OV_DELAY_MS)),
    # unmapped
    (UNMAPPED, 1, data(1), False, 2, ANY),
    (M.HR_SIZE, 1, data(1), False, 2, ANY),
    # control registers: alone only
    (M.HR_UNLOCK, 2, data(PIN, 0), False, 2, err(M.ERR_CONTROL_SPAN)),
    (M.HR_UNLOCK - 1, 2, data(0, PIN), False, 2, err(M.ERR_CONTROL_SPAN)),
    (M.HR_COMMAND, 2, data(2, 0), False, 2, ANY),
    # commands
    (M.HR_COMMAND, 1, data(M.CMD_CLEAR_LATCHED), False, 0, 0),
    (M.HR_COMMAND, 1, data(9), False, 3, err(M.ERR_COMMAND, 9)),
    (M.HR_COMMAND, 1, data(M.CMD_RESTART), True, 0, ANY),  # broadcast: ignored
    # a broadcast parameter write: no error, not applied
    (A_CELL_OV_WARN, 1, data(3500), True, 0, ANY),
    # a wrong PIN while unlocked
    (M.HR_UNLOCK, 1, data(PIN + 1), False, 3, err(M.ERR_BAD_PIN, 4)),
    # lock, then a locked write and a locked command
    (M.HR_UNLOCK, 1, data(0), False, 0, ANY),
    (A_CELL_OV_WARN, 1, data(3500), False, 1, err(M.ERR_LOCKED)),
    (M.HR_COMMAND, 1, data(M.CMD_RESTART), False, 1, err(M.ERR_LOCKED)),
    # a broadcast lock is taken
    (M.HR_UNLOCK, 1, data(PIN), False, 0, 0),
    (M.HR_UNLOCK, 1, data(0), True, 0, ANY),
    (A_CELL_OV_WARN, 1, data(3500), False, 1, err(M.ERR_LOCKED)),
)

# wrong PINs on a fresh Config: four tries left ... none, then the lockout
# (the right PIN refused too), and after the minute the right PIN works
PIN_CASES = (
    (0, data(1), 3, err(M.ERR_BAD_PIN, 4)),
    (10, data(4321), 3, err(M.ERR_BAD_PIN, 3)),
    (20, data(0xFFFF), 3, err(M.ERR_BAD_PIN, 2)),
    (30, data(PIN - 1), 3, err(M.ERR_BAD_PIN, 1)),
    (40, data(7), 3, err(M.ERR_BAD_PIN, 0)),
    (1040, data(PIN), 3, err(M.ERR_PIN_LOCKOUT, 60)),
    (30040, data(8), 3, err(M.ERR_PIN_LOCKOUT, 31)),
    (60040, data(PIN), 0, 0),
)

hr = RegisterImage(M.HR_SIZE)
ir = RegisterImage(M.IR_SIZE, _input_mapped())
logged = array("l", [0])


def log(code, value, time_s):
    logged[0] += 1


cfg = Config(prm, hr, ir, log)
hr2 = RegisterImage(M.HR_SIZE)
ir2 = RegisterImage(M.IR_SIZE, _input_mapped())
cfg2 = Config(prm, hr2, ir2, log)

got = array("l", [0] * (2 * (len(CASES) + len(PIN_CASES))))
state = array("l", [0, -1])  # [0]: 0 running, 1 done, 2 MemoryError; [1]: the case


def run():
    now = 5000
    k = 0
    n = len(CASES)
    while k < n:
        state[1] = k
        c = CASES[k]
        got[2 * k] = cfg.write(c[0], c[1], c[2], OFF, c[3], now)
        got[2 * k + 1] = cfg.error
        now += 100
        k += 1
    j = 0
    base = 1000000
    while j < len(PIN_CASES):
        state[1] = n + j
        c = PIN_CASES[j]
        got[2 * (n + j)] = cfg2.write(M.HR_UNLOCK, 1, c[1], OFF, False, base + c[0])
        got[2 * (n + j) + 1] = cfg2.error
        j += 1
    state[0] = 1


def main():
    ok = False
    micropython.heap_lock()
    try:
        bytearray(8)
    except MemoryError:
        ok = True
    finally:
        micropython.heap_unlock()
    if not ok:
        fail("heap_lock does not stop allocation in this build")

    v = prm.values
    before_warn = v[P.P_CELL_OV_WARN_MV]
    micropython.heap_lock()
    try:
        run()
    except MemoryError:
        state[0] = 2
    finally:
        micropython.heap_unlock()
    if state[0] == 2:
        fail("allocation (MemoryError) in Config.write, case", state[1])
    if state[0] != 1:
        fail("did not finish, case", state[1])

    n = len(CASES)
    for k in range(n + len(PIN_CASES)):
        if k < n:
            code, error = CASES[k][4], CASES[k][5]
        else:
            code, error = PIN_CASES[k - n][2], PIN_CASES[k - n][3]
        if got[2 * k] != code or (error != ANY and got[2 * k + 1] != error):
            fail("case %d: code %d error 0x%04X, wanted %d 0x%04X" % (k, got[2 * k], got[2 * k + 1], code, error))

    # what the accepted writes changed, and nothing else
    want = ((P.P_CELL_OV_WARN_MV, 3590), (P.P_CELL_OV_MV, 3640), (P.P_CELL_OV_DELAY_MS, 3000),
            (P.P_CELL_OV_RELEASE_MV, 3440), (P.P_CAPACITY_MAH, 120000), (P.P_CHG_OC_MA, 100000),
            (P.P_CHEMISTRY, P.CHEM_LFP))
    for i, x in want:
        if v[i] != x:
            fail("parameter %d is %d, wanted %d" % (i, v[i], x))
    if before_warn == 3590:
        fail("the first accepted write changed nothing")
    w = hr.words
    if (w[A_CELL_OV], w[A_CELL_OV_DELAY], w[A_CELL_OV_DELAY + 1], w[A_CELL_OV_RELEASE]) != (3640, 0, 3000, 3440):
        fail("holding image not updated:", w[A_CELL_OV], w[A_CELL_OV_DELAY + 1], w[A_CELL_OV_RELEASE])
    if (w[A_CAPACITY], w[A_CAPACITY + 1]) != (0x0001, 0xD4C0):
        fail("holding image of capacity_mah:", w[A_CAPACITY], w[A_CAPACITY + 1])
    if ir.words[M.IR_CONFIG_ERROR] != cfg.error or cfg.error != err(M.ERR_LOCKED):
        fail("IR_CONFIG_ERROR", ir.words[M.IR_CONFIG_ERROR], "error", cfg.error)
    if not cfg.pending & APPLY or not cfg.pending & CLEAR_LATCHED:
        fail("pending work", cfg.pending)
    if cfg.unlocked or not cfg2.unlocked or cfg2.locked_out:
        fail("lock state", cfg.unlocked, cfg2.unlocked, cfg2.locked_out)
    if logged[0]:
        fail("write() logged: logging is service()'s")
    print("OK")


main()
