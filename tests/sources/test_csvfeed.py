"""CSV parsing against the real samples in ../shared/samples and the quirks of real feeds."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from feedsync.body import open_body
from feedsync.errors import FetchError, ParseError
from feedsync.model import Invalid, Record
from feedsync.sources.csvfeed import CsvOptions, check_footer, data_rows, parse_csv

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"


def sample(name: str) -> Path:
    path = SAMPLES / "csv" / name
    if not path.exists():
        pytest.skip("../shared/samples not present")
    return path


def parse(path: Path, **options: object) -> list[Record | Invalid]:
    with open_body(path, "feed") as stream:
        return list(parse_csv(stream, CsvOptions(**options), "feed"))  # type: ignore[arg-type]


def parse_bytes(tmp_path: Path, body: bytes | str, **options: object) -> list[Record | Invalid]:
    return parse(write(tmp_path, body), **options)


def records(items: list[Record | Invalid]) -> list[Record]:
    return [i for i in items if isinstance(i, Record)]


def invalid(items: list[Record | Invalid]) -> list[tuple[int, str]]:
    return [(i.line, i.reason) for i in items if isinstance(i, Invalid)]


def write(tmp_path: Path, data: bytes | str, name: str = "body") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def data_lines(path: Path, comment: str = "#") -> int:
    """The file's non-blank, uncommented lines, counted independently of the parser."""
    text = path.read_text()
    return sum(1 for line in text.splitlines() if line.strip() and not line.startswith(comment))


# --- the real samples ---------------------------------------------------------------


def test_urlhaus_commented_header_context_and_tags() -> None:
    path = sample("urlhaus_csv_recent_excerpt_20260226.csv")
    items = parse(
        path,
        indicator="url",
        context=(("threat", "threat"), ("status", "url_status"), ("seen", "last_online")),
        tags_field="tags",
    )
    rows = records(items)
    assert len(rows) == len(items) == data_lines(path) == 10
    assert rows[0] == Record(
        line=10,
        value="http://182.126.120.150:58801/i",
        context=(
            ("threat", "malware_download"),
            ("status", "online"),
            ("seen", "2026-02-26 12:05:20"),
        ),
        tags=("32-bit", "elf", "mips", "Mozi"),
    )
    assert [r.line for r in rows] == list(range(10, 20))
    last = rows[-1]
    assert last.value.startswith("https://www.dropbox.com/scl/fi/")
    assert last.tags == (), "the literal None tag is absent"
    assert last.context == (("threat", "malware_download"), ("status", "offline")), (
        "the empty last_online is left out"
    )


def test_urlhaus_header_forced_off_uses_indexes() -> None:
    path = sample("urlhaus_csv_recent_excerpt_20260226.csv")
    rows = records(parse(path, header=False, indicator=3, context=(("id", "1"),)))
    assert rows[0].value == "http://182.126.120.150:58801/i"
    assert rows[0].context == (("id", "3786237"),)
    with pytest.raises(ParseError, match="no header"):
        parse(path, header=False, indicator="url")


def test_feodo_uncommented_quoted_header_and_footer() -> None:
    path = sample("feodo_ipblocklist_20240404.csv")
    items = parse(
        path,
        indicator="dst_ip",
        context=(("port", "dst_port"), ("malware", "malware"), ("status", "c2_status")),
    )
    rows = records(items)
    assert len(rows) == len(items) == data_lines(path) - 1 == 28, "the header row is no record"
    assert rows[0] == Record(
        line=10,
        value="192.9.135.73",
        context=(("port", "1194"), ("malware", "Pikabot"), ("status", "online")),
    )
    assert rows[-1].value == "172.233.221.61"
    assert rows[-1].line == 37, "above the footer, which has no final newline"


