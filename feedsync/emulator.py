"""A CyberTrace REST API emulator, for tests, the demo and trying a configuration.

Strict where CyberTrace is strict: Basic auth (401), ``Accept`` (406), known
API versions (404), ``Content-Type`` and ``Content-Length`` on bodies (400),
body limits checked from the header before reading (PUT/POST 128 MB, DELETE
64 MB), JSON arrays only. Per-indicator problems give 202 with
``error_indicators`` while the rest is applied. URLs are stored normalized;
retention counts from each indicator's last update, on an injectable clock.

Everything it receives is logged (``requests``) and its contents can be read
(``indicators``), so tests assert on what CyberTrace received.

``POST lookup`` takes ``[{"indicator": str}]`` and answers
``[{"indicator": canonical, "found": bool, "suppliers": [{"name", "context", "tags"}]}]``
(the shape is ours; the real lookup answers differently).
"""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from feedsync.faults import Faults, FaultState, middleware
from feedsync.normalize import InvalidValue, canonicalize

PUT_LIMIT = 134217728
DELETE_LIMIT = 67108864
BUILTIN = ("FalsePositive", "InternalTI")
DEFAULT_TENANT = "General"
_SUPPLIER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request as the emulator received it."""

    method: str
    path: str
    version: str
    status: int
    body: bytes
    json: object | None
    headers: Mapping[str, str]


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


class _Refusal(Exception):
    """A request CyberTrace answers with an error status."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text
        super().__init__(text)


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
    ) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"
        self.versions = tuple(api_versions)
        self.tenants = set(tenants)
        self.clock = clock
        self.requests: list[LoggedRequest] = []
        self.url = ""
        self._tags: dict[str, int] = {}
        self._state: dict[str, dict[str, EmulatedSupplier]] = {}
        self.app = web.Application(middlewares=[middleware(self)], client_max_size=PUT_LIMIT + 1)
        self.app.router.add_route("*", "/api/{version}/{tail:.*}", self._dispatch)
        self.app.router.add_get("/emulator/state", self._dump_state)
        self.app.router.add_get("/emulator/requests", self._dump_requests)
        self._runner: web.AppRunner | None = None
        self.fault_state: FaultState | None = None

    # Lifecycle

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"{'https' if tls else 'http'}://{host}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Inspection and direct setup

    def indicators(
        self, supplier: str, tenant: str = DEFAULT_TENANT
    ) -> dict[str, EmulatedIndicator]:
        found = self.supplier(supplier, tenant)
        if found is None:
            return {}
        self._expire(found)
        return dict(found.indicators)

    def supplier(self, name: str, tenant: str = DEFAULT_TENANT) -> EmulatedSupplier | None:
        return self._suppliers(tenant).get(name)

    def add_supplier(
        self,
        name: str,
        confidence: int = 80,
        retention: int = 0,
        vendor: str | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self._suppliers(tenant)[name] = EmulatedSupplier(name, confidence, retention, vendor)

    def delete_supplier(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        self._suppliers(tenant).pop(name, None)

    def tags(self) -> dict[str, int]:
        return dict(self._tags)

    def clear_log(self) -> None:
        self.requests.clear()

    def indicator_requests(self, method: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in self.requests
            if r.path.endswith("/indicators")
            and r.method in ((method,) if method else ("PUT", "DELETE"))
        ]

    # HTTP

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
        version = request.match_info.get("version", "")
        self.requests.append(
            LoggedRequest(
                request.method, request.path, version, status, body, parsed, _redacted(request)
            )
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        version = request.match_info["version"]
        body = b""
        parsed: object | None = None
        try:
            self._check_headers(request, version)
            if request.method in ("PUT", "POST", "DELETE") and request.body_exists:
                body = await self._read_body(request)
                parsed = self._parse(body)
            elif request.method in ("PUT", "POST") or (
                request.method == "DELETE" and request.path.endswith("/indicators")
            ):
                raise _Refusal(400, "A JSON array body is required")
            status, answer = self._route(
                request.method, version, request.match_info["tail"], parsed
            )
        except _Refusal as refusal:
            status, answer = refusal.status, [{"status": refusal.text}]
        self.requests.append(
            LoggedRequest(
                request.method, request.path, version, status, body, parsed, _redacted(request)
            )
        )
        return web.Response(
            status=status, body=orjson.dumps(answer), content_type="application/json"
        )

    def _check_headers(self, request: web.Request, version: str) -> None:
        if request.headers.get("Authorization") != self._authorization:
            raise _Refusal(401, "Authentication failed")
        accept = request.headers.get("Accept", "*/*")
        if not any(
            a.split(";")[0].strip() in ("application/json", "*/*") for a in accept.split(",")
        ):
            raise _Refusal(406, "Only application/json responses are supported")
        if version not in self.versions:
            raise _Refusal(404, f"Unknown API version {version}")

    async def _read_body(self, request: web.Request) -> bytes:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise _Refusal(400, "Content-Type must be application/json")
        if "Content-Length" not in request.headers:
            raise _Refusal(400, "Content-Length is required")
        limit = DELETE_LIMIT if request.method == "DELETE" else PUT_LIMIT
        if (request.content_length or 0) > limit:
            raise _Refusal(400, f"Request body exceeds the {limit}-byte limit")
        return await request.read()

    def _parse(self, body: bytes) -> object:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _Refusal(400, f"Invalid JSON: {exc}") from exc
        if not isinstance(parsed, list):
            raise _Refusal(400, "The request body must be a JSON array")
        return parsed

    def _route(self, method: str, version: str, tail: str, body: Any) -> tuple[int, Any]:
        parts = [p for p in tail.split("/") if p]
        tenant = DEFAULT_TENANT
        if version == "1.3" and parts and parts[0] not in ("suppliers", "tags", "lookup"):
            tenant = parts.pop(0)
            if self.tenants and tenant not in self.tenants:
                raise _Refusal(404, f"Unknown tenant {tenant}")
        if parts == ["suppliers"] and method == "GET":
            return 200, [
                {"name": s.name, "status": s.status} for s in self._suppliers(tenant).values()
            ]
        if parts == ["suppliers"] and method == "POST":
            return self._create_supplier(tenant, body)
        if len(parts) == 2 and parts[0] == "suppliers":
            return self._supplier_request(method, tenant, parts[1], body)
        if len(parts) == 3 and parts[0] == "suppliers" and parts[2] == "indicators":
            supplier = self._existing(tenant, parts[1])
            if method == "PUT":
                return self._put(version, supplier, body)
            if method == "DELETE":
                return self._delete(version, supplier, body)
        if parts == ["tags"] and version != "1.0" and tenant == DEFAULT_TENANT:
            if method == "GET":
                return 200, [{"name": n, "weight": w} for n, w in sorted(self._tags.items())]
            if method == "POST":
                return self._create_tags(body)
        if parts == ["lookup"] and method == "POST":
            return 200, self._lookup(tenant, body)
        raise _Refusal(404, f"Unknown request {method} {tail}")

    # Suppliers

    def _suppliers(self, tenant: str) -> dict[str, EmulatedSupplier]:
        if tenant not in self._state:
            self._state[tenant] = {name: EmulatedSupplier(name, 100, 0) for name in BUILTIN}
        return self._state[tenant]

    def _existing(self, tenant: str, name: str) -> EmulatedSupplier:
        supplier = self._suppliers(tenant).get(name)
        if supplier is None:
            raise _Refusal(404, f"Supplier {name} does not exist")
        return supplier

    def _create_supplier(self, tenant: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            raise _Refusal(400, "Exactly one supplier object is expected")
        item = body[0]
        name = item.get("name")
        if not isinstance(name, str) or not _SUPPLIER_NAME.match(name) or name in BUILTIN:
            raise _Refusal(400, "Invalid supplier name")
        if name in self._suppliers(tenant):
            raise _Refusal(400, f"Supplier {name} already exists")
        confidence = _check_int(item.get("confidence"), 0, 100, "confidence")
        retention = _check_int(item.get("retention"), 0, None, "retention")
        vendor = item.get("vendor")
        self._suppliers(tenant)[name] = EmulatedSupplier(name, confidence, retention, vendor)
        return 201, [{"status": "The supplier was successfully added"}]

    def _supplier_request(self, method: str, tenant: str, name: str, body: Any) -> tuple[int, Any]:
        supplier = self._existing(tenant, name)
        if method == "GET":
            return 200, [supplier.info()]
        if method == "DELETE" and name not in BUILTIN:
            del self._suppliers(tenant)[name]
            return 200, [{"status": "The supplier was successfully deleted"}]
        if method == "PUT" and name not in BUILTIN:
            if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
                raise _Refusal(400, "Exactly one supplier object is expected")
            item = body[0]
            if "confidence" in item:
                _check_int(item["confidence"], 0, 100, "confidence")
                supplier.confidence = item["confidence"]
            if "retention" in item:
                _check_int(item["retention"], 0, None, "retention")
                supplier.retention = item["retention"]
            if "vendor" in item:
                supplier.vendor = item["vendor"]
            if item.get("status") in ("enabled", "disabled"):
                supplier.status = item["status"]
            return 200, [{"status": "The supplier was successfully updated"}]
        raise _Refusal(400, f"Supplier {name} cannot be changed this way")

    # Tags

    def _create_tags(self, body: Any) -> tuple[int, Any]:
        for item in body:
            name, weight = (
                (item.get("name"), item.get("weight")) if isinstance(item, dict) else (None, None)
            )
            if not isinstance(name, str) or not _TAG_NAME.match(name):
                raise _Refusal(400, f"Invalid tag name {name!r}")
            _check_int(weight, 0, 5, "weight")
        for item in body:
            self._tags.setdefault(item["name"].upper(), item["weight"])
        return 201, [{"status": "The tags were successfully added"}]

    # Indicators

    def _put(self, version: str, supplier: EmulatedSupplier, body: Any) -> tuple[int, Any]:
        errors: list[dict[str, str]] = []
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("indicator"), str):
                raise _Refusal(400, 'Every item needs an "indicator" string')
            if "tags" in item and version == "1.0":
                raise _Refusal(400, "Tags are not supported in REST API 1.0")
        now = self.clock()
        for item in body:
            problem = self._put_problem(supplier, item)
            if problem:
                errors.append({"indicator": item["indicator"], "reason": problem})
                continue
            kind, value = canonicalize(item["indicator"])
            current = supplier.indicators.get(value)
            tags = (
                current.tags
                if current is not None and "tags" not in item
                else {t.upper() for t in item.get("tags", [])}
            )
            supplier.indicators[value] = EmulatedIndicator(
                value, kind.cybertrace_type, dict(item.get("context") or {}), tags, now
            )
        return _partial(errors, "added to")

    def _put_problem(self, supplier: EmulatedSupplier, item: dict[str, Any]) -> str | None:
        try:
            canonicalize(item["indicator"])
        except InvalidValue:
            return "Invalid indicator format"
        context = item.get("context")
        if context is not None:
            if supplier.name == "FalsePositive":
                return "Context is not allowed for the FalsePositive supplier"
            if not isinstance(context, dict) or not all(
                isinstance(v, str | int | float | bool) for v in context.values()
            ):
                return "Context must be an object of scalar values"
        tags = item.get("tags")
        if tags is not None:
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                return "Tags must be a list of strings"
            unknown = [t for t in tags if t.upper() not in self._tags]
            if unknown:
                return f"Unknown tag {unknown[0]}"
        return None

    def _delete(self, version: str, supplier: EmulatedSupplier, body: Any) -> tuple[int, Any]:
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("indicator"), str):
                raise _Refusal(400, 'Every item needs an "indicator" string')
            if "unmark_detections" in item and version in ("1.0", "1.1"):
                raise _Refusal(400, "unmark_detections needs REST API 1.2")
        self._expire(supplier)
        errors: list[dict[str, str]] = []
        for item in body:
            try:
                value = canonicalize(item["indicator"])[1]
            except InvalidValue:
                errors.append(
                    {"indicator": item["indicator"], "reason": "Invalid indicator format"}
                )
                continue
            if supplier.indicators.pop(value, None) is None:
                errors.append({"indicator": item["indicator"], "reason": "Indicator doesn't exist"})
        return _partial(errors, "deleted from")

    def _lookup(self, tenant: str, body: Any) -> list[dict[str, object]]:
        answers: list[dict[str, object]] = []
        for item in body:
            raw = item.get("indicator") if isinstance(item, dict) else None
            try:
                value = canonicalize(str(raw))[1]
            except InvalidValue:
                answers.append({"indicator": raw, "found": False, "suppliers": []})
                continue
            hits = []
            for supplier in self._suppliers(tenant).values():
                self._expire(supplier)
                if value in supplier.indicators:
                    found = supplier.indicators[value]
                    hits.append(
                        {
                            "name": supplier.name,
                            "context": found.context,
                            "tags": sorted(found.tags),
                        }
                    )
            answers.append({"indicator": value, "found": bool(hits), "suppliers": hits})
        return answers

    def _expire(self, supplier: EmulatedSupplier) -> None:
        if supplier.retention <= 0:
            return
        deadline = self.clock() - supplier.retention * 60
        for value in [v for v, i in supplier.indicators.items() if i.updated < deadline]:
            del supplier.indicators[value]

    # Debug endpoints

    async def _dump_state(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self._authorization:
            return web.json_response([{"status": "Authentication failed"}], status=401)
        state = {
            tenant: {
                name: {
                    **s.info(),
                    "indicators": {
                        v: {"type": i.type, "context": i.context, "tags": sorted(i.tags)}
                        for v, i in self.indicators(name, tenant).items()
                    },
                }
                for name, s in suppliers.items()
            }
            for tenant, suppliers in self._state.items()
        }
        return web.Response(body=orjson.dumps(state), content_type="application/json")

    async def _dump_requests(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self._authorization:
            return web.json_response([{"status": "Authentication failed"}], status=401)
        log = [
            {"method": r.method, "path": r.path, "status": r.status, "bytes": len(r.body)}
            for r in self.requests
        ]
        return web.Response(body=orjson.dumps(log), content_type="application/json")


def _redacted(request: web.Request) -> dict[str, str]:
    return {k: ("***" if k.lower() == "authorization" else v) for k, v in request.headers.items()}


def _check_int(value: object, low: int, high: int | None, what: str) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        raise _Refusal(400, f"Invalid {what}")
    return value


def _partial(errors: list[dict[str, str]], verb: str) -> tuple[int, Any]:
    if not errors:
        return 201, [{"status": f"All indicators were successfully {verb} the database"}]
    return 202, [
        {
            "status": f"Some indicators were not {verb} the database",
            "error_indicators": errors,
        }
    ]


async def serve(listen: str, *, user: str, password: str, api_versions: Sequence[str]) -> None:
    """Run an emulator until SIGINT/SIGTERM (``feedsync emulator``)."""
    host, _, port = listen.rpartition(":")
    emulator = Emulator(user=user, password=password, api_versions=api_versions)
    url = await emulator.start(host.strip("[]") or "127.0.0.1", int(port))
    print(f"emulator listening on {url} (API {','.join(api_versions)})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
