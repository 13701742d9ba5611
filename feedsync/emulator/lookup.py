"""``POST lookup`` (page 198540) in the documented shape.

The request is ``[{"object": value}, ...]`` with at least one object; the
answer, per object, ``{"object": value as sent, "result": ..., "categories":
[{"category", "detected_indicator", "context"}]}``.

What the page's property tables say of ``result`` and ``category`` is cut off
in every stored copy, so two choices are the emulator's: ``result`` is
"detected" or "not detected" (the words of the search history, page 183381),
and a category is the supplier's name for suppliers created with the REST API
(the Detections page, 193678, ties a category to a supplier name) and
``KL_InternalTI_<type>`` for InternalTI (the category list, 291802).
FalsePositive marks values as not malicious, so it detects nothing. Only
enabled suppliers the tenant sees, and only indicators within retention, match:
an expired indicator is "not used in matching" (198625).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from feedsync.emulator.model import (
    EmulatedIndicator,
    EmulatedSupplier,
    Refusal,
)
from feedsync.emulator.values import NotAnIndicator, canonical

if TYPE_CHECKING:
    from feedsync.emulator.api import Answer, Api

_INTERNAL_TI = {
    "URL": "URL",
    "IP": "IP",
    "MD5": "Hash_MD5",
    "SHA1": "Hash_SHA1",
    "SHA256": "Hash_SHA256",
}


def answer(api: Api, tenant: str, body: list[Any]) -> Answer:
    if not body:
        raise Refusal(400, "At least one object must be specified")
    for item in body:
        if not isinstance(item, dict) or not isinstance(item.get("object"), str):
            raise Refusal(400, 'Every item must be an object with an "object" string')
    now = api.clock()
    sources = [
        s
        for s in api.in_tenant(tenant).values()
        if s.status == "enabled" and s.name != "FalsePositive"
    ]
    results: list[dict[str, object]] = []
    for item in body:
        categories = _categories(sources, item["object"], now)
        results.append(
            {
                "object": item["object"],
                "result": "detected" if categories else "not detected",
                "categories": categories,
            }
        )
    return 200, results


def _categories(sources: list[EmulatedSupplier], value: str, now: float) -> list[dict[str, object]]:
    try:
        stored = canonical(value)[1]
    except NotAnIndicator:
        return []
    hits: list[dict[str, object]] = []
    for supplier in sources:
        found = supplier.indicators.get(stored)
        if found is not None and not supplier.expired(found, now):
            hits.append(
                {
                    "category": _category(supplier, found),
                    "detected_indicator": found.value,
                    "context": found.context,
                }
            )
    return hits


def _category(supplier: EmulatedSupplier, found: EmulatedIndicator) -> str:
    if supplier.name == "InternalTI":
        return f"KL_InternalTI_{_INTERNAL_TI[found.type]}"
    return supplier.name
