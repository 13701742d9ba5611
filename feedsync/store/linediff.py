"""Line-level diffs: a line-based feed's new body applied by reading only what changed.

A body that changed by 1% costs about one read of it, not a parse and
normalization of every row. The lines are read by the source's line parser
(feedsync.model.LineParser), so the store needs no source.

Each applied CSV body leaves its line index: the 64-bit hash of every
physical line, in buckets by the hash's top bits (a blob per bucket), and the
``lines`` table that says what the lines that are not the source of a
snapshot row became (a duplicate of a key, or invalid, and why); snapshot
rows carry the hash of the line they came from. The next body is read once
to hash its lines and compared with the index bucket by bucket, in sets of
at most a bucket; only added lines, and the remaining lines of keys whose
line went away or that several lines name, are parsed and normalized. The
result is exactly what a full read gives: for every key, the first line
naming it wins.

A full read is still made, and leaves a new index, when there is no index,
when the layout (header, columns, tags, normalization) changed, or when so
many lines are new that a full read is as cheap.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from feedsync.body import from_sql, open_body, to_sql
from feedsync.model import (
    Indicator,
    Invalid,
    LineLayout,
    LineParser,
    OnReplaced,
    Record,
    Validators,
)
from feedsync.normalize import VERSION, RowMeter, Screener, normalized_batches
from feedsync.phases import Phases
from feedsync.safety.exclusions import Screen
from feedsync.store import FeedRow, journal, lineindex
from feedsync.store.guard import Change, Guard, counted, guarded
from feedsync.store.poison import Poison
from feedsync.store.snapshot import Row, encode, replace_staged, stage_tables

BATCH = 5000


@dataclass(frozen=True, slots=True)
class LineFeed:
    """What reading one line-based feed needs."""

    feed: FeedRow
    path: Path
    lines: LineParser  # the source's (feedsync.sources.CsvSource.lines)
    static_tags: tuple[str, ...]
    validators: Validators
    max_delete_ratio: float
    force: bool
    on_invalid: Callable[[Invalid], None]
    phases: Phases = field(default_factory=Phases)
    on_replaced: OnReplaced | None = None  # a row kept with undecodable context (csvfeed)
    meter: RowMeter | None = None  # told of the rows read (feedsync.progress)
    screen: Screen | None = None  # the feed's exclusions and range expansion
    poison: Poison = field(default_factory=Poison)  # the poison guard (poison.py)
    # Set when a line became several rows (an expanded range): the line index keeps
    # one outcome per line, so such a body is read in full, and leaves no index.
    expanded: list[bool] = field(default_factory=lambda: [False])


class _Expanded(Exception):
    """A re-read line became several rows: the delta gives way to a full read."""


def replace_lines(db: sqlite3.Connection, job: LineFeed) -> Change:
    """Apply a body as the feed's new snapshot, reading only what changed
    where the line index allows. Runs inside the caller's transaction."""
    stage_tables(db)
    _line_tables(db)
    replaced = [0]
    told = job.on_replaced

    def count_replaced(line: int, columns: tuple[str, ...]) -> None:
        replaced[0] += 1
        if told is not None:
            told(line, columns)

    screened = journal.Screened(db, job.on_invalid)
    job = dataclasses.replace(
        job, on_replaced=count_replaced, expanded=[False], on_invalid=screened
    )
    with job.phases.timed("fetch"), open_body(job.path, job.feed.name) as stream:
        layout = job.lines.layout(stream)
    signature = _signature(layout, job.static_tags, job.screen)
    bits = job.feed.line_bits
    if bits is None:
        bits = lineindex.bits_for_size(job.path)
    with job.phases.timed("fetch"):
        count = lineindex.scan(db, job.path, job.feed.name, bits)
    usable = layout is not None and job.feed.layout == signature and job.feed.line_bits == bits
    delta = lineindex.diff(db, job.feed, bits) if usable else None
    change: Change | None = None
    if delta is not None and layout is not None:
        try:
            change, read = _apply_delta(db, job, layout, delta)
        except _Expanded:
            stage_tables(db)
            for table in ("touched", "parsed"):
                db.execute(f"DELETE FROM {table}")
    if change is None:
        change, read = _apply_full(db, job), count
    change = dataclasses.replace(change, lines=count, lines_read=read, replaced=replaced[0])
    if not change.held:
        if job.expanded[0]:
            forget_lines(db, job.feed)
        else:
            lineindex.keep(db, job.feed, signature, bits, lineindex.bits_for_lines(count))
    return change


def _screener(job: LineFeed) -> Screener:
    screen = job.screen
    assert screen is not None

    def screened(record: Record, static_tags: tuple[str, ...]) -> list[Indicator | Invalid]:
        out = list(screen.screened(record, static_tags))
        if len(out) > 1:
            job.expanded[0] = True
        return out

    return screened


def _batches(
    job: LineFeed, items: Iterable[Record | Invalid]
) -> Iterable[Sequence[Indicator | Invalid]]:
    screen = None if job.screen is None else _screener(job)
    return normalized_batches(items, job.static_tags, job.phases, BATCH, screen, meter=job.meter)


