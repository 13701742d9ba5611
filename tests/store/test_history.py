"""``feedsync history``: the run history the store keeps, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PASSWORD, FeedServer, run_cli

from feedsync.emulator import Emulator

CONFIG = """\
cybertrace:
  url: {url}
  api_version: "1.2"
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
  retry: {{attempts: 1}}
state:
  path: {state}
feeds:
  - {{name: first, type: csv, url: {one}, supplier: Demo, retry: {{attempts: 1}}}}
  - {{name: second, type: csv, url: {two}, supplier: Other, retry: {{attempts: 1}}}}
"""


@pytest.fixture
async def ran(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    emulator: Emulator,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> str:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    one = feed_server.set("one.txt", "a.example\nb.example\nnot valid\n")
    two = feed_server.set("two.txt", "c.example\n")
    path = tmp_path / "feedsync.yaml"
    path.write_text(CONFIG.format(url=emulator.url, state=tmp_path / "s.db", one=one, two=two))
    assert await run_cli("sync", "-c", str(path)) == 0
    feed_server.set("one.txt", "a.example\n")
    assert await run_cli("sync", "-c", str(path), "first") == 0
    feed_server.set("one.txt", "gone", status=404)
    assert await run_cli("sync", "-c", str(path), "first") == 1
    capsys.readouterr()
    return str(path)


async def test_history_lists_runs_newest_first_with_counts_and_errors(
    ran: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("history", "-c", ran, "--json") == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["feed"], r["result"]) for r in runs] == [
        ("first", "failed"),
        ("first", "ok"),
        ("second", "ok"),
        ("first", "ok"),
    ] or [(r["feed"], r["result"]) for r in runs] == [
        ("first", "failed"),
        ("first", "ok"),
        ("first", "ok"),
        ("second", "ok"),
    ]
    failed, shrunk = runs[0], runs[1]
    assert "HTTP 404" in failed["error"]
    assert shrunk["removed"] == 1 and shrunk["fetched"] == 1 and shrunk["error"] is None
    first = [r for r in runs if r["feed"] == "first"][-1]
    assert (first["fetched"], first["invalid"], first["added"]) == (2, 1, 2)
    assert all(r["finished"] >= r["started"] and r["seconds"] >= 0 for r in runs)
    assert runs == sorted(runs, key=lambda r: r["finished"], reverse=True)

    assert await run_cli("history", "-c", ran) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("FINISHED (UTC)")
    assert " first " in text[1] and "failed" in text[1]
    assert text[2].startswith("  error: ") and "HTTP 404" in text[2]


async def test_history_of_a_feed_a_supplier_and_a_limit(
    ran: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("history", "-c", ran, "second", "--json") == 0
    assert [r["feed"] for r in json.loads(capsys.readouterr().out)] == ["second"]
    assert await run_cli("history", "-c", ran, "Demo", "--json") == 0
    assert [r["feed"] for r in json.loads(capsys.readouterr().out)] == ["first"] * 3
    assert await run_cli("history", "-c", ran, "Demo", "--limit", "1", "--json") == 0
    assert [r["result"] for r in json.loads(capsys.readouterr().out)] == ["failed"]

    assert await run_cli("history", "-c", ran, "nosuch") == 2
    assert "no feed or supplier named 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        await run_cli("history", "-c", ran, "--limit", "0")


async def test_history_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    path = tmp_path / "feedsync.yaml"
    path.write_text(
        CONFIG.format(url="http://127.0.0.1:1", state=tmp_path / "s.db", one="a", two="b")
    )
    assert await run_cli("history", "-c", str(path)) == 0
    assert "no state database yet" in capsys.readouterr().out
