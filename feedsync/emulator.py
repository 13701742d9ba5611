"""A CyberTrace REST API emulator, for tests, the demo and trying a configuration.

Strict where CyberTrace is strict, so that client bugs show up in tests:

- every request: Basic credentials (else 401), ``Accept`` ``application/json``
  or ``*/*`` or absent (else 406), a known API version and request (else 404);
- a body needs ``Content-Type: application/json`` (``; charset=utf-8``
  allowed) and a ``Content-Length`` (a chunked body is a 400), is checked
  against the documented limit from that header before it is read (PUT and
  POST 134217728 bytes, DELETE 67108864: a 400 naming the limit) and must be
  a JSON array (else 400);
- answers are JSON arrays with exact statuses; per-indicator problems give
  202 with ``error_indicators`` while the rest is applied.

The API semantics (suppliers, tags, indicators, tenants, retention) are in
``feedsync.emulator_api``. Indicators are stored under the canonical value of
``feedsync.normalize.canonicalize``; retention counts from each indicator's
last update, on an injectable clock.

``POST lookup`` (our own shape; the real lookup answers differently) takes
``[{"indicator": str}]`` and answers, per item::

    {"indicator": canonical value (or the value as sent if invalid),
     "found": bool,
     "suppliers": [{"name": str, "context": {...}, "tags": [sorted names]}]}

counting only live indicators of enabled suppliers of the request's tenant.

Everything a client sends under ``/api/`` or elsewhere is logged
(``requests``), and the state can be read (``indicators``, ``supplier``,
``tags``) so that tests assert on what CyberTrace received. Outside the API,
debug endpoints (``feedsync.emulator_debug``) need the same credentials and
are not logged themselves.

Faults (``feedsync.faults``) are one middleware in front of the handler.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import signal
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from feedsync import emulator_debug as debug
from feedsync.emulator_api import (
    BUILTIN,
    DEFAULT_TENANT,
    DELETE_LIMIT,
    POST_LIMIT,
    PUT_LIMIT,
    Api,
    EmulatedIndicator,
    EmulatedSupplier,
    Refusal,
    version_key,
)
from feedsync.faults import Faults, FaultState, middleware

__all__ = [
    "BUILTIN",
    "DEFAULT_TENANT",
    "DELETE_LIMIT",
    "POST_LIMIT",
    "PUT_LIMIT",
    "EmulatedIndicator",
    "EmulatedSupplier",
    "Emulator",
    "LoggedRequest",
    "serve",
]

SERVE_LOG_LIMIT = 200

log = logging.getLogger("feedsync.emulator")


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request as the emulator received it; ``Authorization`` reads ``***``."""

    method: str
    path: str
    version: str
    status: int
    body: bytes
    json: object | None
    headers: Mapping[str, str]


