"""Hostile configurations (issue 13 items 12-16): alias bombs, values that would
crash the scheduler, secret files that are not files, feed names that are not
path components, and TLS settings `check` must load."""

from __future__ import annotations

import os
import resource
import ssl
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import TEST_CA_PEM, free_port, run_cli
from structlog.testing import capture_logs

from feedsync import timing
from feedsync.config import MispConfig, parse
from feedsync.errors import ConfigError, FetchError
from feedsync.model import Validators
from feedsync.sources import source_for

PASSWORD = "hunter2-Secret"
ENV = {"CT_PASSWORD": PASSWORD}


def make(cybertrace: str = "", feed: str = "", *, more: str = "") -> str:
    return (
        "cybertrace:\n"
        "  url: https://ct.example:443/\n"
        "  username: feedsync\n"
        "  password: ${CT_PASSWORD}\n" + textwrap.indent(cybertrace, "  ") + "feeds:\n"
        "  - name: urlhaus\n"
        "    type: csv\n"
        "    url: https://urlhaus.abuse.ch/downloads/csv_recent/\n"
        "    supplier: URLhaus\n" + textwrap.indent(feed, "    ") + more
    )


def refused(text: str, base_dir: str | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env=ENV if env is None else env, base_dir=base_dir)
    return str(info.value)


# 13: aliases

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _limit_memory() -> None:
    # Without the refusal this config expands to ~10 GB: fail in the child, not the host.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_a_billion_laughs_config_is_refused_at_its_first_anchor_quickly(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(make() + BOMB)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "feedsync.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
        env={**os.environ, **ENV},
        check=False,
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 2, done.stderr
    line = make().count("\n") + 1
    assert f"bomb.yaml:{line}:4: anchors and aliases" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("cybertrace: &ct\n  url: https://x\n", "1:13"),
        (make(feed="tags: &t [a]\n"), "10:11"),
        (make(more="  - *first\n").replace("  - name:", "  - &first\n    name:"), "6:5"),
        (make(feed="context: {<<: *base}\n"), "10:19"),
    ],
)
def test_any_anchor_or_alias_is_refused_naming_its_line(text: str, where: str) -> None:
    message = refused(text)
    assert message.startswith(f"<string>:{where}: anchors and aliases"), message


def test_strings_with_ampersand_or_star_still_load_when_quoted() -> None:
    loaded = parse(make(feed='tags: ["&amp", "*star"]\nschedule: "*/5 * * * *"\n'), env=ENV)
    assert loaded.feeds[0].tags == ("&amp", "*star")
    assert loaded.feeds[0].schedule.cron == "*/5 * * * *"


# 14: numbers and durations within what the scheduler, asyncio and CyberTrace take


@pytest.mark.parametrize(
    ("feed", "key", "fragment"),
    [
        ("schedule: 1.0e+300\n", "feeds[0].schedule", "1e+300 has no unit"),
        ("schedule: 99999999999999d\n", "feeds[0].schedule", '"99999999999999d" is out of range'),
        ("schedule: 367d\n", "feeds[0].schedule", '"367d" is out of range; allowed: [1s, 366d]'),
        ("schedule: 0.5\n", "feeds[0].schedule", "0.5 has no unit"),
        (
            "schedule: 0.5s\nschedule_min_override: true\n",
            "feeds[0].schedule",
            '"0.5s" is out of range; allowed: [1s, 366d]',
        ),
        ("schedule: '0 0 30 2 *'\n", "feeds[0].schedule", '"0 0 30 2 *" never fires'),
        ("schedule: '0 0 31 4,6,9,11 *'\n", "feeds[0].schedule", "never fires"),
        ("schedule: '0 0 30 2 mon'\n", "feeds[0].schedule", "never fires"),
        ("timeout: 1.0e+300\n", "feeds[0].timeout", "out of range; allowed: (0, 86400]"),
        ("timeout: 86401\n", "feeds[0].timeout", "out of range; allowed: (0, 86400]"),
        ("max_body_bytes: 1099511627777\n", "feeds[0].max_body_bytes", "[1, 1099511627776]"),
    ],
)
def test_feed_values_past_their_range_are_refused_naming_key_and_range(
    feed: str, key: str, fragment: str
) -> None:
    message = refused(make(feed=feed))
    assert message.startswith(f"{key}: "), message
    assert fragment in message, message


