"""CSV and plain-text feeds: a downloaded body streamed into records.

Handles what real feeds do: ``#`` banners and footers (or ``;`` for Spamhaus),
a header in the last commented line (URLhaus, SSLBL, MalwareBazaar) or in the
first uncommented row (Feodo) or none at all (plain lists), quoted fields,
``", "`` separators (ThreatFox), BOM, CRLF, gzip and zip bodies. Memory is
bounded by one line: nothing holds the body or the rows.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from feedsync.errors import ParseError
from feedsync.model import Invalid, Record

MAX_LINE = 1 << 20
CHUNK = 1 << 16
ABSENT = frozenset({"", "none", "null", "n/a", "-"})
_HTML = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_LOOKS_LIKE_INDICATOR = re.compile(
    r"^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]*:[0-9a-f:]+|[a-z][a-z0-9+.-]*://\S+"
    r"|[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}|([a-z0-9-]+\.)+[a-z]{2,})([:/]\S*)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class CsvOptions:
    """How a feed's columns map onto indicators."""

    indicator: str | int | None = None
    context: tuple[tuple[str, str], ...] = ()
    tags_field: str | None = None
    comment: str = "#"
    delimiter: str = ","
    header: bool | None = None


@contextlib.contextmanager
def open_body(path: str | os.PathLike[str], feed: str) -> Iterator[BinaryIO]:
    """The body as a binary stream, gunzipped or unzipped by its magic bytes."""
    with open(path, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw) as inner:
                yield io.BufferedReader(_Guarded(cast(IO[bytes], inner), feed, "gzip"), CHUNK)
        elif magic == b"PK\x03\x04":
            try:
                archive = zipfile.ZipFile(raw)
                members = [m for m in archive.infolist() if not m.is_dir()]
            except (zipfile.BadZipFile, OSError) as exc:
                raise ParseError(feed, f"corrupt zip body: {exc}") from exc
            if not members:
                raise ParseError(feed, "zip body holds no file")
            member = max(members, key=lambda m: m.file_size)
            with archive, archive.open(member) as inner:
                yield io.BufferedReader(_Guarded(inner, feed, "zip"), CHUNK)
        else:
            yield raw


