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
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from feedsync.body import MAX_LINE, Raw, numbered, open_body, physical_lines, selected
from feedsync.errors import FetchError, ParseError
from feedsync.model import Context, Invalid, OnReplaced, Record

PREVIEW = 200
HEAD_LIMIT = 1000
ABSENT = frozenset({"", "None", "none", "NULL", "null", "n/a", "N/A", "-"})
_BOM = "\ufeff"
_HTML = ("<!doctype html", "<html", "<head", "<body", "<?xml", "<!--")
_SHOWN_NAMES = 30
_LOOKS_LIKE_INDICATOR = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}(?:[:/]\d+)?"  # IPv4, with a port or a prefix length
    r"|[a-z][a-z0-9+.-]*://\S+"  # URL with a scheme
    r"|(?:[a-z0-9_-]+\.)+[a-z]{2,63}\.?(?::\d+)?(?:/\S*)?"  # domain, host:port, host/path
    r"|[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}",  # MD5, SHA1, SHA256
    re.IGNORECASE,
)

# Bytes the encoding cannot read, as decoding with "surrogateescape" leaves them: lone
# surrogates, which no strictly decoded text holds.
_UNDECODED = re.compile("[\ud800-\udfff]")

_Row = tuple[int, str, list[str], int]  # line number, text, fields, hash
_NUMBER = re.compile(r"\d+")
_SHOWN_FOOTER = 80
# Told of a row kept with undecodable bytes in these context columns ("tags" for tags_field).


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
    lines = _Lines(numbered(stream, feed), options, feed)
    rows = lines.rows()
    head = _Head()
    yield from head.read(rows, lines, feed)
    layout = _layout_of(head, options, feed)
    if layout is not None:
        items = itertools.chain(head.items, rows)
        yield from _records(items, layout.columns, lines.damaged, on_replaced)


@dataclass(frozen=True, slots=True)
class Layout:
    """How a body's lines map onto records: its columns, found from its head.
    Two bodies with the same layout read every identical line identically."""

    columns: _Columns
    options: CsvOptions

    @property
    def signature(self) -> str:
        return hashlib.sha256(repr((self.options, self.columns)).encode()).hexdigest()[:32]


def read_layout(stream: BinaryIO, options: CsvOptions, feed: str) -> Layout | None:
    """The layout of a body, reading only its head; None for a body with no data row."""
    lines = _Lines(numbered(stream, feed), options, feed)
    head = _Head()
    for _invalid in head.read(lines.rows(), lines, feed):
        pass
    return _layout_of(head, options, feed)


def _layout_of(head: _Head, options: CsvOptions, feed: str) -> Layout | None:
    """The layout a body's head shows (None without a data row); its header
    row, if it has one, leaves the head's items: it is no record."""
    header = _head_header(head, options)
    if not head.data:
        return None
    if header is not None and header.row is not None:
        head.items.remove(header.row)
    return Layout(_resolve(options, header, head.data[0], feed), options)


def _head_header(head: _Head, options: CsvOptions) -> _Header | None:
    if not head.data and head.first_damaged is not None:
        # Every row of the head has undecodable bytes: the first one has to do.
        head.data.append(head.first_damaged)
    return _header(head, options) if head.data else None


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
    """The rows a full parse reads, counted by looking at each line as ``_Lines``
    does rather than parsing it: a header row is no row, any other line that
    is neither blank nor a comment is one (a valid or an invalid record)."""
    with open_body(path, feed) as stream:
        lines = _Lines(numbered(stream, feed), options, feed)
        head = _Head()
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
                start = (text.removeprefix(_BOM) if number == 1 else text).lstrip()
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
    lines = _Lines(selected(stream, wanted, feed), layout.options, feed)
    yield from _records(lines.rows(), layout.columns, lines.damaged, on_replaced)


