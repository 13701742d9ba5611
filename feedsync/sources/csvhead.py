"""A CSV body's head: the first data rows, the header they show, the columns it names.

A header is the last commented line before the data (URLhaus, SSLBL), the first
uncommented row when it holds no indicator and the row below does (Feodo), or
none (plain lists). Configured columns are resolved once against it, with an
error naming what the body is when it is no CSV at all.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from feedsync.errors import ParseError
from feedsync.model import Invalid
from feedsync.sources.csvlines import Lines, Row

if TYPE_CHECKING:
    from feedsync.sources.csvfeed import CsvOptions

HEAD_LIMIT = 1000
_HTML = ("<!doctype html", "<html", "<head", "<body", "<?xml", "<!--")
_SHOWN_NAMES = 30
_LOOKS_LIKE_INDICATOR = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}(?:[:/]\d+)?"  # IPv4, with a port or a prefix length
    r"|[a-z][a-z0-9+.-]*://\S+"  # URL with a scheme
    r"|(?:[a-z0-9_-]+\.)+[a-z]{2,63}\.?(?::\d+)?(?:/\S*)?"  # domain, host:port, host/path
    r"|[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}",  # MD5, SHA1, SHA256
    re.IGNORECASE,
)


class Head:
    """The first two data rows, which header detection looks at, and the lines
    between them (at most HEAD_LIMIT)."""

    __slots__ = ("comment", "data", "ended", "first_damaged", "items")

    def __init__(self) -> None:
        self.items: list[Row | Invalid] = []
        self.data: list[Row] = []
        self.comment: tuple[int, str] | None = None  # the last one before the first data row
        self.ended = False  # the body holds no more rows
        # The first row with undecodable bytes before any data row: such a row is no
        # header and may be garbage before one, so it is the first data row only
        # when the head holds no other.
        self.first_damaged: Row | None = None

    def read(self, rows: Iterator[Row | Invalid], lines: Lines, feed: str) -> Iterator[Invalid]:
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


def _reject_html(first: Row | Invalid, feed: str) -> None:
    number, text = (first.line, first.value) if isinstance(first, Invalid) else first[:2]
    if text.lstrip().lower().startswith(_HTML):
        raise ParseError(feed, f"line {number}: the body is an HTML page, not a feed")


@dataclass(frozen=True, slots=True)
class Header:
    names: tuple[str, ...]
    line: int
    row: Row | None  # the data row that is the header, None for a commented one


def find_header(head: Head, options: CsvOptions) -> Header | None:
    if options.header is False:
        return None
    first = head.data[0]
    if head.comment is not None:
        number, text = head.comment
        names = field_names(_split(text, options.delimiter))
        least = 1 if options.header else 2
        # Wider than the first row is fine: ragged rows leave out empty last fields.
        if len(names) >= max(least, len(first[2])) and not any(map(_looks_like_indicator, names)):
            return Header(names, number, None)
    if options.header or _is_header_row(head, options):
        return Header(field_names(first[2]), first[0], first)
    return None


def _is_header_row(head: Head, options: CsvOptions) -> bool:
    """Feodo: an uncommented header, told from data by holding no indicator while
    the row below does, or, with no row below (an empty feed that keeps its
    header), by naming every configured column."""
    if any(map(_looks_like_indicator, head.data[0][2])):
        return False
    if len(head.data) == 2:
        return any(map(_looks_like_indicator, head.data[1][2]))
    specs = (options.indicator, options.tags_field, *(spec for _, spec in options.context))
    wanted = {s.casefold() for s in specs if isinstance(s, str) and not s.isdigit()}
    return (
        head.ended
        and bool(wanted)
        and wanted <= {n.casefold() for n in field_names(head.data[0][2])}
    )


def _split(text: str, delimiter: str) -> list[str]:
    return next(csv.reader((text,), delimiter=delimiter, skipinitialspace=True), [])


def field_names(fields: Iterable[str]) -> tuple[str, ...]:
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
class Columns:
    """Column positions (0-based) resolved once against the header."""

    indicator: int
    context: tuple[tuple[str, int], ...]
    tags: int | None
    header: tuple[str, ...] | None


def resolve(options: CsvOptions, header: Header | None, first: Row, feed: str) -> Columns:
    def column(spec: str | int, what: str) -> int:
        return _column(spec, what, header, first, feed)

    return Columns(
        indicator=0 if options.indicator is None else column(options.indicator, "indicator"),
        context=tuple((name, column(spec, f"context {name}")) for name, spec in options.context),
        tags=None if options.tags_field is None else column(options.tags_field, "tags_field"),
        header=None if header is None else header.names,
    )


def _column(spec: str | int, what: str, header: Header | None, first: Row, feed: str) -> int:
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


def _not_csv(first: Row) -> str | None:
    # An error answer (JSON, an HTML fragment) has no header either: say what
    # the body is rather than what it lacks.
    start = first[1].lstrip()[:1]
    if start in ("{", "["):
        return f"line {first[0]}: the body is JSON, not CSV: an error answer?"
    if start == "<":
        return f"line {first[0]}: the body is HTML, not CSV: an error or login page?"
    return None
