"""Making sure a supplier and the tags a plan uses exist in CyberTrace."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from feedsync import logs
from feedsync.config import BUILTIN_SUPPLIERS, SupplierConfig
from feedsync.cybertrace import CyberTrace
from feedsync.errors import CyberTraceError, RequestError

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
    enabled: bool = True  # False only where CyberTrace says "disabled"


async def ensure_supplier(client: CyberTrace, settings: SupplierConfig) -> SupplierInfo:
    """The supplier exists (and, with a tenant, is visible in it), with the
    configured settings where they are explicit.

    ``GET suppliers/{name}`` comes first: its settings (retention, status) are
    needed every cycle, and an answer that holds the supplier proves that it
    exists, so a supplier that is there costs one request. Only where that
    answer is unreadable (400, 404) is existence read from ``GET suppliers``,
    the documented list: the pages give no status for a missing supplier.
    """
    name = settings.name
    state = SupplierState.PRESENT
    current = await client.supplier(name)
    if current is None and name not in await client.supplier_names():
        state = await _create(client, settings)
        current = await client.supplier(name)
    tenant = client.config.tenant
    if current is None and tenant:
        raise CyberTraceError(
            f"supplier {name!r} exists in CyberTrace but is not visible in tenant {tenant!r}"
            f" (GET suppliers/{name} in the tenant did not find it): suppliers are created"
            f" outside tenants, so an administrator must assign {name!r} to {tenant!r} in"
            " CyberTrace; the next cycle then fills it"
        )
    if state is SupplierState.PRESENT and current is not None and _enforced(settings):
        drift = _drift(current, settings)
        if drift:
            await client.update_supplier(settings)
            log.info("supplier.corrected", supplier=name, fields=",".join(drift))
            state = SupplierState.UPDATED
    retention = current.get("retention") if current else None
    reported = retention if isinstance(retention, int) and not isinstance(retention, bool) else None
    enabled = not current or current.get("status") != "disabled"
    return SupplierInfo(state, settings.retention if reported is None else reported, enabled)


def _enforced(settings: SupplierConfig) -> bool:
    # Defaults only shape what feedsync creates; an existing supplier keeps what its
    # operator chose. The built-in suppliers cannot be changed at all.
    return settings.explicit and settings.name not in BUILTIN_SUPPLIERS


async def _create(client: CyberTrace, settings: SupplierConfig) -> SupplierState:
    name = settings.name
    if name in BUILTIN_SUPPLIERS:
        raise CyberTraceError(f"CyberTrace does not list its built-in supplier {name!r}")
    try:
        await client.create_supplier(settings)
    except RequestError as exc:
        # Another writer may have created it since the list was read.
        if exc.status != 400 or name not in await client.supplier_names():
            raise
        log.info("supplier.created_elsewhere", supplier=name)
        return SupplierState.PRESENT
    log.info(
        "supplier.created",
        supplier=name,
        confidence=settings.confidence,
        retention=settings.retention,
        vendor=settings.vendor,
        settings="suppliers" if settings.explicit else "supplier_defaults",
    )
    return SupplierState.CREATED


def _drift(current: dict[str, object], settings: SupplierConfig) -> list[str]:
    wanted: dict[str, object] = {
        "confidence": settings.confidence,
        "retention": settings.retention,
    }
    if settings.vendor is not None:
        wanted["vendor"] = settings.vendor
    return [key for key, value in wanted.items() if current.get(key) != value]


async def ensure_tags(client: CyberTrace, needed: set[str], weight: int) -> list[str]:
    """Create the tags CyberTrace does not know yet, one ``POST tags`` each (the
    documentation takes exactly one tag object); returns those created."""
    if not needed or not client.tags_supported:
        return []
    created = []
    for name in sorted(needed - await client.tags()):
        answer = await client.create_tag(name, weight)
        if answer.status in (200, 201):
            created.append(name)
            continue
        # An existing name is refused: someone else may have created it meanwhile.
        if answer.status == 400 and name.upper() in await client.tags():
            log.info("tags.created_elsewhere", tag=name)
            continue
        client.check(answer, "POST", f"tags ({name})")
    if created:
        log.info("tags.created", count=len(created), tags=",".join(created[:20]))
    return created
