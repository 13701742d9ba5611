"""``feedsync run``: every feed on its schedule, until told to stop.

APScheduler only decides *when*: a job hands its feed to our own set of tasks
and returns, so shutdown, overlap and failure handling stay ours. A feed never
runs twice at once; the per-supplier locks in ``Cycle`` keep two feeds of one
supplier from interleaving their plans; one failing feed touches no other.
SIGTERM/SIGINT stop scheduling and give running cycles a grace period; SIGHUP
reloads the configuration, keeping the old one (and its CyberTrace client) if
the new one is invalid or its client cannot be built, and keeping each feed's
next run unless its schedule changed. The HTTP server answers from a
read-only connection of its own and from memory, never behind cycle work.
The control socket (control.py) runs a CLI's ``sync`` here, after any cycle
of the same feeds still running, and holds, releases and reloads. The jobs
and their gauges are jobs.py's, a cycle's reply cycles.py's, and what is
opened before serving opening.py's.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from feedsync import config as configuration
from feedsync import logs, metrics, status, why
from feedsync import render as report
from feedsync.config import Config
from feedsync.cybertrace import CyberTrace
from feedsync.daemon import jobs
from feedsync.daemon.control import Reply, runnable
from feedsync.daemon.cycles import run_cycle
from feedsync.daemon.listener import ControlServer
from feedsync.daemon.opening import check_store, open_client
from feedsync.daemon.server import Server
from feedsync.daemon.systemd import Notifier
from feedsync.errors import (
    ConfigError,
    ControlError,
    FeedsyncError,
    StoreError,
)
from feedsync.progress import Board
from feedsync.store import Store
from feedsync.store.journal import SHOWN
from feedsync.store.readiness import store_problem
from feedsync.sync import clear_spool, forgetting

log = logs.get("feedsync.daemon")

PROGRESS_EVERY = 5.0  # seconds between STATUS= updates while a cycle runs


class Daemon:
    """The long-running process: scheduler, feed tasks, HTTP server."""

    def __init__(self, path: str, loaded: Config, store: Store) -> None:
        self.path = path
        self.config = loaded
        self.store = store
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.running: dict[str, asyncio.Task[Any]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.stopping = asyncio.Event()
        self._reloads: set[asyncio.Task[Any]] = set()
        self.client: CyberTrace | None = None
        self.reader: Store | None = None
        self.server = Server(status=self.status, ready=self.ready, why=self.why)
        self.control = ControlServer(self)
        self.held: dict[str, float] = {}  # feeds on hold, and since when (the store's copy)
        self.notifier = Notifier()
        self.cycles = 0
        self.failures = 0
        self.progress = Board()  # the running cycles', shown in /status and STATUS=
        self.progress_every = PROGRESS_EVERY

    async def open(self) -> None:
        """The CyberTrace client and the server's read-only store, before serving."""
        self.client = await open_client(self.config)
        self.reader = await asyncio.to_thread(Store.open, self.store.path, readonly=True)
        self.held = await self.store.call(self.store.holds)
        # Until this process's first request, CyberTrace is as the last exchange left
        # it: at the gauge's 0, a restart whose feeds run hours later paged
        # FeedsyncCyberTraceDown and failed /readyz with CyberTrace answering.
        answered = await self.reader.call(self.reader.last_contact_ok)
        if answered is not None:
            metrics.CYBERTRACE_UP.set(1 if answered else 0)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        await self.open()
        try:
            await self.server.start(self.config.server.host, self.config.server.port)
        except BaseException:
            await self.close()
            raise
        metrics.CONFIG_RELOAD_OK.set(1)
        metrics.CONFIG_RELOAD_TIME.set(time.time())
        try:
            await self.control.start(self.store.path)
        except ControlError as exc:
            # Scheduling goes on; only steering from the CLI is lost.
            log.error("control.unavailable", error=str(exc))
        await self._schedule()
        self.scheduler.start()
        log.info("daemon.started", feeds=len(self.config.feeds), config=self.path)
        self.notifier.ready(self.summary())
        loop = asyncio.get_running_loop()
        watchdog = loop.create_task(self._watchdog(), name="watchdog")
        telling = loop.create_task(self.tell_progress(), name="progress")
        await self.stopping.wait()
        self.notifier.stopping()
        watchdog.cancel()
        telling.cancel()
        await self.shutdown()

    async def status(self) -> dict[str, Any]:
        """What /status shows, read on the reader's own thread and connection."""
        reader = self.reader
        if reader is None:
            raise StoreError("the daemon is not serving yet")
        snapshot = await reader.call(status.snapshot, self.config, reader)
        return status.with_schedule(snapshot, self.next_runs(), self.progress.by_feed())

    async def why(self, value: str) -> tuple[int, dict[str, Any]]:
        """What /why shows: ``feedsync why``'s exit code and answer, read like /status."""
        reader = self.reader
        if reader is None:
            raise StoreError("the daemon is not serving yet")
        return await reader.call(why.read, reader, value, SHOWN)

    def next_runs(self) -> dict[str, float]:
        return jobs.next_runs(self.scheduler)

    async def ready(self) -> list[str]:
        """What keeps the daemon from doing its work, from memory and quick checks."""
        problems = []
        if self.client is None:
            problems.append("no CyberTrace client")
        store = await store_problem(self.store)
        if store:
            problems.append(store)
        return problems

    def summary(self) -> str:
        """The one-line STATUS= systemd shows, with what the running cycles do."""
        line = (
            f"{len(self.config.feeds)} feeds, {len(self.running)} running,"
            f" {self.cycles} cycles, {self.failures} failed"
        )
        doing = self.progress.line()
        return f"{line}, {doing}" if doing else line

    async def tell_progress(self) -> None:
        """STATUS= every few seconds while a cycle runs: `systemctl status` is
        where a first sync of hours is watched. Only changes: systemd keeps the last."""
        if not self.notifier.enabled:
            return
        told = ""
        while True:
            await asyncio.sleep(self.progress_every)
            line = self.summary()
            if self.running and line != told:
                self.notifier.status(line)
                told = line

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
            # A run missed: the feed's cycles take longer than its schedule allows.
            log.warning("feed.skipped", feed=name, reason="previous cycle still running")
            return
        if name in self.held:
            log.info("feed.on_hold", feed=name)
            return
        self._start([name], self._cycle([name]))

    def _start(self, names: list[str], work: Any) -> asyncio.Task[Reply]:
        task: asyncio.Task[Reply] = asyncio.get_running_loop().create_task(
            work, name=f"feed:{','.join(names)}"
        )
        for name in names:
            self.running[name] = task
        task.add_done_callback(functools.partial(self._done, names))
        return task

    def _done(self, names: list[str], task: asyncio.Task[Reply]) -> None:
        for name in names:
            if self.running.get(name) is task:
                del self.running[name]
        # Told here, not at the cycle's end: there the cycle still counts as
        # running, and systemd kept "1 running" for hours after the last one.
        self.notifier.status(self.summary())

    async def steer_sync(
        self, names: Sequence[str], *, force: bool, resync: bool, dry_run: bool
    ) -> Reply:
        """A CLI's ``sync`` run here: after every cycle of its feeds still running
        (never two cycles of one feed at once), and answered when done."""
        unknown = self._unknown(names)
        if unknown:
            return Reply(error=unknown, exit=2)
        wanted = runnable(self.config.feeds, names, self.held)
        if not wanted:
            return Reply(output="nothing to sync: every enabled feed is on hold")
        while busy := {self.running[n] for n in wanted if n in self.running}:
            await asyncio.wait(busy)
        if self.stopping.is_set():
            return Reply(error="the daemon is stopping", exit=1)
        work = self._cycle(wanted, force=force, resync=resync, dry_run=dry_run)
        return await self._start(wanted, work)

    async def steer_hold(self, name: str, *, hold: bool) -> Reply:
        unknown = self._unknown([name])
        if unknown:
            return Reply(error=unknown, exit=2)
        changed = await self.store.call(self.store.hold if hold else self.store.release, name)
        self.held = await self.store.call(self.store.holds)
        return Reply(output=report.hold_message(name, hold=hold, changed=changed))

    async def steer_reload(self) -> Reply:
        problem = await self.reload()
        if problem:
            return Reply(error=f"reload failed, the running configuration stays: {problem}", exit=1)
        return Reply(output=f"configuration reloaded ({len(self.config.feeds)} feeds)")

    async def steer_forget(self, name: str) -> Reply:
        """A CLI's ``forget``, under the supplier's lock (after a cycle of it running)."""
        done = await forgetting.forget(
            self.config, self.store, name, client=self.client, locks=self.locks
        )
        return Reply(done.output, done.error, done.exit)

    def _unknown(self, names: Sequence[str]) -> str:
        known = {feed.name for feed in self.config.feeds}
        return report.unknown_feeds([n for n in names if n not in known], known)

    async def _cycle(
        self, names: list[str], *, force: bool = False, resync: bool = False, dry_run: bool = False
    ) -> Reply:
        reply, failed = await run_cycle(
            self.config,
            self.store,
            names,
            locks=self.locks,
            client=self.client,
            progress=self.progress,
            force=force,
            resync=resync,
            dry_run=dry_run,
        )
        self.cycles += 1
        self.failures += failed
        if self.reader is not None:
            await jobs.feed_metrics(self.scheduler, self.reader, self.config, names)
        return reply

    def _reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> str:
        """SIGHUP: take the new configuration, or keep the old one and say why
        (the reason is returned too: "" when the new one was taken). systemd sees
        the unit reloading until the outcome is known (RELOADING=1, then READY=1);
        whether the file was taken is the reload gauges'."""
        self.notifier.reloading()
        try:
            problem = await self._reload()
        finally:
            self.notifier.ready(self.summary())
        metrics.CONFIG_RELOAD_OK.set(0 if problem else 1)
        if not problem:
            metrics.CONFIG_RELOAD_TIME.set(time.time())
        return problem

    async def _reload(self) -> str:
        try:
            fresh = await asyncio.to_thread(configuration.load, self.path)
        except ConfigError as exc:
            log.error("config.reload_failed", config=self.path, error=str(exc))
            return str(exc)
        if fresh.state.path != self.config.state.path:
            log.warning("config.reload_ignored", key="state.path", reason="needs a restart")
        if fresh.cybertrace != self.config.cybertrace:
            # One session per CyberTrace: the new one is built (its TLS files loaded)
            # before the old one is retired, so a bad file leaves the daemon as it was.
            try:
                client = await open_client(fresh)
            except FeedsyncError as exc:
                log.error(
                    "config.reload_failed", config=self.path, error=str(exc), kept="old config"
                )
                return str(exc)
            if self.client is not None:
                self._retire(self.client)
            self.client = client
        previous, self.config = self.config, fresh
        await self._schedule(previous)
        log.info("config.reloaded", feeds=len(fresh.feeds))
        return ""

    async def _schedule(self, previous: Config | None = None) -> None:
        assert self.reader is not None
        await jobs.schedule(self.scheduler, self.launch, self.reader, self.config, previous)

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
        if self.scheduler.running:  # a daemon that failed to start is shut down too
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
        await self.close()
        log.info("daemon.stopped")

    async def close(self) -> None:
        """The client, the server and the reader's connection, whichever are open."""
        if self.client is not None:
            await self.client.__aexit__(None, None, None)
        await self.server.stop()
        await self.control.stop()
        if self.reader is not None:
            await asyncio.to_thread(self.reader.close)


def run(path: str) -> int:
    """Load, open, serve until stopped; exit 0 after a clean shutdown."""
    loaded = configuration.load(path)
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    store = Store.open(loaded.state.path)
    started = time.monotonic()
    try:
        check_store(store)
        clear_spool(loaded)
        asyncio.run(Daemon(path, loaded, store).serve())
    except FeedsyncError as exc:
        log.error("daemon.exit", uptime=round(time.monotonic() - started, 1), error=str(exc))
        raise
    else:
        log.info("daemon.exit", uptime=round(time.monotonic() - started, 1))
    finally:
        store.close()
    return 0
