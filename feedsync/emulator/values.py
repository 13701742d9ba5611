"""The emulated CyberTrace's own reading of indicator values.

``canonical(value)`` returns the CyberTrace type of a value (MD5, SHA1, SHA256,
IP or URL; a domain is a URL) and the value as CyberTrace stores it, or raises
``NotAnIndicator`` where CyberTrace answers "Invalid indicator format". It is
written from CyberTrace's help, not from feedsync's client, so that tests can
hold the client's canonical values against it.

URLs are stored normalized by the thirteen rules of the help page "URL
normalization rules" (page ID 231546, CyberTrace 4.x/5.x). Each rule as the page
gives it, with its example (a rule whose lead-in words the stored copies lost is
worded from its example):

1. Remove the dot segments "." and ".." by the algorithm of RFC 3986, section
   5.2.4: ``http://www.example.com/../a/b/../c/./d.html`` becomes
   ``http://www.example.com/a/b/c/d.html`` on the page, which the algorithm it
   names makes ``/a/c/d.html`` (as the CyberTrace 4.0 help, page 177992, has
   it); the algorithm is what is done.
2. Remove the protocol: ``http://example.com => example.com``.
3. Convert internationalized domain names by Punycode, RFC 3492:
   ``тест.рф => xn--e1aybc.xn--p1ai``.
4. Remove the www prefix: ``www.example.com => example.com``.
5. Replace repeated slashes by one: ``example.com//dir/test.html => example.com/dir/test.html``.
6. Remove a slash at the end: ``example.com/ => example.com``.
7. Remove the login and password: ``login:password@example.com => example.com``.
8. Remove the port: ``example.com:80/index => example.com/index``.
9. Remove the #fragment reference: ``example.com#fragment => example.com``.
10. Remove the dot at the end of the domain name:
    ``example.com./index.html => example.com/index.html``.
11. Lower the case: ``EXAMPLE.COM => example.com``.
12. Read an IP address in octal notation: ``0112.0175.0117.0150 => 74.125.79.104``;
    the page's introduction calls ``github.com@520966948`` the address
    31.13.83.36, so a number may also be hex or stand for several bytes.
13. Not in the stored copies of the page (twelve examples for thirteen rules).
    Emulated as CyberTrace is known to behave: percent-encoded unreserved
    characters (RFC 3986, section 2.3) are decoded, an empty query is dropped,
    ``//host`` has no protocol to remove, and a URL keeps ``[v6]`` brackets.

How the rules meet: decoding comes first (``%2e%2e`` is a dot segment), slashes
are collapsed before dot segments go, the slash before a query stays, ``www.``
goes while a dot remains after it, and a URL that is only a host is stored as a
domain (type URL) or an address (type IP, ``[v6]`` without brackets).
"""

from __future__ import annotations

import binascii
import encodings.idna
import ipaddress
import re
import string
from dataclasses import dataclass

HASH_TYPES = {32: "MD5", 40: "SHA1", 64: "SHA256"}
LONGEST = 8192
_URL = re.compile(
    r"(?:(?:[A-Za-z][A-Za-z0-9+.\-]{0,15}:)?//+)?"  # rule 2, with ``//host``
    r"(?P<authority>[^/?]*)(?P<path>[^?]*)(?:\?(?P<query>.*))?",
    re.DOTALL,
)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")
_LABEL_CHARACTERS = frozenset(string.ascii_lowercase + string.digits + "-_")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]+")
_BYTE = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_DECIMAL = re.compile(rf"(?:{_BYTE}\.){{3}}{_BYTE}")
# What str.isspace() calls blank (re's \s is the same Unicode table) and the C0 controls
# with DEL: one regex search instead of a Python test per character.
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_DIGITS = {8: frozenset("01234567"), 10: frozenset(string.digits), 16: frozenset(_HEX)}
# The shapes most feeds send, which ``read_in_full`` stores as written but lowered: a
# domain of ASCII labels (no "www." to drop, a last label that no number could be) with
# an optional "http(s)://" and a path of plain segments (nothing to decode, collapse,
# resolve or cut). tests/emulator/test_emulator_costs.py holds them to the long way.
# Both cases spelled out rather than re.IGNORECASE, and the path's runs possessive (a
# "/" is all that may follow one): a quarter less time in the regex engine, same matches.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_PLAIN_URL = re.compile(
    r"(?:[Hh][Tt][Tt][Pp][Ss]?://)?(?![Ww][Ww][Ww]\.)"
    rf"(?P<host>(?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9_-]{{0,61}}[A-Za-z0-9_])?)"
    r"(?:/[A-Za-z0-9_~-][A-Za-z0-9_~.-]*+)*+",
    re.ASCII,
)


