"""The daemon's HTTP server: /metrics, /healthz, /readyz, /status, /why.

It answers from what the daemon hands it as coroutines (``status``, ``ready``),
never from the store's worker thread, so no cycle's work can queue a probe;
every answer is bounded by ``answer_timeout``. Connections are bounded too: at
most ``max_connections`` at once (more are answered 503 and closed) and an
idle one is closed after ``idle_timeout``, so idle clients cannot take the
process's file descriptors.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedsync import logs
from feedsync.errors import FeedsyncError
from feedsync.metrics import REGISTRY

log = logs.get("feedsync.server")

MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 15.0
ANSWER_TIMEOUT = 5.0
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\n"
)

Status = Callable[[], Awaitable[dict[str, Any]]]
Ready = Callable[[], Awaitable[list[str]]]
Why = Callable[[str], Awaitable[tuple[int, dict[str, Any]]]]
# `feedsync why`'s exit codes as HTTP statuses: found, unknown, not an indicator.
_WHY_STATUS = {0: 200, 1: 404, 2: 400}


class Server:
    """An aiohttp ``AppRunner`` serving the daemon's state."""

    def __init__(
        self,
        *,
        status: Status,
        ready: Ready,
        why: Why | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self._status = status
        self._ready = ready
        self._why = why
        self.max_connections = max_connections
        self.answer_timeout = answer_timeout
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/status", self.status)
        if why is not None:
            self.app.router.add_get("/why", self.why)
        # aiohttp starts the keep-alive timer on connect: one that never sends a request
        # is closed after idle_timeout as well.
        self.runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=idle_timeout)
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; FeedsyncError (one line, no traceback) when the
        address is taken or not ours to bind."""
        await self.runner.setup()
        site = _BoundedSite(self.runner, host, port, self.max_connections)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                hint = ": another feedsync or another program listens there; stop it or set"
                hint += " server.listen to a free port"
            raise FeedsyncError(
                f"server.listen {host}:{port}: cannot listen ({why}){hint}"
            ) from exc
        self.port = self.runner.addresses[0][1]
        log.info("server.listening", host=host, port=self.port, limit=self.max_connections)

    async def stop(self) -> None:
        await self.runner.cleanup()

    @property
    def connections(self) -> int:
        """Connections open now (for tests and diagnostics)."""
        server = self.runner.server
        return len(server.connections) if server is not None else 0

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self.answer_timeout):
                problems = await self._ready()
        except TimeoutError:
            problems = [f"readiness checks did not answer within {self.answer_timeout:g} s"]
        if REGISTRY.get_sample_value("feedsync_cybertrace_up") == 0:
            problems.append("CyberTrace did not answer the last request")
        if problems:
            return web.Response(status=503, text=f"not ready: {'; '.join(problems)}\n")
        return web.Response(text="ready\n")

    async def status(self, _request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self.answer_timeout):
                snapshot = await self._status()
        except TimeoutError:
            log.warning("server.status_slow", seconds=self.answer_timeout)
            text = f"status did not answer within {self.answer_timeout:g} s\n"
            return web.Response(status=503, text=text)
        return web.Response(
            body=orjson.dumps(snapshot, option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )

    async def why(self, request: web.Request) -> web.Response:
        """``feedsync why`` as JSON: 200 its story, 404 a value feedsync has no record
        of, 400 a missing ``value`` or one that is no indicator."""
        value = request.query.get("value", "")
        if not value.strip() or self._why is None:
            return _json(400, {"error": "missing query parameter: /why?value=INDICATOR"})
        try:
            async with asyncio.timeout(self.answer_timeout):
                code, answer = await self._why(value)
        except TimeoutError:
            log.warning("server.why_slow", seconds=self.answer_timeout)
            return _json(503, {"error": f"no answer within {self.answer_timeout:g} s"})
        return _json(_WHY_STATUS.get(code, 500), answer)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body, option=orjson.OPT_INDENT_2),
        content_type="application/json",
    )


class _BoundedSite(web.BaseSite):
    """A TCP site that answers connections past ``limit`` with a 503 and closes
    them, instead of holding a descriptor and a handler for each."""

    __slots__ = ("_host", "_limit", "_port", "_refusing")

    def __init__(self, runner: web.AppRunner, host: str, port: int, limit: int) -> None:
        super().__init__(runner, backlog=limit)
        self._host = host
        self._port = port
        self._limit = limit
        self._refusing = False

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, backlog=self._limit
        )

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        if len(server.connections) < self._limit:
            self._refusing = False
            return server()
        if not self._refusing:
            # Once per burst: a flood of connections must not become a flood of lines.
            log.warning("server.connections_refused", limit=self._limit)
            self._refusing = True
        return _Refused()


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSED)
        transport.close()
