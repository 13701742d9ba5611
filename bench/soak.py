"""Soak: `feedsync run` for a while on short schedules; does it keep its memory and descriptors?

    .venv/bin/python bench/soak.py [--duration 600] [--rows 100000]

Runs the bundled emulator (`feedsync emulator`) and the daemon (`feedsync run`)
as processes of their own, and serves three feeds from this process on
127.0.0.1: a flapping feed (good, then HTTP 500, alternately), a feed that
always fails, and a feed of ``--rows`` rows that changes a little on every
fetch. The daemon's RSS (/proc/PID/status) and open descriptors (/proc/PID/fd)
are sampled once it has done its first sync of the large feed (the warm-up:
imports, SQLite's page cache filling, the first plan) and then every few
seconds; the first and last samples are printed.

Exit status 1 when, from the first sample to the last, RSS grew by more than
RSS_GROWTH_MB or the descriptors by more than FD_GROWTH, when the daemon
died, or when the large feed never synced again after the warm-up. The
limits are noise, not leaks: SQLite's page cache (64 MB) and temporary cache
(32 MB) may still be filling after the warm-up, glibc keeps freed arenas, and
a cycle running at the moment of a sample holds a few sockets and spool files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

RSS_GROWTH_MB = 48.0
FD_GROWTH = 8
SAMPLE_EVERY = 5.0
PASSWORD = "soak-Pa55"
CONFIG = """\
cybertrace:
  url: http://127.0.0.1:{emulator}
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 30
state:
  path: {state}
server:
  listen: 127.0.0.1:{server}
  shutdown_grace: 10
suppliers:
  Soak: {{confidence: 50}}
  Flaky: {{confidence: 50}}
feeds:
  - {{name: large, type: csv, url: {feeds}/large.txt, supplier: Soak, schedule: {large}s,
      schedule_min_override: true, max_delete_ratio: 1.0, timeout: 60}}
  - {{name: flapping, type: csv, url: {feeds}/flapping.txt, supplier: Flaky, schedule: 2s,
      schedule_min_override: true, max_delete_ratio: 1.0, timeout: 5}}
  - {{name: failing, type: csv, url: {feeds}/failing.txt, supplier: Flaky, schedule: 2s,
      schedule_min_override: true, timeout: 5}}