def test_threatfox_comma_space_separators_without_header() -> None:
    path = sample("threatfox_full_csv_excerpt_20240716.csv")
    items = parse(
        path,
        header=False,
        indicator=3,
        context=(("type", "4"), ("malware", "6"), ("reporter", "14"), ("reference", "9")),
        tags_field="7",
    )
    assert items == [
        Record(
            line=8,
            value="8.223.20.63:443",
            context=(
                ("type", "ip:port"),
                ("malware", "win.cobalt_strike"),
                ("reporter", "abuse_ch"),
            ),
            tags=("Agentemis", "BEACON", "CobaltStrike", "cobeacon"),
        )
    ], "14 fields despite the '\", \"' separators; the empty reference is left out"


def test_threatfox_detects_no_header() -> None:
    path = sample("threatfox_full_csv_excerpt_20240716.csv")
    assert [r.value for r in records(parse(path, indicator=3))] == ["8.223.20.63:443"]


def test_malwarebazaar_quoted_commented_header_and_absent_values() -> None:
    path = sample("malwarebazaar_full_dump_excerpt_20260226.csv")
    items = parse(
        path,
        indicator="sha256_hash",
        context=(
            ("md5", "md5_hash"),
            ("signature", "signature"),
            ("reporter", "reporter"),
            ("file", "file_name"),
        ),
    )
    rows = records(items)
    assert len(rows) == len(items) == data_lines(path) == 39
    assert rows[0].value == "19d854caf81bc884c677bd941abc50b33716e188fa723991820b0ffa3ea7e93e"
    assert rows[0].context == (
        ("md5", "9363fa2625198beb1fcce0ef07f558ff"),
        ("reporter", "abuse_ch"),
        ("file", "pm68k"),
    ), "the n/a signature is absent"
    assert rows[-1] == Record(
        line=48,
        value="2d316e4f0fa9c7f07e092f378fe287dff6e3fa017ac84ae93ccbbe0c5b95b778",
        context=(("md5", "a78a38c2e3150a500a4a5980ed343c07"), ("file", "2024-06-07 09:30:40")),
    ), "the quirky last row: a date as file name, None as reporter"


@pytest.mark.parametrize(
    ("name", "count"),
    [("sslbl_sslblacklist_v1.csv", 285), ("sslbl_sslblacklist_v2_diff.csv", 287)],
)
def test_sslbl_commented_header_under_banner(name: str, count: int) -> None:
    path = sample(name)
    items = parse(path, indicator="SHA1", context=(("reason", "Listingreason"),))
    rows = records(items)
    assert len(rows) == len(items) == data_lines(path) == count, "not the footer's (295)/(297)"
    assert rows[0] == Record(
        line=10,
        value="854c68ab7ad70b6f95f76ec64b8a46c145997629",
        context=(("reason", "AsyncRAT C&C"),),
    )


def test_sslbl_versions_differ_by_four_removed_and_six_added() -> None:
    old = {r.value for r in records(parse(sample("sslbl_sslblacklist_v1.csv"), indicator="sha1"))}
    new = {r.value for r in records(parse(sample("sslbl_sslblacklist_v2_diff.csv"), indicator=2))}
    assert (len(old - new), len(new - old)) == (4, 6)


def test_spamhaus_semicolon_comments_and_delimiter() -> None:
    path = sample("spamhaus_drop_20230220_head.txt")
    rows = records(parse(path, comment=";", delimiter=";", context=(("sbl", "2"),)))
    assert len(rows) == data_lines(path, ";") == 36
    assert rows[0] == Record(line=5, value="1.10.16.0/20", context=(("sbl", "SBL256894"),))
    assert rows[-1] == Record(line=40, value="43.250.116.0/22", context=(("sbl", "SBL240942"),))


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("openphish_public_feed_head.txt", 30),
        ("et_compromised-ips_mirror_head.txt", 20),
        ("ipsum_level8_excerpt.txt", 20),
    ],
)
def test_plain_lists(name: str, count: int) -> None:
    path = sample(name)
    items = parse(path)
    rows = records(items)
    assert len(rows) == len(items) == count
    assert [r.line for r in rows] == list(range(1, count + 1))
    assert [r.value for r in rows] == path.read_text().split()
    with pytest.raises(ParseError, match="no header"):
        parse(path, indicator="url")


