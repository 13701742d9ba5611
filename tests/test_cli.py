"""The command line: exit codes, output, secrets kept out of it."""

from __future__ import annotations

import gc
import tomllib
from pathlib import Path

import pytest
from conftest import PASSWORD, FeedServer, run_cli

from feedsync import cli
from feedsync.emulator import Emulator

CONFIG = """\
cybertrace:
  url: {url}
  api_version: "1.2"
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
  retry: {{attempts: 2, initial_delay: 0.01, max_delay: 0.02}}
state:
  path: {state}
suppliers:
  Demo: {{confidence: 50}}
feeds:
  - name: list
    type: csv
    url: {feed}
    supplier: Demo
"""


def write_config(tmp_path: Path, url: str, feed: str) -> Path:
    path = tmp_path / "feedsync.yaml"
    path.write_text(CONFIG.format(url=url, state=tmp_path / "state.db", feed=feed))
    return path


async def test_check_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    good = write_config(tmp_path, "http://127.0.0.1:1", str(tmp_path / "list.txt"))
    assert await run_cli("check", "-c", str(good)) == 0
    assert "ok (1 feeds, 1 suppliers)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("supplier: Demo", "supplier: Demo\n    schedule: 15x"))
    assert await run_cli("check", "-c", str(bad)) == 2
    assert "feeds[0].schedule" in capsys.readouterr().err
    monkeypatch.delenv("CT_PASSWORD")
    assert await run_cli("check", "-c", str(good)) == 2
    assert (
        "cybertrace.password: environment variable CT_PASSWORD is not set"
        in capsys.readouterr().err
    )


async def test_check_lists_the_suppliers_it_would_create_and_with_what(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    path = write_config(tmp_path, "http://127.0.0.1:1", str(tmp_path / "list.txt"))
    text = path.read_text().replace(
        "suppliers:\n  Demo: {confidence: 50}\n",
        "supplier_defaults: {confidence: 30, retention: 0}\n"
        "suppliers:\n  Demo: {confidence: 50, vendor: ops}\n",
    )
    text += (
        "  - name: other\n    type: csv\n    url: x.txt\n    supplier: Other\n"
        "  - name: fp\n    type: csv\n    url: y.txt\n    supplier: FalsePositive\n"
    )
    path.write_text(text)
    assert await run_cli("check", "-c", str(path)) == 0
    out = capsys.readouterr().out
    assert (
        "supplier Demo: created with its suppliers: entry (confidence 50, retention 0 minutes,"
        " vendor ops) if CyberTrace lacks it; an existing one is corrected to these settings"
    ) in out
    assert (
        "supplier Other: created with supplier_defaults (confidence 30, retention 0 minutes,"
        " vendor feedsync) if CyberTrace lacks it; an existing one keeps its own settings"
    ) in out
    assert "supplier FalsePositive: built into CyberTrace" in out
    assert "warning: supplier_defaults.retention: 0 is sent as written" in out


async def test_config_path_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    monkeypatch.setenv(
        "FEEDSYNC_CONFIG", str(write_config(tmp_path, "http://127.0.0.1:1", "x.txt"))
    )
    assert await run_cli("check") == 0


async def test_sync_status_and_dry_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    feed_server: FeedServer,
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    feed = feed_server.set("list.txt", "a.example\nb.example\nnot valid\n")
    path = write_config(tmp_path, emulator.url, feed)

    assert await run_cli("sync", "-c", str(path), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would send" in out and "add a.example" in out
    assert emulator.indicator_requests() == []

    assert await run_cli("sync", "-c", str(path)) == 0
    out = capsys.readouterr().out
    assert "feed list" in out and "fetched       2  invalid     1  added      2" in out
    assert set(emulator.indicators("Demo")) == {"a.example", "b.example"}

    assert await run_cli("status", "-c", str(path)) == 0
    out = capsys.readouterr().out
    assert "list" in out and "Demo" in out

    assert await run_cli("sync", "-c", str(path), "nosuchfeed") == 2
    assert "unknown feed(s): nosuchfeed" in capsys.readouterr().err

    feed_server.set("list.txt", "gone", status=404)
    assert await run_cli("sync", "-c", str(path)) == 1
    assert "HTTP 404" in capsys.readouterr().out
    assert set(emulator.indicators("Demo")) == {"a.example", "b.example"}


async def test_wrong_password_stops_after_one_request_and_never_shows_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    feed_server: FeedServer,
) -> None:
    wrong = "Wr0ng-Pa55word-xyz"
    monkeypatch.setenv("CT_PASSWORD", wrong)
    path = write_config(tmp_path, emulator.url, feed_server.set("list.txt", "a.example\n"))
    assert await run_cli("--log-level", "debug", "sync", "-c", str(path)) == 1
    captured = capsys.readouterr()
    assert "authentication failed" in captured.err
    assert "401" in captured.err
    assert wrong not in captured.out + captured.err
    assert len(emulator.requests) <= 2
    assert all(r.status == 401 for r in emulator.requests)


async def test_status_before_any_sync_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    path = write_config(tmp_path, "http://127.0.0.1:1", "x.txt")
    assert await run_cli("status", "-c", str(path)) == 1
    assert "does not exist yet" in capsys.readouterr().err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "sync", "check", "status", "hold", "release", "reload", "emulator"):
        assert command in out


def test_the_process_entry_point_sets_the_collector_for_millions_of_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = gc.get_threshold()
    try:
        with pytest.raises(SystemExit):
            cli.run(["--help"])
        assert gc.get_threshold() == cli.COLLECTOR_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
    assert "sync" in capsys.readouterr().out


def test_the_installed_command_and_python_m_go_through_the_entry_point() -> None:
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["feedsync"] == "feedsync.cli:run"
    assert "raise SystemExit(run())" in (root / "feedsync" / "cli" / "__main__.py").read_text()
