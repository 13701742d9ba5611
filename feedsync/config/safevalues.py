"""The ``allowlist:`` and ``canaries:`` settings, at the top and in each feed.

safety/allowlist.py and safety/poison.py say what they do.

A feed's ``allowlist`` adds to the top-level one: what the operator allows for
every feed stays allowed. A feed's ``canaries`` replaces the top-level list.
"""

from __future__ import annotations

import os
from pathlib import Path

from feedsync.errors import ConfigError
from feedsync.safety.allowlist import Allowlist, parse_entry
from feedsync.safety.poison import CANARY_SETS

ALLOWLIST_KEYS = ("files", "values")


def parse_allowlist(path: str, raw: object, inherited: Allowlist, base: Path) -> Allowlist:
    """``raw`` (the ``allowlist:`` mapping at ``path``, or None) added to ``inherited``;
    relative file names start at ``base``. Every file must be readable now."""
    if raw is None:
        return inherited
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping of {', '.join(ALLOWLIST_KEYS)}")
    for key in raw:
        if key not in ALLOWLIST_KEYS:
            raise ConfigError(
                f"{path}.{key}", f"unknown key; known keys: {', '.join(ALLOWLIST_KEYS)}"
            )
    files = list(inherited.files)
    for index, name in enumerate(_strings(f"{path}.files", raw.get("files"))):
        where = os.path.join(base, os.path.expanduser(name))
        if not os.access(where, os.R_OK) or os.path.isdir(where):
            raise ConfigError(f"{path}.files[{index}]", f"{where} is no readable file")
        if where not in files:
            files.append(where)
    values = list(inherited.values)
    for index, value in enumerate(_strings(f"{path}.values", raw.get("values"))):
        _entry(f"{path}.values[{index}]", value)
        values.append(value)
    return Allowlist(tuple(files), tuple(values))


def parse_canaries(path: str, raw: object, inherited: tuple[str, ...]) -> tuple[str, ...]:
    """``raw`` (the ``canaries:`` list at ``path``, or None) instead of ``inherited``:
    entries as an allowlist takes them, or the name of a built-in set."""
    if raw is None:
        return inherited
    items = _strings(path, raw)
    for index, value in enumerate(items):
        if value not in CANARY_SETS:
            _entry(f"{path}[{index}]", value)
    return items


def _entry(path: str, value: str) -> None:
    try:
        parse_entry(value)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None


def _strings(path: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(path, "expected a list of non-empty strings")
    return tuple(v.strip() for v in value)
