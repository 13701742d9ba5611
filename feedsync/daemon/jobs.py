"""The scheduler's jobs, one per enabled feed, and the gauges that show them.

A job names its feed and nothing else: the cycle reads the feed's settings from
the configuration current when it runs, so on a reload a feed whose schedule is
unchanged keeps its job and so its next run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from feedsync import logs, metrics
from feedsync.config import Config
from feedsync.errors import FeedsyncError
from feedsync.store import Store
from feedsync.sync.reports import feed_state_metrics, supplier_state_metrics
from feedsync.timing import first_run, interval_seconds, same_schedule, trigger

log = logs.get("feedsync.daemon")

Launch = Callable[[str], Awaitable[None]]


async def schedule(
    scheduler: AsyncIOScheduler,
    launch: Launch,
    reader: Store,
    config: Config,
    previous: Config | None = None,
) -> None:
    """A job per enabled feed of ``config`` (``previous`` is the one reloaded
    from, None at the start), then every gauge of those feeds and suppliers."""
    rows = {row.name: row for row in await reader.call(reader.feeds)}
    before = {f.name: f for f in previous.feeds if f.enabled} if previous else {}
    wanted = {f.name: f for f in config.feeds if f.enabled}
    for job in scheduler.get_jobs():
        if job.id not in wanted:
            job.remove()
            forget(job.id)
    for name, feed in wanted.items():
        old = before.get(name)
        if old is not None and same_schedule(old, feed) and scheduler.get_job(name):
            continue
        row = rows.get(name)
        scheduler.add_job(
            launch,
            trigger=trigger(feed),
            args=[name],
            id=name,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=first_run(feed, row.last_attempt if row else None),
        )
    for supplier in dict.fromkeys(f.supplier for f in wanted.values()):
        counts = await reader.call(functools.partial(reader.counts, supplier, acked=False))
        supplier_state_metrics(supplier, counts)
    for name, feed in wanted.items():
        feed_state_metrics(name, rows.get(name), feed.expect_change_within)
        metrics.FEED_INTERVAL.labels(name).set(interval_seconds(feed))
        next_run_metric(scheduler, name)


async def feed_metrics(
    scheduler: AsyncIOScheduler, reader: Store, config: Config, names: Sequence[str]
) -> None:
    """The feeds' state series from the store (one read for all of them), and
    when each runs next."""
    try:
        rows = {row.name: row for row in await reader.call(reader.feeds)}
    except FeedsyncError as exc:
        log.warning("metrics.store_unreadable", feeds=list(names), error=str(exc))
        return
    expected = {f.name: f.expect_change_within for f in config.feeds}
    for name in names:
        feed_state_metrics(name, rows.get(name), expected.get(name))
        next_run_metric(scheduler, name)


def next_runs(scheduler: AsyncIOScheduler) -> dict[str, float]:
    """When each scheduled feed runs next (a Unix time), by feed name."""
    return {
        job.id: job.next_run_time.timestamp()
        for job in scheduler.get_jobs()
        if job.next_run_time is not None
    }


def next_run_metric(scheduler: AsyncIOScheduler, name: str) -> None:
    job = scheduler.get_job(name)
    if job is not None and job.next_run_time is not None:
        metrics.FEED_NEXT_RUN.labels(name).set(job.next_run_time.timestamp())


def forget(name: str) -> None:
    """Drop the schedule gauges of a feed no longer scheduled."""
    for gauge in (metrics.FEED_INTERVAL, metrics.FEED_NEXT_RUN, metrics.FEED_NEVER_SUCCEEDED):
        with contextlib.suppress(KeyError):
            gauge.remove(name)
