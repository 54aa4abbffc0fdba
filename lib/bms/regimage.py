"""A table of 16-bit registers as the Modbus slave reads it.

The control loop writes values once per cycle; the Modbus path copies words
out. Both sides run in the same thread, so a reply is always one cycle's
consistent snapshot. Nothing here allocates after construction.
"""
from array import array


class RegisterImage:
    def __init__(self, size, mapped=None):
        """mapped: bytearray(size), 1 where a register is mapped
        (bms.spec.regtable.mapped_mask), or None to map ranges later."""
        self.words = array("H", bytes(2 * size))
        self.mapped = mapped if mapped is not None else bytearray(size)
        self.size = size

    def map(self, addr, count):
        m = self.mapped
        while count:
            m[addr] = 1
            addr += 1
            count -= 1

    def set_u16(self, addr, value):
        self.words[addr] = value & 0xFFFF

    def set_u32(self, addr, value):
        w = self.words
        w[addr] = (value >> 16) & 0xFFFF
        w[addr + 1] = value & 0xFFFF

    def read_into(self, addr, count, out, off):
        """Copy count registers big-endian into out[off:]; 0 or exception 02."""
        end = addr + count
        if end > self.size:
            return 2
        m = self.mapped
        w = self.words
        a = addr
        while a < end:
            if not m[a]:
                return 2
            v = w[a]
            out[off] = v >> 8
            out[off + 1] = v & 0xFF
            off += 2
            a += 1
        return 0
