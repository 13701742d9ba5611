"""Upstream staleness: a feed that downloads fine but whose content has not
changed for longer than its ``expect_change_within``, through the real CLI and
an in-process daemon's metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, free_port, run_cli
from test_daemon import daemon_at  # noqa: F401 -- a fixture

from feedsync import config, metrics
from feedsync.emulator import Emulator
from feedsync.errors import ConfigError

CONFIG = """\
cybertrace:
  url: {url}
  api_version: "1.2"
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
state:
  path: {state}
server:
  listen: 127.0.0.1:{port}
feeds:
  - name: frozen
    type: csv
    url: {feed}
    supplier: Demo
{extra}"""


def write(tmp_path: Path, url: str, extra: str = "    expect_change_within: 1s\n") -> Path:
    (tmp_path / "list.txt").write_text("a.example\n")
    path = tmp_path / "feedsync.yaml"
    text = CONFIG.format(
        url=url, state=tmp_path / "s.db", feed=tmp_path / "list.txt", extra=extra, port=free_port()
    )
    path.write_text(text)
    return path


async def status(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = await run_cli("status", "-c", str(path), "--json")
    return code, json.loads(capsys.readouterr().out)["feeds"][0]


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)


async def test_a_feed_that_stopped_changing_is_reported_until_it_changes(
    tmp_path: Path, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, emulator.url)
    assert await run_cli("sync", "-c", str(path)) == 0
    code, feed = await status(path, capsys)
    assert (code, feed["state"]) == (0, "ok")
    first = feed["last_change"]
    assert first is not None and feed["expect_change_within"] == 1.0

    time.sleep(1.2)
    (tmp_path / "list.txt").write_text("a.example\n# a new comment, the same indicators\n")
    assert await run_cli("sync", "-c", str(path)) == 0
    code, feed = await status(path, capsys)
    assert code == 1, "a warning"
    assert feed["state"].startswith("upstream unchanged for 1s (expected within 1s)")
    assert feed["last_change"] == first, "a body with the same indicators is no change"
    assert await run_cli("status", "-c", str(path)) == 1
    assert "upstream unchanged for" in capsys.readouterr().out

    (tmp_path / "list.txt").write_text("a.example\nb.example\n")
    assert await run_cli("sync", "-c", str(path)) == 0
    code, feed = await status(path, capsys)
    assert (code, feed["state"]) == (0, "ok")
    assert feed["last_change"] > first


async def test_without_expect_change_within_nothing_is_judged(
    tmp_path: Path, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, emulator.url, extra="")
    assert await run_cli("sync", "-c", str(path)) == 0
    time.sleep(1.2)
    assert await run_cli("sync", "-c", str(path)) == 0
    code, feed = await status(path, capsys)
    assert (code, feed["state"], feed["expect_change_within"]) == (0, "ok", None)


async def test_the_metrics_say_when_it_last_changed_and_whether_that_is_too_long(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
) -> None:
    path = write(tmp_path, emulator.url)
    assert await run_cli("sync", "-c", str(path)) == 0
    daemon = await daemon_at(path)
    await daemon._schedule()
    changed = metrics.REGISTRY.get_sample_value(
        "feedsync_feed_last_change_timestamp_seconds", {"feed": "frozen"}
    )
    assert changed is not None and abs(changed - time.time()) < 30
    stale = {"feed": "frozen"}
    assert metrics.REGISTRY.get_sample_value("feedsync_feed_upstream_stale", stale) == 0
    time.sleep(1.2)  # judged when scraped, not only when the feed runs
    assert metrics.REGISTRY.get_sample_value("feedsync_feed_upstream_stale", stale) == 1


def test_expect_change_within_is_a_duration(tmp_path: Path) -> None:
    path = write(tmp_path, "http://127.0.0.1:1", extra="    expect_change_within: soon\n")
    with pytest.raises(ConfigError, match="expect_change_within"):
        config.load(path, env={"CT_PASSWORD": PASSWORD})
    path = write(tmp_path, "http://127.0.0.1:1", extra="    expect_change_within: 2d\n")
    assert config.load(path, env={"CT_PASSWORD": PASSWORD}).feeds[0].expect_change_within == 172800