# -- reading ---------------------------------------------------------------------------------


def _read_changed(db: sqlite3.Connection, job: LineFeed, items: Iterable[Record | Invalid]) -> None:
    """Stage re-read lines into ``parsed``, one row per line hash (its first line)."""
    for batch in _batches(job, items):
        if job.expanded[0]:
            raise _Expanded
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


def _read_all(
    db: sqlite3.Connection, job: LineFeed, items: Iterable[Record | Invalid], reasons: Counter[str]
) -> int:
    """Stage every record (the first line naming a key wins), and the lines
    that are no row's source into ``parsed``; returns how many records were valid."""
    valid = 0
    for batch in _batches(job, items):
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
                    rows.append(encode(item))
            valid += len(rows)
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO stage VALUES (?,?,?,?,?,?,?,?)", rows)
            if db.total_changes - before < len(rows):
                _note_duplicates(db, rows)
    return valid


def _note_duplicates(db: sqlite3.Connection, rows: list[Row]) -> None:
    for row in rows:
        key, line = row[0], row[7]
        (first,) = db.execute("SELECT line FROM stage WHERE key = ?", (key,)).fetchone()
        if first != line:
            db.execute("INSERT OR IGNORE INTO parsed (hash, key) VALUES (?, ?)", (line, key))


# -- applying --------------------------------------------------------------------------------


def _apply_delta(
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
            job.max_delete_ratio, job.force, _DELTA_KEYS, "delta", _screened(job), job.poison
        )
        change = guarded(db, feed, counts, counts.fetched, guard, validators=job.validators)
        if not change.held:
            _keep_lines(
                db,
                feed,
                "DELETE FROM lines WHERE feed_id = :feed AND"
                " (hash IN (SELECT hash FROM gone_lines) OR key IN (SELECT key FROM touched))",
            )
    return change, len(reread) + len(rivals)


def _reread(db: sqlite3.Connection, job: LineFeed, layout: LineLayout, wanted: set[int]) -> None:
    with open_body(job.path, job.feed.name) as stream:
        items = job.lines.parse_selected(stream, layout, wanted, job.on_replaced)
        _read_changed(db, job, items)


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


def _apply_full(db: sqlite3.Connection, job: LineFeed) -> Change:
    """Read every line, as for any source, and rebuild the ``lines`` table."""
    reasons: Counter[str] = Counter()
    with open_body(job.path, job.feed.name) as stream:
        items = job.lines.parse(stream, job.on_replaced)
        valid = _read_all(db, job, items, reasons)
    feed = job.feed
    with job.phases.timed("store"):
        change = replace_staged(
            db,
            feed,
            valid,
            reasons,
            max_delete_ratio=job.max_delete_ratio,
            force=job.force,
            validators=job.validators,
            screened=_screened(job),
            poison=job.poison,
        )
        if not change.held:
            _keep_lines(db, feed, "DELETE FROM lines WHERE feed_id = :feed")
    return change


def _screened(job: LineFeed) -> journal.Screened | None:
    return job.on_invalid if isinstance(job.on_invalid, journal.Screened) else None


def _keep_lines(db: sqlite3.Connection, feed: FeedRow, clear: str) -> None:
    """Bring the ``lines`` table up to date (snapshot rows took their source
    line when the change was applied)."""
    params = {"feed": feed.id}
    db.execute(clear, params)
    db.execute(_KEEP_PARSED_LINES, params)


def forget_lines(db: sqlite3.Connection, feed: FeedRow) -> None:
    """Drop the line index of a feed applied some other way: it no longer matches."""
    lineindex.forget(db, feed)
    db.execute("DELETE FROM lines WHERE feed_id = ?", (feed.id,))


def _signature(
    layout: LineLayout | None, static_tags: tuple[str, ...], screen: Screen | None
) -> str | None:
    # What a line became depends on the exclusions too: others read the body in full.
    if layout is None:
        return None
    excluding = "" if screen is None else f":{screen.fingerprint}"
    return f"{layout.signature}:{VERSION}:{','.join(static_tags)}{excluding}"


def _line_tables(db: sqlite3.Connection) -> None:
    lineindex.index_tables(db)
    db.execute("CREATE TEMP TABLE IF NOT EXISTS touched (key TEXT PRIMARY KEY) WITHOUT ROWID")
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS parsed (hash INTEGER PRIMARY KEY, line INTEGER,"
        " key TEXT, value TEXT, kind TEXT, context TEXT, tags TEXT, digest INTEGER,"
        " expires REAL, reason TEXT)"
    )
    for table in ("touched", "parsed"):
        db.execute(f"DELETE FROM {table}")


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
# The lines that are no snapshot row's source: duplicates of a key and invalid lines.
_KEEP_PARSED_LINES = (
    "INSERT OR REPLACE INTO lines (feed_id, hash, key, reason)"
    " SELECT :feed, p.hash, p.key, p.reason FROM parsed p WHERE p.reason IS NOT NULL"
    " OR (p.key IS NOT NULL AND NOT EXISTS"
    "     (SELECT 1 FROM stage t WHERE t.key = p.key AND t.line = p.hash))"
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
