"""Steering a running daemon over its control socket: sync, hold/release, reload."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import run_cli
from test_daemon import daemon_at, eventually, write_config  # noqa: F401 -- fixture

from feedsync.daemon import control
from feedsync.daemon.service import Daemon
from feedsync.emulator import Emulator

FOUR = "a.example\nb.example\nc.example\nd.example\n"


async def steered(daemon_at: Callable[..., Any], path: Path) -> Daemon:  # noqa: F811
    daemon: Daemon = await daemon_at(path)
    await daemon.control.start(daemon.store.path)
    return daemon


async def ran(daemon: Daemon, name: str) -> None:
    await daemon.launch(name)
    if name in daemon.running:
        await asyncio.wait_for(daemon.running[name], 30)


async def test_sync_force_through_a_running_daemon_applies_a_held_shrink(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path, emulator.url)
    (tmp_path / "first.txt").write_text(FOUR)
    daemon = await steered(daemon_at, path)
    await ran(daemon, "first")
    assert len(emulator.indicators("Demo")) == 4
    (tmp_path / "first.txt").write_text("a.example\n")
    await ran(daemon, "first")
    assert len(emulator.indicators("Demo")) == 4, "the shrink guard held the deletions"

    # The daemon holds the store's lock: without the channel this is "in use".
    # Another shrink than the held one is held again...
    (tmp_path / "first.txt").write_text("b.example\n")
    assert await run_cli("sync", "-c", str(path), "first") == 0
    out = capsys.readouterr().out
    assert "held" in out and "feedsync sync first --force" in out, out
    assert len(emulator.indicators("Demo")) == 4

    # ... and --force applies it, in the daemon.
    assert await run_cli("sync", "-c", str(path), "first", "--force") == 0
    out = capsys.readouterr().out
    assert "feed first" in out and "removed      3" in out, out
    assert set(emulator.indicators("Demo")) == {"b.example"}
    assert daemon.cycles == 4, "the daemon ran both"

    assert await run_cli("sync", "-c", str(path), "nosuch") == 2
    assert "unknown feed(s): nosuch" in capsys.readouterr().err


async def test_hold_stops_the_schedule_survives_a_restart_and_release_lifts_it(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path, emulator.url)
    daemon = await steered(daemon_at, path)
    assert await run_cli("hold", "-c", str(path), "first") == 0
    assert "feed first on hold" in capsys.readouterr().out
    await daemon.launch("first")
    assert "first" not in daemon.running, "a held feed's schedule does not run it"
    assert emulator.indicators("Demo") == {}

    await daemon.shutdown()
    daemon.store.close()
    restarted = await steered(daemon_at, path)
    await restarted.launch("first")
    assert "first" not in restarted.running, "the hold outlives the process"
    assert await run_cli("hold", "-c", str(path), "first") == 0
    assert "already on hold" in capsys.readouterr().out

    assert await run_cli("release", "-c", str(path), "first") == 0
    assert "feed first released" in capsys.readouterr().out
    await ran(restarted, "first")
    assert "a.example" in emulator.indicators("Demo")
    assert await run_cli("hold", "-c", str(path), "nosuch") == 2


async def test_without_a_daemon_hold_writes_the_store_and_sync_passes_held_feeds_by(
    tmp_path: Path, emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("CT_PASSWORD", "s3cret-Pa55")
    path = write_config(tmp_path, emulator.url)
    assert await run_cli("hold", "-c", str(path), "first") == 0
    assert "on hold" in capsys.readouterr().out
    assert await run_cli("sync", "-c", str(path)) == 0
    assert "nothing to sync: every enabled feed is on hold" in capsys.readouterr().out
    assert emulator.indicators("Demo") == {}
    assert await run_cli("sync", "-c", str(path), "first") == 0, "a named feed runs, held or not"
    assert "a.example" in emulator.indicators("Demo")
    assert await run_cli("release", "-c", str(path), "first") == 0
    assert await run_cli("release", "-c", str(path), "first") == 0
    assert "was not on hold" in capsys.readouterr().out

    assert await run_cli("reload", "-c", str(path)) == 1
    assert "no daemon is running" in capsys.readouterr().err


async def test_control_socket_is_private_and_replaces_a_killed_daemons(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path, emulator.url)
    state = str(tmp_path / "s.db")
    where = control.socket_path(state)
    where.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(where))  # a daemon killed with SIGKILL leaves its socket file
    stale.close()
    assert await asyncio.to_thread(control.ask, state, "reload") is None, "nobody listens"

    daemon = await steered(daemon_at, path)
    info = where.stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(where.parent.stat().st_mode) == 0o700
    assert info.st_uid == os.geteuid()

    assert await run_cli("reload", "-c", str(path)) == 0
    assert "configuration reloaded (1 feeds)" in capsys.readouterr().out

    await daemon.shutdown()
    assert not where.exists(), "a clean stop removes the socket"


async def test_reload_reports_a_bad_configuration_and_keeps_the_old(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path, emulator.url)
    daemon = await steered(daemon_at, path)
    # The CLI finds the socket through its own copy of the configuration.
    mine = tmp_path / "cli.yaml"
    mine.write_text(path.read_text())
    path.write_text(path.read_text().replace("schedule: 3s", "schedule: 15x"))
    assert await run_cli("reload", "-c", str(mine)) == 1
    err = capsys.readouterr().err
    assert "reload failed, the running configuration stays" in err and "schedule" in err
    assert [f.name for f in daemon.config.feeds] == ["first"]


class SlowFeed:
    """A feed server whose answers wait for the test, counting requests in flight."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.flight = 0
        self.most = 0
        self.requests = 0
        app = web.Application()
        app.router.add_get("/first.txt", self.serve)
        self.runner = web.AppRunner(app)
        self.url = ""

    async def serve(self, _request: web.Request) -> web.Response:
        self.requests += 1
        self.flight += 1
        self.most = max(self.most, self.flight)
        try:
            await self.gate.wait()
            return web.Response(text=f"a.example\nb{time.monotonic_ns()}.example\n")
        finally:
            self.flight -= 1


