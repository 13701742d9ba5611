"""Downloaded bodies as bytes and lines: decompression, its size bound, line hashes.

gzip, bzip2 and zip bodies are opened by their magic bytes, their inflated size
bounded, decompression errors turned into ParseError; the body's physical lines
are read a chunk at a time, each with its number and hash."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, BinaryIO

from xxhash import xxh3_64_intdigest

from feedsync import logs
from feedsync.errors import ParseError

log = logs.get("feedsync.body")

MAX_LINE = 1 << 20
READ = 1 << 18  # at most MAX_LINE: a line within one read is never over it
CHUNK = 1 << 16
TAIL = 1 << 16  # how much of a body's end ``inspect`` keeps
_DECOMPRESSION_ERRORS = (EOFError, zlib.error, zipfile.BadZipFile, OSError, ValueError)
# Files an archive holds beside its data: never the feed itself.
_NOT_DATA_STEMS = ("readme", "license", "licence", "copying", "changelog", "notice", "terms")
_NOT_DATA_SUFFIXES = frozenset(
    {".md", ".pdf", ".html", ".htm", ".rtf", ".doc", ".docx", ".png", ".jpg", ".gif"}
    | {".sig", ".asc", ".gpg", ".md5", ".sha1", ".sha256", ".sha512"}
)

Raw = tuple[int, bytes, int]  # line number, the line's bytes, its hash
# Lines of a body: their numbers, bytes and hashes, in three lists of one length.
LineBatch = tuple[Sequence[int], list[bytes], list[int]]
_Compressed = io.BufferedIOBase | IO[bytes]


@dataclass(frozen=True, slots=True)
class Tail:
    """What a complete read of a body found: its last (inflated) bytes, and
    whether it was compressed (a compressed body's end is proven by its trailer)."""

    end: bytes
    compressed: bool


@contextlib.contextmanager
def open_body(
    path: str | os.PathLike[str], feed: str, limit: int | None = None
) -> Iterator[BinaryIO]:
    """The body as a binary stream, gunzipped, bunzipped or unzipped as its magic
    bytes say; reading more than ``limit`` inflated bytes raises ParseError."""
    with open(path, "rb", buffering=CHUNK) as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with (
                gzip.GzipFile(fileobj=raw) as gunzipped,
                _guarded(gunzipped, feed, "gzip", limit) as body,
            ):
                yield body
        elif magic[:3] == b"BZh":
            with bz2.BZ2File(raw) as bunzipped, _guarded(bunzipped, feed, "bzip2", limit) as body:
                yield body
        elif magic == b"PK\x03\x04":
            with (
                _zip_member(raw, feed, limit) as unzipped,
                _guarded(unzipped, feed, "zip", limit) as body,
            ):
                yield body
        else:
            yield raw


def inspect(path: str | os.PathLike[str], feed: str, limit: int) -> Tail:
    """Read a body to its end once: a compressed one is inflated completely, so
    that a missing trailer, a bad CRC or an inflated size over ``limit`` is
    found before anything parses it."""
    with open(path, "rb") as raw:
        compressed = _compressed(raw.read(4))
        if not compressed:
            raw.seek(max(0, os.fstat(raw.fileno()).st_size - TAIL))
            return Tail(raw.read(), compressed=False)
    choice = zip_choice(path, feed)
    if choice is not None and choice[1]:
        log.info("feed.zip_member", feed=feed, member=choice[0], skipped=list(choice[1]))
    end = b""
    with open_body(path, feed, limit) as stream:
        while chunk := stream.read(READ):
            end = (end + chunk)[-TAIL:]
    return Tail(end, compressed=True)


def _compressed(magic: bytes) -> bool:
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"PK\x03\x04"


@contextlib.contextmanager
def _zip_member(raw: BinaryIO, feed: str, limit: int | None) -> Iterator[IO[bytes]]:
    try:
        archive = zipfile.ZipFile(raw)
    except (*_DECOMPRESSION_ERRORS, NotImplementedError, RuntimeError) as exc:
        raise ParseError(feed, f"corrupt or unreadable zip body: {exc}") from exc
    with archive:
        member = data_member(archive, feed)
        if limit is not None and member.file_size > limit:
            raise ParseError(
                feed,
                f"zip member {member.filename!r} inflates to {member.file_size} bytes,"
                f" over the limit of {limit} bytes",
            )
        try:
            opened = archive.open(member)
        except (*_DECOMPRESSION_ERRORS, NotImplementedError, RuntimeError) as exc:
            # RuntimeError: an encrypted member; NotImplementedError: an unknown compression.
            raise ParseError(feed, f"zip member {member.filename!r} is unreadable: {exc}") from exc
        with opened:
            yield opened


def data_member(archive: zipfile.ZipFile, feed: str) -> zipfile.ZipInfo:
    """The archive's one data file, chosen by name: a README, licence or
    signature beside it is never read as the feed, however large it is."""
    files = [m for m in archive.infolist() if not m.is_dir()]
    data = [m for m in files if _is_data(m.filename)]
    if len(data) == 1:
        return data[0]
    if not data:
        names = ", ".join(m.filename for m in files[:10])
        raise ParseError(feed, f"zip body holds no data file ({names or 'it is empty'})")
    names = ", ".join(m.filename for m in data[:10])
    raise ParseError(feed, f"zip body holds several data files ({names}): which one is the feed?")


def zip_choice(path: str | os.PathLike[str], feed: str) -> tuple[str, tuple[str, ...]] | None:
    """For a zip body: the member read as the feed and the files left aside."""
    with open(path, "rb") as raw:
        if raw.read(4) != b"PK\x03\x04":
            return None
        raw.seek(0)
        try:
            with zipfile.ZipFile(raw) as archive:
                member = data_member(archive, feed)
                others = tuple(m.filename for m in archive.infolist() if m is not member)
        except (*_DECOMPRESSION_ERRORS, NotImplementedError, RuntimeError) as exc:
            raise ParseError(feed, f"corrupt or unreadable zip body: {exc}") from exc
    return member.filename, others


def _is_data(name: str) -> bool:
    path = PurePosixPath(name)
    if path.name.startswith(".") or "__MACOSX" in path.parts:
        return False
    if path.suffix.lower() in _NOT_DATA_SUFFIXES:
        return False
    return not path.name.lower().startswith(_NOT_DATA_STEMS)


def _guarded(inner: _Compressed, feed: str, kind: str, limit: int | None) -> io.BufferedReader:
    return io.BufferedReader(_Guarded(inner, feed, kind, limit), CHUNK)


class _Guarded(io.RawIOBase):
    """Turns decompression errors, which surface while reading, into ParseError,
    and stops a body that inflates past ``limit``."""

    def __init__(self, inner: _Compressed, feed: str, kind: str, limit: int | None) -> None:
        self.inner = inner
        self.feed = feed
        self.kind = kind
        self.limit = limit
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self.inner.read(len(buffer))
        except _DECOMPRESSION_ERRORS as exc:
            raise ParseError(self.feed, f"corrupt or truncated {self.kind} body: {exc}") from exc
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise ParseError(
                self.feed, f"{self.kind} body inflates to over the limit of {self.limit} bytes"
            )
        buffer[: len(data)] = data
        return len(data)


# The 64-bit hash of a raw line (without its line feed), the same wherever a line
# is hashed; the C function itself, not a wrapper: it runs once per line.
line_hash = xxh3_64_intdigest
_SIGNED = 1 << 63  # SQLite integers are signed; line hashes are not


def to_sql(hashed: int) -> int:
    """A line hash as SQLite stores it."""
    return hashed - _SIGNED


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


def numbered(stream: BinaryIO, feed: str) -> Iterator[LineBatch]:
    """Every line, a batch at a time, with its number and hash."""
    number = 0
    for batch in physical_lines(stream, feed):
        yield range(number + 1, number + 1 + len(batch)), batch, list(map(line_hash, batch))
        number += len(batch)


def selected(stream: BinaryIO, wanted: set[int], feed: str) -> Iterator[LineBatch]:
    """The lines whose hash is in ``wanted``, a batch at a time, with their numbers and hashes."""
    number = 0
    for batch in physical_lines(stream, feed):
        hashes = list(map(line_hash, batch))
        if not wanted.isdisjoint(hashes):
            kept = [at for at, hashed in enumerate(hashes) if hashed in wanted]
            yield (
                [number + at + 1 for at in kept],
                [batch[at] for at in kept],
                [hashes[at] for at in kept],
            )
        number += len(batch)
