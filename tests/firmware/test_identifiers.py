"""One definition per identifier (issue 17): no public module-level name is
defined in two firmware modules, and every event code is one code."""
import ast
import collections
import os

from bms import events as E
from conftest import LIB


def public_definitions():
    """{name: [module path, ...]} of every public UPPER_CASE module-level
    assignment under lib/bms (the device's modules and the host-only
    tables alike)."""
    out = collections.defaultdict(list)
    for d, dirs, fs in os.walk(os.path.join(LIB, "bms")):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for f in fs:
            if not f.endswith(".py"):
                continue
            path = os.path.join(d, f)
            with open(path) as fh:
                tree = ast.parse(fh.read())
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name) and t.id.isupper() and not t.id.startswith("_"):
                            out[t.id].append(os.path.relpath(path, LIB))
    return out


def test_no_public_name_is_defined_twice():
    twice = {k: v for k, v in public_definitions().items() if len(v) > 1}
    assert not twice, "defined in more than one module (import it from one): %s" % twice


def test_every_event_code_is_one_code():
    codes = {}
    for name in dir(E):
        if name.startswith("EV_") and name not in ("EV_TRIP", "EV_RELEASE", "EV_LATCH"):
            v = getattr(E, name)
            assert v not in codes, "%s and %s are both %d" % (codes.get(v), name, v)
            assert 200 <= v < 256, "%s = %d: application codes are 200..255 (1..191 are the table's)" % (name, v)
            codes[v] = name
