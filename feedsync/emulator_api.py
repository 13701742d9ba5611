"""What the emulated CyberTrace does with a request, apart from HTTP.

``Api.answer`` takes a request the HTTP layer (``feedsync.emulator``) has
already let through (credentials, ``Accept``, version, body framing, a JSON
array body) and returns the status and JSON array CyberTrace would answer, or
raises ``Refusal``. Suppliers and their indicators are kept per tenant; tags
are global, and API 1.3 serves them only without a tenant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedsync.normalize import InvalidValue, canonicalize

PUT_LIMIT = 134217728
POST_LIMIT = 134217728
DELETE_LIMIT = 67108864
BUILTIN = ("FalsePositive", "InternalTI")
DEFAULT_TENANT = "General"
TAGS_SINCE = (1, 1)
UNMARK_SINCE = (1, 2)
TENANTS_SINCE = (1, 3)
_SUPPLIER_NAME = re.compile(r"[A-Za-z0-9_-]+")
_TAG_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_UNTENANTED = frozenset({"suppliers", "tags", "lookup"})

Answer = tuple[int, list[Any]]


class Refusal(Exception):
    """A request CyberTrace answers with an error status and no change."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text
        super().__init__(text)


@dataclass
class EmulatedIndicator:
    value: str
    type: str
    context: dict[str, object]
    tags: set[str]
    updated: float


@dataclass
class EmulatedSupplier:
    name: str
    confidence: int
    retention: int
    vendor: str | None = None
    status: str = "enabled"
    indicators: dict[str, EmulatedIndicator] = field(default_factory=dict)

    def info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "confidence": self.confidence,
            "retention": self.retention,
            "vendor": self.vendor or "",
        }


