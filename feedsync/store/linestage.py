"""A line feed's records staged: batches into ``stage`` and ``parsed``, then ``lines``.

Normalized batches go into the staging tables, and the ``lines`` table is
brought up to date after the change is applied.

``stage`` holds the rows of the new snapshot (the first line naming a key wins);
``parsed`` the re-read lines, and the lines that are no row's source (a
duplicate of a key, or invalid, and why), which ``lines`` keeps for the next body.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from feedsync.body import to_sql
from feedsync.model import Indicator, Invalid, Record
from feedsync.normalize import Screener, normalized_batches
from feedsync.store import FeedRow, journal
from feedsync.store.poison import Canary
from feedsync.store.snapshot import Row, encode

if TYPE_CHECKING:
    from feedsync.store.linediff import LineFeed

BATCH = 5000


class Expanded(Exception):
    """A re-read line became several rows: the delta gives way to a full read."""


def _screener(job: LineFeed) -> Screener:
    screen = job.screen
    assert screen is not None

    def screened(record: Record, static_tags: tuple[str, ...]) -> list[Indicator | Invalid]:
        out = list(screen.screened(record, static_tags))
        if len(out) > 1:
            job.expanded[0] = True
        return out

    return screened


def batches(
    job: LineFeed, items: Iterable[Record | Invalid]
) -> Iterable[Sequence[Indicator | Invalid]]:
    screen = None if job.screen is None else _screener(job)
    return normalized_batches(items, job.static_tags, job.phases, BATCH, screen, meter=job.meter)


def read_changed(db: sqlite3.Connection, job: LineFeed, items: Iterable[Record | Invalid]) -> None:
    """Stage re-read lines into ``parsed``, one row per line hash (its first line)."""
    for batch in batches(job, items):
        if job.expanded[0]:
            raise Expanded
        with job.phases.timed("store"):
            db.executemany(
                "INSERT OR IGNORE INTO parsed VALUES (?,?,?,?,?,?,?,?,?,?)",
                [_parsed_row(item, job.on_invalid) for item in batch],
            )


def _parsed_row(
    item: Indicator | Invalid, on_invalid: Callable[[Invalid], None]
) -> tuple[object, ...]:
    hashed = to_sql(item.line_hash or 0)
    if isinstance(item, Invalid):
        on_invalid(item)
        return (hashed, item.line, None, None, None, None, None, None, None, item.reason)
    return (hashed, item.line, *encode(item)[:7], None)


def read_all(
    db: sqlite3.Connection,
    job: LineFeed,
    items: Iterable[Record | Invalid],
    reasons: Counter[str],
    load: Load | None = None,
) -> int:
    """Stage every record (the first line naming a key wins), and the lines
    that are no row's source into ``parsed``; returns how many records were valid.
    With ``load``, the records go straight into the feed's empty snapshot instead."""
    valid = 0
    insert, first = _STAGED if load is None else load.statements()
    canary = None if load is None else load.canary
    for batch in batches(job, items):
        with job.phases.timed("store"):
            rows = []
            for item in batch:
                if isinstance(item, Invalid):
                    reasons[item.reason] += 1
                    db.execute(
                        "INSERT OR IGNORE INTO parsed (hash, line, reason) VALUES (?, ?, ?)",
                        (to_sql(item.line_hash or 0), item.line, item.reason),
                    )
                    job.on_invalid(item)
                else:
                    row = encode(item)
                    rows.append(row)
                    if canary is not None and canary(row[2], row[1]) is not None:
                        assert load is not None
                        load.candidates.append((row[0], row[2], row[1]))
            valid += len(rows)
            before = db.total_changes
            db.executemany(insert, rows)
            if load is None and db.total_changes - before < len(rows):
                _note_duplicates(db, rows, first)
    return valid


