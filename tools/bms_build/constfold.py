"""Fold the firmware's named integer constants into the code that uses them.

MicroPython inlines `X = const(5)` only inside the module that defines it,
and keeps every public one as a module global as well, so another module can
read it. Reading it costs at run time: `P.P_CELL_OV_MV` is a name lookup in
the params module, and every exported name is an interned string plus a
dictionary slot in RAM. The firmware names hundreds of registers,
parameters, events and flags; on the device those names alone took about a
fifth of the heap.

The device build therefore compiles the firmware from folded source (this
module, called by bms_build.build):

- every read of a public integer constant, `NAME` in its own module,
  `ALIAS.NAME` through `from bms import regmap as ALIAS`, or a name brought
  in with `from bms.x import NAME`, becomes the integer itself;
- the constant's definition and its `from ... import` leave the module, so
  neither a global nor an interned name is left behind.

Every line keeps its number (edits stay inside their lines, removed
statements leave blank lines), so a traceback from the device points at the
right line of lib/. Underscore constants are left to mpy-cross, which
already inlines them. The host tools import lib/ as it is, names and all.

Only what is provably a constant is folded: a module-level
`NAME = const(expr)` whose expression reduces to an int from literals and
other constants, never rebound anywhere in the tree. A folded name that is
then read some way this module cannot rewrite (getattr, a name it does not
know) fails at import on the device, which the MicroPython tests catch.
"""
import ast
import os

PACKAGE = "bms"


class FoldError(ValueError):
    pass


def module_name(rel):
    """'bms/boards/__init__.py' -> 'bms.boards'; 'board_pins.py' -> 'board_pins'."""
    parts = rel.replace(os.sep, "/")[:-3].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_const_call(node):
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "const"
            and len(node.args) == 1 and not node.keywords)


def _const_defs(tree):
    """[(name, expr, stmt)] for module-level `NAME = const(expr)`."""
    out = []
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and _is_const_call(stmt.value)):
            out.append((stmt.targets[0].id, stmt.value.args[0], stmt))
    return out


def _aliases(tree, modules):
    """{local name: module} for imports of firmware modules, and
    {local name: (module, name)} for names imported from them."""
    mods, names = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in modules:
                    mods[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                local = a.asname or a.name
                sub = node.module + "." + a.name
                if sub in modules:
                    mods[local] = sub
                elif node.module in modules:
                    names[local] = (node.module, a.name)
    return mods, names


class _Eval:
    """Reduce a const() expression to an int, or None."""

    def __init__(self, own, mods, names, table):
        self.own, self.mods, self.names, self.table = own, mods, names, table

    def __call__(self, node):
        try:
            v = self._ev(node)
        except (KeyError, TypeError, ZeroDivisionError, ValueError, OverflowError):
            return None
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def _ev(self, n):
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            if n.id in self.own:
                return self.own[n.id]
            m, name = self.names[n.id]
            return self.table[m][name]
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            return self.table[self.mods[n.value.id]][n.attr]
        if isinstance(n, ast.UnaryOp):
            v = self._ev(n.operand)
            ops = {ast.USub: lambda: -v, ast.UAdd: lambda: +v, ast.Invert: lambda: ~v}
            return ops[type(n.op)]()
        if isinstance(n, ast.BinOp):
            a, b = self._ev(n.left), self._ev(n.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b, ast.LShift: lambda: a << b,
                   ast.RShift: lambda: a >> b, ast.BitOr: lambda: a | b, ast.BitAnd: lambda: a & b,
                   ast.BitXor: lambda: a ^ b, ast.Pow: lambda: a ** b}
            return ops[type(n.op)]()
        raise KeyError(type(n).__name__)


def _bound_names(tree):
    """Every name the module binds other than by one module-level
    `NAME = const(...)`: parameters, loop and `except` targets, other
    assignments, functions and classes. Such a name is never folded."""
    stores = {}
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            name = node.id
        elif isinstance(node, ast.arg):
            name = node.arg
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.ExceptHandler) and node.name:
            name = node.name
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for n in node.names:
                stores[n] = stores.get(n, 0) + 2
        if name is not None:
            stores[name] = stores.get(name, 0) + 1
    for name, _expr, _stmt in _const_defs(tree):
        stores[name] -= 1
    return {n for n, k in stores.items() if k > 0}


def const_table(sources):
    """{module: {NAME: int}} of the public constants that can be folded,
    from {module: source text}."""
    trees = {m: ast.parse(src) for m, src in sources.items()}
    modules = set(trees)
    info = {}
    for m, tree in trees.items():
        mods, names = _aliases(tree, modules)
        info[m] = (tree, _const_defs(tree), mods, names, _bound_names(tree))
    table = {m: {} for m in trees}
    allc = {m: {} for m in trees}  # underscore ones too, for expressions
    progress = True
    while progress:  # a constant may be built from another module's
        progress = False
        for m, (tree, defs, mods, names, bound) in info.items():
            for name, expr, _stmt in defs:
                if name in allc[m]:
                    continue
                v = _Eval(allc[m], mods, names, table)(expr)
                if v is None:
                    continue
                allc[m][name] = v
                progress = True
                if not name.startswith("_") and name not in bound:
                    table[m][name] = v
    return table


