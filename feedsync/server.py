"""The daemon's HTTP server: /metrics, /healthz, /readyz, /status."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedsync import logs, report
from feedsync.metrics import REGISTRY

if TYPE_CHECKING:
    from feedsync.daemon import Daemon

log = logs.get("feedsync.server")


class Server:
    """An aiohttp ``AppRunner`` serving the daemon's state."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/status", self.status)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        log.info("server.listening", host=host, port=self.port)

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        problems = await self.daemon.store.call(_store_problems, self.daemon)
        if REGISTRY.get_sample_value("feedsync_cybertrace_up") == 0:
            problems = "CyberTrace did not answer the last request"
            return web.Response(status=503, text=f"not ready: {problems}\n")
        return web.Response(text="ready\n")

    async def status(self, _request: web.Request) -> web.Response:
        daemon = self.daemon
        snapshot = await daemon.store.call(report.status, daemon.config, daemon.store)
        return web.Response(
            body=orjson.dumps(snapshot, option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )


def _store_problems(daemon: Daemon) -> str:
    try:
        daemon.store.db.execute("BEGIN IMMEDIATE")
        daemon.store.db.rollback()
    except Exception as exc:
        return f"state database not writable: {exc}"
    return ""
