"""Values that flow between the steps: raw records, normalized indicators."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