def test_openphish_values_are_not_normalized() -> None:
    values = [r.value for r in records(parse(sample("openphish_public_feed_head.txt")))]
    assert values[3] == "https://allpl.hotperfectdeal.click/99VS6rRM?fbclid=%7Bfbclid%7D&amp;ut"
    assert values[25].endswith("loginchris.php#signin"), "a # inside a line is no comment"
    assert values[28] == "https://chattts-49f1.beszyrecala.workers.dev/0ffc11f1-4934-4134-be35-08="


# --- compressed bodies ----------------------------------------------------------------


def test_gzip_and_zip_bodies(tmp_path: Path) -> None:
    text = sample("feodo_ipblocklist_20240404.csv").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("docs/", "")
        archive.writestr("readme.txt", "read me")
        archive.writestr("ipblocklist.csv", text)
    plain = parse(write(tmp_path, text, "plain.csv"), indicator="dst_ip")
    assert len(records(plain)) == 28
    # Detection is by magic bytes, not by name.
    assert parse(write(tmp_path, gzip.compress(text), "feed.csv"), indicator="dst_ip") == plain
    assert parse(write(tmp_path, buffer.getvalue(), "feed.txt"), indicator="dst_ip") == plain


def test_gzip_of_a_large_body_streams(tmp_path: Path) -> None:
    body = "".join(f"10.0.{i // 256}.{i % 256}\n" for i in range(60_000)).encode()
    items = parse(write(tmp_path, gzip.compress(body)))
    assert len(items) == 60_000
    assert items[-1] == Record(line=60_000, value="10.0.234.95")


