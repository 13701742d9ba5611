"""Normalization: indicator kind, canonical value, tags.

A value is a hash (MD5, SHA1, SHA256, upper case), an IP address (addresses.py)
or a URL or domain by CyberTrace's URL normalization rules (urls.py, which
lists them); a value that is none of these raises ``InvalidValue``
(invalid.py) with a reason word. Tags are mapped onto CyberTrace's charset.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import overload

from feedsync.model import Indicator, Invalid, Kind, Record, Removal
from feedsync.normalize import build
from feedsync.normalize.addresses import address_of, may_be_address
from feedsync.normalize.invalid import InvalidValue as InvalidValue
from feedsync.normalize.invalid import NetworkValue as NetworkValue
from feedsync.normalize.urls import refang, url_or_domain
from feedsync.phases import Phases

RowMeter = Callable[[int], object]  # told how many more rows were read

# Bump whenever a value's canonical form or kind may come out differently: line
# indexes built by an older normalization are then rebuilt, not trusted.
VERSION = 2

_HEX = frozenset("0123456789abcdefABCDEF")
_HASH_KINDS = {32: Kind.MD5, 40: Kind.SHA1, 64: Kind.SHA256}
_TAG_JUNK = re.compile(r"[^A-Z0-9_-]+")
_MAX_VALUE = 8192
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_PART = 500  # records read and normalized at a time, within a batch

Screener = Callable[[Record, tuple[str, ...]], Iterable[Indicator | Invalid]]


def canonicalize(value: str) -> tuple[Kind, str]:
    """Detect the kind of ``value`` and return it with its canonical text."""
    text = refang(value.strip())
    if not text:
        raise InvalidValue("empty", "empty value")
    if len(text) > _MAX_VALUE:
        raise InvalidValue("too_long", f"value longer than {_MAX_VALUE} characters")
    # A printable text without a space has no character _BLANK_OR_CONTROL
    # matches (tests check every code point): most values skip the regex.
    if not (text.isprintable() and " " not in text) and _BLANK_OR_CONTROL.search(text):
        raise InvalidValue("whitespace", "value contains whitespace or control characters")
    kind = _HASH_KINDS.get(len(text))
    if kind is not None and _HEX.issuperset(text):
        return kind, text.upper()
    if may_be_address(text):
        address = address_of(text)
        if address is not None:
            return address
    return url_or_domain(text)


def canonical_tag(tag: str) -> str | None:
    """Map a tag onto CyberTrace's charset: ``tlp:white`` becomes ``TLP_WHITE``."""
    name = _TAG_JUNK.sub("_", tag.strip().upper()).strip("_")
    return name[:128] or None


def canonical_tags(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """The sorted, de-duplicated canonical tags of all ``groups``."""
    return _canonical_tags(groups)


@functools.lru_cache(maxsize=4096)
def _canonical_tags(groups: tuple[tuple[str, ...], ...]) -> tuple[str, ...]:
    # Cached: a feed repeats a few tag combinations over millions of rows.
    names = {canonical_tag(tag) for group in groups for tag in group}
    names.discard(None)
    return tuple(sorted(name for name in names if name is not None))


@overload
def normalized_batches(
    items: Iterable[Record | Invalid],
    static_tags: tuple[str, ...],
    phases: Phases,
    size: int,
    screen: Screener | None = None,
    *,
    meter: RowMeter | None = None,
) -> Iterator[Sequence[Indicator | Invalid]]: ...
@overload
def normalized_batches(
    items: Iterable[Record | Invalid | Removal],
    static_tags: tuple[str, ...],
    phases: Phases,
    size: int,
    screen: Screener | None = None,
    *,
    meter: RowMeter | None = None,
) -> Iterator[Sequence[Indicator | Invalid | Removal]]: ...
def normalized_batches(
    items: Iterable[Record | Invalid | Removal],
    static_tags: tuple[str, ...],
    phases: Phases,
    size: int,
    screen: Screener | None = None,
    *,
    meter: RowMeter | None = None,
) -> Iterator[Sequence[Indicator | Invalid | Removal]]:
    """The records among ``items`` normalized, ``size`` items at a time (the
    others passed on as they are); reading them counts as ``fetch``, normalizing
    as ``normalize``; ``meter`` is told of every batch read. A ``screen``
    (exclusions.Screen.screened) normalizes each record into what reaches the
    snapshot: its exclusions and expanded ranges."""
    stream = iter(items)
    while True:
        done: list[Indicator | Invalid | Removal] = []
        read = 0
        while read < size:
            # A slice at a time, read then normalized: a record is dropped once it is
            # an indicator, so a batch keeps one object per row, not two, for the
            # garbage collector to walk.
            with phases.timed("fetch"):
                part = list(islice(stream, min(_PART, size - read)))
            if not part:
                break
            read += len(part)
            with phases.timed("normalize"):
                if screen is None:
                    done += [
                        normalize(item, static_tags) if isinstance(item, Record) else item
                        for item in part
                    ]
                else:
                    for item in part:
                        if isinstance(item, Record):
                            done.extend(screen(item, static_tags))
                        else:
                            done.append(item)
        if not read:
            return
        if meter is not None:
            meter(read)
        yield done


def normalize(record: Record, static_tags: tuple[str, ...] = ()) -> Indicator | Invalid:
    """Turn a source record into an indicator, or say why it is invalid."""
    try:
        kind, value = canonicalize(record.value)
    except InvalidValue as exc:
        return Invalid(record.line, record.value[:200], exc.reason, record.line_hash)
    return indicator_of(record, kind, value, static_tags)


def indicator_of(record: Record, kind: Kind, value: str, static_tags: tuple[str, ...]) -> Indicator:
    """The indicator of ``record`` whose canonical value is ``value``."""
    # By its slots (build.py): once per row.
    return build.indicator(record, kind, value, _canonical_tags((static_tags, record.tags)))