class NotAnIndicator(ValueError):
    """A value CyberTrace answers with "Invalid indicator format"."""


@dataclass(frozen=True, slots=True)
class _Url:
    """A URL split into what the rules work on; ``query`` None when there is no ``?``."""

    host: str
    path: str
    query: str | None


def canonical(value: str) -> tuple[str, str]:
    """The CyberTrace type of ``value`` and the value as CyberTrace stores it."""
    text = value.strip()
    if not text or len(text) > LONGEST:
        raise NotAnIndicator(f"no indicator of 1 to {LONGEST} characters")
    hash_type = HASH_TYPES.get(len(text))
    if hash_type is not None and _hex_digits(text):
        return hash_type, text.upper()
    if _DOTTED_DECIMAL.fullmatch(text):
        return "IP", text
    plain = _PLAIN_URL.fullmatch(text)
    if plain is not None and len(plain["host"]) <= 253:
        return "URL", text[text.find("//") + 2 :].lower() if "//" in text else text.lower()
    return read_in_full(text)


def _hex_digits(text: str) -> bool:
    """``_HEX.issuperset(text)`` for a text of a hash's (even) length, by binascii's decoder,
    which takes only ASCII hex digit pairs: a quarter of the time for a SHA256. A "." (every
    URL and domain has one) answers before the decoder's exception would."""
    if "." in text:
        return False
    try:
        binascii.unhexlify(text)
    except (binascii.Error, ValueError):  # a non-hex digit; a non-ASCII character
        return False
    return True


def read_in_full(text: str) -> tuple[str, str]:
    """``canonical`` of a stripped ``text`` of 1 to ``LONGEST`` characters, rule by rule."""
    if _BLANK_OR_CONTROL.search(text):
        raise NotAnIndicator("blank or control characters")
    hash_type = HASH_TYPES.get(len(text))
    if hash_type is not None and _HEX.issuperset(text):
        return hash_type, text.upper()
    if ":" in text:
        try:
            return "IP", str(ipaddress.IPv6Address(text))
        except ValueError:
            pass
    return _stored_url(_split(text))


def _split(text: str) -> _Url:
    without_fragment = text.split("#", 1)[0]  # rule 9
    match = _URL.fullmatch(without_fragment)
    if match is None:  # the pattern takes every text; kept for the type checker
        raise NotAnIndicator("not a URL")
    return _Url(_host(match["authority"]), match["path"], match["query"])


def _stored_url(url: _Url) -> tuple[str, str]:
    path = _rule_5_one_slash(_lower(url.path))
    path = _rule_1_without_dot_segments(path)
    query = _lower(url.query) if url.query else ""
    rest = f"{path}?{_rule_5_one_slash(query)}" if query else _rule_6_without_end_slash(path)
    if rest:
        return "URL", url.host + rest
    if url.host.startswith("["):
        return "IP", url.host.strip("[]")
    if _NUMERIC_LABEL.fullmatch(url.host.rsplit(".", 1)[-1]):
        return "IP", url.host
    return "URL", url.host


def _lower(text: str) -> str:
    """Rule 11 after decoding, so that ``%41`` is stored as ``a``."""
    return _decoded(text).lower()


def _decoded(text: str) -> str:
    """``text`` with every %XX of an unreserved character decoded, and decoded
    again where that made a new one (``%%34%31`` is ``%41``, which is ``A``)."""
    while "%" in text:
        pieces = text.split("%")
        out = [pieces[0]]
        for piece in pieces[1:]:
            code = piece[:2]
            if len(code) == 2 and _HEX.issuperset(code) and chr(int(code, 16)) in _UNRESERVED:
                out.append(chr(int(code, 16)) + piece[2:])
            else:
                out.append("%" + piece)
        decoded = "".join(out)
        if decoded == text:
            break
        text = decoded
    return text


