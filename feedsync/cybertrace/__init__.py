"""The CyberTrace REST API client: its session, requests, retries and answers.

One ``aiohttp.ClientSession`` per CyberTrace with keep-alive, at most
``concurrency`` requests in flight, explicit timeouts, bodies always sent as
bytes (so with ``Content-Length``). Transient failures (connection errors,
timeouts, 425, 429, 5xx) are retried with exponential backoff and full jitter;
401/403 stop at once. A request that fails is translated once, by
feedsync._http.translate, into this client's branch of the error tree.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson

from feedsync import logs, proxy
from feedsync._http import USER_AGENT, basic_auth, ssl_context, translate
from feedsync.config import CyberTraceConfig, SupplierConfig
from feedsync.cybertrace.answers import (
    Answer,
    Outcome,
    answer_error,
    error_indicators,
    failure_error,
    named,
    retry_after_seconds,
    status_text,
)
from feedsync.errors import (
    AuthError,
    ConfigError,
    CyberTraceError,
    RequestError,
    TLSError,
    TransportError,
)

PUT_LIMIT = 134217728
DELETE_LIMIT = 67108864
VERSIONS = ("1.3", "1.2", "1.1", "1.0")
RETRY_STATUSES = frozenset({425, 429, 500, 502, 503, 504})

log = logs.get("feedsync.cybertrace")

__all__ = ["DELETE_LIMIT", "PUT_LIMIT", "Answer", "CyberTrace", "Outcome"]

Observer = Callable[[str, str, str, float, int], None]
Method = Literal["GET", "POST", "PUT", "DELETE"]  # what the documented API takes
IndicatorMethod = Literal["PUT", "DELETE"]


@dataclass(slots=True)
class _Startup:
    """A request's run of 425 answers (CyberTrace starting): when the first came and
    how many waits followed. Mutable: one request's retry loop counts in it."""

    since: float | None = None
    waits: int = 0


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_retry = on_retry
        self._clock = clock
        self.config = config
        self.version = config.api_version
        self._observe = observe
        self._sleep = sleep
        self._gate = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._route = proxy.DIRECT
        self._auth = ""

    async def __aenter__(self) -> CyberTrace:
        if self.config.verify_tls is False and self.config.url.startswith("https://"):
            log.warning("cybertrace.tls_unverified", url=self.config.url)
        try:
            # One host, so one route for the client's life (the environment is read now).
            self._route = proxy.route(self.config.proxy, self.config.url)
        except proxy.ProxyUnusable as exc:
            raise CyberTraceError(f"cannot reach CyberTrace: {exc}") from None
        # Loading the system's CA store costs a noticeable part of a short `feedsync sync`.
        if self.config.password is None:
            # load(secrets=False) is for commands that never connect.
            raise ConfigError("cybertrace.password", "not read: loaded without secrets")
        password = self.config.password.reveal()
        cleartext = self.config.url.startswith("http://")
        tls = False if cleartext else await ssl_context(self.config.verify_tls)
        if self.config.client_cert and not isinstance(tls, bool):
            await asyncio.to_thread(
                tls.load_cert_chain, self.config.client_cert, self.config.client_key
            )
        self._session = aiohttp.ClientSession(
            base_url=None,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout, connect=30),
            connector=aiohttp.TCPConnector(limit=self.config.concurrency, ssl=tls),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
        )
        # Sent with each request, not as a session default: aiohttp copies a session's
        # default headers into a proxy's, and makes an Authorization among them the
        # proxy's credentials, so the proxy would get CyberTrace's password.
        self._auth = basic_auth(self.config.username, password)
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
                self.check(answer, "GET", "suppliers")
                self._refuse_untenanted(version)
                self.version = version
                log.info("cybertrace.version", version=version)
                return version
        raise RequestError(404, "CyberTrace answers none of the API versions 1.0-1.3")

    def _refuse_untenanted(self, version: str) -> None:
        # Below 1.3 there are no tenant routes: every write would land in the General tenant.
        if self.config.tenant and version != "1.3":
            raise CyberTraceError(
                f"cybertrace.tenant is {self.config.tenant!r}, but the server speaks API"
                f" {version} at most, which has no tenants; refusing to write to the General"
                " tenant instead (remove cybertrace.tenant or upgrade CyberTrace)"
            )

    # Suppliers

    async def supplier_names(self) -> set[str]:
        """The suppliers CyberTrace lists (``GET suppliers``, which includes the
        built-in FalsePositive and InternalTI): the documented way to tell existence."""
        answer = await self._request("GET", self._path("suppliers", tenant=False), "")
        self.check(answer, "GET", "suppliers")
        if not isinstance(answer.body, list):
            raise RequestError(answer.status, "GET suppliers: the answer is not a JSON array")
        names = set()
        for item in answer.body:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise RequestError(
                    answer.status, "GET suppliers: an entry of the answer has no name"
                )
            names.add(item["name"])
        return names

    async def supplier(self, name: str) -> dict[str, Any] | None:
        """The supplier's settings (``GET suppliers/{name}``, in the tenant if one is
        configured), or None where CyberTrace answers 400 or 404: the documentation
        gives no status for a missing supplier, so the caller decides from the list."""
        answer = await self._request("GET", self._path(f"suppliers/{_segment(name)}"), name)
        if answer.status in (400, 404):
            log.debug("cybertrace.supplier_unreadable", supplier=name, status=answer.status)
            return None
        self.check(answer, "GET", f"suppliers/{name}")
        if isinstance(answer.body, list) and answer.body and isinstance(answer.body[0], dict):
            return answer.body[0]
        raise RequestError(answer.status, f"GET suppliers/{name}: the answer is not readable")

    async def create_supplier(self, supplier: SupplierConfig) -> None:
        # POST suppliers has no tenant form (page 198593): a tenant's administrator assigns it.
        body = [_supplier_body(supplier)]
        path = self._path("suppliers", tenant=False)
        answer = await self._send("POST", path, supplier.name, body)
        self.check(answer, "POST", "suppliers")

    async def update_supplier(self, supplier: SupplierConfig) -> None:
        path = self._path(f"suppliers/{_segment(supplier.name)}")
        answer = await self._send("PUT", path, supplier.name, [_supplier_body(supplier)])
        self.check(answer, "PUT", f"suppliers/{supplier.name}")

    # Tags

    async def tags(self) -> set[str]:
        answer = await self._request("GET", self._path("tags", tenant=False), "")
        self.check(answer, "GET", "tags")
        if not isinstance(answer.body, list):
            raise RequestError(answer.status, "GET tags: the answer is not a JSON array")
        return {str(item["name"]).upper() for item in answer.body if named(item)}

    async def create_tag(self, name: str, weight: int) -> Answer:
        """``POST tags`` with one tag object, as the documentation requires; the
        answer is returned for the caller to judge (an existing name is refused)."""
        body = [{"name": name, "weight": weight}]
        return await self._send("POST", self._path("tags", tenant=False), "", body)

    # Indicators

    async def put_indicators(self, supplier: str, body: bytes) -> Outcome:
        return await self._indicators("PUT", supplier, body)

    async def delete_indicators(self, supplier: str, body: bytes) -> Outcome:
        return await self._indicators("DELETE", supplier, body)

    async def _indicators(self, method: IndicatorMethod, supplier: str, body: bytes) -> Outcome:
        path = self._path(f"suppliers/{_segment(supplier)}/indicators")
        answer = await self._request(method, path, supplier, body=body, retry=True)
        if answer.status == 202:
            errors = error_indicators(answer.body)
            if errors is None:
                return Outcome(202, readable=False, text=status_text(answer.body))
            return Outcome(202, errors)
        self.check(answer, method, f"suppliers/{supplier}/indicators")
        return Outcome(answer.status)

    # Lookup

    async def lookup(self, value: str) -> bool | None:
        """Whether CyberTrace matches ``value`` (``POST lookup``, page 198540), or
        None where the answer does not tell: the page's words for ``result`` are
        lost, so a match is read from its ``categories``, which the page keeps."""
        path = self._path("lookup")
        if path.startswith("/api/1.3/lookup"):
            # API 1.3 has only the tenant form (198593); 1.2's untenanted one acts in
            # the General tenant, where a supplier made outside any tenant is.
            path = "/api/1.2/lookup"
        answer = await self._send("POST", path, "", [{"object": value}])
        if answer.status == 404:
            return None
        self.check(answer, "POST", "lookup")
        body = answer.body
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            return None
        categories = body[0].get("categories")
        if not isinstance(categories, list):
            return None
        return bool(categories)

    # Transport

    def _path(self, tail: str, *, tenant: bool = True) -> str:
        if tenant and self.version == "1.3" and self.config.tenant:
            return f"/api/1.3/{_segment(self.config.tenant)}/{tail}"
        return f"/api/{self.version}/{tail}"

    def check(self, answer: Answer, method: Method, what: str) -> None:
        """Raise the error an answer that is no success stands for."""
        error = answer_error(answer, method, what, self.config.username, self._route)
        if error is not None:
            raise error

    async def _send(self, method: Method, path: str, supplier: str, body: object) -> Answer:
        return await self._request(method, path, supplier, body=orjson.dumps(body), retry=True)

    async def _request(
        self,
        method: Method,
        path: str,
        supplier: str,
        *,
        body: bytes | None = None,
        retry: bool = True,
    ) -> Answer:
        attempts = self.config.retry.attempts if retry else 1
        attempt = 0
        startup = _Startup()
        while True:
            try:
                answer, retry_after = await self._once(method, path, supplier, body)
            except TransportError as exc:
                attempt += 1
                if attempt >= attempts:
                    raise
                retry_after = None
                why = str(exc)
            else:
                if answer.status == 425 and retry:
                    if await self._await_startup(startup, path, retry_after):
                        continue
                    return answer
                attempt += 1
                if answer.status not in RETRY_STATUSES or attempt >= attempts:
                    return answer
                why = f"HTTP {answer.status}"
            await self._backoff(method, path, attempt, retry_after, why)

    async def _await_startup(self, startup: _Startup, path: str, retry_after: float | None) -> bool:
        """Wait out a 425, or False once ``retry.initializing`` has passed (the 425 is
        then the answer). Not a failure of the request: CyberTrace is starting, which
        takes minutes, so it has a budget of its own, in time, not attempts."""
        policy = self.config.retry
        now = self._clock()
        startup.since = now if startup.since is None else startup.since
        waited = now - startup.since
        if waited >= policy.initializing:
            log.error("cybertrace.initializing_too_long", path=path, seconds=round(waited))
            return False
        if waited == 0:
            log.warning("cybertrace.initializing", path=path)
        startup.waits += 1
        delay = self._delay(startup.waits, retry_after, jitter=0.5)
        await self._sleep(min(delay, policy.initializing - waited))
        return True

    async def _backoff(
        self, method: Method, path: str, attempt: int, retry_after: float | None, why: str
    ) -> None:
        delay = self._delay(attempt, retry_after)
        # Warning, not debug: a run of them is how an ailing CyberTrace first shows.
        log.warning(
            "cybertrace.retry",
            method=method,
            path=path,
            attempt=attempt,
            delay=round(delay, 3),
            error=why,
        )
        self._on_retry(method)
        await self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None, jitter: float = 1.0) -> float:
        """Exponential backoff with ``jitter`` of the ceiling drawn at random (1: full
        jitter), at least ``Retry-After``, at most ``max_delay``."""
        policy = self.config.retry
        # 425 waits count up for as long as retry.initializing lasts: 2.0 ** 1024 overflows.
        ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** min(attempt - 1, 64))
        delay = ceiling * (1 - jitter) + random.uniform(0, ceiling * jitter)  # noqa: S311
        if retry_after is not None:
            delay = min(max(delay, retry_after), policy.max_delay)
        return delay

    async def _once(
        self, method: Method, path: str, supplier: str, body: bytes | None
    ) -> tuple[Answer, float | None]:
        if self._session is None:
            raise CyberTraceError("the CyberTrace client is not open")
        headers = {"Authorization": self._auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.config.url + path
        started = time.monotonic()
        async with self._gate:
            try:
                with translate(partial(failure_error, method, path, self._route)):
                    async with self._session.request(
                        method,
                        url,
                        data=body,
                        headers={**headers, **self._route.forward(url)},
                        proxy=self._route.proxy,
                        proxy_headers=self._route.tunnel(url),
                    ) as response:
                        raw = await response.read()
                        status = response.status
                        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except CyberTraceError as exc:
                sent = 0 if isinstance(exc, TLSError) else len(body or b"")
                self._observe(method, supplier, "error", time.monotonic() - started, sent)
                raise
        self._observe(method, supplier, str(status), time.monotonic() - started, len(body or b""))
        refused = proxy.answered(self._route, status)
        if refused is not None:
            raise AuthError(407, f"{method} {path}: {refused}")
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


def _segment(name: str) -> str:
    """A name as one path segment: ``/``, ``?``, ``#`` and ``%`` escaped too."""
    return quote(name, safe="")



