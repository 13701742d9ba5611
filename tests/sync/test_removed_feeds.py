"""Feeds disabled or removed from the configuration: what they listed stays in
CyberTrace until an operator says otherwise, through the real CLI."""

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
state:
  path: {state}
feeds:
  - {{name: a, type: csv, url: {a}, supplier: Demo}}
{b}"""
ALL = {"a.example", "b.example", "shared.example"}


@pytest.fixture
async def two_feeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: Emulator, feed_server: FeedServer
) -> tuple[Path, str, str]:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    a = feed_server.set("a.txt", "a.example\nshared.example\n")
    url = feed_server.set("b.txt", "b.example\nshared.example\n")
    b = f"  - {{name: b, type: csv, url: {url}, supplier: Demo}}\n"
    path = tmp_path / "feedsync.yaml"
    path.write_text(CONFIG.format(url=emulator.url, state=tmp_path / "s.db", a=a, b=b))
    assert await run_cli("sync", "-c", str(path)) == 0
    assert set(emulator.indicators("Demo")) == ALL
    return path, a, b


def rewrite(path: Path, emulator: Emulator, a: str, b: str) -> None:
    path.write_text(CONFIG.format(url=emulator.url, state=path.parent / "s.db", a=a, b=b))


async def feed_status(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, dict[str, object]]]:
    capsys.readouterr()
    code = await run_cli("status", "-c", str(path), "--json")
    return code, {f["feed"]: f for f in json.loads(capsys.readouterr().out)["feeds"]}


async def test_a_disabled_feed_keeps_what_it_listed_and_status_says_so(
    two_feeds: tuple[Path, str, str], emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path, a, b = two_feeds
    rewrite(path, emulator, a, b.replace("}", ", enabled: false}"))
    assert await run_cli("sync", "-c", str(path)) == 0
    assert set(emulator.indicators("Demo")) == ALL, "b.example stays"
    code, feeds = await feed_status(path, capsys)
    assert code == 0
    assert feeds["b"]["state"] == "disabled (its 2 indicators are kept)"


async def test_a_removed_feed_is_held_until_forced(
    two_feeds: tuple[Path, str, str],
    emulator: Emulator,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path, a, _b = two_feeds
    rewrite(path, emulator, a, "")  # an edit that dropped feed b
    assert await run_cli("sync", "-c", str(path)) == 0
    assert set(emulator.indicators("Demo")) == ALL, "not deleted by an edit alone"
    assert "feed.removed_held" in capfd.readouterr().err
    code, feeds = await feed_status(path, capfd)
    assert code == 1
    assert feeds["b"]["state"].startswith("removed from the configuration: its 2 indicators")

    assert await run_cli("sync", "-c", str(path), "--force") == 0
    assert set(emulator.indicators("Demo")) == {"a.example", "shared.example"}
    assert "feed.forgotten" in capfd.readouterr().err
    code, feeds = await feed_status(path, capfd)
    assert code == 0 and "b" not in feeds
    assert await run_cli("sync", "-c", str(path)) == 0
    assert set(emulator.indicators("Demo")) == {"a.example", "shared.example"}
