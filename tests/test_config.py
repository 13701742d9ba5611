"""Configuration: every error names its key path; secrets never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedsync.config import Secret, load, parse
from feedsync.errors import ConfigError
from feedsync.schedule import parse_duration, parse_schedule

BASE = """\
cybertrace:
  url: https://ct.example:443/
  username: feedsync
  password: ${CT_PASSWORD}
suppliers:
  URLhaus: {confidence: 80, retention: 0, vendor: abuse.ch}
feeds:
  - name: urlhaus
    type: csv
    url: https://urlhaus.abuse.ch/downloads/csv_recent/
    supplier: URLhaus
"""
ENV = {"CT_PASSWORD": "hunter2-secret"}


def error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env=ENV if env is None else env)
    return str(info.value)


def test_full_example_loads(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "example.yaml"
    loaded = load(example, env={"CYBERTRACE_PASSWORD": "pw", "ABUSECH_AUTH_KEY": "key"})
    assert loaded.cybertrace.password.reveal() == "pw"
    assert loaded.cybertrace.retry.attempts == 5
    assert [f.name for f in loaded.feeds] == ["urlhaus", "feodo", "et-compromised"]
    urlhaus = loaded.feed("urlhaus")
    assert urlhaus.schedule.seconds == 900
    assert urlhaus.context[0] == ("threat", "threat")
    assert dict(urlhaus.headers)["Auth-Key"].reveal() == "key"
    assert loaded.feed("feodo").schedule.cron == "7 * * * *"
    assert loaded.server.host == "127.0.0.1" and loaded.server.port == 9464


def test_defaults_and_normalized_values() -> None:
    loaded = parse(BASE, env=ENV)
    ct = loaded.cybertrace
    assert ct.url == "https://ct.example:443"
    assert (ct.api_version, ct.concurrency, ct.max_batch_bytes, ct.verify_tls) == (
        "1.2",
        2,
        16777216,
        True,
    )
    feed = loaded.feeds[0]
    assert (feed.max_delete_ratio, feed.comment, feed.schedule.seconds) == (0.5, "#", 3600)
    assert loaded.feeds_of("URLhaus") == loaded.feeds


def test_secrets_never_show() -> None:
    loaded = parse(BASE, env=ENV)
    assert "hunter2" not in repr(loaded)
    assert str(Secret("x")) == "***"
    assert "hunter2" not in error(BASE + "    bogus: 1\n")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            ("  username: feedsync\n", "  username: feedsync\n  colour: red\n"),
            "cybertrace.colour: unknown key",
        ),
        (
            ("    supplier: URLhaus\n", "    supplier: URLhaus\n    contxt: {}\n"),
            "feeds[0].contxt: unknown key",
        ),
        (
            ("    supplier: URLhaus\n", "    supplier: URLhaus\n    schedule: 15x\n"),
            "feeds[0].schedule: '15x' is not a duration",
        ),
        (
            ("    supplier: URLhaus\n", "    supplier: URLhaus\n    schedule: '61 * * * *'\n"),
            "feeds[0].schedule: '61 * * * *' is not a valid cron line",
        ),
        (
            ("    supplier: URLhaus\n", "    supplier: URLhaus\n    max_delete_ratio: 1.5\n"),
            "feeds[0].max_delete_ratio",
        ),
        (
            ("    supplier: URLhaus\n", "    supplier: URLhaus\n    indicator: 0\n"),
            "feeds[0].indicator",
        ),
        (("    type: csv\n", "    type: rss\n"), "feeds[0].type: 'rss' is not one of"),
        (("    url: https://", "    url: ftp://"), "feeds[0].url"),
        (
            ("  username: feedsync\n", "  username: feedsync\n  concurrency: two\n"),
            "cybertrace.concurrency: expected an integer",
        ),
        (
            ("  username: feedsync\n", "  username: feedsync\n  concurrency: 99\n"),
            "cybertrace.concurrency: 99 is out of range",
        ),
        (
            ("  username: feedsync\n", "  username: feedsync\n  api_version: '2.0'\n"),
            "cybertrace.api_version",
        ),
        (
            ("  username: feedsync\n", "  username: feedsync\n  tenant: acme\n"),
            "cybertrace.tenant: needs api_version 1.3",
        ),
        (
            ("  username: feedsync\n", "  username: feedsync\n  verify_tls: /no/such/ca.pem\n"),
            "cybertrace.verify_tls",
        ),
        (("confidence: 80", "confidence: 180"), "suppliers.URLhaus.confidence"),
        (
            ("suppliers:\n", "suppliers:\n  Unused: {confidence: 1}\n"),
            "suppliers.Unused: no feed uses this supplier",
        ),
        (
            ("suppliers:\n", "suppliers:\n  FalsePositive: {confidence: 1}\n"),
            "suppliers.FalsePositive",
        ),
        (("    supplier: URLhaus\n", "    supplier: URL haus\n"), "feeds[0].supplier"),
        (("  - name: urlhaus\n", "  - name: 'url haus'\n"), "feeds[0].name"),
    ],
)
def test_errors_name_the_key_path(change: tuple[str, str], path: str) -> None:
    assert path in error(BASE.replace(*change, 1))


def test_duplicate_feed_names() -> None:
    feed = BASE[BASE.index("  - name") :]
    assert "feeds[1].name: duplicate feed name 'urlhaus' (also feeds[0])" in error(BASE + feed)


def test_duplicate_yaml_keys_and_syntax_errors() -> None:
    assert "given twice" in error(
        BASE.replace("  username: feedsync\n", "  username: a\n  username: b\n")
    )
    message = error("cybertrace: [unclosed\n")
    assert "<string>:" in message


def test_not_a_mapping_and_missing_sections() -> None:
    assert "expected a mapping" in error("- 1\n")
    assert "feeds: required" in error(BASE[: BASE.index("suppliers")])
    assert "cybertrace: required" in error("feeds: []\n")


def test_environment_variables() -> None:
    assert "cybertrace.password: environment variable CT_PASSWORD is not set" in error(BASE, env={})
    text = BASE.replace("${CT_PASSWORD}", "${NOPE:-fallback}").replace(
        "feedsync\n", "fee$$sync\n", 1
    )
    loaded = parse(text, env={})
    assert loaded.cybertrace.password.reveal() == "fallback"
    assert loaded.cybertrace.username == "fee$sync"


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    text = BASE.replace("password: ${CT_PASSWORD}", "password_file: pw")
    loaded = parse(text, env={}, base_dir=str(tmp_path))
    assert loaded.cybertrace.password.reveal() == "from-file"
    assert "cybertrace.password_file: cannot read" in error(text.replace("pw", "missing"), env={})
    both = BASE.replace("password: ${CT_PASSWORD}", "password: x\n  password_file: pw")
    assert "either password or password_file" in error(both)


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "feedsync.yaml"
    path.write_text(
        BASE.replace("https://urlhaus.abuse.ch/downloads/csv_recent/", "feeds/u.csv")
        + "state:\n  path: state/s.db\n"
    )
    loaded = load(path, env=ENV)
    assert loaded.feeds[0].url == str(tmp_path / "feeds" / "u.csv")
    assert loaded.state.path == str(tmp_path / "state" / "s.db")


def test_per_type_keys() -> None:
    misp = BASE.replace("type: csv", "type: misp").replace(
        "    supplier: URLhaus\n", "    supplier: URLhaus\n    api_key: k\n    indicator: url\n"
    )
    assert "feeds[0].indicator: unknown key" in error(misp)
    taxii = BASE.replace("type: csv", "type: taxii")
    assert "feeds[0].collection: required" in error(taxii)
    assert "feeds[0].api_key: required" in error(BASE.replace("type: csv", "type: misp"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("90", 90), (45, 45)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-5m", "15x", "m", "1 hour"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_cron_lines() -> None:
    assert parse_schedule("*/5 * * * 1-5").cron == "*/5 * * * 1-5"
    with pytest.raises(ValueError, match="cron"):
        parse_schedule("* * * * 8")


def test_load_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")
