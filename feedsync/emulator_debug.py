"""The emulator's debug endpoints, outside the CyberTrace API.

``GET /emulator/state``: all tenants, suppliers, indicators and tags.
``GET /emulator/requests``: the log (method, path, version, status, bytes).
``DELETE /emulator/requests``: empty the log.
``GET /emulator/minimal``: the size of the minimal JSON of the changes logged
(each indicator PUT or DELETE once, its last body, one array per method),
which benchmarks compare the bytes a client sent with.

They take the emulator's credentials and are not logged themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

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


def minimal_bytes(emulator: Emulator) -> int:
    """The minimal JSON of the logged changes, in bytes."""
    items: dict[tuple[str, str], int] = {}
    for request in emulator.indicator_requests():
        for item in request.json if isinstance(request.json, list) else []:
            if isinstance(item, dict):
                items[(request.method, str(item.get("indicator")))] = len(orjson.dumps(item))
    if not items:
        return 0
    methods = {method for method, _value in items}
    # "[" and "]" per array, a comma between items.
    return sum(items.values()) + len(items) - len(methods) + 2 * len(methods)


def _guarded(emulator: Emulator, handler: Callable[[Emulator], web.Response]) -> _Handler:
    async def guarded(request: web.Request) -> web.Response:
        from feedsync.emulator import unauthorized  # noqa: PLC0415 -- emulator imports us

        if not emulator.authorized(request):
            return unauthorized()
        return handler(emulator)

    return guarded


def _state(emulator: Emulator) -> web.Response:
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
                    }
                    for value, found in emulator.api.live(supplier).items()
                },
            }
            for supplier in suppliers.values()
        }
        for tenant, suppliers in emulator.api.state.items()
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
    return _json({"bytes": minimal_bytes(emulator)})


def _json(answer: object) -> web.Response:
    return web.Response(body=orjson.dumps(answer), content_type="application/json")
