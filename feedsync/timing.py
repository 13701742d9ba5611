"""When a scheduled feed runs: its trigger, its first run after a start, its interval.

Its APScheduler trigger, its first run after a start, and how far apart its
runs are (what staleness is judged by). Below the daemon: ``status`` reads the
interval too."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from feedsync.config import FeedConfig

JITTER_FRACTION = 0.1
MAX_JITTER = 60


def trigger(feed: FeedConfig) -> BaseTrigger:
    """The feed's schedule, with jitter so feeds sharing a schedule do not align."""
    if feed.schedule.cron is not None:
        return CronTrigger.from_crontab(feed.schedule.cron, timezone=UTC)
    seconds = feed.schedule.seconds or 3600.0
    jitter = int(min(MAX_JITTER, seconds * JITTER_FRACTION)) or None
    return IntervalTrigger(seconds=seconds, jitter=jitter, timezone=UTC)


def interval_seconds(feed: FeedConfig, runs: int = 16) -> float:
    """How far apart the feed's runs are: its interval, or for a cron line the
    longest gap among its next ``runs`` fire times (what staleness is judged by:
    a weekday-only feed is not stale on a Sunday)."""
    if feed.schedule.cron is None:
        return feed.schedule.seconds or 3600.0
    cron = CronTrigger.from_crontab(feed.schedule.cron, timezone=UTC)
    times: list[datetime] = []
    previous = None
    now = datetime.now(UTC)
    for _ in range(runs):
        fire = cron.get_next_fire_time(previous, previous or now)
        if fire is None:
            break
        times.append(fire)
        previous = fire + timedelta(seconds=1)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    return max(gaps, default=366 * 86400.0)


def same_schedule(old: FeedConfig, new: FeedConfig) -> bool:
    return (old.schedule.seconds, old.schedule.cron) == (new.schedule.seconds, new.schedule.cron)


def first_run(feed: FeedConfig, last_attempt: float | None) -> datetime:
    """Due feeds run at startup; the others when their schedule comes round after
    their last attempt (a cron feed's next fire time after it, not now)."""
    now = datetime.now(UTC)
    if last_attempt is None:
        return now
    last = datetime.fromtimestamp(last_attempt, UTC)
    if feed.schedule.seconds is not None:
        return max(now, last + timedelta(seconds=feed.schedule.seconds))
    due = trigger(feed).get_next_fire_time(None, last + timedelta(seconds=1))
    return now if due is None else max(now, due)
