"""CyberTrace's URL normalization rules (help page 231546), for the client's
``canonicalize`` and the emulator's own ``canonical``, and that the two agree."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from samples import sample

from feedsync.emulator.values import NotAnIndicator, canonical
from feedsync.model import Kind
from feedsync.normalize import InvalidValue, canonicalize

Reading = tuple[str, str]  # (CyberTrace type, stored value)


def client(value: str) -> Reading:
    kind, text = canonicalize(value)
    return kind.cybertrace_type, text


def client_or_none(value: str) -> Reading | None:
    try:
        return client(value)
    except InvalidValue:
        return None


def emulator_or_none(value: str) -> Reading | None:
    try:
        return canonical(value)
    except NotAnIndicator:
        return None


BOTH: dict[str, Callable[[str], Reading]] = {"client": client, "emulator": canonical}


@dataclass(frozen=True, slots=True)
class Example:
    """An example of the page: ``before`` and the page's ``after``, and the value stored
    once all the rules are applied (a page example shows one rule at a time)."""

    before: str
    after: str
    stored: str
    kind: Kind


PAGE_EXAMPLES = {
    # The page's own "after" is http://www.example.com/a/b/c/d.html, which keeps the
    # "b" that the RFC 3986 algorithm it names removes ("b/.." goes): a slip of the page.
    "rule-01-dot-segments": Example(
        "http://www.example.com/../a/b/../c/./d.html",
        "http://www.example.com/a/c/d.html",
        "example.com/a/c/d.html",
        Kind.URL,
    ),
    "rule-02-protocol": Example("http://example.com", "example.com", "example.com", Kind.DOMAIN),
    "rule-03-punycode": Example(
        "тест.рф", "xn--e1aybc.xn--p1ai", "xn--e1aybc.xn--p1ai", Kind.DOMAIN
    ),
    "rule-04-www": Example("www.example.com", "example.com", "example.com", Kind.DOMAIN),
    "rule-05-repeated-slashes": Example(
        "example.com//dir/test.html",
        "example.com/dir/test.html",
        "example.com/dir/test.html",
        Kind.URL,
    ),
    "rule-06-trailing-slash": Example("example.com/", "example.com", "example.com", Kind.DOMAIN),
    "rule-07-login-password": Example(
        "login:password@example.com", "example.com", "example.com", Kind.DOMAIN
    ),
    "rule-08-port": Example(
        "example.com:80/index", "example.com/index", "example.com/index", Kind.URL
    ),
    "rule-09-fragment": Example("example.com#fragment", "example.com", "example.com", Kind.DOMAIN),
    "rule-10-domain-end-dot": Example(
        "example.com./index.html", "example.com/index.html", "example.com/index.html", Kind.URL
    ),
    "rule-11-lower-case": Example("EXAMPLE.COM", "example.com", "example.com", Kind.DOMAIN),
    "rule-12-octal-ip": Example("0112.0175.0117.0150", "74.125.79.104", "74.125.79.104", Kind.IPV4),
    # The page's introduction: "github.com@520966948 is the obfuscated IP address 31.13.83.36".
    "intro-obfuscated-ip": Example("github.com@520966948", "31.13.83.36", "31.13.83.36", Kind.IPV4),
}


@pytest.mark.parametrize("implementation", BOTH)
@pytest.mark.parametrize("example", PAGE_EXAMPLES.values(), ids=PAGE_EXAMPLES)
def test_page_examples(implementation: str, example: Example) -> None:
    read = BOTH[implementation]
    expected = (example.kind.cybertrace_type, example.stored)
    assert read(example.before) == expected
    assert read(example.after) == expected


def test_the_client_keeps_kinds_of_its_own() -> None:
    # CyberTrace has no domain type, and a plain address has no brackets.
    assert canonicalize("www.example.com") == (Kind.DOMAIN, "example.com")
    assert canonicalize("http://[2001:db8::1]/") == (Kind.IPV6, "2001:db8::1")


@pytest.mark.parametrize("implementation", BOTH)
@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("example.com/a/b/c/./../../g", "example.com/a/g"),  # RFC 3986 5.2.4's own example
        ("example.com/mid/content=5/../6", "example.com/mid/6"),  # and its second one
        ("example.com/a/b/..", "example.com/a"),
        ("example.com/a/b/../?q", "example.com/a/?q"),
        ("example.com/../..", "example.com"),
        ("example.com/.../..x/x..", "example.com/.../..x/x.."),  # no dot segments
        ("example.com/a//../b", "example.com/b"),  # slashes collapse first: "//" is one
    ],
)
def test_dot_segments_follow_rfc_3986(implementation: str, raw: str, stored: str) -> None:
    assert BOTH[implementation](raw)[1] == stored


@pytest.mark.parametrize("implementation", BOTH)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("example.com/a/../b/./c", ("URL", "example.com/b/c"), id="dot-segments"),
        pytest.param(
            "example.com/%7Euser/%41b%2d%5F%2E%33",
            ("URL", "example.com/~user/ab-_.3"),
            id="unreserved-escapes",
        ),
        pytest.param("example.com/a%2Fb%20c", ("URL", "example.com/a%2fb%20c"), id="reserved-kept"),
        pytest.param("example.com/%2e%2E/x", ("URL", "example.com/x"), id="escaped-dots"),
        pytest.param("example.com/%%34%31", ("URL", "example.com/a"), id="decoded-to-a-fixpoint"),
        pytest.param("http://[2001:DB8::1]:8080/x", ("URL", "[2001:db8::1]/x"), id="ipv6-brackets"),
        pytest.param("[2001:db8::1]/x", ("URL", "[2001:db8::1]/x"), id="ipv6-schemeless"),
        pytest.param("http://[::1]", ("IP", "::1"), id="ipv6-host-only"),
        pytest.param("//example.com/path", ("URL", "example.com/path"), id="scheme-relative"),
        pytest.param("http:///example.com/p", ("URL", "example.com/p"), id="three-slashes"),
        pytest.param("http://example.com/path/?", ("URL", "example.com/path"), id="empty-query"),
        pytest.param("example.com/?", ("URL", "example.com"), id="empty-query-root"),
        pytest.param("example.com/p/?q=1", ("URL", "example.com/p/?q=1"), id="slash-before-query"),
        pytest.param("1.2.3.4:8080/x", ("URL", "1.2.3.4/x"), id="ipv4-port-path"),
        pytest.param("http://0x7f.1/x", ("URL", "127.0.0.1/x"), id="hex-and-short-ipv4"),
        pytest.param("http://017700000001/", ("IP", "127.0.0.1"), id="octal-dword"),
        pytest.param("www.www.example.com", ("URL", "example.com"), id="www-twice"),
        pytest.param("www.com", ("URL", "www.com"), id="www-is-the-name"),
        pytest.param("https://example.com/file.", ("URL", "example.com/file."), id="path-dot"),
    ],
)
def test_known_defects_are_fixed(implementation: str, raw: str, expected: Reading) -> None:
    assert BOTH[implementation](raw) == expected


def test_spellings_cybertrace_stores_as_one_are_one_value() -> None:
    spellings = [
        "HTTP://User:Pw@WWW.Example.COM.:8080/a/./b/../c//d/%7Ex/?#top",
        "//example.com/a/c/d/~x",
        "example.com/a/x/../c/d/%7ex/",
    ]
    for read in BOTH.values():
        assert {read(spelling) for spelling in spellings} == {("URL", "example.com/a/c/d/~x")}


@pytest.mark.parametrize(
    "raw",
    ["http://", "example.com:http/x", "http://[::1/x", "http://[1.2.3.4]/", "1.2.3.999", "a..b"],
)
def test_neither_reads_what_is_no_url(raw: str) -> None:
    assert client_or_none(raw) is None
    assert emulator_or_none(raw) is None


# Generated URLs ---------------------------------------------------------------------------

_LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
_TLDS = st.sampled_from(["com", "org", "ru", "xn--p1ai", "io"])
_IDN_LABELS = st.sampled_from(["тест", "bücher", "例え", "straße"])
_DOMAINS = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_LABELS | _IDN_LABELS, min_size=1, max_size=3),
    _TLDS,
)
_IPV4 = st.ip_addresses(v=4).map(str)
_IPV6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
_UNRESERVED = "abcdefghijklmnopqrstuvwxyz0123456789-._~"
_SEGMENTS = st.text(_UNRESERVED, min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
_QUERIES = st.none() | st.text(_UNRESERVED + "=&/", min_size=1, max_size=10)


@dataclass(frozen=True, slots=True)
class Url:
    """A URL in its plain spelling, built up from parts a variant can respell."""

    host: str
    path: str  # "" or starts with "/"
    query: str | None

    def spelled(self, scheme: str = "http://", prefix: str = "", suffix: str = "") -> str:
        query = "" if self.query is None else f"?{self.query}"
        return f"{scheme}{prefix}{self.host}{suffix}{self.path}{query}"


_URLS = st.builds(
    Url,
    _DOMAINS | _IPV4 | _IPV6,
    st.builds(
        lambda segments, slash: "/" + "/".join(segments) + slash if segments else slash,
        st.lists(_SEGMENTS, max_size=4),
        st.sampled_from(["", "/"]),
    ),
    _QUERIES,
)

# Raw URLs with the quirks the rules are about, for the two to be compared on.
_RAW_PATH = st.text(_UNRESERVED + "ABCXYZ/%!$&'*+,;=:@", max_size=16)
_RAW_URLS = st.builds(
    lambda scheme, user, host, port, path, query, fragment: (
        f"{scheme}{user}{host}{port}{path}{query}{fragment}"
    ),
    st.sampled_from(["", "http://", "HTTPS://", "ftp://", "//", "hxxp+x://", "http:///"]),
    st.sampled_from(["", "user@", "user:pw@", "@"]),
    _DOMAINS.map(str.upper) | _DOMAINS | _IPV4 | _IPV6 | st.sampled_from(["0x7f.1", "010.8.0.1"]),
    st.sampled_from(["", ":", ":80", ":x"]),
    st.just("") | _RAW_PATH.map(lambda p: "/" + p),
    st.sampled_from(["", "?", "?a=B//c", "?/"]),
    st.sampled_from(["", "#", "#Frag/x"]),
)


def _network(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _slashes(path: str) -> list[int]:
    return [at for at, character in enumerate(path) if character == "/"]


def _variants(url: Url, data: st.DataObject) -> str:
    """``url`` respelled by some of: scheme, www., port, userinfo, fragment, upper-case
    host, one escaped unreserved character, an inserted ``./`` or ``x/../``, a doubled slash."""
    path = url.path
    escape = data.draw(st.booleans(), "escape")
    if escape and path:
        at = data.draw(st.integers(0, len(path) - 1), "escape at")
        if path[at] in _UNRESERVED:
            hex_code = data.draw(st.sampled_from(["%{:02X}", "%{:02x}"]), "hex case")
            path = path[:at] + hex_code.format(ord(path[at])) + path[at + 1 :]
    insert = data.draw(st.sampled_from(["", "./", "x/../", "./x/../"]), "insert")
    if insert and "/" in path:
        at = data.draw(st.sampled_from(_slashes(path)), "insert after") + 1
        path = path[:at] + insert + path[at:]
    double = data.draw(st.booleans(), "double")
    if double and "/" in path:
        at = data.draw(st.sampled_from(_slashes(path)), "double at")
        path = path[:at] + "/" + path[at:]
    host = url.host.upper() if data.draw(st.booleans(), "upper") else url.host
    respelled = Url(host, path, url.query)
    www = "" if host.startswith("[") else data.draw(st.sampled_from(["", "www.", "WWW."]))
    scheme = data.draw(st.sampled_from(["", "http://", "HTTPS://", "ftp://", "//"]), "scheme")
    # Without a scheme, "host:" before "//path" is one: RFC 3986 reads "a.com://x" so.
    ports = ["", ":80", ":8443", ":"] if scheme else ["", ":80", ":8443"]
    return respelled.spelled(
        scheme=scheme,
        prefix=data.draw(st.sampled_from(["", "user@", "user:pw@"]), "userinfo") + www,
        suffix=data.draw(st.sampled_from(ports), "port"),
    ) + data.draw(st.sampled_from(["", "#", "#top", "#a/../b"]), "fragment")


@pytest.mark.parametrize("implementation", BOTH)
@given(url=_URLS, data=st.data())
def test_equivalent_spellings_map_to_one_value(
    implementation: str, url: Url, data: st.DataObject
) -> None:
    read, variant = BOTH[implementation], _variants(url, data)
    # The client alone reads a schemeless "ip/nn" as a network, as IP feeds write one.
    assume(implementation == "emulator" or not _network(variant))
    assert read(variant) == read(url.spelled())


@given(_RAW_URLS)
def test_client_and_emulator_agree_on_urls(raw: str) -> None:
    assert client_or_none(raw) == emulator_or_none(raw)


_ANY_TEXT = st.text(max_size=30) | st.text("aA.-:/?#@[]%2eE0x1_~ ", max_size=30)


@given(_RAW_URLS | _URLS.map(Url.spelled) | _ANY_TEXT)
def test_client_canonicalization_is_idempotent(value: str) -> None:
    found = client_or_none(value)
    assume(found is not None)
    assert found is not None
    # Beyond CyberTrace, the client reads a schemeless "ip/nn" as a network: a URL
    # stored as "1.2.3.4/24" is such a text, and the one kind of value read anew.
    assume(not _network(found[1]))
    assert canonicalize(found[1]) == canonicalize(value)


@given(_RAW_URLS | _URLS.map(Url.spelled) | _ANY_TEXT)
def test_emulator_canonicalization_is_idempotent(value: str) -> None:
    found = emulator_or_none(value)
    assume(found is not None)
    assert found is not None
    assert canonical(found[1]) == found


@given(_RAW_URLS | _URLS.map(Url.spelled) | _ANY_TEXT)
def test_cybertrace_stores_what_the_client_sends(value: str) -> None:
    found = client_or_none(value)
    assume(found is not None)
    assert found is not None
    assert canonical(found[1]) == found


# Real URLs from ../shared/samples ------------------------------------------------------

_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>\\,\]]+""")
NAMED_SAMPLES = (
    "csv/urlhaus_csv_recent_excerpt_20260226.csv",
    "csv/openphish_public_feed_head.txt",
)


def _urls_in(path: Path) -> list[str]:
    return sorted(set(_URL_IN_TEXT.findall(path.read_text(encoding="utf-8", errors="replace"))))


def _disagreements(urls: list[str]) -> list[str]:
    """What is wrong about ``urls``: the two disagree, or a reading is read anew."""
    problems = []
    for url in urls:
        found, stored = client_or_none(url), emulator_or_none(url)
        if found != stored:
            problems.append(f"{url}: client {found}, emulator {stored}")
        elif found is not None and (client(found[1]), canonical(found[1])) != (found, found):
            problems.append(f"{url}: {found} is not read back as itself")
    return problems


@pytest.mark.parametrize("relative", NAMED_SAMPLES)
def test_named_samples_agree_and_are_idempotent(relative: str) -> None:
    urls = _urls_in(sample(relative))
    assert len(urls) >= 15
    assert sum(client_or_none(url) is not None for url in urls) >= 15
    assert _disagreements(urls) == []


def test_every_sample_with_urls_agrees() -> None:
    files = [path for path in sample(".").rglob("*") if path.is_file()]
    urls = sorted({url for path in files for url in _urls_in(path)})
    assert len(urls) >= 100
    assert _disagreements(urls) == []
