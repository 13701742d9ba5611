"""Progress of long work: phases and counters a cycle reports while it runs."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import PASSWORD, ConfigFactory, FeedServer
from test_daemon import daemon_at, write_config  # noqa: F401 -- a fixture

from feedsync import render as report
from feedsync import status, terminal
from feedsync.config import Config
from feedsync.daemon.service import Daemon
from feedsync.emulator import Emulator
from feedsync.emulator.faults import Faults
from feedsync.errors import ControlError
from feedsync.progress import Board, Phase, Relayed
from feedsync.store import Store
from feedsync.sync import Cycle

ROWS = 20_000
BATCH = 500
FEED = """\
- {{name: big, type: csv, url: {url}, supplier: Big}}
- {{name: small, type: csv, url: {small}, supplier: Small}}
"""


class Recorder:
    """The progress seam as a test sees it: every report, in order, by feed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int, int | None]] = []
        self.totals: dict[str, int] = {}
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def enter(self, feeds: Sequence[str], phase: Phase, total: int | None = None) -> None:
        with self._lock:
            for feed in feeds:
                self.totals[feed] = 0
                self.events.append((feed, phase, 0, total))

    def add(self, feeds: Sequence[str], done: int, batches: int = 0) -> None:
        assert done >= 0 and batches >= 0
        with self._lock:
            self.threads.add(threading.current_thread().name)
            for feed in feeds:
                self.totals[feed] += done
                self.events.append((feed, "+", self.totals[feed], batches))

    def leave(self, feeds: Sequence[str]) -> None:
        with self._lock:
            self.events.extend((feed, "left", 0, None) for feed in feeds)

    def phases(self, feed: str) -> list[str]:
        seen: list[str] = []
        for name, phase, _done, _total in self.events:
            if name == feed and phase != "+" and (not seen or seen[-1] != phase):
                seen.append(phase)
        return seen

    def counts(self, feed: str, phase: str) -> list[int]:
        """The running counts within the feed's last entry into ``phase``."""
        out: list[int] = []
        current = None
        for name, kind, done, _total in self.events:
            if name != feed:
                continue
            if kind != "+":
                current = kind
                if kind == phase:
                    out = []
            elif current == phase:
                out.append(done)
        return out

    def total(self, feed: str, phase: str) -> int | None:
        entries = [t for n, k, _d, t in self.events if n == feed and k == phase]
        return entries[-1]


