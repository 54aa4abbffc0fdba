"""The device build's constant folding (tools/bms_build/constfold.py): the
folded code computes what the source does, keeps every line where it was,
and leaves no folded name behind."""
import os
import subprocess

import pytest

from bms_build import build as B
from bms_build.constfold import FoldError, fold_source, fold_tree
from conftest import micropython_binary

A = '''from micropython import const

BASE = const(0x20)
NEG = const(-32768)
NEXT = const(BASE + 3)  # an expression of another constant
MASK = const((1 << 4) | 1)
_PRIVATE = const(7)  # underscore: mpy-cross's job, left alone
NAMES = ("x", "y")  # not a constant: stays


def twice(x):
    return 2 * x + NEXT
'''

B_SRC = '''from micropython import const

from pkg import a as A
from pkg.a import MASK, twice

LOCAL = const(0x21)


def run(BASE=5):
    # BASE here is a parameter, not pkg.a.BASE: never folded
    out = [A.BASE, A.NEG, LOCAL, MASK, twice(1), BASE, len(A.NAMES), -A.NEG, A.NEG + 1]
    if A.MASK & 1:
        out.append(
            A.NEXT
        )
    return out


print(run())
'''


def _tree():
    return {"pkg/__init__.py": "", "pkg/a.py": A, "pkg/b.py": B_SRC}


def test_folded_names_leave_and_lines_stay():
    folded, table = fold_tree(_tree())
    assert table["pkg.a"] == {"BASE": 0x20, "NEG": -32768, "NEXT": 0x23, "MASK": 17}
    assert table["pkg.b"] == {"LOCAL": 0x21}
    for rel, text in folded.items():
        assert text.count("\n") == _tree()[rel].count("\n"), rel
    b = folded["pkg/b.py"]
    assert "A.BASE" not in b and "LOCAL" not in b and "MASK" not in b.split("def run")[1]
    assert "BASE=5" in b and "out = [32, (-32768), 33, 17, twice(1), BASE" in b
    assert "from pkg.a import twice" in b  # the constant left the import, the function stays
    a = folded["pkg/a.py"]
    assert "BASE = const" not in a and "_PRIVATE = const(7)" in a and "NAMES = (" in a


def test_folded_code_computes_what_the_source_does(tmp_path):
    exe = micropython_binary()
    if not exe:
        pytest.fail("MicroPython unix port not found: run `make setup`")
    outs = []
    for name, files in (("src", _tree()), ("folded", fold_tree(_tree())[0])):
        root = tmp_path / name
        for rel, text in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        proc = subprocess.run([exe, "-c", "import pkg.b"], env=dict(os.environ, MICROPYPATH=str(root)),
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1] == "[32, -32768, 33, 17, 37, 5, 2, 32768, -32767, 35]\n"


def test_a_module_imported_only_for_constants_is_not_imported_at_all():
    src = "from pkg import a as A\n\n\ndef f():\n    return A.BASE\n"
    out = fold_source(src, None, fold_tree(_tree())[1])
    assert "import" not in out and "return 32" in out and out.count("\n") == src.count("\n")


def test_assigning_to_a_folded_constant_is_refused():
    src = "from pkg import a as A\nA.BASE = 3\n"
    with pytest.raises(FoldError, match="assigns A.BASE"):
        fold_source(src, None, fold_tree(_tree())[1])


def test_the_firmware_build_keeps_no_register_or_parameter_name():
    B.compile_lib()
    folded = B.folded_dir(B.OUT)
    import ast

    for dirpath, _, names in os.walk(folded):
        for n in names:
            with open(os.path.join(dirpath, n)) as f:
                tree = ast.parse(f.read())
            used = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Name):
                    used.add(node.id)
                elif isinstance(node, ast.Attribute):
                    used.add(node.attr)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    used |= {a.name for a in node.names} | {getattr(node, "module", None)}
            for name in ("IR_CELL_MV", "P_CELL_OV_MV", "HR_SIZE", "EV_MODE", "CFG_CONFIGURED"):
                assert name not in used, (n, name)
            assert not used & {"regmap", "bms.regmap", "paramtable", "protrules"}, n