def test_truncated_gzip_is_a_parse_error_while_reading(tmp_path: Path) -> None:
    data = gzip.compress("".join(f"10.0.0.{i % 256}\n" for i in range(400_000)).encode())
    path = write(tmp_path, data[: len(data) // 2])
    with open_body(path, "feed") as stream:
        items = parse_csv(stream, CsvOptions(), "feed")
        first = next(items)
        assert isinstance(first, Record), "the readable start parses"
        with pytest.raises(ParseError, match="truncated gzip") as caught:
            list(items)
    assert caught.value.feed == "feed"


def test_corrupt_gzip_is_a_parse_error(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(b"1.2.3.4\n" * 1000))
    data[len(data) // 2] ^= 0xFF
    data[-8] ^= 0xFF  # the CRC, in case the flipped byte still inflates
    with pytest.raises(ParseError, match="gzip"):
        parse(write(tmp_path, bytes(data)))


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        b"PK\x03\x04" + b"\x00garbage" * 10,
        zip_of({"feed.csv": "".join(f"10.0.{i // 256}.{i % 256}\n" for i in range(5000))})[:3000],
        zip_of({"empty/": ""}),
    ],
    ids=["garbage", "truncated", "no-file"],
)
def test_corrupt_or_empty_zip_is_a_parse_error(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(ParseError, match="zip"):
        parse(write(tmp_path, body))


# --- lines and fields ------------------------------------------------------------------


def test_bom_crlf_quoted_commas_and_repeated_header(tmp_path: Path) -> None:
    body = (
        "\ufeff# url,threat\r\n"
        '"http://a.example/x,y",malware\r\n'
        "\r\n"
        "url,threat\r\n"
        '"url", "threat"\r\n'
        '"http://b.example/",phishing\r\n'
    )
    items = parse_bytes(tmp_path, body, indicator="url", context=(("threat", "threat"),))
    assert items == [
        Record(2, "http://a.example/x,y", (("threat", "malware"),)),
        Record(6, "http://b.example/", (("threat", "phishing"),)),
    ]


def test_bom_before_a_plain_list(tmp_path: Path) -> None:
    items = parse_bytes(tmp_path, b"\xef\xbb\xbf1.2.3.4\r\n5.6.7.8")
    assert items == [Record(1, "1.2.3.4"), Record(2, "5.6.7.8")]


def test_comments_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    body = "\n   # indented comment\n\t\n1.2.3.4\n  # later comment\n\n5.6.7.8\n# END 2 entries\n"
    assert parse_bytes(tmp_path, body) == [Record(4, "1.2.3.4"), Record(7, "5.6.7.8")]


def test_values_and_tags_are_stripped_not_normalized(tmp_path: Path) -> None:
    body = '# url,tags\n"  HTTP://WWW.A.example/ ", " x , Y,,None, n/a ,-"\n'
    assert parse_bytes(tmp_path, body, indicator="url", tags_field="tags") == [
        Record(2, "HTTP://WWW.A.example/", (), ("x", "Y"))
    ]


@pytest.mark.parametrize("marker", ["", "  ", "None", "none", "NULL", "null", "n/a", "N/A", "-"])
def test_absent_markers(tmp_path: Path, marker: str) -> None:
    body = f"# ip,port,malware\n1.2.3.4,{marker},Pikabot\n{marker},80,x\n"
    items = parse_bytes(
        tmp_path, body, indicator="ip", context=(("port", "port"), ("malware", "malware"))
    )
    assert items == [
        Record(2, "1.2.3.4", (("malware", "Pikabot"),)),
        Invalid(3, f"{marker},80,x", "empty"),
    ]


def test_absent_markers_are_exact(tmp_path: Path) -> None:
    items = parse_bytes(tmp_path, "# ip,note\n1.2.3.4,NA\n5.6.7.8,NONE\n", context=(("n", "note"),))
    assert [r.context for r in records(items)] == [(("n", "NA"),), (("n", "NONE"),)]


def test_short_row_is_missing_column(tmp_path: Path) -> None:
    body = "# a,b,c\n1,2,x.example\n1,2\n1,2,n/a\n1,2,y.example,extra\n"
    items = parse_bytes(tmp_path, body, indicator="c", context=(("b", "b"),))
    assert invalid(items) == [(3, "missing_column"), (4, "empty")]
    assert [(r.line, r.value) for r in records(items)] == [(2, "x.example"), (5, "y.example")]


def test_ragged_rows_under_a_wider_header(tmp_path: Path) -> None:
    items = parse_bytes(tmp_path, "# ip,a,b\n1.2.3.4,x\n", context=(("b", "b"), ("a", "a")))
    assert items == [Record(2, "1.2.3.4", (("a", "x"),))]
    items = parse_bytes(tmp_path, "# id,url,threat\n1\n", indicator="url")
    assert items == [Invalid(2, "1", "missing_column")]


def test_context_keeps_configured_order(tmp_path: Path) -> None:
    items = parse_bytes(tmp_path, "# ip,a,b\n1.2.3.4,x,y\n", context=(("B", "b"), ("A", "a")))
    assert items == [Record(2, "1.2.3.4", (("B", "y"), ("A", "x")))]


def test_column_names_match_exactly_then_case_insensitively(tmp_path: Path) -> None:
    body = "# Url,url,THREAT\nhttp://a.example/,http://b.example/,malware\n"
    assert records(parse_bytes(tmp_path, body, indicator="url"))[0].value == "http://b.example/"
    rows = records(parse_bytes(tmp_path, body, indicator="URL", context=(("t", "threat"),)))
    assert rows == [Record(2, "http://a.example/", (("t", "malware"),))]


def test_indexes_by_int_and_digit_string(tmp_path: Path) -> None:
    body = "1.2.3.4;SBL1;x\n"
    items = parse_bytes(tmp_path, body, delimiter=";", indicator=1, context=(("sbl", "2"),))
    assert items == [Record(1, "1.2.3.4", (("sbl", "SBL1"),))]
    assert records(parse_bytes(tmp_path, body, delimiter=";", indicator="3"))[0].value == "x"


def test_unbalanced_quote_stays_on_its_line(tmp_path: Path) -> None:
    body = 'a.example,"open quote\nb.example,"x, y",z\n'
    items = parse_bytes(tmp_path, body, context=(("c", "2"),))
    assert items == [
        Record(1, "a.example", (("c", "open quote"),)),
        Record(2, "b.example", (("c", "x, y"),)),
    ]


def test_lone_carriage_return_inside_a_line_is_malformed(tmp_path: Path) -> None:
    items = parse_bytes(tmp_path, b"a.example\nb.example\rc\nd.example\n")
    assert invalid(items) == [(2, "malformed")]
    assert [r.value for r in records(items)] == ["a.example", "d.example"]


def test_field_over_the_csv_limit_is_too_long(tmp_path: Path) -> None:
    body = "a.example\nb.example," + "x" * 200_000 + "\nc.example\n"
    items = parse_bytes(tmp_path, body)
    assert invalid(items) == [(2, "too_long")]
    assert [r.value for r in records(items)] == ["a.example", "c.example"]


# --- header detection -------------------------------------------------------------------


def test_commented_header_must_be_as_wide_as_the_first_row(tmp_path: Path) -> None:
    body = "# Terms of use, see the site\n1.2.3.4,x,y\n"
    with pytest.raises(ParseError, match="no header"):
        parse_bytes(tmp_path, body, indicator="Terms of use")


def test_last_comment_before_data_is_the_header_even_under_banner_rules(tmp_path: Path) -> None:
    body = "# ip,threat\n#\n##########\n1.2.3.4,x\n# note,later\n5.6.7.8,y\n"
    items = parse_bytes(tmp_path, body, indicator="ip", context=(("t", "threat"),))
    assert items == [Record(4, "1.2.3.4", (("t", "x"),)), Record(6, "5.6.7.8", (("t", "y"),))]


def test_commented_data_row_is_no_header(tmp_path: Path) -> None:
    body = "# 9.9.9.9,disabled\n1.2.3.4,x\n"
    with pytest.raises(ParseError, match="no header"):
        parse_bytes(tmp_path, body, indicator="ip")
    assert [r.value for r in records(parse_bytes(tmp_path, body))] == ["1.2.3.4"]


def test_uncommented_header_needs_indicators_below(tmp_path: Path) -> None:
    assert [r.value for r in records(parse_bytes(tmp_path, "alpha,beta\ngamma,delta\n"))] == [
        "alpha",
        "gamma",
    ]
    items = parse_bytes(tmp_path, '"sha1","name"\n' + "ab" * 20 + ",x\n", context=(("n", "name"),))
    assert items == [Record(2, "ab" * 20, (("n", "x"),))]


def test_lone_row_is_a_header_only_when_it_names_the_columns(tmp_path: Path) -> None:
    body = '# banner\n"first_seen_utc","dst_ip","dst_port"\n# END 0 entries\n'
    assert parse_bytes(tmp_path, body, indicator="dst_ip") == [], "an empty feed, not headerless"
    garbage = '{"error": {"code": 500, "detail": [1, 2, 3]}}\n'
    assert [r.value for r in records(parse_bytes(tmp_path, garbage))] == ['{"error": {"code": 500']


def test_forced_header_first_uncommented_row(tmp_path: Path) -> None:
    body = "# banner line\nvalue,kind\n1.2.3.4,ip\n"
    items = parse_bytes(tmp_path, body, header=True, indicator="value", context=(("k", "kind"),))
    assert items == [Record(3, "1.2.3.4", (("k", "ip"),))]


def test_forced_header_single_commented_column(tmp_path: Path) -> None:
    body = "# url\nhttp://a.example/\n"
    assert parse_bytes(tmp_path, body, header=True, indicator="url") == [
        Record(2, "http://a.example/")
    ]
    with pytest.raises(ParseError, match="no header"):
        parse_bytes(tmp_path, body, indicator="url")


def test_header_false_keeps_the_first_row(tmp_path: Path) -> None:
    body = '"first_seen_utc","dst_ip"\n"2024-01-01","1.2.3.4"\n'
    items = parse_bytes(tmp_path, body, header=False, indicator=2)
    assert [r.value for r in records(items)] == ["dst_ip", "1.2.3.4"]


def test_unknown_column_names_the_header_before_any_record() -> None:
    path = sample("urlhaus_csv_recent_excerpt_20260226.csv")
    with open_body(path, "urlhaus") as stream:
        items = parse_csv(stream, CsvOptions(indicator="urll"), "urlhaus")
        with pytest.raises(ParseError) as caught:
            next(items)
    assert str(caught.value) == (
        "feed urlhaus: indicator: column 'urll' not in header (id, dateadded, url, url_status,"
        " last_online, threat, tags, urlhaus_link, reporter) at line 9"
    )
    with pytest.raises(ParseError, match=r"context threat: column 'threats' not in header \(id, "):
        parse(path, indicator="url", context=(("threat", "threats"),))
    with pytest.raises(ParseError, match=r"tags_field: column 'tag' not in header \(id, "):
        parse(path, indicator="url", tags_field="tag")


def test_named_column_without_header(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match=r"column 'url' named, but the feed has no header"):
        parse_bytes(tmp_path, "a.example\n", indicator="url")
    with pytest.raises(ParseError, match="tags_field"):
        parse_bytes(tmp_path, "a.example\n", tags_field="tags")


def test_empty_and_comment_only_bodies(tmp_path: Path) -> None:
    assert parse_bytes(tmp_path, b"") == []
    assert parse_bytes(tmp_path, "# only\n# comments\n\n", indicator="url") == []


# --- whole-body problems and bad lines ---------------------------------------------------


def test_invalid_utf8_row_is_counted_and_parsing_goes_on(tmp_path: Path) -> None:
    items = parse_bytes(tmp_path, b"a.example\n\xff\xfe.example\nb.example\n")
    assert items == [
        Record(1, "a.example"),
        Invalid(2, "\ufffd\ufffd.example", "encoding"),
        Record(3, "b.example"),
    ]


def test_invalid_utf8_before_the_header_row(tmp_path: Path) -> None:
    body = b'\xe9t\xe9\n"name","ip"\n"x","1.2.3.4"\n'
    items = parse_bytes(tmp_path, body, indicator="ip")
    assert items == [Invalid(1, "\ufffdt\ufffd", "encoding"), Record(3, "1.2.3.4")]


def replacements(
    tmp_path: Path, body: bytes, **options: object
) -> tuple[list[Record | Invalid], list[tuple[int, tuple[str, ...]]]]:
    told: list[tuple[int, tuple[str, ...]]] = []
    with open_body(write(tmp_path, body), "feed") as stream:
        parsed = parse_csv(stream, CsvOptions(**options), "feed", lambda *r: told.append(r))  # type: ignore[arg-type]
        return list(parsed), told


LATIN1_ROWS = (
    b"# ip,city,tags\n1.2.3.4,Z\xfcrich,a\nb\xfccher.example,Bern,b\n5.6.7.8,Bern,t\xe9g\n"
)


def test_undecodable_context_keeps_the_indicator_and_is_told(tmp_path: Path) -> None:
    items, told = replacements(
        tmp_path, LATIN1_ROWS, indicator="ip", context=(("city", "city"),), tags_field="tags"
    )
    assert items == [
        Record(2, "1.2.3.4", (("city", "Z\ufffdrich"),), ("a",)),
        Invalid(3, "b\ufffdcher.example,Bern,b", "encoding"),  # the indicator itself
        Record(4, "5.6.7.8", (("city", "Bern"),), ("t\ufffdg",)),
    ]
    assert told == [(2, ("city",)), (4, ("tags",))]


def test_the_feeds_encoding_reads_every_field(tmp_path: Path) -> None:
    items, told = replacements(
        tmp_path,
        LATIN1_ROWS,
        indicator="ip",
        context=(("city", "city"),),
        tags_field="tags",
        encoding="iso8859-1",
    )
    assert [(r.line, r.value, r.context, r.tags) for r in records(items)] == [
        (2, "1.2.3.4", (("city", "Zürich"),), ("a",)),
        (3, "bücher.example", (("city", "Bern"),), ("b",)),
        (4, "5.6.7.8", (("city", "Bern"),), ("tég",)),
    ]
    assert told == []


def test_undecodable_bytes_in_an_unused_column_are_not_told(tmp_path: Path) -> None:
    items, told = replacements(tmp_path, b"# ip,note\n1.2.3.4,caf\xe9\n", indicator="ip")
    assert items == [Record(2, "1.2.3.4")]
    assert told == []


def test_rows_with_undecodable_bytes_still_let_the_header_be_found(tmp_path: Path) -> None:
    # Every row of this head has a Latin-1 byte: the first one is the first data row
    # and the commented header above it names the columns.
    body = b"# ip,city\n" + b"".join(b"10.0.0.%d,K\xf6ln\n" % n for n in range(1, 1100))
    items, told = replacements(tmp_path, body, indicator="ip", context=(("city", "city"),))
    assert len(records(items)) == 1099
    assert records(items)[0] == Record(2, "10.0.0.1", (("city", "K\ufffdln"),))
    assert [line for line, _ in told] == list(range(2, 1101))
    # An uncommented header row after such rows is still a header.
    items, told = replacements(tmp_path, b"caf\xe9\nname,ip\nx,1.2.3.4\n", indicator="ip")
    assert items == [Invalid(1, "caf\ufffd", "encoding"), Record(3, "1.2.3.4")]


# --- footers: a body cut at a line boundary ---------------------------------------------


def footer(path: Path, text: str, *, count: bool = True, **options: object) -> None:
    raw = path.read_bytes()
    check_footer(path, raw[-4096:], CsvOptions(**options), "feed", footer=text, count=count)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "feodo_ipblocklist_20240404.csv",  # an uncommented header row, which is no entry
        "sslbl_sslblacklist_v1.csv",
        "urlhaus_csv_recent_excerpt_20260226.csv",
        "threatfox_full_csv_excerpt_20240716.csv",
        "malwarebazaar_full_dump_excerpt_20260226.csv",
        "spamhaus_drop_20230220_head.txt",
        "openphish_public_feed_head.txt",
    ],
)
def test_data_rows_counts_what_a_full_parse_reads(name: str) -> None:
    path = sample(name)
    assert data_rows(path, CsvOptions(), "feed") == len(parse(path))
    assert data_rows(path, CsvOptions(comment=";"), "feed") == len(parse(path, comment=";"))


