"""A supplier's plan as it waits to be sent, and CyberTrace's answers to it.

Pending operations are cut into batches; answers are recorded (acknowledged,
rejected, still pending); the tags the plan names and the dry run's preview
are read here too.

cybertrace/upload.py sends the batches; only this module reads and settles
the ``pending`` table for it (invariant 1: what is not acknowledged stays), and
the pending ranges of a first plan through ranges.py: their items, cut after the
pending rows, have ids below zero.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, Protocol

import orjson

from feedsync.store import Store, connection, now, planlog, ranges
from feedsync.store.batching import batched
from feedsync.store.bodies import Target
from feedsync.store.provenance import stamp

PREVIEW = 10
CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    value: str
    op: str
    digest: int | None
    body: bytes

    @property
    def op_method(self) -> str:
        return "DELETE" if self.op == "delete" else "PUT"


ITEM_FIELDS = ("id", "value", "op", "digest", "body")
# A frozen dataclass's __init__ sets each field through object.__setattr__; an initial
# sync cuts a million items, so ``_made`` sets their slots by their descriptors (the
# class has no __post_init__, and a test fails if a field is added).
_new = object.__new__
_SETTERS = tuple(Item.__dict__[name].__set__ for name in ITEM_FIELDS)
_id_of, _value_of, _op_of, _digest_of, _body_of = map(attrgetter, ITEM_FIELDS)
_row_id = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Batch:
    method: str
    items: tuple[Item, ...]

    def payload(self) -> bytes:
        return b"[" + b",".join(map(_body_of, self.items)) + b"]"


@dataclass(slots=True)
class Sent:
    """What CyberTrace acknowledged in one upload."""

    add: int = 0
    update: int = 0
    delete: int = 0
    rejected: int = 0
    unconfirmed: int = 0
    requests: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


class Answer(Protocol):
    """What an answer says of a batch's items (cybertrace.verdict.Verdict)."""

    @property
    def refused(self) -> Mapping[int, str]: ...

    @property
    def unconfirmed(self) -> frozenset[int]: ...


def batches(
    store: Store, supplier: str, method: str, limit: int, max_count: int
) -> Iterator[Batch]:
    """Cut the supplier's pending operations of one method into batches of at
    most ``limit`` bytes and ``max_count`` items (run it on the store's thread)."""
    db = connection(store)
    ops = ("delete",) if method == "DELETE" else ("add", "update")
    # In plan order (by id) across the ops, each read along the index (supplier, op, id):
    # one query over both ops sorted every remaining row, bodies and all, for each chunk.
    streams = [_pending(db, supplier, op) for op in ops]
    rows = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_row_id)
    made = _stored_items(rows)
    if method == "PUT":
        made = itertools.chain(made, _lazy_items(db, supplier))
    for items in batched(made, _body_of, limit, max_count):
        yield Batch(method, tuple(items))


def _stored_items(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[Item]]:
    """The items of pending rows (id, value, op, digest, body, planned_at), by chunk."""
    while chunk := list(itertools.islice(rows, CHUNK)):
        ids, values, ops, digests, bodies, _at = zip(*chunk, strict=True)
        yield _made(ids, values, ops, digests, map(str.encode, bodies))


def _lazy_items(db: sqlite3.Connection, supplier: str) -> Iterator[list[Item]]:
    """The adds the supplier's ranges hold, after its pending rows; each id is minus its
    place in the cut, so that settling tells a lazy item and its neighbours."""
    place = 0
    for values, digests, bodies, _at in ranges.chunks(db, supplier):
        ids = range(-place - 1, -place - 1 - len(values), -1)
        place += len(values)
        yield _made(ids, values, itertools.repeat("add"), digests, bodies)


def _made(ids: Sequence[int], *columns: Iterable[Any]) -> list[Item]:
    """Items of a chunk's columns (id, value, op, digest, body), each field set over the
    chunk by one ``map`` in C, not five calls an item from Python."""
    made: list[Item] = list(map(_new, itertools.repeat(Item, len(ids))))
    for setter, column in zip(_SETTERS, (ids, *columns), strict=True):
        deque(map(setter, made, column), maxlen=0)
    return made


def operations(store: Store, supplier: str) -> list[tuple[str, str, int | None, str, float]]:
    """Every pending operation of the supplier, (value, op, digest, body, planned_at), its PUTs
    then its DELETEs, each in the order ``batches`` cuts them (tools and tests)."""
    db = connection(store)
    puts = heapq.merge(*(_pending(db, supplier, op) for op in ("add", "update")), key=_row_id)
    lazy = ((0, v, "add", d, b, at) for v, d, b, at in ranges.items(db, supplier))
    rows = itertools.chain(puts, lazy, _pending(db, supplier, "delete"))
    return [(row[1], row[2], row[3], row[4], row[5]) for row in rows]