class _Lines:
    """A body's data lines parsed as rows, one physical line each, with the lines
    that cannot be rows (over MAX_LINE, malformed) as Invalid, in body order.

    A row read from a line with undecodable bytes has them as U+FFFD in its
    text and fields, and ``damaged`` says which fields held them until the row
    is taken (so it holds at most the rows buffered in a head).
    """

    def __init__(self, raws: Iterator[Raw], options: CsvOptions, feed: str) -> None:
        self.raws = raws
        self.comment = options.comment
        self.delimiter = options.delimiter
        self.encoding = options.encoding
        self.feed = feed
        self.current: tuple[int, str, int, bool] | Invalid | None = None
        self.last_comment: tuple[int, str] | None = None
        self.damaged: dict[int, frozenset[int]] = {}  # line number -> 0-based fields

    def rows(self) -> Iterator[_Row | Invalid]:
        # One reader for all lines: a reader per line costs twice the time.
        reader = csv.reader(self._texts(), delimiter=self.delimiter, skipinitialspace=True)
        while True:
            try:
                for fields in reader:
                    current, self.current = self.current, None
                    if isinstance(current, tuple):
                        number, text, hashed, undecoded = current
                        if undecoded:
                            yield self._damaged(number, text, fields, hashed)
                        else:
                            yield number, text, fields, hashed
                    elif current is not None:
                        yield current
                return
            except csv.Error:
                # A field over csv.field_size_limit(), or a lone CR inside the line.
                current, self.current = self.current, None
                if isinstance(current, tuple):
                    number, text, hashed, _undecoded = current
                    reason = "too_long" if len(text) > csv.field_size_limit() else "malformed"
                    yield Invalid(number, _shown(text)[:PREVIEW], reason, hashed)

    def _damaged(self, number: int, text: str, fields: list[str], hashed: int) -> _Row:
        bad = frozenset(at for at, field in enumerate(fields) if _UNDECODED.search(field))
        if bad:
            self.damaged[number] = bad
        return number, _shown(text), [_shown(field) for field in fields], hashed

    def _texts(self) -> Iterator[str]:
        """Data lines for the csv reader; ``current`` says which line it is.

        An Invalid line is handed over as an empty line (an empty row), so that
        the reader returns at once and ``rows`` can pass the Invalid on.
        """
        comment = self.comment
        encoding = self.encoding
        for number, raw, hashed in self.raws:
            if len(raw) > MAX_LINE:
                self.current = Invalid(number, _preview(raw, encoding), "too_long", hashed)
                yield ""
                continue
            try:
                text = raw.decode(encoding).rstrip("\r")
                undecoded = False
            except UnicodeDecodeError:
                # Still a row: which of its fields hold the bad bytes decides.
                text = raw.decode(encoding, "surrogateescape").rstrip("\r")
                undecoded = True
            if number == 1:
                text = text.removeprefix(_BOM)
            start = text.lstrip()
            if not start:
                continue
            if comment and start.startswith(comment):
                self._note_comment(number, _shown(start) if undecoded else start)
                continue
            self.current = (number, text, hashed, undecoded)
            yield text
            while self.current is not None:
                # The line ended inside a quoted field and the reader asks for the
                # next line to continue it: close the quote, a row is one line.
                yield '"'

    def _note_comment(self, number: int, line: str) -> None:
        # Banner rules ("####", "#") are not candidates for a commented header.
        text = line[len(self.comment) :].strip()
        if text.strip(self.comment + " \t"):
            self.last_comment = (number, text)


def _preview(raw: bytes, encoding: str) -> str:
    return raw[: PREVIEW * 4].decode(encoding, "replace").rstrip("\r\n")[:PREVIEW]


def _shown(text: str) -> str:
    """Text with its undecodable bytes as U+FFFD: what records, messages and logs may hold."""
    return _UNDECODED.sub("\ufffd", text)


class _Head:
    """The first two data rows, which header detection looks at, and the lines
    between them (at most HEAD_LIMIT)."""

    __slots__ = ("comment", "data", "ended", "first_damaged", "items")

    def __init__(self) -> None:
        self.items: list[_Row | Invalid] = []
        self.data: list[_Row] = []
        self.comment: tuple[int, str] | None = None  # the last one before the first data row
        self.ended = False  # the body holds no more rows
        # The first row with undecodable bytes before any data row: such a row is no
        # header and may be garbage before one, so it is the first data row only
        # when the head holds no other.
        self.first_damaged: _Row | None = None

    def read(self, rows: Iterator[_Row | Invalid], lines: _Lines, feed: str) -> Iterator[Invalid]:
        """Fill the head, passing on the Invalid lines before the first data row:
        keeping them would buffer a body made of nothing else."""
        for item in rows:
            if not self.items and not self.data:
                _reject_html(item, feed)
            if isinstance(item, Invalid):
                if not self.data:
                    yield item
                    continue
                self.items.append(item)
                if len(self.items) > HEAD_LIMIT:
                    return
                continue
            if not self.data and item[0] in lines.damaged:
                if self.first_damaged is None:
                    self.first_damaged = item
                    self.comment = lines.last_comment
                self.items.append(item)
                if len(self.items) > HEAD_LIMIT:
                    return
                continue
            if not self.data and self.first_damaged is None:
                self.comment = lines.last_comment
            self.data.append(item)
            self.items.append(item)
            if len(self.data) == 2:
                return
        self.ended = True


def _reject_html(first: _Row | Invalid, feed: str) -> None:
    number, text = (first.line, first.value) if isinstance(first, Invalid) else first[:2]
    if text.lstrip().lower().startswith(_HTML):
        raise ParseError(feed, f"line {number}: the body is an HTML page, not a feed")


@dataclass(frozen=True, slots=True)
class _Header:
    names: tuple[str, ...]
    line: int
    row: _Row | None  # the data row that is the header, None for a commented one


def _header(head: _Head, options: CsvOptions) -> _Header | None:
    if options.header is False:
        return None
    first = head.data[0]
    if head.comment is not None:
        number, text = head.comment
        names = _names(_split(text, options.delimiter))
        least = 1 if options.header else 2
        # Wider than the first row is fine: ragged rows leave out empty last fields.
        if len(names) >= max(least, len(first[2])) and not any(map(_looks_like_indicator, names)):
            return _Header(names, number, None)
    if options.header or _is_header_row(head, options):
        return _Header(_names(first[2]), first[0], first)
    return None


