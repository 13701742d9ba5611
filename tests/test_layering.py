"""Dependencies point one way (issue 14, rule 1), read from the source with ``ast``.

Every import of every module under feedsync/ (a function's lazy one and a
TYPE_CHECKING one too) is checked against the layers below: a module may import
its own unit (a package or a top-level module), a unit of a lower layer, or a
unit of its own layer where that layer allows it. The sources, the store and the
CyberTrace client are siblings that do not import one another, but for the
upload, which records in the store what CyberTrace confirmed. On top of the
layers: the store imports no aiohttp, the cycle tests no source's type (a source
offers what it can: ``Source.lines``), only the command line imports the command
line, and the emulator, an oracle built from the documentation, imports nothing
of the client it judges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "feedsync"

# Lowest first. "" is feedsync/__init__.py itself (the version).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {"", "errors", "model", "body", "normalize", "phases", "progress", "logs"}
        | {"metrics", "redact", "paths", "clock"}
    ),
    frozenset({"safety"}),  # pure functions of values: below the config that names them
    frozenset({"config"}),
    frozenset({"proxy", "_http", "timing"}),
    frozenset({"sources", "store", "cybertrace"}),
    frozenset({"sync"}),
    frozenset({"status", "why", "render", "terminal"}),  # what the command line and daemon show
    frozenset({"daemon", "demo"}),
    frozenset({"cli", "__main__"}),
)
SIBLINGS = frozenset({"sources", "store", "cybertrace"})
SIBLING_ARROWS = frozenset({("cybertrace", "store")})
RUNS_THE_EMULATOR = frozenset({"cli", "demo"})
NO_AIOHTTP = frozenset({"store"})


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module, dotted (feedsync.store.linediff)
    target: str  # what it imports, dotted (feedsync.sources.csvfeed, aiohttp)
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> Iterator[Import]:
    """Every import under ``root`` (a package directory), relative ones resolved;
    ``from pkg import name`` names the module ``pkg.name`` where there is one."""
    for path in sorted(root.rglob("*.py")):
        name = module_name(root, path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    exists = _is_module(root, candidate)
                    yield Import(name, candidate if exists else base, node.lineno)


def _is_module(root: Path, dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] != root.name:
        return False
    where = root.joinpath(*parts[1:])
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def unit(dotted: str) -> str | None:
    """The unit of a feedsync module (``sources`` for feedsync.sources.csvfeed),
    None for a module outside feedsync."""
    parts = dotted.split(".")
    if parts[0] != "feedsync":
        return None
    return parts[1] if len(parts) > 1 else ""


def rank(name: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if name in layer), None)


def broken(found: Import) -> str | None:
    """Why an import breaks the layering, or None."""
    here, there = unit(found.module), unit(found.target)
    assert here is not None
    top = found.target.split(".")[0]
    if here in NO_AIOHTTP and top in ("aiohttp", "yarl"):
        return f"{here}/ speaks no HTTP"
    if there is None or there == here:
        return None
    if there == "emulator":
        return None if here in RUNS_THE_EMULATOR else "only cli and demo run the emulator"
    if here == "emulator":
        return "the emulator imports nothing of the client it judges"
    if there in ("cli", "__main__"):
        return "nothing but the command line imports the command line"
    mine, theirs = rank(here), rank(there)
    if mine is None or theirs is None:
        return f"{here if mine is None else there} is in no layer of tests/test_layering.py"
    if theirs > mine:
        return f"{here} imports {there}, which is above it"
    if theirs == mine and here in SIBLINGS and (here, there) not in SIBLING_ARROWS:
        return f"{here} imports its sibling {there}"
    return None


def source_type_tests(root: Path) -> Iterator[str]:
    """``isinstance(x, T)`` in the cycle where T is imported from the sources."""
    for path in sorted((root / "sync").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        named = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("feedsync.sources")
            for alias in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                kinds = node.args[1:]
                shown = {n.id for k in kinds for n in ast.walk(k) if isinstance(n, ast.Name)}
                for name in sorted(shown & named):
                    yield f"{path.name}:{node.lineno}: isinstance on the source type {name}"


def violations(root: Path) -> list[str]:
    found = [
        f"{i.module}:{i.line}: imports {i.target}: {why}"
        for i in imports(root)
        if (why := broken(i)) is not None
    ]
    return found + list(source_type_tests(root))


def test_feedsync_imports_point_one_way() -> None:
    assert violations(ROOT) == []


def test_every_unit_is_in_a_layer() -> None:
    units = {unit(module_name(ROOT, path)) for path in ROOT.rglob("*.py")}
    placed = set().union(*LAYERS) | {"emulator"}
    assert units - placed == set(), "add the new unit to LAYERS"


PLANTED = {
    "store imports a source": ("store/bad.py", "from feedsync.sources.csvfeed import parse_csv\n"),
    "store imports aiohttp": ("store/bad.py", "import aiohttp\n"),
    "store imports the cycle lazily": (
        "store/bad.py",
        "def f():\n    from feedsync.sync.reports import cause\n",
    ),
    "cybertrace imports a source": ("cybertrace/bad.py", "from feedsync.sources import fetch\n"),
    "config imports upward": ("config/bad.py", "from ..sync import Cycle\n"),
    "a module imports the cli": ("sync/bad.py", "from feedsync import cli\n"),
    "the emulator imports normalization": ("emulator/bad.py", "import feedsync.normalize\n"),
    "the cycle tests a source type": (
        "sync/bad.py",
        "from feedsync.sources import CsvSource\n\n"
        "def f(s):\n    return isinstance(s, CsvSource)\n",
    ),
}


@pytest.mark.parametrize("case", PLANTED)
def test_a_planted_violation_fails(tmp_path: Path, case: str) -> None:
    root = tmp_path / "feedsync"
    for package in ("", "store", "sources", "sync", "cybertrace", "config", "emulator"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "cli.py").write_text("")
    (root / "sources" / "csvfeed.py").write_text("")
    (root / "sources" / "fetch.py").write_text("")
    (root / "sync" / "reports.py").write_text("")
    assert violations(root) == [], "the clean tree passes"
    where, text = PLANTED[case]
    (root / where).write_text(text)
    assert len(violations(root)) == 1, violations(root)


# The config split (issue 14, rule 4) rewrites this module; until then its summary wraps.
SUMMARY_PENDING: frozenset[str] = frozenset()


def test_every_module_says_what_it_owns_in_its_first_line() -> None:
    """Rule 8: a docstring whose first line is a whole sentence, so that a listing
    of first lines (``ast.get_docstring``) is a map of who owns what."""
    unsaid = []
    for path in sorted(ROOT.rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        first = docstring.partition("\n")[0].rstrip()
        name = str(path.relative_to(ROOT))
        if name not in SUMMARY_PENDING and (not first.endswith(".") or len(first) > 97):
            unsaid.append(f"{name}: {first!r}")
    assert unsaid == []
