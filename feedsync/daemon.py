"""``feedsync run``: every feed on its schedule, until told to stop.

APScheduler only decides *when*: a job hands its feed to our own set of tasks
and returns, so shutdown, overlap and failure handling stay ours. A feed never
runs twice at once; the per-supplier locks in ``Cycle`` keep two feeds of one
supplier from interleaving their plans; one failing feed touches no other.
SIGTERM/SIGINT stop scheduling and give running cycles a grace period; SIGHUP
reloads the configuration, keeping the old one if the new one is invalid.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from feedsync import config as configuration
from feedsync import logs
from feedsync.config import Config, FeedConfig
from feedsync.cybertrace import CyberTrace
from feedsync.errors import ConfigError, FeedsyncError
from feedsync.server import Server
from feedsync.store import Store
from feedsync.sync import Cycle, clear_spool, connect
from feedsync.systemd import Notifier

log = logs.get("feedsync.daemon")

JITTER_FRACTION = 0.1
MAX_JITTER = 60


class Daemon:
    """The long-running process: scheduler, feed tasks, HTTP server."""

    def __init__(self, path: str, loaded: Config, store: Store) -> None:
        self.path = path
        self.config = loaded
        self.store = store
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.stopping = asyncio.Event()
        self._reloads: set[asyncio.Task[None]] = set()
        self.client: CyberTrace | None = None
        self.server = Server(self)
        self.notifier = Notifier()
        self.cycles = 0
        self.failures = 0

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        await self.server.start(self.config.server.host, self.config.server.port)
        self.client = await connect(self.config).__aenter__()
        await self._schedule()
        self.scheduler.start()
        log.info("daemon.started", feeds=len(self.config.feeds), config=self.path)
        self.notifier.ready(self.summary())
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(), name="watchdog")
        await self.stopping.wait()
        self.notifier.stopping()
        watchdog.cancel()
        await self.shutdown()

    def summary(self) -> str:
        """The one-line STATUS= systemd shows."""
        return (
            f"{len(self.config.feeds)} feeds, {len(self.running)} running,"
            f" {self.cycles} cycles, {self.failures} failed"
        )

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def launch(self, name: str) -> None:
        """Start the feed's cycle unless it is still running (the scheduler's job;
        a coroutine, so APScheduler runs it on our loop, not in a thread)."""
        if name in self.running:
            log.info("feed.skipped", feed=name, reason="previous cycle still running")
            return
        task = asyncio.get_running_loop().create_task(self._cycle(name), name=f"feed:{name}")
        self.running[name] = task
        task.add_done_callback(lambda _t: self.running.pop(name, None))

    async def _cycle(self, name: str) -> None:
        failed = True
        try:
            cycle = Cycle(self.config, self.store, locks=self.locks, client=self.client)
            feeds, suppliers = await cycle.run([name])
            failed = any(f.result == "failed" for f in feeds) or any(s.error for s in suppliers)
        except FeedsyncError as exc:
            log.error("feed.cycle_failed", feed=name, error=str(exc))
        except Exception:
            log.exception("feed.cycle_crashed", feed=name)
        self.cycles += 1
        self.failures += failed
        self.notifier.status(self.summary())

    def _reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """SIGHUP: take the new configuration, or keep the old one and say why."""
        try:
            fresh = await asyncio.to_thread(configuration.load, self.path)
        except ConfigError as exc:
            log.error("config.reload_failed", config=self.path, error=str(exc))
            return
        if fresh.state.path != self.config.state.path:
            log.warning("config.reload_ignored", key="state.path", reason="needs a restart")
        if fresh.cybertrace != self.config.cybertrace:
            # One session per CyberTrace: a new one for the new settings; the old one
            # closes once the cycles still using it are done.
            if self.client is not None:
                self._retire(self.client)
            self.client = await connect(fresh).__aenter__()
        self.config = fresh
        await self._schedule()
        log.info("config.reloaded", feeds=len(fresh.feeds))

    async def _schedule(self) -> None:
        rows = {row.name: row for row in await self.store.call(self.store.feeds)}
        self.scheduler.remove_all_jobs()
        for feed in self.config.feeds:
            if not feed.enabled:
                continue
            row = rows.get(feed.name)
            self.scheduler.add_job(
                self.launch,
                trigger=trigger(feed),
                args=[feed.name],
                id=feed.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=first_run(feed, row.last_attempt if row else None),
            )

    def _retire(self, client: CyberTrace) -> None:
        running = list(self.running.values())

        async def close() -> None:
            if running:
                await asyncio.wait(running)
            await client.__aexit__(None, None, None)

        task = asyncio.get_running_loop().create_task(close(), name="retire-client")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def shutdown(self) -> None:
        self.scheduler.shutdown(wait=False)
        running = list(self.running.values())
        if running:
            grace = self.config.server.shutdown_grace
            log.info("daemon.draining", feeds=len(running), grace=grace)
            _done, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.gather(*self._reloads, return_exceptions=True)
        if self.client is not None:
            await self.client.__aexit__(None, None, None)
        await self.server.stop()
        log.info("daemon.stopped")


def trigger(feed: FeedConfig) -> BaseTrigger:
    """The feed's schedule, with jitter so feeds sharing a schedule do not align."""
    if feed.schedule.cron is not None:
        return CronTrigger.from_crontab(feed.schedule.cron, timezone=UTC)
    seconds = feed.schedule.seconds or 3600.0
    jitter = int(min(MAX_JITTER, seconds * JITTER_FRACTION)) or None
    return IntervalTrigger(seconds=seconds, jitter=jitter, timezone=UTC)


def first_run(feed: FeedConfig, last_attempt: float | None) -> datetime:
    """Due feeds run at startup; the others when their interval comes round."""
    now = datetime.now(UTC)
    if last_attempt is None or feed.schedule.seconds is None:
        return now
    due = datetime.fromtimestamp(last_attempt, UTC) + timedelta(seconds=feed.schedule.seconds)
    return max(now, due)


def run(path: str) -> int:
    """Load, open, serve until stopped; exit 0 after a clean shutdown."""
    loaded = configuration.load(path)
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    store = Store.open(loaded.state.path)
    clear_spool(loaded)
    started = time.monotonic()
    try:
        asyncio.run(Daemon(path, loaded, store).serve())
    finally:
        store.close()
        log.info("daemon.exit", uptime=round(time.monotonic() - started, 1))
    return 0
