"""`feedsync run` as systemd runs it: schedules, endpoints, SIGHUP, SIGTERM, sd_notify."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import PASSWORD, free_port

from feedsync.emulator import Emulator
from feedsync.systemd import Notifier

CONFIG = """\
cybertrace:
  url: {url}
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
state:
  path: {state}
server:
  listen: 127.0.0.1:{port}
  shutdown_grace: 5
suppliers:
  Demo: {{confidence: 50}}
feeds:
  - {{name: first, type: csv, url: {dir}/first.txt, supplier: Demo, schedule: 3s}}
"""
SECOND = "  - {name: second, type: csv, url: %s/second.txt, supplier: Demo, schedule: 3s}\n"


async def eventually(check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


@pytest.mark.slow
async def test_daemon_lifecycle(tmp_path: Path, emulator: Emulator) -> None:
    (tmp_path / "first.txt").write_text("a.example\n")
    (tmp_path / "second.txt").write_text("c.example\n")
    port = free_port()
    config = tmp_path / "feedsync.yaml"
    config.write_text(
        CONFIG.format(url=emulator.url, state=tmp_path / "s.db", port=port, dir=tmp_path)
    )
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.setblocking(False)
    messages: list[str] = []

    async def collect() -> None:
        loop = asyncio.get_running_loop()
        while True:
            messages.append((await loop.sock_recv(listener, 4096)).decode())

    collector = asyncio.create_task(collect())
    env = {
        **os.environ,
        "CT_PASSWORD": PASSWORD,
        "NOTIFY_SOCKET": str(notify_path),
        "WATCHDOG_USEC": "1000000",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedsync.cli",
        "--log-format",
        "json",
        "run",
        "-c",
        str(config),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: "a.example" in emulator.indicators("Demo"))
        await eventually(lambda: any("READY=1" in m for m in messages))
        (tmp_path / "first.txt").write_text("a.example\nb.example\n")
        await eventually(lambda: "b.example" in emulator.indicators("Demo"), 10)

        base = f"http://127.0.0.1:{port}"
        assert (await get(base + "/healthz"))[0] == 200
        assert (await get(base + "/readyz"))[0] == 200
        status, metrics = await get(base + "/metrics")
        assert status == 200
        assert b'feedsync_feed_last_success_timestamp_seconds{feed="first"}' in metrics
        assert b'feedsync_changes_total{op="add",supplier="Demo"}' in metrics
        status, body = await get(base + "/status")
        assert status == 200
        assert [f["feed"] for f in orjson.loads(body)["feeds"]] == ["first"]

        config.write_text(config.read_text() + SECOND % tmp_path)
        process.send_signal(signal.SIGHUP)
        await eventually(lambda: "c.example" in emulator.indicators("Demo"), 10)

        config.write_text("cybertrace: [broken\n")
        process.send_signal(signal.SIGHUP)
        (tmp_path / "second.txt").write_text("c.example\nd.example\n")
        await eventually(lambda: "d.example" in emulator.indicators("Demo"), 10)

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        collector.cancel()
        listener.close()
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "config.reload_failed" in log
    assert "daemon.stopped" in log
    assert any("WATCHDOG=1" in m for m in messages)
    assert any("STOPPING=1" in m for m in messages)
    assert any("STATUS=" in m and "cycles" in m for m in messages)
    assert PASSWORD not in log


def test_notifier_is_silent_without_systemd() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("x")


def test_notifier_abstract_socket_and_watchdog_owner() -> None:
    notifier = Notifier(
        env={"NOTIFY_SOCKET": "@feedsync", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    )
    assert notifier.address == "\0feedsync"
    assert notifier.watchdog_interval is None, "another process's watchdog"
    mine = Notifier(env={"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000"})
    assert mine.watchdog_interval == 2.0