"""


class Feeds:
    """The feed server: what each fetch of each feed answers."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.fetches = {"large": 0, "flapping": 0, "failing": 0}
        self.app = web.Application()
        self.app.router.add_get("/large.txt", self.large)
        self.app.router.add_get("/flapping.txt", self.flapping)
        self.app.router.add_get("/failing.txt", self.failing)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.url = ""

    async def large(self, _request: web.Request) -> web.Response:
        # A hundredth of the rows turns over on every fetch: each cycle has work.
        turn = self.fetches["large"]
        self.fetches["large"] += 1
        churn = max(1, self.rows // 100)
        start = (turn * churn) % self.rows
        window = self.rows * 2
        body = "".join(f"host-{(start + i) % window}.soak.example\n" for i in range(self.rows))
        return web.Response(text=body)

    async def flapping(self, _request: web.Request) -> web.Response:
        self.fetches["flapping"] += 1
        if self.fetches["flapping"] % 2:
            return web.Response(status=500, text="flapping\n")
        return web.Response(text=f"flap-{self.fetches['flapping'] % 10}.soak.example\n")

    async def failing(self, _request: web.Request) -> web.Response:
        self.fetches["failing"] += 1
        return web.Response(status=503, text="down\n")

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"


def sample(pid: int) -> tuple[float, int]:
    """(RSS in MB, open descriptors) of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on port {port} after {seconds:g} s") from None
            await asyncio.sleep(0.2)
        else:
            writer.close()
            return


def synced(log: Path, feed: str) -> int:
    """How many cycles of ``feed`` the daemon has logged (ok or not)."""
    needle = f'"feed": "{feed}"'
    with log.open() as lines:
        return sum(1 for line in lines if '"feed.synced"' in line and needle in line)


def count(log: Path, event: str, result: str) -> int:
    with log.open() as lines:
        return sum(1 for line in lines if f'"{event}"' in line and f'"result": "{result}"' in line)


async def soak(duration: float, rows: int, work: Path) -> int:
    feeds = Feeds(rows)
    await feeds.start()
    emulator_port, server_port = free_port(), free_port()
    config = work / "feedsync.yaml"
    large_every = max(10, min(30, int(duration / 10)))
    config.write_text(
        CONFIG.format(
            emulator=emulator_port,
            state=work / "state.db",
            server=server_port,
            feeds=feeds.url,
            large=large_every,
        )
    )
    env = {**os.environ, "CT_PASSWORD": PASSWORD}
    cli = [sys.executable, "-m", "feedsync.cli", "--log-format", "json"]
    emulator_log = (work / "emulator.log").open("w")
    emulator = await asyncio.create_subprocess_exec(
        *cli[:3],
        "emulator",
        "--listen",
        f"127.0.0.1:{emulator_port}",
        "--password",
        PASSWORD,
        stdout=emulator_log,
        stderr=subprocess.STDOUT,
    )
    log = work / "daemon.log"
    daemon_log = log.open("w")
    daemon = await asyncio.create_subprocess_exec(
        *cli, "run", "-c", str(config), env=env, stderr=daemon_log
    )
    try:
        await wait_for_port(emulator_port)
        await wait_for_port(server_port)
        print(f"soak: {duration:g} s, large feed {rows} rows every {large_every} s; logs in {work}")
        warm = time.monotonic() + max(120.0, duration)
        while synced(log, "large") < 1:
            if daemon.returncode is not None or time.monotonic() > warm:
                print("soak: FAIL: the large feed's first sync did not finish")
                return 1
            await asyncio.sleep(0.5)
        first = sample(daemon.pid)
        large_before = count(log, "feed.synced", "ok")
        samples = [first]
        ends = time.monotonic() + duration
        while time.monotonic() < ends and daemon.returncode is None:
            await asyncio.sleep(min(SAMPLE_EVERY, max(0.0, ends - time.monotonic())))
            if daemon.returncode is None:
                samples.append(sample(daemon.pid))
        if daemon.returncode is not None:
            print(f"soak: FAIL: the daemon exited with {daemon.returncode}")
            return 1
        return report(log, samples, large_before, feeds)
    finally:
        for process in (daemon, emulator):
            if process.returncode is None:
                process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 30)
            if process.returncode is None:
                process.kill()
                await process.wait()
        daemon_log.close()
        emulator_log.close()
        await feeds.runner.cleanup()


def report(log: Path, samples: list[tuple[float, int]], ok_before: int, feeds: Feeds) -> int:
    (rss0, fd0), (rss1, fd1) = samples[0], samples[-1]
    peak = max(rss for rss, _ in samples)
    print(f"soak: {len(samples)} samples every {SAMPLE_EVERY:g} s after the warm-up")
    print(f"soak: rss start {rss0:.1f} MB  end {rss1:.1f} MB  peak {peak:.1f} MB")
    print(f"soak: fds start {fd0}  end {fd1}  max {max(fd for _, fd in samples)}")
    per_minute = samples[:: max(1, round(60 / SAMPLE_EVERY))]
    print("soak: rss each minute " + " ".join(f"{rss:.0f}" for rss, _ in per_minute) + " MB")
    middle = samples[len(samples) // 2][0]
    print(f"soak: rss growth in the second half {rss1 - middle:+.1f} MB")
    cycles = {name: synced(log, name) for name in feeds.fetches}
    print(
        "soak: cycles "
        + "  ".join(f"{name} {cycles[name]}" for name in cycles)
        + f"  (ok {count(log, 'feed.synced', 'ok')}, failed {count(log, 'feed.synced', 'failed')})"
    )
    failed = False
    if rss1 - rss0 > RSS_GROWTH_MB:
        print(f"soak: FAIL: RSS grew {rss1 - rss0:.1f} MB (limit {RSS_GROWTH_MB:g} MB)")
        failed = True
    if fd1 - fd0 > FD_GROWTH:
        print(f"soak: FAIL: descriptors grew by {fd1 - fd0} (limit {FD_GROWTH})")
        failed = True
    if count(log, "feed.synced", "ok") <= ok_before:
        print("soak: FAIL: no feed synced after the warm-up")
        failed = True
    if not failed:
        print("soak: ok")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds after warm-up")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the large feed")
    parser.add_argument("--keep", type=Path, help="a directory to keep the state and logs in")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(soak(args.duration, args.rows, args.keep))
    with tempfile.TemporaryDirectory(prefix="feedsync-soak-") as work:
        return asyncio.run(soak(args.duration, args.rows, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