def _pending(db: sqlite3.Connection, supplier: str, op: str) -> Iterator[tuple[Any, ...]]:
    """The supplier's pending rows of one op by id, read a chunk at a time (rows
    acknowledged meanwhile are behind the chunk read last)."""
    after = 0
    while True:
        cursor = db.cursor()
        cursor.row_factory = None  # plain tuples: a million rows are read this way
        rows = cursor.execute(
            "SELECT id, value, op, digest, body, planned_at FROM pending"
            " WHERE supplier = ? AND op = ? AND id > ? ORDER BY id LIMIT ?",
            (supplier, op, after, CHUNK),
        ).fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def _lazy_only(items: Sequence[Item]) -> bool:
    """Whether a batch holds lazy items alone: it is cut in order, its lazy items
    (adds, with no pending row) last, so its first one tells."""
    return bool(items) and items[0].id < 0


def lazy_runs(items: Iterable[Item]) -> list[tuple[str, str]]:
    """(first, last value) of each run of lazy items consecutive in the cut."""
    given = tuple(items)
    # Lazy items come last in a batch: they are one run, told by comparing their ids
    # with a range (in C) instead of filtering, sorting and walking them.
    lazy = given if _lazy_only(given) else tuple(i for i in given if i.id < 0)
    first = lazy[0].id if lazy else 0
    if lazy and list(map(_id_of, lazy)) == list(range(first, first - len(lazy), -1)):
        return [(lazy[0].value, lazy[-1].value)]
    return walked_runs(lazy)


def walked_runs(items: Iterable[Item]) -> list[tuple[str, str]]:
    """``lazy_runs`` the long way: the lazy items sorted by their place, then walked."""
    runs: list[tuple[str, str]] = []
    last_id = 0
    for item in sorted((i for i in items if i.id < 0), key=lambda i: -i.id):
        if runs and -item.id == last_id + 1:
            runs[-1] = (runs[-1][0], item.value)
        else:
            runs.append((item.value, item.value))
        last_id = -item.id
    return runs


def settle(store: Store, supplier: str, batch: Batch, decided: Answer) -> Sent:
    """Record CyberTrace's answer to a batch in a transaction of its own."""
    with store.transaction() as db:
        return acknowledge(db, supplier, batch, decided, store.clock.now())


def acknowledge(
    db: sqlite3.Connection, supplier: str, batch: Batch, decided: Answer, stamp: float
) -> Sent:
    """Record CyberTrace's answer to a batch (inside the caller's transaction);
    returns what it changed."""
    if decided.unconfirmed or decided.refused:
        return _acknowledge_each(db, supplier, batch, decided, stamp)
    # The usual answer, every item done: an initial sync settles a million items, so
    # they are counted and gathered in C (Counter, attrgetter), not item by item.
    items = batch.items
    ops = {"add": len(items)} if _lazy_only(items) else Counter(map(_op_of, items))
    sent = Sent(add=ops.get("add", 0), update=ops.get("update", 0), delete=ops.get("delete", 0))
    puts: Sequence[Item] = items
    gone: list[str] = []
    if sent.delete:
        puts = [item for item in items if item.op != "delete"]
        gone = [item.value for item in items if item.op == "delete"]
    acked = dict(zip(map(_value_of, puts), map(_digest_of, puts), strict=True))
    _record(db, supplier, gone=gone, acked=acked, rejected=[], stamp=stamp)
    _take(db, supplier, items)
    return sent


def _acknowledge_each(
    db: sqlite3.Connection, supplier: str, batch: Batch, decided: Answer, stamp: float
) -> Sent:
    """``acknowledge`` of an answer that refused or left unconfirmed some items."""
    sent = Sent()
    gone: list[str] = []  # deleted from CyberTrace: no longer acknowledged
    acked: dict[str, int | None] = {}
    rejected: list[tuple[str, str, str, int | None, str, float]] = []
    settled: list[Item] = []
    for item in batch.items:
        if item.id in decided.unconfirmed:
            sent.unconfirmed += 1
            continue
        settled.append(item)
        reason = decided.refused.get(item.id)
        if item.op == "delete":
            gone.append(item.value)
            sent.delete += 1
        elif reason is None:
            acked[item.value] = item.digest
            setattr(sent, item.op, getattr(sent, item.op) + 1)
        else:
            rejected.append((supplier, item.value, item.op, item.digest, reason[:500], stamp))
            sent.rejected += 1
    _record(db, supplier, gone=gone, acked=acked, rejected=rejected, stamp=stamp)
    _take(db, supplier, settled)
    return sent


def _take(db: sqlite3.Connection, supplier: str, settled: Iterable[Item]) -> None:
    """Settled items leave the plan: their pending rows, and their values the ranges."""
    settled = tuple(settled)
    ids = [] if _lazy_only(settled) else [(id_,) for id_ in map(_id_of, settled) if id_ > 0]
    db.executemany("DELETE FROM pending WHERE id = ?", ids)
    ranges.remove(db, supplier, lazy_runs(settled))


