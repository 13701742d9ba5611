"""What the emulated CyberTrace does with a request, apart from HTTP.

``Api.answer`` takes a request the HTTP layer (``feedsync.emulator``) has
already resolved to a documented request (``feedsync.emulator.routes``) and
let through (credentials, ``Accept``, body framing, a JSON array body), and
returns the status and JSON array CyberTrace would answer, or raises
``Refusal``. Tags are in ``feedsync.emulator.tags``, lookup in
``feedsync.emulator.lookup``.

Suppliers are one namespace: ``POST suppliers`` has no tenant form. The General
tenant (every untenanted request) sees every supplier; another tenant sees the
built-in ones and those assigned to it, or every one, by the
``tenant_visibility`` reading. A supplier's indicators are one set, whichever
tenant writes them. Expired indicators are kept and only left out of matching.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable
from typing import Any

from feedsync.emulator import lookup, tags
from feedsync.emulator.model import (
    BUILTIN,
    DEFAULT_TENANT,
    DETECTIONS_SINCE,
    TAGS_SINCE,
    EmulatedIndicator,
    EmulatedSupplier,
    Refusal,
    integer,
    known_fields,
    required,
    single,
    supplier_name,
    vendor,
)
from feedsync.emulator.readings import Readings
from feedsync.emulator.routes import Resolved
from feedsync.emulator.values import NotAnIndicator, canonical

Answer = tuple[int, list[Any]]
_NEW_SUPPLIER = ("name", "confidence", "retention", "vendor")
_CHANGED_SUPPLIER = ("name", "status", "confidence", "retention", "vendor")
_MISSING_SUPPLIER = "Supplier doesn't exist"
_NOT_TAGS = "Tags must be a list of tag names"
_NOT_SCALARS = "Context must be an object of one or more scalar fields"


class Api:
    """The suppliers, indicators and tags of one emulated CyberTrace."""

    def __init__(
        self,
        *,
        tenants: Iterable[str],
        clock: Callable[[], float],
        sink: bool = False,
        readings: Readings | None = None,
    ) -> None:
        # A sink checks indicators and keeps none: benchmarks send millions.
        self.sink = sink
        # Non-empty: multitenancy mode, with these tenants besides General.
        self.tenants = frozenset(tenants) - {DEFAULT_TENANT}
        self.clock = clock
        self.readings = readings or Readings()
        self.tags: dict[str, int] = {}
        self.suppliers: dict[str, EmulatedSupplier] = {
            name: EmulatedSupplier(name, 100, 0) for name in BUILTIN
        }

    # Visibility

    def visible(self, supplier: EmulatedSupplier, tenant: str) -> bool:
        return (
            tenant == DEFAULT_TENANT
            or supplier.name in BUILTIN
            or self.readings.tenant_visibility == "immediate"
            or tenant in supplier.tenants
        )

    def in_tenant(self, tenant: str) -> dict[str, EmulatedSupplier]:
        return {n: s for n, s in self.suppliers.items() if self.visible(s, tenant)}

    def find(self, name: str, tenant: str) -> EmulatedSupplier | None:
        found = self.suppliers.get(name)
        return found if found is not None and self.visible(found, tenant) else None

    def _existing(self, name: str, tenant: str) -> EmulatedSupplier:
        found = self.find(name, tenant)
        if found is None:
            raise Refusal(self.readings.missing_supplier_status, _MISSING_SUPPLIER)
        return found

    # Dispatch

    def answer(self, request: Resolved, body: list[Any] | None) -> Answer:
        endpoint, name, scope = request.endpoint, request.name, request.scope
        match endpoint.resource, endpoint.method:
            case "suppliers", "GET":
                return 200, [{"name": s.name, "status": s.status} for s in self.suppliers.values()]
            case "suppliers", "POST":
                return self._create_supplier(required(body))
            case "supplier", "GET":
                return 200, [self._existing(name, scope).info()]
            case "supplier", "PUT":
                return self._update_supplier(self._existing(name, scope), required(body))
            case "supplier", "DELETE":
                return self._delete_supplier(self._existing(name, scope))
            case "indicators", "PUT":
                return self._put(request, self._existing(name, scope), required(body))
            case "indicators", "DELETE":
                return self._delete(request, self._existing(name, scope), required(body))
            case "lookup", "POST":
                return lookup.answer(self, scope, required(body))
            case (("tags" | "tag"), _):
                return tags.answer(self, request, body)
        raise AssertionError(f"no handler for {endpoint}")  # the route table and this match agree

    # Suppliers

    def _create_supplier(self, body: list[Any]) -> Answer:
        item = single(body, "supplier")
        known_fields(item, _NEW_SUPPLIER, self.readings.unknown_fields == "refuse")
        name = supplier_name(item.get("name"))
        if name in self.suppliers:
            raise Refusal(400, f"Supplier {name} already exists")
        self.suppliers[name] = EmulatedSupplier(
            name,
            integer(item.get("confidence"), 0, 100, "confidence"),
            self._retention(item.get("retention")),
            vendor(item.get("vendor")),
        )
        return 201, [{"status": "Supplier successfully created"}]

    def _update_supplier(self, supplier: EmulatedSupplier, body: list[Any]) -> Answer:
        if supplier.name in BUILTIN:
            raise Refusal(400, "Only suppliers created with the REST API can be updated")
        item = single(body, "supplier")
        known_fields(item, _CHANGED_SUPPLIER, self.readings.unknown_fields == "refuse")
        name = supplier.name
        if item.get("name", name) != name:
            name = supplier_name(item["name"])
            if name in self.suppliers:
                raise Refusal(400, f"Supplier {name} already exists")
        status = item.get("status", supplier.status)
        if status not in ("enabled", "disabled"):
            raise Refusal(400, f"Invalid supplier status {status!r}")
        confidence = integer(item.get("confidence", supplier.confidence), 0, 100, "confidence")
        retention = self._retention(item["retention"]) if "retention" in item else None
        changed_vendor = vendor(item["vendor"]) if "vendor" in item else supplier.vendor
        # Everything was checked: a refused update changes nothing.
        if name != supplier.name:
            del self.suppliers[supplier.name]
            self.suppliers[name] = supplier
        supplier.name, supplier.status, supplier.vendor = name, status, changed_vendor
        supplier.confidence = confidence
        if retention is not None:
            supplier.retention = retention
        return 200, [{"status": "Supplier successfully updated"}]

    def _delete_supplier(self, supplier: EmulatedSupplier) -> Answer:
        if supplier.name in BUILTIN:
            raise Refusal(400, "Only suppliers created with the REST API can be deleted")
        del self.suppliers[supplier.name]
        # The page's example answers 201 (198645).
        return 201, [{"status": "Supplier successfully removed"}]

    def _retention(self, value: object) -> int:
        minutes = integer(value, 0, None, "retention")
        if minutes == 0 and self.readings.retention_zero == "refuse":
            raise Refusal(400, "A retention of 0 minutes has no documented meaning")
        return minutes

    # Indicators

    def _put(self, request: Resolved, supplier: EmulatedSupplier, body: list[Any]) -> Answer:
        if supplier.name == "InternalTI" and self.readings.internal_ti_put == "refuse":
            raise Refusal(400, "Only suppliers created with the REST API take indicators")
        self._check_batch(body)
        tags_allowed = request.level >= TAGS_SINCE
        if not plain_items(body, "mark_detections", tags_allowed):
            check_items(body, "mark_detections", request.level, tags_allowed)
        now = self.clock()
        errors: list[dict[str, str]] = []
        stored, held_for = supplier.indicators, self._tags_reader()
        no_context = _NO_CONTEXT if supplier.name == "FalsePositive" else None
        for item in body:
            try:
                kind, value = canonical(item["indicator"])
            except NotAnIndicator:
                errors.append(_rejected(item, "Invalid indicator format"))
                continue
            context = item.get("context", _ABSENT)
            problem = None if context is _ABSENT else no_context or _context_problem(context)
            held: set[str] | None = None
            if problem is None and "tags" in item:
                problem, held = held_for(item["tags"])
            if problem is not None:
                errors.append(_rejected(item, problem))
            elif not self.sink:
                if held is None:
                    known = stored.get(value)
                    held = set(known.tags) if known is not None else set()
                # The parsed body's own object: nothing else holds it once answered.
                kept = {} if context is _ABSENT else context
                stored[value] = EmulatedIndicator(value, kind, kept, held, now)
        return self._outcome(errors, len(body), "added to", "adding some of the indicators to")

    def _tags_reader(self) -> Callable[[object], tuple[str | None, set[str] | None]]:
        """``_tags_held`` remembering its answer per list of names for one request:
        a feed's items share a few lists, and the tags cannot change meanwhile."""
        answers: dict[tuple[object, ...], tuple[str | None, frozenset[str] | None]] = {}

        def held_for(names: object) -> tuple[str | None, set[str] | None]:
            if not isinstance(names, list):
                return _NOT_TAGS, None
            try:
                key = tuple(names)
                problem, held = answers[key]
            except TypeError:  # an unhashable name: not a string
                return _NOT_TAGS, None
            except KeyError:
                problem, fresh = self._tags_held(names)
                held = None if fresh is None else frozenset(fresh)
                answers[key] = problem, held
            return problem, None if held is None else set(held)

        return held_for

    def _tags_held(self, names: list[Any]) -> tuple[str | None, set[str] | None]:
        """The problem with an item's ``tags``, or the tags it holds, upper-cased."""
        for given in names:
            if not isinstance(given, str):
                return _NOT_TAGS, None
        held = set()
        for given in names:
            name = given.upper()
            if name not in self.tags:
                return f"Unknown tag {given}", None
            held.add(name)
        return None, held

    def _delete(self, request: Resolved, supplier: EmulatedSupplier, body: list[Any]) -> Answer:
        self._check_batch(body)
        if not plain_items(body, "unmark_detections", True):
            check_items(body, "unmark_detections", request.level, True)
        errors: list[dict[str, str]] = []
        for item in body:
            try:
                value = canonical(item["indicator"])[1]
            except NotAnIndicator:
                errors.append(_rejected(item, "Invalid indicator format"))
                continue
            if self.sink:
                continue
            # An expired indicator is still held (retention only stops matching).
            if supplier.indicators.pop(value, None) is None:
                errors.append(_rejected(item, "Indicator doesn't exist"))
        return self._outcome(
            errors, len(body), "deleted from", "deleting some of the indicators from"
        )

    def _check_batch(self, body: list[Any]) -> None:
        if not body and self.readings.empty_batch == "refuse":
            raise Refusal(400, "The body holds no indicator")

    def _outcome(self, errors: list[dict[str, str]], sent: int, done: str, partial: str) -> Answer:
        if not errors:
            return 201, [{"status": f"All indicators were successfully {done} the database"}]
        if len(errors) == sent and self.readings.all_rejected_status == 400:
            raise Refusal(400, "No indicator of the request could be processed")
        return 202, [
            {
                "status": f"An error occurred while {partial} the database",
                "error_indicators": errors,
            }
        ]


