"""Applying a fetched body to its feed's snapshot: the store's half of a feed's cycle.

It runs on the store's thread, inside the caller's transaction (whose handle it
only passes on to the store's functions).

Whatever the parser raises fails the feed alone: its savepoint undoes what it
wrote, and its run records the cause. The store's own failures are not the
feed's and end the transaction.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from feedsync import logs
from feedsync.config import CsvConfig
from feedsync.errors import ParseError, SourceError, StoreError
from feedsync.model import Invalid, OnReplaced
from feedsync.normalize import canonical_tags, normalized_batches
from feedsync.phases import Phases
from feedsync.progress import QUIET, Meter, Progress
from feedsync.redact import cause
from feedsync.safety.allowlist import with_allowlist
from feedsync.safety.exclusions import EXCLUDED, Screen
from feedsync.safety.poison import canaries
from feedsync.safety.warninglists import screen_for
from feedsync.store import Connection, Store, read_feed, record_exclusions, record_run
from feedsync.store.guard import Change
from feedsync.store.linediff import LineFeed, forget_lines, replace_lines
from feedsync.store.poison import Poison
from feedsync.store.snapshot import expire, patch, replace, revalidate
from feedsync.sync.fetching import Fetched
from feedsync.sync.reports import FeedReport, FeedResult, Stage, run_of

log = logs.get("feedsync.sync")

NORMALIZE_BATCH = 1000
INVALID_SAMPLES = 3
REPLACED_LOGGED = 5  # rows whose context had undecodable bytes, logged one by one


@dataclass(frozen=True, slots=True)
class Applier:
    """Applies fetched feeds to their snapshots for one cycle."""

    store: Store
    phases: Phases
    force: bool = False
    progress: Progress = QUIET.progress
    own_hosts: tuple[str, ...] = ()  # what the canary set "own_hosts" stands for

    def apply(self, db: Connection, item: Fetched) -> FeedReport:
        """Apply the feed's fetched body (or its failure) to its snapshot and
        record the run, inside the caller's transaction ``db``."""
        feed = item.feed
        assert item.row is not None
        expired = expire(db, item.row, self.store.clock.now())
        if expired:
            log.info("feed.expired", feed=feed.name, count=expired)
            item.row = read_feed(db, item.row.id)
        if item.error is not None or item.body is None or item.body.same:
            report = self._unchanged(db, item)
        else:
            report = self._parsed(db, item)
        record_run(db, run_of(report, self.store.clock.now()))
        return report

    def _unchanged(self, db: Connection, item: Fetched) -> FeedReport:
        """A fetch that failed or brought nothing new (a same body's new validators kept)."""
        if item.error is None and item.body is not None:
            assert item.row is not None
            revalidate(db, item.row, item.body.validators)
        return _unapplied(item)

    def _parsed(self, db: Connection, item: Fetched) -> FeedReport:
        """The body read into the feed's snapshot, in a savepoint the feed's failure undoes."""
        feed = item.feed
        meter = Meter(self.progress, (feed.name,))
        meter.enter("parse")
        static = canonical_tags(feed.tags)
        invalid = InvalidRows()
        # Only csv feeds decode bytes themselves, and so only they replace any.
        csv = feed.options if isinstance(feed.options, CsvConfig) else None
        replaced = ReplacedRows(feed.name, csv.encoding if csv else "")
        rejected = Change()
        try:
            with self.store.savepoint() as unit:
                change = self._snapshot(unit, item, static, invalid.add, replaced, meter=meter)
                if change.fetched == 0 and change.invalid > 0:
                    # Counted although the savepoint undoes the rows: a feed whose every
                    # row is invalid is the one its invalid counter must show.
                    rejected = _rejected(change)
                    reasons = ", ".join(f"{r} {n}" for r, n in change.invalid_reasons.items())
                    raise ParseError(
                        feed.name, f"no valid indicator in {change.invalid} rows ({reasons})"
                    )
        except SourceError as exc:
            report = failed(item, exc.message, "parse", rejected)
        except StoreError:
            raise  # the store's failure, not the feed's: its transaction is gone
        except Exception as exc:
            # A parser's bug or a hostile body (nesting past the recursion limit, a
            # list where an object belongs): the savepoint undid the feed's changes.
            report = failed(item, cause(exc), "parse")
            log.error("feed.parse_failed", feed=feed.name, error=report.error, exc_info=exc)
        else:
            result: FeedResult = "held" if change.held else "ok"
            seconds = time.monotonic() - item.started
            report = FeedReport(
                feed.name, feed.supplier, result, change, change.held_reason, seconds
            )
        invalid.log(feed.name)
        return report

    def _snapshot(
        self,
        db: Connection,
        item: Fetched,
        static: tuple[str, ...],
        on_invalid: Callable[[Invalid], None],
        on_replaced: OnReplaced,
        *,
        meter: Meter,
    ) -> Change:
        """Apply a fetched body to the feed's snapshot: line by line where the
        source reads lines (lines.py), record by record otherwise."""
        feed, body = item.feed, item.body
        assert body is not None and item.row is not None and item.source is not None
        screen = screen_for(feed.exclude.builtin, feed.exclude.warninglists, feed.expand_cidr)
        screen = with_allowlist(screen, feed.allowlist)
        poison = Poison(feed.max_growth_ratio, canaries(feed.canaries, self.own_hosts))
        lines = item.source.lines
        if lines is not None and body.mode == "replace":
            job = LineFeed(
                feed=item.row,
                path=body.path,
                lines=lines,
                static_tags=static,
                validators=body.validators,
                max_delete_ratio=feed.max_delete_ratio,
                force=self.force,
                on_invalid=on_invalid,
                phases=self.phases,
                on_replaced=on_replaced,
                screen=screen,
                meter=meter,
                poison=poison,
            )
            change = replace_lines(db, job)
        else:
            change = self._records(db, item, static, on_invalid, screen, poison=poison, meter=meter)
        if not change.held:
            record_exclusions(db, item.row.id, screen.fingerprint)
        return change

    def _records(
        self,
        db: Connection,
        item: Fetched,
        static: tuple[str, ...],
        on_invalid: Callable[[Invalid], None],
        screen: Screen,
        *,
        poison: Poison,
        meter: Meter,
    ) -> Change:
        feed, body = item.feed, item.body
        assert body is not None and item.row is not None and item.source is not None
        apply = patch if body.mode == "patch" else replace
        records = itertools.chain.from_iterable(
            normalized_batches(
                item.source.records(body),
                static,
                self.phases,
                NORMALIZE_BATCH,
                screen=screen.screened,
                meter=meter,
            )
        )
        change = apply(
            db,
            item.row,
            records,
            max_delete_ratio=feed.max_delete_ratio,
            force=self.force,
            validators=body.validators,
            on_invalid=on_invalid,
            poison=poison,
        )
        if not change.held:
            forget_lines(db, item.row)
        return change


