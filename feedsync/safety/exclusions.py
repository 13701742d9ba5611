"""The exclusion screen: built-in excluded ranges and names, and ranges too wide to expand.

Values that never reach CyberTrace: built-in exclusions, MISP warninglists and
network ranges too wide to expand.

A feed that lists 127.0.0.1, 10.0.0.1 or its own documentation example would have
CyberTrace alert on every host of the network it protects; mature users of public
feeds filter these before blocking, so feedsync does it by default. An excluded
value leaves the snapshot like any value the feed stopped listing: one that was
already sent is deleted from its supplier.

The exclusions are applied as a record is normalized (``normalized_batches``),
once, before the snapshot: a full read and the line-diff fast path (lines.py) see
the same values. An excluded value is an ``Invalid`` whose reason starts with
``excluded:``, so that the line index keeps why a line was left out as it keeps
why a line was invalid; ``split_reasons`` tells the two apart for the counts.

Lookups cost about the same however long the lists are: addresses are found by
bisection in a table of disjoint intervals, hosts by their few label suffixes and
values by exact key, both by 64-bit hashes in a sorted array (8 bytes and a
reason index per entry, not a Python string: the full warninglist set has 2.3
million of them). A collision excludes a value by mistake with a chance of about
one in 10^12 per value at that size.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import re
import socket
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from heapq import heappop, heappush
from types import MappingProxyType

from feedsync.model import Indicator, Invalid, Kind, Record
from feedsync.normalize import InvalidValue, NetworkValue, canonicalize, indicator_of

EXCLUDED = "excluded:"  # what the reason of an Invalid that is an exclusion starts with
DEFAULT_EXPAND = 24  # an IPv4 /24: 256 addresses; IPv6 ranges expand by the same count
TOO_WIDE = "cidr_too_wide"
# Bump when a built-in's ranges or names change: feeds are then read again in full.
BUILTIN_VERSION = 1

# Each name is one reason in the counts; the ranges are IANA's special-purpose
# registries (RFC 6890) for what is never a host on the public internet.
BUILTIN_NETWORKS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "loopback": ("127.0.0.0/8", "::1/128"),
        "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
        "link_local": ("169.254.0.0/16", "fe80::/10"),
        "cgnat": ("100.64.0.0/10",),
        "multicast": ("224.0.0.0/4", "ff00::/8"),
        "reserved": (
            "0.0.0.0/8",
            "192.0.0.0/24",
            "198.18.0.0/15",
            "240.0.0.0/4",  # and 255.255.255.255
            "::/128",
            "::ffff:0:0/96",
            "100::/64",
        ),
        "documentation": ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"),
    }
)
# The MD5, SHA1 and SHA256 of the empty file: a sandbox's report of nothing.
BUILTIN_HASHES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"null_hash": tuple(hashlib.new(n, b"").hexdigest().upper() for n in ("md5", "sha1", "sha256"))}
)
# Names that resolve to no one's server (RFC 2606, RFC 6761, RFC 6762): a match
# is the name or any name under it.
BUILTIN_DOMAINS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "localhost": ("localhost",),
        "example": ("example.com", "example.net", "example.org"),
        "local": ("local",),
        "test": ("test",),
        "invalid": ("invalid",),
    }
)
BUILTIN: tuple[str, ...] = (*BUILTIN_NETWORKS, *BUILTIN_HASHES, *BUILTIN_DOMAINS)


@dataclass(frozen=True, slots=True)
class Intervals:
    """Disjoint, sorted address intervals, each with the reason it is excluded."""

    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    reasons: tuple[str, ...] = ()

    def find(self, number: int) -> str | None:
        at = bisect_right(self.starts, number) - 1
        if at >= 0 and number <= self.ends[at]:
            return self.reasons[at]
        return None

    def covering(self, first: int, last: int) -> str | None:
        """The reason if one interval holds all of ``first``..``last``."""
        at = bisect_right(self.starts, first) - 1
        if at >= 0 and last <= self.ends[at]:
            return self.reasons[at]
        return None

    def __len__(self) -> int:
        return len(self.starts)


def intervals(spans: Iterable[tuple[int, int, str]]) -> Intervals:
    """The disjoint table of ``spans`` (first, last, reason); where spans overlap,
    the one given first names the reason."""
    ordered = sorted((a, b, rank, reason) for rank, (a, b, reason) in enumerate(spans))
    points = sorted({p for first, last, _r, _n in ordered for p in (first, last + 1)})
    starts: list[int] = []
    ends: list[int] = []
    reasons: list[str] = []
    active: list[tuple[int, int, str]] = []  # (rank, last, reason): the first given on top
    taken = 0
    for point, following in itertools.pairwise(points):
        while taken < len(ordered) and ordered[taken][0] <= point:
            _first, last, rank, reason = ordered[taken]
            heappush(active, (rank, last, reason))
            taken += 1
        while active and active[0][1] < point:
            heappop(active)
        if not active:
            continue
        reason = active[0][2]
        if ends and ends[-1] == point - 1 and reasons[-1] == reason:
            ends[-1] = following - 1
        else:
            starts.append(point)
            ends.append(following - 1)
            reasons.append(reason)
    return Intervals(tuple(starts), tuple(ends), tuple(reasons))


def network_span(text: str, reason: str) -> tuple[int, int, str, int]:
    """(first, last, reason, version) of a network or address written as text."""
    network = ipaddress.ip_network(text.strip(), strict=False)
    first = int(network.network_address)
    return first, first + network.num_addresses - 1, reason, network.version


@dataclass(frozen=True, slots=True)
class Hashed:
    """Values by their 64-bit hash, sorted, each with the index of its reason. The
    hash is Python's own (a string caches it); it differs between processes, and
    each process builds its own tables."""

    keys: array[int] = field(default_factory=lambda: array("q"))
    ranks: array[int] = field(default_factory=lambda: array("H"))
    names: tuple[str, ...] = ()

    def get(self, value: str) -> str | None:
        key = hash(value)
        at = bisect_left(self.keys, key)
        if at < len(self.keys) and self.keys[at] == key:
            return self.names[self.ranks[at]]
        return None

    def __len__(self) -> int:
        return len(self.keys)


def hashed(groups: Iterable[tuple[str, Iterable[str]]]) -> Hashed:
    """The table of each group's values; a value two groups hold counts for the first."""
    names: list[str] = []
    packed: list[int] = []
    for rank, (name, values) in enumerate(groups):
        names.append(name)
        packed.extend(hash(value) << 16 | rank for value in values)
    packed.sort()  # by hash, then by rank: the first group holding a value comes first
    keys, ranks = array("q"), array("H")
    for item in packed:
        key = item >> 16
        if not keys or keys[-1] != key:
            keys.append(key)
            ranks.append(item & 0xFFFF)
    return Hashed(keys, ranks, tuple(names))


