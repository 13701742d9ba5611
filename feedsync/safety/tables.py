"""The lookup tables exclusions are matched with, built once per settings.

They are read for every normalized value, so their lookups cost the same however
long the lists are and their memory is a few bytes an entry, not a Python object.

- ``Intervals``: disjoint address intervals, found by bisection of the starts.
- ``Names``: names and exact values by their 64-bit hash in a bucketed table
  (an offset per bucket into one array of hashes): a lookup reads a bucket of
  one or two entries, where bisecting the 2.3M entries of the full warninglist
  set made 21 Python integers. A collision excludes a value by mistake with a
  chance of about one in 10^12 per value at that size. Python's own string hash
  differs between processes; each process builds its own tables.
- ``Substrings``: a list matched anywhere in a value, ignoring case.
"""

from __future__ import annotations

import ctypes
import ipaddress
import itertools
import re
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

# What a name entry matches besides the value itself: HOST also the host of a URL,
# SUFFIX also every name under it (and URLs on those). The rest of a rank is the
# index of the entry's reason.
HOST = 1 << 14
SUFFIX = 1 << 15
_REASON = HOST - 1
BIT_SHIFT = 36  # the bitmap reads the hash's upper bits, the buckets its lower ones


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
class Names:
    """Values by their hash: bucket ``b`` holds ``keys[offsets[b]:offsets[b + 1]]``
    in the order given, each with its rank (reason index and HOST/SUFFIX flags)."""

    mask: int = 0
    offsets: array[int] = field(default_factory=lambda: array("I", [0, 0]))
    # A bit per hash (by its upper bits), set for each entry: most values are on no
    # list, and are told so by a 2 MB bitmap that stays in cache rather than by two
    # reads of the tables' 40 MB.
    bits: bytes = bytes(8)
    keys: array[int] = field(default_factory=lambda: array("q"))
    ranks: array[int] = field(default_factory=lambda: array("H"))
    names: tuple[str, ...] = ()

    def get(self, value: str, need: int = 0) -> str | None:
        """The reason of the first entry for ``value`` with one of the flags ``need``
        (any entry when 0)."""
        return self.finder()(value, need)

    def finder(self) -> Callable[[str, int], str | None]:
        """``get`` with the table's parts bound: the screen calls it for every value."""
        mask, offsets, keys, ranks, names = (
            self.mask,
            self.offsets,
            self.keys,
            self.ranks,
            self.names,
        )
        bits, spread = self.bits, len(self.bits) * 8 - 1

        def find(value: str, need: int) -> str | None:
            key = hash(value)
            bit = key >> BIT_SHIFT & spread
            if not bits[bit >> 3] >> (bit & 7) & 1:
                return None
            bucket = key & mask
            at, end = offsets[bucket], offsets[bucket + 1]
            while at < end:
                if keys[at] == key:
                    rank = ranks[at]
                    if not need or rank & need:
                        return names[rank & _REASON]
                at += 1
            return None

        return find

    def __len__(self) -> int:
        return len(self.keys)

    def __bool__(self) -> bool:
        return len(self.keys) > 0


def names_table(groups: Iterable[tuple[str, int, Iterable[str]]]) -> Names:
    """The table of each group's (reason, flags, values); for a value two groups
    hold, the first given answers (a lookup reads a bucket in the order given)."""
    names: list[str] = []
    hashes, given = array("q"), array("H")
    for rank, (name, flags, values) in enumerate(groups):
        names.append(name)
        before = len(hashes)
        hashes.extend(map(hash, values))
        given.extend(itertools.repeat(rank | flags, len(hashes) - before))
    if len(names) > _REASON:
        raise ValueError(f"{len(names)} lists: at most {_REASON} are supported")
    mask = (1 << max(len(hashes) - 1, 1).bit_length()) - 1  # buckets >= entries
    counts = array("I", bytes(4 * (mask + 2)))
    for key in hashes:
        counts[(key & mask) + 1] += 1
    offsets = array("I", itertools.accumulate(counts))
    spread = (1 << max(8 * len(hashes) - 1, 63).bit_length()) - 1  # about 1 bit set in 8
    marks = bytearray((spread + 1) // 8)
    for key in hashes:
        bit = key >> BIT_SHIFT & spread
        marks[bit >> 3] |= 1 << (bit & 7)
    free = counts  # reused: the next free place of each bucket
    free[:] = offsets
    keys, ranks = array("q", bytes(8 * len(hashes))), array("H", bytes(2 * len(hashes)))
    for key, rank in zip(hashes, given, strict=True):
        bucket = key & mask
        at = free[bucket]
        keys[at], ranks[at] = key, rank
        free[bucket] = at + 1
    return Names(mask, offsets, bytes(marks), keys, ranks, tuple(names))


def release_freed() -> None:
    """Give the memory a build freed back to the system. glibc keeps freed large
    blocks in its heap (its mmap threshold rises as they are freed): after a load
    of the full warninglist set that was 60 MB of a 137 MB resident growth. A no-op
    where the C library has no ``malloc_trim``."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # pragma: no cover - not glibc
        return
    trim(0)


SCANNED = 32  # a longer substring list is looked up by slices rather than searched


@dataclass(frozen=True, slots=True)
class Substrings:
    """A substring list: a value matches if it holds an entry, ignoring case. A
    short list is one regex (a trie of its entries, so that each place in the
    value costs a test of one character, not one per entry), searched in the
    lower-cased value; a long one is looked up by each slice of the value as long
    as an entry, which costs the same however many entries it has."""

    reason: str
    entries: frozenset[str]
    lengths: tuple[int, ...]
    pattern: re.Pattern[str] | None

    def found(self, lowered: str) -> bool:
        """Whether ``lowered`` (a value in lower case) holds an entry."""
        if self.pattern is not None:
            return self.pattern.search(lowered) is not None
        entries = self.entries
        size = len(lowered)
        return any(
            lowered[at : at + n] in entries for n in self.lengths for at in range(size - n + 1)
        )


def substrings(
    reason: str, entries: Iterable[str], alphabet: str | None = None, searched: int = SCANNED
) -> Substrings:
    """The list ``entries``; with ``alphabet`` (all a value of some kind can hold,
    lower case), only the entries such a value could hold. Up to ``searched``
    entries make a regex."""
    kept = frozenset(entry.lower() for entry in entries if entry)
    if alphabet is not None:
        kept = frozenset(entry for entry in kept if set(entry) <= set(alphabet))
    pattern = None
    if kept and len(kept) <= searched:
        pattern = re.compile(_trie(sorted(kept)))
    return Substrings(reason, kept, tuple(sorted({len(entry) for entry in kept})), pattern)


def _trie(words: list[str]) -> str:
    """A regex matching any of ``words``, its branches factored by common prefix."""
    root: dict[str, dict[str, Any]] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here
    return _branches(root)


def _branches(node: dict[str, dict[str, Any]]) -> str:
    ends = "" in node
    branches = [re.escape(char) + _branches(child) for char, child in node.items() if char]
    if not branches:
        return ""
    if len(branches) == 1 and not ends:
        return branches[0]
    # Where a word ends, what follows is optional: the shorter word matches already.
    return "(?:" + "|".join(branches) + (")?" if ends else ")")
