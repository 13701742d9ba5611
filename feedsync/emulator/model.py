"""The emulated CyberTrace's state and the checks every request shares.

Kept apart from the request handlers so that the HTTP layer, the route table,
the tag handlers and the lookup can share them without importing each other.
Nothing here may call the client's code: the emulator is the documentation's
oracle, not a mirror of feedsync's assumptions (indicator values are read by
``feedsync.emulator.values``, not by the client's normalization).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

# Body limits of the request pages (198625, 198644, 222772, 222791 and the PUT
# indicators page: 128 MB; DELETE indicators and lookup 198540: 64 MB).
PUT_LIMIT = 134217728
POST_LIMIT = 134217728
DELETE_LIMIT = 67108864
LOOKUP_LIMIT = 67108864
BUILTIN = ("FalsePositive", "InternalTI")
DEFAULT_TENANT = "General"
TAGS_SINCE = (1, 1)
DETECTIONS_SINCE = (1, 2)
TENANTS_SINCE = (1, 3)
_SUPPLIER_NAME = re.compile(r"[A-Za-z0-9_-]+")

# The titles page 198539 gives each status: the body of a refusal that has no
# request-specific error text (a wrong path, method, credentials, Accept).
STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized user",
    403: "User does not have rights to this operation",
    404: "Request not supported",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    425: "Kaspersky CyberTrace initializing",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


class Refusal(Exception):
    """A request CyberTrace answers with an error status and no change.

    ``text`` is the error object's ``status`` (the request's documented error
    text when None); ``reason`` its optional ``reason``.
    """

    def __init__(self, status: int, reason: str | None = None, *, text: str | None = None):
        self.status = status
        self.reason = reason
        self.text = text
        super().__init__(reason or text or str(status))

    def body(self, default: str | None) -> list[dict[str, str]]:
        error = {"status": self.text or default or STATUS_TITLES.get(self.status, "Error")}
        if self.reason:
            error["reason"] = self.reason
        return [error]


# Slotted: a 1M-row sync stores a million of them.
@dataclass(slots=True)
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
    # Tenants besides General that see the supplier (General sees every supplier).
    tenants: set[str] = field(default_factory=set)

    def info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": self.status,
            "confidence": self.confidence,
            "retention": self.retention,
            "vendor": self.vendor or "",
        }

    def expired(self, indicator: EmulatedIndicator, now: float) -> bool:
        """Past retention, counted from the last update (198625): kept, but not matched."""
        return self.retention > 0 and indicator.updated < now - self.retention * 60

    def live(self, now: float) -> dict[str, EmulatedIndicator]:
        return {v: i for v, i in self.indicators.items() if not self.expired(i, now)}


def version_key(version: str) -> tuple[int, ...]:
    """``"1.2"`` as ``(1, 2)``, so that features can be gated by version."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise ValueError(f"API version {version!r} is not like 1.2") from None


def required(body: list[Any] | None) -> list[Any]:
    if body is None:
        raise Refusal(400, "This request needs a JSON array body")
    return body


def single(body: list[Any], what: str) -> dict[str, Any]:
    """The one object the supplier and tag pages allow ("Only one ... must be specified")."""
    if len(body) != 1 or not isinstance(body[0], dict):
        raise Refusal(400, f"The body must hold exactly one {what} object")
    return body[0]


def known_fields(item: dict[str, Any], allowed: Collection[str], refuse: bool) -> None:
    unknown = sorted(set(item) - set(allowed))
    if refuse and unknown:
        raise Refusal(400, f"Unknown property {unknown[0]!r}")


def supplier_name(value: object) -> str:
    if not isinstance(value, str) or not _SUPPLIER_NAME.fullmatch(value) or value in BUILTIN:
        raise Refusal(400, f"Invalid supplier name {value!r}")
    return value


def vendor(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Refusal(400, "The vendor must be a string")
    return value


def integer(value: object, low: int, high: int | None, what: str) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        limits = f"{low}..{high}" if high is not None else f">= {low}"
        raise Refusal(400, f"The {what} must be an integer {limits}")
    return value