def _unapplied(item: Fetched) -> FeedReport:
    """The report of a feed whose fetch failed or brought nothing new."""
    if item.error is not None:
        return failed(item, item.error, "fetch")
    # A 304 or the same body still took a round trip: its duration counts.
    seconds = time.monotonic() - item.started
    return FeedReport(item.feed.name, item.feed.supplier, "unchanged", seconds=seconds)


def _rejected(change: Change) -> Change:
    """What a change whose every row was invalid still counts: its invalid and
    excluded rows."""
    return Change(
        invalid=change.invalid,
        invalid_reasons=change.invalid_reasons,
        excluded=change.excluded,
        excluded_reasons=change.excluded_reasons,
    )


def failed(item: Fetched, error: str, stage: Stage, change: Change | None = None) -> FeedReport:
    return FeedReport(
        item.feed.name,
        item.feed.supplier,
        "failed",
        change=change or Change(),
        error=error,
        stage=stage,
        seconds=time.monotonic() - item.started,
    )


@dataclass(slots=True)
class ReplacedRows:
    """A feed's rows kept although their context had undecodable bytes (an
    ``OnReplaced``): a warning each, the first ``REPLACED_LOGGED`` of them only."""

    feed: str
    encoding: str
    count: int = 0

    def __call__(self, line: int, columns: tuple[str, ...]) -> None:
        # The indicator is kept: a warning, not an invalid row.
        self.count += 1
        if self.count <= REPLACED_LOGGED:
            log.warning(
                "feed.context_undecodable",
                feed=self.feed,
                line=line,
                columns=list(columns),
                encoding=self.encoding,
            )


@dataclass(slots=True)
class InvalidRows:
    """A feed's invalid rows of one cycle, logged as one ``feed.invalid`` line
    per reason (a count and the first few rows): a feed of a million rows in a
    format feedsync does not read must not become a million log lines."""

    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def add(self, invalid: Invalid) -> None:
        self.counts[invalid.reason] += 1
        samples = self.samples.setdefault(invalid.reason, [])
        if len(samples) < INVALID_SAMPLES:
            samples.append({"line": invalid.line, "value": invalid.value[:120]})

    def log(self, feed: str) -> None:
        for reason, count in self.counts.items():
            samples = self.samples[reason]
            if reason.startswith(EXCLUDED):
                # Excluded on purpose: what and why, not a warning about the feed.
                named = reason[len(EXCLUDED) :]
                log.info("feed.excluded", feed=feed, reason=named, count=count, samples=samples)
            else:
                log.warning("feed.invalid", feed=feed, reason=reason, count=count, samples=samples)