def rows(count: int) -> str:
    return "".join(f"20.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(count))


async def test_a_large_feed_reports_each_phase_with_counters_that_only_grow(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    body = rows(ROWS)
    url = feed_server.set("big.txt", body)
    small = feed_server.set("small.txt", "a.example\n")
    loaded = make_config(
        emulator.url,
        FEED.format(url=url, small=small),
        cybertrace=f"max_batch_indicators: {BATCH}\n",
    )
    recorder = Recorder()
    feeds, suppliers = await Cycle(loaded, open_store(loaded), progress=recorder).run()
    assert [f.result for f in feeds] == ["ok", "ok"]
    assert len(emulator.indicators("Big")) == ROWS

    assert recorder.phases("big") == ["queued", "fetch", "parse", "plan", "upload", "left"]
    fetched = recorder.counts("big", "fetch")
    assert fetched == sorted(fetched)
    assert fetched[-1] == len(body) == recorder.total("big", "fetch")
    read = recorder.counts("big", "parse")
    assert read == sorted(read) and len(read) > 1 and read[-1] == ROWS
    assert recorder.counts("big", "plan") == [ROWS]
    sent = recorder.counts("big", "upload")
    assert sent == sorted(sent) and len(sent) == ROWS // BATCH and sent[-1] == ROWS
    assert recorder.total("big", "upload") == ROWS
    batches = [b for n, k, _d, b in recorder.events if n == "big" and k == "+" and b]
    assert sum(batches) == ROWS // BATCH
    # The rows are counted where they are read: on the store's thread, off the loop.
    assert any(name.startswith("feedsync-store") for name in recorder.threads)
    # Another supplier's feed has its own track, left when its supplier is done.
    assert recorder.phases("small")[-1] == "left"
    assert suppliers[0].sent.add == ROWS


async def test_the_board_shows_a_running_feed_and_forgets_it_after(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url = feed_server.set("big.txt", rows(50))
    small = feed_server.set("small.txt", "a.example\n")
    loaded = make_config(emulator.url, FEED.format(url=url, small=small))
    board = Board()
    board.enter(["big"], "upload", 1000)
    board.add(["big"], 120, 3)
    assert board.line() == "big: upload 120/1000 indicators (3 batches)"
    assert board.by_feed()["big"]["done"] == 120
    board.leave(["big"])
    await Cycle(loaded, open_store(loaded), progress=board).run()
    assert board.line() == "" and board.by_feed() == {}


async def test_a_dry_run_says_how_many_more_its_lists_leave_out(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url = feed_server.set("big.txt", rows(25))
    small = feed_server.set("small.txt", "a.example\n")
    loaded = make_config(emulator.url, FEED.format(url=url, small=small))
    feeds, suppliers = await Cycle(loaded, open_store(loaded), dry_run=True).run()
    text = report.cycle(feeds, suppliers, dry_run=True)
    assert "  add ... and 15 more" in text, text
    assert text.count("  add 20.") == 10
    # A list that is whole says nothing more.
    assert "  add a.example" in text and text.count("more") == 1


def terminal_run(argv: list[str], env: dict[str, str], tty: bool) -> tuple[int, str, str]:
    """``feedsync ARGV`` with stderr on a pseudo-terminal (or a pipe): exit
    code, stdout, and all that reached stderr."""
    master, slave = pty.openpty() if tty else os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "feedsync.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    seen = bytearray()

    def drain() -> None:
        # Read while it runs: a terminal nobody reads fills up and stops the writer.
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = process.communicate(timeout=120)
    reader.join(30)
    os.close(master)
    return process.returncode, out.decode(), seen.decode(errors="replace")


async def test_sync_on_a_terminal_draws_a_progress_line_and_clears_it(
    emulator: Emulator, tmp_path: Path, make_config: ConfigFactory
) -> None:
    feed = tmp_path / "big.txt"
    feed.write_text(rows(2000))
    (tmp_path / "small.txt").write_text("a.example\n")
    make_config(
        emulator.url,
        FEED.format(url=feed, small=tmp_path / "small.txt"),
        cybertrace="max_batch_indicators: 50\nconcurrency: 1\n",
    )
    emulator.faults = Faults(latency=0.05)
    config_path = str(tmp_path / "feedsync.yaml")
    env = {**os.environ, "CT_PASSWORD": PASSWORD, "COLUMNS": "200"}
    code, out, err = await asyncio.to_thread(terminal_run, ["sync", "-c", config_path], env, True)
    assert code == 0, err
    # After each clearing: a frame (no newline: redrawn in place) or a log line.
    pieces = err.split(terminal.CLEAR)
    drawn = [p for p in pieces[1:] if p and "\n" not in p]
    assert any(re.fullmatch(r"big: upload \d+/2000 indicators \(\d+ batches\)", f) for f in drawn)
    assert len(drawn) < 2000 // 50  # redrawn a few times a second, not per batch
    # Cleared at the end: the last frame is followed by a clearing.
    assert pieces[-1] not in drawn, err[-300:]
    assert "feed big" in out and "\x1b[K" not in out
    feed.write_text(rows(4000))
    code, _, err = await asyncio.to_thread(
        terminal_run, ["sync", "-c", config_path, "--log-level", "warning"], env, True
    )
    pieces = err.split(terminal.CLEAR)
    assert code == 0 and len(pieces) > 2 and pieces[-1] == "", err[-300:]

    feed.write_text(rows(2100))
    code, _, err = await asyncio.to_thread(
        terminal_run, ["--log-format", "json", "sync", "-c", config_path], env, True
    )
    assert code == 0 and "\r" not in err.replace("\r\n", "\n"), err[-300:]
    feed.write_text(rows(2200))
    code, _, err = await asyncio.to_thread(terminal_run, ["sync", "-c", config_path], env, False)
    assert code == 0 and "\r" not in err, err[-300:]


async def test_the_daemon_shows_a_running_cycles_progress_in_status_and_to_systemd(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    path = write_config(tmp_path, emulator.url, cybertrace="  max_batch_indicators: 20\n")
    (tmp_path / "first.txt").write_text(rows(400))
    # 20 batches, each answered after 0.1 s: an upload a test can watch.
    emulator.faults = Faults(latency=0.1, max_concurrent=1)
    daemon: Daemon = await daemon_at(path)
    daemon.progress_every = 0.05
    messages: list[str] = []

    async def collect() -> None:
        # Read as systemd does: a datagram queue nobody reads blocks the sender.
        while True:
            messages.append((await asyncio.get_running_loop().sock_recv(listener, 4096)).decode())

    collector = asyncio.create_task(collect())
    telling = asyncio.create_task(daemon.tell_progress())
    await daemon.server.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{daemon.server.port}/status"
    try:
        await daemon.launch("first")
        during: dict[str, Any] | None = None
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                async with session.get(url) as response:
                    snap = orjson.loads(await response.read())
                shown = snap["feeds"][0]["progress"]
                if shown and shown["phase"] == "upload" and 0 < shown["done"] < shown["total"]:
                    during = snap
                    break
                await asyncio.sleep(0.05)
            assert during is not None, "no upload in progress seen in /status"
            shown = during["feeds"][0]["progress"]
            assert shown["total"] == 400 and shown["unit"] == "indicators" and shown["batches"]
            assert "first: running for" in status.as_text(during)
            assert "first: upload " in daemon.summary()
            await asyncio.wait(list(daemon.running.values()))
            async with session.get(url) as response:
                after = orjson.loads(await response.read())
        assert after["feeds"][0]["progress"] is None
        assert "first:" not in daemon.summary()
    finally:
        telling.cancel()
        collector.cancel()
        listener.close()
    assert any(re.search(r"STATUS=.*first: upload \d+/400 indicators", m) for m in messages)


async def test_a_sync_steered_through_the_daemon_shows_the_daemons_progress_line(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
) -> None:
    path = write_config(tmp_path, emulator.url, cybertrace="  max_batch_indicators: 20\n")
    (tmp_path / "first.txt").write_text(rows(400))
    emulator.faults = Faults(latency=0.1, max_concurrent=1)
    daemon: Daemon = await daemon_at(path)
    await daemon.control.start(daemon.store.path)
    env = {**os.environ, "CT_PASSWORD": PASSWORD, "COLUMNS": "200"}
    # The daemon holds the store: this sync is the daemon's, asked over its socket.
    code, out, err = await asyncio.to_thread(
        terminal_run, ["sync", "-c", str(path), "first"], env, True
    )
    assert code == 0, err
    assert "feed first" in out and "added    400" in out, out
    pieces = err.split(terminal.CLEAR)
    drawn = [p for p in pieces[1:] if p and "\n" not in p]
    assert any(re.fullmatch(r"first: upload \d+/400 indicators \(\d+ batches\)", f) for f in drawn)
    assert pieces[-1] not in drawn, "the line is cleared at the end"


def test_a_relayed_line_keeps_the_last_one_when_the_daemon_does_not_answer() -> None:
    answers: list[Any] = [
        {"feeds": [
            {"feed": "a", "progress": {"summary": "parse 10 rows"}},
            {"feed": "b", "progress": None},
            {"feed": "c", "progress": {"summary": "queued"}},
        ]},
        ControlError("gone"),
    ]  # fmt: skip

    def read() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    now = [0.0]
    relay = Relayed(read, ("a", "b"), every=1.0, clock=lambda: now[0])
    assert relay.line() == "a: parse 10 rows", "only the feeds asked for"
    now[0] = 0.5
    assert relay.line() == "a: parse 10 rows" and len(answers) == 1, "read at most once a second"
    now[0] = 1.5
    assert relay.line() == "a: parse 10 rows" and not answers
