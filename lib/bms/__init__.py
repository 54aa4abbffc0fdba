"""The ESP32 BMS firmware."""

VERSION = "0.4.0"


def release(name):
    """Let the boot-only module bms.<name> ("paramload", "gen.packed") go
    once it has done its work: drop the two references its import left
    (sys.modules and its package's attribute) so the collector frees its
    code and tables. The caller must hold no reference of its own. Under
    CPython (the host's tests and tools, which share the module) nothing is
    dropped."""
    import sys

    if sys.implementation.name != "micropython":
        return
    full = "bms." + name
    if full in sys.modules:
        del sys.modules[full]
    k = full.rfind(".")
    parent = sys.modules.get(full[:k])
    if parent is not None:
        g = parent.__dict__
        leaf = full[k + 1:]
        if leaf in g:
            del g[leaf]
