"""Modules under 400 lines, functions under 50, or a reason (issue 14), read with ``ast``.

A module is measured in physical lines. A function (a method, a nested one and
an ``async def`` too) is measured from its ``def`` line to its last line
(``end_lineno - lineno + 1``: decorators left out). A function over the limit
passes when its docstring gives the reason in a line of its own that starts
with "Long because" (the convention: ``"Long because it is a table: ..."``), so
that a reader meets the reason where the length is. Anything else over a limit
goes into an allowlist below, each entry with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "feedsync"
MODULE_LIMIT = 400
FUNCTION_LIMIT = 50
REASON = "Long because"

# Modules over the limit, relative to feedsync/, and why (none today).
LONG_MODULES: dict[str, str] = {}

# Functions over the limit without a "Long because" line, as (module, name), and why
# (none today).
LONG_FUNCTIONS: dict[tuple[str, str], str] = {}


def has_reason(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    docstring = ast.get_docstring(node) or ""
    return any(line.strip().startswith(REASON) for line in docstring.splitlines())


def oversized(root: Path) -> list[str]:
    """Every module and function over its limit under ``root`` and not allowed."""
    found = []
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MODULE_LIMIT and name not in LONG_MODULES:
            found.append(f"{name}: {lines} lines (over {MODULE_LIMIT})")
        for node in ast.walk(ast.parse(text, str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length <= FUNCTION_LIMIT or has_reason(node) or (name, node.name) in LONG_FUNCTIONS:
                continue
            found.append(
                f"{name}:{node.lineno}: {node.name} is {length} lines (over {FUNCTION_LIMIT});"
                f" split it or give a {REASON!r} line in its docstring"
            )
    return found


def test_no_module_or_function_is_over_its_limit_without_a_reason() -> None:
    assert oversized(ROOT) == []


def test_every_allowlisted_entry_is_still_needed() -> None:
    """An entry outlives its reason once the module or function shrinks: drop it then."""
    stale = [m for m in LONG_MODULES if len((ROOT / m).read_text().splitlines()) <= MODULE_LIMIT]
    for (module, function), _why in LONG_FUNCTIONS.items():
        tree = ast.parse((ROOT / module).read_text())
        lengths = [
            (n.end_lineno or n.lineno) - n.lineno + 1
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
        ]
        if not any(length > FUNCTION_LIMIT for length in lengths):
            stale.append(f"{module}: {function}")
    assert stale == []


def _body(lines: int, indent: str = "    ") -> str:
    return "".join(f"{indent}x{i} = {i}\n" for i in range(lines))


PLANTED = {
    "a long module": ("long.py", "x = 1\n" * (MODULE_LIMIT + 1), 1),
    "a long function": ("f.py", "def f():\n" + _body(FUNCTION_LIMIT), 1),
    "a long method": ("c.py", "class C:\n    def f(self):\n" + _body(FUNCTION_LIMIT, " " * 8), 1),
    "a long function whose docstring gives no reason": (
        "f.py",
        'def f():\n    """Does much."""\n' + _body(FUNCTION_LIMIT),
        1,
    ),
    "a long function with its reason": (
        "f.py",
        'def f():\n    """Does much.\n\n    Long because it is a table."""\n'
        + _body(FUNCTION_LIMIT),
        0,
    ),
    "a function at the limit": ("f.py", "def f():\n" + _body(FUNCTION_LIMIT - 1), 0),
    "a module at the limit": ("ok.py", "x = 1\n" * MODULE_LIMIT, 0),
}


@pytest.mark.parametrize("case", PLANTED)
def test_a_planted_oversize_is_found(tmp_path: Path, case: str) -> None:
    root = tmp_path / "feedsync"
    root.mkdir()
    (root / "__init__.py").write_text('"""A package."""\n')
    assert oversized(root) == [], "the clean tree passes"
    where, text, expected = PLANTED[case]
    (root / where).write_text(text)
    assert len(oversized(root)) == expected, oversized(root)