def test_abusech_footers_of_the_real_samples() -> None:
    feodo = sample("feodo_ipblocklist_20240404.csv")
    assert data_rows(feodo, CsvOptions(), "feed") == 28
    footer(feodo, "# END")  # "# END 28 entries", and it holds 28
    sslbl = sample("sslbl_sslblacklist_v1.csv")
    # Upstream removed rows from this copy and kept its footer: the count shows it.
    with pytest.raises(
        FetchError, match=r"'# END \(295\) entries' declares 295 entries, the body holds 285 rows"
    ):
        footer(sslbl, "# END")
    footer(sslbl, "# END", count=False)
    threatfox = sample("threatfox_full_csv_excerpt_20240716.csv")  # an excerpt of 1 row
    with pytest.raises(FetchError, match="declares 1217668 entries, the body holds 1 rows"):
        footer(threatfox, "# Number of entries:")
    footer(threatfox, "# Number of entries:", count=False)


def test_a_body_cut_before_its_footer_fails(tmp_path: Path) -> None:
    whole = sample("feodo_ipblocklist_20240404.csv").read_bytes()
    cut = write(tmp_path, whole[: whole.rindex(b"\n# END") + 1])  # every line whole
    with pytest.raises(FetchError, match="feed feed: body does not end with its footer '# END'"):
        footer(cut, "# END")
    with pytest.raises(FetchError, match="its last line is 'first_seen_utc'"):
        footer(write(tmp_path, b"# banner\nfirst_seen_utc\n"), "# END")
    with pytest.raises(FetchError, match="its last line is blank"):
        check_footer(cut, b"\n \n", CsvOptions(), "feed", footer="# END", count=True)
    footer(write(tmp_path, "a.example\n# END\n\n"), "# END")  # no count to check
    footer(write(tmp_path, "; DROP\n1.2.3.0/24 ; SBL1\n; END 1\n"), "; END", comment=";")


