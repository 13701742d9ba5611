"""Normalization: indicator kind, canonical value, tags.

feedsync diffs canonical values: two spellings that CyberTrace stores as one URL
are one indicator here, and a DELETE names what CyberTrace stored. URLs and
domains follow the 13 rules of CyberTrace's help page "URL normalization rules"
(page ID 231546, CyberTrace 4.x/5.x help). The stored copies of that page keep
each rule's example; where the lead-in words of a rule were lost, its wording
below is read from the example:

1. Remove dot segments ("." and "..") by RFC 3986 section 5.2.4:
   ``http://www.example.com/../a/b/../c/./d.html => http://www.example.com/a/b/c/d.html``.
   The page's result keeps ``b``, which the algorithm it cites removes (RFC 3986
   and the CyberTrace 4.0 help, page 177992, give ``/a/c/d.html``): the algorithm wins.
2. Remove the protocol: ``http://example.com => example.com``.
3. Convert internationalized domain names to Punycode (RFC 3492):
   ``тест.рф => xn--e1aybc.xn--p1ai``.
4. Remove the www prefix: ``www.example.com => example.com``.
5. Collapse repeated slashes: ``example.com//dir/test.html => example.com/dir/test.html``.
6. Remove the trailing slash: ``example.com/ => example.com``.
7. Remove the login and password: ``login:password@example.com => example.com``.
8. Remove the port: ``example.com:80/index => example.com/index``.
9. Remove the #fragment reference: ``example.com#fragment => example.com``.
10. Remove the dot that ends the domain name:
    ``example.com./index.html => example.com/index.html``.
11. Convert to lower case: ``EXAMPLE.COM => example.com``.
12. Write an IP address given in octal as dotted decimal:
    ``0112.0175.0117.0150 => 74.125.79.104``; the page's introduction also reads
    ``github.com@520966948`` as the address 31.13.83.36, so hex parts and fewer
    than four parts are read as inet_aton reads them.
13. Not recovered: the page says thirteen rules, its stored copies show twelve
    examples. What CyberTrace is known to store beyond them is done here:
    percent-encoded unreserved characters (RFC 3986 section 2.3) are decoded,
    an empty query (``example.com/a/?``) is dropped, ``//host/path`` has no
    scheme to remove, and an IPv6 host keeps its brackets in a URL.

Order matters where rules meet: slashes are collapsed before dot segments are
removed (so doubling a slash never changes a value), percent-decoding comes
before both (``%2E%2E`` is a dot segment), a query keeps the slash before its
``?``, and ``www.`` goes only while a dot is left (``www.com`` stays). A value
that is only a host is a domain or an address (``[v6]`` loses its brackets).
Beyond CyberTrace, feedsync refangs values and reads ``ip/32`` as an address.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import overload

from feedsync.model import Indicator, Invalid, Kind, Record, Removal
from feedsync.phases import Phases

RowMeter = Callable[[int], object]  # told how many more rows were read

# Bump whenever a value's canonical form or kind may come out differently: line
# indexes built by an older normalization are then rebuilt, not trusted.
VERSION = 2

_HEX = frozenset("0123456789abcdefABCDEF")
_HASH_KINDS = {32: Kind.MD5, 40: Kind.SHA1, 64: Kind.SHA256}
# A scheme, or none (``//host``), and the slashes after it (rule 2).
_SCHEME = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]{0,15}:)?//+")
_SLASHES = re.compile(r"/{2,}")
# %XX of an unreserved character: ALPHA, DIGIT, "-", ".", "_", "~".
_UNRESERVED_ESCAPE = re.compile(r"%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[DEde]|5[Ff]|7[Ee])")
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]+")
_PORT = re.compile(r"(?::[0-9]*)?")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_TAG_JUNK = re.compile(r"[^A-Z0-9_-]+")
_DEFANGS = (("[.]", "."), ("(.)", "."), ("{.}", "."), ("[:]", ":"), ("[://]", "://"))
_MAX_VALUE = 8192
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")

Screener = Callable[[Record, tuple[str, ...]], Iterable[Indicator | Invalid]]


class InvalidValue(ValueError):
    """A value that is no indicator; ``reason`` is a short word for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class NetworkValue(InvalidValue):
    """A network of several addresses: no indicator, but its addresses may be
    (exclusions.Screen expands it)."""

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.network = network
        super().__init__("cidr", f"network {network} is not a single address")


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
        with phases.timed("fetch"):
            batch = list(islice(stream, size))
        if not batch:
            return
        if meter is not None:
            meter(len(batch))
        with phases.timed("normalize"):
            done: list[Indicator | Invalid | Removal]
            if screen is None:
                done = [
                    normalize(item, static_tags) if isinstance(item, Record) else item
                    for item in batch
                ]
            else:
                done = []
                for item in batch:
                    if isinstance(item, Record):
                        done.extend(screen(item, static_tags))
                    else:
                        done.append(item)
        yield done


def normalize(record: Record, static_tags: tuple[str, ...] = ()) -> Indicator | Invalid:
    """Turn a source record into an indicator, or say why it is invalid."""
    try:
        kind, value = canonicalize(record.value)
    except InvalidValue as exc:
        return Invalid(record.line, record.value[:200], exc.reason, record.line_hash)
    return indicator_of(record, kind, value, static_tags)


def indicator_of(
    record: Record, kind: Kind, value: str, static_tags: tuple[str, ...]
) -> Indicator:
    """The indicator of ``record`` whose canonical value is ``value``."""
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
        text = _unmarked(text)
    lowered = text[:8].lower()
    if lowered.startswith(("hxxp://", "hxxps://")):
        text = "http" + text[4:]
    return text


