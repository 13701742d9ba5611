"""Restore detection: one canary indicator of feedsync's own in each supplier.

CyberTrace has no request that lists a supplier's indicators, so feedsync cannot
see that CyberTrace lost what it confirmed: restored from a backup, reinstalled,
the supplier deleted and made again empty by hand. The canary tells: a random
name under ``cybertrace.canary_domain`` (a reserved top-level domain, so it
never matches traffic and no feed lists it), sent by feedsync itself and asked
after each cycle with the documented ``POST lookup``. A canary CyberTrace no
longer matches makes feedsync resync the supplier: every value the feeds list is
sent again, every value feedsync once deleted is deleted again.

A cycle that changed the supplier (or whose canary retention would soon expire)
replaces the canary with a new one: a backup taken before the last change lacks
the current canary, so restoring it is found too, and a backup that has it holds
all that feedsync confirmed.

The canary lives in its own table (canaries.py), never in ``acked``: it is no
feed indicator in counts, metrics, plans or sweeps.
"""

from __future__ import annotations

import secrets

import orjson

from feedsync import logs, metrics
from feedsync.config import CyberTraceConfig
from feedsync.cybertrace import CyberTrace
from feedsync.cybertrace.bootstrap import SupplierInfo
from feedsync.cybertrace.verdict import absent
from feedsync.errors import AuthError, CyberTraceError
from feedsync.store import Store, canaries

log = logs.get("feedsync.canary")

# What an analyst who meets the canary in CyberTrace reads in its context.
CONTEXT = {"feedsync": "canary: restore detection, never matches traffic"}
# Lookup matches nothing in FalsePositive (it marks values as not malicious).
UNCHECKABLE = frozenset({"FalsePositive"})


def applies(config: CyberTraceConfig, supplier: str) -> bool:
    return config.canary and supplier not in UNCHECKABLE


async def lost(client: CyberTrace, store: Store, supplier: str, info: SupplierInfo) -> str | None:
    """Why the supplier must be resynced (CyberTrace no longer matches its canary),
    or None: it does, it has none yet, or the answer does not tell."""
    found = await store.call(canaries.read, store, supplier)
    if found is None:
        return None
    if not info.enabled:
        # A disabled supplier matches nothing; its indicators are still there.
        log.info("canary.skipped", supplier=supplier, reason="the supplier is disabled")
        return None
    try:
        known = await client.lookup(found.value)
    except AuthError:
        raise
    except CyberTraceError as exc:
        # Not knowing is no reason to resync, nor to hold back the supplier's changes.
        log.warning("canary.unchecked", supplier=supplier, reason=str(exc))
        return None
    if known is None:
        # Restore detection does not work with this CyberTrace: someone should know.
        log.warning("canary.unchecked", supplier=supplier, reason="lookup did not tell")
        return None
    await store.call(canaries.checked, store, supplier, known)
    if known:
        return None
    metrics.SUPPLIER_RESTORED.labels(supplier).inc()
    if info.retention > 0 and found.placed_at + info.retention * 60 < store.clock.now():
        return (
            "its canary outlived the supplier's retention (feedsync did not run for longer"
            " than it): every indicator is sent again"
        )
    return (
        "CyberTrace no longer matches the canary indicator feedsync keeps in it (restored"
        " from a backup, reinstalled, or the supplier made again by hand): every indicator"
        " is sent again, and every one feedsync deleted is deleted again"
    )


async def renew(
    client: CyberTrace,
    store: Store,
    supplier: str,
    info: SupplierInfo,
    *,
    changed: bool,
    refresh_fraction: float,
    domain: str,
) -> None:
    """Replace the supplier's canary when the supplier changed, it has none, or
    its retention is running out; then delete the one it replaced. A CyberTrace
    that refuses leaves the old canary in place (logged): the cycle goes on."""
    found = await store.call(canaries.read, store, supplier)
    due = (
        found is not None
        and info.retention > 0
        and found.placed_at + info.retention * 60 * refresh_fraction <= store.clock.now()
    )
    try:
        if found is not None and found.previous is not None:
            await _delete_previous(client, store, supplier)  # a DELETE left unconfirmed
        if found is None or changed or due:
            value = f"fs-{secrets.token_hex(8)}.{domain}"
            body = orjson.dumps([{"indicator": value, "context": CONTEXT}])
            outcome = await client.put_indicators(supplier, body)
            if outcome.status == 202:
                why = next(iter(outcome.errors.values()), outcome.text or "no reason given")
                log.warning("canary.refused", supplier=supplier, reason=why[:200])
                return
            previous = found.value if found is not None else None
            await store.call(canaries.placed, store, supplier, value, previous)
            log.info("canary.placed", supplier=supplier, canary=value)
            await _delete_previous(client, store, supplier)
    except AuthError:
        raise
    except CyberTraceError as exc:
        log.warning("canary.not_placed", supplier=supplier, error=str(exc))


async def _delete_previous(client: CyberTrace, store: Store, supplier: str) -> None:
    found = await store.call(canaries.read, store, supplier)
    if found is None or found.previous is None:
        return
    body = orjson.dumps([{"indicator": found.previous}])
    outcome = await client.delete_indicators(supplier, body)
    if outcome.status == 202 and not all(absent(reason) for reason in outcome.errors.values()):
        return  # not confirmed: tried again after the next cycle
    if outcome.readable:
        await store.call(canaries.previous_deleted, store, supplier)
