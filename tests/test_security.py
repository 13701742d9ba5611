"""Secrets stay secret; the state file is guarded; the metrics server stays on loopback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from conftest import PASSWORD, FeedServer, run_cli
from prometheus_client import generate_latest

from feedsync import metrics
from feedsync.config import load, parse
from feedsync.emulator import Emulator
from feedsync.errors import StoreError
from feedsync.store import Store, connection

FEED_PASSWORD = "feed-Pa55-77"
AUTH_KEY = "abusech-KEY-4242"
QUERY_KEY = "query-KEY-9999"
MISP_KEY = "misp-KEY-31337"
TAXII_PASSWORD = "taxii-Pa55-2718"
SECRETS = (PASSWORD, FEED_PASSWORD, AUTH_KEY, QUERY_KEY, MISP_KEY, TAXII_PASSWORD)

CONFIG = """\
cybertrace:
  url: {url}
  username: feedsync
  password: ${{CT_PASSWORD}}
  retry: {{attempts: 1}}
state:
  path: {state}
suppliers:
  Demo: {{confidence: 5}}
feeds:
  - name: private
    type: csv
    url: {private}
    supplier: Demo
    username: reader
    password: ${{FEED_PASSWORD}}
    headers: {{Auth-Key: "${{AUTH_KEY}}"}}
  - name: keyed
    type: csv
    url: {keyed}
    supplier: Demo
  - name: misp
    type: misp
    url: http://127.0.0.1:9
    api_key: ${{MISP_KEY}}
    supplier: Demo
  - name: taxii
    type: taxii
    url: http://127.0.0.1:9/api1/
    collection: c
    username: reader
    password: ${{TAXII_PASSWORD}}
    supplier: Demo
"""


async def test_secrets_appear_nowhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    feed_server: FeedServer,
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    monkeypatch.setenv("FEED_PASSWORD", FEED_PASSWORD)
    monkeypatch.setenv("AUTH_KEY", AUTH_KEY)
    monkeypatch.setenv("MISP_KEY", MISP_KEY)
    monkeypatch.setenv("TAXII_PASSWORD", TAXII_PASSWORD)
    private = feed_server.set("private.txt", "a.example\n")
    keyed = f"{feed_server.url}/missing.txt?apikey={QUERY_KEY}"
    config = tmp_path / "feedsync.yaml"
    config.write_text(
        CONFIG.format(url=emulator.url, state=tmp_path / "s.db", private=private, keyed=keyed)
    )
    outputs = []
    for argv in (
        ["--log-level", "debug", "sync", "-c", str(config), "--dry-run"],
        ["--log-level", "debug", "--log-format", "json", "sync", "-c", str(config)],
        ["status", "-c", str(config), "--json"],
        ["status", "-c", str(config)],
        ["check", "-c", str(config)],
    ):
        await run_cli(*argv)
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
    monkeypatch.setenv("CT_PASSWORD", "wrong-" + PASSWORD)
    assert await run_cli("--log-level", "debug", "sync", "-c", str(config)) == 1
    captured = capsys.readouterr()
    outputs.append(captured.out + captured.err)
    outputs.append(generate_latest(metrics.REGISTRY).decode())
    outputs.append(repr(load(config, env=dict(os.environ))))
    text = "\n".join(outputs)
    assert "HTTP 404" in text and "apikey" not in text, "the failing URL is named without its query"
    assert "authentication failed" in text
    for secret in SECRETS:
        assert secret not in text
    # The feed did get its credentials.
    sent = next(h for name, h in feed_server.hits if name == "private.txt")
    assert sent["Auth-Key"] == AUTH_KEY and sent["Authorization"].startswith("Basic ")


def test_world_readable_config_with_inline_secret_warns(tmp_path: Path) -> None:
    config = tmp_path / "feedsync.yaml"
    base = (
        "cybertrace: {{url: http://x, username: u, {secret}}}\n"
        "feeds: [{{name: a, type: csv, url: /x, supplier: S}}]\n"
    )
    config.write_text(base.format(secret="password: inline-secret"))
    config.chmod(0o644)
    [warning] = load(config).warnings
    assert "readable by others (mode 0644)" in warning and "inline-secret" not in warning
    config.chmod(0o600)
    assert load(config).warnings == ()
    config.write_text(base.format(secret="password: ${P}"))
    config.chmod(0o644)
    assert load(config, env={"P": "x"}).warnings == ()
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret\n")
    secret_file.chmod(0o644)
    config.write_text(base.format(secret="password_file: pw"))
    [warning] = load(config).warnings
    assert warning.startswith("cybertrace.password_file:") and "mode 0644" in warning


def test_metrics_server_binds_loopback_by_default() -> None:
    loaded = parse(
        "cybertrace: {url: http://x, username: u, password: p}\n"
        "feeds: [{name: a, type: csv, url: /x, supplier: S}]\n"
    )
    assert (loaded.server.host, loaded.server.port) == ("127.0.0.1", 9464)


def test_corrupt_state_file_is_an_error_not_a_reset(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store.open(str(state))
    assert state.read_bytes().startswith(b"this is not a database")
    folder = tmp_path / "folder.db"
    folder.mkdir()
    with pytest.raises(StoreError):
        Store.open(str(folder))


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "s.db"))
    connection(store).execute("PRAGMA user_version = 99")
    store.close()
    with pytest.raises(StoreError, match="newer than this feedsync"):
        Store.open(str(tmp_path / "s.db"))


def test_durability_settings(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "s.db"))
    try:
        assert connection(store).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection(store).execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


async def test_second_process_is_refused_and_status_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "s.db"
    config = tmp_path / "feedsync.yaml"
    (tmp_path / "l.txt").write_text("a.example\n")
    config.write_text(
        f"cybertrace: {{url: 'http://127.0.0.1:9', username: u, password: p}}\n"
        f"state: {{path: {state}}}\n"
        f"feeds: [{{name: a, type: csv, url: {tmp_path / 'l.txt'}, supplier: FalsePositive}}]\n"
    )
    holder = Store.open(str(state))
    try:

        async def run(*argv: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "feedsync.cli",
                *argv,
                "-c",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await process.communicate()
            return process.returncode or 0, out.decode()

        code, out = await run("sync")
        assert code == 1 and "in use by another feedsync process" in out
        code, out = await run("status")
        assert code == 0 and "FEED" in out
    finally:
        holder.close()