def _unmarked(text: str) -> str:
    # Until nothing changes: "[[.]]" loses one mark and is "[.]", another one.
    while True:
        plain = text
        for fanged, unfanged in _DEFANGS:
            plain = plain.replace(fanged, unfanged)
        if plain == text:
            return text
        text = plain


def _address(text: str) -> tuple[Kind, str] | None:
    """A plain IP address, ``ip:port``, ``[v6]``, ``[v6]:port`` or a single-host
    CIDR; None if ``text`` is none of these (a URL with an address host, say)."""
    candidate = text
    if candidate.startswith("["):
        end = candidate.find("]")
        if end < 0 or not _PORT.fullmatch(candidate, end + 1):
            return None
        return _bracketed(candidate[1:end])
    if candidate.count(":") == 1 and candidate.count(".") == 3:
        candidate, _, port = candidate.partition(":")
        if not port.isascii() or not port.isdigit():
            return None
    if "/" in candidate:
        return _network(candidate)
    if _DOTTED_QUAD.fullmatch(candidate):
        return Kind.IPV4, candidate  # already canonical: no leading zeros, each octet <= 255
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    return _ip_kind(address), str(address)


def _bracketed(text: str) -> tuple[Kind, str] | None:
    try:
        return Kind.IPV6, str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def _network(text: str) -> tuple[Kind, str] | None:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if network.num_addresses != 1:
        raise NetworkValue(network)
    return _ip_kind(network.network_address), str(network.network_address)


def _ip_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Kind:
    return Kind.IPV4 if address.version == 4 else Kind.IPV6


def _url_or_domain(text: str) -> tuple[Kind, str]:
    match = _SCHEME.match(text)
    rest = text[match.end() :] if match else text
    fragment = rest.find("#")
    if fragment >= 0:
        rest = rest[:fragment]  # rule 9
    split_at = len(rest)
    for delimiter in "/?":
        found = rest.find(delimiter, 0, split_at)
        if found >= 0:
            split_at = found
    host, kind = _host(rest[:split_at])
    tail = _tail(rest[split_at:])
    if tail:
        return Kind.URL, host + tail
    if kind is Kind.IPV6:
        return kind, host[1:-1]  # a plain address has no brackets
    return kind, host


def _tail(tail: str) -> str:
    """Path and query by rules 1, 5, 6 and 11, unreserved escapes decoded."""
    if not tail:
        return ""
    if "%" in tail:
        tail = _decoded(tail)
        if "[" in tail or "(" in tail or "{" in tail:
            tail = _unmarked(tail)  # "[%2e]" decodes to a mark a second reading would refang
    path, _, query = tail.lower().partition("?")
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:
        path = _without_dot_segments(path)
    if not query:
        return path.rstrip("/")
    if "//" in query:
        query = _SLASHES.sub("/", query)
    return f"{path}?{query}"


def _decoded(text: str) -> str:
    # Until nothing changes: "%%34%31" decodes to "%41", which is "A" again.
    while True:
        decoded = _UNRESERVED_ESCAPE.sub(_unescape, text)
        if decoded == text:
            return text
        text = decoded


def _unescape(match: re.Match[str]) -> str:
    return chr(int(match.group()[1:], 16))


def _without_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path without empty segments."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    result = "/" + "/".join(kept)
    if kept and segments[-1] in (".", ".."):
        result += "/"  # "/a/b/.." is "/a/", as the RFC has it
    return result


def _host(authority: str) -> tuple[str, Kind]:
    """The host of ``authority`` by rules 3, 4, 7, 8, 10, 11 and 12, and its kind."""
    host = authority[authority.rfind("@") + 1 :]
    if host.startswith("["):
        end = host.find("]")
        address = _bracketed(host[1:end]) if end > 0 and _PORT.fullmatch(host, end + 1) else None
        if address is None:
            raise InvalidValue("url", f"bad IPv6 host {host!r}")
        return f"[{address[1]}]", Kind.IPV6
    host, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        raise InvalidValue("url", f"bad port {port!r}")
    if "%" in host:
        host = _decoded(host)
    host = host.lower().rstrip(".")
    if not host.isascii():
        host = _punycode(host)
    while host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    if not host:
        raise InvalidValue("url", "no host")
    if _NUMBER.fullmatch(host, host.rfind(".") + 1):
        return _ipv4(host), Kind.IPV4
    return _domain(host), Kind.DOMAIN


def _ipv4(host: str) -> str:
    """A host whose last label is a number, as dotted decimal (rule 12)."""
    if _DOTTED_QUAD.fullmatch(host):
        return host
    parts = host.split(".")
    try:
        numbers = [_ipv4_part(part) for part in parts]
    except ValueError:
        numbers = []
    # Parts before the last are bytes; the last fills the bytes left.
    if not 0 < len(numbers) <= 4 or max(numbers[:-1], default=0) > 255:
        raise InvalidValue("url", f"bad IPv4 host {host!r}")
    if numbers[-1] >= 1 << (8 * (5 - len(numbers))):
        raise InvalidValue("url", f"bad IPv4 host {host!r}")
    value = numbers[-1]
    for place, number in enumerate(numbers[:-1]):
        value += number << (24 - 8 * place)
    return str(ipaddress.IPv4Address(value))


def _ipv4_part(part: str) -> int:
    if not _NUMBER.fullmatch(part):
        raise ValueError(part)
    if part.startswith("0x"):
        return int(part[2:], 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def _punycode(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii").rstrip(".")
    except UnicodeError as exc:
        raise InvalidValue("idn", f"host {host!r} is not a valid internationalized name") from exc


def _domain(host: str) -> str:
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 253:
        raise InvalidValue("domain", f"{host!r} is not a domain name")
    if not all(_LABEL.match(label) for label in labels):
        raise InvalidValue("domain", f"{host!r} is not a domain name")
    return host
