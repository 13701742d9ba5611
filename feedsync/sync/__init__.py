"""One sync cycle: fetch feeds, update snapshots, plan and upload per supplier.

Feeds are fetched concurrently under a bound, each within its timeout
(sync/fetching.py). Each supplier goes on as soon as its own feeds are fetched,
whatever the others' are doing: each feed's snapshot is written in a
transaction of its own (a feed that fails, however, leaves only itself
untouched), then the plan in another, so other feeds' store work gets the
store's thread in between; then the plan is sent. A dry run does the same
inside one transaction it rolls back, and sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Sequence

from feedsync import logs, metrics
from feedsync.config import Config
from feedsync.cybertrace import CyberTrace
from feedsync.errors import AuthError, CyberTraceError, StoreError
from feedsync.phases import Phases
from feedsync.progress import QUIET, Meter, Progress
from feedsync.redact import cause
from feedsync.sources import source_for
from feedsync.store import FeedRow, Store, forget_feed, journal, pending, record_run
from feedsync.store.bodies import Target
from feedsync.store.membership import members
from feedsync.store.pending import Sent
from feedsync.store.provenance import Provenance
from feedsync.store.reconcile import Plan, plan
from feedsync.sync.applying import Applier, failed
from feedsync.sync.fetching import (
    Fetched,
    Fetcher,
    SourceFactory,
    clear_spool,
    cycle_deadline,
    settle,
    spool_dir,
)
from feedsync.sync.reports import FeedReport, SupplierReport, run_of
from feedsync.sync.sending import Sender

log = logs.get("feedsync.sync")

__all__ = ["Cycle", "clear_spool", "metered_client", "spool_dir"]


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
        deadline: float | None = None,
        sources: SourceFactory = source_for,
        progress: Progress = QUIET.progress,
    ) -> None:
        self.progress = progress
        self.client = client
        self.deadline = deadline
        self.sources = sources
        self.config = config
        self.locks = locks if locks is not None else {}
        self.store = store
        self.clock = store.clock  # one clock: the store stamps what the cycle compares
        self.dry_run = dry_run
        self.force = force
        self.resync = resync
        self.spool = spool_dir(config)
        self.phases = Phases()
        self.applier = Applier(store, self.phases, force, progress, config.own_hosts())
        self.sender = Sender(config, store)

    async def run(self, names: Sequence[str] = ()) -> tuple[list[FeedReport], list[SupplierReport]]:
        started = time.monotonic()
        with metrics.CYCLE_DURATION.time():
            feeds, suppliers = await self._run(names)
            if not self.dry_run:
                await self._release_space()
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

    async def _release_space(self) -> None:
        """The pages this cycle's store work freed (acknowledged ``pending``, a shrunk
        snapshot) back to the file system when there are many, in short steps."""
        left = await self.store.release_space()
        metrics.STATE_DB_BYTES.set(left.file_bytes)
        metrics.STATE_DB_FREE_BYTES.set(left.free_bytes)

    async def _run(self, names: Sequence[str]) -> tuple[list[FeedReport], list[SupplierReport]]:
        feeds = [f for f in self.config.feeds if f.enabled and (not names or f.name in names)]
        deadline = self.deadline if self.deadline is not None else cycle_deadline(feeds)
        fetcher = Fetcher(
            self.store,
            self.spool,
            self.phases,
            deadline,
            sources=self.sources,
            progress=self.progress,
        )
        fetches = {f.name: asyncio.create_task(fetcher.fetch(f), name=f.name) for f in feeds}
        suppliers = list(dict.fromkeys(feed.supplier for feed in feeds))
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = self.client
                if client is None:
                    client = await stack.enter_async_context(metered_client(self.config))
                outcomes = await asyncio.gather(
                    *(
                        self._supplier_when_fetched(
                            client, s, [fetches[f.name] for f in feeds if f.supplier == s]
                        )
                        for s in suppliers
                    ),
                    return_exceptions=True,
                )
        finally:
            await settle(list(fetches.values()))
            self.progress.leave([f.name for f in feeds])
        return _collect(outcomes)

    async def _supplier_when_fetched(
        self, client: CyberTrace, supplier: str, fetches: list[asyncio.Task[Fetched]]
    ) -> tuple[list[FeedReport], SupplierReport]:
        """The supplier's stage, as soon as its own feeds are fetched: a slow feed
        of another supplier does not hold it back."""
        mine = list(await asyncio.gather(*fetches))
        meter = Meter(self.progress, tuple(item.feed.name for item in mine))
        async with self.locks.setdefault(supplier, asyncio.Lock()):
            try:
                return await self._supplier(client, supplier, mine, meter)
            except AuthError as exc:
                await self._contact(supplier, f"authentication failed: {exc}")
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return await self._supplier_failed(supplier, mine, exc)
            finally:
                # Done with: a supplier that waits on another's slow feed shows no stale phase.
                meter.progress.leave(meter.feeds)

    async def _supplier_failed(
        self, supplier: str, fetched: list[Fetched], exc: Exception
    ) -> tuple[list[FeedReport], SupplierReport]:
        """A supplier whose store work failed: its feeds' runs say so, the other
        suppliers go on."""
        error = str(exc) if isinstance(exc, StoreError) else cause(exc)
        trace = None if isinstance(exc, StoreError) else exc
        log.error("supplier.failed", supplier=supplier, error=error, exc_info=trace)
        reports = [failed(item, f"not applied: {error}", "store") for item in fetched]
        if not self.dry_run:
            try:
                await self.store.call(self._record, reports)
            except Exception as again:
                log.error("feed.run_not_recorded", supplier=supplier, error=cause(again))
        return reports, SupplierReport(supplier, error=error)

    async def _supplier(
        self, client: CyberTrace, supplier: str, fetched: list[Fetched], meter: Meter
    ) -> tuple[list[FeedReport], SupplierReport]:
        started = time.monotonic()
        try:
            version = await client.resolve_version()
        except CyberTraceError as exc:
            if isinstance(exc, AuthError):
                raise
            reports = [failed(item, f"not applied: {exc}", "cybertrace") for item in fetched]
            if not self.dry_run:
                await self.store.call(self._record, reports)
            gone = SupplierReport(supplier, error=str(exc), seconds=time.monotonic() - started)
            return reports, await self._finish(gone)
        target = await self._target(supplier, version)
        reports, planned, preview = await self._apply(target, fetched, meter)
        sent = Sent()
        error = None
        refreshed = 0
        if not self.dry_run:
            wall, cpu = time.monotonic(), time.process_time()
            try:
                sent, refreshed = await self.sender.send(client, target, meter)
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

    async def forget(self, row: FeedRow, why: str) -> SupplierReport:
        """Drop a feed's snapshot on an operator's word, then plan and send its
        supplier: what only that feed listed is deleted, the rest stays."""
        async with contextlib.AsyncExitStack() as stack:
            client = self.client
            if client is None:
                client = await stack.enter_async_context(metered_client(self.config))
            async with self.locks.setdefault(row.supplier, asyncio.Lock()):
                await self.store.call(self._forget, row, why)
                _, report = await self._supplier(client, row.supplier, [], Meter(self.progress, ()))
        return report

    def _forget(self, row: FeedRow, why: str) -> None:
        with self.store.transaction() as db:
            forget_feed(db, row.id, row.supplier, why)

    def _record(self, reports: list[FeedReport]) -> None:
        """Runs that never reached their snapshot still belong in the history."""
        with self.store.transaction() as db:
            for report in reports:
                record_run(db, run_of(report, self.clock.now()))

    async def _target(self, supplier: str, version: str) -> Target:
        merged = await members(
            self.config, self.store, supplier, force=self.force, dry_run=self.dry_run
        )
        unmark = None
        if supplier == "FalsePositive" and version in ("1.2", "1.3"):
            unmark = any(f.unmark_detections for f in self.config.feeds_of(supplier))
        return Target(
            supplier=supplier,
            feed_ids=tuple(row.id for _name, row in merged),
            feed_names=tuple(name for name, _row in merged),
            send_context=supplier != "FalsePositive",
            send_tags=version != "1.0",
            unmark_detections=unmark,
            provenance=_provenance(self.config) if supplier != "FalsePositive" else None,
        )

    async def _apply(
        self, target: Target, fetched: list[Fetched], meter: Meter
    ) -> tuple[list[FeedReport], Plan, tuple[str, ...]]:
        """Snapshots, then the plan: one store call each, so that other feeds'
        store work interleaves; a dry run does all of it in one call it rolls back."""
        if self.dry_run:
            return await self.store.call(self._apply_all, target, fetched, meter)
        reports = [await self.store.call(self._apply_one, item) for item in fetched]
        meter.enter("plan")
        planned = await self.store.call(self._plan, target)
        meter(planned.total)
        await self.store.call(self._prune_journal)
        return reports, planned, ()

    def _apply_all(
        self, target: Target, fetched: list[Fetched], meter: Meter
    ) -> tuple[list[FeedReport], Plan, tuple[str, ...]]:
        for item in fetched:
            self._row(item)
        with self.phases.timed("store"), self.store.transaction(rollback=True) as db:
            reports = [self.applier.apply(db, item) for item in fetched]
            meter.enter("plan")
            with self.phases.timed("plan"):
                planned = plan(db, target, resync=self.resync, eager=True)
            meter(planned.total)
            return reports, planned, pending.preview(db, target.supplier)

    def _apply_one(self, item: Fetched) -> FeedReport:
        """One feed's snapshot and run, committed on their own (the store's thread).
        A crash before the plan's commit loses nothing: the values it changed stay
        marked dirty, and the next plan takes them."""
        self._row(item)
        with self.phases.timed("store"), self.store.transaction() as db:
            return self.applier.apply(db, item)

    def _row(self, item: Fetched) -> None:
        # A fetch that failed before it reached the store has no row yet.
        if item.row is None:
            item.row = self.store.feed(item.feed.name, item.feed.supplier)

    def _plan(self, target: Target) -> Plan:
        """The cycle's plan (the store's thread), timed as its own phase; the
        replans of the upload stage (refresh, resync) count as upload."""
        with self.phases.timed("plan"):
            return self.sender.replan(target, None, self.resync, True, "resync (sync --resync)")

    def _prune_journal(self) -> None:
        state = self.config.state
        with self.store.transaction() as db:
            journal.prune(db, self.clock.now(), state.journal_max_age, state.journal_max_rows)

    async def _contact(self, supplier: str, error: str | None) -> None:
        # What `feedsync status` shows as CyberTrace's state; a dry run sends nothing
        # it could tell by, and losing this note must not fail the cycle.
        if self.dry_run:
            return
        try:
            await self.store.call(self.store.record_contact, supplier, error)
        except StoreError as exc:
            log.warning("supplier.contact_not_recorded", supplier=supplier, error=str(exc))

    async def _finish(self, report: SupplierReport) -> SupplierReport:
        await self._contact(report.supplier, report.error)
        counts = await self.store.call(
            functools.partial(self.store.counts, report.supplier, acked=False)
        )
        pending = counts["add"] + counts["update"] + counts["delete"]
        if not self.dry_run:
            metrics.PENDING.labels(report.supplier).set(pending)
            metrics.REJECTED.labels(report.supplier).set(counts["rejected"])
            for op in ("add", "update", "delete"):
                metrics.CHANGES.labels(report.supplier, op).inc(getattr(report.sent, op))
        # An error here is CyberTrace unreachable or refusing: changes wait undelivered.
        log.log(
            logs.LEVELS["error" if report.error else "info"],
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


def _provenance(config: Config) -> Provenance | None:
    fields = config.provenance
    if fields.feeds is None and fields.first_seen is None and fields.last_seen is None:
        return None
    return Provenance(fields.feeds, fields.first_seen, fields.last_seen)


def metered_client(config: Config) -> CyberTrace:
    """A CyberTrace client reporting to the metrics, not yet connected: ``async with``
    opens it (its session, TLS context and client certificate)."""
    return CyberTrace(
        config.cybertrace, observe=metrics.observe_request, on_retry=metrics.count_retry
    )


def _collect(
    outcomes: Sequence[tuple[list[FeedReport], SupplierReport] | BaseException],
) -> tuple[list[FeedReport], list[SupplierReport]]:
    """The suppliers' reports in configuration order; an exception that ends the
    cycle (AuthError: retrying cannot help) once every supplier is done."""
    feed_reports: list[FeedReport] = []
    supplier_reports: list[SupplierReport] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        feed_reports.extend(outcome[0])
        supplier_reports.append(outcome[1])
    return feed_reports, supplier_reports