def _record(
    db: sqlite3.Connection,
    supplier: str,
    *,
    gone: list[str],
    acked: dict[str, int | None],
    rejected: list[tuple[str, str, str, int | None, str, float]],
    stamp: float,
) -> None:
    """Record values deleted (``gone``), acknowledged ({value: digest}) and rejected."""
    # One statement per kind of change, not three per item: an initial sync
    # acknowledges a million values.
    db.executemany(
        "DELETE FROM acked WHERE supplier = ? AND value = ?", [(supplier, v) for v in gone]
    )
    if acked:
        _acknowledged(db, supplier, acked, stamp)
    db.executemany(
        "INSERT INTO retired (supplier, value, retired_at) VALUES (?, ?, ?)"
        " ON CONFLICT (supplier, value) DO UPDATE SET retired_at = excluded.retired_at",
        [(supplier, value, stamp) for value in gone],
    )
    if db.execute("SELECT 1 FROM retired WHERE supplier = ? LIMIT 1", (supplier,)).fetchone():
        db.executemany(
            "DELETE FROM retired WHERE supplier = ? AND value = ?",
            [(supplier, value) for value in acked],
        )
    if db.execute("SELECT 1 FROM rejected WHERE supplier = ? LIMIT 1", (supplier,)).fetchone():
        db.executemany(
            "DELETE FROM rejected WHERE supplier = ? AND value = ?",
            [(supplier, value) for value in itertools.chain(gone, acked)],
        )
    db.executemany(
        "INSERT OR REPLACE INTO rejected (supplier, value, op, digest, reason, rejected_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rejected,
    )
    planlog.rejected(db, stamp, supplier, [(row[1], row[4]) for row in rejected])


_UPSERT_ACKED = (
    " ON CONFLICT (supplier, value) DO UPDATE SET digest = excluded.digest,"
    " acked_at = excluded.acked_at"
)


def _acknowledged(
    db: sqlite3.Connection, supplier: str, acked: dict[str, int | None], stamp: float
) -> None:
    """Record the values as acknowledged, with their digests, at ``stamp``."""
    # One JSON object {value: digest}, not executemany: SQLite reads the rows out of it
    # in C for about 40% of what binding and stepping each one from Python costs.
    members = orjson.dumps(acked)
    if b"\\u0000" not in members:
        # "WHERE true": SQLite would read the upsert's ON as a join constraint without it.
        db.execute(
            "INSERT INTO acked (supplier, value, digest, acked_at)"
            " SELECT ?1, j.key, j.value, ?2 FROM json_each(?3) j WHERE true" + _UPSERT_ACKED,
            (supplier, stamp, members),
        )
        return
    # SQLite's JSON reads a string only up to an escaped NUL: such values are bound.
    db.executemany(
        "INSERT INTO acked (supplier, value, digest, acked_at) VALUES (?, ?, ?, ?)" + _UPSERT_ACKED,
        [(supplier, value, digest, stamp) for value, digest in acked.items()],
    )


def reject_oversize(store: Store, supplier: str, item: Item, limit: int) -> None:
    """An indicator whose body alone exceeds the request limit can never be sent."""
    with store.transaction() as db:
        at = store.clock.now()
        refused = [
            (supplier, item.value, item.op, item.digest, f"body over the {limit}-byte limit", at)
        ]
        _record(db, supplier, gone=[], acked={}, rejected=refused, stamp=at)
        _take(db, supplier, [item])


def planned_tags(store: Store, supplier: str) -> set[str]:
    """Every tag named by the supplier's pending PUTs (those its ranges hold too)."""
    db = connection(store)
    rows = db.execute(
        "SELECT DISTINCT j.value FROM pending p, json_each(p.body, '$.tags') j"
        " WHERE p.supplier = ? AND p.op != 'delete'",
        (supplier,),
    )
    return {str(row[0]) for row in rows} | ranges.tags(db, supplier)


def preview(db: sqlite3.Connection, supplier: str) -> tuple[str, ...]:
    """The first ``PREVIEW`` pending operations of each kind; a list cut short
    says by how much, so that 10 lines are not taken for the whole plan. Inside
    the dry run's transaction, before it is rolled back."""
    lines: list[str] = []
    for op in ("add", "update", "delete"):
        rows = db.execute(
            "SELECT value FROM pending WHERE supplier = ? AND op = ? ORDER BY id LIMIT ?",
            (supplier, op, PREVIEW),
        ).fetchall()
        lines.extend(f"{op} {row[0]}" for row in rows)
        if len(rows) == PREVIEW:
            (count,) = db.execute(
                "SELECT count(*) FROM pending WHERE supplier = ? AND op = ?", (supplier, op)
            ).fetchone()
            if count > PREVIEW:
                lines.append(f"{op} ... and {count - PREVIEW} more")
    return tuple(lines)


def write_planned(
    db: sqlite3.Connection, target: Target, writes: list[tuple[str, str, int | None, str]]
) -> None:
    """Write a plan's operations (op, value, digest, body) as pending, stamped."""
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


def planned(db: sqlite3.Connection, target: Target) -> None:
    """The plan is complete: no value waits for comparison, and the next plan
    knows the merge and body shape this one used."""
    db.execute("DELETE FROM dirty WHERE supplier = ?", (target.supplier,))
    db.execute(
        "INSERT INTO suppliers (name, signature) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET signature = excluded.signature",
        (target.supplier, target.signature()),
    )
