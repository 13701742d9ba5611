"""The CyberTrace REST API client.

One ``aiohttp.ClientSession`` per CyberTrace with keep-alive, at most
``concurrency`` requests in flight, explicit timeouts, bodies always sent as
bytes (so with ``Content-Length``). Transient failures (connection errors,
timeouts, 425, 429, 5xx) are retried with exponential backoff and full jitter;
401/403 stop at once. aiohttp's exceptions are translated here, once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from feedsync import logs
from feedsync.config import CyberTraceConfig, SupplierConfig
from feedsync.errors import AuthError, CyberTraceError, RequestError, TLSError, TransportError
from feedsync.fetch import USER_AGENT, basic_auth, ssl_context

PUT_LIMIT = 134217728
DELETE_LIMIT = 67108864
VERSIONS = ("1.3", "1.2", "1.1", "1.0")
RETRY_STATUSES = frozenset({425, 429, 500, 502, 503, 504})

log = logs.get("feedsync.cybertrace")

Observer = Callable[[str, str, str, float, int], None]


@dataclass(frozen=True, slots=True)
class Answer:
    """A CyberTrace answer: status and parsed JSON body (None if not JSON)."""

    status: int
    body: Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of an indicator request: the indicators CyberTrace refused."""

    status: int
    errors: dict[str, str] = field(default_factory=dict)


def _ignore(method: str, supplier: str, code: str, seconds: float, sent: int) -> None:
    """The default observer: metrics are optional for the client."""


