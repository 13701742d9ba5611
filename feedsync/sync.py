"""One sync cycle: fetch feeds, update snapshots, plan and upload per supplier.

Feeds are fetched concurrently. Per supplier, the snapshots of its fetched
feeds and the resulting plan are written in one transaction (each feed in a
savepoint, so one broken feed leaves only itself untouched), then the plan is
sent. A dry run does the same inside a transaction it rolls back, and sends
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from feedsync import logs, metrics
from feedsync.bootstrap import SupplierState, ensure_supplier, ensure_tags, planned_tags
from feedsync.config import Config, FeedConfig
from feedsync.cybertrace import CyberTrace
from feedsync.errors import AuthError, CyberTraceError, ParseError, SourceError, SupplierGone
from feedsync.fetch import Body, Validators
from feedsync.lines import LineFeed, forget_lines, replace_lines
from feedsync.model import Invalid
from feedsync.normalize import canonical_tags, normalized_batches
from feedsync.outcome import FeedReport, SupplierReport, run_of
from feedsync.phases import Phases
from feedsync.reconcile import Plan, Refresh, Target, plan
from feedsync.snapshot import Change, expire, patch, replace
from feedsync.sources import CsvSource, Source, source_for
from feedsync.store import FeedRow, Store, read_feed, record_run
from feedsync.upload import Sent, upload

log = logs.get("feedsync.sync")

FETCH_CONCURRENCY = 4
NORMALIZE_BATCH = 1000
INVALID_LOGGED = 5
PREVIEW = 10


@dataclass(slots=True)
class _Fetched:
    feed: FeedConfig
    row: FeedRow
    source: Source
    body: Body | None = None
    error: str | None = None
    started: float = 0.0


class Cycle:
    """One pass over some feeds and the suppliers they fill."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        dry_run: bool = False,
        force: bool = False,
        resync: bool = False,
        locks: dict[str, asyncio.Lock] | None = None,
        client: CyberTrace | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.locks = locks if locks is not None else {}
        self.store = store
        self.dry_run = dry_run
        self.force = force
        self.resync = resync
        self.spool = spool_dir(config)
        self.phases = Phases()

    async def run(self, names: Sequence[str] = ()) -> tuple[list[FeedReport], list[SupplierReport]]:
        started = time.monotonic()
        with metrics.CYCLE_DURATION.time():
            feeds, suppliers = await self._run(names)
        log.info(
            "cycle.finished",
            feeds=len(feeds),
            suppliers=len(suppliers),
            seconds=round(time.monotonic() - started, 3),
            requests=sum(s.sent.requests for s in suppliers),
            bytes_sent=sum(s.sent.bytes for s in suppliers),
            dry_run=self.dry_run,
            **self.phases.fields(),
        )
        return feeds, suppliers

    async def _run(self, names: Sequence[str]) -> tuple[list[FeedReport], list[SupplierReport]]:
        feeds = [f for f in self.config.feeds if f.enabled and (not names or f.name in names)]
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)
        fetched = await asyncio.gather(*(self._fetch(feed, gate) for feed in feeds))
        suppliers = list(dict.fromkeys(feed.supplier for feed in feeds))
        feed_reports: list[FeedReport] = []
        supplier_reports: list[SupplierReport] = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = self.client
                if client is None:
                    client = await stack.enter_async_context(connect(self.config))
                for supplier in suppliers:
                    mine = [f for f in fetched if f.feed.supplier == supplier]
                    async with self.locks.setdefault(supplier, asyncio.Lock()):
                        reports, report = await self._supplier(client, supplier, mine)
                    feed_reports.extend(reports)
                    supplier_reports.append(report)
        finally:
            for item in fetched:
                if item.body is not None:
                    item.body.discard()
        return feed_reports, supplier_reports

    async def _fetch(self, feed: FeedConfig, gate: asyncio.Semaphore) -> _Fetched:
        async with gate:
            row = await self.store.call(self.store.feed, feed.name, feed.supplier)
            item = _Fetched(feed, row, source_for(feed), started=time.monotonic())
            cpu = time.process_time()
            try:
                previous = Validators() if row.held_since is not None else row.validators
                item.body = await item.source.fetch(previous, self.spool)
            except SourceError as exc:
                item.error = exc.message
                log.warning("feed.fetch_failed", feed=feed.name, error=exc.message)
            wall = time.monotonic() - item.started
            self.phases.add("fetch", wall, time.process_time() - cpu)
            return item

    async def _supplier(
        self, client: CyberTrace, supplier: str, fetched: list[_Fetched]
    ) -> tuple[list[FeedReport], SupplierReport]:
        started = time.monotonic()
        try:
            version = await client.resolve_version()
        except CyberTraceError as exc:
            if isinstance(exc, AuthError):
                raise
            reports = [_failed(item, f"not applied: {exc}", "cybertrace") for item in fetched]
            if not self.dry_run:
                await self.store.call(self._record, reports)
            failed = SupplierReport(supplier, error=str(exc), seconds=time.monotonic() - started)
            return reports, await self._finish(failed)
        target = await self._target(supplier, version)
        reports, planned, preview = await self.store.call(self._apply, target, fetched)
        sent = Sent()
        error = None
        refreshed = 0
        if not self.dry_run:
            wall, cpu = time.monotonic(), time.process_time()
            try:
                sent, refreshed = await self._upload(client, target)
            except AuthError:
                raise
            except CyberTraceError as exc:
                error = str(exc)
            finally:
                self.phases.add("upload", time.monotonic() - wall, time.process_time() - cpu)
        report = SupplierReport(
            supplier,
            planned=planned,
            sent=sent,
            error="; ".join(filter(None, [error, *sent.errors])) or None,
            seconds=time.monotonic() - started,
            preview=preview,
            refreshed=refreshed,
        )
        return reports, await self._finish(report)

    def _record(self, reports: list[FeedReport]) -> None:
        """Runs that never reached their snapshot still belong in the history."""
        with self.store.transaction() as db:
            for report in reports:
                record_run(db, run_of(report))

    async def _target(self, supplier: str, version: str) -> Target:
        rows = []
        feeds = self.config.feeds_of(supplier)
        for feed in feeds:
            rows.append(await self.store.call(self.store.feed, feed.name, supplier))
        unmark = None
        if supplier == "FalsePositive" and version in ("1.2", "1.3"):
            unmark = any(f.unmark_detections for f in self.config.feeds_of(supplier))
        return Target(
            supplier=supplier,
            feed_ids=tuple(row.id for row in rows),
            feed_names=tuple(feed.name for feed in feeds),
            send_context=supplier != "FalsePositive",
            send_tags=version != "1.0",
            unmark_detections=unmark,
        )

    def _apply(
        self, target: Target, fetched: list[_Fetched]
    ) -> tuple[list[FeedReport], Plan, tuple[str, ...]]:
        """Snapshots and plan in one transaction (runs on the store's thread)."""
        reports = []
        with self.phases.timed("store"), self.store.transaction(rollback=self.dry_run) as db:
            for item in fetched:
                reports.append(self._apply_feed(item))
            planned = plan(db, target, resync=self.resync)
            preview = _preview(db, target.supplier) if self.dry_run else ()
        return reports, planned, preview

    def _apply_feed(self, item: _Fetched) -> FeedReport:
        feed = item.feed
        expired = expire(self.store.db, item.row, time.time())
        if expired:
            log.info("feed.expired", feed=feed.name, count=expired)
            item.row = read_feed(self.store.db, item.row.id)
        if item.error is not None or item.body is None:
            if item.error is not None:
                report = _failed(item, item.error, "fetch")
            else:
                report = FeedReport(feed.name, feed.supplier, "unchanged")
            record_run(self.store.db, run_of(report))
            return report
        static = canonical_tags(feed.tags)
        logged = [0]

        def on_invalid(invalid: Invalid) -> None:
            logged[0] += 1
            if logged[0] <= INVALID_LOGGED:
                log.warning(
                    "feed.invalid",
                    feed=feed.name,
                    line=invalid.line,
                    reason=invalid.reason,
                    value=invalid.value[:120],
                )

        try:
            with self.store.savepoint() as db:
                change = self._snapshot(db, item, static, on_invalid)
                if change.fetched == 0 and change.invalid > 0:
                    reasons = ", ".join(f"{r} {n}" for r, n in change.invalid_reasons.items())
                    raise ParseError(
                        feed.name, f"no valid indicator in {change.invalid} rows ({reasons})"
                    )
        except SourceError as exc:
            report = _failed(item, exc.message, "parse")
        else:
            result = "held" if change.held else "ok"
            report = FeedReport(
                feed.name,
                feed.supplier,
                result,
                change,
                change.held_reason,
                time.monotonic() - item.started,
            )
        record_run(self.store.db, run_of(report))
        return report

    def _snapshot(
        self,
        db: sqlite3.Connection,
        item: _Fetched,
        static: tuple[str, ...],
        on_invalid: Callable[[Invalid], None],
    ) -> Change:
        """Apply a fetched body to the feed's snapshot: line by line where the
        source reads lines (lines.py), record by record otherwise."""
        feed, body = item.feed, item.body
        assert body is not None
        if isinstance(item.source, CsvSource) and body.mode == "replace":
            job = LineFeed(
                feed=item.row,
                path=body.path,
                options=item.source.options,
                static_tags=static,
                validators=body.validators,
                max_delete_ratio=feed.max_delete_ratio,
                force=self.force,
                on_invalid=on_invalid,
                phases=self.phases,
            )
            return replace_lines(db, job)
        apply = patch if body.mode == "patch" else replace
        records = itertools.chain.from_iterable(
            normalized_batches(item.source.records(body), static, self.phases, NORMALIZE_BATCH)
        )
        change = apply(
            db,
            item.row,
            records,
            max_delete_ratio=feed.max_delete_ratio,
            force=self.force,
            validators=body.validators,
            on_invalid=on_invalid,
        )
        if not change.held:
            forget_lines(db, item.row)
        return change

    async def _upload(self, client: CyberTrace, target: Target) -> tuple[Sent, int]:
        try:
            return await self._send_plan(client, target)
        except SupplierGone as exc:
            # Deleted by an operator while we sent: create it again and refill it now.
            log.warning("supplier.vanished", supplier=target.supplier, error=str(exc))
            return await self._send_plan(client, target)

    async def _send_plan(self, client: CyberTrace, target: Target) -> tuple[Sent, int]:
        supplier = target.supplier
        info = await ensure_supplier(client, self.config.supplier_settings(supplier))
        if info.state is SupplierState.CREATED:
            acked = (await self.store.call(self.store.counts, supplier))["acked"]
            if acked:
                # It was deleted by hand: CyberTrace holds none of what we recorded.
                log.warning("supplier.vanished", supplier=supplier, acked=acked)
                await self.store.call(self._replan, target, None, True)
        refreshed = 0
        if info.retention > 0:
            span = info.retention * 60 * self.config.cybertrace.refresh_fraction
            replanned = await self.store.call(self._replan, target, Refresh(span, time.time()))
            refreshed = replanned.refresh
            metrics.REFRESH_DUE.labels(supplier).set(refreshed)
            if refreshed:
                log.info("supplier.refresh", supplier=supplier, due=refreshed)
        repair = None
        if target.send_tags:

            async def repair() -> bool:
                # A refused request may name a tag an operator deleted since.
                needed = await self.store.call(planned_tags, self.store.db, supplier)
                return bool(await ensure_tags(client, needed, self.config.cybertrace.tag_weight))

            await repair()
        return await upload(self.store, client, supplier, repair), refreshed

    def _replan(self, target: Target, refresh: Refresh | None, resync: bool = False) -> Plan:
        with self.store.transaction() as db:
            return plan(db, target, resync=resync, refresh=refresh)

    async def _finish(self, report: SupplierReport) -> SupplierReport:
        counts = await self.store.call(
            functools.partial(self.store.counts, report.supplier, acked=False)
        )
        pending = counts["add"] + counts["update"] + counts["delete"]
        if not self.dry_run:
            metrics.PENDING.labels(report.supplier).set(pending)
            metrics.REJECTED.labels(report.supplier).set(counts["rejected"])
            for op in ("add", "update", "delete"):
                metrics.CHANGES.labels(report.supplier, op).inc(getattr(report.sent, op))
        log.info(
            "supplier.synced",
            supplier=report.supplier,
            planned=report.planned.total,
            added=report.sent.add,
            updated=report.sent.update,
            deleted=report.sent.delete,
            rejected=report.sent.rejected,
            pending=pending,
            error=report.error,
            seconds=round(report.seconds, 3),
            dry_run=self.dry_run,
        )
        return dataclasses.replace(report, pending=pending, rejected=counts["rejected"])


