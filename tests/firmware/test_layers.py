"""The layer rules of docs/ARCHITECTURE.md, read from its "Layers" table and
checked against every import (module level and inside functions) in lib/
and tools/. A module that breaks a rule, or a firmware module the table
does not place, fails here with the rule it breaks."""
import ast
import os
import re

import pytest

from conftest import LIB, ROOT

DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
TOOLS = os.path.join(ROOT, "tools")
# MicroPython's built-ins the firmware may import (docs/ARCHITECTURE.md, "Import rules")
BUILTINS = {"micropython", "array", "struct", "time", "gc", "sys", "os", "errno", "socket", "select", "ssl",
            "binascii"}
HARDWARE = {"machine", "esp32", "network", "board_pins"}


def layer_table(text=None):
    """{module: layer number} from the doc's table."""
    if text is None:
        with open(DOC) as f:
            text = f.read()
    sec = text.split("### Layers", 1)[1].split("\n#", 1)[0]
    out = {}
    for m in re.finditer(r"^\| (\d+) [^|]*\| ([^|]+) \|$", sec, flags=re.M):
        for name in m.group(2).split(","):
            name = name.strip()
            assert name not in out, "%s is in two rows of the layer table" % name
            out[name] = int(m.group(1))
    assert out, "no layer table found in docs/ARCHITECTURE.md"
    return out


def _module_name(path, base):
    rel = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def modules_under(base, top):
    """{module name: path} of every .py under base/top."""
    out = {}
    for d, dirs, fs in os.walk(os.path.join(base, top)):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in fs:
            if f.endswith(".py"):
                out[_module_name(os.path.join(d, f), base)] = os.path.join(d, f)
    return out


def imports(path, name):
    """Every module `path` imports (absolute names; `from a import b`
    gives a.b when that is a module, else a)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            out.add(mod)
            out |= {mod + "." + a.name for a in node.names}
    return out


FIRMWARE = {m: p for m, p in modules_under(LIB, "bms").items() if not m.startswith("bms.spec")}


def _known(names, universe):
    return {n for n in names if n in universe}


def test_the_table_places_every_firmware_module_once():
    table = layer_table()
    missing = sorted(set(FIRMWARE) - set(table))
    assert not missing, "firmware modules with no row in docs/ARCHITECTURE.md's layer table: %s" % missing
    extra = sorted(set(table) - set(FIRMWARE))
    assert not extra, "the layer table names modules that do not exist: %s" % extra


CHIPS = {"bms.afe." + d for d in os.listdir(os.path.join(LIB, "bms", "afe"))
         if os.path.isfile(os.path.join(LIB, "bms", "afe", d, "__init__.py"))}


def _chip(name):
    """'bms.afe.bq769x0' -> 'bms.afe.bq769x0'; None outside a chip's folder."""
    parts = name.split(".")
    chip = ".".join(parts[:3])
    return chip if chip in CHIPS else None


def layer_violations(table, firmware_imports):
    """[(module, imported, why)] for imports that break the layering."""
    bad = []
    for mod, deps in sorted(firmware_imports.items()):
        mine = table[mod]
        for dep in sorted(deps):
            if dep not in table or dep == mod:
                continue
            theirs = table[dep]
            if theirs == 0 and mine != 0:
                continue
            if _chip(dep) and _chip(dep) == _chip(mod):
                continue  # a chip's driver and its register header
            if mod == "bms.afe.chips" and _chip(dep):
                continue  # the selector
            if theirs >= mine and not (mine == 0 and theirs == 0 and dep != mod):
                bad.append((mod, dep, "layer %d imports layer %d" % (mine, theirs)))
            elif mine == 0 and theirs > 0:
                bad.append((mod, dep, "the vocabulary imports layer %d" % theirs))
    return bad


def _firmware_imports():
    return {m: _known(imports(p, m), FIRMWARE) for m, p in FIRMWARE.items()}


def test_every_import_goes_down_the_layers():
    bad = layer_violations(layer_table(), _firmware_imports())
    assert not bad, "\n".join("%s imports %s: %s (docs/ARCHITECTURE.md, Layers)" % b for b in bad)


def test_the_layer_check_catches_a_part_importing_a_part():
    table = layer_table()
    deps = _firmware_imports()
    deps["bms.protection"] = deps["bms.protection"] | {"bms.soc"}
    deps["bms.soc"] = deps["bms.soc"] | {"bms.app"}
    deps["bms.regmap"] = {"bms.protection"}
    bad = {(m, d) for m, d, _ in layer_violations(table, deps)}
    assert bad == {("bms.protection", "bms.soc"), ("bms.soc", "bms.app"), ("bms.regmap", "bms.protection")}


def test_no_module_outside_a_chips_folder_imports_it():
    chips = {m for m in FIRMWARE if _chip(m) and m != _chip(m)}
    bad = []
    for m, p in FIRMWARE.items():
        if m == "bms.afe.chips" or _chip(m):
            continue
        bad += [(m, d) for d in imports(p, m) if _chip(d)]
    for top in ("bmsctl", "bench"):
        for m, p in modules_under(TOOLS, top).items():
            bad += [(m, d) for d in imports(p, m) if _chip(d)]
    assert chips, "no chip folder found under lib/bms/afe"
    assert not bad, "chip modules imported outside their folder (use bms.afe): %s" % bad


def test_only_the_boards_touch_hardware_and_nothing_reaches_the_host():
    bad = []
    for m, p in FIRMWARE.items():
        for d in imports(p, m):
            top = d.split(".")[0]
            if top in HARDWARE and not m.startswith("bms.boards."):
                bad.append((m, d, "hardware outside bms/boards"))
            elif d.startswith("bms.spec"):
                bad.append((m, d, "host-only (lib/bms/spec)"))
            elif top in ("bms_sim", "bmsctl", "bench"):
                bad.append((m, d, "a host tool"))
            elif top == "umqtt" and m != "bms.uplink":
                bad.append((m, d, "umqtt outside bms.uplink"))
            elif top not in BUILTINS | HARDWARE | {"bms", "umqtt"}:
                bad.append((m, d, "not a MicroPython built-in"))
    assert not bad, "\n".join("%s imports %s: %s" % b for b in bad)


@pytest.mark.parametrize("text, want", [
    ("### Layers\n\n| layer | modules |\n|---|---|\n| 0 vocabulary | a, b |\n| 2 top | c |\n", {"a": 0, "b": 0, "c": 2}),
])
def test_the_table_is_read_as_written(text, want):
    assert layer_table(text) == want
