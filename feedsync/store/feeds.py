"""A feed's row and its runs: what the store keeps of each feed between cycles.

``FeedRow`` is the feeds table read back; ``Run`` one cycle for the run history,
of which the last ``RUNS_KEPT_PER_FEED`` of each feed are kept. The functions
here work inside a caller's transaction (the connection ``Store.transaction``
yields), so that a feed's row changes with the snapshot it describes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import orjson

from feedsync.clock import SYSTEM
from feedsync.model import Validators
from feedsync.store import journal, statefile

RUNS_KEPT_PER_FEED = 1000


@dataclass(frozen=True, slots=True)
class FeedRow:
    """What the store knows about one feed."""

    id: int
    name: str
    supplier: str
    validators: Validators
    indicators: int
    invalid: int
    last_attempt: float | None
    last_success: float | None
    last_error: str | None
    held_removals: int | None
    held_total: int | None
    held_digest: str | None
    held_since: float | None
    layout: str | None = None  # what the feed's line index was built under (lines.py)
    line_bits: int | None = None
    excluded: tuple[tuple[str, int], ...] = ()  # the last applied fetch's, by reason
    exclusions: str | None = None  # the fingerprint of the settings it was applied under
    last_change: float | None = None  # the last run that changed its content (migration 9)
    last_stage: str | None = None  # where its last run failed; None if it did not (migration 11)


@dataclass(frozen=True, slots=True)
class Run:
    """One feed cycle, for the run history."""

    feed: str
    started: float
    finished: float
    result: str
    fetched: int = 0
    invalid: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    held: int = 0
    error: str | None = None
    stage: str | None = None  # where a failed run failed


def read_feed(db: sqlite3.Connection, feed_id: int) -> FeedRow:
    """A feed's row as the current transaction sees it."""
    return feed_row(db.execute("SELECT * FROM feeds WHERE id = ?", (feed_id,)).fetchone())


def record_run(db: sqlite3.Connection, run: Run) -> None:
    db.execute(
        "INSERT INTO runs (feed, started, finished, result, fetched, invalid, added, changed,"
        " removed, held, error, stage) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            run.feed,
            run.started,
            run.finished,
            run.result,
            run.fetched,
            run.invalid,
            run.added,
            run.changed,
            run.removed,
            run.held,
            run.error,
            run.stage,
        ),
    )
    db.execute(
        "DELETE FROM runs WHERE feed = ? AND id <= (SELECT max(id) FROM runs WHERE feed = ?) - ?",
        (run.feed, run.feed, RUNS_KEPT_PER_FEED),
    )
    db.execute(
        "UPDATE feeds SET last_attempt = ?, last_error = ?, last_stage = ? WHERE name = ?",
        (run.finished, run.error, run.stage, run.feed),
    )
    if run.result in ("ok", "unchanged", "held"):
        db.execute("UPDATE feeds SET last_success = ? WHERE name = ?", (run.finished, run.feed))
        # A held change is a change upstream all the same; the first success starts the clock.
        changed = run.added + run.changed + run.removed + run.held > 0
        db.execute(
            "UPDATE feeds SET last_change = ? WHERE name = ? AND (? OR last_change IS NULL)",
            (run.finished, run.feed, changed),
        )


def record_exclusions(db: sqlite3.Connection, feed_id: int, fingerprint: str) -> None:
    """The exclusion settings the feed's snapshot was last applied under."""
    db.execute("UPDATE feeds SET exclusions = ? WHERE id = ?", (fingerprint, feed_id))


def now(db: sqlite3.Connection) -> float:
    """Wall seconds by the clock of the store ``db`` is the connection of (its
    ``Store.clock``), for what store functions stamp inside a caller's transaction."""
    return db.clock.now() if isinstance(db, statefile.Clocked) else SYSTEM.now()


def forget_feed(db: sqlite3.Connection, feed_id: int, supplier: str, why: str) -> None:
    """Drop a feed's snapshot and row; its values are compared again, so that the
    supplier's next plan deletes those no other feed lists. Its runs stay; the
    journal says ``why`` of each value."""
    journal.feed_rows(db, now(db), feed_id, "unlisted", detail=why)
    mark_feed_dirty(db, feed_id, supplier)
    for table in ("snapshot", "lines", "line_index"):
        db.execute(f"DELETE FROM {table} WHERE feed_id = ?", (feed_id,))
    db.execute("DELETE FROM feeds WHERE id = ?", (feed_id,))


def mark_feed_dirty(db: sqlite3.Connection, feed_id: int, supplier: str) -> None:
    db.execute(
        "INSERT OR IGNORE INTO dirty (supplier, value)"
        " SELECT ?, value FROM snapshot WHERE feed_id = ?",
        (supplier, feed_id),
    )


def feed_row(row: sqlite3.Row) -> FeedRow:
    return FeedRow(
        id=row["id"],
        name=row["name"],
        supplier=row["supplier"],
        validators=Validators(row["etag"], row["last_modified"], row["sha256"], row["cursor"]),
        indicators=row["indicators"],
        invalid=row["invalid"],
        last_attempt=row["last_attempt"],
        last_success=row["last_success"],
        last_error=row["last_error"],
        held_removals=row["held_removals"],
        held_total=row["held_total"],
        held_digest=row["held_digest"],
        held_since=row["held_since"],
        layout=row["layout"],
        line_bits=row["line_bits"],
        excluded=tuple(orjson.loads(row["excluded"] or "{}").items()),
        exclusions=row["exclusions"],
        last_change=row["last_change"],
        last_stage=row["last_stage"],
    )
