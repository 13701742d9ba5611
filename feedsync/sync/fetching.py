"""Fetching a cycle's feeds: concurrently under a bound, each within its deadline.

A feed's ``timeout`` bounds its whole download, its retries included, however
the server dribbles it (aiohttp's own timeouts bound each read, which a byte a
second never trips). The cycle's deadline bounds the rest: the wait for a fetch slot and
the store's answer. Whatever a source raises fails that feed alone: the
others go on, and the failure is in the feed's report and run history.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from feedsync import logs
from feedsync.config import Config, FeedConfig
from feedsync.errors import SourceError, StoreError
from feedsync.model import Body, Validators
from feedsync.paths import component
from feedsync.phases import Phases
from feedsync.progress import DOWNLOAD, QUIET, Meter, Progress
from feedsync.redact import cause, redact_url
from feedsync.safety.allowlist import AllowlistError, fingerprint_with
from feedsync.safety.warninglists import fingerprint
from feedsync.sources import Source, source_for
from feedsync.sources.retry import DEADLINE
from feedsync.store import FeedRow, Store, statefile

log = logs.get("feedsync.sync")

FETCH_CONCURRENCY = 4
# Beyond the downloads: a slot freed late, the store's answer, the spool's clean-up.
DEADLINE_SLACK = 30.0

SourceFactory = Callable[[FeedConfig], Source]


@dataclass(slots=True)
class Fetched:
    """One feed's fetch: its body, or why there is none (``row`` is None when
    the store was not reached)."""

    feed: FeedConfig
    row: FeedRow | None
    source: Source | None
    body: Body | None = None
    error: str | None = None
    started: float = 0.0


def cycle_deadline(feeds: Sequence[FeedConfig], concurrency: int = FETCH_CONCURRENCY) -> float:
    """Seconds a cycle's fetching may take: the waves of ``concurrency`` fetches
    it needs, each as long as the slowest feed's timeout allows."""
    if not feeds:
        return DEADLINE_SLACK
    waves = math.ceil(len(feeds) / concurrency)
    return waves * max(feed.timeout for feed in feeds) + DEADLINE_SLACK


