"""Sending a supplier's plan to CyberTrace, batch by batch.

Batches are cut from the ``pending`` table under ``max_batch_bytes``,
``max_batch_indicators`` and the API's body limits. Each answer is recorded
in one transaction: acknowledged values move to ``acked``, refused ones to
``rejected`` with their reason, and their pending rows go. What is not
acknowledged stays pending for the next cycle (invariant 1).
"""

from __future__ import annotations

import asyncio
import heapq
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from feedsync import logs
from feedsync.cybertrace import DELETE_LIMIT, PUT_LIMIT, CyberTrace, Outcome
from feedsync.cybertrace.verdict import Verdict, verdict
from feedsync.errors import AuthError, CyberTraceError, RequestError, StoreError, SupplierGone
from feedsync.progress import QUIET, Meter
from feedsync.store import Store, now

log = logs.get("feedsync.upload")

Repair = Callable[[], Awaitable[bool]]

# A request-level 400 is halved only so far, and only so often per upload: a batch
# that CyberTrace refuses whole for a reason of its own must not become 2n requests.
MAX_SPLIT_DEPTH = 16
SPLIT_BUDGET = 128
# Until one request of the upload went through, a refusal may be the request's own
# fault (the form, the supplier): halving then probes only this far.
PROBE_BUDGET = 16


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


@dataclass(frozen=True, slots=True)
class Batch:
    method: str
    items: tuple[Item, ...]

    def payload(self) -> bytes:
        return b"[" + b",".join(item.body for item in self.items) + b"]"


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


def batches(
    db: sqlite3.Connection, supplier: str, method: str, max_bytes: int, max_count: int
) -> Iterator[Batch]:
    """Cut the supplier's pending operations of one method into batches."""
    ops = ("delete",) if method == "DELETE" else ("add", "update")
    limit = min(max_bytes, DELETE_LIMIT if method == "DELETE" else PUT_LIMIT)
    items: list[Item] = []
    size = 2
    # In plan order (by id) across the ops, each read along the index (supplier, op, id):
    # one query over both ops sorted every remaining row, bodies and all, for each chunk.
    streams = [_pending(db, supplier, op) for op in ops]
    rows = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_row_id)
    for row in rows:
        item = Item(row[0], row[1], row[2], row[3], row[4].encode())
        grown = size + len(item.body) + (1 if items else 0)
        if items and (grown > limit or len(items) >= max_count):
            yield Batch(method, tuple(items))
            items, grown = [], 2 + len(item.body)
        items.append(item)
        size = grown
    if items:
        yield Batch(method, tuple(items))


def _pending(db: sqlite3.Connection, supplier: str, op: str) -> Iterator[tuple[Any, ...]]:
    """The supplier's pending rows of one op by id, read a chunk at a time (rows
    acknowledged meanwhile are behind the chunk read last)."""
    after = 0
    while True:
        cursor = db.cursor()
        cursor.row_factory = None  # plain tuples: a million rows are read this way
        rows = cursor.execute(
            "SELECT id, value, op, digest, body FROM pending WHERE supplier = ? AND op = ?"
            " AND id > ? ORDER BY id LIMIT 5000",
            (supplier, op, after),
        ).fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def _row_id(row: tuple[Any, ...]) -> int:
    return int(row[0])


def acknowledge(db: sqlite3.Connection, supplier: str, batch: Batch, decided: Verdict) -> Sent:
    """Record CyberTrace's answer to a batch; returns what it changed."""
    sent = Sent()
    stamp = now()
    gone: list[tuple[str, str]] = []  # deleted from CyberTrace: no longer acknowledged
    acked: list[tuple[str, str, int | None, float]] = []
    rejected: list[tuple[str, str, str, int | None, str, float]] = []
    settled: list[tuple[int]] = []
    for item in batch.items:
        if item.id in decided.unconfirmed:
            sent.unconfirmed += 1
            continue
        settled.append((item.id,))
        reason = decided.refused.get(item.id)
        if item.op == "delete":
            gone.append((supplier, item.value))
            sent.delete += 1
        elif reason is None:
            acked.append((supplier, item.value, item.digest, stamp))
            setattr(sent, item.op, getattr(sent, item.op) + 1)
        else:
            rejected.append((supplier, item.value, item.op, item.digest, reason[:500], stamp))
            sent.rejected += 1
    # One statement per kind of change, not three per item: an initial sync
    # acknowledges a million values.
    db.executemany("DELETE FROM acked WHERE supplier = ? AND value = ?", gone)
    db.executemany(
        "INSERT INTO acked (supplier, value, digest, acked_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (supplier, value) DO UPDATE SET digest = excluded.digest,"
        " acked_at = excluded.acked_at",
        acked,
    )
    db.executemany(
        "INSERT INTO retired (supplier, value, retired_at) VALUES (?, ?, ?)"
        " ON CONFLICT (supplier, value) DO UPDATE SET retired_at = excluded.retired_at",
        [(s, value, stamp) for s, value in gone],
    )
    if db.execute("SELECT 1 FROM retired WHERE supplier = ? LIMIT 1", (supplier,)).fetchone():
        db.executemany(
            "DELETE FROM retired WHERE supplier = ? AND value = ?",
            [(s, value) for s, value, _digest, _at in acked],
        )
    if db.execute("SELECT 1 FROM rejected WHERE supplier = ? LIMIT 1", (supplier,)).fetchone():
        db.executemany(
            "DELETE FROM rejected WHERE supplier = ? AND value = ?",
            [*gone, *((s, value) for s, value, _digest, _at in acked)],
        )
    db.executemany(
        "INSERT OR REPLACE INTO rejected (supplier, value, op, digest, reason, rejected_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rejected,
    )
    db.executemany("DELETE FROM pending WHERE id = ?", settled)
    return sent


