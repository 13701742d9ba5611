"""A supplier's first plan, straight from its feeds' snapshots (reconcile.plan's fast path).

When CyberTrace holds nothing of the supplier yet and every row is keyed by its
value (CSV feeds), every value is an add: no value need be marked dirty and read
back with its acknowledged, rejected and pending state, which is most of a first
sync's plan. tests/store/test_reconcile.py checks it writes what the general plan does.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Iterator

from feedsync.store import now, planlog, ranges
from feedsync.store.bodies import Target, put_body
from feedsync.store.pending import planned, write_planned
from feedsync.store.planlog import journal_op
from feedsync.store.snapshot import digest64

BATCH = 5000


def first_plan(db: sqlite3.Connection, target: Target) -> bool:
    """Whether this is the supplier's first plan, from feeds whose rows are all
    keyed by their value (CSV): then every value is an add, in value order."""
    supplier = target.supplier
    if db.execute("SELECT 1 FROM suppliers WHERE name = ?", (supplier,)).fetchone():
        return False
    for table in ("acked", "pending", "rejected", "pending_range"):
        if db.execute(f"SELECT 1 FROM {table} WHERE supplier = ? LIMIT 1", (supplier,)).fetchone():
            return False
    feeds = ",".join(str(int(feed_id)) for feed_id in target.feed_ids) or "NULL"
    # The partial index holds only such rows: a scan of it, not of the feeds' rows.
    keyed = db.execute(
        "SELECT 1 FROM snapshot INDEXED BY snapshot_keyed"
        f" WHERE feed_id IN ({feeds}) AND key != value LIMIT 1"
    ).fetchone()
    return keyed is None


def plan_first(db: sqlite3.Connection, target: Target) -> int:
    """A first plan straight from the snapshots: what ``plan`` decides for a
    supplier CyberTrace holds nothing of (an add of each value, the same body and
    order), without marking every value dirty and reading each back with its
    acknowledged, rejected and pending state (none), most of a first sync's plan."""
    position = {feed_id: index for index, feed_id in enumerate(target.feed_ids)}
    streams = [_values_of(db, feed_id) for feed_id in target.feed_ids]
    rows = heapq.merge(*streams, key=_value_of)
    writes: list[tuple[str, str, int | None, str]] = []
    added = 0
    noted = planlog.start(db, target.supplier, now(db), why="", reshaped="")
    for value, group in itertools.groupby(rows, key=_value_of):
        listing = [row[1:] for row in group]
        body = put_body(value, listing, target, position)
        journal_op(noted, target.feed_names, position, ("add", value), listing)
        writes.append(("add", value, digest64(body.encode()), body))
        if len(writes) >= BATCH:
            added += len(writes)
            write_planned(db, target, writes)
            writes.clear()
    added += len(writes)
    write_planned(db, target, writes)
    noted.close()
    planned(db, target)
    return added


def plan_ranged(db: sqlite3.Connection, target: Target) -> int:
    """``plan_first`` as one pending range of every value (ranges.py): the same adds,
    their bodies cut when sent, not a pending row of each written and deleted again.
    A plan small enough to journal each value reads them for that alone."""
    at = now(db)
    noted = planlog.start(db, target.supplier, at, why="", reshaped="")
    ranges.write(db, target, at)
    if noted.bulk:
        added = ranges.count(db, target.supplier)
        noted.counts["add"] += added
    else:
        position = {feed_id: index for index, feed_id in enumerate(target.feed_ids)}
        added = 0
        for value, listing in ranges.listed(db, target, "", None):
            journal_op(noted, target.feed_names, position, ("add", value), listing)
            added += 1
    if not added:  # nothing listed: no range to hold a value a later change lists
        db.execute("DELETE FROM pending_range WHERE supplier = ?", (target.supplier,))
    noted.close()
    planned(db, target)
    return added


def _values_of(db: sqlite3.Connection, feed_id: int) -> Iterator[tuple[str, int, str, str]]:
    """A feed's rows (value, feed id, context, tags) by value, a chunk at a time
    (every row is keyed by its value here: the primary key's order is the value's)."""
    after = ""
    while True:
        rows = db.execute(
            "SELECT value, feed_id, context, tags FROM snapshot WHERE feed_id = ? AND key > ?"
            " ORDER BY key LIMIT ?",
            (feed_id, after, BATCH),
        ).fetchall()
        if not rows:
            return
        yield from ((row[0], row[1], row[2], row[3]) for row in rows)
        after = rows[-1][0]


def _value_of(row: tuple[str, int, str, str]) -> str:
    return row[0]
