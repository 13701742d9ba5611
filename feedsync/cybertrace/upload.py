"""Sending a supplier's plan to CyberTrace, batch by batch.

Batches are cut from the ``pending`` table and a first plan's pending ranges
(store/pending.py, store/ranges.py) under
``max_batch_bytes``, ``max_batch_indicators`` and the API's body limits. Each
answer is recorded by the store in one transaction: acknowledged values move
to ``acked``, refused ones to ``rejected`` with their reason, and their
pending rows go. What is not acknowledged stays pending for the next cycle
(invariant 1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from feedsync import logs
from feedsync.cybertrace import DELETE_LIMIT, PUT_LIMIT, CyberTrace, Outcome
from feedsync.cybertrace.verdict import Verdict, verdict
from feedsync.errors import AuthError, CyberTraceError, RequestError, StoreError, SupplierGone
from feedsync.progress import QUIET, Meter
from feedsync.store import Store, pending
from feedsync.store.pending import Batch, Item, Sent

log = logs.get("feedsync.upload")

Repair = Callable[[], Awaitable[bool]]

# A request-level 400 is halved only so far, and only so often per upload: a batch
# that CyberTrace refuses whole for a reason of its own must not become 2n requests.
MAX_SPLIT_DEPTH = 16
SPLIT_BUDGET = 128
# Until one request of the upload went through, a refusal may be the request's own
# fault (the form, the supplier): halving then probes only this far.
PROBE_BUDGET = 16


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
        limit = _limit(config.max_batch_bytes, method)
        cut = pending.batches(store, supplier, method, limit, config.max_batch_indicators)
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
    limit = _limit(run.client.config.max_batch_bytes, batch.method)
    if len(payload) > limit:
        for item in batch.items:
            await run.store.call(pending.reject_oversize, run.store, run.supplier, item, limit)
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
    sent = await run.store.call(pending.settle, run.store, run.supplier, batch, decided)
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
    sent = await run.store.call(pending.settle, run.store, run.supplier, batch, only)
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


def _limit(max_bytes: int, method: str) -> int:
    """A request body's limit: the configured one, or the API's if lower."""
    return min(max_bytes, DELETE_LIMIT if method == "DELETE" else PUT_LIMIT)
