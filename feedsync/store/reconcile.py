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

import itertools
import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from feedsync.normalize import InvalidValue, canonicalize
from feedsync.store import journal, now, planlog, ranges
from feedsync.store.bodies import Target, delete_body, put_body
from feedsync.store.firstplan import first_plan, plan_first, plan_ranged
from feedsync.store.pending import planned, write_planned
from feedsync.store.planlog import journal_op
from feedsync.store.snapshot import digest64

BATCH = 5000


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


# The earliest factor of a deadline (_due), which _MARK_DUE's range ends by too.
_EARLIEST = "0.6667"


def _due(table: str) -> str:
    """SQL: the acknowledged row is due; its deadline is acked_at + span * (2/3 .. 1),
    placed by its digest."""
    return (
        f"{table}.acked_at + :span * ({_EARLIEST} + 0.3333 * (({table}.digest & 1023) / 1024.0))"
        " <= :now"
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
    eager: bool = False,
) -> Plan:
    """Turn the supplier's dirty values into pending operations.

    ``resync`` re-plans every desired value as if CyberTrace held nothing and,
    with ``sweep``, deletes every value feedsync ever sent there that no feed
    lists now (a CyberTrace restored from an older backup holds them again);
    without ``sweep`` (a supplier just created empty) it forgets them.
    ``refresh`` re-PUTs acknowledged values before their retention runs out.
    Each operation is journaled (with ``cause`` for a resync's). Runs inside the
    caller's transaction. A first plan is one pending range (ranges.py) unless
    ``eager`` (a dry run, whose preview reads rows) or provenance stamps each body.
    """
    if not resync and first_plan(db, target):
        if eager or target.provenance is not None:
            return Plan(add=plan_first(db, target))
        return Plan(add=plan_ranged(db, target))
    _unrange(db, target, resync or eager)
    if resync:
        _forget_sent(db, target, sweep)
    reshaped = _mark(db, target, resync, refresh)
    shape = _RESHAPED if reshaped is True and not resync else ""
    noted = planlog.start(db, target.supplier, now(db), why=cause if resync else "", reshaped=shape)
    counts, settled = _compare(db, target, refresh, noted)
    if resync and sweep:
        counts["delete"] += _sweep_retired(db, target, noted)
    noted.close()
    settled.clear(db)
    planned(db, target)
    return Plan(**counts)


def _unrange(db: sqlite3.Connection, target: Target, everything: bool) -> None:
    """Turn a supplier's pending ranges (an interrupted first sync) into pending rows
    before a plan that compares a value inside them, or every value."""
    if not ranges.exists(db, target.supplier):
        return
    if everything or _signature_changed(db, target) or ranges.dirty_inside(db, target.supplier):
        ranges.materialize(db, target.supplier)


def _forget_sent(db: sqlite3.Connection, target: Target, sweep: bool) -> None:
    """A resync: as if CyberTrace held nothing and had refused nothing (rejections
    are re-sent too); with ``sweep``, what it held is retired, to be deleted."""
    if sweep:
        db.execute(
            "INSERT OR IGNORE INTO retired (supplier, value, retired_at)"
            " SELECT supplier, value, ? FROM acked WHERE supplier = ?",
            (now(db), target.supplier),
        )
    else:
        db.execute("DELETE FROM retired WHERE supplier = ?", (target.supplier,))
    db.execute("DELETE FROM acked WHERE supplier = ?", (target.supplier,))
    db.execute("DELETE FROM rejected WHERE supplier = ?", (target.supplier,))


def _mark(
    db: sqlite3.Connection, target: Target, resync: bool, refresh: Refresh | None
) -> bool | None:
    """Mark what this plan compares beyond the feeds' changes: everything after a
    resync or a new shape, and what is due for refresh. Returns whether the shape
    changed (None: a supplier never planned)."""
    reshaped = _signature_changed(db, target)
    if resync or reshaped is not False:
        mark_all_dirty(db, target)
    if refresh is not None:
        db.execute(_MARK_DUE, _due_bounds(target.supplier, refresh))
    return reshaped


