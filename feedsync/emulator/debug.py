"""The emulator's debug endpoints, outside the CyberTrace API.

``GET /emulator/state``: the tags, and per tenant (General first) the suppliers
it sees with every stored indicator, ``expired`` telling those past retention.
``GET /emulator/requests``: the log (method, path, version, status, bytes).
``DELETE /emulator/requests``: empty the log.
``GET /emulator/minimal``: the size of the minimal JSON of the changes sent
since the log was last emptied (each indicator PUT or DELETE once, its last
body, one array per method; beyond the log's bound too), which benchmarks
compare the bytes a client sent with.

They take the emulator's credentials and are not logged themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from xxhash import xxh3_64_intdigest

from feedsync.emulator._http import unauthorized
from feedsync.emulator.model import DEFAULT_TENANT

if TYPE_CHECKING:
    from feedsync.emulator import Emulator

_Handler = Callable[[web.Request], Awaitable[web.Response]]


def route(emulator: Emulator) -> None:
    """Add the debug endpoints to the emulator's application."""
    router = emulator.app.router
    router.add_get("/emulator/state", _guarded(emulator, _state))
    router.add_get("/emulator/requests", _guarded(emulator, _requests))
    router.add_delete("/emulator/requests", _guarded(emulator, _clear))
    router.add_get("/emulator/minimal", _guarded(emulator, _minimal))


def changes_indicators(method: str, path: str) -> bool:
    """A PUT or DELETE on a supplier's ``.../indicators``."""
    return method in ("PUT", "DELETE") and path.endswith("/indicators")


class Changes:
    """The minimal JSON of the changes sent: each (method, value)'s last body,
    kept as a size, not as the request: the log is bounded, and a benchmark
    sends millions of values."""

    def __init__(self) -> None:
        self._sizes: dict[int, int] = {}
        self._methods: set[str] = set()

    def record(self, method: str, path: str, parsed: object) -> None:
        if not changes_indicators(method, path):
            return
        sizes, seen = self._sizes, False
        for item in parsed if isinstance(parsed, list) else []:
            if isinstance(item, dict):
                key = xxh3_64_intdigest(f"{method}\0{item.get('indicator')}".encode())
                sizes[key] = len(orjson.dumps(item))
                seen = True
        if seen:
            self._methods.add(method)

    def clear(self) -> None:
        self._sizes.clear()
        self._methods.clear()

    def bytes(self) -> int:
        if not self._sizes:
            return 0
        # "[" and "]" per array, a comma between items.
        count = len(self._methods)
        return sum(self._sizes.values()) + len(self._sizes) - count + 2 * count


def _guarded(emulator: Emulator, handler: Callable[[Emulator], web.Response]) -> _Handler:
    async def guarded(request: web.Request) -> web.Response:
        if not emulator.authorized(request):
            return unauthorized()
        return handler(emulator)

    return guarded


def _state(emulator: Emulator) -> web.Response:
    api = emulator.api
    now = api.clock()
    tenants = {
        tenant: {
            supplier.name: {
                **supplier.info(),
                "indicators": {
                    value: {
                        "type": found.type,
                        "context": found.context,
                        "tags": sorted(found.tags),
                        "updated": found.updated,
                        "expired": supplier.expired(found, now),
                    }
                    for value, found in supplier.indicators.items()
                },
            }
            for supplier in api.in_tenant(tenant).values()
        }
        for tenant in (DEFAULT_TENANT, *sorted(api.tenants))
    }
    return _json({"tags": emulator.tags(), "tenants": tenants})


def _requests(emulator: Emulator) -> web.Response:
    return _json(
        [
            {
                "method": r.method,
                "path": r.path,
                "version": r.version,
                "status": r.status,
                "bytes": len(r.body),
            }
            for r in emulator.requests
        ]
    )


def _clear(emulator: Emulator) -> web.Response:
    emulator.clear_log()
    return _json({"cleared": True})


def _minimal(emulator: Emulator) -> web.Response:
    return _json({"bytes": emulator.changes.bytes()})


def _json(answer: object) -> web.Response:
    return web.Response(body=orjson.dumps(answer), content_type="application/json")