def _is_header_row(head: _Head, options: CsvOptions) -> bool:
    """Feodo: an uncommented header, told from data by holding no indicator while
    the row below does, or, with no row below (an empty feed that keeps its
    header), by naming every configured column."""
    if any(map(_looks_like_indicator, head.data[0][2])):
        return False
    if len(head.data) == 2:
        return any(map(_looks_like_indicator, head.data[1][2]))
    specs = (options.indicator, options.tags_field, *(spec for _, spec in options.context))
    wanted = {s.casefold() for s in specs if isinstance(s, str) and not s.isdigit()}
    return head.ended and bool(wanted) and wanted <= {n.casefold() for n in _names(head.data[0][2])}


def _split(text: str, delimiter: str) -> list[str]:
    return next(csv.reader((text,), delimiter=delimiter, skipinitialspace=True), [])


def _names(fields: Iterable[str]) -> tuple[str, ...]:
    return tuple(f.strip().strip('"').strip() for f in fields)


def _looks_like_indicator(field: str) -> bool:
    value = field.strip().strip('"[]')
    if _LOOKS_LIKE_INDICATOR.fullmatch(value):
        return True
    if ":" not in value:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Columns:
    """Column positions (0-based) resolved once against the header."""

    indicator: int
    context: tuple[tuple[str, int], ...]
    tags: int | None
    header: tuple[str, ...] | None


def _resolve(options: CsvOptions, header: _Header | None, first: _Row, feed: str) -> _Columns:
    def column(spec: str | int, what: str) -> int:
        return _column(spec, what, header, first, feed)

    return _Columns(
        indicator=0 if options.indicator is None else column(options.indicator, "indicator"),
        context=tuple((name, column(spec, f"context {name}")) for name, spec in options.context),
        tags=None if options.tags_field is None else column(options.tags_field, "tags_field"),
        header=None if header is None else header.names,
    )


def _column(spec: str | int, what: str, header: _Header | None, first: _Row, feed: str) -> int:
    if isinstance(spec, int):
        if spec < 1:
            raise ParseError(feed, f"{what}: column {spec}: columns are numbered from 1")
        return spec - 1
    names = () if header is None else header.names
    if spec in names:
        return names.index(spec)
    folded = [name.casefold() for name in names]
    if spec.casefold() in folded:
        return folded.index(spec.casefold())
    if spec.isdigit() and int(spec) >= 1:
        return int(spec) - 1
    if header is None:
        if looks := _not_csv(first):
            raise ParseError(feed, f"{looks} ({what} names column {spec!r}; there is no header)")
        raise ParseError(
            feed,
            f"{what}: column {spec!r} named, but the feed has no header"
            f" (first data row at line {first[0]})",
        )
    shown = ", ".join(names[:_SHOWN_NAMES]) + (", ..." if len(names) > _SHOWN_NAMES else "")
    raise ParseError(feed, f"{what}: column {spec!r} not in header ({shown}) at line {header.line}")


def _not_csv(first: _Row) -> str | None:
    # An error answer (JSON, an HTML fragment) has no header either: say what
    # the body is rather than what it lacks.
    start = first[1].lstrip()[:1]
    if start in ("{", "["):
        return f"line {first[0]}: the body is JSON, not CSV: an error answer?"
    if start == "<":
        return f"line {first[0]}: the body is HTML, not CSV: an error or login page?"
    return None


def _records(
    items: Iterable[_Row | Invalid],
    columns: _Columns,
    damaged: dict[int, frozenset[int]],
    on_replaced: OnReplaced | None,
) -> Iterator[Record | Invalid]:
    # The hot loop, once per row: locals, and helpers only for configured columns.
    at = columns.indicator
    context = columns.context
    tags_at = columns.tags
    header = columns.header
    header_value = header[at] if header is not None and at < len(header) else None
    absent = ABSENT
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
        if value == header_value and _names(fields) == header:
            continue  # the header again, in a feed that repeats it
        if value in absent:
            yield Invalid(number, text[:PREVIEW], "empty", hashed)
            continue
        found: Context = ()
        if context:
            found = _context(fields, context)
        tags: tuple[str, ...] = ()
        if tags_at is not None and tags_at < count:
            tags = _tags(fields[tags_at])
        if bad is not None and on_replaced is not None:
            replaced = _replaced(bad, columns)
            if replaced:
                on_replaced(number, replaced)
        yield Record(line=number, value=value, context=found, tags=tags, line_hash=hashed)


def _replaced(bad: frozenset[int], columns: _Columns) -> tuple[str, ...]:
    """The configured columns (context names, "tags") among a row's undecodable fields."""
    names = [name for name, at in columns.context if at in bad]
    if columns.tags is not None and columns.tags in bad:
        names.append("tags")
    return tuple(names)


def _context(fields: list[str], columns: tuple[tuple[str, int], ...]) -> Context:
    found = []
    for name, at in columns:
        if at < len(fields) and (value := fields[at].strip()) not in ABSENT:
            found.append((name, value))
    return tuple(found)


def _tags(cell: str) -> tuple[str, ...]:
    return tuple([tag for part in cell.split(",") if (tag := part.strip()) not in ABSENT])
