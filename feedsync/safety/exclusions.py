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

Lookups cost about the same however long the lists are (tables.py): addresses
are found by bisection in a table of disjoint intervals, hosts by their few label
suffixes and values by exact key in one hash table; each kind has its own chain
of checks, built once, so that a value meets only what can match it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import itertools
import re
import socket
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from feedsync.model import Indicator, Invalid, Kind, Record
from feedsync.normalize import InvalidValue, NetworkValue, canonicalize, indicator_of
from feedsync.safety.checks import Check, kind_checks
from feedsync.safety.tables import (
    HOST,
    SUFFIX,
    Intervals,
    Names,
    Substrings,
    intervals,
    names_table,
    network_span,
    substrings,
)

__all__ = ["Intervals", "intervals", "network_span"]  # where tests and lists import them

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


_IPV4, _IPV6, _DOMAIN, _URL = Kind.IPV4, Kind.IPV6, Kind.DOMAIN, Kind.URL


def _none(_value: str) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Screen:
    """What one feed excludes, and how wide a network range it expands."""

    v4: Intervals = field(default_factory=Intervals)
    v6: Intervals = field(default_factory=Intervals)
    names: Names = field(default_factory=Names)  # hosts (flagged HOST or SUFFIX) and exact values
    # URL prefixes by their host: (prefix, reason).
    prefixes: Mapping[str, tuple[tuple[str, str], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
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
    # Single labels that are suffixes ("local", "test"): every name has one, so they
    # are asked of a small dict rather than of ``names``.
    tops: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Whether ``names`` holds any URL (a canonical URL has a path or a query).
    urls: bool = False
    # The checks of each kind, built from the tables above (see _checks): a dict, the
    # fastest to ask, never changed once built.
    checks: dict[Kind, Check] = field(default_factory=dict, compare=False, repr=False)
    # A screen whose reasons come first (an allowlist, allowlist.py): its checks are
    # chained into ``checks``; here for the ranges it covers whole.
    before: Screen | None = field(default=None, compare=False, repr=False)

    def reason(self, kind: Kind, value: str) -> str | None:
        """Why ``value`` (canonical, of ``kind``) is excluded, or None."""
        check = self.checks.get(kind)
        if check is None:  # pragma: no cover
            # A screen made without compose (Screen()): build its checks each time.
            check = kind_checks(self).get(kind, _none)
        return check(value)

    def screened(self, record: Record, static_tags: tuple[str, ...]) -> list[Indicator | Invalid]:
        """``record`` normalized: its indicator, its network's addresses, or why not."""
        # A list, not a generator: it runs once per row, and a row is one item but
        # for a network range.
        try:
            kind, value = canonicalize(record.value)
        except NetworkValue as exc:
            return list(self._network(record, exc.network, static_tags))
        except InvalidValue as exc:
            return [Invalid(record.line, record.value[:200], exc.reason, record.line_hash)]
        check = self.checks.get(kind)
        reason = self.reason(kind, value) if check is None else check(value)
        if reason is not None:
            return [
                Invalid(record.line, value[:200], EXCLUDED + reason, record.line_hash, record.key)
            ]
        return [indicator_of(record, kind, value, static_tags)]

    def _network(
        self,
        record: Record,
        network: ipaddress.IPv4Network | ipaddress.IPv6Network,
        static_tags: tuple[str, ...],
    ) -> Iterator[Indicator | Invalid]:
        # CyberTrace matches addresses, not ranges: a range becomes its addresses,
        # up to expand_cidr's count; a wider one is refused, never cut or widened.
        text = record.value[:200]
        first = int(network.network_address)
        last = first + network.num_addresses - 1
        whole = None
        for screen in (self.before, self):  # the allowlist's reason first
            if whole is None and screen is not None:
                table = screen.v4 if network.version == 4 else screen.v6
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
    """What one list contributes: address spans, host suffixes, hosts, exact values,
    URL prefixes, substrings and patterns."""

    name: str
    networks: tuple[tuple[int, int, str, int], ...] = ()
    domains: tuple[str, ...] = ()  # the name and every name under it
    exact: tuple[str, ...] = ()  # canonical values (not addresses: those are networks)
    substrings: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    kinds: frozenset[Kind] = frozenset(Kind)  # what its substrings and patterns apply to
    hosts: tuple[str, ...] = ()  # the name, and URLs on it, but not names under it
    prefixes: tuple[str, ...] = ()  # canonical URL prefixes


def _builtin_entries(name: str) -> Entries:
    return Entries(
        name,
        networks=tuple(network_span(n, name) for n in BUILTIN_NETWORKS.get(name, ())),
        domains=BUILTIN_DOMAINS.get(name, ()),
        exact=BUILTIN_HASHES.get(name, ()),
    )


# What a canonical value of a kind can hold, lower case: a substring entry with
# anything else can never match it, and is left out of that kind's search.
_ALPHABETS = {
    Kind.IPV4: "0123456789.",
    Kind.IPV6: "0123456789abcdef:.",
    **dict.fromkeys((Kind.MD5, Kind.SHA1, Kind.SHA256), "0123456789abcdef"),
}


def compose(
    names: Iterable[str], lists: Iterable[Entries], expand_cidr: int, fingerprint: str
) -> Screen:
    """The screen of the built-ins ``names`` and the lists ``lists``; a value two
    of them exclude counts for the one named first (built-ins first). ``lists`` is
    read once, one list at a time: only the tables stay, not the lists' strings.

    Long because it is one pass: each list's entries go to every table (ranges,
    names, prefixes, substrings, patterns) while that list alone is in memory,
    which is what keeps all of MISP's warninglists under 100 MB.
    """
    # IPv4 spans in arrays, not tuples of Python integers: made while the lists'
    # strings come and go, those would keep much of the freed memory from the system.
    v4 = (array("L"), array("L"), array("H"))
    v6: list[tuple[int, int, str]] = []
    reasons: dict[str, int] = {}
    found: dict[Kind, list[Substrings]] = {kind: [] for kind in Kind}
    patterns: dict[Kind, list[tuple[re.Pattern[str], str]]] = {kind: [] for kind in Kind}
    prefixes: dict[str, list[tuple[str, str]]] = {}
    tops: dict[str, str] = {}
    urls = [False]

    def groups() -> Iterator[tuple[str, int, Iterable[str]]]:
        builtins = (_builtin_entries(name) for name in names)
        for entry in itertools.chain(builtins, lists):
            for first, last, reason, version in entry.networks:
                if version == 4:
                    v4[0].append(first)
                    v4[1].append(last)
                    v4[2].append(reasons.setdefault(reason, len(reasons)))
                else:
                    v6.append((first, last, reason))
            for kind in entry.kinds if entry.substrings else ():
                listed = substrings(entry.name, entry.substrings, _ALPHABETS.get(kind))
                if listed.entries:
                    found[kind].append(listed)
            for kind in entry.kinds if entry.patterns else ():
                patterns[kind].extend((p, entry.name) for p in entry.patterns)
            for prefix in entry.prefixes:
                prefixes.setdefault(_url_host(prefix), []).append((prefix, entry.name))
            for top in (d for d in entry.domains if "." not in d):
                tops.setdefault(top, entry.name)
            yield entry.name, SUFFIX, (d for d in entry.domains if "." in d)
            yield entry.name, HOST, entry.hosts
            urls[0] = urls[0] or any("/" in v or "?" in v for v in entry.exact)
            yield entry.name, 0, entry.exact
            del entry  # before the next list is read: one list's strings at a time

    table = names_table(groups())
    named = list(reasons)
    screen = Screen(
        intervals(zip(v4[0], v4[1], (named[r] for r in v4[2]), strict=True)),
        intervals(v6),
        table,
        MappingProxyType({host: tuple(items) for host, items in prefixes.items()}),
        MappingProxyType({kind: tuple(items) for kind, items in found.items() if items}),
        MappingProxyType({kind: tuple(items) for kind, items in patterns.items() if items}),
        expand_cidr,
        fingerprint,
        MappingProxyType(tops),
        urls[0],
    )
    return dataclasses.replace(screen, checks=kind_checks(screen))


def _url_host(url: str) -> str:
    """The host part of a canonical URL (an IPv6 address keeps its brackets)."""
    end = len(url)
    for delimiter in "/?":
        found = url.find(delimiter, 0, end)
        if found >= 0:
            end = found
    return url[:end]
