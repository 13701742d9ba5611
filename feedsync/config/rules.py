"""Checks of the configuration that catch what a person typing it gets wrong.

Kept beside ``feedsync.config`` (which calls each one where it reads the value)
so that the loader's sections stay as they are while other keys are added there.
Each function raises ``ConfigError`` with the key path, or returns the value.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from feedsync.errors import ConfigError
from feedsync.normalize import canonical_tag

# Below this, a schedule is a typo (5 for 5m) or a test setting; either way a feed
# server would soon rate-limit or ban the client.
SHORTEST_SCHEDULE = 30.0
SCHEDULE_OVERRIDE = "schedule_min_override"
_BARE_NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")


class _Feed(Protocol):
    @property
    def supplier(self) -> str: ...


def schedule_seconds(path: str, value: object, seconds: float, *, override: bool) -> None:
    """Refuse a duration written without its unit, and one under 30 s without the override."""
    if isinstance(value, int | float) or (isinstance(value, str) and _BARE_NUMBER.fullmatch(value)):
        number = str(value).strip()
        raise ConfigError(
            path,
            f"{number} has no unit: write {number}s, {number}m, {number}h or {number}d,"
            " or a 5-field cron line",
        )
    if seconds < SHORTEST_SCHEDULE and not override:
        raise ConfigError(
            path,
            f"{_show(value)} is shorter than {SHORTEST_SCHEDULE:g}s, the shortest schedule;"
            f" set {SCHEDULE_OVERRIDE}: true on the feed to allow down to 1s",
        )


def version_text(path: str, value: object) -> None:
    """A version must be written as a string: YAML reads 1.10 as the number 1.1."""
    if value is None or isinstance(value, str):
        return
    raise ConfigError(
        path,
        f"expected a quoted string, got the number {value!r}: YAML reads an unquoted"
        ' version as a number (1.10 becomes 1.1); write it in quotes, e.g. "1.2"',
    )


def columns(path: str, entries: Mapping[str, Any]) -> tuple[tuple[str, str | int], ...]:
    """Context columns, each a header name or a 1-based index, as ``indicator`` takes them."""
    found: list[tuple[str, str | int]] = []
    for name, spec in entries.items():
        value = column(f"{path}.{name}", spec)
        if value is None:
            raise ConfigError(f"{path}.{name}", "required: a column name or a 1-based index")
        found.append((name, value))
    return tuple(found)


def column(path: str, spec: object) -> str | int | None:
    """A column (``indicator``, ``tags_field``, a context entry): a name or a 1-based index."""
    if spec is None:
        return None
    if spec == "":
        raise ConfigError(path, "must not be empty")
    if isinstance(spec, bool) or not isinstance(spec, str | int):
        raise ConfigError(path, f"expected a column name or a 1-based index, got {_show(spec)}")
    if isinstance(spec, int) and spec < 1:
        raise ConfigError(path, f"{_show(spec)}: columns are numbered from 1")
    return spec


def tags(path: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse a tag that canonicalization would drop: the feed would silently lack it."""
    for index, tag in enumerate(values):
        if canonical_tag(tag) is None:
            raise ConfigError(
                f"{path}[{index}]",
                f"{_show(tag)} maps to no CyberTrace tag: tags are upper-cased and keep only"
                " A-Z, 0-9, _ and - (other characters become _), so nothing is left of it",
            )
    return values


def supplier_typos(
    suppliers: object, feeds: Sequence[_Feed], builtin: frozenset[str], valid: re.Pattern[str]
) -> None:
    """A feed's supplier close to a ``suppliers:`` entry no feed uses is a typo of it.

    Without this check, the entry is blamed ("no feed uses this supplier") and the
    feed's own misspelt name, the actual mistake, goes unmentioned.
    """
    if not isinstance(suppliers, dict):
        return
    used = {feed.supplier for feed in feeds}
    # An entry that is no valid name is refused as such, with its own path, later.
    orphans = {
        name.casefold(): name
        for name in suppliers
        if isinstance(name, str) and valid.fullmatch(name) and name not in used
    }
    for index, feed in enumerate(feeds):
        if feed.supplier in suppliers or feed.supplier in builtin:
            continue
        close = difflib.get_close_matches(feed.supplier.casefold(), orphans, n=1, cutoff=0.7)
        if close:
            entry = orphans[close[0]]
            raise ConfigError(
                f"feeds[{index}].supplier",
                f"{_show(feed.supplier)} has no suppliers: entry, and suppliers.{entry} is used"
                f" by no feed: did you mean {_show(entry)}?",
            )


def yaml_hint(problem: str, context: str) -> str:
    """One line on the usual cause of a PyYAML error, which names only the symptom."""
    said = f"{problem} {context}"
    if "alias" in said or "anchor" in said:
        return 'quote a value that starts with * or &, such as a cron line: "*/5 * * * *"'
    if "tab" in said:
        return "indent with spaces, not tabs"
    return (
        "check this line's indentation against the lines above it, and quote a value that"
        ' holds ": " or " #" or starts with * & ! % @ ` [ {'
    )


def _show(value: object) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