def version_key(version: str) -> tuple[int, ...]:
    """``"1.2"`` as ``(1, 2)``, so that features can be gated by version."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise ValueError(f"API version {version!r} is not like 1.2") from None


class Api:
    """The suppliers, indicators and tags of one emulated CyberTrace."""

    def __init__(
        self, *, tenants: Iterable[str], clock: Callable[[], float], sink: bool = False
    ) -> None:
        # A sink checks indicators and keeps none: benchmarks send millions.
        self.sink = sink
        self.tenants = frozenset(tenants)
        self.clock = clock
        self.tags: dict[str, int] = {}
        self.state: dict[str, dict[str, EmulatedSupplier]] = {}
        self.suppliers(DEFAULT_TENANT)

    def suppliers(self, tenant: str) -> dict[str, EmulatedSupplier]:
        if tenant not in self.state:
            self.state[tenant] = {name: EmulatedSupplier(name, 100, 0) for name in BUILTIN}
        return self.state[tenant]

    def live(self, supplier: EmulatedSupplier) -> dict[str, EmulatedIndicator]:
        """The supplier's indicators after dropping the expired ones."""
        now = self.clock()
        for value in [v for v, i in supplier.indicators.items() if _expired(supplier, i, now)]:
            del supplier.indicators[value]
        return supplier.indicators

    def answer(
        self, method: str, version: str, path: Sequence[str], body: list[Any] | None
    ) -> Answer:
        level = version_key(version)
        parts = list(path)
        tenant = DEFAULT_TENANT
        if level >= TENANTS_SINCE and parts and parts[0] not in _UNTENANTED:
            tenant = parts.pop(0)
            allowed = not self.tenants or tenant in self.tenants or tenant == DEFAULT_TENANT
            if not tenant or not allowed or parts[:1] == ["tags"]:
                raise Refusal(404, f"Unknown tenant or request: {'/'.join(path)}")
        suppliers = self.suppliers(tenant)
        match parts, method:
            case ["suppliers"], "GET":
                return 200, [{"name": s.name, "status": s.status} for s in suppliers.values()]
            case ["suppliers"], "POST":
                return self._create_supplier(suppliers, _required(body))
            case ["suppliers", name], "GET":
                return 200, [_existing(suppliers, name).info()]
            case ["suppliers", name], "PUT":
                return _update_supplier(suppliers, _existing(suppliers, name), _required(body))
            case ["suppliers", name], "DELETE":
                return _delete_supplier(suppliers, _existing(suppliers, name))
            case ["suppliers", name, "indicators"], "PUT":
                return self._put(level, _existing(suppliers, name), _required(body))
            case ["suppliers", name, "indicators"], "DELETE":
                return self._delete(level, _existing(suppliers, name), _required(body))
            case ["tags"], "GET" if level >= TAGS_SINCE:
                return 200, [{"name": n, "weight": w} for n, w in sorted(self.tags.items())]
            case ["tags"], "POST" if level >= TAGS_SINCE:
                return self._create_tags(_required(body))
            case ["lookup"], "POST":
                return 200, self._lookup(suppliers, _required(body))
        raise Refusal(404, f"Unknown request {method} {'/'.join(path)}")

    # Suppliers

    def _create_supplier(self, suppliers: dict[str, EmulatedSupplier], body: list[Any]) -> Answer:
        item = _single(body)
        name = _supplier_name(item.get("name"))
        if name in suppliers:
            raise Refusal(400, f"Supplier {name} already exists")
        suppliers[name] = EmulatedSupplier(
            name,
            _integer(item.get("confidence"), 0, 100, "confidence"),
            _integer(item.get("retention"), 0, None, "retention"),
            _vendor(item.get("vendor")),
        )
        return 201, [{"status": f"Supplier {name} was successfully created"}]

    # Tags

    def _create_tags(self, body: list[Any]) -> Answer:
        # Checked in full before storing any, so that a refused request changes nothing.
        for item in body:
            if not isinstance(item, dict):
                raise Refusal(400, "Every tag must be an object")
            name = item.get("name")
            if not isinstance(name, str) or not _TAG_NAME.fullmatch(name):
                raise Refusal(400, f"Invalid tag name {name!r}")
            _integer(item.get("weight"), 0, 5, "tag weight")
        for item in body:
            self.tags.setdefault(item["name"].upper(), item["weight"])
        return 201, [{"status": "Tags were successfully added"}]

    # Indicators

    def _put(self, level: tuple[int, ...], supplier: EmulatedSupplier, body: list[Any]) -> Answer:
        for item in body:
            _check_item(item)
            if "tags" in item and level < TAGS_SINCE:
                raise Refusal(400, "The tags property needs REST API 1.1 or later")
        now = self.clock()
        errors: list[dict[str, str]] = []
        for item in body:
            try:
                kind, value = canonicalize(item["indicator"])
            except InvalidValue:
                errors.append(_rejected(item, "Invalid indicator format"))
                continue
            problem = self._put_problem(supplier, item)
            if problem is not None:
                errors.append(_rejected(item, problem))
                continue
            if self.sink:
                continue
            current = _current(supplier, value, now)
            if "tags" in item:
                tags = {tag.upper() for tag in item["tags"]}
            else:
                tags = set(current.tags) if current is not None else set()
            supplier.indicators[value] = EmulatedIndicator(
                value, kind.cybertrace_type, dict(item.get("context", {})), tags, now
            )
        return _outcome(errors, "added to", "adding some of the indicators to")

    def _put_problem(self, supplier: EmulatedSupplier, item: dict[str, Any]) -> str | None:
        if "context" in item:
            context = item["context"]
            if supplier.name == "FalsePositive":
                return "Context is not allowed for FalsePositive"
            # The documentation makes the context object hold "one or more" fields.
            if (
                not isinstance(context, dict)
                or not context
                or not all(isinstance(v, str | int | float | bool) for v in context.values())
            ):
                return "Context must be an object of one or more scalar fields"
        if "tags" in item:
            tags = item["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                return "Tags must be a list of tag names"
            unknown = [tag for tag in tags if tag.upper() not in self.tags]
            if unknown:
                return f"Unknown tag {unknown[0]}"
        return None

    def _delete(
        self, level: tuple[int, ...], supplier: EmulatedSupplier, body: list[Any]
    ) -> Answer:
        for item in body:
            _check_item(item)
            if "unmark_detections" in item:
                if level < UNMARK_SINCE:
                    raise Refusal(400, "unmark_detections needs REST API 1.2 or later")
                if not isinstance(item["unmark_detections"], bool):
                    raise Refusal(400, "unmark_detections must be true or false")
        now = self.clock()
        errors: list[dict[str, str]] = []
        for item in body:
            try:
                value = canonicalize(item["indicator"])[1]
            except InvalidValue:
                errors.append(_rejected(item, "Invalid indicator format"))
                continue
            if self.sink:
                continue
            if _current(supplier, value, now) is None:
                errors.append(_rejected(item, "Indicator doesn't exist"))
                continue
            del supplier.indicators[value]
        return _outcome(errors, "deleted from", "deleting some of the indicators from")

    def _lookup(
        self, suppliers: dict[str, EmulatedSupplier], body: list[Any]
    ) -> list[dict[str, object]]:
        for item in body:
            _check_item(item)
        now = self.clock()
        answers: list[dict[str, object]] = []
        for item in body:
            try:
                value = canonicalize(item["indicator"])[1]
            except InvalidValue:
                answers.append({"indicator": item["indicator"], "found": False, "suppliers": []})
                continue
            hits: list[dict[str, object]] = []
            for supplier in suppliers.values():
                found = _current(supplier, value, now)
                if found is not None and supplier.status == "enabled":
                    tags = sorted(found.tags)
                    hits.append({"name": supplier.name, "context": found.context, "tags": tags})
            answers.append({"indicator": value, "found": bool(hits), "suppliers": hits})
        return answers


def _update_supplier(
    suppliers: dict[str, EmulatedSupplier], supplier: EmulatedSupplier, body: list[Any]
) -> Answer:
    if supplier.name in BUILTIN:
        raise Refusal(400, f"The built-in supplier {supplier.name} cannot be changed")
    item = _single(body)
    name = supplier.name
    if item.get("name", name) != name:
        name = _supplier_name(item["name"])
        if name in suppliers:
            raise Refusal(400, f"Supplier {name} already exists")
    status = item.get("status", supplier.status)
    if status not in ("enabled", "disabled"):
        raise Refusal(400, f"Invalid supplier status {status!r}")
    confidence = _integer(item.get("confidence", supplier.confidence), 0, 100, "confidence")
    retention = _integer(item.get("retention", supplier.retention), 0, None, "retention")
    vendor = _vendor(item["vendor"]) if "vendor" in item else supplier.vendor
    if name != supplier.name:
        del suppliers[supplier.name]
        suppliers[name] = supplier
    supplier.name, supplier.status, supplier.vendor = name, status, vendor
    supplier.confidence, supplier.retention = confidence, retention
    return 200, [{"status": f"Supplier {name} was successfully updated"}]


def _delete_supplier(suppliers: dict[str, EmulatedSupplier], supplier: EmulatedSupplier) -> Answer:
    if supplier.name in BUILTIN:
        raise Refusal(400, f"The built-in supplier {supplier.name} cannot be deleted")
    del suppliers[supplier.name]
    return 200, [{"status": f"Supplier {supplier.name} was successfully deleted"}]


def _existing(suppliers: dict[str, EmulatedSupplier], name: str) -> EmulatedSupplier:
    supplier = suppliers.get(name)
    if supplier is None:
        raise Refusal(404, f"Supplier {name} does not exist")
    return supplier


def _current(supplier: EmulatedSupplier, value: str, now: float) -> EmulatedIndicator | None:
    """The live indicator stored under ``value``; an expired one is dropped on the way."""
    found = supplier.indicators.get(value)
    if found is not None and _expired(supplier, found, now):
        del supplier.indicators[value]
        return None
    return found


def _expired(supplier: EmulatedSupplier, indicator: EmulatedIndicator, now: float) -> bool:
    return supplier.retention > 0 and indicator.updated < now - supplier.retention * 60


def _required(body: list[Any] | None) -> list[Any]:
    if body is None:
        raise Refusal(400, "This request needs a JSON array body")
    return body


def _single(body: list[Any]) -> dict[str, Any]:
    if len(body) != 1 or not isinstance(body[0], dict):
        raise Refusal(400, "The body must hold exactly one supplier object")
    return body[0]


def _check_item(item: object) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("indicator"), str):
        raise Refusal(400, 'Every item must be an object with an "indicator" string')


def _supplier_name(value: object) -> str:
    if not isinstance(value, str) or not _SUPPLIER_NAME.fullmatch(value) or value in BUILTIN:
        raise Refusal(400, f"Invalid supplier name {value!r}")
    return value


def _vendor(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Refusal(400, "The vendor must be a string")
    return value


def _integer(value: object, low: int, high: int | None, what: str) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        limits = f"{low}..{high}" if high is not None else f">= {low}"
        raise Refusal(400, f"The {what} must be an integer {limits}")
    return value


def _rejected(item: dict[str, Any], reason: str) -> dict[str, str]:
    return {"indicator": item["indicator"], "reason": reason}


def _outcome(errors: list[dict[str, str]], done: str, partial: str) -> Answer:
    if not errors:
        return 201, [{"status": f"All indicators were successfully {done} the database"}]
    return 202, [
        {
            "status": f"An error occurred while {partial} the database",
            "error_indicators": errors,
        }
    ]
