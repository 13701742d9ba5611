"""STIX 2.x indicators to records.

A pattern becomes indicators when it is one observation, or an OR of them,
made of ``=`` comparisons on ``ipv4-addr:value``, ``ipv6-addr:value``,
``domain-name:value``, ``url:value`` or ``file:hashes`` MD5/SHA-1/SHA-256.
Anything else (AND, qualifiers such as WITHIN, other operators or objects,
non-STIX pattern types) is skipped and counted by reason. Records are keyed
``<stix id>|<n>``, so one indicator's values can be replaced or removed
together (``Removal(id, family=True)``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from antlr4.tree.Tree import TerminalNode
from stix2patterns.exceptions import ParseException
from stix2patterns.v20.pattern import Pattern as Pattern20
from stix2patterns.v21.pattern import Pattern

from feedsync.model import Invalid, Record, Removal

_PATHS = {
    ("ipv4-addr", ("value",)),
    ("ipv6-addr", ("value",)),
    ("domain-name", ("value",)),
    ("url", ("value",)),
    ("file", ("hashes", "MD5")),
    ("file", ("hashes", "SHA-1")),
    ("file", ("hashes", "SHA-256")),
}


class Unsupported(ValueError):
    """A pattern feedsync cannot turn into indicators; ``reason`` names why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def pattern_values(pattern: str, version: str = "2.1") -> list[str]:
    """The indicator values of a STIX pattern, or Unsupported."""
    try:
        parsed = Pattern(pattern) if version == "2.1" else Pattern20(pattern)
        data = parsed.inspect()
    except ParseException as exc:
        raise Unsupported("pattern_syntax") from exc
    except RecursionError as exc:
        # The parser and its inspector recurse once per nesting level and per OR:
        # a hostile pattern is one invalid indicator, not a crashed feed.
        raise Unsupported("pattern_too_deep") from exc
    if data.qualifiers:
        raise Unsupported("qualifier")
    if data.observation_ops - {"OR"}:
        raise Unsupported("observation_operator")
    if _has_and(parsed):
        raise Unsupported("and")
    values = []
    for object_type, comparisons in data.comparisons.items():
        for path, operator, literal in comparisons:
            if operator != "=":
                raise Unsupported("operator")
            if (object_type, tuple(str(p) for p in path)) not in _PATHS:
                raise Unsupported("object")
            values.append(_unquote(literal))
    return values


def indicator_records(
    obj: Mapping[str, Any], *, line: int, now: dt.datetime, patch: bool
) -> Iterator[Record | Invalid | Removal]:
    """The records of one STIX indicator; in a patch, a Removal of its previous
    values comes first, so a new version replaces them."""
    stix_id = str(obj.get("id", ""))
    gone = None
    if obj.get("revoked") is True:
        gone = "revoked"
    elif _expired(obj.get("valid_until"), now):
        gone = "expired (its valid_until passed)"
    if patch or gone:
        # In a full snapshot a Removal only tells the change journal why a row went.
        yield Removal(stix_id, line, family=True, reason=gone)
    if gone:
        return
    if obj.get("pattern_type", "stix") != "stix":
        yield Invalid(line, stix_id, "pattern_type")
        return
    version = "2.1" if obj.get("spec_version") == "2.1" or "pattern_type" in obj else "2.0"
    try:
        values = pattern_values(str(obj.get("pattern", "")), version)
    except Unsupported as exc:
        yield Invalid(line, f"{stix_id}: {obj.get('pattern', '')}"[:200], exc.reason)
        return
    context = _context(obj)
    labels = obj.get("labels")
    tags = tuple(str(t) for t in labels) if isinstance(labels, list) else ()
    until = _time(obj.get("valid_until"))
    expires = until.timestamp() if until else None
    for number, value in enumerate(values):
        key = f"{stix_id}|{number}"
        yield Record(line=line, value=value, context=context, tags=tags, key=key, expires=expires)


def _context(obj: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    kinds = obj.get("indicator_types") or obj.get("labels") or []
    pairs = (
        ("name", obj.get("name")),
        ("indicator_types", ",".join(map(str, kinds)) if isinstance(kinds, list) else None),
        ("confidence", obj.get("confidence")),
        ("valid_from", obj.get("valid_from")),
        ("valid_until", obj.get("valid_until")),
        ("stix_id", obj.get("id")),
    )
    return tuple((k, str(v)) for k, v in pairs if v not in (None, ""))


def _expired(valid_until: object, now: dt.datetime) -> bool:
    when = _time(valid_until)
    return when is not None and when <= now


def _time(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _has_and(parsed: Any) -> bool:
    tree = parsed._Pattern__parse_tree
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, TerminalNode):
            if node.getText().upper() == "AND":
                return True
            continue
        stack.extend(node.getChildren())
    return False


def _unquote(literal: str) -> str:
    text = literal[1:-1] if len(literal) >= 2 and literal[0] == literal[-1] == "'" else literal
    return text.replace("\\'", "'").replace("\\\\", "\\")