def test_nul_byte_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="line 2: NUL"):
        parse_bytes(tmp_path, b"a.example\nb\x00.example\n")


@pytest.mark.parametrize(
    "body",
    [
        "\n<!DOCTYPE html>\n<html><body>Maintenance</body></html>\n",
        "  <HTML>\n<head><title>502 Bad Gateway</title></head>\n",
        "<head>\n",
        "<body>x</body>\n",
        '<?xml version="1.0"?>\n<error/>\n',
        "# a comment first\n\n<html>\n",
    ],
)
def test_html_page_is_a_parse_error(tmp_path: Path, body: str) -> None:
    with pytest.raises(ParseError, match=r"line [0-9]+: the body is an HTML page"):
        parse_bytes(tmp_path, body)


def test_html_later_in_a_feed_is_just_a_row(tmp_path: Path) -> None:
    assert [i.value for i in parse_bytes(tmp_path, "a.example\n<html>\n")] == [
        "a.example",
        "<html>",
    ]


def test_overlong_line_is_skipped_and_counted(tmp_path: Path) -> None:
    body = b"a.example\n" + b"x" * (2 << 20) + b"\nb.example\n" + b"y" * (3 << 20)
    items = parse_bytes(tmp_path, body)
    assert [(i.line, i.value) for i in records(items)] == [(1, "a.example"), (3, "b.example")]
    assert invalid(items) == [(2, "too_long"), (4, "too_long")]
    assert all(len(i.value) == 200 for i in items if isinstance(i, Invalid))


