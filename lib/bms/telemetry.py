"""The telemetry state message: one JSON document of the pack's state,
written from the input-register image into a preallocated buffer.

It reads what a Modbus master reads (bms.regimage, filled once a cycle by
App.publish), so a message is one cycle's consistent snapshot in the units
the register map gives, and it allocates nothing: numbers are formatted
digit by digit into the buffer, keys are bytes constants. The network code
(issue 8: MQTT) sends the first `StateWriter.state(words)` bytes of
`StateWriter.buf` as they are. While the link is down, `sample_into` packs
the main values into a 34-byte record for the store-and-forward ring
(bms.sfring), and `StateWriter.sample` writes its document when it is sent.

    {"uptime_s": 754, "mode": "working", "pack_v": 13.281, "current_a": -4.988,
     "power_w": -66.2, "soc_pct": 58.3, "remaining_ah": 5.83, "remaining_wh": 74.8,
     "soh_pct": 100.0, "cycles": 0.11, "cells_v": [3.225, 3.229, 3.231, 3.232],
     "cell_min_v": 3.225, "cell_max_v": 3.232, "cell_delta_mv": 7,
     "temps_c": [25.0, null, null], "chg_fet": true, "dsg_fet": true,
     "balancing": 0, "warnings": 0, "protections": 0, "latched": 0, "soc_state": 0,
     "self_draw_ma": 40.040, "self_drawn_ah": 0.012}

Flags are the register map's bit masks (docs/registers.md): bit n of
"protections" and "latched" is the n-th protection row of bms.spec.protrules,
of "warnings" the n-th warning row; "soc_state" holds the SOC_ bits.
"""
from micropython import const

from bms import regmap as M

MESSAGE_SIZE = const(640)  # the longest message: 626 B (16 cells, three sensors, every value at its widest)
_MODES = (b"working", b"low_power", b"sleep")


