"""`feedsync status` at 3 a.m.: no secret, no network, Nagios exit codes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import PASSWORD, FeedServer, free_port, run_cli
from test_daemon import daemon_at, write_config  # noqa: F401 -- fixture
from test_tls import certificates  # noqa: F401 -- fixture

from feedsync import config
from feedsync.emulator import Emulator
from feedsync.errors import ConfigError

CONFIG = """\
cybertrace:
  url: {url}
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
  retry: {{attempts: 1, initial_delay: 0.01, max_delay: 0.02}}
{extra}state:
  path: {state}
feeds:
  - {{name: list, type: csv, url: {feed}, supplier: Demo, schedule: 1h}}
  - {{name: other, type: csv, url: {other}, supplier: Demo, schedule: 1h}}
"""


def configured(tmp_path: Path, url: str, feed: str, other: str, extra: str = "") -> Path:
    path = tmp_path / "feedsync.yaml"
    state = tmp_path / "state.db"
    path.write_text(CONFIG.format(url=url, state=state, feed=feed, other=other, extra=extra))
    return path


async def status(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Any]:
    code = await run_cli("status", "-c", str(path))
    text = capsys.readouterr().out
    assert await run_cli("status", "-c", str(path), "--json") == code, "JSON exits alike"
    return code, text, orjson.loads(capsys.readouterr().out)


def age_failures(path: Path, feed: str, seconds: float) -> None:
    """As if the feed's failures began ``seconds`` earlier (the clock cannot be moved
    for a subprocess-free CLI run; the store is what status reads)."""
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE runs SET finished = finished - ?, started = started - ? WHERE feed = ?",
            (seconds, seconds, feed),
        )


async def test_status_needs_no_secret_and_exits_like_a_nagios_check(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    feed_server: FeedServer,
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    path = configured(
        tmp_path,
        emulator.url,
        feed_server.set("list.txt", "a.example\n"),
        feed_server.set("other.txt", "b.example\n"),
    )
    assert await run_cli("sync", "-c", str(path)) == 0
    capsys.readouterr()
    monkeypatch.delenv("CT_PASSWORD")  # the on-call engineer is not given it
    requests = len(emulator.requests)

    code, text, snap = await status(path, capsys)
    assert code == 0, text
    assert text.startswith(f"CyberTrace {emulator.url}")
    assert ": up (last exchange" in text
    assert "OK: every feed is fine (from the state database (no daemon))" in text
    [listed] = [f for f in snap["feeds"] if f["feed"] == "list"]
    assert listed["schedule"] == "1h" and listed["interval"] == 3600
    assert listed["severity"] == "ok" and listed["attempts"] == 0 and not listed["on_hold"]
    assert snap["severity"] == "ok" and snap["cybertrace"]["state"] == "up"
    assert len(emulator.requests) == requests, "status sends nothing"

    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    feed_server.set("list.txt", "gone", status=404)
    assert await run_cli("sync", "-c", str(path)) == 1
    capsys.readouterr()
    monkeypatch.delenv("CT_PASSWORD")
    code, text, snap = await status(path, capsys)
    assert code == 1, "failing under twice its interval: warning"
    assert "list: failing since" in text and "1 attempts: HTTP 404" in text, text
    assert "WARNING: feed list: failing (1 attempts)" in text
    [listed] = [f for f in snap["feeds"] if f["feed"] == "list"]
    assert listed["attempts"] == 1 and listed["failing_since"] > time.time() - 60

    age_failures(tmp_path / "state.db", "list", 2 * 3600 + 60)
    code, text, snap = await status(path, capsys)
    assert code == 2, "failing for over twice its interval: critical"
    assert "CRITICAL: feed list: failing for 2h" in text
    assert snap["severity"] == "critical"

    assert await run_cli("hold", "-c", str(path), "other") == 0, "no secret needed either"
    capsys.readouterr()
    code, text, snap = await status(path, capsys)
    assert code == 2 and "feed other: on hold" in text
    assert "`feedsync release other`" in text
    [other] = [f for f in snap["feeds"] if f["feed"] == "other"]
    assert other["on_hold"] and other["on_hold_since"] > time.time() - 60
    assert other["severity"] == "warning"


async def test_a_feed_that_never_succeeded_is_critical_after_three_attempts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    feed_server: FeedServer,
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    path = configured(
        tmp_path,
        emulator.url,
        feed_server.set("list.txt", "nope", status=500),
        feed_server.set("other.txt", "b.example\n"),
    )
    for attempt in (1, 2, 3):
        assert await run_cli("sync", "-c", str(path), "list") == 1
        capsys.readouterr()
        code, text, _snap = await status(path, capsys)
        assert code == (2 if attempt == 3 else 1), text
    assert "feed list: never succeeded (3 attempts)" in text


async def test_status_without_any_secret_source_and_with_a_held_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CT_PASSWORD", raising=False)
    path = configured(tmp_path, "http://127.0.0.1:1", "x.txt", "y.txt")
    # A secret file only root can read: status must not need to open it.
    path.write_text(
        path.read_text().replace(
            "password: ${CT_PASSWORD}", f"password_file: {tmp_path}/absent/secret"
        )
    )
    assert await run_cli("hold", "-c", str(path), "list") == 0
    capsys.readouterr()
    code, text, snap = await status(path, capsys)
    assert code == 1 and "feed list: on hold" in text
    assert snap["cybertrace"]["state"] == "unknown"
    assert await run_cli("check", "-c", str(path)) == 2, "check still wants every secret"
    assert "cannot read" in capsys.readouterr().err


def test_the_loader_without_secrets_leaves_unset_ones_unset(tmp_path: Path) -> None:
    text = (
        "cybertrace: {url: 'https://ct.example', username: u, password: '${CT}'}\n"
        "feeds:\n"
        "  - name: f\n    type: csv\n    url: 'https://h.example/x?key=${KEY}'\n"
        "    supplier: Demo\n    headers: {Auth-Key: '${AUTH}'}\n"
        "    username: me\n    password_file: /nonexistent\n"
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    loaded = config.load(path, env={}, secrets=False)
    assert loaded.cybertrace.password is None
    [feed] = loaded.feeds
    assert feed.password is None and feed.headers == ()
    with pytest.raises(ConfigError, match="environment variable CT is not set"):
        config.load(path, env={})
    path.write_text(text.replace("username: u", "username: '${WHO}'"))
    with pytest.raises(ConfigError, match=r"cybertrace.username: environment variable WHO"):
        config.load(path, env={}, secrets=False)


async def test_no_python_repr_reaches_status_when_tls_cybertrace_is_unreachable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    feed_server: FeedServer,
    certificates: Path,  # noqa: F811
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    path = configured(
        tmp_path,
        f"https://127.0.0.1:{free_port()}",
        feed_server.set("list.txt", "a.example\n"),
        f"https://127.0.0.1:{free_port()}/other.txt",
        extra=f"  verify_tls: {certificates}/ca.pem\n",
    )
    # A feed with a CA bundle of its own: aiohttp's message quotes the SSLContext.
    head, tail = path.read_text().rsplit("supplier: Demo, schedule: 1h}", 1)
    own = f"supplier: Other, schedule: 1h, verify_tls: {certificates}/ca.pem}}"
    path.write_text(head + own + tail)
    assert await run_cli("sync", "-c", str(path)) == 1
    out = capsys.readouterr().out
    assert "object at 0x" not in out and "ssl:" not in out, out
    code, text, snap = await status(path, capsys)
    assert code == 1, text
    for shown in (text, orjson.dumps(snap).decode()):
        assert "object at 0x" not in shown and "SSLContext" not in shown, shown
        assert "Cannot connect to host 127.0.0.1" in shown
    assert snap["cybertrace"]["state"] == "failing"
    assert snap["cybertrace"]["last_error_supplier"] in ("Demo", "Other")
    assert "CyberTrace failing since" in text


async def test_status_asks_the_running_daemon_and_shows_next_runs(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path, emulator.url)
    daemon = await daemon_at(path)
    await daemon.control.start(daemon.store.path)
    await daemon._schedule()
    monkeypatch.delenv("CT_PASSWORD")
    code, text, snap = await status(path, capsys)
    assert code == 0, text
    assert snap["source"] == "daemon" and "(from the daemon)" in text
    [first] = snap["feeds"]
    assert first["next_run"] is not None and first["schedule"] == "3s"
    assert "now" in text or " in " in text
