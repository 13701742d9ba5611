"""`feedsync run` as systemd runs it: schedules, endpoints, SIGHUP, SIGTERM, sd_notify."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import PASSWORD, free_port, run_cli
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from test_tls import certificates, tls_emulator  # noqa: F401 -- fixtures

from feedsync import config as configuration
from feedsync import metrics
from feedsync.daemon.server import Server
from feedsync.daemon.service import Daemon
from feedsync.daemon.systemd import Notifier
from feedsync.emulator import Emulator
from feedsync.store import Store
from feedsync.timing import first_run

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
  - {{name: first, type: csv, url: {dir}/first.txt, supplier: Demo, schedule: 3s,
      schedule_min_override: true}}
"""
SECOND = (
    "  - {name: second, type: csv, url: %s/second.txt, supplier: Demo, schedule: 3s,"
    " schedule_min_override: true}\n"
)


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

        # The CLI, without the secret, asks the daemon over its control socket.
        env_cli = {k: v for k, v in os.environ.items() if k != "CT_PASSWORD"}
        asked = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "feedsync.cli",
            "status",
            "--json",
            "-c",
            str(config),
            env=env_cli,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(asked.communicate(), 30)
        assert asked.returncode == 0 and orjson.loads(out)["source"] == "daemon", out

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
    # Two SIGHUPs, the second refused: each is RELOADING=1, then READY=1 again.
    reloads = [i for i, m in enumerate(messages) if m.startswith("RELOADING=1\nMONOTONIC_USEC=")]
    assert len(reloads) == 2
    assert all(any("READY=1" in m for m in messages[i + 1 :]) for i in reloads)
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