@dataclass(slots=True)
class Load:
    """A body loaded into a feed's empty snapshot: its rows appended to ``loaded``
    as read (no key to look up, so no random writes), then copied in key order,
    the first line naming a key first; and the rows its canary check names
    (key, kind, value)."""

    feed_id: int
    canary: Canary | None = None
    candidates: list[tuple[str, str, str]] = field(default_factory=list)

    def statements(self) -> tuple[str, str]:
        return ("INSERT INTO loaded VALUES (?,?,?,?,?,?,?,?)", "")

    def copy(self, db: sqlite3.Connection, valid: int) -> None:
        """Copy the rows read into the snapshot, and note the lines that lost
        their key to an earlier one (as ``_note_duplicates``). ``snapshot_line``
        is built afterwards where the snapshot holds no other feed: one sorted build
        costs less than a million random inserts, and the drop is undone with the
        caller's transaction."""
        params = {"feed": self.feed_id}
        rebuild = _line_index_to_rebuild(db, self.feed_id)
        if rebuild is not None:
            db.execute("DROP INDEX snapshot_line")
        # The feed's snapshot was empty: what this inserts is all of it.
        total = db.execute(
            "INSERT OR IGNORE INTO snapshot (feed_id, key, value, kind, context, tags, digest,"
            " expires, line) SELECT :feed, key, value, kind, context, tags, digest, expires, line"
            " FROM loaded ORDER BY key, rowid",
            params,
        ).rowcount
        if rebuild is not None:
            db.execute(rebuild)
        if total < valid:
            db.execute(
                "INSERT OR IGNORE INTO parsed (hash, key) SELECT t.line, t.key FROM loaded t"
                " JOIN snapshot s ON s.feed_id = :feed AND s.key = t.key"
                " WHERE s.line IS NOT t.line ORDER BY t.rowid",
                params,
            )
        db.execute("DELETE FROM loaded")


def _line_index_to_rebuild(db: sqlite3.Connection, feed_id: int) -> str | None:
    """The definition of ``snapshot_line`` when building it after the load is cheaper
    than keeping it row by row: no other feed has a row (building it reads them all)."""
    # The feed's own snapshot is empty, so this reads the first row of the table.
    other = db.execute("SELECT 1 FROM snapshot WHERE feed_id != ? LIMIT 1", (feed_id,)).fetchone()
    if other is not None:
        return None
    found = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'snapshot_line'"
    ).fetchone()
    return None if found is None else str(found[0])


def load_table(db: sqlite3.Connection) -> None:
    """The temporary table a first body is read into (``Load``), created and emptied."""
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS loaded (key TEXT, value TEXT, kind TEXT, context TEXT,"
        " tags TEXT, digest INTEGER, expires REAL, line INTEGER)"
    )
    db.execute("DELETE FROM loaded")


_STAGED = (
    "INSERT OR IGNORE INTO stage VALUES (?,?,?,?,?,?,?,?)",
    "SELECT line FROM stage WHERE key = ?",
)


def _note_duplicates(db: sqlite3.Connection, rows: list[Row], lookup: str) -> None:
    for row in rows:
        key, line = row[0], row[7]
        (first,) = db.execute(lookup, (key,)).fetchone()
        if first != line:
            db.execute("INSERT OR IGNORE INTO parsed (hash, key) VALUES (?, ?)", (line, key))


def screened(job: LineFeed) -> journal.Screened | None:
    return job.on_invalid if isinstance(job.on_invalid, journal.Screened) else None


def keep_lines(db: sqlite3.Connection, feed: FeedRow, clear: str, *, loaded: bool = False) -> None:
    """Bring the ``lines`` table up to date (snapshot rows took their source
    line when the change was applied; ``loaded``: when they were loaded)."""
    params = {"feed": feed.id}
    db.execute(clear, params)
    db.execute(KEEP_LOADED_LINES if loaded else KEEP_PARSED_LINES, params)


# The lines that are no snapshot row's source: duplicates of a key and invalid lines.
KEEP_PARSED_LINES = (
    "INSERT OR REPLACE INTO lines (feed_id, hash, key, reason)"
    " SELECT :feed, p.hash, p.key, p.reason FROM parsed p WHERE p.reason IS NOT NULL"
    " OR (p.key IS NOT NULL AND NOT EXISTS"
    "     (SELECT 1 FROM stage t WHERE t.key = p.key AND t.line = p.hash))"
)
# The same, for a body loaded straight into the feed's snapshot (``Load``).
KEEP_LOADED_LINES = (
    "INSERT OR REPLACE INTO lines (feed_id, hash, key, reason)"
    " SELECT :feed, p.hash, p.key, p.reason FROM parsed p WHERE p.reason IS NOT NULL"
    " OR (p.key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM snapshot t"
    "     WHERE t.feed_id = :feed AND t.key = p.key AND t.line = p.hash))"
)
