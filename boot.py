"""Runs before main.py on the device."""
import micropython

# Room to report an exception raised where the heap cannot be used.
micropython.alloc_emergency_exception_buf(100)