# The scalar JSON types a context field may hold (a tuple: isinstance is faster with one).
_SCALARS = (str, int, float, bool)
# The exact types of those: a set of them takes a whole context in one C call.
_SCALAR_TYPES = frozenset(_SCALARS)
_NO_CONTEXT = "Context is not allowed for FalsePositive"
# An item without "context", told from one whose context is null.
_ABSENT: Any = object()


def _context_problem(context: object) -> str | None:
    # The documentation makes the context object hold "one or more" fields.
    if not isinstance(context, dict) or not context:
        return _NOT_SCALARS
    if _SCALAR_TYPES.issuperset(map(type, context.values())):
        return None
    for field in context.values():
        if not isinstance(field, _SCALARS):
            return _NOT_SCALARS
    return None


_ONLY_DICTS = frozenset({dict})
_ONLY_STRINGS = frozenset({str})
_INDICATOR = operator.itemgetter("indicator")


def plain_items(body: list[Any], flag: str, tags_allowed: bool) -> bool:
    """Whether every item is an object with an "indicator" string and neither ``flag``
    nor, unless ``tags_allowed``, ``tags``, told by a few passes in C: ``check_items``
    then passes the batch. False sends it to ``check_items``, which says why."""
    if not _ONLY_DICTS.issuperset(map(type, body)):
        return False
    try:
        if not _ONLY_STRINGS.issuperset(map(type, map(_INDICATOR, body))):
            return False
    except KeyError:
        return False
    if any(map(operator.contains, body, itertools.repeat(flag))):
        return False
    return tags_allowed or not any(map(operator.contains, body, itertools.repeat("tags")))


def check_items(body: list[Any], flag: str, level: tuple[int, ...], tags_allowed: bool) -> None:
    """Refuse the batch at its first item that is no object with an "indicator"
    string, has ``tags`` where not ``tags_allowed``, or a ``flag`` it may not have."""
    for item in body:
        _check_item(item)
        if not tags_allowed and "tags" in item:
            raise Refusal(400, "The tags property needs REST API 1.1 or later")
        _check_flag(item, flag, level)


def _check_item(item: object) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("indicator"), str):
        raise Refusal(400, 'Every item must be an object with an "indicator" string')


def _check_flag(item: dict[str, Any], flag: str, level: tuple[int, ...]) -> None:
    """``mark_detections`` (PUT) and ``unmark_detections`` (DELETE): REST API 1.2 and
    later, boolean; applied only to FalsePositive, so elsewhere merely checked."""
    if flag not in item:
        return
    if level < DETECTIONS_SINCE:
        raise Refusal(400, f"{flag} needs REST API 1.2 or later")
    if not isinstance(item[flag], bool):
        raise Refusal(400, f"{flag} must be true or false")


def _rejected(item: dict[str, Any], reason: str) -> dict[str, str]:
    return {"indicator": item["indicator"], "reason": reason}
