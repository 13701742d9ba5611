"""CSV and plain-text feeds: a downloaded body streamed into records.

Handles what real feeds do: ``#`` banners and footers (``;`` for Spamhaus), a
header in the last commented line (URLhaus, SSLBL, MalwareBazaar), in the first
uncommented row (Feodo) or none at all (plain lists), quoted fields, ``", "``
separators (ThreatFox), ``n/a``/``None`` for missing values, BOM, CRLF, gzip
and zip bodies. One row is one physical line. Memory is bounded by one read:
nothing holds the body or its rows.

Lines are decoded in the feed's encoding. A line with bytes that encoding
cannot read is still a row: only a field holding such bytes is undecodable. A
row whose indicator is undecodable is Invalid ("encoding"); one whose context
or tags field is keeps its indicator, that field decoded with U+FFFD for the
bad bytes, and is reported (``on_replaced``): a stray Latin-1 byte in a
description must not delete the indicator beside it.

A feed whose format ends with a footer (abuse.ch: ``# END 28 entries``,
``# Number of entries: 1217668``) is checked for it before it is parsed
(``check_footer``): a body cut at a line boundary looks complete otherwise.

Reading a line as a row is csvlines.py's; finding the header and the columns
in the head of the body is csvhead.py's.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from feedsync.body import MAX_LINE, numbered, open_body, physical_lines, selected
from feedsync.errors import FetchError
from feedsync.model import Context, Invalid, OnReplaced, Record
from feedsync.normalize.build import record
from feedsync.sources.csvhead import Columns, Head, Header, field_names, find_header, resolve
from feedsync.sources.csvlines import BOM, PREVIEW, Lines, Row

ABSENT = frozenset({"", "None", "none", "NULL", "null", "n/a", "N/A", "-"})
_NUMBER = re.compile(r"\d+")
_SHOWN_FOOTER = 80
_SEEN = 4096  # distinct tags cells and contexts remembered while a body is read


@dataclass(frozen=True, slots=True)
class CsvOptions:
    """How a feed's lines and columns map onto records.

    Columns are header names, or 1-based indexes (an int, or a digit string
    where no header name matches: configurations give context columns as text).
    """

    indicator: str | int | None = None
    context: tuple[tuple[str, str | int], ...] = ()
    tags_field: str | int | None = None
    comment: str = "#"
    delimiter: str = ","
    header: bool | None = None
    encoding: str = "utf-8"  # a codec name that reads ASCII as ASCII (config checks it)


def parse_csv(
    stream: BinaryIO, options: CsvOptions, feed: str, on_replaced: OnReplaced | None = None
) -> Iterator[Record | Invalid]:
    """Stream the records of a CSV or plain-text body, one per data line.

    Raises ParseError, before yielding any record, for a body that is not a
    feed (HTML) or lacks the configured columns; later, for a NUL byte.
    """
    lines = Lines(numbered(stream, feed), options, feed)
    rows = lines.rows()
    head = Head()
    yield from head.read(rows, lines, feed)
    layout = _layout_of(head, options, feed)
    if layout is not None:
        items = itertools.chain(head.items, rows)
        yield from _records(items, layout.columns, lines.damaged, on_replaced)


@dataclass(frozen=True, slots=True)
class Layout:
    """How a body's lines map onto records: its columns, found from its head.
    Two bodies with the same layout read every identical line identically."""

    columns: Columns
    options: CsvOptions

    @property
    def signature(self) -> str:
        return hashlib.sha256(repr((self.options, self.columns)).encode()).hexdigest()[:32]


def read_layout(stream: BinaryIO, options: CsvOptions, feed: str) -> Layout | None:
    """The layout of a body, reading only its head; None for a body with no data row."""
    lines = Lines(numbered(stream, feed), options, feed)
    head = Head()
    for _invalid in head.read(lines.rows(), lines, feed):
        pass
    return _layout_of(head, options, feed)


def _layout_of(head: Head, options: CsvOptions, feed: str) -> Layout | None:
    """The layout a body's head shows (None without a data row); its header
    row, if it has one, leaves the head's items: it is no record."""
    header = _head_header(head, options)
    if not head.data:
        return None
    if header is not None and header.row is not None:
        head.items.remove(header.row)
    return Layout(resolve(options, header, head.data[0], feed), options)


def _head_header(head: Head, options: CsvOptions) -> Header | None:
    if not head.data and head.first_damaged is not None:
        # Every row of the head has undecodable bytes: the first one has to do.
        head.data.append(head.first_damaged)
    return find_header(head, options) if head.data else None


def check_footer(
    path: Path, end: bytes, options: CsvOptions, feed: str, *, footer: str, count: bool
) -> None:
    """Raise FetchError unless the body's last non-blank line (in ``end``, the
    body's last bytes) starts with ``footer`` and, with ``count``, the body
    holds at least as many data rows as a number in the rest of that line says."""
    last = end.rstrip().rpartition(b"\n")[2].decode(options.encoding, "replace").strip()
    if not last.startswith(footer):
        shown = repr(last[:_SHOWN_FOOTER]) if last else "blank"
        raise FetchError(
            feed,
            f"body does not end with its footer {footer!r} (its last line is {shown}):"
            " it was cut short, or the feed changed its format",
        )
    declared = _NUMBER.search(last, len(footer))
    if not count or declared is None:
        return
    rows = data_rows(path, options, feed)
    if rows < int(declared.group()):
        raise FetchError(
            feed,
            f"footer {last[:_SHOWN_FOOTER]!r} declares {declared.group()} entries, the body"
            f" holds {rows} rows: it was cut short",
        )


