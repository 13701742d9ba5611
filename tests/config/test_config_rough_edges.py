"""Configuration mistakes a person makes while typing it (issue 15 item 11): each is
refused with the key path and what to write instead, not taken as something else."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from feedsync.config import CsvConfig, load, parse
from feedsync.errors import ConfigError
from feedsync.model import Record
from feedsync.sources.csvfeed import CsvOptions, parse_csv

ENV = {"CT_PASSWORD": "pw"}


def make(feed: str = "", *, cybertrace: str = "", more: str = "") -> str:
    return (
        "cybertrace:\n"
        "  url: https://ct.example:443\n"
        "  username: feedsync\n"
        "  password: ${CT_PASSWORD}\n" + textwrap.indent(cybertrace, "  ") + "feeds:\n"
        "  - name: urlhaus\n"
        "    type: csv\n"
        "    url: https://urlhaus.abuse.ch/downloads/csv_recent/\n"
        "    supplier: URLhaus\n" + textwrap.indent(feed, "    ") + more
    )


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, env=ENV)
    return info.value


# Schedules


@pytest.mark.parametrize("value", ["5", "90", "'5'", "1.5"])
def test_a_schedule_without_a_unit_is_refused(value: str) -> None:
    error = refused(make(f"schedule: {value}\n"))
    assert error.path == "feeds[0].schedule"
    assert "has no unit" in error.message
    assert "s, " in error.message  # names the units to choose from


@pytest.mark.parametrize("value", ["1s", "29s", "29.5s"])
def test_a_schedule_under_30_seconds_needs_the_override(value: str) -> None:
    error = refused(make(f"schedule: {value}\n"))
    assert error.path == "feeds[0].schedule"
    assert "schedule_min_override: true" in error.message
    feed = parse(make(f"schedule: {value}\nschedule_min_override: true\n"), env=ENV).feeds[0]
    assert feed.schedule.seconds is not None and feed.schedule.seconds < 30
    assert feed.schedule_min_override


def test_30_seconds_and_cron_lines_need_no_override() -> None:
    assert parse(make("schedule: 30s\n"), env=ENV).feeds[0].schedule.seconds == 30.0
    assert parse(make("schedule: '* * * * *'\n"), env=ENV).feeds[0].schedule.cron == "* * * * *"


def test_the_override_still_keeps_the_floor_of_one_second() -> None:
    error = refused(make("schedule: 0.5s\nschedule_min_override: true\n"))
    assert error.path == "feeds[0].schedule" and "out of range" in error.message


# api_version


@pytest.mark.parametrize("value", ["1.10", "1.2", "1"])
def test_an_unquoted_api_version_is_refused_with_a_hint_to_quote(value: str) -> None:
    error = refused(make(cybertrace=f"api_version: {value}\n"))
    assert error.path == "cybertrace.api_version"
    assert "quote" in error.message and "1.10 becomes 1.1" in error.message


def test_a_quoted_api_version_is_taken() -> None:
    assert parse(make(cybertrace="api_version: '1.3'\n"), env=ENV).cybertrace.api_version == "1.3"


# Column indices


def test_context_takes_1_based_indices_as_indicator_does(tmp_path: Path) -> None:
    body = tmp_path / "drop.txt"
    body.write_text("1.2.3.0/24 ; SBL1\n5.6.7.0/24 ; SBL2\n")
    text = make(f"url: {body}\nindicator: 1\ndelimiter: ';'\ncontext: {{sbl: 2}}\n")
    feed = parse(text.replace("    url: https://urlhaus.abuse.ch/downloads/csv_recent/\n", ""),
                 env=ENV).feeds[0].options_as(CsvConfig)
    assert feed.context == (("sbl", 2),)
    options = CsvOptions(indicator=feed.indicator, context=feed.context, delimiter=";")
    with body.open("rb") as stream:
        records = [r for r in parse_csv(stream, options, "drop") if isinstance(r, Record)]
    assert [(r.value, dict(r.context)) for r in records] == [
        ("1.2.3.0/24", {"sbl": "SBL1"}),
        ("5.6.7.0/24", {"sbl": "SBL2"}),
    ]


def test_tags_field_takes_a_1_based_index_too(tmp_path: Path) -> None:
    # ThreatFox's full dump: no header row, fields separated by ", ".
    body = tmp_path / "full.csv"
    body.write_text('# banner\n"2024-07-16", "1", "8.223.20.63:443", "ip:port", "CobaltStrike"\n')
    text = make(f"url: {body}\nheader: false\nindicator: 3\ntags_field: 5\n")
    feed = parse(text.replace("    url: https://urlhaus.abuse.ch/downloads/csv_recent/\n", ""),
                 env=ENV).feeds[0].options_as(CsvConfig)
    assert feed.tags_field == 5
    options = CsvOptions(indicator=3, tags_field=5, header=False)
    with body.open("rb") as stream:
        records = [r for r in parse_csv(stream, options, "tf") if isinstance(r, Record)]
    assert [(r.value, r.tags) for r in records] == [("8.223.20.63:443", ("CobaltStrike",))]


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("context", "{port: 0}", "numbered from 1"),
        ("context", "{port: true}", "got True"),
        ("context", "{port: [1]}", "expected a column name"),
        ("tags_field", "0", "numbered from 1"),
        ("tags_field", "1.5", "got 1.5"),
    ],
)
def test_bad_columns_are_refused(key: str, value: str, fragment: str) -> None:
    error = refused(make(f"{key}: {value}\n"))
    assert error.path.startswith(f"feeds[0].{key}")
    assert fragment in error.message


def test_context_is_refused_where_nothing_would_read_it() -> None:
    text = make(more="  - {name: m, type: misp, url: https://misp.example, supplier: M,"
                " api_key: k, context: {a: b}}\n")
    error = refused(text)
    assert error.path == "feeds[1].context" and "only for csv feeds" in error.message


# Suppliers


@pytest.mark.parametrize("typo", ["URLhuas", "urlhaus", "URLHaus_"])
def test_a_supplier_typo_is_blamed_on_the_feed_with_a_suggestion(typo: str) -> None:
    text = make(more="suppliers: {}\n").replace("supplier: URLhaus", f"supplier: {typo}")
    text = text.replace("suppliers: {}", "suppliers:\n  URLhaus: {confidence: 80}")
    error = refused(text)
    assert error.path == "feeds[0].supplier"
    assert 'did you mean "URLhaus"?' in error.message


def test_an_unused_supplier_far_from_every_feed_is_still_named_itself() -> None:
    error = refused(make(more="suppliers:\n  Spamhaus: {confidence: 80}\n"))
    assert error.path == "suppliers.Spamhaus" and "no feed uses" in error.message


# YAML


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("schedule: */5 * * * *\n", "quote a value that starts with * or &"),
        ("schedule: * * * * *\n", "cron line"),
        ("  tags: [a]\n", "indentation"),
    ],
)
def test_yaml_errors_carry_the_place_and_a_one_line_hint(
    tmp_path: Path, line: str, fragment: str
) -> None:
    path = tmp_path / "feedsync.yaml"
    path.write_text(make(line))
    with pytest.raises(ConfigError) as info:
        load(path, env=ENV)
    message = str(info.value)
    assert message.startswith(f"{path}:10:"), message
    assert "; hint: " in message and fragment in message
    assert "\n" not in message


# Tags


@pytest.mark.parametrize("tag", ["ÄÖ", "!!!", "  "])
def test_a_tag_that_canonicalizes_to_nothing_is_refused(tag: str) -> None:
    error = refused(make(f"tags: [ok, '{tag}']\n"))
    assert error.path == "feeds[0].tags[1]"
    assert "maps to no CyberTrace tag" in error.message


def test_tags_with_some_allowed_characters_are_kept() -> None:
    assert parse(make("tags: ['tlp:white', 'Ä1']\n"), env=ENV).feeds[0].tags == ("tlp:white", "Ä1")
