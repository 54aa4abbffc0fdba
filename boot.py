"""Runs before main.py on the device."""
import micropython

# Room to report an exception raised where the heap cannot be used. The unix
# port (the simulator's twin) has no such buffer.
if hasattr(micropython, "alloc_emergency_exception_buf"):
    micropython.alloc_emergency_exception_buf(100)
