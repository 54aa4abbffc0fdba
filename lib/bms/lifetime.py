"""Lifetime counters: what the pack has been through since it was first
configured. Kept in RAM, saved with the SOC state (A/B records, bms.store)
and published as input registers.

Allocation-free in the cycle: small integers only (charge is carried as
whole mAh plus a remainder in mA*ms below one mAh).
"""
import struct

from micropython import const

_MAS_PER_MAH = const(3600000)  # mA*ms in one mAh
_FMT = "<IIIHHhhHH"  # chg mAh, dsg mAh, seconds on, max/min cell mV, max/min temp, trips, spare
LIFE_SIZE = const(24)
_NO_TEMP = const(-32768)


class Lifetime:
    def __init__(self):
        self.chg_mah = 0
        self.dsg_mah = 0
        self.on_s = 0
        self.cell_max_mv = 0
        self.cell_min_mv = 0xFFFF
        self.temp_max_dc = _NO_TEMP
        self.temp_min_dc = 0x7FFF
        self.trips = 0
        self._chg_mas = 0
        self._dsg_mas = 0
        self._on_ms = 0
        self._record = bytearray(LIFE_SIZE)  # encode()'s: a save needs no heap for it

    def update(self, dt_ms, current_ma, cc, cell_min_mv, cell_max_mv, temp_min_dc, temp_max_dc):
        """One cycle: dt_ms since the last, the window's current when cc
        (a fresh coulomb-counter window of 250 ms), the extremes seen."""
        t = self._on_ms + dt_ms
        while t >= 1000:
            t -= 1000
            self.on_s += 1
        self._on_ms = t
        if cc:
            if current_ma > 0:
                m = self._chg_mas + current_ma * 250
                while m >= _MAS_PER_MAH:
                    m -= _MAS_PER_MAH
                    self.chg_mah += 1
                self._chg_mas = m
            elif current_ma < 0:
                m = self._dsg_mas - current_ma * 250
                while m >= _MAS_PER_MAH:
                    m -= _MAS_PER_MAH
                    self.dsg_mah += 1
                self._dsg_mas = m
        if cell_max_mv > self.cell_max_mv:
            self.cell_max_mv = cell_max_mv
        if 0 < cell_min_mv < self.cell_min_mv:
            self.cell_min_mv = cell_min_mv
        if temp_max_dc != _NO_TEMP and temp_max_dc > self.temp_max_dc:
            self.temp_max_dc = temp_max_dc
        if temp_min_dc != 0x7FFF and temp_min_dc < self.temp_min_dc:
            self.temp_min_dc = temp_min_dc

    def encode(self):
        """The stored form, in the same buffer each time."""
        buf = self._record
        struct.pack_into(_FMT, buf, 0, self.chg_mah, self.dsg_mah, self.on_s, self.cell_max_mv,
                         self.cell_min_mv, self.temp_max_dc if self.temp_max_dc != _NO_TEMP else -32768,
                         self.temp_min_dc if self.temp_min_dc != 0x7FFF else 32767, self.trips, 0)
        return buf

    def decode(self, payload):
        """Take a stored record; False when it does not fit (kept as is)."""
        if payload is None or len(payload) < LIFE_SIZE:
            return False
        (self.chg_mah, self.dsg_mah, self.on_s, self.cell_max_mv, self.cell_min_mv,
         self.temp_max_dc, self.temp_min_dc, self.trips, _) = struct.unpack_from(_FMT, payload, 0)
        if self.temp_min_dc == 32767:
            self.temp_min_dc = 0x7FFF
        return True
