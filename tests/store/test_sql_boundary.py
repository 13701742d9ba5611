"""Only store/ speaks SQL (issue 14, rule 2): no module outside it imports
sqlite3, reaches for the store's connection or executes a statement."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "feedsync"
STORE = PACKAGE / "store"
STATEMENTS = {"execute", "executemany", "executescript"}


def trespasses(tree: ast.AST) -> list[str]:
    """What in ``tree`` speaks SQL, by line."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name == "sqlite3"]
        elif isinstance(node, ast.ImportFrom):
            if node.module == "sqlite3":
                found.append(f"{node.lineno}: from sqlite3 import ...")
            elif node.module == "feedsync.store":
                found += [
                    f"{node.lineno}: from feedsync.store import connection"
                    for a in node.names
                    if a.name == "connection"
                ]
        elif isinstance(node, ast.Attribute) and node.attr in {"db", "_db", *STATEMENTS}:
            found.append(f"{node.lineno}: .{node.attr}")
    return found


def test_no_module_outside_the_store_speaks_sql() -> None:
    outside = [path for path in sorted(PACKAGE.rglob("*.py")) if STORE not in path.parents]
    assert PACKAGE / "sync" / "__init__.py" in outside, "the check reads the package"
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in outside
        if (found := trespasses(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert offenders == {}


def test_the_check_finds_a_planted_statement() -> None:
    planted = "import sqlite3\nfrom feedsync.store import Store, connection\n"
    planted += "def f(store):\n    return store.db.execute('SELECT 1')\n"
    assert trespasses(ast.parse(planted)) == [
        "1: import sqlite3",
        "2: from feedsync.store import connection",
        "4: .execute",
        "4: .db",
    ]
