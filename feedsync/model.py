"""Values that flow between the steps: raw records, normalized indicators, bodies, line parsers."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol


class Kind(enum.StrEnum):
    """What an indicator value is, as detected by normalization."""

    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    URL = "url"
    DOMAIN = "domain"

    @property
    def cybertrace_type(self) -> str:
        """The CyberTrace indicator type: domains go in as URL values, both IPs as IP."""
        return _CYBERTRACE_TYPES[self]


_CYBERTRACE_TYPES = {
    Kind.MD5: "MD5",
    Kind.SHA1: "SHA1",
    Kind.SHA256: "SHA256",
    Kind.IPV4: "IP",
    Kind.IPV6: "IP",
    Kind.URL: "URL",
    Kind.DOMAIN: "URL",
}

Context = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One row of a feed as the source read it, before normalization.

    ``line`` is the place in the source (line number of a CSV row) used in
    messages; ``key`` identifies the row within its feed where the source has
    its own identity (MISP attribute uuid, STIX id) and is ``None`` otherwise,
    in which case the canonical value is the key.
    """

    line: int
    value: str
    context: Context = ()
    tags: tuple[str, ...] = ()
    key: str | None = None
    expires: float | None = None  # Unix time the source says it stops being valid
    # The hash of the raw line a line-based source read it from (see ``lines``).
    line_hash: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Indicator:
    """A normalized indicator: canonical value, kind, context and tags."""

    key: str
    value: str
    kind: Kind
    context: Context
    tags: tuple[str, ...]
    expires: float | None = None
    line_hash: int | None = field(default=None, compare=False)
    line: int = field(default=0, compare=False)  # the record's place in its source


@dataclass(frozen=True, slots=True)
class Invalid:
    """A record normalization refused, with the reason (a short, bounded word)."""

    line: int
    value: str
    reason: str
    line_hash: int | None = field(default=None, compare=False)
    # The record's own key, for an excluded one: a patch then removes the row it had.
    key: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Removal:
    """An incremental source's word that the row ``key`` is gone (revoked,
    deleted, expired); only meaningful in a patch, never in a full snapshot."""

    key: str
    line: int = 0
    # Also every key "<key>|..." (the several values of one STIX indicator).
    family: bool = False
    reason: str | None = None  # why, for the change journal (revoked, soft-deleted in MISP)


BodyMode = Literal["replace", "patch"]


@dataclass(frozen=True, slots=True)
class Validators:
    """What identifies the last body applied: HTTP validators and its SHA-256."""

    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None
    cursor: str | None = None  # an incremental source's position (JSON), kept with the snapshot


@dataclass(frozen=True, slots=True)
class Body:
    """A completely downloaded body; ``temporary`` bodies are deleted after use."""

    path: Path
    size: int
    validators: Validators
    temporary: bool
    # "replace": the records are the whole feed; "patch": only what changed since
    # the cursor, with Removal items for rows that went away.
    mode: BodyMode = "replace"
    end: bytes = b""  # the last bytes of the (inflated) body
    # False when the body ended by the connection closing, with no length, chunk
    # framing or compressed trailer to prove that it ended where the server meant.
    framed: bool = True
    # The content is the body last applied (same SHA-256) under new HTTP validators:
    # nothing to read (the file is gone), but the validators must be kept, or every
    # later conditional request misses and downloads it again.
    same: bool = False

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def pulled(path: Path, count: int, cursor: str, *, full: bool) -> Body | None:
    """The body of an API pull spooled to ``path``: a full pull replaces the
    snapshot, an incremental one patches it, and an empty incremental pull is
    no change at all."""
    if not full and count == 0:
        path.unlink(missing_ok=True)
        return None
    mode: BodyMode = "replace" if full else "patch"
    return Body(path, count, Validators(cursor=cursor), temporary=True, mode=mode)


# A row kept although its context had undecodable bytes: its line and the columns.
OnReplaced = Callable[[int, tuple[str, ...]], None]


class LineLayout(Protocol):
    """How a body's lines map onto records; two bodies with the same ``signature``
    read every identical line identically."""

    @property
    def signature(self) -> str: ...


class LineParser(Protocol):
    """What a source offers whose records are one physical line each: the store's
    line diff (feedsync.store.linediff) reads only the lines that changed with it.
    It lives here, not with the CSV source, so that the store needs no source."""

    def layout(self, stream: BinaryIO) -> LineLayout | None:
        """The layout of a body, from its head; None for a body with no data row."""

    def parse(
        self, stream: BinaryIO, on_replaced: OnReplaced | None = None
    ) -> Iterator[Record | Invalid]:
        """Every record of a body, in line order."""

    def parse_selected(
        self,
        stream: BinaryIO,
        layout: LineLayout,
        wanted: set[int],
        on_replaced: OnReplaced | None = None,
    ) -> Iterator[Record | Invalid]:
        """The records of only the lines whose hash is in ``wanted``, read as
        ``parse`` would read them under ``layout``."""
