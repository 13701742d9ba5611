"""The fast paths of a full read pinned to the slow ones they stand for, over varied inputs.

A batch of plain lines is read in one go (csvlines): it must give what reading
its lines one at a time gives, and leave what the head reads (comments, damaged
fields) as that does. The normalizer's shortcuts (one match for a domain, the
whitespace check skipped for printable text) and encode's remembered JSON are
compared with the code they replaced, kept here as the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import sys
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedsync import normalize as normalize_module
from feedsync.body import LineBatch, line_hash, numbered
from feedsync.errors import FeedsyncError
from feedsync.model import Context, Indicator, Invalid, Kind, Record
from feedsync.normalize import InvalidValue, build, canonicalize
from feedsync.normalize import urls as url_rules
from feedsync.sources import csvfeed, csvlines
from feedsync.sources.csvfeed import ABSENT, CsvOptions, parse_csv
from feedsync.sources.csvlines import Lines
from feedsync.store import snapshot
from feedsync.store.snapshot import encode

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of lines that real and broken feeds hold: quotes, separators, blank
# space, comments, CR, BOM, non-ASCII text, bytes UTF-8 cannot read, IDN, IPv6,
# URLs with ports and userinfo, absent values.
PIECES = [
    b'"',
    b'""',
    b",",
    b", ",
    b";",
    b" ",
    b"\t",
    b"#",
    b"# id,indicator,tags",
    b"\r",
    b"\xef\xbb\xbf",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\xff",
    b"\xc3",
    b"n/a",
    b"None",
    b"-",
    b"evil.com",
    b"WWW.Example.ORG.",
    b"\xd1\x82\xd0\xb5\xd1\x81\xd1\x82.\xd1\x80\xd1\x84",
    b"[2001:db8::1]:443",
    b"2001:DB8::1",
    b"10.0.0.1/32",
    b"1.2.3.4:80",
    b"hxxp://user:pw@evil[.]com:8080/a/../b//c?q=1#frag",
    b"http://0x7f.1/",
    b"d41d8cd98f00b204e9800998ecf8427e",
    b"a,b",
    b'"x,y"',
    b"tlp:white,elf",
]
lines_of = st.lists(st.lists(st.sampled_from(PIECES), max_size=8).map(b"".join), max_size=12)


def batches(raws: list[bytes], cuts: list[int]) -> Iterator[LineBatch]:
    """The lines in batches cut where ``cuts`` say, numbered from 1."""
    start = 0
    for cut in [*sorted(set(cuts)), len(raws)]:
        if start < cut <= len(raws):
            part = raws[start:cut]
            yield range(start + 1, cut + 1), part, [line_hash(raw) for raw in part]
            start = cut


def read(raws: list[bytes], cuts: list[int], options: CsvOptions, whole: bool) -> list[object]:
    """Every row, with what the head reads beside it when the row comes out."""
    lines = Lines(batches(raws, cuts), options, "f")
    lines.whole = whole
    return [(row, lines.last_comment, dict(lines.damaged)) for row in lines.rows()]


@SETTINGS
@given(lines_of, st.lists(st.integers(0, 12), max_size=3), st.sampled_from([",", ";"]))
def test_a_batch_read_in_one_go_reads_as_line_by_line(
    raws: list[bytes], cuts: list[int], delimiter: str
) -> None:
    options = CsvOptions(delimiter=delimiter)
    assert read(raws, cuts, options, True) == read(raws, cuts, options, False)


@SETTINGS
@given(lines_of, st.lists(st.integers(0, 12), max_size=3))
def test_a_batch_in_latin1_reads_as_line_by_line(raws: list[bytes], cuts: list[int]) -> None:
    options = CsvOptions(encoding="latin-1", comment="//")
    assert read(raws, cuts, options, True) == read(raws, cuts, options, False)


def test_plain_batches_take_the_fast_path_and_odd_ones_do_not() -> None:
    lines = Lines(iter(()), CsvOptions(), "f")
    assert lines.whole
    assert lines._plain(range(1, 3), [b'\xef\xbb\xbf"a","b"\r', b"c,d\r"]) == ['"a","b"', "c,d"]
    for odd in (b"", b" c", b"# note", b"\xff", b"x" * (csvlines.MAX_LINE + 1)):
        assert lines._plain(range(1, 3), [b"a,b", odd]) is None
    assert not Lines(iter(()), CsvOptions(encoding="utf-16"), "f").whole


def test_a_quote_left_open_is_closed_at_its_line_end_in_a_plain_batch() -> None:
    raws = [b'1,"evil.com', b"2,good.com", b'3,"x,y"', b'4,"open']
    got = [row[2] for row, _comment, _damaged in read(raws, [], CsvOptions(), True)]
    assert got == [["1", "evil.com"], ["2", "good.com"], ["3", "x,y"], ["4", "open"]]


HEADED = b"# id,indicator,tags,note\n"


@SETTINGS
@given(lines_of)
def test_parse_csv_reads_every_row_as_line_by_line(raws: list[bytes]) -> None:
    body = HEADED + b'1,evil.com,"a,b",x\n' + b"\n".join(raws)
    options = CsvOptions(indicator="indicator", context=(("note", "note"),), tags_field="tags")

    def parsed(codecs: frozenset[str]) -> list[object]:
        saved = csvlines.WHOLE_BATCH_CODECS
        csvlines.WHOLE_BATCH_CODECS = codecs
        try:
            return list(parse_csv(io.BytesIO(body), options, "f", lambda *a: None))
        except FeedsyncError as exc:  # the same error either way
            return [type(exc), str(exc)]
        finally:
            csvlines.WHOLE_BATCH_CODECS = saved

    fast, slow = parsed(saved := csvlines.WHOLE_BATCH_CODECS), parsed(frozenset())
    assert saved
    assert [(type(i), i, getattr(i, "line_hash", None)) for i in fast] == [
        (type(i), i, getattr(i, "line_hash", None)) for i in slow
    ]


def test_numbered_batches_number_and_hash_every_line() -> None:
    body = b"a\nb\r\n\nc"
    got = [
        (number, raw, hashed)
        for numbers, raws, hashes in numbered(io.BytesIO(body), "f")
        for number, raw, hashed in zip(numbers, raws, hashes, strict=True)
    ]
    assert got == [(n, r, line_hash(r)) for n, r in enumerate(body.split(b"\n"), 1)]


# --- normalization ------------------------------------------------------------------

_OLD_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_OLD_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def old_domain_ok(host: str) -> bool:
    labels = host.split(".")
    return len(labels) >= 2 and len(host) <= 253 and all(_OLD_LABEL.match(x) for x in labels)


@SETTINGS
@given(st.text(alphabet="ab-_.0Z9\u00e9", max_size=80) | st.just("a" * 64 + ".com"))
def test_a_domain_checked_in_one_match_as_label_by_label(host: str) -> None:
    try:
        url_rules._domain(host)
        ok = True
    except InvalidValue:
        ok = False
    assert ok == old_domain_ok(host)


def test_no_printable_character_but_space_is_blank_or_control() -> None:
    # canonicalize skips the regex for printable text without a space: every code point.
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        if _OLD_BLANK_OR_CONTROL.search(char):
            assert not char.isprintable() or char == " ", hex(point)


def test_a_hash_is_told_by_fromhex_as_by_a_test_per_character() -> None:
    # canonicalize asks bytes.fromhex of a value without blank space: every code point.
    digits = frozenset("0123456789abcdefABCDEF")
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        if not _OLD_BLANK_OR_CONTROL.search(char):
            for text in ("ab" * 15 + char + "c", char * 40):
                assert normalize_module._hex(text) == digits.issuperset(text), hex(point)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("evil.com", (Kind.DOMAIN, "evil.com")),
        ("//evil.com/a", (Kind.URL, "evil.com/a")),
        ("ftp://evil.com", (Kind.DOMAIN, "evil.com")),
        ("http:/evil.com", "domain"),
        ("evil.com:80", (Kind.DOMAIN, "evil.com")),
        ("evil.com.", (Kind.DOMAIN, "evil.com")),
        ("Www.www.com", (Kind.DOMAIN, "www.com")),
        ("0x7f.0.0.1", (Kind.IPV4, "127.0.0.1")),
        ("1.2.3.04", (Kind.IPV4, "1.2.3.4")),
        ("evil.123", "url"),
        ("evil.0x1g", (Kind.DOMAIN, "evil.0x1g")),
        ("a.-b.com", "domain"),
        ("h", "domain"),
        ("a\u200bb.com", (Kind.DOMAIN, "ab.com")),  # not printable, yet no blank space
        ("a\u00a0b.com", "whitespace"),
        ("hXxP://evil.com", (Kind.DOMAIN, "evil.com")),
        ("HXXPS://evil.com/x", (Kind.URL, "evil.com/x")),
        ("xn--e1aybc.xn--p1ai", (Kind.DOMAIN, "xn--e1aybc.xn--p1ai")),
    ],
)
def test_canonical_values_where_the_shortcuts_meet(
    value: str, expected: tuple[Kind, str] | str
) -> None:
    # What the code before the shortcuts gave for each (checked against it).
    if isinstance(expected, str):
        with pytest.raises(InvalidValue) as raised:
            canonicalize(value)
        assert raised.value.reason == expected
    else:
        assert canonicalize(value) == expected


def test_tags_remembered_under_static_tags_are_the_canonical_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(normalize_module, "_TAGS_SEEN", 2)
    for static in (("a",), ("b", "tlp:white"), ("c",), ("a",)):
        tagged = normalize_module.tagged_under(static)
        for tags in (("x",), ("y", "a"), ("x",), (), ("Z", "z")):
            assert tagged[tags] == normalize_module.canonical_tags(static, tags)
            assert len(tagged) <= 2
        assert len(normalize_module.TAGGED) <= 2


# --- encode -------------------------------------------------------------------------


def old_encode(indicator: Indicator) -> snapshot.Row:
    context = orjson.dumps(dict(indicator.context), option=orjson.OPT_SORT_KEYS).decode()
    tags = orjson.dumps(indicator.tags).decode()
    content = f"{indicator.value}\x00{indicator.kind}\x00{context}\x00{tags}".encode()
    digest = int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "big", signed=True)
    hashed = indicator.line_hash
    return (
        indicator.key,
        indicator.value,
        str(indicator.kind),
        context,
        tags,
        digest,
        indicator.expires,
        None if hashed is None else hashed - (1 << 63),
    )


words = st.sampled_from(["", "a", "b", "é", '"', "\\", "\x00", "status", "\u2028"])
contexts: st.SearchStrategy[Context] = st.lists(st.tuples(words, words), max_size=3).map(tuple)
indicators = st.builds(
    Indicator,
    key=words,
    value=words,
    kind=st.sampled_from(list(Kind)),
    context=contexts,
    tags=st.lists(words, max_size=3).map(tuple),
    expires=st.none() | st.floats(allow_nan=False),
    line_hash=st.none() | st.integers(0, (1 << 64) - 1),
)


@SETTINGS
@given(st.lists(indicators, max_size=20))
def test_encode_with_remembered_json_as_without(items: list[Indicator]) -> None:
    # Empty contexts and empty tags meet here ({} and []), and repeated ones hit the memo.
    for item in items + items:
        assert encode(item) == old_encode(item)


def test_encode_forgets_when_full_and_still_encodes() -> None:
    items = [Indicator(f"k{n}", "v", Kind.DOMAIN, (("n", str(n)),), (str(n),)) for n in range(5000)]
    for item in items:
        assert encode(item) == old_encode(item)
    assert len(snapshot._CONTEXTS) <= snapshot._JSON_SIZE


def test_records_keep_what_the_slow_path_gave() -> None:
    body = b'# id,indicator,tags,note\n1,evil.com,"a, b,n/a",x\n2,bad.com,"a, b,n/a", \n3,n/a,,\n'
    options = CsvOptions(indicator="indicator", context=(("note", "note"),), tags_field="tags")
    got = list(parse_csv(io.BytesIO(body), options, "f"))
    assert got[:2] == [
        Record(2, "evil.com", (("note", "x"),), ("a", "b")),
        Record(3, "bad.com", (), ("a", "b")),
    ]
    assert isinstance(got[2], Invalid) and got[2].reason == "empty"


CELLS = ["x", " x", "x ", "n/a", "", "y", "None", " - "]


@SETTINGS
@given(
    st.lists(st.lists(st.sampled_from(CELLS), min_size=1, max_size=4), max_size=40),
    st.sampled_from([1, 2, 3]),
)
def test_a_context_known_by_its_cells_is_the_one_its_cells_make(
    rows: list[list[str]], columns: int
) -> None:
    # Rows repeat raw cells (remembered), spell one context several ways, and
    # some are too short for every context column (not remembered).
    names = [f"c{n}" for n in range(columns)]
    body = "\n".join(["indicator," + ",".join(names)] + ["evil.com," + ",".join(r) for r in rows])
    options = CsvOptions(indicator="indicator", context=tuple((n, n) for n in names))
    got = list(parse_csv(io.BytesIO(body.encode()), options, "f"))
    expected = [
        tuple((n, c.strip()) for n, c in zip(names, r, strict=False) if c.strip() not in ABSENT)
        for r in rows
    ]
    assert [item.context for item in got if isinstance(item, Record)] == expected


def test_contexts_stay_right_past_the_ones_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfeed, "_SEEN", 3)
    cells = [str(n % 5) for n in range(20)]
    body = "indicator,a,b\n" + "\n".join(f"evil.com,{c},{c}{c}" for c in cells)
    options = CsvOptions(indicator="indicator", context=(("a", "a"), ("b", "b")))
    got = [item.context for item in parse_csv(io.BytesIO(body.encode()), options, "f")]
    assert got == [(("a", c), ("b", c + c)) for c in cells]


# --- records and indicators built by their slots -----------------------------------


def test_the_builders_set_every_field_the_constructors_do() -> None:
    # A field added to Record or Indicator fails here until its builder sets it.
    assert tuple(f.name for f in dataclasses.fields(Record)) == build.RECORD_FIELDS
    assert tuple(f.name for f in dataclasses.fields(Indicator)) == build.INDICATOR_FIELDS
    assert not hasattr(Record, "__post_init__") and not hasattr(Indicator, "__post_init__")
    made = build.record(7, "evil.com", (("a", "b"),), ("t",), 99)
    assert_same(made, Record(7, "evil.com", (("a", "b"),), ("t",), line_hash=99))
    for source in (made, Record(3, "x", (), (), "key-1", 5.0, None)):
        built = build.indicator(source, Kind.DOMAIN, "evil.com", ("T",))
        expected = Indicator(
            source.key or "evil.com",
            "evil.com",
            Kind.DOMAIN,
            source.context,
            ("T",),
            source.expires,
            line_hash=source.line_hash,
            line=source.line,
        )
        assert_same(built, expected)
        assert hash(built) == hash(expected)
    # Made from a writable twin: what comes out is frozen all the same.
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.value = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.value = "other"  # type: ignore[misc]
    assert build.RecordSlots.__slots__ == Record.__slots__
    assert build.IndicatorSlots.__slots__ == Indicator.__slots__


def assert_same(built: object, expected: object) -> None:
    assert type(built) is type(expected)
    assert built == expected
    assert repr(built) == repr(expected)
    for name in (f.name for f in dataclasses.fields(expected)):  # type: ignore[arg-type]
        assert getattr(built, name) == getattr(expected, name), name
