"""URLs and domains as CyberTrace stores them, and defanged spellings refanged.

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

import ipaddress
import re

from feedsync.model import Kind
from feedsync.normalize.addresses import DOTTED_QUAD, PORT, bracketed
from feedsync.normalize.invalid import InvalidValue

# A scheme, or none (``//host``), and the slashes after it (rule 2).
_SCHEME = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]{0,15}:)?//+")
_SLASHES = re.compile(r"/{2,}")
# %XX of an unreserved character: ALPHA, DIGIT, "-", ".", "_", "~".
_UNRESERVED_ESCAPE = re.compile(r"%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[DEde]|5[Ff]|7[Ee])")
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]+")
_DIGITS = frozenset("0123456789")
# Two or more labels of 1 to 63 of these characters, none starting or ending with "-".
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_DEFANGS = (("[.]", "."), ("(.)", "."), ("{.}", "."), ("[:]", ":"), ("[://]", "://"))


def refang(text: str) -> str:
    # Feeds often publish defanged values ("hxxp://evil[.]com") so they are not clickable.
    if "[" in text or "(" in text or "{" in text:
        text = _unmarked(text)
    if text[:1] in "hH" and text[:8].lower().startswith(("hxxp://", "hxxps://")):
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


def url_or_domain(text: str) -> tuple[Kind, str]:
    # Every scheme _SCHEME matches ends in "//": most values (domains) have none.
    match = _SCHEME.match(text) if "//" in text else None
    rest = text[match.end() :] if match else text
    fragment = rest.find("#")
    if fragment >= 0:
        rest = rest[:fragment]  # rule 9
    # The authority ends at the first "/", or at a "?" before it.
    split_at = rest.find("/")
    if split_at < 0:
        split_at = len(rest)
    query = rest.find("?", 0, split_at)
    if query >= 0:
        split_at = query
    host, kind = _host(rest[:split_at])
    tail = _tail(rest[split_at:]) if split_at < len(rest) else ""
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
    if (
        len(authority) <= 253
        and _DOMAIN.fullmatch(authority)
        and not authority.startswith("www.")
        and authority[authority.rfind(".") + 1] not in _DIGITS
    ):
        # Already canonical (lower case, no userinfo, port or trailing dot, no
        # www. and not an address): what most hosts are, and what the rules below
        # would return unchanged.
        return authority, Kind.DOMAIN
    host = authority[authority.rfind("@") + 1 :]
    if host.startswith("["):
        end = host.find("]")
        address = bracketed(host[1:end]) if end > 0 and PORT.fullmatch(host, end + 1) else None
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
    last = host.rfind(".") + 1
    # Both of _NUMBER's forms start with a digit: a name's last label never does.
    if host[last : last + 1] in _DIGITS and _NUMBER.fullmatch(host, last):
        return _ipv4(host), Kind.IPV4
    return _domain(host), Kind.DOMAIN


def _ipv4(host: str) -> str:
    """A host whose last label is a number, as dotted decimal (rule 12)."""
    if DOTTED_QUAD.fullmatch(host):
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
    # One match over the whole name, not one per label: this runs for every domain.
    if len(host) > 253 or not _DOMAIN.fullmatch(host):
        raise InvalidValue("domain", f"{host!r} is not a domain name")
    return host