class Fetcher:
    """Fetches the feeds of one cycle, at most ``concurrency`` at a time, all of
    them done or failed ``deadline`` seconds after it was made."""

    def __init__(
        self,
        store: Store,
        spool: Path,
        phases: Phases,
        deadline: float,
        *,
        sources: SourceFactory = source_for,
        concurrency: int = FETCH_CONCURRENCY,
        progress: Progress = QUIET.progress,
    ) -> None:
        self.progress = progress
        self.store = store
        self.spool = spool
        self.phases = phases
        self.sources = sources
        self.deadline = deadline
        self._ends = asyncio.get_running_loop().time() + deadline
        self._gate = asyncio.Semaphore(concurrency)

    async def fetch(self, feed: FeedConfig) -> Fetched:
        """The feed's body or its failure; never raises (but for cancellation)."""
        item = Fetched(feed, None, None, started=time.monotonic())
        meter = Meter(self.progress, (feed.name,))
        meter.enter("queued")
        try:
            async with asyncio.timeout_at(self._ends) as scope:
                async with self._gate:
                    meter.enter("fetch")
                    await self._fetch(item, meter)
        except TimeoutError:
            if not scope.expired():
                raise
            self._fail(item, f"the cycle's fetch deadline of {self.deadline:g} s passed")
        if item.error is not None:
            await self._clean(item)
        return item

    async def _fetch(self, item: Fetched, meter: Meter) -> None:
        feed = item.feed
        cpu = time.process_time()
        try:
            item.row = await self.store.call(self.store.feed, feed.name, feed.supplier)
            item.source = self.sources(feed)
            # A held fetch, or one under changed exclusions, is read again whatever its body.
            again = item.row.held_since is not None or item.row.exclusions != _fingerprint(feed)
            previous = Validators() if again else item.row.validators
            item.body = await self._download(item.source, feed, previous, meter)
        except SourceError as exc:
            self._fail(item, exc.message)
        except TimeoutError:
            where = redact_url(feed.url)
            limit = f"{feed.timeout:g} s"
            self._fail(item, f"cannot fetch {where}: no complete body within {limit}")
        except StoreError as exc:  # said in full already: no traceback to add
            item.error = str(exc)
            log.error("feed.fetch_failed", feed=feed.name, error=item.error)
        except Exception as exc:
            # Not translated where it arose (a source's bug, a full disk, a hostile body):
            # still this feed's failure alone.
            item.error = cause(exc)
            log.error("feed.fetch_failed", feed=feed.name, error=item.error, exc_info=exc)
        finally:
            wall = time.monotonic() - item.started
            self.phases.add("fetch", wall, time.process_time() - cpu)

    async def _download(
        self, source: Source, feed: FeedConfig, previous: Validators, meter: Meter
    ) -> Body | None:
        ends = min(self._ends, asyncio.get_running_loop().time() + feed.timeout)
        # The source's retries wait only while the feed's time lasts (feedsync.sources.retry).
        token = DEADLINE.set(ends)
        counting = DOWNLOAD.set(meter)
        try:
            async with asyncio.timeout(feed.timeout):
                try:
                    return await source.fetch(previous, self.spool)
                except TimeoutError as exc:
                    # A source's own timer, not this scope's (whose expiry arrives as a
                    # cancellation and leaves the block as the TimeoutError _fetch reports).
                    raise SourceError(feed.name, f"timed out: {cause(exc)}") from exc
        finally:
            DOWNLOAD.reset(counting)
            DEADLINE.reset(token)

    def _fail(self, item: Fetched, error: str) -> None:
        item.error = error
        log.warning("feed.fetch_failed", feed=item.feed.name, error=error)

    async def _clean(self, item: Fetched) -> None:
        """A fetch cut short leaves nothing behind: a source that spools under a
        fixed name may not have removed a partial body itself."""
        if item.body is not None:
            item.body.discard()
            item.body = None
        await asyncio.to_thread(discard_spooled, self.spool, item.feed.name)


def clear_spool(config: Config) -> None:
    """Delete bodies a killed process left behind. Call once at process start:
    the store lock means no other feedsync spools here, and no cycle runs yet."""
    for stale in spool_dir(config).glob("*.body"):
        stale.unlink(missing_ok=True)


def spool_dir(config: Config) -> Path:
    """Downloads in flight, in the state database's own directory: another
    instance's state beside it has its own."""
    return statefile.private_dir(config.state.path) / "spool"


async def settle(fetches: list[asyncio.Task[Fetched]]) -> None:
    """Fetches no supplier waited for (the cycle failed) stop; every body goes."""
    for task in fetches:
        task.cancel()
    for task in fetches:
        with contextlib.suppress(asyncio.CancelledError):
            item = await task
            if item.body is not None:
                item.body.discard()


def discard_spooled(spool: Path, feed: str) -> None:
    """Delete the spool files of ``feed`` (a feed is never fetched twice at once,
    so none of them is in use); another feed's names never match."""
    own = re.compile(rf"{re.escape(component(feed))}\.(?:[a-z0-9_]{{8}}|misp|taxii|events)\.body")
    try:
        names = [p for p in spool.iterdir() if own.fullmatch(p.name)]
    except OSError:
        return  # no spool (or not a directory): nothing was spooled
    for path in names:
        path.unlink(missing_ok=True)


def _fingerprint(feed: FeedConfig) -> str:
    base = fingerprint(feed.exclude.builtin, feed.exclude.warninglists, feed.expand_cidr)
    try:
        return fingerprint_with(base, feed.allowlist)
    except AllowlistError:
        return ""  # read again: applying it fails the feed with the file's error