class _Guarded(io.RawIOBase):
    """Turns decompression errors, which surface while reading, into ParseError."""

    def __init__(self, inner: IO[bytes], feed: str, kind: str) -> None:
        self.inner = inner
        self.feed = feed
        self.kind = kind

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self.inner.read(len(buffer))
        except (EOFError, zlib.error, OSError, zipfile.BadZipFile) as exc:
            raise ParseError(self.feed, f"corrupt or truncated {self.kind} body: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)


def parse_csv(stream: BinaryIO, options: CsvOptions, feed: str) -> Iterator[Record | Invalid]:
    """Stream the records of a CSV or plain-text body."""
    lines = _Lines(stream, feed, options.comment)
    header, pending = _find_header(lines, options)
    mapping = _Mapping(options, header, feed)
    for number, text in itertools.chain(pending, lines):
        yield from mapping.rows(number, text)


class _Lines:
    """Physical lines as (number, text), comments set apart, oversize and bad
    UTF-8 lines as Invalid; the last commented line before data is kept."""

    def __init__(self, stream: BinaryIO, feed: str, comment: str) -> None:
        self.stream = stream
        self.feed = feed
        self.comment = comment
        self.number = 0
        self.last_comment: str | None = None
        self.seen_data = False
        self._lines = self._read()

    def __iter__(self) -> Iterator[tuple[int, str | Invalid]]:
        return self

    def __next__(self) -> tuple[int, str | Invalid]:
        return next(self._lines)

    def _read(self) -> Iterator[tuple[int, str | Invalid]]:
        while True:
            raw = self.stream.readline(MAX_LINE + 1)
            if not raw:
                return
            self.number += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                self._skip_rest()
                yield (
                    self.number,
                    Invalid(self.number, raw[:200].decode("utf-8", "replace"), "too_long"),
                )
                continue
            if self.number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if b"\x00" in raw:
                raise ParseError(self.feed, f"line {self.number}: NUL byte (a binary body?)")
            stripped = raw.strip()
            if not stripped:
                continue
            if not self.seen_data and stripped.lower().startswith(_HTML):
                raise ParseError(
                    self.feed, f"line {self.number}: the body is an HTML page, not a feed"
                )
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield (
                    self.number,
                    Invalid(self.number, raw[:200].decode("utf-8", "replace"), "encoding"),
                )
                continue
            if text.lstrip().startswith(self.comment):
                if not self.seen_data:
                    self.last_comment = text.lstrip()[len(self.comment) :].strip()
                continue
            self.seen_data = True
            yield self.number, text

    def _skip_rest(self) -> None:
        while True:
            chunk = self.stream.readline(MAX_LINE)
            if not chunk or chunk.endswith(b"\n"):
                return


def _split(text: str, delimiter: str) -> list[str]:
    return next(csv.reader([text], delimiter=delimiter, skipinitialspace=True), [])


def _find_header(
    lines: _Lines, options: CsvOptions
) -> tuple[list[str] | None, list[tuple[int, str | Invalid]]]:
    """The header, if any, and the lines read to find it that are still to be parsed."""
    pending: list[tuple[int, str | Invalid]] = []
    first = _next_data(lines, pending)
    if options.header is False or first is None:
        return None, pending
    fields = _split(first, options.delimiter)
    commented = lines.last_comment
    if commented is not None:
        named = _clean(_split(commented, options.delimiter))
        # Ragged feeds have short rows, so the header may be wider than the first row.
        if len(named) >= max(2, len(fields)) and not any(map(_looks_like_indicator, named)):
            return named, pending
    at = len(pending) - 1
    if options.header is True:
        return _clean(fields), pending[:at]
    if any(map(_looks_like_indicator, fields)):
        return None, pending
    second = _next_data(lines, pending)
    if second is not None and any(map(_looks_like_indicator, _split(second, options.delimiter))):
        # Feodo: a quoted, uncommented header row above rows that hold indicators.
        return _clean(fields), pending[:at] + pending[at + 1 :]
    return None, pending


def _next_data(lines: _Lines, pending: list[tuple[int, str | Invalid]]) -> str | None:
    for item in lines:
        pending.append(item)
        if isinstance(item[1], str):
            return item[1]
    return None


def _clean(fields: list[str]) -> list[str]:
    return [f.strip().strip('"').strip() for f in fields]


def _looks_like_indicator(field: str) -> bool:
    return bool(_LOOKS_LIKE_INDICATOR.match(field.strip().strip('"')))


class _Mapping:
    """Column positions resolved once against the header."""

    def __init__(self, options: CsvOptions, header: list[str] | None, feed: str) -> None:
        self.options = options
        self.header = header
        self.feed = feed
        self.indicator = self.column(options.indicator, "indicator")
        self.context = [
            (name, self.column(col, f"context.{name}")) for name, col in options.context
        ]
        self.tags = (
            None if options.tags_field is None else self.column(options.tags_field, "tags_field")
        )
        self.needed = max([self.indicator, *(i for _n, i in self.context)], default=0)

    def column(self, spec: str | int | None, what: str) -> int:
        if spec is None:
            return 0
        if isinstance(spec, int):
            return spec - 1
        if self.header is None:
            if spec.isdigit() and int(spec) >= 1:
                return int(spec) - 1
            raise ParseError(
                self.feed, f"{what}: column {spec!r} named, but the feed has no header"
            )
        if spec in self.header:
            return self.header.index(spec)
        lowered = [h.lower() for h in self.header]
        if spec.lower() in lowered:
            return lowered.index(spec.lower())
        if spec.isdigit() and int(spec) >= 1:
            return int(spec) - 1
        raise ParseError(
            self.feed, f"{what}: column {spec!r} not in header ({', '.join(self.header)})"
        )

    def rows(self, number: int, text: str | Invalid) -> Iterator[Record | Invalid]:
        if isinstance(text, Invalid):
            yield text
            return
        fields = _split(text, self.options.delimiter)
        if self.header is not None and _clean(fields) == self.header:
            return
        if len(fields) <= self.indicator:
            yield Invalid(number, text[:200], "missing_column")
            return
        value = fields[self.indicator].strip()
        if value.lower() in ABSENT:
            yield Invalid(number, text[:200], "empty")
            return
        context = tuple(
            (name, fields[i].strip())
            for name, i in self.context
            if i < len(fields) and fields[i].strip().lower() not in ABSENT
        )
        tags: tuple[str, ...] = ()
        if self.tags is not None and self.tags < len(fields):
            tags = tuple(
                t.strip() for t in fields[self.tags].split(",") if t.strip().lower() not in ABSENT
            )
        yield Record(line=number, value=value, context=context, tags=tags)
