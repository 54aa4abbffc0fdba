"""CPython stand-in for MicroPython's `micropython` module (host only).

Lets the firmware modules in lib/ import under CPython for unit and
property tests and for the host tools. Only what lib/ uses is here.
"""


def const(value):
    return value


def native(func):
    return func


def viper(func):
    return func


def heap_lock():
    return 0


def heap_unlock():
    return 0
