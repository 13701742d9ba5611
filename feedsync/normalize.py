"""Normalization: indicator kind, canonical value, tags.

CyberTrace stores URLs normalized (no scheme, ``www.``, port, userinfo or
fragment; no trailing ``/`` or dot; lowercase; IDN as punycode; ``//``
collapsed). feedsync diffs canonical values, so two spellings of one URL are one
indicator and a DELETE always names what CyberTrace stored.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import overload

from feedsync.model import Indicator, Invalid, Kind, Record, Removal
from feedsync.phases import Phases

# Bump whenever a value's canonical form or kind may come out differently: line
# indexes built by an older normalization are then rebuilt, not trusted.
VERSION = 1

_HEX = frozenset("0123456789abcdefABCDEF")
_HASH_KINDS = {32: Kind.MD5, 40: Kind.SHA1, 64: Kind.SHA256}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,15}://")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_TAG_JUNK = re.compile(r"[^A-Z0-9_-]+")
_DEFANGS = (("[.]", "."), ("(.)", "."), ("{.}", "."), ("[:]", ":"), ("[://]", "://"))
_MAX_VALUE = 8192
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


class InvalidValue(ValueError):
    """A value that is no indicator; ``reason`` is a short word for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def canonicalize(value: str) -> tuple[Kind, str]:
    """Detect the kind of ``value`` and return it with its canonical text."""
    text = _refang(value.strip())
    if not text:
        raise InvalidValue("empty", "empty value")
    if len(text) > _MAX_VALUE:
        raise InvalidValue("too_long", f"value longer than {_MAX_VALUE} characters")
    if _BLANK_OR_CONTROL.search(text):
        raise InvalidValue("whitespace", "value contains whitespace or control characters")
    kind = _HASH_KINDS.get(len(text))
    if kind is not None and _HEX.issuperset(text):
        return kind, text.upper()
    if _may_be_address(text):
        address = _address(text)
        if address is not None:
            return address
    return _url_or_domain(text)


def _may_be_address(text: str) -> bool:
    """False for what cannot be an address (most domains and URLs), sparing them
    ipaddress's parse and exception: IPv4 starts with a digit, IPv6 has a colon."""
    return text[0].isdigit() or text[0] == "[" or (":" in text and "://" not in text)


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
    items: Iterable[Record | Invalid], static_tags: tuple[str, ...], phases: Phases, size: int
) -> Iterator[Sequence[Indicator | Invalid]]: ...
@overload
def normalized_batches(
    items: Iterable[Record | Invalid | Removal],
    static_tags: tuple[str, ...],
    phases: Phases,
    size: int,
) -> Iterator[Sequence[Indicator | Invalid | Removal]]: ...
def normalized_batches(
    items: Iterable[Record | Invalid | Removal],
    static_tags: tuple[str, ...],
    phases: Phases,
    size: int,
) -> Iterator[Sequence[Indicator | Invalid | Removal]]:
    """The records among ``items`` normalized, ``size`` items at a time (the
    others passed on as they are); reading them counts as ``fetch``, normalizing
    as ``normalize``."""
    stream = iter(items)
    while True:
        with phases.timed("fetch"):
            batch = list(islice(stream, size))
        if not batch:
            return
        with phases.timed("normalize"):
            done = [
                normalize(item, static_tags) if isinstance(item, Record) else item for item in batch
            ]
        yield done


def normalize(record: Record, static_tags: tuple[str, ...] = ()) -> Indicator | Invalid:
    """Turn a source record into an indicator, or say why it is invalid."""
    try:
        kind, value = canonicalize(record.value)
    except InvalidValue as exc:
        return Invalid(record.line, record.value[:200], exc.reason, record.line_hash)
    return Indicator(
        key=record.key or value,
        value=value,
        kind=kind,
        context=record.context,
        tags=canonical_tags(static_tags, record.tags),
        expires=record.expires,
        line_hash=record.line_hash,
        line=record.line,
    )


def _refang(text: str) -> str:
    # Feeds often publish defanged values ("hxxp://evil[.]com") so they are not clickable.
    if "[" in text or "(" in text or "{" in text:
        for fanged, plain in _DEFANGS:
            text = text.replace(fanged, plain)
    lowered = text[:8].lower()
    if lowered.startswith(("hxxp://", "hxxps://")):
        text = "http" + text[4:]
    return text


def _address(text: str) -> tuple[Kind, str] | None:
    """An IP address, ``ip:port``, ``[v6]`` or a single-host CIDR; None if it is none."""
    candidate = text
    if candidate.startswith("[") and "]" in candidate:
        candidate = candidate[1 : candidate.index("]")]
    elif candidate.count(":") == 1 and candidate.count(".") == 3:
        candidate = candidate.split(":", 1)[0]
    if "/" in candidate:
        return _network(candidate)
    if _DOTTED_QUAD.fullmatch(candidate):
        return Kind.IPV4, candidate  # already canonical: no leading zeros, each octet <= 255
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    return _ip_kind(address), str(address)


def _network(text: str) -> tuple[Kind, str] | None:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if network.num_addresses != 1:
        raise InvalidValue("cidr", f"network {text} is not a single address")
    return _ip_kind(network.network_address), str(network.network_address)


def _ip_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Kind:
    return Kind.IPV4 if address.version == 4 else Kind.IPV6


def _url_or_domain(text: str) -> tuple[Kind, str]:
    match = _SCHEME.match(text)
    rest = text[match.end() :] if match else text
    rest = rest.split("#", 1)[0]
    split_at = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:split_at], rest[split_at:]
    host = _host(authority)
    tail = re.sub(r"/{2,}", "/", tail.lower())
    canonical = (host + tail).rstrip("/.")
    if canonical != host:
        return Kind.URL, canonical
    if _may_be_address(host):
        address = _address(host)
        if address is not None:
            return address
    return Kind.DOMAIN, host


def _host(authority: str) -> str:
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise InvalidValue("url", "unbalanced [ in host")
        return _bracketed_v6(host[1:end])
    host = host.split(":", 1)[0].lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    if not host:
        raise InvalidValue("url", "no host")
    if host.replace(".", "").isdigit():
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError as exc:
            raise InvalidValue("url", f"bad IPv4 host {host!r}") from exc
    return _domain(host)


def _bracketed_v6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise InvalidValue("url", f"bad IPv6 host {text!r}") from exc


def _domain(host: str) -> str:
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidValue(
                "idn", f"host {host!r} is not a valid internationalized name"
            ) from exc
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 253:
        raise InvalidValue("domain", f"{host!r} is not a domain name")
    if not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise InvalidValue("domain", f"{host!r} is not a domain name")
    return host
