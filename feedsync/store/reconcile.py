"""Reconcile: what a supplier should hold against what CyberTrace confirmed.

Desired state is the merge of the supplier's feeds' snapshots (DESIGN.md
invariant 4): context from the first feed in configuration order that lists
the value, tags the union of all of them. Acknowledged state is what
CyberTrace confirmed. Only values marked dirty are compared, so planning costs
the size of the change, not of the supplier. The plan is written to the
``pending`` table, in the same transaction that clears the dirty marks, before
anything is sent.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

from feedsync.normalize import InvalidValue, canonicalize
from feedsync.store import journal, now, planlog
from feedsync.store.provenance import Provenance, stamp
from feedsync.store.snapshot import digest64

BATCH = 5000
# CyberTrace's documentation gives no way to clear a context, nor says what a PUT
# without one does to the context stored: an indicator whose feeds give it no context
# is sent this one field naming the feed, so every PUT replaces the context it had.
SOURCE_FIELD = "source_feed"
BODY_VERSION = 2  # bump when bodies are shaped differently: every value is re-planned


@dataclass(frozen=True, slots=True)
class Target:
    """One supplier and how indicator bodies are shaped for it."""

    supplier: str
    feed_ids: tuple[int, ...]
    feed_names: tuple[str, ...]  # the same feeds' names, for the ``source_feed`` context
    send_context: bool = True
    send_tags: bool = True
    unmark_detections: bool | None = None
    provenance: Provenance | None = None  # context fields naming feeds and dates (off: None)

    def signature(self) -> str:
        """Changes whenever the merge or the body shape changes, forcing a full replan."""
        shape: tuple[object, ...] = (self.send_context, self.send_tags, self.unmark_detections)
        shape += (BODY_VERSION,)
        if self.provenance is not None:
            shape += (self.provenance,)
        text = repr((self.feed_ids, self.feed_names, *shape))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def source_context(self, feed_id: int) -> str:
        """The context sent for a value whose feed gives it none (JSON text)."""
        return _source_json(self.feed_names[self.feed_ids.index(feed_id)])


@functools.lru_cache(maxsize=256)
def _source_json(feed: str) -> str:
    # A plain list of a million addresses asks for the same few texts a million times.
    return orjson.dumps({SOURCE_FIELD: feed}).decode()


@dataclass(frozen=True, slots=True)
class Plan:
    """The operations one reconcile added to the plan."""

    add: int = 0
    update: int = 0
    delete: int = 0
    refresh: int = 0

    @property
    def total(self) -> int:
        return self.add + self.update + self.delete


@dataclass(frozen=True, slots=True)
class Refresh:
    """Re-PUT acknowledged values older than ``span`` seconds (retention x fraction),
    each at its own point between two thirds of the span and the span, so a big
    supplier does not refresh in one burst."""

    span: float
    now: float


def _due(table: str) -> str:
    """SQL: the acknowledged row is due; its deadline is acked_at + span * (2/3 .. 1),
    placed by its digest."""
    return (
        f"{table}.acked_at + :span * (0.6667 + 0.3333 * (({table}.digest & 1023) / 1024.0)) <= :now"
    )


@dataclass(frozen=True, slots=True)
class _Current:
    value: str
    acked: int | None
    rejected: int | None
    pending_op: str | None
    pending: int | None
    due: bool


def plan(
    db: sqlite3.Connection,
    target: Target,
    *,
    resync: bool = False,
    sweep: bool = True,
    refresh: Refresh | None = None,
    cause: str = "resync",
) -> Plan:
    """Turn the supplier's dirty values into pending operations.

    ``resync`` re-plans every desired value as if CyberTrace held nothing and,
    with ``sweep``, deletes every value feedsync ever sent there that no feed
    lists now (a CyberTrace restored from an older backup holds them again);
    without ``sweep`` (a supplier just created empty) it forgets them.
    ``refresh`` re-PUTs acknowledged values before their retention runs out.
    Each operation is journaled (with ``cause`` for a resync's). Runs inside the
    caller's transaction.
    """
    if not resync and _first_plan(db, target):
        return _plan_first(db, target)
    if resync:
        if sweep:
            db.execute(
                "INSERT OR IGNORE INTO retired (supplier, value, retired_at)"
                " SELECT supplier, value, ? FROM acked WHERE supplier = ?",
                (now(db), target.supplier),
            )
        else:
            db.execute("DELETE FROM retired WHERE supplier = ?", (target.supplier,))
        # As if CyberTrace held nothing and had refused nothing: rejections are re-sent too.
        db.execute("DELETE FROM acked WHERE supplier = ?", (target.supplier,))
        db.execute("DELETE FROM rejected WHERE supplier = ?", (target.supplier,))
    reshaped = _signature_changed(db, target)
    if resync or reshaped is not False:  # None: a supplier never planned
        mark_all_dirty(db, target)
    if refresh is not None:
        db.execute(
            "INSERT OR IGNORE INTO dirty (supplier, value) SELECT a.supplier, a.value FROM acked a"
            f" WHERE a.supplier = :supplier AND {_due('a')}",
            {"supplier": target.supplier, "span": refresh.span, "now": refresh.now},
        )
    counts = {"add": 0, "update": 0, "delete": 0, "refresh": 0}
    position = {feed_id: index for index, feed_id in enumerate(target.feed_ids)}
    writes: list[tuple[str, str, int | None, str]] = []
    drops: list[tuple[str, str]] = []
    forget: list[tuple[str, str]] = []
    respelled: list[tuple[str, str]] = []
    shape = _RESHAPED if reshaped is True and not resync else ""
    noted = planlog.start(db, target.supplier, now(db), why=cause if resync else "", reshaped=shape)
    for current, rows in _dirty(db, target, refresh):
        if not rows and current.rejected is not None:
            forget.append((target.supplier, current.value))
        op = _decide(current, rows, target, position)
        if op is not None and op[0] == "delete" and _respelled_desired(db, target, current.value):
            # An older feedsync stored this value in a spelling CyberTrace reads as one
            # the feeds still list: deleting it would delete that one. Forget it instead.
            respelled.append((target.supplier, current.value))
            op = None
        if op is None:
            if current.pending_op is not None:
                drops.append((target.supplier, current.value))
            continue
        kind, digest, body = op
        refreshed = current.due and kind == "update" and current.acked == digest
        counts["refresh" if refreshed else kind] += 1
        event = "refresh" if refreshed else _EVENTS[kind]
        _journal_op(noted, target, position, (event, current.value), rows)
        writes.append((kind, current.value, digest, body))
        if len(writes) >= BATCH:
            _write(db, target, writes)
            writes.clear()
    _write(db, target, writes)
    if resync and sweep:
        counts["delete"] += _sweep_retired(db, target, noted)
    noted.close()
    db.executemany("DELETE FROM pending WHERE supplier = ? AND value = ?", [*drops, *respelled])
    db.executemany("DELETE FROM acked WHERE supplier = ? AND value = ?", respelled)
    db.executemany(
        "DELETE FROM rejected WHERE supplier = ? AND value = ? AND op != 'delete'", forget
    )
    _planned(db, target)
    return Plan(**counts)


def _planned(db: sqlite3.Connection, target: Target) -> None:
    """The plan is complete: no value waits for comparison, and the next plan
    knows the merge and body shape this one used."""
    db.execute("DELETE FROM dirty WHERE supplier = ?", (target.supplier,))
    db.execute(
        "INSERT INTO suppliers (name, signature) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET signature = excluded.signature",
        (target.supplier, target.signature()),
    )


def _first_plan(db: sqlite3.Connection, target: Target) -> bool:
    """Whether this is the supplier's first plan, from feeds whose rows are all
    keyed by their value (CSV): then every value is an add, in value order."""
    supplier = target.supplier
    if db.execute("SELECT 1 FROM suppliers WHERE name = ?", (supplier,)).fetchone():
        return False
    for table in ("acked", "pending", "rejected"):
        if db.execute(f"SELECT 1 FROM {table} WHERE supplier = ? LIMIT 1", (supplier,)).fetchone():
            return False
    feeds = ",".join(str(int(feed_id)) for feed_id in target.feed_ids) or "NULL"
    # The partial index holds only such rows: a scan of it, not of the feeds' rows.
    keyed = db.execute(
        "SELECT 1 FROM snapshot INDEXED BY snapshot_keyed"
        f" WHERE feed_id IN ({feeds}) AND key != value LIMIT 1"
    ).fetchone()
    return keyed is None


def _plan_first(db: sqlite3.Connection, target: Target) -> Plan:
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
        body = _put_body(value, listing, target, position)
        _journal_op(noted, target, position, ("add", value), listing)
        writes.append(("add", value, digest64(body.encode()), body))
        if len(writes) >= BATCH:
            added += len(writes)
            _write(db, target, writes)
            writes.clear()
    added += len(writes)
    _write(db, target, writes)
    noted.close()
    _planned(db, target)
    return Plan(add=added)


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


_RESHAPED = "re-planned: the supplier's feeds or its indicators' shape changed"
_EVENTS: dict[str, journal.Event] = {"add": "add", "update": "update", "delete": "delete"}


def _journal_op(
    noted: planlog.Planned,
    target: Target,
    position: dict[int, int],
    op: tuple[journal.Event, str],
    rows: Sequence[tuple[int, str, str]],
) -> None:
    if noted.bulk or op[0] == "refresh":  # counted, not named (the hot loop)
        noted.counts[op[0]] += 1
    else:
        feeds = [target.feed_names[i] for i in sorted(position[row[0]] for row in rows)]
        noted.op(op[0], op[1], feeds)


def _sweep_retired(db: sqlite3.Connection, target: Target, noted: planlog.Planned) -> int:
    """Plan a DELETE of each value feedsync once sent to the supplier that no feed
    lists now (deleting one CyberTrace does not hold is done all the same). An
    old spelling of a listed value is not deleted: CyberTrace would read it as
    that value."""
    feeds = ",".join(str(int(feed_id)) for feed_id in target.feed_ids) or "NULL"
    rows = db.execute(
        "SELECT t.value FROM retired t WHERE t.supplier = ?1"
        f" AND NOT EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id IN ({feeds})"
        " AND s.key = t.value AND s.value = t.value)"
        f" AND NOT EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id IN ({feeds})"
        " AND s.value = t.value AND s.key != s.value)",
        (target.supplier,),
    )
    writes: list[tuple[str, str, int | None, str]] = [
        ("delete", value, None, _delete_body(value, target))
        for (value,) in rows
        if not _respelled_desired(db, target, value)
    ]
    _write(db, target, writes)
    for _op, value, _digest, _body in writes:
        noted.note("delete", value, None, "feedsync once sent it and no feed lists it now")
    return len(writes)


def prune_retired(db: sqlite3.Connection, supplier: str, before: float) -> None:
    """Forget values retired before ``before``: with a finite retention, any copy a
    backup holds has expired since (retention runs from an indicator's last update)."""
    db.execute("DELETE FROM retired WHERE supplier = ? AND retired_at < ?", (supplier, before))


def _respelled_desired(db: sqlite3.Connection, target: Target, value: str) -> bool:
    """Whether ``value`` canonicalizes (by today's rules) to another value the
    supplier's feeds list."""
    try:
        canonical = canonicalize(value)[1]
    except InvalidValue:
        return False
    if canonical == value:
        return False
    feeds = ",".join(str(int(feed_id)) for feed_id in target.feed_ids) or "NULL"
    found = db.execute(
        f"SELECT 1 FROM snapshot WHERE feed_id IN ({feeds}) AND key = ?1 AND value = ?1"
        f" UNION ALL SELECT 1 FROM snapshot WHERE feed_id IN ({feeds}) AND value = ?1"
        " AND key != value LIMIT 1",
        (canonical,),
    ).fetchone()
    return found is not None


def mark_all_dirty(db: sqlite3.Connection, target: Target) -> None:
    """Mark every value the supplier has, had or may have for comparison."""
    supplier = target.supplier
    marks = (
        "SELECT ?, s.value FROM snapshot s JOIN feeds f ON f.id = s.feed_id WHERE f.supplier = ?",
        "SELECT ?, value FROM acked WHERE supplier = ?",
        "SELECT ?, value FROM pending WHERE supplier = ?",
        "SELECT ?, value FROM rejected WHERE supplier = ?",
    )
    for select in marks:
        db.execute(f"INSERT OR IGNORE INTO dirty (supplier, value) {select}", (supplier, supplier))


def _signature_changed(db: sqlite3.Connection, target: Target) -> bool | None:
    """Whether the merge or body shape changed since the last plan; None for a
    supplier never planned."""
    row = db.execute(
        "SELECT signature FROM suppliers WHERE name = ?", (target.supplier,)
    ).fetchone()
    return None if row is None else row[0] != target.signature()


def _dirty(
    db: sqlite3.Connection, target: Target, refresh: Refresh | None
) -> Iterator[tuple[_Current, list[tuple[int, str, str]]]]:
    """Each dirty value with its current state and its snapshot rows
    (feed id, context, tags) in the supplier's feeds."""
    feeds = ",".join(str(int(feed_id)) for feed_id in target.feed_ids) or "NULL"
    columns = (
        "SELECT d.value, a.digest, r.digest, p.op, p.digest, s.feed_id, s.context, s.tags,"
        f" coalesce({_due('a')}, 0)"
    )
    state = (
        " LEFT JOIN acked a ON a.supplier = :supplier AND a.value = d.value"
        " LEFT JOIN rejected r ON r.supplier = :supplier AND r.value = d.value"
        " LEFT JOIN pending p ON p.supplier = :supplier AND p.value = d.value"
    )
    # A value's snapshot rows: those keyed by it (the primary key), then those keyed
    # by a source's own id (the partial index snapshot_keyed), each driven by d.
    query = (
        "WITH d AS (SELECT value FROM dirty WHERE supplier = :supplier AND value > :after"
        " ORDER BY value LIMIT :limit)"
        f" {columns} FROM d {state} LEFT JOIN snapshot s"
        f" ON s.feed_id IN ({feeds}) AND s.key = d.value AND s.value = d.value"
        f" UNION ALL {columns} FROM d CROSS JOIN snapshot s"
        f" ON s.value = d.value AND s.key != s.value AND s.feed_id IN ({feeds}) {state}"
        " ORDER BY 1"
    )
    after = ""
    while True:
        # One chunk at a time, fetched whole: the caller writes to pending between chunks,
        # and memory stays bounded by the chunk, not by the supplier.
        params = {"supplier": target.supplier, "after": after, "limit": BATCH}
        params |= (
            {"span": refresh.span, "now": refresh.now} if refresh else {"span": None, "now": 0}
        )
        rows = db.execute(query, params).fetchall()
        if not rows:
            return
        for value, group in itertools.groupby(rows, key=lambda row: row[0]):
            members = list(group)
            first = members[0]
            current = _Current(value, first[1], first[2], first[3], first[4], bool(first[8]))
            yield current, [(m[5], m[6], m[7]) for m in members if m[5] is not None]
        after = rows[-1][0]


def _decide(
    current: _Current,
    rows: Sequence[tuple[int, str, str]],
    target: Target,
    position: dict[int, int],
) -> tuple[str, int | None, str] | None:
    """The operation a value needs: (op, digest, body), or None."""
    if not rows:
        # A pending PUT may already have reached CyberTrace, and so may one CyberTrace
        # said it refused: only a DELETE makes sure (one that does not exist is done).
        if current.acked is None and current.pending_op is None and current.rejected is None:
            return None
        return "delete", None, _delete_body(current.value, target)
    body = _put_body(current.value, rows, target, position)
    digest = digest64(body.encode())
    if current.rejected == digest:
        return None
    if current.pending_op in ("add", "update"):
        if current.pending == digest:
            return current.pending_op, digest, body
    elif current.acked == digest and current.pending_op is None and not current.due:
        return None
    return ("update" if current.acked is not None else "add"), digest, body


def _put_body(
    value: str, rows: Sequence[tuple[int, str, str]], target: Target, position: dict[int, int]
) -> str:
    if len(rows) == 1 and target.provenance is None:
        return _single_put_body(value, rows[0], target)
    ordered = sorted(rows, key=lambda row: position[row[0]])
    body: dict[str, object] = {"indicator": value}
    if target.send_context:
        first = ordered[0]
        context = orjson.loads(first[1] if first[1] != "{}" else target.source_context(first[0]))
        if target.provenance is not None and target.provenance.feeds is not None:
            names = [target.feed_names[position[row[0]]] for row in ordered]
            context[target.provenance.feeds] = ",".join(dict.fromkeys(names))
        body["context"] = context
    if target.send_tags:
        tags: set[str] = set()
        for row in ordered:
            tags.update(orjson.loads(row[2]))
        # Always sent, even empty: an absent "tags" would leave removed tags in place.
        body["tags"] = sorted(tags)
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def _single_put_body(value: str, row: tuple[int, str, str], target: Target) -> str:
    """The body of a value one feed lists, from its row's JSON as stored (compact,
    sorted keys, sorted tags): the same text as the merge above makes, without
    parsing and re-encoding it, which is most of planning a million values."""
    feed_id, context, tags = row
    parts = []
    if target.send_context:
        shown = context if context != "{}" else target.source_context(feed_id)
        parts.append(f'"context":{shown}')
    parts.append(f'"indicator":{orjson.dumps(value).decode()}')
    if target.send_tags:
        parts.append(f'"tags":{tags}')
    return "{" + ",".join(parts) + "}"


def _delete_body(value: str, target: Target) -> str:
    body: dict[str, object] = {"indicator": value}
    if target.unmark_detections is not None:
        body["unmark_detections"] = target.unmark_detections
    return orjson.dumps(body).decode()


def _write(
    db: sqlite3.Connection, target: Target, writes: list[tuple[str, str, int | None, str]]
) -> None:
    planned = now(db)
    supplier = target.supplier
    if target.provenance is not None:
        writes = stamp(db, supplier, writes, fields=target.provenance, at=planned)
    db.executemany(
        "INSERT INTO pending (supplier, value, op, digest, body, planned_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (supplier, value) DO UPDATE SET"
        " op = excluded.op, digest = excluded.digest, body = excluded.body,"
        " planned_at = excluded.planned_at",
        [(supplier, value, op, digest, body, planned) for op, value, digest, body in writes],
    )
