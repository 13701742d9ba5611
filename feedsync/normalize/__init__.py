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
from feedsync.normalize.addresses import address_of
from feedsync.normalize.invalid import InvalidValue as InvalidValue
from feedsync.normalize.invalid import NetworkValue as NetworkValue
from feedsync.normalize.urls import refang, url_or_domain
from feedsync.phases import Phases

RowMeter = Callable[[int], object]  # told how many more rows were read

# Bump whenever a value's canonical form or kind may come out differently: line
# indexes built by an older normalization are then rebuilt, not trusted.
VERSION = 2

_HASH_KINDS = {32: Kind.MD5, 40: Kind.SHA1, 64: Kind.SHA256}
_TAG_JUNK = re.compile(r"[^A-Z0-9_-]+")
_MAX_VALUE = 8192
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_PART = 500  # records read and normalized at a time, within a batch
_TAGS_SEEN = 4096  # tag sets (and static tag sets) remembered

Screener = Callable[[Record, tuple[str, ...]], Iterable[Indicator | Invalid]]


def canonicalize(value: str) -> tuple[Kind, str]:
    """Detect the kind of ``value`` and return it with its canonical text."""
    text = value.strip()
    if "[" in text or "(" in text or "{" in text or text[:1] in "hH":
        text = refang(text)  # only what may be defanged: most values are not
    if not text:
        raise InvalidValue("empty", "empty value")
    if len(text) > _MAX_VALUE:
        raise InvalidValue("too_long", f"value longer than {_MAX_VALUE} characters")
    # A printable text without a space has no character _BLANK_OR_CONTROL
    # matches (tests check every code point): most values skip the regex.
    if not (text.isprintable() and " " not in text) and _BLANK_OR_CONTROL.search(text):
        raise InvalidValue("whitespace", "value contains whitespace or control characters")
    kind = _HASH_KINDS.get(len(text))
    if kind is not None and "." not in text and _hex(text):
        return kind, text.upper()
    first = text[0]
    # Spares most domains and URLs ipaddress's parse and exception: IPv4 starts
    # with a digit, IPv6 has a colon.
    if first.isdigit() or first == "[" or (":" in text and "://" not in text):
        address = address_of(text)
        if address is not None:
            return address
    return url_or_domain(text)


def _hex(text: str) -> bool:
    """Whether every character of ``text`` (no blank space, even length) is a hex digit.

    ``bytes.fromhex`` reads only hex digit pairs and ASCII blank space, which
    ``text`` has none of: twice to four times as fast as a test per character."""
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


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


class Tagged(dict[tuple[str, ...], tuple[str, ...]]):
    """A record's canonical tags by its own tags, under one feed's static tags:
    ``tagged_under(static)[record.tags]``. One dict lookup a row when the tags
    were seen before, a third of what the cache's key and call cost."""

    __slots__ = ("static",)

    def __init__(self, static: tuple[str, ...]) -> None:
        super().__init__()
        self.static = static

    def __missing__(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        if len(self) >= _TAGS_SEEN:
            self.clear()  # a feed with a tag set per row: bounded memory
        made = self[tags] = _canonical_tags((self.static, tags))
        return made


TAGGED: dict[tuple[str, ...], Tagged] = {}  # by static tags: read with tagged_under


def tagged_under(static_tags: tuple[str, ...]) -> Tagged:
    """The canonical tags of records under ``static_tags`` (see Tagged)."""
    tagged = TAGGED.get(static_tags)
    if tagged is None:
        if len(TAGGED) >= _TAGS_SEEN:
            TAGGED.clear()
        tagged = TAGGED[static_tags] = Tagged(static_tags)
    return tagged


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
    return build.indicator(record, kind, value, tagged_under(static_tags)[record.tags])