def test_notifier_never_blocks_on_a_systemd_that_does_not_read(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    # The queue takes /proc/sys/net/unix/max_dgram_qlen datagrams (10 by default);
    # a blocking sender would wait on the next one for as long as nobody reads.
    sender = threading.Thread(target=lambda: [notifier.watchdog() for _ in range(1000)])
    sender.start()
    sender.join(30)
    try:
        assert not sender.is_alive(), "notify blocked the event loop's thread"
        assert listener.recv(100) == b"WATCHDOG=1", "what fits is sent"
    finally:
        listener.close()
        sender.join()


# In-process daemons: a real store, scheduler (paused), client and server.

YEARLY = "  - {name: yearly, type: csv, url: %s/first.txt, supplier: Demo, schedule: '0 0 1 1 *'}\n"
HOURLY = "  - {name: hourly, type: csv, url: %s/first.txt, supplier: Demo, schedule: %s}\n"


def write_config(tmp_path: Path, url: str, feeds: str = "", cybertrace: str = "") -> Path:
    (tmp_path / "first.txt").write_text("a.example\n")
    path = tmp_path / "feedsync.yaml"
    text = CONFIG.format(url=url, state=tmp_path / "s.db", port=free_port(), dir=tmp_path)
    text = text.replace("  timeout: 5\n", "  timeout: 5\n" + cybertrace)
    path.write_text(text + feeds)
    return path


@pytest.fixture
async def daemon_at(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    made: list[Daemon] = []

    async def factory(path: Path) -> Daemon:
        loaded = configuration.load(path)
        daemon = Daemon(str(path), loaded, Store.open(loaded.state.path))
        made.append(daemon)
        await daemon.open()
        daemon.scheduler.start(paused=True)
        return daemon

    yield factory
    for daemon in made:
        await daemon.shutdown()
        daemon.store.close()


def next_runs(daemon: Daemon) -> dict[str, datetime]:
    return {job.id: job.next_run_time for job in daemon.scheduler.get_jobs()}


async def test_reload_keeps_each_unchanged_feeds_next_run(
    tmp_path: Path, emulator: Emulator, daemon_at: Callable[..., Any]
) -> None:
    feeds = YEARLY % tmp_path + HOURLY % (tmp_path, "1h")
    path = write_config(tmp_path, emulator.url, feeds)
    daemon = await daemon_at(path)
    await daemon._schedule()
    before = next_runs(daemon)
    assert set(before) == {"first", "yearly", "hourly"}
    for _ in range(50):
        await daemon.reload()
    assert next_runs(daemon) == before, "SIGHUPs moved no feed's next run"

    path.write_text(
        path.read_text()
        .replace("schedule: 3s", "schedule: 5s")
        .replace(HOURLY % (tmp_path, "1h"), HOURLY % (tmp_path, "2h"))
        .replace(YEARLY % tmp_path, "")
    )
    await daemon.reload()
    after = next_runs(daemon)
    assert set(after) == {"first", "hourly"}, "a removed feed's job goes"
    assert after["first"] > before["first"], "a changed schedule is taken"


def test_a_cron_feed_that_ran_waits_for_its_next_fire_time(tmp_path: Path) -> None:
    os.environ.setdefault("CT_PASSWORD", PASSWORD)
    loaded = configuration.load(write_config(tmp_path, "http://127.0.0.1:9", YEARLY % tmp_path))
    yearly = loaded.feed("yearly")
    now = datetime.now(UTC)
    assert first_run(yearly, None) >= now, "never run: due at once"
    assert first_run(yearly, time.time()) > now + timedelta(seconds=5), "not again at a restart"
    assert first_run(yearly, time.time() - 2 * 366 * 86400) < now + timedelta(seconds=5)


async def test_reload_keeps_the_old_client_when_the_new_one_cannot_be_built(
    tmp_path: Path,
    tls_emulator: Emulator,  # noqa: F811 -- the fixture imported above
    certificates: Path,  # noqa: F811
    daemon_at: Callable[..., Any],
) -> None:
    path = write_config(
        tmp_path, tls_emulator.url, cybertrace=f"  verify_tls: {certificates}/ca.pem\n"
    )
    daemon = await daemon_at(path)
    old_client, old_config = daemon.client, daemon.config
    (tmp_path / "not-pem.crt").write_text("this is no certificate\n")
    path.write_text(
        path.read_text().replace(f"{certificates}/ca.pem", str(tmp_path / "not-pem.crt"))
    )
    with capture_logs() as logged:
        await daemon.reload()
    [failed] = [e for e in logged if e["event"] == "config.reload_failed"]
    # The loader loads CA bundles itself (as `check` does): refused before any client.
    assert failed["log_level"] == "error" and "as a CA bundle" in failed["error"]
    assert daemon.client is old_client and daemon.config is old_config
    # A certificate and a key that are no pair load only in the client: still kept.
    pair = f"{certificates}/ca.pem\n  client_cert: {certificates}/server.pem\n"
    pair += f"  client_key: {certificates}/ca.key"
    path.write_text(path.read_text().replace(str(tmp_path / "not-pem.crt"), pair))
    with capture_logs() as logged:
        await daemon.reload()
    [failed] = [e for e in logged if e["event"] == "config.reload_failed"]
    assert failed["log_level"] == "error" and "do not load" in failed["error"]
    assert daemon.client is old_client and daemon.config is old_config
    await daemon.launch("first")
    await asyncio.wait_for(daemon.running["first"], 30)
    assert daemon.failures == 0, "cycles go on with the old client"
    assert "a.example" in tls_emulator.indicators("Demo")
    assert await daemon.ready() == []


async def test_endpoints_answer_while_the_store_thread_is_busy(
    tmp_path: Path, emulator: Emulator, daemon_at: Callable[..., Any]
) -> None:
    daemon = await daemon_at(write_config(tmp_path, emulator.url))
    await daemon.server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{daemon.server.port}"
    started, release = threading.Event(), threading.Event()

    def heavy() -> None:  # a cycle's store work that takes the thread for a long time
        started.set()
        release.wait(60)

    blocked = asyncio.ensure_future(daemon.store.call(heavy))
    try:
        await asyncio.to_thread(started.wait, 10)
        assert (await asyncio.wait_for(get(base + "/healthz"), 5))[0] == 200
        status, body = await asyncio.wait_for(get(base + "/readyz"), 5)
        assert b"state database" not in body, body
        status, body = await asyncio.wait_for(get(base + "/status"), 5)
        assert status == 200
        assert [f["feed"] for f in orjson.loads(body)["feeds"]] == ["first"]
    finally:
        release.set()
        await blocked


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` made read-only for this process: its write bits off, or, for
    root (whom file modes do not stop), the file system's immutable flag."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("l", [0])
        try:
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags)
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("l", [flags[0] | FS_IMMUTABLE_FL]))
        except OSError as exc:
            pytest.skip(f"running as root and {path.parent} takes no immutable flag: {exc}")
        try:
            yield
        finally:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


async def test_readyz_answers_503_while_the_state_database_is_read_only(
    tmp_path: Path, emulator: Emulator, daemon_at: Callable[..., Any]
) -> None:
    daemon = await daemon_at(write_config(tmp_path, emulator.url))
    await daemon.server.start("127.0.0.1", 0)
    readyz = f"http://127.0.0.1:{daemon.server.port}/readyz"
    status, body = await get(readyz)
    assert b"state database" not in body, body
    with read_only(Path(daemon.store.path)):
        status, body = await get(readyz)
        assert status == 503, body
        assert b"state database not writable" in body and b"s.db" in body, body
    status, body = await get(readyz)
    assert b"state database" not in body, "ready again once it is writable"


async def serving(problems: tuple[str, ...] = (), **options: Any) -> Server:
    async def status() -> dict[str, Any]:
        return {"feeds": []}

    async def ready() -> list[str]:
        return list(problems)

    server = Server(status=status, ready=ready, **options)
    await server.start("127.0.0.1", 0)
    return server


async def test_readyz_says_what_the_ready_check_finds() -> None:
    server = await serving(problems=("state database not writable: disk full",))
    try:
        status, body = await get(f"http://127.0.0.1:{server.port}/readyz")
        assert status == 503 and b"state database not writable: disk full" in body
    finally:
        await server.stop()


async def test_connections_are_bounded_and_idle_ones_closed() -> None:
    server = await serving(max_connections=8, idle_timeout=1)
    try:
        opened = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(40)]
        await eventually(lambda: server.connections == 8)
        answers = await asyncio.gather(
            *(asyncio.wait_for(reader.read(), 20) for reader, _ in opened)
        )
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == 32, "connections past the limit are answered and closed"
        assert answers.count(b"") == 8, "idle connections are closed by the server"
        for _, writer in opened:
            writer.close()
        await eventually(lambda: server.connections == 0)
        assert (await get(f"http://127.0.0.1:{server.port}/healthz"))[0] == 200
    finally:
        await server.stop()


def scraped(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


async def test_feed_series_exist_from_the_start_and_follow_each_run(
    tmp_path: Path, emulator: Emulator, daemon_at: Callable[..., Any]
) -> None:
    feeds = (
        f"  - {{name: exp_weekday, type: csv, url: {tmp_path}/first.txt, supplier: Demo,"
        " schedule: '0 6 * * 1-5'}\n"
        f"  - {{name: exp_broken, type: csv, url: {tmp_path}/absent.txt, supplier: Demo,"
        " schedule: 90m}\n"
    )
    daemon = await daemon_at(write_config(tmp_path, emulator.url, feeds))
    await daemon.server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{daemon.server.port}/metrics"
    await daemon._schedule()
    before = scraped((await get(base))[1])
    weekday, broken = (("feed", "exp_weekday"),), (("feed", "exp_broken"),)
    assert before[("feedsync_feed_interval_seconds", broken)] == 5400
    assert before[("feedsync_feed_interval_seconds", weekday)] == 3 * 86400, "Friday to Monday"
    nxt = before[("feedsync_feed_next_run_timestamp_seconds", weekday)]
    assert time.time() - 5 < nxt <= time.time() + 3 * 86400
    for result in ("ok", "unchanged", "held", "failed"):
        key = ("feedsync_feed_fetch_total", (("feed", "exp_broken"), ("result", result)))
        assert before[key] == 0, f"{result} counter exists before any run"
    assert before[("feedsync_feed_never_succeeded", broken)] == 0, "not tried yet"

    for name in ("exp_weekday", "exp_broken"):
        await daemon.launch(name)
        await asyncio.wait_for(daemon.running[name], 30)
    after = scraped((await get(base))[1])
    assert after[("feedsync_feed_never_succeeded", broken)] == 1
    assert after[("feedsync_feed_never_succeeded", weekday)] == 0
    assert after[("feedsync_feed_last_success_timestamp_seconds", weekday)] > time.time() - 60
    assert ("feedsync_feed_last_success_timestamp_seconds", broken) not in after

    path = write_config(tmp_path, emulator.url, "")
    await daemon.reload()
    assert path.exists()
    gone = scraped((await get(base))[1])
    assert ("feedsync_feed_interval_seconds", broken) not in gone, "a removed feed's series go"


async def test_a_feed_failing_at_the_start_shows_its_stage_at_once(
    tmp_path: Path, emulator: Emulator, daemon_at: Callable[..., Any]
) -> None:
    feeds = (
        f"  - {{name: exp_down, type: csv, url: {tmp_path}/absent.txt, supplier: Demo,"
        " schedule: 1d}\n"
    )
    path = write_config(tmp_path, emulator.url, feeds)
    assert await run_cli("sync", "-c", str(path), "exp_down") == 1
    # A daemon started now is a new process: no series but what the store says.
    metrics.FEED_FAILING.clear()
    daemon = await daemon_at(path)
    await daemon.server.start("127.0.0.1", 0)
    await daemon._schedule()
    shown = scraped((await get(f"http://127.0.0.1:{daemon.server.port}/metrics"))[1])
    down = (("feed", "exp_down"),)
    assert shown[("feedsync_feed_failing", (*down, ("stage", "fetch")))] == 1
    assert shown[("feedsync_feed_failing", (*down, ("stage", "parse")))] == 0
    assert shown[("feedsync_feed_failing", (("feed", "first"), ("stage", "fetch")))] == 0


async def test_auth_failing_is_set_by_401_and_cleared_by_an_accepted_request(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(tmp_path, emulator.url)
    monkeypatch.setenv("CT_PASSWORD", "not-the-password")
    refused = await daemon_at(path)
    await refused.launch("first")
    await asyncio.wait_for(refused.running["first"], 30)
    assert metrics.CYBERTRACE_AUTH_FAILING._value.get() == 1
    assert metrics.CYBERTRACE_UP._value.get() == 1, "a 401 is an answer"

    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    await refused.reload()
    await refused.launch("first")
    await asyncio.wait_for(refused.running["first"], 30)
    assert metrics.CYBERTRACE_AUTH_FAILING._value.get() == 0


async def test_readiness_sees_a_foreign_write_lock_but_not_its_own_cycle(
    tmp_path: Path, emulator: Emulator, daemon_at: Callable[..., Any]
) -> None:
    daemon = await daemon_at(write_config(tmp_path, emulator.url))
    assert await daemon.ready() == []
    holder = sqlite3.connect(daemon.store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # an admin's sqlite3 shell, a backup tool
    try:
        started = time.monotonic()
        [problem] = await daemon.ready()
        assert "write-locked" in problem and time.monotonic() - started < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await daemon.ready() == []

    inside, release = threading.Event(), threading.Event()

    def long_write() -> None:  # a heavy cycle's own transaction
        with daemon.store.transaction():
            inside.set()
            release.wait(30)

    writing = asyncio.ensure_future(daemon.store.call(long_write))
    try:
        await asyncio.to_thread(inside.wait, 10)
        assert await daemon.ready() == [], "our own write is work, not a problem"
    finally:
        release.set()
        await writing
