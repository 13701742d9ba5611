"""Records and indicators built field by field, for the loops that build one per row.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
a lookup and a call per field: a third of what reading a row costs beyond its
parse. These builders fill a plain twin of the class (the same slots, in the
same order, not frozen) by ordinary assignment and then make it an instance of
the frozen class (``__class__``, which Python allows between classes of one
layout and refuses otherwise): what that ``__init__`` does in the end (the
classes have no ``__post_init__``). Tests compare them with the constructors
field by field, and fail if a field is added, so that a builder never leaves
one unset.
"""

from __future__ import annotations

from typing import Any

from feedsync.model import Context, Indicator, Kind, Record

RECORD_FIELDS = ("line", "value", "context", "tags", "key", "expires", "line_hash")
INDICATOR_FIELDS = ("key", "value", "kind", "context", "tags", "expires", "line_hash", "line")


class RecordSlots:
    """Record's layout, writable: filled, then made a Record (``__class__``)."""

    __slots__ = RECORD_FIELDS
    line: int
    value: str
    context: Context
    tags: tuple[str, ...]
    key: str | None
    expires: float | None
    line_hash: int | None
    __class__: Any


class IndicatorSlots:
    """Indicator's layout, writable: filled, then made an Indicator (``__class__``)."""

    __slots__ = INDICATOR_FIELDS
    key: str
    value: str
    kind: Kind
    context: Context
    tags: tuple[str, ...]
    expires: float | None
    line_hash: int | None
    line: int
    __class__: Any


def record(line: int, value: str, context: Context, tags: tuple[str, ...], hashed: int) -> Record:
    """``Record(line, value, context, tags, line_hash=hashed)``, built faster."""
    made = RecordSlots()
    made.line = line
    made.value = value
    made.context = context
    made.tags = tags
    made.key = None
    made.expires = None
    made.line_hash = hashed
    made.__class__ = Record
    return made  # type: ignore[return-value]


def indicator(record: Record, kind: Kind, value: str, tags: tuple[str, ...]) -> Indicator:
    """The indicator of ``record`` whose canonical value is ``value``, as
    ``Indicator(record.key or value, value, kind, record.context, tags,
    record.expires, record.line_hash, record.line)`` builds it, faster."""
    made = IndicatorSlots()
    made.key = record.key or value
    made.value = value
    made.kind = kind
    made.context = record.context
    made.tags = tags
    made.expires = record.expires
    made.line_hash = record.line_hash
    made.line = record.line
    made.__class__ = Indicator
    return made  # type: ignore[return-value]
