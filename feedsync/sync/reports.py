"""A cycle's reports of each feed and supplier, and what each feed's report records.

For a feed that is its run history row, its ``feed.synced`` summary line and
its metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from feedsync import logs, metrics
from feedsync.store import FeedRow, Run
from feedsync.store.guard import Change
from feedsync.store.pending import Sent
from feedsync.store.reconcile import Plan

log = logs.get("feedsync.sync")

FeedResult = Literal["ok", "unchanged", "held", "failed"]  # the feedsync_feed_fetch_total label
Stage = Literal["fetch", "parse", "store", "cybertrace"]  # where a failed cycle failed
STAGES: tuple[Stage, ...] = ("fetch", "parse", "store", "cybertrace")
RESULTS: tuple[FeedResult, ...] = ("ok", "unchanged", "held", "failed")


@dataclass(frozen=True, slots=True)
class FeedReport:
    """How one feed's cycle went."""

    feed: str
    supplier: str
    result: FeedResult
    change: Change = field(default_factory=Change)
    error: str | None = None
    seconds: float = 0.0
    stage: Stage | None = None  # where a failed cycle failed


@dataclass(frozen=True, slots=True)
class SupplierReport:
    """How one supplier's reconcile and upload went."""

    supplier: str
    planned: Plan = field(default_factory=Plan)
    sent: Sent = field(default_factory=Sent)
    pending: int = 0
    rejected: int = 0
    error: str | None = None
    seconds: float = 0.0
    preview: tuple[str, ...] = ()
    refreshed: int = 0


def run_of(report: FeedReport, finished: float) -> Run:
    """The history row of a feed's cycle, ``finished`` then (wall seconds); logs
    its summary line and sets its metrics."""
    change = report.change
    run = Run(
        feed=report.feed,
        started=finished - report.seconds,
        finished=finished,
        result=report.result,
        fetched=change.fetched,
        invalid=change.invalid,
        added=change.added,
        changed=change.changed,
        removed=0 if change.held else change.removed,
        held=change.removed if change.held else 0,
        error=report.error,
        stage=report.stage if report.result == "failed" else None,
    )
    _feed_metrics(report)
    # A failed feed needs someone; a held one waits for someone's --force.
    level = {"failed": "error", "held": "warning"}.get(report.result, "info")
    log.log(
        logs.LEVELS[level],
        "feed.synced",
        feed=report.feed,
        result=report.result,
        fetched=change.fetched,
        invalid=change.invalid,
        excluded=change.excluded_reasons or None,
        added=change.added,
        changed=change.changed,
        removed=run.removed,
        held=run.held,
        error=report.error,
        lines=change.lines or None,
        lines_read=change.lines_read if change.lines else None,
        context_undecodable=change.replaced or None,
        seconds=round(report.seconds, 3),
    )
    return run


def _feed_metrics(report: FeedReport) -> None:
    metrics.FEED_FETCH.labels(report.feed, report.result).inc()
    metrics.FETCH_DURATION.labels(report.feed).observe(report.seconds)
    for reason, count in report.change.invalid_reasons.items():
        metrics.FEED_INVALID.labels(report.feed, reason).inc(count)
    if report.result in ("ok", "unchanged", "held"):
        succeeded = time.time()
        metrics.FEED_LAST_SUCCESS.labels(report.feed).set(succeeded)
        metrics.FEED_AGE.labels(report.feed).set_function(lambda: time.time() - succeeded)
    if report.result == "ok":
        metrics.FEED_INDICATORS.labels(report.feed).set(report.change.fetched)
    if report.result in ("ok", "held"):
        metrics.set_excluded(report.feed, report.change.excluded_reasons)
    for stage in STAGES:
        metrics.FEED_FAILING.labels(report.feed, stage).set(1 if stage == report.stage else 0)
    held = report.result == "held"
    metrics.FEED_HELD.labels(report.feed).set(1 if held else 0)
    metrics.FEED_HELD_DELETIONS.labels(report.feed).set(report.change.removed if held else 0)


def feed_state_metrics(name: str, row: FeedRow | None, expect: float | None = None) -> None:
    """A feed's series as its stored state has them, so that they exist from the
    daemon's start (an alert cannot fire on a series that is absent until the
    feed next runs, a day later for a daily feed) and stay true between runs."""
    for result in RESULTS:
        metrics.FEED_FETCH.labels(name, result)  # a counter at 0: rate() needs it
    metrics.FEED_RETRIES.labels(name)
    never = row is not None and row.last_attempt is not None and row.last_success is None
    metrics.FEED_NEVER_SUCCEEDED.labels(name).set(1 if never else 0)
    if row is None:
        return
    metrics.FEED_INDICATORS.labels(name).set(row.indicators)
    changed = row.last_change
    if changed is not None:
        metrics.FEED_LAST_CHANGE.labels(name).set(changed)
    # Judged when scraped: a daily feed's series turns stale between its runs.
    metrics.FEED_UPSTREAM_STALE.labels(name).set_function(
        lambda: float(upstream_stale(changed, expect, time.time()))
    )
    # A run of a feedsync older than migration 11 says no stage: its next run will.
    if row.last_error is None or row.last_stage in STAGES or row.held_since is not None:
        for stage in STAGES:
            failing = row.last_error is not None and stage == row.last_stage
            metrics.FEED_FAILING.labels(name, stage).set(1 if failing else 0)
    succeeded = row.last_success
    if succeeded is not None:
        metrics.FEED_LAST_SUCCESS.labels(name).set(succeeded)
        metrics.FEED_AGE.labels(name).set_function(lambda: time.time() - succeeded)
    metrics.FEED_HELD.labels(name).set(1 if row.held_since is not None else 0)
    metrics.FEED_HELD_DELETIONS.labels(name).set(row.held_removals or 0)


def upstream_stale(last_change: float | None, expect: float | None, now: float) -> bool:
    """Whether a feed that should change within ``expect`` seconds has not."""
    return expect is not None and last_change is not None and now - last_change > expect


def supplier_state_metrics(supplier: str, counts: Mapping[str, int]) -> None:
    """A supplier's series as the store has them (``Store.counts``), so that they
    exist from the daemon's start: a backlog left by the last run is visible
    before the supplier's feeds next run, and rate() has its zero."""
    metrics.PENDING.labels(supplier).set(counts["add"] + counts["update"] + counts["delete"])
    metrics.REJECTED.labels(supplier).set(counts["rejected"])
    metrics.REFRESH_DUE.labels(supplier)  # 0 until a cycle of this process refreshes
    metrics.BYTES_SENT.labels(supplier)
    for op in ("add", "update", "delete"):
        metrics.CHANGES.labels(supplier, op)