MISP = "  - {name: m, type: misp, url: 'https://misp.example', supplier: M, api_key: k, %s}\n"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (make(more=MISP % "full_pull: 99999999999999d"), "feeds[1].full_pull", "(0, 366d]"),
        (make(more=MISP % "full_pull: 1.0e+300"), "feeds[1].full_pull", "(0, 366d]"),
        (make("timeout: 1.0e+300\n"), "cybertrace.timeout", "(0, 86400]"),
        (make("retry: {attempts: 1025}\n"), "cybertrace.retry.attempts", "[1, 100]"),
        (
            make("retry: {initial_delay: 1.0e+300}\n"),
            "cybertrace.retry.initial_delay",
            "1e+300 is out of range; allowed: (0, 3600]",
        ),
        (make("retry: {max_delay: 1.0e+300}\n"), "cybertrace.retry.max_delay", "[1, 86400]"),
        (make("retry: {initializing: 9999d}\n"), "cybertrace.retry.initializing", "(0, 1d]"),
        (make("max_batch_indicators: 1.0e+23\n"), "cybertrace.max_batch_indicators", "integer"),
        (make(more="server: {shutdown_grace: 1.0e+300}\n"), "server.shutdown_grace", "[0, 86400]"),
        (
            make(more="suppliers: {URLhaus: {confidence: 1, retention: 1.0e+23}}\n"),
            "suppliers.URLhaus.retention",
            "expected an integer, got 1e+23",
        ),
        (
            make(more=f"suppliers: {{URLhaus: {{confidence: 1, retention: {10**23}}}}}\n"),
            "suppliers.URLhaus.retention",
            "out of range; allowed: [0, 2147483647]",
        ),
        (
            make(more=f"supplier_defaults: {{retention: {10**23}}}\n"),
            "supplier_defaults.retention",
            "out of range; allowed: [0, 2147483647]",
        ),
    ],
)
def test_other_values_past_their_range_are_refused_naming_key_and_range(
    text: str, key: str, fragment: str
) -> None:
    message = refused(text)
    assert message.startswith(f"{key}: "), message
    assert fragment in message, message


@pytest.mark.parametrize(
    "schedule",
    ["1s", "30s", "366d", "31622400s", "'0 0 29 2 *'", "'0 0 29 2 mon'", "'*/1 * * * *'"],
)
def test_the_daemon_can_schedule_every_value_the_loader_accepts_at_the_bounds(
    schedule: str,
) -> None:
    override = "schedule_min_override: true\n"
    feed = parse(make(feed=f"schedule: {schedule}\n{override}"), env=ENV).feeds[0]
    now = time.time()
    built = timing.trigger(feed)
    assert built.get_next_fire_time(None, datetime.now(UTC)) is not None
    assert 1.0 <= timing.interval_seconds(feed) <= 41 * 366 * 86400.0
    assert timing.first_run(feed, None) <= datetime.now(UTC)
    assert timing.first_run(feed, now) > datetime.now(UTC) - timedelta(seconds=1)


def test_the_widest_accepted_retention_and_pull_are_representable() -> None:
    text = make(
        "timeout: 86400\nretry: {attempts: 100, initial_delay: 3600, max_delay: 86400,"
        " initializing: 1d}\n",
        "timeout: 86400\nmax_body_bytes: 1099511627776\n",
        more=MISP % "full_pull: 366d"
        + "supplier_defaults: {retention: 2147483647}\n"
        + "suppliers: {URLhaus: {confidence: 1, retention: 2147483647}}\n"
        + "server: {shutdown_grace: 86400}\n",
    )
    loaded = parse(text, env=ENV)
    retention = loaded.supplier_settings("URLhaus").retention
    assert retention == loaded.supplier_settings("M").retention == 2147483647
    # What sync computes from it: a refresh span, and the deadline it implies.
    span = retention * 60 * loaded.cybertrace.refresh_fraction
    assert datetime.now(UTC) + timedelta(seconds=span) > datetime.now(UTC)
    assert loaded.feeds[1].options_as(MispConfig).full_pull == 366 * 86400.0
    assert loaded.cybertrace.retry.max_delay == loaded.cybertrace.timeout == 86400.0


async def test_check_refuses_what_the_daemon_could_not_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    config = tmp_path / "feedsync.yaml"
    for schedule in ("99999999999999d", "'0 0 30 2 *'"):
        config.write_text(make(feed=f"schedule: {schedule}\n"))
        assert await run_cli("check", "-c", str(config)) == 2
        assert "configuration error: feeds[0].schedule: " in capsys.readouterr().err


# 15: secret files are small regular files, named directly


def with_password_file(path: object) -> str:
    return make().replace("password: ${CT_PASSWORD}", f"password_file: '{path}'")


def test_a_fifo_as_secret_file_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pw"
    os.mkfifo(fifo)
    started = time.monotonic()
    message = refused(with_password_file(fifo))
    assert time.monotonic() - started < 5
    assert message == f"cybertrace.password_file: {fifo} is a FIFO, not a regular file"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_device_as_secret_file_is_refused_unread(device: str) -> None:
    message = refused(with_password_file(device))
    expected = f"{device} is a character device, not a regular file"
    assert message == f"cybertrace.password_file: {expected}"


