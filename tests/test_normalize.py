"""Normalization: kinds, canonical values, tags."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedsync.model import Indicator, Invalid, Kind, Record
from feedsync.normalize import InvalidValue, canonical_tag, canonical_tags, canonicalize, normalize


@pytest.mark.parametrize(
    ("raw", "kind", "canonical"),
    [
        ("d41d8cd98f00b204e9800998ecf8427e", Kind.MD5, "D41D8CD98F00B204E9800998ECF8427E"),
        (
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
            Kind.SHA1,
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
        ),
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            Kind.SHA256,
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ),
        (" 1.2.3.4 ", Kind.IPV4, "1.2.3.4"),
        ("8.223.20.63:443", Kind.IPV4, "8.223.20.63"),
        ("10.1.2.3/32", Kind.IPV4, "10.1.2.3"),
        ("2001:DB8:0:0::1", Kind.IPV6, "2001:db8::1"),
        ("[2001:db8::1]", Kind.IPV6, "2001:db8::1"),
        ("Example.COM.", Kind.DOMAIN, "example.com"),
        ("www.example.com", Kind.DOMAIN, "example.com"),
        ("bücher.example", Kind.DOMAIN, "xn--bcher-kva.example"),
        ("http://www.Example.com:8080/a/", Kind.URL, "example.com/a"),
        ("example.com/a", Kind.URL, "example.com/a"),
        ("https://user:pw@EXAMPLE.com./x//y/?q=1#frag", Kind.URL, "example.com/x/y/?q=1"),
        ("hxxp://evil[.]com/x", Kind.URL, "evil.com/x"),
        ("http://1.2.3.4:8080/i", Kind.URL, "1.2.3.4/i"),
        ("http://1.2.3.4/", Kind.IPV4, "1.2.3.4"),
        ("https://example.com/", Kind.DOMAIN, "example.com"),
        # Page 231546 removes the dot that ends a domain name, not one in a path.
        ("https://example.com/file.", Kind.URL, "example.com/file."),
        # CyberTrace keeps the brackets of an IPv6 host in a URL.
        ("http://[2001:db8::1]:80/x", Kind.URL, "[2001:db8::1]/x"),
    ],
)
def test_canonical_values(raw: str, kind: Kind, canonical: str) -> None:
    assert canonicalize(raw) == (kind, canonical)


def test_two_spellings_of_one_url_are_one_value() -> None:
    spellings = [
        "http://www.example.com/Path/",
        "HTTPS://EXAMPLE.COM:443/path",
        "example.com//path#top",
        "ftp://user@example.com./path/",
    ]
    assert {canonicalize(s)[1] for s in spellings} == {"example.com/path"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not an indicator", "whitespace"),
        ("localhost", "domain"),
        ("foo", "domain"),
        ("10.0.0.0/8", "cidr"),
        ("http://", "url"),
        ("1.2.3.999", "url"),
        ("-bad-.example", "domain"),
        ("a" * 9000, "too_long"),
        ("evil.com\x00", "whitespace"),
    ],
)
def test_invalid_values_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidValue) as info:
        canonicalize(raw)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("tag", "canonical"),
    [
        ("tlp:white", "TLP_WHITE"),
        ("abusech", "ABUSECH"),
        ("32-bit", "32-BIT"),
        ('misp-galaxy:threat-actor="APT 28"', "MISP-GALAXY_THREAT-ACTOR_APT_28"),
        ("  ", None),
        (":::", None),
        ("x" * 200, "X" * 128),
    ],
)
def test_tags_map_onto_cybertrace_charset(tag: str, canonical: str | None) -> None:
    assert canonical_tag(tag) == canonical


def test_tags_are_sorted_unique_and_merged() -> None:
    assert canonical_tags(("b", "tlp:white"), ("TLP_WHITE", "a", "")) == ("A", "B", "TLP_WHITE")


def test_normalize_builds_an_indicator_keyed_by_canonical_value() -> None:
    record = Record(
        line=3, value="http://www.evil.com/x/", context=(("threat", "malware"),), tags=("elf",)
    )
    assert normalize(record, ("abusech",)) == Indicator(
        key="evil.com/x",
        value="evil.com/x",
        kind=Kind.URL,
        context=(("threat", "malware"),),
        tags=("ABUSECH", "ELF"),
    )


def test_normalize_keeps_a_source_key() -> None:
    record = Record(line=1, value="1.2.3.4", key="attr-uuid")
    indicator = normalize(record)
    assert isinstance(indicator, Indicator)
    assert indicator.key == "attr-uuid"


def test_normalize_reports_invalid_with_line() -> None:
    assert normalize(Record(line=17, value="nonsense")) == Invalid(17, "nonsense", "domain")


def test_cybertrace_types() -> None:
    assert Kind.DOMAIN.cybertrace_type == "URL"
    assert Kind.IPV6.cybertrace_type == "IP"
    assert Kind.SHA256.cybertrace_type == "SHA256"


@given(
    st.lists(
        st.integers(0, 999).map(str) | st.integers(0, 99).map(lambda n: f"0{n}"),
        min_size=4,
        max_size=4,
    )
)
def test_dotted_quads_read_as_cybertrace_reads_them(octets: list[str]) -> None:
    # Page 231546, rule 12: an octet with a leading 0 is octal (0112 is 74).
    text = ".".join(octets)
    try:
        numbers = [int(o, 8) if len(o) > 1 and o[0] == "0" else int(o) for o in octets]
        address = ipaddress.IPv4Address(bytes(numbers))
        expected: tuple[Kind, str] | None = (Kind.IPV4, str(address))
    except ValueError:
        expected = None
    try:
        found: tuple[Kind, str] | None = canonicalize(text)
    except InvalidValue:
        found = None
    if expected is not None:
        assert found == expected
    else:
        assert found is None or found[0] is not Kind.IPV4, "never an address rule 12 refuses"