def connect(config: Config) -> CyberTrace:
    """A CyberTrace client reporting to the metrics (open it with ``async with``)."""
    return CyberTrace(
        config.cybertrace, observe=metrics.observe_request, on_retry=metrics.count_retry
    )


def clear_spool(config: Config) -> None:
    """Delete bodies a killed process left behind. Call once at process start:
    the store lock means no other feedsync spools here, and no cycle runs yet."""
    for stale in spool_dir(config).glob("*.body"):
        stale.unlink(missing_ok=True)


def spool_dir(config: Config) -> Path:
    return Path(config.state.path).resolve().parent / "spool"


def _failed(item: _Fetched, error: str, stage: str) -> FeedReport:
    return FeedReport(
        item.feed.name,
        item.feed.supplier,
        "failed",
        error=error,
        stage=stage,
        seconds=time.monotonic() - item.started,
    )


def _preview(db: sqlite3.Connection, supplier: str) -> tuple[str, ...]:
    lines: list[str] = []
    for op in ("add", "update", "delete"):
        rows = db.execute(
            "SELECT value FROM pending WHERE supplier = ? AND op = ? ORDER BY id LIMIT ?",
            (supplier, op, PREVIEW),
        ).fetchall()
        lines.extend(f"{op} {row[0]}" for row in rows)
    return tuple(lines)
