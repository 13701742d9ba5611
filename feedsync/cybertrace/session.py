"""One CyberTrace HTTP session: opened once, its requests retried, its 425s waited out.

One ``aiohttp.ClientSession`` per CyberTrace with keep-alive, at most
``concurrency`` requests in flight, explicit timeouts, bodies always sent as
bytes (so with ``Content-Length``). Transient failures (connection errors,
timeouts, 425, 429, 5xx) are retried with exponential backoff and full jitter;
401/403 stop at once. A request that fails is translated once, by
feedsync._http.translate, into the client's branch of the error tree.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypedDict

import aiohttp
import orjson

from feedsync import logs, proxy
from feedsync._http import USER_AGENT, basic_auth, ssl_context, translate
from feedsync.config import CyberTraceConfig
from feedsync.cybertrace.answers import Answer, failure_error, retry_after_seconds
from feedsync.errors import AuthError, ConfigError, CyberTraceError, TLSError, TransportError

RETRY_STATUSES = frozenset({425, 429, 500, 502, 503, 504})

log = logs.get("feedsync.cybertrace")

Observer = Callable[[str, str, str, float, int], None]
Method = Literal["GET", "POST", "PUT", "DELETE"]  # what the documented API takes


@dataclass(slots=True)
class Startup:
    """A request's run of 425 answers (CyberTrace starting): when the first came and
    how many waits followed. Mutable: one request's retry loop counts in it."""

    since: float | None = None
    waits: int = 0


class Hooks(TypedDict, total=False):
    """What a client's owner may hook into its session: ``observe`` is told of
    every request (method, supplier, status or "error", seconds, bytes sent),
    ``on_retry`` of every retry; ``sleep`` and ``clock`` wait and tell time."""

    observe: Observer
    on_retry: Callable[[str], None]
    sleep: Callable[[float], Any]
    clock: Callable[[], float]


def ignore(method: str, supplier: str, code: str, seconds: float, sent: int) -> None:
    """The default observer: metrics are optional for the client."""


class Session:
    """The HTTP side of a client: its session, proxy route and credentials."""

    def __init__(
        self,
        config: CyberTraceConfig,
        *,
        observe: Observer = ignore,
        on_retry: Callable[[str], None] = lambda _method: None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_retry = on_retry
        self._clock = clock
        self.config = config
        self._observe = observe
        self._sleep = sleep
        self._gate = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.route = proxy.DIRECT
        self._auth = ""

    async def open(self) -> None:
        """Build the session: proxy route, TLS context and client certificate, credentials."""
        if self.config.verify_tls is False and self.config.url.startswith("https://"):
            log.warning("cybertrace.tls_unverified", url=self.config.url)
        try:
            # One host, so one route for the client's life (the environment is read now).
            self.route = proxy.route(self.config.proxy, self.config.url)
        except proxy.ProxyUnusable as exc:
            raise CyberTraceError(f"cannot reach CyberTrace: {exc}") from None
        if self.config.password is None:
            # load(secrets=False) is for commands that never connect.
            raise ConfigError("cybertrace.password", "not read: loaded without secrets")
        password = self.config.password.reveal()
        cleartext = self.config.url.startswith("http://")
        cert = self.config.client_cert
        certificate = None if cert is None else (cert, self.config.client_key)
        tls = (
            False
            if cleartext
            else await ssl_context(self.config.verify_tls, certificate=certificate)
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
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
        startup = Startup()
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

    async def _await_startup(self, startup: Startup, path: str, retry_after: float | None) -> bool:
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
                with translate(partial(failure_error, method, path, self.route)):
                    async with self._session.request(
                        method,
                        url,
                        data=body,
                        headers={**headers, **self.route.forward(url)},
                        proxy=self.route.proxy,
                        proxy_headers=self.route.tunnel(url),
                    ) as response:
                        raw = await response.read()
                        status = response.status
                        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except CyberTraceError as exc:
                sent = 0 if isinstance(exc, TLSError) else len(body or b"")
                self._observe(method, supplier, "error", time.monotonic() - started, sent)
                raise
        self._observe(method, supplier, str(status), time.monotonic() - started, len(body or b""))
        refused = proxy.answered(self.route, status)
        if refused is not None:
            raise AuthError(407, f"{method} {path}: {refused}")
        try:
            parsed: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        return Answer(status, parsed), retry_after
