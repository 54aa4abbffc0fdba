"""Store and forward: a bounded ring of fixed-size records in one
preallocated bytearray.

While the network or the broker is away, telemetry keeps a state sample now
and then here, and sends them oldest first when the link returns. When the
ring is full the oldest record makes room and `dropped` counts it: the
memory is fixed at construction, whatever the outage. Nothing allocates
after construction.
"""


class Ring:
    def __init__(self, record_size, capacity):
        self.size = record_size
        self.capacity = capacity
        self.buf = bytearray(record_size * capacity)
        self.head = 0  # the oldest record's slot
        self.count = 0
        self.dropped = 0  # records pushed out by newer ones since construction

    def push(self, rec):
        """Keep rec (record_size bytes, any buffer); when full, the oldest goes."""
        if self.count == self.capacity:
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
            self.dropped += 1
        slot = (self.head + self.count) % self.capacity
        b = self.buf
        o = slot * self.size
        k = 0
        n = self.size
        while k < n:
            b[o + k] = rec[k]
            k += 1
        self.count += 1

    def oldest_into(self, out):
        """Copy the oldest record into out; False when the ring is empty. The
        record stays until pop(): sent first, then let go."""
        if not self.count:
            return False
        b = self.buf
        o = self.head * self.size
        k = 0
        n = self.size
        while k < n:
            out[k] = b[o + k]
            k += 1
        return True

    def pop(self):
        if self.count:
            self.head = (self.head + 1) % self.capacity
            self.count -= 1

    def clear(self):
        self.head = 0
        self.count = 0
