"""The delta read of a line feed: only the lines that changed, against its line index.

The lines gone from the body touch the keys they named; the added lines and the
remaining lines of touched keys are re-read, then the unchanged lines that rival
a re-read one for a key. For every key the first line naming it wins, so the
result is what a full read gives. A re-read line that became several rows (an
expanded range) raises ``Expanded``: the caller reads the body in full instead.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import TYPE_CHECKING

from feedsync.body import from_sql, open_body
from feedsync.model import LineLayout
from feedsync.store import FeedRow, lineindex
from feedsync.store.guard import Change, Guard, counted, guarded
from feedsync.store.linestage import keep_lines, read_changed, screened

if TYPE_CHECKING:
    from feedsync.store.linediff import LineFeed


def apply_delta(
    db: sqlite3.Connection, job: LineFeed, layout: LineLayout, delta: lineindex.Delta
) -> tuple[Change, int]:
    feed = job.feed
    params = {"feed": feed.id}
    with job.phases.timed("store"):
        db.execute(
            "INSERT OR IGNORE INTO touched SELECT s.key FROM gone_lines g"
            " CROSS JOIN snapshot s ON s.feed_id = :feed AND s.line = g.hash",
            params,
        )
        db.execute(
            "INSERT OR IGNORE INTO touched SELECT key FROM lines"
            " WHERE feed_id = :feed AND key IS NOT NULL",
            params,
        )
        reread = set(delta.added)
        reread.update(from_sql(h) for (h,) in db.execute(_REMAINING_OF_TOUCHED, params))
    _reread(db, job, layout, reread)
    with job.phases.timed("store"):
        # A new line naming a key one unchanged line named: which comes first decides.
        rivals = {from_sql(h) for (h,) in db.execute(_RIVALS, params)}
    if rivals:
        _reread(db, job, layout, rivals)
    with job.phases.timed("store"):
        db.execute("INSERT OR IGNORE INTO touched SELECT key FROM parsed WHERE key IS NOT NULL")
        db.execute(_WINNERS)
        counts = _delta_counts(db, feed)
        guard = Guard(
            job.max_delete_ratio, job.force, _DELTA_KEYS, "delta", screened(job), job.poison
        )
        change = guarded(db, feed, counts, counts.fetched, guard, validators=job.validators)
        if not change.held:
            keep_lines(
                db,
                feed,
                "DELETE FROM lines WHERE feed_id = :feed AND"
                " (hash IN (SELECT hash FROM gone_lines) OR key IN (SELECT key FROM touched))",
            )
    return change, len(reread) + len(rivals)


def _reread(db: sqlite3.Connection, job: LineFeed, layout: LineLayout, wanted: set[int]) -> None:
    with open_body(job.path, job.feed.name) as stream:
        items = job.lines.parse_selected(stream, layout, wanted, job.on_replaced)
        read_changed(db, job, items)


def _delta_counts(db: sqlite3.Connection, feed: FeedRow) -> Change:
    params = {"feed": feed.id}
    added = db.execute(
        "SELECT count(*) FROM stage t WHERE NOT EXISTS"
        " (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key)",
        params,
    ).fetchone()[0]
    removed = db.execute(_GONE_KEYS_COUNT, params).fetchone()[0]
    reasons: Counter[str] = Counter()
    for reason, count in db.execute(_INVALID_COUNTS, params):
        reasons[reason] += count
    duplicates = sum(db.execute(_DUPLICATE_COUNTS, params).fetchone())
    return counted(
        reasons,
        fetched=feed.indicators + added - removed,
        duplicates=duplicates,
        removed=removed,
        before=feed.indicators,
    )


# Lines still in the body that name a touched key: re-read, one of them may now win.
_REMAINING_OF_TOUCHED = (
    "SELECT s.line FROM touched t CROSS JOIN snapshot s ON s.feed_id = :feed AND s.key = t.key"
    " WHERE s.line IS NOT NULL AND s.line NOT IN (SELECT hash FROM gone_lines)"
    " UNION SELECT l.hash FROM touched t CROSS JOIN lines l ON l.feed_id = :feed AND l.key = t.key"
    " WHERE l.hash NOT IN (SELECT hash FROM gone_lines)"
)
# The unchanged line behind a snapshot row whose key a re-read line also names.
_RIVALS = (
    "SELECT DISTINCT s.line FROM parsed p"
    " CROSS JOIN snapshot s ON s.feed_id = :feed AND s.key = p.key"
    " WHERE p.key NOT IN (SELECT key FROM touched) AND s.line IS NOT NULL"
    " AND s.line NOT IN (SELECT hash FROM parsed)"
    " AND s.line NOT IN (SELECT hash FROM gone_lines)"
)
# For every key, the first line that names it.
_WINNERS = (
    "INSERT INTO stage (key, value, kind, context, tags, digest, expires, line)"
    " SELECT key, value, kind, context, tags, digest, expires, hash FROM"
    " (SELECT *, row_number() OVER (PARTITION BY key ORDER BY line) AS rank"
    "  FROM parsed WHERE key IS NOT NULL) WHERE rank = 1"
)
_GONE_KEYS_COUNT = (
    "SELECT count(*) FROM touched t WHERE NOT EXISTS (SELECT 1 FROM stage s WHERE s.key = t.key)"
    " AND EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key)"
)
# Invalid rows after the change: kept invalid lines and new ones, each copy of a line.
_INVALID_COUNTS = (
    "SELECT i.reason, sum(coalesce(r.n, 1)) FROM"
    " (SELECT hash, reason FROM lines WHERE feed_id = :feed AND reason IS NOT NULL"
    "  AND hash NOT IN (SELECT hash FROM gone_lines)"
    "  UNION ALL SELECT hash, reason FROM parsed WHERE reason IS NOT NULL) i"
    " LEFT JOIN repeats r ON r.hash = i.hash GROUP BY i.reason"
)
# Rows naming a key an earlier row named: lines that lost to another, and the extra
# copies of lines that won.
_DUPLICATE_COUNTS = (
    "SELECT (SELECT coalesce(sum(coalesce(r.n, 1)), 0) FROM parsed p"
    "  LEFT JOIN repeats r ON r.hash = p.hash WHERE p.key IS NOT NULL"
    "  AND NOT EXISTS (SELECT 1 FROM stage t WHERE t.key = p.key AND t.line = p.hash)),"
    " (SELECT coalesce(sum(r.n - 1), 0) FROM repeats r"
    "  WHERE EXISTS (SELECT 1 FROM stage t WHERE t.line = r.hash)"
    "  OR EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.line = r.hash"
    "  AND s.key NOT IN (SELECT key FROM touched)))"
)
# What identifies a held change: the keys it removes and adds.
_DELTA_KEYS = (
    "SELECT '-' || t.key FROM touched t"
    " WHERE NOT EXISTS (SELECT 1 FROM stage s WHERE s.key = t.key)"
    " AND EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key)"
    " UNION ALL SELECT '+' || t.key FROM stage t WHERE NOT EXISTS"
    " (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key) ORDER BY 1"
)
