"""The Emulator: an in-process CyberTrace with inspectable state, checks and log.

The order of the checks: credentials (401), ``Accept`` (406), the API version
and request (404, 405 for a known request with another method; page 198593
for what exists per version and tenant: ``feedsync.emulator.routes``), body
framing (``feedsync.emulator._http``), then the request itself
(``feedsync.emulator.api``). Every refusal is a JSON array of one error object
with ``status`` and, where there is one, ``reason``.

Everything a client sends under ``/api/`` or elsewhere is logged
(``requests``), and the state can be read (``indicators``, ``stored``,
``supplier``, ``tags``) so that tests assert on what CyberTrace received.
Outside the API, debug endpoints (``feedsync.emulator.debug``) need the same
credentials and are not logged themselves. Faults (``feedsync.emulator.faults``) are one
middleware in front of the handler.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

from feedsync.emulator import debug
from feedsync.emulator import tags as emulator_tags
from feedsync.emulator._http import (
    BodyNotArray,
    LoggedRequest,
    accepts_json,
    collector_paused,
    logged,
    parse,
    read_body,
    respond,
)
from feedsync.emulator.api import Api
from feedsync.emulator.faults import Faults, FaultState, middleware
from feedsync.emulator.model import (
    DEFAULT_TENANT,
    PUT_LIMIT,
    EmulatedIndicator,
    EmulatedSupplier,
    Refusal,
    version_key,
)
from feedsync.emulator.readings import (
    AcceptHeader,
    AllRejectedStatus,
    EmptyBatch,
    InternalTiPut,
    MissingStatus,
    MissingTagStatus,
    Readings,
    RetentionZero,
    TenantVisibility,
    UnknownFields,
)
from feedsync.emulator.routes import Resolved, resolve, split

log = logging.getLogger("feedsync.emulator")


class Emulator:
    """An in-process CyberTrace with inspectable state.

    ``tenants`` switches multitenancy mode on (the tenant forms of API 1.3
    exist only then); the other keywords after ``sink`` are the readings.
    """

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
        missing_supplier_status: MissingStatus = 400,
        retention_zero: RetentionZero = "refuse",
        tenant_visibility: TenantVisibility = "assigned",
        accept_header: AcceptHeader = "strict",
        internal_ti_put: InternalTiPut = "refuse",
        empty_batch: EmptyBatch = "refuse",
        all_rejected_status: AllRejectedStatus = 202,
        unknown_fields: UnknownFields = "refuse",
        missing_tag_status: MissingTagStatus = 400,
    ) -> None:
        self._credentials = f"{user}:{password}".encode()
        self.versions = tuple(api_versions)
        for version in self.versions:
            version_key(version)
        self.readings = Readings(
            missing_supplier_status=missing_supplier_status,
            retention_zero=retention_zero,
            tenant_visibility=tenant_visibility,
            accept_header=accept_header,
            internal_ti_put=internal_ti_put,
            empty_batch=empty_batch,
            all_rejected_status=all_rejected_status,
            unknown_fields=unknown_fields,
            missing_tag_status=missing_tag_status,
        )
        self.api = Api(tenants=tenants, clock=clock, sink=sink, readings=self.readings)
        # The same dict: tests/cybertrace/test_cybertrace.py removes tags through it;
        # prefer delete_tag().
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

    # Inspection and direct setup, standing in for CyberTrace's operators

    def indicators(
        self, supplier: str, tenant: str = DEFAULT_TENANT, *, canaries: bool = False
    ) -> dict[str, EmulatedIndicator]:
        """Canonical value -> live indicator (expired ones are held but left out).
        Tests compare what feeds put in a supplier: feedsync's own restore canary
        (canary.py) is left out unless ``canaries``."""
        found = self.supplier(supplier, tenant)
        held = {} if found is None else found.live(self.api.clock())
        return held if canaries else _without_canaries(held)

    def stored(
        self, supplier: str, tenant: str = DEFAULT_TENANT, *, canaries: bool = False
    ) -> dict[str, EmulatedIndicator]:
        """Canonical value -> indicator, expired ones included (canaries as above)."""
        found = self.supplier(supplier, tenant)
        held = {} if found is None else dict(found.indicators)
        return held if canaries else _without_canaries(held)

    def supplier(self, name: str, tenant: str = DEFAULT_TENANT) -> EmulatedSupplier | None:
        """The supplier, if the tenant sees it (General sees every one)."""
        return self.api.find(name, tenant)

    def add_supplier(
        self,
        name: str,
        confidence: int = 80,
        retention: int = 0,
        vendor: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """Create (or replace) a supplier, visible in ``tenant`` too."""
        supplier = EmulatedSupplier(name, confidence, retention, vendor)
        if tenant != DEFAULT_TENANT:
            supplier.tenants.add(tenant)
        self.api.suppliers[name] = supplier

    def assign_supplier(self, name: str, tenant: str) -> None:
        """Make a supplier visible in a tenant, as CyberTrace's administrator does."""
        if tenant != DEFAULT_TENANT and tenant not in self.api.tenants:
            raise ValueError(
                f"no tenant {tenant!r} in multitenancy mode {sorted(self.api.tenants)}"
            )
        self.api.suppliers[name].tenants.add(tenant)

    def delete_supplier(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        """Remove a supplier behind the client's back, as an operator could; with a
        tenant other than General, only take it out of that tenant."""
        if tenant == DEFAULT_TENANT:
            self.api.suppliers.pop(name, None)
        elif name in self.api.suppliers:
            self.api.suppliers[name].tenants.discard(tenant)

    def add_tag(self, name: str, weight: int = 0) -> None:
        self.api.tags.setdefault(name.upper(), weight)

    def delete_tag(self, name: str) -> None:
        """Remove a tag behind the client's back, as an operator could."""
        emulator_tags.remove(self.api, name)

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

    def indicator_requests(
        self, method: str | None = None, *, canaries: bool = False
    ) -> list[LoggedRequest]:
        """Logged PUT and DELETE requests on ``.../indicators`` (or only ``method``);
        those of feedsync's canary alone are left out unless ``canaries``."""
        return [
            r
            for r in self.requests
            if debug.changes_indicators(r.method, r.path)
            and method in (None, r.method)
            and (canaries or not _of_canaries(r.json))
        ]

    # Faults

    @property
    def faults(self) -> Faults | None:
        return self.fault_state.faults if self.fault_state else None

    @faults.setter
    def faults(self, value: Faults | None) -> None:
        # Set on the emulator's clock: Faults.initializing counts from here.
        self.fault_state = None if value is None else FaultState(value, self.api.clock())

    def log_fault(self, request: web.Request, status: int, body: bytes) -> None:
        """Record a request a fault answered before the API saw it."""
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        self._record(request, split(request.path)[0], status, body, parsed)

    # HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        version, segments = split(request.path)
        body = b""
        resolved: Resolved | None = None
        early: Exception | None = None
        try:
            self._check_headers(request)
            if version not in self.versions:
                raise Refusal(404, f"API version {version or '(none)'} is not supported")
            resolved = resolve(request.method, version, segments, self.api.tenants)
            if request.body_exists:
                body = await read_body(request, resolved.endpoint.limit)
        except ConnectionError:
            # The client left mid-body: nothing was received, applied, or can be answered.
            return web.Response(status=400)
        except Exception as exc:  # answered as the later ones are
            early = exc
        with collector_paused():
            # One pause for parsing, applying and logging, which ends once the parsed
            # body is dropped: the collection it deferred then walks only what was kept.
            status, answer = self._answered(request, version, resolved, body, early)
        return respond(status, answer)

    def _answered(
        self,
        request: web.Request,
        version: str,
        resolved: Resolved | None,
        body: bytes,
        early: Exception | None,
    ) -> tuple[int, list[Any]]:
        parsed: object | None = None
        try:
            if early is not None:
                raise early
            assert resolved is not None  # set whenever nothing was raised
            array: list[Any] | None = None
            if request.body_exists:
                parsed = array = parse(body, request.headers.get("Content-Type", ""))
            status, answer = self.api.answer(resolved, array)
        except Refusal as refusal:
            if isinstance(refusal, BodyNotArray):
                parsed = refusal.parsed
            status = refusal.status
            answer = refusal.body(resolved.endpoint.error if resolved else None)
        except Exception:
            # A bug here must reach the test as a CyberTrace 500, with its traceback in the log.
            log.exception("emulator error on %s %s", request.method, request.path)
            status, answer = 500, [{"status": "Internal Server Error", "reason": "emulator bug"}]
        self._record(request, version, status, body, parsed)
        return status, answer

    def _check_headers(self, request: web.Request) -> None:
        if not self.authorized(request):
            raise Refusal(401, "Authentication failed")
        if not accepts_json(request.headers.get("Accept"), self.readings.accept_header):
            raise Refusal(406, "Accept must allow application/json")

    def _record(
        self, request: web.Request, version: str, status: int, body: bytes, parsed: object
    ) -> None:
        self.requests.append(logged(request, version, status, body, parsed))
        self.changes.record(request.method, request.path, parsed)
        if self.log_limit is not None and len(self.requests) > self.log_limit:
            del self.requests[: len(self.requests) - self.log_limit]


# How feedsync names its canaries: "fs-" and 16 hex digits, under a reserved domain.
_CANARY = re.compile(r"fs-[0-9a-f]{16}\.[a-z0-9.-]+\.(?:invalid|test|example)")


def _without_canaries(held: dict[str, EmulatedIndicator]) -> dict[str, EmulatedIndicator]:
    return {value: found for value, found in held.items() if not _CANARY.fullmatch(value)}


def _of_canaries(body: object) -> bool:
    return (
        isinstance(body, list)
        and bool(body)
        and all(
            isinstance(item, dict)
            and isinstance(item.get("indicator"), str)
            and _CANARY.fullmatch(item["indicator"])
            for item in body
        )
    )
