"""Fault injection for the emulator: what a production CyberTrace does to a client.

Set ``emulator.faults = Faults(...)`` from a test. Faults apply to indicator
requests (PUT/DELETE ``.../indicators``) unless ``everywhere`` is set; draws
come from a seeded generator so a failing run can be replayed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

if TYPE_CHECKING:
    from feedsync.emulator import Emulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, and how often (shares of matching requests, 0..1)."""

    rate: float = 0.0
    statuses: tuple[int, ...] = (500,)
    after_apply: float = 0.0
    reset: float = 0.0
    latency: float = 0.0
    max_concurrent: int | None = None
    retry_after: float | None = None
    reject_values: frozenset[str] = frozenset()
    everywhere: bool = False
    seed: int = 0


@dataclass(slots=True)
class FaultState:
    """The running side of a ``Faults``: its generator and what it did."""

    faults: Faults
    rng: random.Random = field(init=False)
    in_flight: int = 0
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.faults.seed)  # noqa: S311 -- reproducible test faults

    def count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


def middleware(emulator: Emulator) -> Middleware:
    """The aiohttp middleware that injects ``emulator.fault_state``'s faults."""

    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = emulator.fault_state
        if state is None or not _applies(state.faults, request):
            return await handler(request)
        state.in_flight += 1
        try:
            return await _faulty(emulator, state, request, handler)
        finally:
            state.in_flight -= 1

    return inject


def _applies(faults: Faults, request: web.Request) -> bool:
    return faults.everywhere or request.path.endswith("/indicators")


async def _faulty(
    emulator: Emulator, state: FaultState, request: web.Request, handler: Handler
) -> web.StreamResponse:
    faults = state.faults
    if faults.latency:
        await asyncio.sleep(faults.latency)
    if faults.max_concurrent is not None and state.in_flight > faults.max_concurrent:
        state.count("429")
        return await _refuse(emulator, request, 429, faults.retry_after)
    roll = state.rng.random()
    if roll < faults.rate:
        status = state.rng.choice(faults.statuses)
        state.count(str(status))
        return await _refuse(emulator, request, status, faults.retry_after)
    if faults.reject_values and await _names_any(request, faults.reject_values):
        state.count("400")
        return await _refuse(emulator, request, 400, None)
    roll -= faults.rate
    if roll < faults.reset / 2:
        state.count("reset")
        _drop(request)
        return web.Response(status=500)
    response = await handler(request)
    roll -= faults.reset / 2
    if roll < faults.reset / 2:
        state.count("reset_after_apply")
        _drop(request)
        return response
    roll -= faults.reset / 2
    if roll < faults.after_apply:
        state.count("500_after_apply")
        return _answer(500, "Internal error after the request was applied")
    return response


async def _names_any(request: web.Request, values: frozenset[str]) -> bool:
    try:
        items = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return False
    return isinstance(items, list) and any(
        isinstance(item, dict) and item.get("indicator") in values for item in items
    )


async def _refuse(
    emulator: Emulator, request: web.Request, status: int, retry_after: float | None
) -> web.Response:
    body = await request.read() if request.can_read_body else b""
    emulator.log_fault(request, status, body)
    response = _answer(status, f"Injected fault {status}")
    if retry_after is not None and status in (425, 429, 503):
        response.headers["Retry-After"] = f"{retry_after:g}"
    return response


def _answer(status: int, text: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps([{"status": text}]), content_type="application/json"
    )


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