def test_line_of_exactly_one_mib_is_not_skipped_as_too_long(tmp_path: Path) -> None:
    value = "h" * ((1 << 20) - 1)
    items = parse_bytes(tmp_path, "\n".join(["", value, "a.example", ""]))
    assert invalid(items) == [(2, "too_long")], "over the csv field limit, not over MAX_LINE"
    assert records(items) == [Record(3, "a.example")]


# --- bounded memory -------------------------------------------------------------------------


def peak_while_parsing(path: Path, options: CsvOptions) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = 0
        with open_body(path, "feed") as stream:
            for _item in parse_csv(stream, options, "feed"):
                count += 1
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_parsing_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as out:
        out.write("# id,url,threat,tags\n")
        for i in range(200_000):
            out.write(f'"{i}","http://host{i}.example/path/{i}","malware_download","a,b"\n')
    assert path.stat().st_size > 12_000_000
    options = CsvOptions(indicator="url", context=(("threat", "threat"),), tags_field="tags")
    count, peak = peak_while_parsing(path, options)
    assert count == 200_000
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes: the parser holds rows"


def test_a_body_of_bad_lines_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xff bad line that is not utf-8 at all\n" * 100_000)
    count, peak = peak_while_parsing(path, CsvOptions())
    assert count == 100_000
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes: invalid lines are held"


def test_an_overlong_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = write(tmp_path, b"a.example\n" + b"x" * (24 << 20) + b"\nb.example\n")
    count, peak = peak_while_parsing(path, CsvOptions())
    assert count == 3
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes: the long line is held"


def test_many_bad_lines_between_the_first_rows_keep_their_order(tmp_path: Path) -> None:
    body = b"1.2.3.4\n" + b"\xff\n" * 1500 + b"5.6.7.8\n"
    items = parse_bytes(tmp_path, body)
    assert items[0] == Record(1, "1.2.3.4")
    assert invalid(items) == [(line, "encoding") for line in range(2, 1502)]
    assert items[-1] == Record(1502, "5.6.7.8")


def test_column_index_from_one(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="numbered from 1"):
        parse_bytes(tmp_path, "a.example\n", indicator=0)


def test_long_header_is_shortened_in_the_message(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(40)]
    body = "# " + ",".join(names) + "\n" + ",".join(["1.2.3.4"] * 40) + "\n"
    with pytest.raises(ParseError, match=r"\(c0, c1, .*, c29, \.\.\.\) at line 1"):
        parse_bytes(tmp_path, body, indicator="nope")
