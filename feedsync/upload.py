"""Sending a supplier's plan to CyberTrace, batch by batch.

Batches are cut from the ``pending`` table under ``max_batch_bytes``,
``max_batch_indicators`` and the API's body limits. Each answer is recorded
in one transaction: acknowledged values move to ``acked``, refused ones to
``rejected`` with their reason, and their pending rows go. What is not
acknowledged stays pending for the next cycle (invariant 1).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from feedsync import logs
from feedsync.cybertrace import DELETE_LIMIT, PUT_LIMIT, CyberTrace, Outcome
from feedsync.errors import AuthError, CyberTraceError, RequestError, StoreError
from feedsync.normalize import InvalidValue, canonicalize
from feedsync.store import Store, now

log = logs.get("feedsync.upload")


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    value: str
    op: str
    digest: int | None
    body: bytes


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
    requests: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)


def batches(
    db: sqlite3.Connection, supplier: str, method: str, max_bytes: int, max_count: int
) -> Iterator[Batch]:
    """Cut the supplier's pending operations of one method into batches."""
    ops = ("delete",) if method == "DELETE" else ("add", "update")
    limit = min(max_bytes, DELETE_LIMIT if method == "DELETE" else PUT_LIMIT)
    after = 0
    items: list[Item] = []
    size = 2
    while True:
        rows = db.execute(
            f"SELECT id, value, op, digest, body FROM pending WHERE supplier = ?"
            f" AND op IN ({','.join('?' * len(ops))}) AND id > ? ORDER BY id LIMIT 5000",
            (supplier, *ops, after),
        ).fetchall()
        if not rows:
            break
        for row in rows:
            item = Item(row[0], row[1], row[2], row[3], row[4].encode())
            grown = size + len(item.body) + (1 if items else 0)
            if items and (grown > limit or len(items) >= max_count):
                yield Batch(method, tuple(items))
                items, grown = [], 2 + len(item.body)
            items.append(item)
            size = grown
        after = rows[-1][0]
    if items:
        yield Batch(method, tuple(items))


def acknowledge(db: sqlite3.Connection, supplier: str, batch: Batch, outcome: Outcome) -> Sent:
    """Record CyberTrace's answer to a batch; returns what it changed."""
    refused = _match(batch, outcome.errors)
    sent = Sent()
    stamp = now()
    gone: list[tuple[str, str]] = []  # deleted from CyberTrace: no longer acknowledged
    acked: list[tuple[str, str, int | None, float]] = []
    rejected: list[tuple[str, str, str, int | None, str, float]] = []
    for item in batch.items:
        reason = refused.get(item.value)
        if item.op == "delete" and (reason is None or _absent(reason)):
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
    db.executemany("DELETE FROM pending WHERE id = ?", [(item.id,) for item in batch.items])
    return sent


def reject_oversize(db: sqlite3.Connection, supplier: str, item: Item, limit: int) -> None:
    """An indicator whose body alone exceeds the request limit can never be sent."""
    db.execute(
        "INSERT OR REPLACE INTO rejected (supplier, value, op, digest, reason, rejected_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (supplier, item.value, item.op, item.digest, f"body over the {limit}-byte limit", now()),
    )
    db.execute("DELETE FROM pending WHERE id = ?", (item.id,))


async def upload(store: Store, client: CyberTrace, supplier: str) -> Sent:
    """Send the supplier's whole plan: PUTs first, then DELETEs.

    Up to ``concurrency`` batches are in flight. The first batch that fails
    after its retries stops the upload; the rest stays pending.
    """
    total = Sent()
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
                    task = group.create_task(_send(store, client, supplier, batch, total))
                    task.add_done_callback(_releaser(gate))
        except* (AuthError, StoreError) as failures:
            raise failures.exceptions[0] from None
        except* CyberTraceError as failures:
            total.errors.extend(str(exc) for exc in failures.exceptions)
        if total.errors:
            break
    return total


async def _send(store: Store, client: CyberTrace, supplier: str, batch: Batch, total: Sent) -> None:
    payload = batch.payload()
    limit = min(
        client.config.max_batch_bytes, DELETE_LIMIT if batch.method == "DELETE" else PUT_LIMIT
    )
    if len(payload) > limit:
        for item in batch.items:
            await store.call(_reject_oversize_txn, store, supplier, item, limit)
            total.rejected += 1
        return
    try:
        if batch.method == "PUT":
            outcome = await client.put_indicators(supplier, payload)
        else:
            outcome = await client.delete_indicators(supplier, payload)
    except RequestError as exc:
        if exc.status != 400:
            raise
        if len(batch.items) > 1:
            # A bad batch: halve it until the indicators that cause the 400 stand alone.
            middle = len(batch.items) // 2
            for half in (batch.items[:middle], batch.items[middle:]):
                await _send(store, client, supplier, Batch(batch.method, half), total)
            return
        outcome = Outcome(400, {batch.items[0].value: f"refused with 400: {exc}"})
    sent = await store.call(_acknowledge_txn, store, supplier, batch, outcome)
    total.add += sent.add
    total.update += sent.update
    total.delete += sent.delete
    total.rejected += sent.rejected
    total.requests += 1
    total.bytes += len(payload)
    if sent.rejected:
        log.warning(
            "upload.rejected",
            supplier=supplier,
            method=batch.method,
            count=sent.rejected,
            example=next(iter(outcome.errors.items()), None),
        )


def _releaser(gate: asyncio.Semaphore) -> Callable[[object], None]:
    return lambda _task: gate.release()


def _acknowledge_txn(store: Store, supplier: str, batch: Batch, outcome: Outcome) -> Sent:
    with store.transaction() as db:
        return acknowledge(db, supplier, batch, outcome)


def _reject_oversize_txn(store: Store, supplier: str, item: Item, limit: int) -> None:
    with store.transaction() as db:
        reject_oversize(db, supplier, item, limit)


def _absent(reason: str) -> bool:
    # A DELETE of an indicator CyberTrace does not hold has done what it was for.
    text = reason.lower()
    return "exist" in text or "not found" in text


def _match(batch: Batch, errors: dict[str, str]) -> dict[str, str]:
    """Map CyberTrace's refused indicators onto the values sent, which it may echo
    in another spelling."""
    if not errors:
        return {}
    sent = {item.value for item in batch.items}
    matched: dict[str, str] = {}
    for indicator, reason in errors.items():
        if indicator in sent:
            matched[indicator] = reason
            continue
        try:
            canonical = canonicalize(indicator)[1]
        except InvalidValue:
            canonical = indicator
        if canonical in sent:
            matched[canonical] = reason
        else:
            log.warning("upload.unmatched_error", indicator=indicator[:200], reason=reason[:200])
    return matched