class Emulator:
    """An in-process CyberTrace with inspectable state."""

    def __init__(
        self,
        *,
        user: str = "feedsync",
        password: str = "secret",  # noqa: S107 -- a test double's default
        api_versions: Iterable[str] = ("1.0", "1.1", "1.2", "1.3"),
        tenants: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        log_limit: int | None = None,
        sink: bool = False,
    ) -> None:
        self._credentials = f"{user}:{password}".encode()
        self.versions = tuple(api_versions)
        for version in self.versions:
            version_key(version)
        self.api = Api(tenants=tenants, clock=clock, sink=sink)
        # The same dict: tests/test_cybertrace.py removes tags through it; prefer delete_tag().
        self._tags = self.api.tags
        self.requests: list[LoggedRequest] = []
        self.log_limit = log_limit
        self.changes = debug.Changes()
        self.url = ""
        self.fault_state: FaultState | None = None
        self.app = web.Application(middlewares=[middleware(self)], client_max_size=PUT_LIMIT + 1)
        debug.route(self)
        self.app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner: web.AppRunner | None = None

    # Lifecycle

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> str:
        """Listen on ``host:port`` (0: any free port); returns the base URL."""
        # Stopping must not wait for a connection still draining an oversize body it
        # refused, or for an injected latency: tests stop emulators all the time.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=tls).start()
        bound = self._runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{shown}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Inspection and direct setup

    def indicators(
        self, supplier: str, tenant: str = DEFAULT_TENANT
    ) -> dict[str, EmulatedIndicator]:
        """Canonical value -> live indicator (expired ones are dropped)."""
        found = self.supplier(supplier, tenant)
        return {} if found is None else dict(self.api.live(found))

    def supplier(self, name: str, tenant: str = DEFAULT_TENANT) -> EmulatedSupplier | None:
        return self.api.suppliers(tenant).get(name)

    def add_supplier(
        self,
        name: str,
        confidence: int = 80,
        retention: int = 0,
        vendor: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.api.suppliers(tenant)[name] = EmulatedSupplier(name, confidence, retention, vendor)

    def delete_supplier(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        """Remove a supplier behind the client's back, as an operator could."""
        self.api.suppliers(tenant).pop(name, None)

    def add_tag(self, name: str, weight: int = 0) -> None:
        self.api.tags.setdefault(name.upper(), weight)

    def delete_tag(self, name: str) -> None:
        """Remove a tag behind the client's back, as an operator could."""
        self.api.tags.pop(name.upper(), None)

    def tags(self) -> dict[str, int]:
        return dict(self.api.tags)

    def clear_log(self) -> None:
        self.requests.clear()
        self.changes.clear()

    def authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return scheme.lower() == "basic" and secrets.compare_digest(given, self._credentials)

    def indicator_requests(self, method: str | None = None) -> list[LoggedRequest]:
        """Logged PUT and DELETE requests on ``.../indicators`` (or only ``method``)."""
        return [
            r
            for r in self.requests
            if debug.changes_indicators(r.method, r.path) and method in (None, r.method)
        ]

    # Faults

    @property
    def faults(self) -> Faults | None:
        return self.fault_state.faults if self.fault_state else None

    @faults.setter
    def faults(self, value: Faults | None) -> None:
        self.fault_state = None if value is None else FaultState(value)

    def log_fault(self, request: web.Request, status: int, body: bytes) -> None:
        """Record a request a fault answered before the API saw it."""
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        self._record(request, _split(request.path)[0], status, body, parsed)

    # HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        version, path = _split(request.path)
        body = b""
        parsed: object | None = None
        array: list[Any] | None = None
        try:
            self._check_headers(request)
            if version not in self.versions:
                raise Refusal(404, f"Unknown API version or request {request.path}")
            if request.body_exists:
                body = await _read_body(request)
                if not _json_content_type(request.headers.get("Content-Type", "")):
                    raise Refusal(400, "Content-Type must be application/json")
                parsed = _json(body)
                array = _array(parsed)
            status, answer = self.api.answer(request.method, version, path, array)
        except Refusal as refusal:
            status, answer = refusal.status, [{"status": refusal.text}]
        except ConnectionError:
            # The client left mid-body: nothing was received, applied, or can be answered.
            return web.Response(status=400)
        except Exception:
            # A bug here must reach the test as a CyberTrace 500, with its traceback in the log.
            log.exception("emulator error on %s %s", request.method, request.path)
            status, answer = 500, [{"status": "An error occurred in the emulator"}]
        self._record(request, version, status, body, parsed)
        return respond(status, answer)

    def _check_headers(self, request: web.Request) -> None:
        if not self.authorized(request):
            raise Refusal(401, "Authentication failed")
        if not _accepts_json(request.headers.get("Accept")):
            raise Refusal(406, "Only application/json responses are available")

    def _record(
        self, request: web.Request, version: str, status: int, body: bytes, parsed: object
    ) -> None:
        headers = CIMultiDict(request.headers)
        if "Authorization" in headers:
            headers["Authorization"] = "***"
        logged = CIMultiDictProxy(headers)
        self.requests.append(
            LoggedRequest(request.method, request.path, version, status, body, parsed, logged)
        )
        self.changes.record(request.method, request.path, parsed)
        if self.log_limit is not None and len(self.requests) > self.log_limit:
            del self.requests[: len(self.requests) - self.log_limit]


def _split(path: str) -> tuple[str, list[str]]:
    """``/api/1.2/suppliers/S`` as ``("1.2", ["suppliers", "S"])``; ``("", [])`` off the API."""
    segments = path.split("/")
    if len(segments) < 4 or segments[0] or segments[1] != "api":
        return "", []
    return segments[2], segments[3:]


def _accepts_json(header: str | None) -> bool:
    if header is None or not header.strip():
        return True
    ranges = {part.split(";")[0].strip().lower() for part in header.split(",")}
    return not ranges.isdisjoint({"application/json", "*/*"})


def _json_content_type(header: str) -> bool:
    media, *params = header.split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in filter(None, (p.strip() for p in params)):
        key, _, value = param.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is None:
        raise Refusal(400, "Content-Length is required (chunked bodies are not accepted)")
    limit = {"DELETE": DELETE_LIMIT, "POST": POST_LIMIT}.get(request.method, PUT_LIMIT)
    if request.content_length > limit:
        raise Refusal(400, f"The request body exceeds the maximum size of {limit} bytes")
    return await request.read()


def _json(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refusal(400, f"The body is not valid JSON: {exc}") from None


def _array(parsed: object) -> list[Any]:
    if not isinstance(parsed, list):
        raise Refusal(400, "The body must be a JSON array")
    return parsed


def respond(status: int, answer: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(answer), content_type="application/json")


def unauthorized() -> web.Response:
    response = respond(401, [{"status": "Authentication failed"}])
    # Lets a browser ask for the credentials, for the humans these endpoints are for.
    response.headers["WWW-Authenticate"] = 'Basic realm="feedsync CyberTrace emulator"'
    return response


async def serve(
    listen: str, *, user: str, password: str, api_versions: Sequence[str], sink: bool = False
) -> None:
    """Run an emulator on ``listen`` (HOST:PORT) until cancelled, SIGINT or SIGTERM."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    # A long-running emulator would otherwise keep every request body it ever received.
    emulator = Emulator(
        user=user,
        password=password,
        api_versions=api_versions,
        log_limit=SERVE_LOG_LIMIT,
        sink=sink,
    )
    url = await emulator.start(host.strip("[]") or "127.0.0.1", int(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not every loop or thread can take signal handlers; cancellation still works there.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        # Printed once signals are handled: whoever reads it may signal at once.
        print(f"emulator listening on {url} (API {','.join(api_versions)})", flush=True)
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await emulator.stop()