def test_a_directory_as_secret_file_is_refused(tmp_path: Path) -> None:
    message = refused(with_password_file(tmp_path))
    assert message == f"cybertrace.password_file: {tmp_path} is a directory, not a regular file"


def test_a_symlink_as_secret_file_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text("not-to-be-read\n")
    link = tmp_path / "pw"
    link.symlink_to(target)
    message = refused(with_password_file(link))
    assert message == f"cybertrace.password_file: {link} is a symbolic link; name the file itself"
    shadow = tmp_path / "shadow"
    shadow.symlink_to("/etc/shadow")
    message = refused(make(feed="username: u\npassword_file: shadow\n"), base_dir=str(tmp_path))
    assert message == f"feeds[0].password_file: {shadow} is a symbolic link; name the file itself"


def test_an_oversized_secret_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "pw"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    message = refused(with_password_file(big))
    assert message == f"cybertrace.password_file: {big} is over 64 KiB: not a secret"
    big.write_bytes(b"x" * (64 * 1024))  # the limit itself is a (long) secret
    loaded = parse(with_password_file(big), env=ENV)
    assert loaded.cybertrace.password.reveal() == "x" * 64 * 1024


def test_a_misp_key_file_is_read_the_same_way(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "key")
    misp = MISP % "api_key_file: key"
    message = refused(make(more=misp.replace("api_key: k, ", "")), base_dir=str(tmp_path))
    assert message == f"feeds[1].api_key_file: {tmp_path / 'key'} is a FIFO, not a regular file"


def test_regular_secret_files_and_systemd_credentials_still_work(tmp_path: Path) -> None:
    plain = tmp_path / "pw"
    plain.write_text(" s3cret \n")
    plain.chmod(0o600)
    assert parse(with_password_file(plain), env=ENV).cybertrace.password.reveal() == "s3cret"
    # systemd's LoadCredential= puts a read-only regular file in $CREDENTIALS_DIRECTORY.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "misp-key").write_text("misp-secret")
    (credentials / "misp-key").chmod(0o400)
    env = {**ENV, "CREDENTIALS_DIRECTORY": str(credentials)}
    misp = (MISP % "api_key_file: '${CREDENTIALS_DIRECTORY}/misp-key'").replace("api_key: k, ", "")
    loaded = parse(make(more=misp), env=env)
    api_key = loaded.feeds[1].options_as(MispConfig).api_key
    assert api_key is not None
    assert api_key.reveal() == "misp-secret"
    assert loaded.warnings == ()
    # A link in a directory above the file is the administrator's layout, not a swap.
    linked = tmp_path / "linked"
    linked.symlink_to(credentials, target_is_directory=True)
    loaded = parse(with_password_file(linked / "misp-key"), env=ENV)
    assert loaded.cybertrace.password.reveal() == "misp-secret"


# 12 (tail): verify_tls


@pytest.mark.parametrize("kind", ["csv", "misp_feed", "misp", "taxii"])
async def test_verify_tls_false_warns_for_every_feed_type(tmp_path: Path, kind: str) -> None:
    url = f"https://127.0.0.1:{free_port()}/feed/"  # nothing listens: the warning comes first
    extra = {"misp": ", api_key: k", "taxii": ", collection: c"}.get(kind, "")
    text = make(
        more=f"  - {{name: f, type: {kind}, url: '{url}', supplier: S, verify_tls: false{extra}}}\n"
    )
    feed = parse(text, env=ENV).feeds[1]
    with capture_logs() as logged, pytest.raises(FetchError):
        await source_for(feed).fetch(Validators(), tmp_path / "spool")
    warned = [e for e in logged if e["event"] == "feed.tls_unverified"]
    assert warned and warned[0]["feed"] == "f" and warned[0]["log_level"] == "warning"
    assert url.rstrip("/") in warned[0]["url"]


@pytest.mark.parametrize("where", ["cybertrace", "feed"])
async def test_check_loads_the_ca_bundle_that_verify_tls_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    pem = TEST_CA_PEM
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    line = f"verify_tls: '{bundle}'\n"
    config = tmp_path / "feedsync.yaml"
    config.write_text(make(line) if where == "cybertrace" else make(feed=line))
    assert await run_cli("check", "-c", str(config)) == 2
    key = "cybertrace.verify_tls" if where == "cybertrace" else "feeds[0].verify_tls"
    err = capsys.readouterr().err
    assert f"configuration error: {key}: cannot load {bundle} as a CA bundle" in err, err
    for bad in (b"", b"just text\n", ssl.PEM_cert_to_DER_cert(pem)):
        bundle.write_bytes(bad)
        assert await run_cli("check", "-c", str(config)) == 2
        assert f"{key}: cannot load {bundle}" in capsys.readouterr().err
    bundle.write_text(pem)
    assert await run_cli("check", "-c", str(config)) == 0
    assert "ok (1 feeds" in capsys.readouterr().out