# The refresh's marks, from the index acked_due: no row acked after now - span * 2/3
# can be due (the earliest factor of _due), so the range ends there (with :slack for
# rounding), and _due decides within it.
_MARK_DUE = (
    "INSERT OR IGNORE INTO dirty (supplier, value) SELECT a.supplier, a.value FROM acked a"
    f" WHERE a.supplier = :supplier AND a.acked_at <= :now - :span * {_EARLIEST} + :slack"
    f" AND {_due('a')}"
)


def _due_bounds(supplier: str, refresh: Refresh) -> dict[str, object]:
    """``_MARK_DUE``'s parameters; :slack outweighs the rounding of both sides, so
    that the range never ends before a row ``_due`` takes."""
    slack = 1e-3 + 8 * math.ulp(max(abs(refresh.now), abs(refresh.span)))
    return {"supplier": supplier, "span": refresh.span, "now": refresh.now, "slack": slack}


@dataclass(slots=True)
class _Settled:
    """What a plan found needs no operation, but a cleanup of the supplier's records."""

    supplier: str
    drops: list[tuple[str, str]] = field(default_factory=list)  # pending, no longer needed
    forget: list[tuple[str, str]] = field(default_factory=list)  # rejected, no longer listed
    respelled: list[tuple[str, str]] = field(default_factory=list)  # an older spelling

    def clear(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "DELETE FROM pending WHERE supplier = ? AND value = ?", [*self.drops, *self.respelled]
        )
        db.executemany("DELETE FROM acked WHERE supplier = ? AND value = ?", self.respelled)
        db.executemany(
            "DELETE FROM rejected WHERE supplier = ? AND value = ? AND op != 'delete'", self.forget
        )


def _compare(
    db: sqlite3.Connection, target: Target, refresh: Refresh | None, noted: planlog.Planned
) -> tuple[dict[str, int], _Settled]:
    """Each dirty value's operation, written to ``pending`` and journaled."""
    counts = {"add": 0, "update": 0, "delete": 0, "refresh": 0}
    position = {feed_id: index for index, feed_id in enumerate(target.feed_ids)}
    writes: list[tuple[str, str, int | None, str]] = []
    settled = _Settled(target.supplier)
    for current, rows in _dirty(db, target, refresh):
        key = (target.supplier, current.value)
        if not rows and current.rejected is not None:
            settled.forget.append(key)
        op = _decide(current, rows, target, position)
        if op is not None and op[0] == "delete" and _respelled_desired(db, target, current.value):
            # An older feedsync stored this value in a spelling CyberTrace reads as one
            # the feeds still list: deleting it would delete that one. Forget it instead.
            settled.respelled.append(key)
            op = None
        if op is None:
            if current.pending_op is not None:
                settled.drops.append(key)
            continue
        kind, digest, body = op
        refreshed = current.due and kind == "update" and current.acked == digest
        counts["refresh" if refreshed else kind] += 1
        event = "refresh" if refreshed else _EVENTS[kind]
        journal_op(noted, target.feed_names, position, (event, current.value), rows)
        writes.append((kind, current.value, digest, body))
        if len(writes) >= BATCH:
            write_planned(db, target, writes)
            writes.clear()
    write_planned(db, target, writes)
    return counts, settled


_RESHAPED = "re-planned: the supplier's feeds or its indicators' shape changed"
_EVENTS: dict[str, journal.Event] = {"add": "add", "update": "update", "delete": "delete"}


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
        ("delete", value, None, delete_body(value, target))
        for (value,) in rows
        if not _respelled_desired(db, target, value)
    ]
    write_planned(db, target, writes)
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
        return "delete", None, delete_body(current.value, target)
    body = put_body(current.value, rows, target, position)
    digest = digest64(body.encode())
    if current.rejected == digest:
        return None
    if current.pending_op in ("add", "update"):
        if current.pending == digest:
            return current.pending_op, digest, body
    elif current.acked == digest and current.pending_op is None and not current.due:
        return None
    return ("update" if current.acked is not None else "add"), digest, body
