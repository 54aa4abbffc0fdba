"""Parameter writes over Modbus: the lock, validation, and what follows.

A write is judged whole before anything changes: every register of the
range mapped, no 32-bit parameter written in part, every value inside its
range and, once the pack is configured, the whole resulting set passing
the consistency rules (bms.paramcheck). Rejected: an exception code and
`error` (reason << 8 | detail, published as IR_CONFIG_ERROR) says why;
nothing changed. Accepted: the values and the holding-register image
change at once, and `service()`, run by the main loop after the reply has
gone out, saves the set to flash, logs every change and applies it.

Writes need an unlock: the PIN (parameter `pin`) written to HR_UNLOCK
opens them for `unlock_timeout_s`, renewed by each accepted write; 0
written there locks again. Five wrong PINs refuse unlocking for a minute.
A broadcast is applied only when it is a lock: parameters are never
broadcast.

`write()` allocates nothing (the Modbus reply path); `service()` may
(files), and runs outside it.
"""
from array import array

from micropython import const

from bms import paramcheck as C
from bms import params as P
from bms import regmap as M
from bms.ticks import ticks_diff
from bms.events import EV_PARAM_SET, EV_PARAM_SET_K, EV_UNLOCKED, EV_LOCKED, EV_BAD_PIN, EV_COMMAND, EV_STORE_SAVE

_NONE = const(0xFF)  # not a parameter's first register
_SECOND = const(0xFE)  # the low word of a 32-bit parameter
_RESERVED = const(0xFD)  # reads 0, takes only 0 (bms.regmap HR_RESERVED)
_MAX_BAD_PINS = const(5)
_LOCKOUT_MS = const(60000)
_RETRY_MIN_MS = const(1000)  # a failed save is tried again after this, doubling
_RETRY_MAX_MS = const(64000)  # up to this: a lasting failure does not wear the flash

# What a change needs before it takes effect.
_RESTART_KEYS = (P.P_CHEMISTRY, P.P_CELL_CHANNELS, P.P_CAPACITY_MAH, P.P_SHUNT_UOHM,
                 P.P_AFE_GROUPS, P.P_AFE_ADDR, P.P_TEMP_SENSORS, P.P_FET_TEMP_SENSOR, P.P_AFE_TYPE)
_COMM_KEYS = (P.P_MODBUS_ADDRESS, P.P_MODBUS_BAUD, P.P_MODBUS_PARITY)

# service() results, bits
APPLY = const(1)  # live parameters changed: apply them
COMM = const(2)  # address, baud or parity changed: apply now (the reply has gone)
RESTART = const(4)  # restart now (a command)
FACTORY_RESET = const(8)  # erase the stored set, then restart
CLEAR_LATCHED = const(16)