@pytest.fixture
async def slow_feed() -> AsyncIterator[SlowFeed]:
    feed = SlowFeed()
    await feed.runner.setup()
    site = web.TCPSite(feed.runner, "127.0.0.1", 0)
    await site.start()
    feed.url = f"http://127.0.0.1:{feed.runner.addresses[0][1]}"
    yield feed
    await feed.runner.cleanup()


async def test_an_explicit_sync_waits_for_the_scheduled_cycle_of_its_feed(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
    slow_feed: SlowFeed,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path, emulator.url)
    text = path.read_text().replace(f"url: {tmp_path}/first.txt", f"url: {slow_feed.url}/first.txt")
    path.write_text(text)
    daemon = await steered(daemon_at, path)
    await daemon.launch("first")
    scheduled = daemon.running["first"]
    await eventually(lambda: slow_feed.requests == 1)

    explicit = asyncio.ensure_future(run_cli("sync", "-c", str(path), "first"))
    await asyncio.sleep(1.5)
    assert not explicit.done() and slow_feed.requests == 1, "it waits for the running cycle"
    await daemon.launch("first")
    assert daemon.running["first"] is scheduled, "the schedule does not start a second one"

    slow_feed.gate.set()
    assert await asyncio.wait_for(explicit, 30) == 0
    assert scheduled.done()
    assert slow_feed.requests == 2 and slow_feed.most == 1, "one cycle of the feed at a time"
    assert "feed first" in capsys.readouterr().out
    assert "first" not in daemon.running


async def test_the_channel_refuses_malformed_requests(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
) -> None:
    daemon = await steered(daemon_at, write_config(tmp_path, emulator.url))
    state = daemon.store.path
    answer = await asyncio.to_thread(control.ask, state, "sync", {"feeds": "first"})
    assert answer == {"error": "feeds: expected a list of feed names", "exit": 2}
    answer = await asyncio.to_thread(control.ask, state, "hold", {"feed": 3})
    assert answer["exit"] == 2
    snapshot = await asyncio.to_thread(control.ask, state, "status")
    assert snapshot["source"] == "daemon"
