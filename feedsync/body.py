"""A downloaded body as bytes and lines: gzip and zip bodies opened by their
magic bytes, decompression errors turned into ParseError, and the body's
physical lines, read a chunk at a time, each with its number and hash."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, BinaryIO

from xxhash import xxh3_64_intdigest

from feedsync.errors import ParseError

MAX_LINE = 1 << 20
READ = 1 << 18  # at most MAX_LINE: a line within one read is never over it
CHUNK = 1 << 16
_DECOMPRESSION_ERRORS = (EOFError, zlib.error, zipfile.BadZipFile, OSError)

Raw = tuple[int, bytes, int]  # line number, the line's bytes, its hash
_Compressed = io.BufferedIOBase | IO[bytes]


@contextlib.contextmanager
def open_body(path: str | os.PathLike[str], feed: str) -> Iterator[BinaryIO]:
    """The body as a binary stream, gunzipped or unzipped as its magic bytes say."""
    with open(path, "rb", buffering=CHUNK) as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw) as gunzipped, _guarded(gunzipped, feed, "gzip") as body:
                yield body
        elif magic == b"PK\x03\x04":
            with _zip_member(raw, feed) as unzipped, _guarded(unzipped, feed, "zip") as body:
                yield body
        else:
            yield raw


@contextlib.contextmanager
def _zip_member(raw: BinaryIO, feed: str) -> Iterator[IO[bytes]]:
    """The largest file in the archive: feeds zip one file, some add a readme."""
    try:
        archive = zipfile.ZipFile(raw)
        members = [m for m in archive.infolist() if not m.is_dir()]
        member = archive.open(max(members, key=lambda m: m.file_size)) if members else None
    except (*_DECOMPRESSION_ERRORS, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression.
        raise ParseError(feed, f"corrupt or unreadable zip body: {exc}") from exc
    with archive:
        if member is None:
            raise ParseError(feed, "zip body holds no file")
        with member:
            yield member


def _guarded(inner: _Compressed, feed: str, kind: str) -> io.BufferedReader:
    return io.BufferedReader(_Guarded(inner, feed, kind), CHUNK)


class _Guarded(io.RawIOBase):
    """Turns decompression errors, which surface while reading, into ParseError."""

    def __init__(self, inner: _Compressed, feed: str, kind: str) -> None:
        self.inner = inner
        self.feed = feed
        self.kind = kind

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self.inner.read(len(buffer))
        except _DECOMPRESSION_ERRORS as exc:
            raise ParseError(self.feed, f"corrupt or truncated {self.kind} body: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)


# The 64-bit hash of a raw line (without its line feed), the same wherever a line
# is hashed; the C function itself, not a wrapper: it runs once per line.
line_hash = xxh3_64_intdigest
_SIGNED = 1 << 63  # SQLite integers are signed; line hashes are not


def to_sql(digest: int) -> int:
    """A line hash as SQLite stores it."""
    return digest - _SIGNED


def from_sql(value: int) -> int:
    """A line hash as SQLite stored it, back."""
    return value + _SIGNED


def physical_lines(stream: BinaryIO, feed: str) -> Iterator[list[bytes]]:
    """The body's lines in batches, without their line feeds. A line over
    MAX_LINE is cut to MAX_LINE + 1 bytes, which the parser calls too long, and
    a NUL byte anywhere raises ParseError: the body is not text."""
    pending = b""
    cut = False  # pending was cut: drop the rest of its line
    number = 0
    while chunk := stream.read(READ):
        if b"\0" in chunk:
            line = number + chunk.count(b"\n", 0, chunk.index(b"\0")) + 1
            raise ParseError(feed, f"line {line}: NUL byte, the body is not text")
        lines = chunk.split(b"\n")
        last = lines.pop()
        if lines:
            lines[0] = pending if cut else (pending + lines[0])[: MAX_LINE + 1]
            pending, cut = last, False
            number += len(lines)
            yield lines
        elif not cut:
            pending += last
            if len(pending) > MAX_LINE:
                pending, cut = pending[: MAX_LINE + 1], True
    if pending:
        yield [pending]


def numbered(stream: BinaryIO, feed: str) -> Iterator[Raw]:
    """Every line with its number and hash."""
    number = 0
    for batch in physical_lines(stream, feed):
        for raw, digest in zip(batch, map(line_hash, batch), strict=True):
            number += 1
            yield number, raw, digest


def selected(stream: BinaryIO, wanted: set[int], feed: str) -> Iterator[Raw]:
    number = 0
    for batch in physical_lines(stream, feed):
        digests = list(map(line_hash, batch))
        if not wanted.isdisjoint(digests):
            for at in [at for at, digest in enumerate(digests) if digest in wanted]:
                yield number + at + 1, batch[at], digests[at]
        number += len(batch)
