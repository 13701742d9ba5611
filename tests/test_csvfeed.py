"""CSV parsing against the real samples and the quirks of real feeds."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from samples import sample

from feedsync.csvfeed import CsvOptions, open_body, parse_csv
from feedsync.errors import ParseError
from feedsync.model import Invalid, Record


def parse(path: Path, **options: object) -> list[Record | Invalid]:
    with open_body(path, "feed") as stream:
        return list(parse_csv(stream, CsvOptions(**options), "feed"))  # type: ignore[arg-type]


def records(items: list[Record | Invalid]) -> list[Record]:
    return [i for i in items if isinstance(i, Record)]


def write(tmp_path: Path, data: bytes | str, name: str = "body") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_urlhaus_commented_header_context_and_tags() -> None:
    items = parse(
        sample("csv/urlhaus_csv_recent_excerpt_20260226.csv"),
        indicator="url",
        context=(("threat", "threat"), ("status", "url_status")),
        tags_field="tags",
    )
    rows = records(items)
    assert len(rows) == len(items) == 10
    assert rows[0] == Record(
        line=10,
        value="http://182.126.120.150:58801/i",
        context=(("threat", "malware_download"), ("status", "online")),
        tags=("32-bit", "elf", "mips", "Mozi"),
    )
    assert rows[8].tags == (), "the literal None tag is absent"


def test_feodo_uncommented_quoted_header_and_footer() -> None:
    rows = records(
        parse(
            sample("csv/feodo_ipblocklist_20240404.csv"),
            indicator="dst_ip",
            context=(("port", "dst_port"), ("malware", "malware")),
        )
    )
    assert len(rows) == 28
    assert rows[0].value == "192.9.135.73"
    assert rows[0].context == (("port", "1194"), ("malware", "Pikabot"))


def test_threatfox_comma_space_separators_without_header() -> None:
    rows = records(
        parse(
            sample("csv/threatfox_full_csv_excerpt_20240716.csv"),
            header=False,
            indicator=3,
            tags_field="7",
        )
    )
    assert [r.value for r in rows] == ["8.223.20.63:443"]
    assert rows[0].tags == ("Agentemis", "BEACON", "CobaltStrike", "cobeacon")


def test_malwarebazaar_quoted_commented_header_and_absent_values() -> None:
    rows = records(
        parse(
            sample("csv/malwarebazaar_full_dump_excerpt_20260226.csv"),
            indicator="sha256_hash",
            context=(("signature", "signature"), ("reporter", "reporter")),
        )
    )
    assert len(rows) == 39
    assert rows[0].context == (("reporter", "abuse_ch"),), "n/a signature is absent"
    assert rows[-1].value == "2d316e4f0fa9c7f07e092f378fe287dff6e3fa017ac84ae93ccbbe0c5b95b778"
    assert rows[-1].context == (), "None reporter is absent"


def test_sslbl_header_and_counts() -> None:
    rows = records(
        parse(
            sample("csv/sslbl_sslblacklist_v1.csv"),
            indicator="SHA1",
            context=(("reason", "Listingreason"),),
        )
    )
    assert len(rows) == 285
    assert rows[0].context == (("reason", "AsyncRAT C&C"),)


def test_spamhaus_semicolon_comments_and_delimiter() -> None:
    rows = records(
        parse(
            sample("csv/spamhaus_drop_20230220_head.txt"),
            comment=";",
            delimiter=";",
            context=(("sbl", "2"),),
        )
    )
    assert len(rows) == 36
    assert rows[0] == Record(line=5, value="1.10.16.0/20", context=(("sbl", "SBL256894"),))


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("openphish_public_feed_head.txt", 30),
        ("et_compromised-ips_mirror_head.txt", 20),
        ("ipsum_level8_excerpt.txt", 20),
    ],
)
def test_plain_lists(name: str, count: int) -> None:
    rows = records(parse(sample(f"csv/{name}")))
    assert len(rows) == count
    assert all(r.line == i + 1 for i, r in enumerate(rows))


def test_gzip_and_zip_bodies(tmp_path: Path) -> None:
    text = sample("csv/feodo_ipblocklist_20240404.csv").read_bytes()
    gz = write(tmp_path, gzip.compress(text), "feed.gz")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "x")
        archive.writestr("ipblocklist.csv", text)
    zipped = write(tmp_path, buffer.getvalue(), "feed.zip")
    plain = records(parse(write(tmp_path, text, "plain"), indicator="dst_ip"))
    assert records(parse(gz, indicator="dst_ip")) == plain
    assert records(parse(zipped, indicator="dst_ip")) == plain


def test_truncated_gzip_is_a_parse_error(tmp_path: Path) -> None:
    data = gzip.compress(("1.2.3.4\n" * 5000).encode())
    with pytest.raises(ParseError, match="truncated gzip"):
        parse(write(tmp_path, data[: len(data) // 2]))


def test_corrupt_zip_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="zip"):
        parse(write(tmp_path, b"PK\x03\x04" + b"\x00garbage" * 10))


def test_bom_crlf_quoted_commas_and_repeated_header(tmp_path: Path) -> None:
    body = (
        "\ufeff# url,threat\r\n"
        '"http://a.example/x,y",malware\r\n'
        "url,threat\r\n"
        '"http://b.example/",phishing\r\n'
    )
    rows = records(
        parse(write(tmp_path, body.encode()), indicator="url", context=(("threat", "threat"),))
    )
    assert [(r.line, r.value, r.context) for r in rows] == [
        (2, "http://a.example/x,y", (("threat", "malware"),)),
        (4, "http://b.example/", (("threat", "phishing"),)),
    ]


def test_invalid_utf8_row_is_skipped_and_counted(tmp_path: Path) -> None:
    items = parse(write(tmp_path, b"a.example\n\xff\xfe.example\nb.example\n"))
    assert [i.value for i in records(items)] == ["a.example", "b.example"]
    assert [(i.line, i.reason) for i in items if isinstance(i, Invalid)] == [(2, "encoding")]


def test_short_row_and_empty_indicator(tmp_path: Path) -> None:
    body = "# a,b,c\n1,2,x.example\n1,2\n1,2,n/a\n"
    items = parse(write(tmp_path, body), indicator="c")
    assert [(i.line, i.reason) for i in items if isinstance(i, Invalid)] == [
        (3, "missing_column"),
        (4, "empty"),
    ]


def test_nul_byte_and_html_are_parse_errors(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="line 2: NUL"):
        parse(write(tmp_path, b"a.example\nb\x00.example\n"))
    with pytest.raises(ParseError, match="HTML"):
        parse(write(tmp_path, "\n<!DOCTYPE html>\n<html><body>Maintenance</body></html>\n"))


def test_overlong_line_is_skipped(tmp_path: Path) -> None:
    body = b"a.example\n" + b"x" * (2 << 20) + b"\nb.example\n"
    items = parse(write(tmp_path, body))
    assert [i.value for i in records(items)] == ["a.example", "b.example"]
    assert [(i.line, i.reason) for i in items if isinstance(i, Invalid)] == [(2, "too_long")]


def test_unknown_column_names_the_header(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match=r"column 'urll' not in header \(url, threat\)"):
        parse(write(tmp_path, "# url,threat\nhttp://a.example/,x\n"), indicator="urll")
    with pytest.raises(ParseError, match="no header"):
        parse(write(tmp_path, "a.example\n"), indicator="url")


def test_parsing_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as out:
        out.write("# id,url,threat\n")
        for i in range(200_000):
            out.write(f'"{i}","http://host{i}.example/path/{i}","malware_download"\n')
    tracemalloc.start()
    count = 0
    with open_body(path, "feed") as stream:
        for _item in parse_csv(stream, CsvOptions(indicator="url"), "feed"):
            count += 1
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 200_000
    assert peak < 5 * 1024 * 1024, f"peak {peak} bytes: the parser holds rows"