class CyberTrace:
    """A connection to one CyberTrace server."""

    def __init__(
        self,
        config: CyberTraceConfig,
        *,
        observe: Observer = _ignore,
        on_retry: Callable[[str], None] = lambda _method: None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._on_retry = on_retry
        self.config = config
        self.version = config.api_version
        self._observe = observe
        self._sleep = sleep
        self._gate = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CyberTrace:
        if self.config.verify_tls is False and self.config.url.startswith("https://"):
            log.warning("cybertrace.tls_unverified", url=self.config.url)
        # Loading the system's CA store costs a noticeable part of a short `feedsync sync`.
        plain = self.config.url.startswith("http://")
        tls = False if plain else await ssl_context(self.config.verify_tls)
        if self.config.client_cert and not isinstance(tls, bool):
            await asyncio.to_thread(
                tls.load_cert_chain, self.config.client_cert, self.config.client_key
            )
        self._session = aiohttp.ClientSession(
            base_url=None,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout, connect=30),
            connector=aiohttp.TCPConnector(limit=self.config.concurrency, ssl=tls),
            headers={
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                "Authorization": basic_auth(self.config.username, self.config.password.reveal()),
            },
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def tags_supported(self) -> bool:
        return self.version != "1.0"

    async def resolve_version(self) -> str:
        """With ``api_version: auto``, the highest version the server answers."""
        if self.version != "auto":
            return self.version
        for version in VERSIONS:
            answer = await self._request("GET", f"/api/{version}/suppliers", "", retry=True)
            if answer.status != 404:
                self._check(answer, "GET", "suppliers")
                self.version = version
                log.info("cybertrace.version", version=version)
                return version
        raise RequestError(404, "CyberTrace answers none of the API versions 1.0-1.3")

    # Suppliers

    async def supplier(self, name: str) -> dict[str, Any] | None:
        answer = await self._request("GET", self._path(f"suppliers/{quote(name)}"), name)
        if answer.status == 404:
            return None
        self._check(answer, "GET", f"suppliers/{name}")
        if isinstance(answer.body, list) and answer.body and isinstance(answer.body[0], dict):
            return answer.body[0]
        raise RequestError(answer.status, f"GET suppliers/{name}: unexpected answer")

    async def create_supplier(self, supplier: SupplierConfig) -> None:
        body = [_supplier_body(supplier)]
        answer = await self._send("POST", self._path("suppliers"), supplier.name, body)
        self._check(answer, "POST", "suppliers")

    async def update_supplier(self, supplier: SupplierConfig) -> None:
        path = self._path(f"suppliers/{quote(supplier.name)}")
        answer = await self._send("PUT", path, supplier.name, [_supplier_body(supplier)])
        self._check(answer, "PUT", f"suppliers/{supplier.name}")

    # Tags

    async def tags(self) -> set[str]:
        answer = await self._request("GET", self._path("tags", tenant=False), "")
        self._check(answer, "GET", "tags")
        items = answer.body if isinstance(answer.body, list) else []
        return {str(item["name"]).upper() for item in items if isinstance(item, dict)}

    async def create_tags(self, names: list[str], weight: int) -> None:
        body = [{"name": name, "weight": weight} for name in names]
        answer = await self._send("POST", self._path("tags", tenant=False), "", body)
        self._check(answer, "POST", "tags")

    # Indicators

    async def put_indicators(self, supplier: str, body: bytes) -> Outcome:
        return await self._indicators("PUT", supplier, body)

    async def delete_indicators(self, supplier: str, body: bytes) -> Outcome:
        return await self._indicators("DELETE", supplier, body)

    async def _indicators(self, method: str, supplier: str, body: bytes) -> Outcome:
        path = self._path(f"suppliers/{quote(supplier)}/indicators")
        answer = await self._request(method, path, supplier, body=body, retry=True)
        if answer.status == 202:
            return Outcome(202, _error_indicators(answer.body))
        self._check(answer, method, f"suppliers/{supplier}/indicators")
        return Outcome(answer.status)

    # Transport

    def _path(self, tail: str, *, tenant: bool = True) -> str:
        if tenant and self.version == "1.3" and self.config.tenant:
            return f"/api/1.3/{quote(self.config.tenant)}/{tail}"
        return f"/api/{self.version}/{tail}"

    def _check(self, answer: Answer, method: str, what: str) -> None:
        if answer.status in (200, 201):
            return
        user = self.config.username
        if answer.status == 401:
            raise AuthError(
                401,
                f"CyberTrace refused the credentials of user {user!r} (401): check"
                " cybertrace.username and the password",
            )
        if answer.status == 403:
            raise AuthError(
                403,
                f"CyberTrace user {user!r} may not {method} {what} (403): the account's role"
                " lacks the rights (an Analyst cannot change suppliers or indicators)",
            )
        raise RequestError(
            answer.status,
            f"{method} {what}: CyberTrace answered {answer.status}{_status_text(answer.body)}",
        )

    async def _send(self, method: str, path: str, supplier: str, body: object) -> Answer:
        return await self._request(method, path, supplier, body=orjson.dumps(body), retry=True)

    async def _request(
        self,
        method: str,
        path: str,
        supplier: str,
        *,
        body: bytes | None = None,
        retry: bool = True,
    ) -> Answer:
        policy = self.config.retry
        attempts = policy.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                answer, retry_after = await self._once(method, path, supplier, body)
            except TransportError:
                if attempt == attempts:
                    raise
                retry_after = None
            else:
                if answer.status not in RETRY_STATUSES or attempt == attempts:
                    return answer
            ceiling = min(policy.max_delay, policy.initial_delay * 2 ** (attempt - 1))
            delay = random.uniform(0, ceiling)  # noqa: S311 -- jitter, not cryptography
            if retry_after is not None:
                delay = min(max(delay, retry_after), policy.max_delay)
            log.debug(
                "cybertrace.retry", method=method, path=path, attempt=attempt, delay=round(delay, 3)
            )
            self._on_retry(method)
            await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _once(
        self, method: str, path: str, supplier: str, body: bytes | None
    ) -> tuple[Answer, float | None]:
        if self._session is None:
            raise CyberTraceError("the CyberTrace client is not open")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        url = self.config.url + path
        started = time.monotonic()
        async with self._gate:
            try:
                async with self._session.request(
                    method, url, data=body, headers=headers
                ) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except aiohttp.ClientSSLError as exc:
                self._observe(method, supplier, "error", time.monotonic() - started, 0)
                raise TLSError(
                    f"{method} {path}: TLS verification failed ({exc}); set cybertrace.verify_tls"
                    " to the CA bundle that signed the server's certificate"
                ) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._observe(
                    method, supplier, "error", time.monotonic() - started, len(body or b"")
                )
                reason = str(exc) or type(exc).__name__
                raise TransportError(f"{method} {path}: {reason}") from exc
        self._observe(method, supplier, str(status), time.monotonic() - started, len(body or b""))
        try:
            parsed: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        return Answer(status, parsed), retry_after


def _supplier_body(supplier: SupplierConfig) -> dict[str, object]:
    body: dict[str, object] = {
        "name": supplier.name,
        "confidence": supplier.confidence,
        "retention": supplier.retention,
    }
    if supplier.vendor is not None:
        body["vendor"] = supplier.vendor
    return body


def _error_indicators(body: Any) -> dict[str, str]:
    errors: dict[str, str] = {}
    items = body if isinstance(body, list) else [body]
    for item in items:
        if not isinstance(item, dict):
            continue
        for error in item.get("error_indicators") or []:
            if isinstance(error, dict) and isinstance(error.get("indicator"), str):
                errors[error["indicator"]] = str(
                    error.get("reason") or "rejected (no reason given)"
                )
    return errors


def _status_text(body: Any) -> str:
    if isinstance(body, list) and body and isinstance(body[0], dict) and "status" in body[0]:
        return f": {str(body[0]['status'])[:200]}"
    return ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