class StateWriter:
    def __init__(self, size=MESSAGE_SIZE):
        self.buf = bytearray(size)
        self._digits = bytearray(20)  # any 64-bit integer
        self.n = 0

    # -- the pieces, none of which allocates ------------------------------

    def _lit(self, s):
        b = self.buf
        n = self.n
        k = 0
        m = len(s)
        while k < m:
            b[n] = s[k]
            n += 1
            k += 1
        self.n = n

    def _int(self, v):
        b = self.buf
        n = self.n
        if v < 0:
            b[n] = 0x2D  # -
            n += 1
            v = -v
        d = self._digits
        k = 0
        while True:
            d[k] = 0x30 + v % 10
            k += 1
            v //= 10
            if not v:
                break
        while k:
            k -= 1
            b[n] = d[k]
            n += 1
        self.n = n

    def _fixed(self, v, places):
        """v / 10**places with exactly `places` decimals (v an integer)."""
        if v < 0:
            self.buf[self.n] = 0x2D
            self.n += 1
            v = -v
        scale = 10 ** places
        self._int(v // scale)
        self.buf[self.n] = 0x2E  # .
        self.n += 1
        f = v % scale
        while places:
            places -= 1
            scale //= 10
            self.buf[self.n] = 0x30 + (f // scale) % 10
            self.n += 1

    def _head(self, uptime_s, mode, pack_mv, current_ma):
        self._lit(b'{"uptime_s":')
        self._int(uptime_s)
        self._lit(b',"mode":"')
        self._lit(_MODES[mode] if mode < 3 else b"unknown")
        self._lit(b'","pack_v":')
        self._fixed(pack_mv, 3)
        self._lit(b',"current_a":')
        self._fixed(current_ma, 3)
        # mW to the mW in two products that stay small integers on the ESP32
        # (mV x mA would pass 2**30), then 0.1 W rounded
        a = current_ma if current_ma >= 0 else -current_ma
        p_mw = pack_mv * (a // 1000) + pack_mv * (a % 1000) // 1000
        p_dw = (p_mw + 50) // 100
        if current_ma < 0:
            p_dw = -p_dw
        self._lit(b',"power_w":')
        self._fixed(p_dw, 1)

    def _temp(self, t):
        t = t - 0x10000 if t & 0x8000 else t
        if t == M.TEMP_INVALID:
            self._lit(b"null")
        else:
            self._fixed(t, 1)

    def _fets(self, fets):
        self._lit(b',"chg_fet":')
        self._lit(b"true" if fets & M.FET_CHG else b"false")
        self._lit(b',"dsg_fet":')
        self._lit(b"true" if fets & M.FET_DSG else b"false")

    # -- the messages -----------------------------------------------------

    def state(self, words):
        """Write the state document from the input-register words (an
        array('H') indexed by register address) into buf; its length."""
        w = words
        self.n = 0
        self._head(_u32(w, M.IR_UPTIME_S), w[M.IR_POWER_MODE], _u32(w, M.IR_PACK_MV), _i32(w, M.IR_CURRENT_MA))
        self._lit(b',"soc_pct":')
        self._fixed(w[M.IR_SOC_DPCT], 1)
        self._lit(b',"remaining_ah":')
        self._fixed(_u32(w, M.IR_REMAINING_MAH), 3)
        self._lit(b',"remaining_wh":')
        self._fixed(_u32(w, M.IR_REMAINING_DWH), 1)
        self._lit(b',"soh_pct":')
        self._fixed(w[M.IR_SOH_DPCT], 1)
        self._lit(b',"cycles":')
        self._fixed(_u32(w, M.IR_CYCLES_DC), 2)
        self._lit(b',"cells_v":[')
        cells = w[M.IR_CELL_COUNT]
        if cells > M.MAX_CELLS:
            cells = M.MAX_CELLS  # never past the cell registers, whatever the count says
        i = 0
        while i < cells:
            if i:
                self._lit(b",")
            self._fixed(w[M.IR_CELL_MV + i], 3)
            i += 1
        self._lit(b'],"cell_min_v":')
        self._fixed(w[M.IR_CELL_MIN_MV], 3)
        self._lit(b',"cell_max_v":')
        self._fixed(w[M.IR_CELL_MAX_MV], 3)
        self._lit(b',"cell_delta_mv":')
        self._int(w[M.IR_CELL_SPREAD_MV])
        self._lit(b',"temps_c":[')
        self._temp(w[M.IR_TEMP_DC])
        self._lit(b",")
        self._temp(w[M.IR_TEMP_DC + 1])
        self._lit(b",")
        self._temp(w[M.IR_TEMP_DC + 2])
        self._lit(b"]")
        self._fets(w[M.IR_FET_FLAGS])
        self._lit(b',"balancing":')
        self._int(w[M.IR_BALANCE_MASK])
        self._lit(b',"warnings":')
        self._int(_u32(w, M.IR_WARN_FLAGS))
        self._lit(b',"protections":')
        self._int(_u32(w, M.IR_PROTECT_FLAGS))
        self._lit(b',"latched":')
        self._int(_u32(w, M.IR_LATCHED_FLAGS))
        # the SOC window and storage (regmap SOC_ bits), the board's own draw
        self._lit(b',"soc_state":')
        self._int(w[M.IR_SOC_STATE])
        self._lit(b',"self_draw_ma":')
        self._fixed(_u32(w, M.IR_DRAW_UA), 3)
        self._lit(b',"self_drawn_ah":')
        self._fixed(_u32(w, M.IR_DRAWN_MAH), 3)
        self._lit(b"}")
        return self.n

    def sample(self, rec):
        """Write the document of a stored sample (sample_into's record):
        the state's main values, with "stored": true; its length."""
        self.n = 0
        self._head(_get(rec, 0, 4), rec[25], _get(rec, 4, 4), _get_i32(rec, 8))
        self._lit(b',"soc_pct":')
        self._fixed(_get(rec, 12, 2), 1)
        self._lit(b',"cell_min_v":')
        self._fixed(_get(rec, 14, 2), 3)
        self._lit(b',"cell_max_v":')
        self._fixed(_get(rec, 16, 2), 3)
        self._lit(b',"temps_c":[')
        self._temp(_get(rec, 18, 2))
        self._lit(b",")
        self._temp(_get(rec, 20, 2))
        self._lit(b",")
        self._temp(_get(rec, 22, 2))
        self._lit(b"]")
        self._fets(rec[24])
        self._lit(b',"warnings":')
        self._int(_get(rec, 26, 4))
        self._lit(b',"protections":')
        self._int(_get(rec, 30, 4))
        self._lit(b',"stored":true}')
        return self.n


# A stored sample, little-endian: uptime_s u32, pack_mv u32, current_ma i32,
# soc_dpct u16, cell_min_mv u16, cell_max_mv u16, three temperatures i16
# (0.1 degC), FET flags u8, power mode u8, warning flags u32, protection
# flags u32.
SAMPLE_SIZE = const(34)


def sample_into(words, rec):
    """Pack the state's main values from the register words into rec
    (SAMPLE_SIZE bytes) for the store-and-forward ring."""
    w = words
    _put(rec, 0, 2, w[M.IR_UPTIME_S + 1])
    _put(rec, 2, 2, w[M.IR_UPTIME_S])
    _put(rec, 4, 2, w[M.IR_PACK_MV + 1])
    _put(rec, 6, 2, w[M.IR_PACK_MV])
    _put(rec, 8, 2, w[M.IR_CURRENT_MA + 1])
    _put(rec, 10, 2, w[M.IR_CURRENT_MA])
    _put(rec, 12, 2, w[M.IR_SOC_DPCT])
    _put(rec, 14, 2, w[M.IR_CELL_MIN_MV])
    _put(rec, 16, 2, w[M.IR_CELL_MAX_MV])
    _put(rec, 18, 2, w[M.IR_TEMP_DC])
    _put(rec, 20, 2, w[M.IR_TEMP_DC + 1])
    _put(rec, 22, 2, w[M.IR_TEMP_DC + 2])
    rec[24] = w[M.IR_FET_FLAGS] & 0xFF
    mode = w[M.IR_POWER_MODE]
    rec[25] = mode if mode < 3 else 0xFF
    _put(rec, 26, 2, w[M.IR_WARN_FLAGS + 1])
    _put(rec, 28, 2, w[M.IR_WARN_FLAGS])
    _put(rec, 30, 2, w[M.IR_PROTECT_FLAGS + 1])
    _put(rec, 32, 2, w[M.IR_PROTECT_FLAGS])


def _put(b, o, n, v):
    while n:
        b[o] = v & 0xFF
        v >>= 8
        o += 1
        n -= 1


def _get(b, o, n):
    v = 0
    while n:
        n -= 1
        v = (v << 8) | b[o + n]
    return v


def _get_i32(b, o):
    if b[o + 3] & 0x80:
        return -((((~b[o + 3]) & 0xFF) << 24) | (((~b[o + 2]) & 0xFF) << 16)
                 | (((~b[o + 1]) & 0xFF) << 8) | ((~b[o]) & 0xFF)) - 1
    return _get(b, o, 4)


def _u32(w, a):
    # high word first; the values here stay under 2**30 (no big int on the ESP32)
    return (w[a] << 16) | w[a + 1]


def _i32(w, a):
    hi = w[a]
    if hi & 0x8000:
        return -((((~hi) & 0xFFFF) << 16) | ((~w[a + 1]) & 0xFFFF)) - 1
    return (hi << 16) | w[a + 1]