def _offsets(src_bytes):
    starts = [0]
    for i, b in enumerate(src_bytes):
        if b == 0x0A:
            starts.append(i + 1)
    return starts


def _literal(v):
    return str(v) if v >= 0 else "(%d)" % v


def fold_source(src, module, table, modules=None):
    """src with the constants of table folded in; lines keep their numbers.
    module: this source's module name (None for a script)."""
    tree = ast.parse(src)
    modules = set(table) if modules is None else modules
    mods, names = _aliases(tree, modules)
    own = dict(table.get(module, {}))
    bound = _bound_names(tree)
    # names from `from bms.x import NAME` that are folded constants
    imported = {local: table[m][n] for local, (m, n) in names.items()
                if n in table.get(m, {}) and local not in bound}
    data = src.encode("utf-8")
    starts = _offsets(data)

    def span(node):
        return starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset

    edits = []  # (start, end, replacement bytes)
    removed = []
    # the definitions of folded constants
    for name, _expr, stmt in _const_defs(tree):
        if name in own:
            a, b = span(stmt)
            removed.append((a, b))
            edits.append((a, b, b"\n" * (stmt.end_lineno - stmt.lineno)))
    # imports of folded constants
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules):
            continue
        keep = [a for a in node.names if (a.asname or a.name) not in imported]
        if len(keep) == len(node.names):
            continue
        a, b = span(node)
        lines = node.end_lineno - node.lineno
        if keep:
            text = "from %s import %s" % (node.module, ", ".join(
                x.name + (" as " + x.asname if x.asname else "") for x in keep))
        else:
            parent = parents.get(id(node))
            at_top = isinstance(parent, ast.Module)
            text = "" if at_top else "pass"
        removed.append((a, b))
        edits.append((a, b, (text + "\n" * lines).encode()))
    # reads
    folded_reads = {}  # module alias -> reads folded
    for node in ast.walk(tree):
        v = None
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id in own and node.id not in bound:
                v = own[node.id]
            elif node.id in imported:
                v = imported[node.id]
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
              and isinstance(node.value, ast.Name) and node.value.id in mods
              and node.value.id not in bound):
            v = table.get(mods[node.value.id], {}).get(node.attr)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del))
              and isinstance(node.value, ast.Name) and node.value.id in mods
              and node.attr in table.get(mods[node.value.id], {})):
            raise FoldError("%s:%d assigns %s.%s, a constant" % (module, node.lineno, node.value.id, node.attr))
        if v is None:
            continue
        a, b = span(node)
        if any(ra <= a and b <= rb for ra, rb in removed):
            continue
        if isinstance(node, ast.Attribute):
            folded_reads[node.value.id] = folded_reads.get(node.value.id, 0) + 1
        edits.append((a, b, _literal(v).encode()))
    # a module imported only for constants that are now folded: its import
    # goes too, so the module is not kept alive (or loaded) for nothing
    uses = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in mods:
            uses[node.id] = uses.get(node.id, 0) + 1
    unused = {alias for alias, n in folded_reads.items() if uses.get(alias, 0) == n}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or any(ra <= span(node)[0] < rb for ra, rb in removed):
            continue
        drop = [x for x in node.names if (x.asname or x.name) in unused and (
            isinstance(node, ast.Import) or (node.module + "." + x.name) in modules)]
        if not drop:
            continue
        keep = [x for x in node.names if x not in drop]
        a, b = span(node)
        lines = node.end_lineno - node.lineno
        if keep:
            names_text = ", ".join(x.name + (" as " + x.asname if x.asname else "") for x in keep)
            text = ("import " + names_text) if isinstance(node, ast.Import) else (
                "from %s import %s" % (node.module, names_text))
        else:
            text = "" if isinstance(parents.get(id(node)), ast.Module) else "pass"
        removed.append((a, b))
        edits = [e for e in edits if not (a <= e[0] < b)]
        edits.append((a, b, (text + "\n" * lines).encode()))
    edits.sort()
    out = []
    pos = 0
    for a, b, rep in edits:
        if a < pos:
            raise FoldError("%s: overlapping edits at byte %d" % (module, a))
        out.append(data[pos:a])
        out.append(rep)
        pos = b
    out.append(data[pos:])
    folded = b"".join(out).decode("utf-8")
    if folded.count("\n") != src.count("\n"):
        raise FoldError("%s: folding changed the line count" % module)
    return folded


def fold_tree(files, others=None):
    """{rel path: folded text} for {rel path: source text} of one tree
    (paths relative to the MICROPYPATH root, e.g. 'bms/app.py'), and the
    constant table it used. others: {rel path: text} of modules that are
    not on the device but whose constants the tree reads (bms/regmap.py)."""
    by_mod = {module_name(rel): (rel, text) for rel, text in files.items()}
    every = {m: t for m, (_r, t) in by_mod.items()}
    every.update({module_name(rel): text for rel, text in (others or {}).items()})
    table = const_table(every)
    modules = set(every)
    return {rel: fold_source(text, m, table, modules) for m, (rel, text) in by_mod.items()}, table