def data_rows(path: Path, options: CsvOptions, feed: str) -> int:
    """The rows a full parse reads, counted by looking at each line as ``Lines``
    does rather than parsing it: a header row is no row, any other line that
    is neither blank nor a comment is one (a valid or an invalid record)."""
    with open_body(path, feed) as stream:
        lines = Lines(numbered(stream, feed), options, feed)
        head = Head()
        for _invalid in head.read(lines.rows(), lines, feed):
            pass
        header = _head_header(head, options)
    rows = -1 if header is not None and header.row is not None else 0
    encoding, comment = options.encoding, options.comment
    number = 0
    with open_body(path, feed) as stream:
        for batch in physical_lines(stream, feed):
            for raw in batch:
                number += 1
                if len(raw) > MAX_LINE:
                    rows += 1
                    continue
                text = raw.decode(encoding, "surrogateescape")
                start = (text.removeprefix(BOM) if number == 1 else text).lstrip()
                rows += bool(start) and not (comment and start.startswith(comment))
    return rows


def parse_selected(
    stream: BinaryIO,
    layout: Layout,
    wanted: set[int],
    feed: str,
    on_replaced: OnReplaced | None = None,
) -> Iterator[Record | Invalid]:
    """The records of only the lines whose hash is in ``wanted``, read as a
    full parse under ``layout`` would read them."""
    lines = Lines(selected(stream, wanted, feed), layout.options, feed)
    yield from _records(lines.rows(), layout.columns, lines.damaged, on_replaced)


def _records(
    items: Iterable[Row | Invalid],
    columns: Columns,
    damaged: dict[int, frozenset[int]],
    on_replaced: OnReplaced | None,
) -> Iterator[Record | Invalid]:
    """Long because it is the hot loop, once per row: locals, the context and
    tags columns read inline, each Record built by its slots (build.py), a tags
    cell seen before split once and a context seen before shared (feeds repeat
    a few)."""
    at, context, tags_at, header = columns.indicator, columns.context, columns.tags, columns.header
    header_value = header[at] if header is not None and at < len(header) else None
    absent = ABSENT
    no_tags: tuple[str, ...] = ()
    seen_tags: dict[str, tuple[str, ...]] = {}
    # A row's context by its raw cells (one C call to take them): a context seen
    # before costs a lookup, not a strip and a test per cell and three tuples.
    seen = _Contexts(context)
    by_cells = seen.by_cells
    wanted = [column for _name, column in context]
    cells, wide = (operator.itemgetter(*wanted), max(wanted) + 1) if wanted else (None, 0)
    for item in items:
        if isinstance(item, Invalid):
            yield item
            continue
        number, text, fields, hashed = item
        count = len(fields)
        bad = damaged.pop(number, None) if damaged else None
        if bad is not None and (at in bad or count <= at):
            # A short row with undecodable bytes is more likely garbage than short.
            yield Invalid(number, text[:PREVIEW], "encoding", hashed)
            continue
        if count <= at:
            yield Invalid(number, text[:PREVIEW], "missing_column", hashed)
            continue
        value = fields[at].strip()
        if value == header_value and field_names(fields) == header:
            continue  # the header again, in a feed that repeats it
        if value in absent:
            yield Invalid(number, text[:PREVIEW], "empty", hashed)
            continue
        found: Context = ()
        if cells is not None:
            key = cells(fields) if count >= wide else None  # None: a row too short
            known = by_cells.get(key)
            found = known if known is not None else seen(fields, count, key)
        tags = no_tags
        if tags_at is not None and tags_at < count:
            cell = fields[tags_at]
            cached = seen_tags.get(cell)
            if cached is None:
                if len(seen_tags) >= _SEEN:
                    seen_tags.clear()  # a feed with a tags cell per row: bounded memory
                cached = seen_tags[cell] = _tags(cell)
            tags = cached
        if bad is not None and on_replaced is not None:
            replaced = _replaced(bad, columns)
            if replaced:
                on_replaced(number, replaced)
        yield record(number, value, found, tags, hashed)


class _Contexts:
    """The contexts of one read: by the raw cells that made them, and each
    distinct one as one tuple shared by its rows (the records of a batch then
    hold one object each, not three, for the garbage collector to walk)."""

    __slots__ = ("by_cells", "context", "shared")

    def __init__(self, context: tuple[tuple[str, int], ...]) -> None:
        self.context = context
        self.by_cells: dict[object, Context] = {}
        self.shared: dict[Context, Context] = {}

    def __call__(self, fields: list[str], count: int, key: object) -> Context:
        """The context of a row's fields (its present cells, stripped, by name),
        remembered by ``key``, its raw cells (None: not remembered)."""
        found = tuple(
            [
                (name, cell)
                for name, column in self.context
                if column < count and (cell := fields[column].strip()) not in ABSENT
            ]
        )
        for known in (self.shared, self.by_cells):
            if len(known) >= _SEEN:
                known.clear()
        found = self.shared.setdefault(found, found)
        if key is not None:
            self.by_cells[key] = found
        return found


def _replaced(bad: frozenset[int], columns: Columns) -> tuple[str, ...]:
    """The configured columns (context names, "tags") among a row's undecodable fields."""
    names = [name for name, at in columns.context if at in bad]
    if columns.tags is not None and columns.tags in bad:
        names.append("tags")
    return tuple(names)


def _tags(cell: str) -> tuple[str, ...]:
    return tuple([tag for part in cell.split(",") if (tag := part.strip()) not in ABSENT])
