"""The daemon's side of the control channel: an aiohttp server on control.py's socket.

Apart from control.py, which the CLI imports for its client: aiohttp.web costs a
`feedsync sync` some 18 ms of CPU to import, and only ``feedsync run`` serves.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from feedsync import logs
from feedsync.daemon.control import SOCKET_NAME, Reply, Steered
from feedsync.errors import ControlError
from feedsync.store import statefile

log = logs.get("feedsync.control")


class ControlServer:
    """An aiohttp ``AppRunner`` on the control socket."""

    def __init__(self, daemon: Steered) -> None:
        self.daemon = daemon
        self.app = web.Application()
        self.app.router.add_post("/sync", self._sync)
        self.app.router.add_get("/status", self._status)
        self.app.router.add_post("/hold", self._hold)
        self.app.router.add_post("/release", self._release)
        self.app.router.add_post("/reload", self._reload)
        self.app.router.add_post("/forget", self._forget)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.path: Path | None = None
        self._inode = 0

    async def start(self, state_path: str) -> Path:
        """Listen on the socket of ``state_path``'s database. Only the holder of
        the writers' lock calls this, so a socket file already there is a killed
        daemon's and is replaced."""
        directory = statefile.ensure_private_dir(state_path)
        path = directory / SOCKET_NAME
        # Bound under a temporary name and made 0600 before it is renamed into
        # place: no client ever finds the socket with the umask's mode.
        temporary = directory / f".ctl-{os.getpid()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            temporary.unlink(missing_ok=True)
            sock.bind(os.fspath(temporary))
            temporary.chmod(statefile.PRIVATE_FILE)
            temporary.replace(path)
            self._inode = path.stat().st_ino
        except OSError as exc:
            sock.close()
            temporary.unlink(missing_ok=True)
            raise ControlError(f"cannot create the control socket {path}: {exc}") from exc
        await self.runner.setup()
        site = web.SockSite(self.runner, sock)
        await site.start()
        self.path = path
        log.info("control.listening", socket=os.fspath(path))
        return path

    async def stop(self) -> None:
        await self.runner.cleanup()
        path = self.path
        if path is not None:
            try:
                if path.stat().st_ino == self._inode:  # a newer daemon's socket stays
                    path.unlink()
            except OSError:
                pass
            self.path = None

    async def _sync(self, request: web.Request) -> web.Response:
        body = await _body(request)
        names = body.get("feeds", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return _refused("feeds: expected a list of feed names")
        flags = {k: body.get(k) is True for k in ("force", "resync", "dry_run")}
        # Shielded: a client that goes away does not cut the cycle short.
        reply = await asyncio.shield(self.daemon.steer_sync(names, **flags))
        return _answer(reply)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(await self.daemon.status()), content_type="application/json"
        )

    async def _hold(self, request: web.Request) -> web.Response:
        return await self._holding(request, hold=True)

    async def _release(self, request: web.Request) -> web.Response:
        return await self._holding(request, hold=False)

    async def _holding(self, request: web.Request, *, hold: bool) -> web.Response:
        name = (await _body(request)).get("feed")
        if not isinstance(name, str):
            return _refused("feed: expected a feed name")
        return _answer(await self.daemon.steer_hold(name, hold=hold))

    async def _reload(self, _request: web.Request) -> web.Response:
        return _answer(await self.daemon.steer_reload())

    async def _forget(self, request: web.Request) -> web.Response:
        name = (await _body(request)).get("feed")
        if not isinstance(name, str):
            return _refused("feed: expected a feed name")
        # Shielded like a sync: the deletions it started are seen through.
        return _answer(await asyncio.shield(self.daemon.steer_forget(name)))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _answer(reply: Reply) -> web.Response:
    return web.Response(
        body=orjson.dumps({"output": reply.output, "error": reply.error, "exit": reply.exit}),
        content_type="application/json",
    )


def _refused(why: str) -> web.Response:
    return web.Response(status=400, body=orjson.dumps({"error": why, "exit": 2}))
