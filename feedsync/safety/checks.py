"""The checks a screen runs on each value, one chain per kind.

Built once from its tables (tables.py) when the screen is composed.

Every normalized value goes through one of them, so they are written as few
Python calls as can be: one function per value and kind, the tables' parts bound
to it as locals, the last label of a host asked of a small dict, addresses
bisected within the block of their upper 16 bits.
"""

from __future__ import annotations

import re
import socket
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from feedsync.model import Kind
from feedsync.safety.tables import BIT_SHIFT, HOST, SUFFIX, Intervals, Names, Substrings, substrings

if TYPE_CHECKING:
    from feedsync.safety.exclusions import Screen

Check = Callable[[str], str | None]  # why a value of one kind is excluded, or None


def url_host(value: str) -> str:
    """The host of a canonical URL (normalize writes it without its scheme): what
    comes before its first "/" or "?", an IPv6 host with its brackets."""
    end = value.find("/")
    query = value.find("?", 0, len(value) if end < 0 else end)
    return value[: end if query < 0 else query]


def kind_checks(screen: Screen) -> dict[Kind, Check]:
    """Each kind's check: its table lookups, then its substring and regex lists.
    Written as few calls as can be (one function per value and kind, the tables'
    parts bound to it): every normalized value goes through one of them."""
    walk = _walker(screen.names, screen.tops)
    find = screen.names.finder()
    address, address6 = _addresses(screen.v4), _addresses6(screen.v6)
    prefixes, urls = screen.prefixes, screen.urls

    def url(value: str) -> str | None:
        if urls:
            reason = find(value, 0)
            if reason is not None:
                return reason
        host = url_host(value)
        if host.startswith("["):
            return address6(host[1:-1])
        if host[-1:].isdigit():
            try:
                reason = address(host)
            except OSError:
                # A name whose last label ends in a digit ("cdn.a1"): canonical
                # hosts inet_aton reads were made dotted quads already.
                reason = walk(host, HOST | SUFFIX)
        else:
            reason = walk(host, HOST | SUFFIX)
        if reason is None and prefixes:
            for prefix, named in prefixes.get(host, ()):
                if value.startswith(prefix):
                    return named
        return reason

    def exact(value: str) -> str | None:
        return find(value, 0)

    base: dict[Kind, Check] = {
        Kind.IPV4: address,
        Kind.IPV6: address6,
        Kind.DOMAIN: walk,
        Kind.URL: url,
        **dict.fromkeys((Kind.MD5, Kind.SHA1, Kind.SHA256), exact),
    }
    return {kind: _with_lists(check, screen, kind) for kind, check in base.items()}


def _walker(table: Names, tops: Mapping[str, str]) -> Callable[..., str | None]:
    """The lookup of a host and the names above it: the host itself by an entry
    with a flag of ``need`` (any entry when 0), each label suffix by a SUFFIX one
    (the last label in ``tops``)."""
    mask, offsets, keys, ranks, names = (
        table.mask,
        table.offsets,
        table.keys,
        table.ranks,
        table.names,
    )
    bits, spread, reason_bits = table.bits, len(table.bits) * 8 - 1, HOST - 1
    top = tops.get

    def walk(host: str, need: int = 0) -> str | None:
        name, dot = host, -1
        while True:
            following = host.find(".", dot + 1)
            if following < 0 and dot >= 0:
                return top(name)
            key = hash(name)
            bit = key >> BIT_SHIFT & spread
            if bits[bit >> 3] >> (bit & 7) & 1:
                bucket = key & mask
                at, end = offsets[bucket], offsets[bucket + 1]
                while at < end:
                    if keys[at] == key:
                        rank = ranks[at]
                        if not need or rank & need:
                            return names[rank & reason_bits]
                    at += 1
            if following < 0:
                return top(name)  # a host of one label
            dot, name, need = following, host[following + 1 :], SUFFIX

    return walk


def _addresses(table: Intervals) -> Check:
    """IPv4 lookup in ``table``'s copy as arrays, by the address's upper 16 bits
    first: a bisection of a tuple of 100,000 Python integers read as many scattered
    objects as it compared (2 µs a lookup), this one a few neighbours."""
    starts, ends = array("L", table.starts), array("L", table.ends)
    reasons = table.reasons
    first = array("L", (bisect_left(starts, top << 16) for top in range(1 << 16)))
    first.append(len(starts))
    inet_aton, from_bytes = socket.inet_aton, int.from_bytes

    def address(value: str) -> str | None:
        number = from_bytes(inet_aton(value), "big")
        top = number >> 16
        # The last interval starting at or before the address: in its block, or before.
        at = bisect_right(starts, number, first[top], first[top + 1]) - 1
        if at >= 0 and number <= ends[at]:
            return reasons[at]
        return None

    return address


def _addresses6(table: Intervals) -> Check:
    find, inet_pton, from_bytes, family = (
        table.find,
        socket.inet_pton,
        int.from_bytes,
        socket.AF_INET6,
    )

    def address6(value: str) -> str | None:
        return find(from_bytes(inet_pton(family, value), "big"))

    return address6


# Kinds whose canonical values are lower case already: no copy lowered to search.
_LOWER = frozenset((Kind.IPV4, Kind.IPV6, Kind.DOMAIN, Kind.URL))


def _with_lists(check: Check, screen: Screen, kind: Kind) -> Check:
    """``check``, then the kind's substring and regex lists, if it has any."""
    listed = screen.substrings.get(kind, ())
    patterns = screen.patterns.get(kind, ())
    if not listed and not patterns:
        return check
    # One search for all the kind's lists when all are short; which list it was
    # only on a match.
    short = [entry for s in listed if s.pattern is not None for entry in s.entries]
    every = all(s.pattern is not None for s in listed)
    anyone = substrings("", short, searched=len(short)) if listed and every else None
    lower = kind in _LOWER
    if lower and not patterns and anyone is not None and anyone.pattern is not None:
        return _searched(check, listed, anyone.pattern)

    def checked(value: str) -> str | None:
        reason = check(value)
        if reason is None:
            lowered = value if lower else value.lower()
            if anyone is None or anyone.found(lowered):
                for substrings in listed:
                    if substrings.found(lowered):
                        return substrings.reason
            for pattern, named in patterns:
                if pattern.search(value):
                    return named
        return reason

    return checked


def _searched(check: Check, listed: tuple[Substrings, ...], pattern: re.Pattern[str]) -> Check:
    """``_with_lists`` for the common case, as few steps as can be: a kind whose
    values are lower case already, short substring lists and no regex list (one
    entry is a plain ``in``, cheaper than any search)."""
    entries = {entry for s in listed for entry in s.entries}
    if len(entries) == 1:
        (literal,) = entries
        named = listed[0].reason

        def one(value: str) -> str | None:
            reason = check(value)
            if reason is None and literal in value:
                return named
            return reason

        return one
    search = pattern.search

    def searched(value: str) -> str | None:
        reason = check(value)
        if reason is None and search(value) is not None:
            for substrings in listed:
                if substrings.found(value):
                    return substrings.reason
        return reason

    return searched
