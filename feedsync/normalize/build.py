"""Records and indicators built field by field, for the loops that build one per row.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
a lookup and a call per field: a third of what reading a row costs beyond its
parse. These builders set the slots directly, which is what that ``__init__``
does in the end (the classes have no ``__post_init__``); tests compare them with
the constructors field by field, and fail if a field is added, so that a
builder never leaves one unset.
"""

from __future__ import annotations

from feedsync.model import Context, Indicator, Kind, Record

RECORD_FIELDS = ("line", "value", "context", "tags", "key", "expires", "line_hash")
INDICATOR_FIELDS = ("key", "value", "kind", "context", "tags", "expires", "line_hash", "line")

_new = object.__new__
_r_line, _r_value, _r_context, _r_tags, _r_key, _r_expires, _r_hash = (
    Record.__dict__[name].__set__ for name in RECORD_FIELDS
)
_i_key, _i_value, _i_kind, _i_context, _i_tags, _i_expires, _i_hash, _i_line = (
    Indicator.__dict__[name].__set__ for name in INDICATOR_FIELDS
)


def record(line: int, value: str, context: Context, tags: tuple[str, ...], hashed: int) -> Record:
    """``Record(line, value, context, tags, line_hash=hashed)``, built faster."""
    made: Record = _new(Record)
    _r_line(made, line)
    _r_value(made, value)
    _r_context(made, context)
    _r_tags(made, tags)
    _r_key(made, None)
    _r_expires(made, None)
    _r_hash(made, hashed)
    return made


def indicator(record: Record, kind: Kind, value: str, tags: tuple[str, ...]) -> Indicator:
    """The indicator of ``record`` whose canonical value is ``value``, as
    ``Indicator(record.key or value, value, kind, record.context, tags,
    record.expires, record.line_hash, record.line)`` builds it, faster."""
    made: Indicator = _new(Indicator)
    _i_key(made, record.key or value)
    _i_value(made, value)
    _i_kind(made, kind)
    _i_context(made, record.context)
    _i_tags(made, tags)
    _i_expires(made, record.expires)
    _i_hash(made, record.line_hash)
    _i_line(made, record.line)
    return made
