"""A supplier's plan sent to CyberTrace: the cycle's supplier half, after its feeds are applied.

The supplier is made sure of (created, its settings corrected), a resync planned
where CyberTrace lost what it held (deleted by hand, restored from a backup: the
canary says so), values due for their retention's refresh re-planned, the tags
the plan names made, then the plan uploaded and the canary renewed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from feedsync import logs, metrics
from feedsync.config import Config
from feedsync.cybertrace import CyberTrace
from feedsync.cybertrace.bootstrap import SupplierInfo, SupplierState, ensure_supplier, ensure_tags
from feedsync.cybertrace.upload import upload
from feedsync.errors import CyberTraceError, SupplierGone
from feedsync.progress import Meter
from feedsync.store import Store, pending
from feedsync.store.bodies import Target
from feedsync.store.pending import Sent
from feedsync.store.reconcile import Plan, Refresh, plan, prune_retired
from feedsync.sync import canary

log = logs.get("feedsync.sync")


@dataclass(frozen=True, slots=True)
class Sender:
    """Sends each supplier's plan for one cycle."""

    config: Config
    store: Store

    async def send(self, client: CyberTrace, target: Target, meter: Meter) -> tuple[Sent, int]:
        """Send the supplier's plan; what was sent, and how many values were refreshed."""
        try:
            return await self._send_plan(client, target, meter)
        except SupplierGone as exc:
            # Deleted by an operator while we sent: create it again and refill it now.
            log.warning("supplier.vanished", supplier=target.supplier, error=str(exc))
            return await self._send_plan(client, target, meter)

    async def _send_plan(
        self, client: CyberTrace, target: Target, meter: Meter
    ) -> tuple[Sent, int]:
        supplier = target.supplier
        info = await ensure_supplier(client, self.config.supplier_settings(supplier))
        watched = canary.applies(self.config.cybertrace, supplier)
        await self._recover(client, target, info, watched)
        refreshed = await self._refresh(target, info) if info.retention > 0 else 0
        repair = None
        if target.send_tags:

            async def repair() -> bool:
                # A refused request may name a tag an operator deleted since.
                needed = await self.store.call(pending.planned_tags, self.store, supplier)
                return bool(await ensure_tags(client, needed, self.config.cybertrace.tag_weight))

            await repair()
        counts = await self.store.call(functools.partial(self.store.counts, supplier, acked=False))
        meter.enter("upload", counts["add"] + counts["update"] + counts["delete"])
        if not watched:
            return await upload(self.store, client, supplier, repair, meter), refreshed
        changing = counts["add"] + counts["update"] + counts["delete"] > 0
        renew = functools.partial(
            canary.renew,
            client,
            self.store,
            supplier,
            info,
            changed=changing or info.state is SupplierState.CREATED,
            refresh_fraction=self.config.cybertrace.refresh_fraction,
            domain=self.config.cybertrace.canary_domain,
        )
        try:
            sent = await upload(self.store, client, supplier, repair, meter)
        except CyberTraceError:
            # What the upload did send is confirmed in the store, and what it did not
            # is still pending, planned (a resync's plan too): the canary may move on.
            await renew()
            raise
        await renew()
        return sent, refreshed

    async def _recover(
        self, client: CyberTrace, target: Target, info: SupplierInfo, watched: bool
    ) -> None:
        """Plan a resync where CyberTrace lost what was sent: the supplier was deleted
        (made afresh now) or restored from a backup (its canary says so)."""
        supplier = target.supplier
        if info.state is SupplierState.CREATED:
            acked = (await self.store.call(self.store.counts, supplier))["acked"]
            if acked:
                # It was deleted by hand: CyberTrace holds none of what we recorded.
                log.warning("supplier.vanished", supplier=supplier, acked=acked)
                cause = "resync: the supplier was deleted by hand and created again"
                await self.store.call(self.replan, target, None, True, False, cause)
        elif watched:
            why = await canary.lost(client, self.store, supplier, info)
            if why is not None:
                log.warning("supplier.restored", supplier=supplier, reason=why)
                cause = f"resync: CyberTrace lost the supplier's canary ({why})"
                await self.store.call(self.replan, target, None, True, True, cause)

    async def _refresh(self, target: Target, info: SupplierInfo) -> int:
        """Plan the refresh of what the supplier's retention would soon expire; how many."""
        supplier = target.supplier
        await self.store.call(self._prune_retired, supplier, info.retention * 60)
        span = info.retention * 60 * self.config.cybertrace.refresh_fraction
        due = Refresh(span, self.store.clock.now())
        replanned = await self.store.call(self.replan, target, due)
        metrics.REFRESH_DUE.labels(supplier).set(replanned.refresh)
        if replanned.refresh:
            log.info("supplier.refresh", supplier=supplier, due=replanned.refresh)
        return replanned.refresh

    def replan(
        self,
        target: Target,
        refresh: Refresh | None,
        resync: bool = False,
        sweep: bool = True,
        cause: str = "resync",
    ) -> Plan:
        """A plan of the supplier's values (on the store's thread), in a transaction."""
        with self.store.transaction() as db:
            return plan(db, target, resync=resync, sweep=sweep, refresh=refresh, cause=cause)

    def _prune_retired(self, supplier: str, retention_seconds: float) -> None:
        with self.store.transaction() as db:
            prune_retired(db, supplier, self.store.clock.now() - retention_seconds)
