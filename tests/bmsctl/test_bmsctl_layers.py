"""bmsctl's layers: the client library (and the dashboard, plot, ha-modbus
on it) never imports the command line, bmsctl.cli; only the other way round."""
import ast
import os

import pytest

from conftest import ROOT

BMSCTL = os.path.join(ROOT, "tools", "bmsctl")
MODULES = sorted(os.path.relpath(os.path.join(d, f), BMSCTL) for d, _, files in os.walk(BMSCTL)
                 for f in files if f.endswith(".py"))


def imported(text, package):
    """Every module name the imports in `text` (a module of `package`) name,
    with relative imports resolved: `from . import cli` in bmsctl names
    bmsctl and bmsctl.cli."""
    names = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names += [base] + ["%s.%s" % (base, a.name) for a in node.names]
    return names


def cli_imports(text, package):
    return [n for n in imported(text, package) if n == "bmsctl.cli" or n.startswith("bmsctl.cli.")]


@pytest.mark.parametrize("module", [m for m in MODULES if m != "cli.py"])
def test_no_module_but_the_cli_imports_the_cli(module):
    package = ".".join(["bmsctl"] + [p for p in os.path.dirname(module).split(os.sep) if p])
    with open(os.path.join(BMSCTL, module)) as f:
        bad = cli_imports(f.read(), package)
    assert not bad, "%s imports %s: import the library (client, writes, fmt, ...) instead" % (module, bad)


@pytest.mark.parametrize("text, package", [
    ("import bmsctl.cli", "bmsctl"), ("from bmsctl import cli", "bmsctl"),
    ("from bmsctl.cli import CtlError", "bmsctl.dashboard"), ("def f():\n    from bmsctl import cli as ctl", "bmsctl"),
    ("from . import cli", "bmsctl"), ("from ..cli import main", "bmsctl.dashboard"),
])
def test_the_check_sees_every_form(text, package):
    assert cli_imports(text, package), text
    assert "client.py" in MODULES and os.path.join("dashboard", "source.py") in MODULES  # the walk finds them


def test_the_client_is_not_the_cli():
    assert not cli_imports("from bmsctl import client\nfrom bmsctl.client import CtlError\nimport bmsctl.client",
                           "bmsctl")
