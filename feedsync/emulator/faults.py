"""Fault injection for the emulator: what a production CyberTrace does to a client.

Set ``emulator.faults = Faults(...)`` from a test. Faults apply to indicator
requests (PUT/DELETE ``.../indicators``) unless ``everywhere`` is set;
``initializing`` applies to every ``/api/`` request. Draws come from a seeded
generator and times from the emulator's clock, so a failing run can be
replayed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from feedsync.emulator.model import STATUS_TITLES

if TYPE_CHECKING:
    from feedsync.emulator import Emulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# How a garbled 202 is malformed: not JSON, empty, error entries without an
# ``indicator`` string, an error naming a value that was not sent, no
# ``error_indicators`` at all.
Garble = Literal["not_json", "empty", "no_indicator", "unmapped", "no_errors"]
GARBLES: tuple[Garble, ...] = ("not_json", "empty", "no_indicator", "unmapped", "no_errors")
_PARTIAL = "An error occurred while adding some of the indicators to the database"


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, and how often (shares of matching requests, 0..1).

    ``garble``: a share of indicator requests applied, then answered 202 with a
    body of one of ``garble_kinds``. ``initializing``: seconds (emulator clock,
    from when the faults were set) during which every ``/api/`` request is
    answered 425. ``drop_supplier_after``: after that many successful indicator
    requests, the supplier the next one names is deleted before it is handled.
    """

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
    garble: float = 0.0
    garble_kinds: tuple[Garble, ...] = GARBLES
    initializing: float = 0.0
    drop_supplier_after: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.garble_kinds) - set(GARBLES)
        if unknown or (self.garble and not self.garble_kinds):
            raise ValueError(f"garble_kinds must be taken from {GARBLES}, not {self.garble_kinds}")


@dataclass(slots=True)
class FaultState:
    """The running side of a ``Faults``: its generator and what it did."""

    faults: Faults
    # The emulator's clock when the faults were set.
    started: float = 0.0
    rng: random.Random = field(init=False)
    in_flight: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    succeeded: int = 0
    dropped: str | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.faults.seed)  # noqa: S311 -- reproducible test faults

    def count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


def middleware(emulator: Emulator) -> Middleware:
    """The aiohttp middleware that injects ``emulator.fault_state``'s faults."""

    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = emulator.fault_state
        if state is None:
            return await handler(request)
        if _initializing(emulator, state, request):
            state.count("425")
            return await _refuse(emulator, request, 425, state.faults.retry_after)
        if not _applies(state.faults, request):
            return await handler(request)
        state.in_flight += 1
        try:
            return await _faulty(emulator, state, request, handler)
        finally:
            state.in_flight -= 1

    return inject


def _initializing(emulator: Emulator, state: FaultState, request: web.Request) -> bool:
    elapsed = emulator.api.clock() - state.started
    return request.path.startswith("/api/") and elapsed < state.faults.initializing


def _applies(faults: Faults, request: web.Request) -> bool:
    return faults.everywhere or _changes_indicators(request)


def _changes_indicators(request: web.Request) -> bool:
    return request.method in ("PUT", "DELETE") and request.path.endswith("/indicators")


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
    response = await _handled(emulator, state, request, handler)
    roll -= faults.reset / 2
    if roll < faults.reset / 2:
        state.count("reset_after_apply")
        _drop(request)
        return response
    roll -= faults.reset / 2
    if roll < faults.after_apply:
        state.count("500_after_apply")
        return _answer(500, "Internal error after the request was applied")
    roll -= faults.after_apply
    applied = response.status in (201, 202)
    if roll < faults.garble and applied and _changes_indicators(request):
        kind = state.rng.choice(faults.garble_kinds)
        state.count(f"garble_{kind}")
        return await _garbled(request, kind)
    return response


async def _handled(
    emulator: Emulator, state: FaultState, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """The handler's answer, with the operator's mid-sync deletion before it."""
    if not _changes_indicators(request):
        return await handler(request)
    after = state.faults.drop_supplier_after
    if after is not None and state.dropped is None and state.succeeded >= after:
        # .../suppliers/{supplier}/indicators: the supplier is the segment before the last.
        state.dropped = request.path.split("/")[-2]
        state.count("drop_supplier")
        emulator.delete_supplier(state.dropped)
    response = await handler(request)
    if response.status in (201, 202):
        state.succeeded += 1
    return response


async def _garbled(request: web.Request, kind: Garble) -> web.Response:
    """A 202 for a request that was applied, with a body a client cannot map."""
    if kind == "not_json":
        return _raw(b"<html><body>Partial success</body></html>")
    if kind == "empty":
        return _raw(b"")
    if kind == "no_errors":
        return _json(202, [{"status": _PARTIAL}])
    if kind == "no_indicator":
        entries: list[dict[str, object]] = [
            {"reason": "Invalid indicator format"},
            {"indicator": 7},
        ]
        return _json(202, [{"status": _PARTIAL, "error_indicators": entries}])
    sent = await _sent_values(request)
    strangers = (f"never-sent-{n}.example" for n in range(len(sent) + 1))
    entry = {"indicator": next(s for s in strangers if s not in sent), "reason": "Unknown"}
    return _json(202, [{"status": _PARTIAL, "error_indicators": [entry]}])


async def _sent_values(request: web.Request) -> set[object]:
    try:
        items = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return set()
    if not isinstance(items, list):
        return set()
    return {item.get("indicator") for item in items if isinstance(item, dict)}


async def _names_any(request: web.Request, values: frozenset[str]) -> bool:
    return not (await _sent_values(request)).isdisjoint(values)


async def _refuse(
    emulator: Emulator, request: web.Request, status: int, retry_after: float | None
) -> web.Response:
    body = await request.read() if request.can_read_body else b""
    emulator.log_fault(request, status, body)
    response = _answer(status, STATUS_TITLES.get(status, f"Injected fault {status}"))
    if retry_after is not None and status in (425, 429, 503):
        response.headers["Retry-After"] = f"{retry_after:g}"
    return response


def _answer(status: int, text: str) -> web.Response:
    return _json(status, [{"status": text}])


def _json(status: int, answer: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(answer), content_type="application/json")


def _raw(body: bytes) -> web.Response:
    return web.Response(status=202, body=body, content_type="application/json")


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