def reject_oversize(db: sqlite3.Connection, supplier: str, item: Item, limit: int) -> None:
    """An indicator whose body alone exceeds the request limit can never be sent."""
    db.execute(
        "INSERT OR REPLACE INTO rejected (supplier, value, op, digest, reason, rejected_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (supplier, item.value, item.op, item.digest, f"body over the {limit}-byte limit", now()),
    )
    db.execute("DELETE FROM pending WHERE id = ?", (item.id,))


@dataclass(slots=True)
class _Upload:
    """One supplier's upload under way: what it has shown so far."""

    store: Store
    client: CyberTrace
    supplier: str
    total: Sent
    repair: Repair | None = None
    successes: int = 0  # requests answered 2xx: the supplier and the request form are fine
    splits: int = SPLIT_BUDGET
    doubtful: list[tuple[Item, str]] = field(default_factory=list)
    repaired: asyncio.Task[bool] | None = None
    meter: Meter = QUIET


async def upload(
    store: Store,
    client: CyberTrace,
    supplier: str,
    repair: Repair | None = None,
    meter: Meter = QUIET,
) -> Sent:
    """Send the supplier's whole plan: PUTs first, then DELETEs.

    Up to ``concurrency`` batches are in flight. The first batch that fails
    after its retries stops the upload; the rest stays pending. A supplier that
    disappears meanwhile raises ``SupplierGone``. ``repair`` is awaited once on
    the first request-level refusal (to create again what an operator deleted,
    such as tags); when it repaired something, refused batches are sent again.
    ``meter`` counts the indicators each answer settled.
    """
    run = _Upload(store, client, supplier, Sent(), repair, meter=meter)
    config = client.config
    for method in ("PUT", "DELETE"):
        cut = batches(
            store.db, supplier, method, config.max_batch_bytes, config.max_batch_indicators
        )
        # Batches are cut one at a time on the store's thread: memory holds only those in flight.
        gate = asyncio.Semaphore(config.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                while (batch := await store.call(next, cut, None)) is not None:
                    await gate.acquire()
                    task = group.create_task(_send(run, batch, 0))
                    task.add_done_callback(_releaser(gate))
        except* (AuthError, StoreError, SupplierGone) as failures:
            raise failures.exceptions[0] from None
        except* CyberTraceError as failures:
            run.total.errors.extend(str(exc) for exc in failures.exceptions)
        await _settle_doubtful(run)
        if run.total.errors:
            break
    return run.total


async def _send(run: _Upload, batch: Batch, depth: int, *, again: bool = False) -> None:
    payload = batch.payload()
    limit = min(
        run.client.config.max_batch_bytes, DELETE_LIMIT if batch.method == "DELETE" else PUT_LIMIT
    )
    if len(payload) > limit:
        for item in batch.items:
            await run.store.call(_reject_oversize_txn, run.store, run.supplier, item, limit)
            run.total.rejected += 1
        return
    try:
        if batch.method == "PUT":
            outcome = await run.client.put_indicators(run.supplier, payload)
        else:
            outcome = await run.client.delete_indicators(run.supplier, payload)
    except RequestError as exc:
        if exc.status not in (400, 404):
            raise
        if not again and await _repaired(run):
            await _send(run, batch, depth, again=True)
            return
        await _refused(run, batch, depth, exc)
        return
    run.successes += 1
    decided = verdict(batch, outcome)
    sent = await run.store.call(_acknowledge_txn, run.store, run.supplier, batch, decided)
    _count(run.total, sent, len(payload))
    run.meter(sent.add + sent.update + sent.delete + sent.rejected, 1)
    if sent.rejected:
        log.warning(
            "upload.rejected",
            supplier=run.supplier,
            method=batch.method,
            count=sent.rejected,
            example=next(iter(decided.refused.values()), None),
        )
    if sent.unconfirmed:
        await _unconfirmed(run, batch, outcome, decided, depth)


async def _unconfirmed(
    run: _Upload, batch: Batch, outcome: Outcome, decided: Verdict, depth: int
) -> None:
    """Items an answer did not settle: find out by smaller requests where that can
    tell, else leave them pending and say why."""
    left = tuple(item for item in batch.items if item.id in decided.unconfirmed)
    what = f"{batch.method} suppliers/{run.supplier}/indicators"
    if not outcome.readable:
        run.total.errors.append(
            f"{what}: CyberTrace answered 202 without saying which indicators it refused"
            f"{outcome.text}; {len(left)} indicators stay pending"
        )
        return
    if not decided.unmatched:
        reasons = sorted({decided.refused.get(item.id, "no reason given") for item in left})
        run.total.errors.append(
            f"{what}: CyberTrace did not delete {len(left)} indicators ({'; '.join(reasons[:3])});"
            " they stay pending"
        )
        return
    log.warning(
        "upload.unmatched_error",
        supplier=run.supplier,
        indicator=decided.unmatched[0][0][:200],
        reason=decided.unmatched[0][1][:200],
        count=len(decided.unmatched),
    )
    if len(left) == 1 and len(decided.unmatched) == 1:
        # The only item not accounted for is the one CyberTrace named its own way.
        await _reject_one(run, left[0], decided.unmatched[0][1])
        return
    why = f"{what}: refused values it names unlike any sent ({decided.unmatched[0][0][:100]!r})"
    await _split(run, Batch(batch.method, left), depth, why)


async def _refused(run: _Upload, batch: Batch, depth: int, exc: RequestError) -> None:
    """A request-level refusal (400, 404). Per-indicator problems come back as a
    202, so this is about the request: a vanished supplier, or one bad item that
    spoils a whole batch. Only evidence splits a batch: the supplier is listed,
    and a single item is rejected for good only if other requests succeeded."""
    if run.supplier not in await run.client.supplier_names():
        raise SupplierGone(
            f"supplier {run.supplier!r} is no longer in CyberTrace ({exc}); it is created"
            " again and refilled"
        )
    if exc.status == 404:
        raise exc
    if len(batch.items) == 1:
        run.doubtful.append((batch.items[0], f"refused with {exc}"[:500]))
        return
    await _split(run, batch, depth, str(exc))


async def _repaired(run: _Upload) -> bool:
    """Whether the upload's one repair (shared by all batches refused meanwhile)
    changed anything."""
    if run.repair is None:
        return False
    if run.repaired is None:
        run.repaired = asyncio.ensure_future(run.repair())
    return await asyncio.shield(run.repaired)


async def _split(run: _Upload, batch: Batch, depth: int, why: str) -> None:
    probed_out = not run.successes and run.splits <= SPLIT_BUDGET - PROBE_BUDGET
    if depth >= MAX_SPLIT_DEPTH or run.splits < 2 or probed_out:
        raise CyberTraceError(f"{why}; {len(batch.items)} indicators stay pending")
    run.splits -= 2
    middle = len(batch.items) // 2
    for half in (batch.items[:middle], batch.items[middle:]):
        await _send(run, Batch(batch.method, half), depth + 1)


async def _settle_doubtful(run: _Upload) -> None:
    """Single items CyberTrace refused with a 400: their own fault if requests of
    the same upload went through, else (nothing did) the request's, and they stay."""
    doubtful, run.doubtful = run.doubtful, []
    if not doubtful:
        return
    if not run.successes:
        run.total.errors.append(
            f"CyberTrace refused every request for supplier {run.supplier!r}"
            f" ({doubtful[0][1]}); {len(doubtful)} indicators stay pending"
        )
        return
    for item, reason in doubtful:
        await _reject_one(run, item, reason)
    log.warning(
        "upload.refused", supplier=run.supplier, count=len(doubtful), example=doubtful[0][1]
    )


async def _reject_one(run: _Upload, item: Item, reason: str) -> None:
    """Record one item as refused by CyberTrace, with ``reason``."""
    only = Verdict(refused={item.id: reason})
    batch = Batch(item.op_method, (item,))
    sent = await run.store.call(_acknowledge_txn, run.store, run.supplier, batch, only)
    run.total.rejected += sent.rejected


def _count(total: Sent, sent: Sent, size: int) -> None:
    total.add += sent.add
    total.update += sent.update
    total.delete += sent.delete
    total.rejected += sent.rejected
    total.unconfirmed += sent.unconfirmed
    total.requests += 1
    total.bytes += size


def _releaser(gate: asyncio.Semaphore) -> Callable[[object], None]:
    return lambda _task: gate.release()


def _acknowledge_txn(store: Store, supplier: str, batch: Batch, decided: Verdict) -> Sent:
    with store.transaction() as db:
        return acknowledge(db, supplier, batch, decided)


def _reject_oversize_txn(store: Store, supplier: str, item: Item, limit: int) -> None:
    with store.transaction() as db:
        reject_oversize(db, supplier, item, limit)
