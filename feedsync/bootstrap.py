"""Making sure a supplier and the tags a plan uses exist in CyberTrace."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import Enum

from feedsync import logs
from feedsync.config import BUILTIN_SUPPLIERS, SupplierConfig
from feedsync.cybertrace import CyberTrace
from feedsync.errors import RequestError

log = logs.get("feedsync.bootstrap")


class SupplierState(Enum):
    PRESENT = "present"
    CREATED = "created"
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class SupplierInfo:
    """What bootstrap did to a supplier, and its retention (minutes, 0 = none)."""

    state: SupplierState
    retention: int


async def ensure_supplier(
    client: CyberTrace, name: str, settings: SupplierConfig | None
) -> SupplierInfo:
    """The supplier exists, with the configured settings where there are some."""
    current = await client.supplier(name)
    configured = settings.retention if settings else 0
    retention = current.get("retention") if current else None
    reported = retention if isinstance(retention, int) and not isinstance(retention, bool) else 0
    return SupplierInfo(await _ensure(client, name, settings, current), configured or reported)


async def _ensure(
    client: CyberTrace,
    name: str,
    settings: SupplierConfig | None,
    current: dict[str, object] | None,
) -> SupplierState:
    if current is None:
        if settings is None:
            raise RequestError(
                404,
                f"supplier {name!r} does not exist in CyberTrace and has no settings under"
                " `suppliers:` to create it with",
            )
        await client.create_supplier(settings)
        log.info("supplier.created", supplier=name)
        return SupplierState.CREATED
    if settings is None or name in BUILTIN_SUPPLIERS:
        return SupplierState.PRESENT
    drift = _drift(current, settings)
    if drift:
        await client.update_supplier(settings)
        log.info("supplier.corrected", supplier=name, fields=",".join(drift))
        return SupplierState.UPDATED
    return SupplierState.PRESENT


def _drift(current: dict[str, object], settings: SupplierConfig) -> list[str]:
    wanted: dict[str, object] = {
        "confidence": settings.confidence,
        "retention": settings.retention,
    }
    if settings.vendor is not None:
        wanted["vendor"] = settings.vendor
    return [key for key, value in wanted.items() if current.get(key) != value]


def planned_tags(db: sqlite3.Connection, supplier: str) -> set[str]:
    """Every tag named by the supplier's pending PUTs."""
    rows = db.execute(
        "SELECT DISTINCT j.value FROM pending p, json_each(p.body, '$.tags') j"
        " WHERE p.supplier = ? AND p.op != 'delete'",
        (supplier,),
    )
    return {str(row[0]) for row in rows}


async def ensure_tags(client: CyberTrace, needed: set[str], weight: int) -> list[str]:
    """Create the tags CyberTrace does not know yet; returns those created."""
    if not needed or not client.tags_supported:
        return []
    missing = sorted(needed - await client.tags())
    if missing:
        await client.create_tags(missing, weight)
        log.info("tags.created", count=len(missing), tags=",".join(missing[:20]))
    return missing