@dataclass(frozen=True, slots=True)
class Substrings:
    """A substring list: a value matches if it holds an entry, ignoring case.
    A short list is scanned; a long one is looked up by each slice of the value
    as long as an entry, which costs the same however many entries it has."""

    reason: str
    entries: frozenset[str]
    lengths: tuple[int, ...]

    def found(self, value: str) -> bool:
        lowered = value.lower()
        entries = self.entries
        if len(entries) <= SCANNED:
            return any(entry in lowered for entry in entries)
        size = len(lowered)
        return any(
            lowered[at : at + n] in entries for n in self.lengths for at in range(size - n + 1)
        )


SCANNED = 32


def substrings(reason: str, entries: Iterable[str]) -> Substrings:
    kept = frozenset(entry.lower() for entry in entries if entry)
    return Substrings(reason, kept, tuple(sorted({len(entry) for entry in kept})))


@dataclass(frozen=True, slots=True)
class Screen:
    """What one feed excludes, and how wide a network range it expands."""

    v4: Intervals = Intervals()
    v6: Intervals = Intervals()
    domains: Hashed = Hashed()
    exact: Hashed = Hashed()
    # Substring and regex lists, by the kinds their matching_attributes name.
    substrings: Mapping[Kind, tuple[Substrings, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    patterns: Mapping[Kind, tuple[tuple[re.Pattern[str], str], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    expand_cidr: int = DEFAULT_EXPAND
    # What identifies the settings it was built from (warninglists.fingerprint).
    fingerprint: str = ""

    def reason(self, kind: Kind, value: str) -> str | None:
        """Why ``value`` (canonical, of ``kind``) is excluded, or None."""
        reason = self.exact.get(value)
        if reason is None:
            if kind is Kind.IPV4:
                reason = self.v4.find(_v4(value))
            elif kind is Kind.IPV6:
                reason = self.v6.find(_v6(value))
            elif kind is Kind.DOMAIN:
                reason = self._host(value)
            elif kind is Kind.URL:
                reason = self._url_host(value)
        if reason is None:
            for substrings in self.substrings.get(kind, ()):
                if substrings.found(value):
                    return substrings.reason
            for pattern, named in self.patterns.get(kind, ()):
                if pattern.search(value):
                    return named
        return reason

    def screened(
        self, record: Record, static_tags: tuple[str, ...]
    ) -> Iterator[Indicator | Invalid]:
        """``record`` normalized: its indicator, its network's addresses, or why not."""
        try:
            kind, value = canonicalize(record.value)
        except NetworkValue as exc:
            yield from self._network(record, exc.network, static_tags)
            return
        except InvalidValue as exc:
            yield Invalid(record.line, record.value[:200], exc.reason, record.line_hash)
            return
        reason = self.reason(kind, value)
        if reason is not None:
            yield Invalid(record.line, value[:200], EXCLUDED + reason, record.line_hash, record.key)
        else:
            yield indicator_of(record, kind, value, static_tags)

    def _host(self, host: str) -> str | None:
        domains = self.domains
        if not domains:
            return None
        reason = domains.get(host)
        dot = host.find(".")
        while reason is None and dot >= 0:
            reason = domains.get(host[dot + 1 :])
            dot = host.find(".", dot + 1)
        return reason

    def _url_host(self, url: str) -> str | None:
        end = len(url)
        for delimiter in "/?":
            found = url.find(delimiter, 0, end)
            if found >= 0:
                end = found
        host = url[:end]
        if host.startswith("["):
            return self.v6.find(_v6(host[1:-1]))
        if host[-1:].isdigit():
            return self.v4.find(_v4(host))  # a URL's host ending in a digit is an address
        return self._host(host)

    def _network(
        self,
        record: Record,
        network: ipaddress.IPv4Network | ipaddress.IPv6Network,
        static_tags: tuple[str, ...],
    ) -> Iterator[Indicator | Invalid]:
        # CyberTrace matches addresses, not ranges: a range becomes its addresses,
        # up to expand_cidr's count; a wider one is refused, never cut or widened.
        text = record.value[:200]
        table = self.v4 if network.version == 4 else self.v6
        first = int(network.network_address)
        last = first + network.num_addresses - 1
        whole = table.covering(first, last)
        if whole is not None:
            yield Invalid(record.line, text, EXCLUDED + whole, record.line_hash, record.key)
            return
        if self.expand_cidr == 0 or network.num_addresses > 1 << (32 - self.expand_cidr):
            yield Invalid(record.line, text, TOO_WIDE, record.line_hash)
            return
        kind = Kind.IPV4 if network.version == 4 else Kind.IPV6
        for address in network:
            value = str(address)
            reason = self.reason(kind, value)
            if reason is not None:
                yield Invalid(record.line, value, EXCLUDED + reason, record.line_hash)
            else:
                # The key is the address: the record's own key names the whole range.
                keyed = record if record.key is None else _rekeyed(record, value)
                yield indicator_of(keyed, kind, value, static_tags)


def _rekeyed(record: Record, value: str) -> Record:
    return Record(
        record.line,
        record.value,
        record.context,
        record.tags,
        f"{record.key}|{value}",
        record.expires,
        record.line_hash,
    )


def _v4(value: str) -> int:
    return int.from_bytes(socket.inet_aton(value), "big")


def _v6(value: str) -> int:
    return int.from_bytes(socket.inet_pton(socket.AF_INET6, value), "big")


def split_reasons(reasons: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """The invalid reasons and the exclusion reasons (without their prefix) of a count."""
    invalid: dict[str, int] = {}
    excluded: dict[str, int] = {}
    for reason, count in reasons.items():
        if reason.startswith(EXCLUDED):
            excluded[reason[len(EXCLUDED) :]] = count
        else:
            invalid[reason] = count
    return invalid, excluded


@dataclass(frozen=True, slots=True)
class Entries:
    """What one list contributes: address spans, host suffixes, exact values, patterns."""

    name: str
    networks: tuple[tuple[int, int, str, int], ...] = ()
    domains: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()
    substrings: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    kinds: frozenset[Kind] = frozenset(Kind)  # what its substrings and patterns apply to


def _builtin_entries(name: str) -> Entries:
    return Entries(
        name,
        networks=tuple(network_span(n, name) for n in BUILTIN_NETWORKS.get(name, ())),
        domains=BUILTIN_DOMAINS.get(name, ()),
        exact=BUILTIN_HASHES.get(name, ()),
    )


def compose(
    names: Iterable[str], lists: Iterable[Entries], expand_cidr: int, fingerprint: str
) -> Screen:
    """The screen of the built-ins ``names`` and the lists ``lists``; a value two
    of them exclude counts for the one named first (built-ins first)."""
    chosen = [_builtin_entries(name) for name in names] + list(lists)
    v4 = [(a, b, r) for e in chosen for a, b, r, version in e.networks if version == 4]
    v6 = [(a, b, r) for e in chosen for a, b, r, version in e.networks if version == 6]
    by_kind = {
        kind: tuple(
            substrings(e.name, e.substrings) for e in chosen if e.substrings and kind in e.kinds
        )
        for kind in Kind
    }
    patterns = {
        kind: tuple((p, e.name) for e in chosen if kind in e.kinds for p in e.patterns)
        for kind in Kind
    }
    return Screen(
        intervals(v4),
        intervals(v6),
        hashed((e.name, e.domains) for e in chosen if e.domains),
        hashed((e.name, e.exact) for e in chosen if e.exact),
        MappingProxyType({kind: found for kind, found in by_kind.items() if found}),
        MappingProxyType({kind: found for kind, found in patterns.items() if found}),
        expand_cidr,
        fingerprint,
    )
