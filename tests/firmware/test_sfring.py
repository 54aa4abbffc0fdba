"""The store-and-forward ring (lib/bms/sfring.py) against a plain model:
bounded, oldest first, the oldest dropped and counted when full."""
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from bms.sfring import Ring


@given(st.integers(1, 6), st.integers(1, 9),
       st.lists(st.one_of(st.tuples(st.just("push"), st.binary(min_size=9, max_size=9)),
                          st.just(("pop",)), st.just(("clear",))), max_size=80))
def test_the_ring_behaves_as_a_bounded_queue(size, capacity, ops):
    ring = Ring(size, capacity)
    model = deque()
    dropped = 0
    out = bytearray(size)
    for op in ops:
        if op[0] == "push":
            rec = op[1][:size]
            if len(model) == capacity:
                model.popleft()
                dropped += 1
            model.append(bytes(rec))
            ring.push(rec)
        elif op[0] == "pop":
            ring.pop()
            if model:
                model.popleft()
        else:
            ring.clear()
            model.clear()
        assert ring.count == len(model) <= capacity and ring.dropped == dropped
        assert ring.oldest_into(out) == bool(model)
        if model:
            assert bytes(out) == model[0]
    assert len(ring.buf) == size * capacity  # never grew
