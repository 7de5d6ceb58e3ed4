"""numpydoc on the public API: Parameters and Returns sections where a function has them to give.

A public function is a module-level function or a method of a public class, in a module of
``galhpc/`` whose path has no part starting with ``_``, whose name does not start with
``_`` (dunder methods, properties and ``typing.overload`` stubs are left out).  It is
documented when its docstring has a ``Parameters`` section if it takes arguments (beyond
``self``/``cls``) and a ``Returns`` (or ``Yields``) section if it gives a value back
(a return annotation other than ``None``/``NoReturn``, or a ``return <value>`` without one).

Run as a script, it lists the undocumented functions file by file::

    python tests/test_docstrings.py [galhpc/models]
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "galhpc"
TARGET = 0.90
_SECTION = {name: re.compile(rf"^\s*{name}\n\s*-{{3,}}\s*$", re.M) for name in ("Parameters", "Returns", "Yields")}


def _decorators(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        names.add(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
    return names


def _takes_arguments(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> bool:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    if method and positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    return bool(positional or args.kwonlyargs or args.vararg or args.kwarg)


def _own_returns(node: ast.AST) -> list[ast.Return]:
    """The ``return`` statements of this function, not of functions or classes inside it."""
    found, stack = [], list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(child, ast.Return):
            found.append(child)
        stack.extend(ast.iter_child_nodes(child))
    return found


def _gives_value(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    if node.returns is not None:
        text = ast.unparse(node.returns)
        return text not in ("None", "NoReturn", "typing.NoReturn", "Never")
    own = _own_returns(node)
    return any(r.value is not None and not (isinstance(r.value, ast.Constant) and r.value.value is None) for r in own)


def _is_documented(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> bool:
    doc = ast.get_docstring(node) or ""
    if not doc:
        return False
    if _takes_arguments(node, method) and not _SECTION["Parameters"].search(doc):
        return False
    return not (_gives_value(node) and not (_SECTION["Returns"].search(doc) or _SECTION["Yields"].search(doc)))


def public_functions(root: Path = PACKAGE) -> list[tuple[str, int, str, bool]]:
    """Every public function under root as (file, line, qualified name, documented)."""
    rows = []
    base = root if root.is_dir() else root.parent
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    for path in files:
        if any(part.startswith("_") for part in path.relative_to(base.parent if root.is_dir() else base).parts):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        scopes: list[tuple[ast.AST, str, bool]] = [(tree, "", False)]
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                scopes.append((node, node.name + ".", True))
        for scope, prefix, method in scopes:
            for node in scope.body:
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
                    continue
                if _decorators(node) & {"property", "setter", "overload", "cached_property"}:
                    continue
                rows.append((str(path), node.lineno, prefix + node.name, _is_documented(node, method)))
    return rows


def test_the_check_reads_sections():
    ok = ast.parse('def f(x):\n    """Sum.\n\n    Parameters\n    ----------\n    x : int\n        A.\n\n'
                   '    Returns\n    -------\n    int\n        B.\n    """\n    return x\n').body[0]
    missing_returns = ast.parse('def f(x) -> int:\n    """Sum.\n\n    Parameters\n    ----------\n    x : int\n'
                                '        A.\n    """\n').body[0]
    nothing_to_say = ast.parse('def f() -> None:\n    """Flush."""\n').body[0]
    assert _is_documented(ok, False) and not _is_documented(missing_returns, False)
    assert _is_documented(nothing_to_say, False)


def test_public_functions_carry_numpydoc_sections():
    rows = public_functions()
    documented = sum(row[3] for row in rows)
    missing = [f"{Path(f).relative_to(PACKAGE.parent)}:{line} {name}" for f, line, name, ok in rows if not ok]
    assert documented / len(rows) >= TARGET, (
        f"{documented}/{len(rows)} public functions have their numpydoc sections "
        f"(target {TARGET:.0%}); missing, first 20:\n" + "\n".join(missing[:20])
    )


if __name__ == "__main__":
    where = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE
    rows = public_functions(where)
    for f, line, name, ok in rows:
        if not ok:
            print(f"{Path(f).relative_to(PACKAGE.parent)}:{line}: {name}")
    print(f"{sum(r[3] for r in rows)}/{len(rows)} documented")