class Config:
    def __init__(self, prm, hr, ir, log):
        """prm: bms.params.Params (its store saves); hr/ir: the register
        images; log(code, value) appends to the event log."""
        self.prm = prm
        self.v = prm.values
        self.hr = hr
        self.ir = ir
        self.log = log
        self.staged = array("i", bytes(4 * P.COUNT))
        self.changed = bytearray(P.COUNT)
        self.first = bytearray(M.HR_SIZE)  # address -> parameter index
        k = 0
        while k < M.HR_SIZE:
            self.first[k] = _NONE
            k += 1
        i = 0
        while i < P.COUNT:
            a = prm.addr[i]
            self.first[a] = i
            if prm.flags[i] & P.WIDE:
                self.first[a + 1] = _SECOND
            i += 1
        a = M.HR_RESERVED
        while a < M.HR_RESERVED + M.HR_RESERVED_COUNT:
            self.first[a] = _RESERVED
            a += 1
        hr.map(M.HR_RESERVED, M.HR_RESERVED_COUNT)
        self.running_configured = prm.configured()
        self.unlocked = False
        self.unlocked_at = 0
        self.bad_pins = 0
        self.lockout_at = 0
        self.locked_out = False
        self.error = 0
        self.pending = 0  # service() work: bits below
        self.saves = 0
        # the stored set is behind the values (a save failed): service()
        # tries again after retry_ms, which doubles while it keeps failing
        self.save_failed = prm.save_failing() != 0  # bms.cfg taken in, not stored
        self.retry_at = 0
        self.retry_ms = 0
        self.restart_pending = False
        self.command = 0
        self.ev_lock = 0  # 1 unlocked, 2 locked, 3 wrong PIN: to log after the reply
        hr.map(M.HR_UNLOCK, 2)
        self.publish_all()

    # -- register images ----------------------------------------------------

    def publish_all(self):
        i = 0
        while i < P.COUNT:
            self._publish(i)
            i += 1
        self.publish_state(0)

    def _publish(self, i):
        prm = self.prm
        a = prm.addr[i]
        value = 0 if i == P.P_PIN else self.v[i]  # the PIN is never read back
        if prm.flags[i] & P.WIDE:
            self.hr.map(a, 2)
            self.hr.set_u32(a, value)
        else:
            self.hr.map(a, 1)
            self.hr.set_u16(a, value)

    def publish_state(self, now):
        if self.unlocked and ticks_diff(now, self.unlocked_at) >= self.v[P.P_UNLOCK_TIMEOUT_S] * 1000:
            self.unlocked = False
            self.ev_lock = 2
        if self.locked_out and ticks_diff(now, self.lockout_at) >= _LOCKOUT_MS:
            self.locked_out = False
            self.bad_pins = 0
        s = 0
        if self.running_configured:
            s |= M.CFG_CONFIGURED
        if self.unlocked:
            s |= M.CFG_UNLOCKED
        if self.restart_pending:
            s |= M.CFG_RESTART_PENDING
        if self.save_failed:
            s |= M.CFG_SAVE_FAILED
        if self.locked_out:
            s |= M.CFG_PIN_LOCKOUT
        ir = self.ir
        ir.set_u16(M.IR_CONFIG_STATE, s)
        ir.set_u16(M.IR_CONFIG_ERROR, self.error)
        left = 0
        if self.unlocked:
            left = self.v[P.P_UNLOCK_TIMEOUT_S] - ticks_diff(now, self.unlocked_at) // 1000
        ir.set_u16(M.IR_UNLOCK_LEFT_S, left if left > 0 else 0)
        ir.set_u32(M.IR_PARAM_SAVES, self.saves)
        self.hr.set_u16(M.HR_UNLOCK, 1 if self.unlocked else 0)

    def _refuse(self, code, reason, detail):
        self.error = (reason << 8) | (detail & 0xFF)
        self.ir.set_u16(M.IR_CONFIG_ERROR, self.error)
        return code

    # -- the Modbus write -----------------------------------------------------

    def write(self, addr, count, data, off, broadcast, now):
        """Registers addr..addr+count-1 from big-endian words at data[off:].
        0, or the Modbus exception code (nothing changed)."""
        end = addr + count
        if end > M.HR_SIZE:
            return 2 if broadcast else self._refuse(2, M.ERR_UNMAPPED, 0)
        if end > M.HR_UNLOCK and addr < M.HR_SIZE:
            if addr < M.HR_UNLOCK or count != 1:
                return 2 if broadcast else self._refuse(2, M.ERR_CONTROL_SPAN, 0)
            value = (data[off] << 8) | data[off + 1]
            if addr == M.HR_UNLOCK:
                return self._unlock(value, broadcast, now)
            return self._command(value, broadcast, now)
        first = self.first
        a = addr
        while a < end:
            if first[a] == _NONE:
                return 2 if broadcast else self._refuse(2, M.ERR_UNMAPPED, 0)
            a += 1
        if broadcast:
            return 0  # parameters are never taken from a broadcast
        self.publish_state(now)
        if not self.unlocked:
            return self._refuse(1, M.ERR_LOCKED, 0)
        if first[addr] == _SECOND:
            return self._refuse(2, M.ERR_SPLIT, first[addr - 1])
        last = first[end - 1]
        if last < P.COUNT and self.prm.flags[last] & P.WIDE:
            return self._refuse(2, M.ERR_SPLIT, last)
        v = self.v
        st = self.staged
        prm = self.prm
        i = 0
        while i < P.COUNT:
            st[i] = v[i]
            i += 1
        a = addr
        while a < end:
            i = first[a]
            k = off + 2 * (a - addr)
            w = (data[k] << 8) | data[k + 1]
            if i == _RESERVED:
                if w:
                    return self._refuse(3, M.ERR_RESERVED, a)
                a += 1
                continue
            if prm.flags[i] & P.WIDE:
                if w >= 0x4000:
                    # above every 32-bit parameter's range; refused before it
                    # becomes a number too big for a small int on the ESP32
                    return self._refuse(3, M.ERR_RANGE, i)
                w = (w << 16) | (data[k + 2] << 8) | data[k + 3]
                a += 2
            else:
                if prm.flags[i] & P.SIGNED and w & 0x8000:
                    w -= 0x10000
                a += 1
            if w < prm.lo[i] or w > prm.hi[i]:
                return self._refuse(3, M.ERR_RANGE, i)
            st[i] = w
        same = True
        i = 0
        while i < P.COUNT:
            if st[i] != v[i]:
                same = False
                break
            i += 1
        self.unlocked_at = now  # an accepted write renews the unlock
        if same:
            self._accepted()
            return 0
        if C.configured(st):
            # becoming (or staying) configured: every value must be in range,
            # not only the ones written now
            i = 0
            while i < P.COUNT:
                if st[i] < prm.lo[i] or st[i] > prm.hi[i]:
                    return self._refuse(3, M.ERR_RANGE, i)
                i += 1
        elif C.configured(v):
            return self._refuse(3, M.ERR_UNCONFIGURE, 0)
        r = C.check(st)
        if r:
            return self._refuse(3, M.ERR_RULE, r)
        i = 0
        n = 0
        while i < P.COUNT:
            if st[i] != v[i]:
                v[i] = st[i]
                self.changed[i] = 1
                self._publish(i)
                n += 1
            i += 1
        self._accepted()
        if n:  # a write of the values already set: nothing to apply, log or save
            self.pending |= APPLY
        return 0

    def _accepted(self):
        self.error = 0
        self.ir.set_u16(M.IR_CONFIG_ERROR, 0)

    def _unlock(self, value, broadcast, now):
        if value == 0:
            if self.unlocked:
                self.ev_lock = 2
            self.unlocked = False
            self.hr.set_u16(M.HR_UNLOCK, 0)
            if not broadcast:
                self._accepted()
            return 0
        if broadcast:
            return 0  # only a lock is taken from a broadcast
        self.publish_state(now)
        if self.locked_out:
            left = (_LOCKOUT_MS - ticks_diff(now, self.lockout_at)) // 1000 + 1
            return self._refuse(3, M.ERR_PIN_LOCKOUT, left if left < 255 else 255)
        if value != self.v[P.P_PIN]:
            self.bad_pins += 1
            self.ev_lock = 3
            if self.bad_pins >= _MAX_BAD_PINS:
                self.locked_out = True
                self.lockout_at = now
            return self._refuse(3, M.ERR_BAD_PIN, _MAX_BAD_PINS - self.bad_pins)
        self.bad_pins = 0
        if not self.unlocked:
            self.ev_lock = 1
        self.unlocked = True
        self.unlocked_at = now
        self._accepted()
        self.hr.set_u16(M.HR_UNLOCK, 1)
        return 0

    def _command(self, value, broadcast, now):
        if broadcast:
            return 0
        self.publish_state(now)
        if not self.unlocked:
            return self._refuse(1, M.ERR_LOCKED, 0)
        if value == M.CMD_RESTART:
            self.pending |= RESTART
        elif value == M.CMD_CLEAR_LATCHED:
            self.pending |= CLEAR_LATCHED
        elif value == M.CMD_FACTORY_RESET:
            self.pending |= FACTORY_RESET
        elif value == M.CMD_STORAGE_ON or value == M.CMD_STORAGE_OFF:
            # the parameter `storage`, as if written: checked, saved, applied
            want = 1 if value == M.CMD_STORAGE_ON else 0
            v = self.v
            if v[P.P_STORAGE] != want:
                st = self.staged
                i = 0
                while i < P.COUNT:
                    st[i] = v[i]
                    i += 1
                st[P.P_STORAGE] = want
                r = C.check(st)
                if r:
                    return self._refuse(3, M.ERR_RULE, r)
                v[P.P_STORAGE] = want
                self.changed[P.P_STORAGE] = 1
                self._publish(P.P_STORAGE)
                self.pending |= APPLY
        else:
            return self._refuse(3, M.ERR_COMMAND, value)
        self.command = value
        self.unlocked_at = now
        self._accepted()
        return 0

    # -- after the reply --------------------------------------------------------

    def service(self, now, time_s):
        """Save, log and report what the last writes changed. Returns the
        APPLY/COMM/RESTART/FACTORY_RESET/CLEAR_LATCHED work for the caller,
        which owns the hardware. Runs after the reply has gone out."""
        ev = self.ev_lock
        if ev:
            self.ev_lock = 0
            if ev == 1:
                self.log(EV_UNLOCKED, 0, time_s)
            elif ev == 2:
                self.log(EV_LOCKED, 0, time_s)
            else:
                self.log(EV_BAD_PIN, self.bad_pins, time_s)
        work = self.pending
        if not work:
            # retry_ms 0: failed at boot (a bms.cfg taken in), not yet here: try now
            if self.save_failed and (not self.retry_ms or ticks_diff(now, self.retry_at) >= self.retry_ms):
                self.save(now, time_s)
                self.publish_state(now)
            return 0
        self.pending = 0
        if self.command:
            self.log(EV_COMMAND, self.command, time_s)
            self.command = 0
        if work & APPLY:
            comm = False
            restart = False
            i = 0
            while i < P.COUNT:
                if self.changed[i]:
                    self.changed[i] = 0
                    self._log_change(i, time_s)
                    if i in _COMM_KEYS:
                        comm = True
                    if i in _RESTART_KEYS:
                        restart = True
                i += 1
            self.save(now, time_s)
            if restart or (not self.running_configured and self.prm.configured()):
                self.restart_pending = True
            if comm:
                work |= COMM
        self.publish_state(now)
        return work

    def save(self, now, time_s):
        """The set to flash. A failure (no heap, the filesystem refused)
        never raises: the store counts it and keeps the old record, the
        values stay, CFG_SAVE_FAILED is set, and service() tries again
        after a back-off (1 s doubling to 64 s). EV_STORE_SAVE is logged
        when saving starts failing and when it works again, not per retry."""
        prm = self.prm
        was = prm.save_failing()
        if prm.save():
            self.saves += 1
            self.save_failed = False
            self.retry_ms = 0
        else:
            self.save_failed = True
            self.retry_at = now
            r = self.retry_ms * 2
            self.retry_ms = _RETRY_MIN_MS if r < _RETRY_MIN_MS else (_RETRY_MAX_MS if r > _RETRY_MAX_MS else r)
        log_save(self.log, SAVE_PARAMS, was, prm.save_failing(), time_s)
        return not self.save_failed

    def _log_change(self, i, time_s):
        # value: the register address above bit 20, the new value below
        # (20-bit signed; in thousands when it does not fit: capacities,
        # long delays in ms)
        x = 0 if i == P.P_PIN else self.v[i]
        code = EV_PARAM_SET
        if x >= 0x80000 or x < -0x80000:
            x //= 1000
            code = EV_PARAM_SET_K
        self.log(code, (self.prm.addr[i] << 20) | (x & 0xFFFFF), time_s)


# The stores a save goes to (EV_STORE_SAVE's high byte)
SAVE_PARAMS = const(1)  # the parameter set (params.a/b)
SAVE_SOC = const(2)  # the SOC state (soc.a/b)
SAVE_LIFE = const(3)  # the lifetime counters (life.a/b)


def log_save(log, which, was, failing, time_s):
    """Log EV_STORE_SAVE when a store starts failing (was 0, failing a
    FAIL_ code) or works again, not on every retry."""
    if (was == 0) != (failing == 0):
        log(EV_STORE_SAVE, (which << 8) | failing, time_s)