def _rule_5_one_slash(text: str) -> str:
    while "//" in text:
        text = text.replace("//", "/")
    return text


def _rule_1_without_dot_segments(path: str) -> str:
    if "/." not in path and not path.startswith("."):
        return path  # every step of the RFC's starts at a "." or "/.": none would apply
    return rfc_3986_steps(path)


def rfc_3986_steps(path: str) -> str:
    """RFC 3986, section 5.2.4, step by step as the RFC words it."""
    source, output = path, list[str]()
    while source:
        if source.startswith("../"):
            source = source[3:]
        elif source.startswith(("./", "/./")):
            source = source[2:]  # "./x" is "x", "/./x" is "/x"
        elif source == "/.":
            source = "/"
        elif source.startswith("/../") or source == "/..":
            source = "/" + source[4:]
            if output:
                output.pop()
        elif source in (".", ".."):
            source = ""
        else:
            end = source.find("/", 1)
            end = len(source) if end < 0 else end
            output.append(source[:end])
            source = source[end:]
    return "".join(output)


def _rule_6_without_end_slash(path: str) -> str:
    while path.endswith("/"):
        path = path[:-1]
    return path


def _host(authority: str) -> str:
    """Rules 7, 8, 11, 10, 3, 4 and 12 on the authority, in that order."""
    host_and_port = authority.rpartition("@")[2]  # rule 7
    if host_and_port.startswith("["):
        return _bracketed_host(host_and_port)
    host, _, port = host_and_port.partition(":")  # rule 8
    if not _DIGITS[10].issuperset(port):
        raise NotAnIndicator(f"port {port!r} is not a number")
    host = _rule_10_without_end_dot(_decoded(host).lower())
    if not host.isascii():
        # Punycode may end a name with a dot (U+2024 is one): rule 10 again.
        host = _rule_10_without_end_dot(_rule_3_punycode(host))
    while host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        return _rule_12_address(host)
    return _checked_domain(host)


def _bracketed_host(text: str) -> str:
    inside, bracket, port = text[1:].partition("]")
    if not bracket or (port and (port[0] != ":" or not _DIGITS[10].issuperset(port[1:]))):
        raise NotAnIndicator(f"{text!r} is no [IPv6]:port")
    try:
        return f"[{ipaddress.IPv6Address(inside)}]"
    except ValueError:
        raise NotAnIndicator(f"{inside!r} is no IPv6 address") from None


def _rule_10_without_end_dot(host: str) -> str:
    while host.endswith("."):
        host = host[:-1]
    return host


def _rule_3_punycode(host: str) -> str:
    labels = _IDNA_DOTS.split(host)
    if not labels[-1]:
        labels.pop()  # one end dot (U+3002 and the like) ends a name; two make an empty label
    try:
        return ".".join(encodings.idna.ToASCII(label).decode("ascii") for label in labels)
    except UnicodeError:
        raise NotAnIndicator(f"{host!r} is no internationalized domain name") from None


def _rule_12_address(host: str) -> str:
    if _DOTTED_DECIMAL.fullmatch(host):
        return host  # four decimal bytes without leading zeros: already as written below
    numbers = [_number(part) for part in host.split(".")]
    if len(numbers) > 4:
        raise NotAnIndicator(f"{host!r} has more than four numbers")
    *front, last = numbers
    if any(number > 255 for number in front) or last >= 256 ** (5 - len(numbers)):
        raise NotAnIndicator(f"{host!r} is out of the IPv4 range")
    address = last
    for shift, number in zip((24, 16, 8), front, strict=False):
        address |= number << shift
    return str(ipaddress.IPv4Address(address))


def _number(part: str) -> int:
    """A number as inet_aton reads one: ``0x`` hex, a leading 0 octal, else decimal."""
    if part[:2] == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits or not _DIGITS[base].issuperset(digits):
        raise NotAnIndicator(f"{part!r} is not a number of an IPv4 address")
    return int(digits, base)


def _checked_domain(host: str) -> str:
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 253 or not all(map(_good_label, labels)):
        raise NotAnIndicator(f"{host!r} is no domain name")
    return host


def _good_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and _LABEL_CHARACTERS.issuperset(label)
        and not label.startswith("-")
        and not label.endswith("-")
    )
