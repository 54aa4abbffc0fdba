# bms.release() lets boot-only modules go, dotted names too: after it,
# neither sys.modules nor the parent package holds them, and the collector
# gets their memory back.
import gc
import sys

import bms


def cycle():
    """Import the two boot-only modules, release them: (took, freed) bytes."""
    gc.collect()
    before = gc.mem_alloc()
    import bms.gen.packed  # noqa: F401
    import bms.afe.chips  # noqa: F401

    gc.collect()
    loaded = gc.mem_alloc()
    bms.release("gen.packed")
    bms.release("gen")
    bms.release("afe.chips")
    gc.collect()
    after = gc.mem_alloc()
    gone = [m for m in ("bms.gen.packed", "bms.gen", "bms.afe.chips") if m in sys.modules]
    held = [n for n in ("gen",) if n in bms.__dict__] + [n for n in ("chips",) if n in sys.modules["bms.afe"].__dict__]
    if gone or held:
        raise SystemExit("still held: %s %s" % (gone, held))
    return loaded - before, loaded - after


# Loaded from .mpy files (not frozen), the first import also interns the
# modules' names in the heap, and MicroPython never frees interned strings:
# the second cycle measures what release() is for, on either target.
cycle()
took, freed = cycle()
print("OK", took, freed)
