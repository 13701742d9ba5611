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
many lines are new that a full read is as cheap. The delta read is
linedelta.py's, the staging of what is read linestage.py's.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from feedsync.body import open_body
from feedsync.model import (
    Invalid,
    LineLayout,
    LineParser,
    OnReplaced,
    Validators,
)
from feedsync.normalize import VERSION, RowMeter
from feedsync.phases import Phases
from feedsync.safety.exclusions import Screen
from feedsync.store import FeedRow, journal, lineindex
from feedsync.store.guard import Change
from feedsync.store.linedelta import apply_delta
from feedsync.store.linestage import (
    Expanded,
    Load,
    keep_lines,
    load_table,
    read_all,
    screened,
)
from feedsync.store.poison import Poison
from feedsync.store.snapshot import is_empty, replace_loaded, replace_staged, stage_tables


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
    delta = None
    if usable:
        with job.phases.timed("store"):  # the stored buckets compared: the diff's own part
            delta = lineindex.diff(db, job.feed, bits)
    change: Change | None = None
    if delta is not None and layout is not None:
        try:
            change, read = apply_delta(db, job, layout, delta)
        except Expanded:
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


def _apply_full(db: sqlite3.Connection, job: LineFeed) -> Change:
    """Read every line, as for any source, and rebuild the ``lines`` table."""
    reasons: Counter[str] = Counter()
    feed = job.feed
    # A first fetch is loaded straight into the snapshot: a stage would only be copied.
    load = None
    if is_empty(db, feed):
        load = Load(feed.id, job.poison.canary)
        load_table(db)
    with open_body(job.path, job.feed.name) as stream:
        items = job.lines.parse(stream, job.on_replaced)
        valid = read_all(db, job, items, reasons, load)
    if load is not None:
        return _loaded(db, job, valid, reasons, load)
    with job.phases.timed("store"):
        change = replace_staged(
            db,
            feed,
            valid,
            reasons,
            max_delete_ratio=job.max_delete_ratio,
            force=job.force,
            validators=job.validators,
            screened=screened(job),
            poison=job.poison,
        )
        if not change.held:
            keep_lines(db, feed, "DELETE FROM lines WHERE feed_id = :feed")
    return change


def _loaded(
    db: sqlite3.Connection, job: LineFeed, valid: int, reasons: Counter[str], load: Load
) -> Change:
    feed = job.feed
    with job.phases.timed("store"):
        load.copy(db, valid)
        change = replace_loaded(
            db,
            feed,
            valid,
            reasons,
            load.candidates,
            force=job.force,
            validators=job.validators,
            screened=screened(job),
            poison=job.poison,
        )
        if not change.held:
            keep_lines(db, feed, "DELETE FROM lines WHERE feed_id = :feed", loaded=True)
    return change


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
