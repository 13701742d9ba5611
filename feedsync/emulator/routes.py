"""Which requests exist in which API version, with or without a tenant (page 198593).

``resolve`` turns a path and method into the documented request, or refuses:
404 when the path names no request of that API version ("request or API
version not supported", 198539), 405 when it does but not with that method.

Under API 1.3 a first segment that is not a request name is a tenant. Tenant
forms exist only for lookup, GET/PUT one supplier and PUT/DELETE indicators,
and "only if multitenancy mode is enabled"; the untenanted lookup does not
exist in 1.3. The rows for tags under 1.3 are cut off in every stored copy of
the page: tags are served as in 1.2, untenanted only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from feedsync.emulator.model import (
    DEFAULT_TENANT,
    DELETE_LIMIT,
    LOOKUP_LIMIT,
    POST_LIMIT,
    PUT_LIMIT,
    TAGS_SINCE,
    TENANTS_SINCE,
    Refusal,
    version_key,
)

Resource = Literal["lookup", "suppliers", "supplier", "indicators", "tags", "tag"]
_REQUEST_NAMES = frozenset({"lookup", "suppliers", "tags"})
_EVER = (1, 0)
_NEVER = (99, 0)


@dataclass(frozen=True, slots=True)
class Endpoint:
    resource: Resource
    method: str
    # None: "This request has an empty body"; else the documented maximum size.
    limit: int | None
    # The error object's "status" text the request's page gives.
    error: str
    since: tuple[int, ...] = _EVER
    until: tuple[int, ...] = _NEVER
    tenanted: bool = False

    def exists(self, level: tuple[int, ...], with_tenant: bool) -> bool:
        # A tenant is read from the path under 1.3 only (resolve).
        return self.tenanted if with_tenant else self.since <= level <= self.until


ENDPOINTS = (
    Endpoint(
        "lookup",
        "POST",
        LOOKUP_LIMIT,
        "An error occurred while searching for indicators",
        until=(1, 2),
        tenanted=True,
    ),
    Endpoint("suppliers", "GET", None, "An error occurred while getting a list of suppliers"),
    Endpoint("suppliers", "POST", POST_LIMIT, "An error occurred while adding the supplier"),
    Endpoint(
        "supplier", "GET", None, "An error occurred while getting the supplier", tenanted=True
    ),
    Endpoint(
        "supplier", "PUT", PUT_LIMIT, "An error occurred while updating the supplier", tenanted=True
    ),
    Endpoint("supplier", "DELETE", None, "An error occurred while removing the supplier"),
    Endpoint(
        "indicators",
        "PUT",
        PUT_LIMIT,
        "An error occurred while adding indicators to the database",
        tenanted=True,
    ),
    Endpoint(
        "indicators",
        "DELETE",
        DELETE_LIMIT,
        "An error occurred while deleting indicators from the database",
        tenanted=True,
    ),
    Endpoint("tags", "GET", None, "An error occurred while getting tags list", since=TAGS_SINCE),
    Endpoint("tags", "POST", POST_LIMIT, "An error occurred while adding tag", since=TAGS_SINCE),
    Endpoint("tag", "GET", None, "An error occurred while getting tag info", since=TAGS_SINCE),
    Endpoint("tag", "PUT", PUT_LIMIT, "An error occurred while updating tag", since=TAGS_SINCE),
    Endpoint("tag", "DELETE", None, "An error occurred while removing tag", since=TAGS_SINCE),
)


@dataclass(frozen=True, slots=True)
class Resolved:
    endpoint: Endpoint
    level: tuple[int, ...]
    # None for the untenanted form, which acts in the General tenant.
    tenant: str | None
    # The supplier or tag the path names, else "".
    name: str

    @property
    def scope(self) -> str:
        return self.tenant or DEFAULT_TENANT


def split(path: str) -> tuple[str, list[str]]:
    """``/api/1.2/suppliers/S`` as ``("1.2", ["suppliers", "S"])``; ``("", [])`` off the API."""
    segments = path.split("/")
    if len(segments) < 4 or segments[0] or segments[1] != "api":
        return "", []
    return segments[2], segments[3:]


def resolve(
    method: str, version: str, segments: Sequence[str], tenants: Collection[str]
) -> Resolved:
    """The documented request for ``/api/{version}/{segments}``; ``tenants`` are the
    tenants of multitenancy mode (none: the mode is off)."""
    level = version_key(version)
    tenant: str | None = None
    parts = list(segments)
    if level >= TENANTS_SINCE and parts and parts[0] not in _REQUEST_NAMES:
        tenant = parts.pop(0)
        if not tenants or tenant not in {*tenants, DEFAULT_TENANT}:
            raise Refusal(404, f"No tenant {tenant!r} (multitenancy mode has {sorted(tenants)})")
    resource, name = _resource(parts)
    candidates = [
        e for e in ENDPOINTS if e.resource == resource and e.exists(level, tenant is not None)
    ]
    if not candidates:
        raise Refusal(404, f"API {version} has no request /{'/'.join(segments)}")
    for endpoint in candidates:
        if endpoint.method == method:
            return Resolved(endpoint, level, tenant, name)
    allowed = ", ".join(sorted(e.method for e in candidates))
    raise Refusal(405, f"/{'/'.join(segments)} takes {allowed}, not {method}")


def _resource(parts: Sequence[str]) -> tuple[Resource | None, str]:
    match list(parts):
        case ["lookup"]:
            return "lookup", ""
        case ["suppliers"]:
            return "suppliers", ""
        case ["suppliers", name] if name:
            return "supplier", name
        case ["suppliers", name, "indicators"] if name:
            return "indicators", name
        case ["tags"]:
            return "tags", ""
        case ["tags", name] if name:
            return "tag", name
    return None, ""
