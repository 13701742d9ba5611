"""The daemon's control channel: its socket, its commands and the CLI's client of it.

How ``feedsync sync``, ``status``, ``hold``, ``release``, ``reload`` and
``forget`` steer a running ``feedsync run``.

While the daemon runs it holds the state database's writers' lock, so the CLI
cannot do the work itself; it asks the daemon instead, over a unix socket in
the database's private directory (``<state.path>.d/control.sock``, 0600 in a
0700 directory). Whoever may open that socket may write the state database
anyway, so the file system is the whole of the access control: no token, no
TCP port. Requests are small JSON bodies; a ``sync`` is answered when its
cycle is done, with the text and exit code the CLI would print itself.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import orjson
from aiohttp import web

from feedsync import logs
from feedsync.config import FeedConfig
from feedsync.errors import ControlError
from feedsync.store import statefile

log = logs.get("feedsync.control")

SOCKET_NAME = "control.sock"
CONNECT_TIMEOUT = 5.0
# A sync waits for its cycle (a first sync of a large feed runs for minutes);
# the other commands are answered from memory or one short store call.
ANSWER_TIMEOUT = 60.0

Command = Literal["sync", "status", "hold", "release", "reload", "forget"]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the CLI prints for a command the daemon ran, and its exit code."""

    output: str = ""
    error: str = ""
    exit: int = 0


class Steered(Protocol):
    """What the channel asks of the daemon."""

    async def steer_sync(
        self, names: Sequence[str], *, force: bool, resync: bool, dry_run: bool
    ) -> Reply: ...

    async def status(self) -> dict[str, Any]: ...

    async def steer_hold(self, name: str, *, hold: bool) -> Reply: ...

    async def steer_reload(self) -> Reply: ...

    async def steer_forget(self, name: str) -> Reply: ...


def runnable(
    feeds: Sequence[FeedConfig], names: Sequence[str], held: Mapping[str, float]
) -> list[str]:
    """The feeds a ``sync`` runs: the named ones, held or not (naming a feed is
    the operator's explicit word), else every enabled feed not on hold."""
    if names:
        return list(dict.fromkeys(names))
    return [f.name for f in feeds if f.enabled and f.name not in held]


def socket_path(state_path: str) -> Path:
    return statefile.private_dir(state_path) / SOCKET_NAME


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


def ask(
    state_path: str,
    command: Command,
    body: Mapping[str, object] | None = None,
    *,
    timeout: float | None = ANSWER_TIMEOUT,
) -> Any | None:
    """The daemon's answer to ``command``, or None when no daemon listens (no
    socket, or one a killed daemon left). For the CLI, which has no loop running."""
    return asyncio.run(_ask(state_path, command, body, timeout))


async def _ask(
    state_path: str, command: Command, body: Mapping[str, object] | None, limit: float | None
) -> Any | None:
    path = socket_path(state_path)
    method = "GET" if command == "status" else "POST"
    limits = aiohttp.ClientTimeout(total=limit, sock_connect=CONNECT_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=os.fspath(path)), timeout=limits
            ) as session,
            session.request(
                method, f"http://feedsync/{command}", data=orjson.dumps(body or {})
            ) as response,
        ):
            raw = await response.read()
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, FileNotFoundError | ConnectionRefusedError):
            return None
        raise ControlError(f"cannot reach the daemon at {path}: {exc.os_error}") from exc
    except TimeoutError as exc:
        waited = limit or CONNECT_TIMEOUT
        raise ControlError(f"the daemon at {path} did not answer within {waited:g} s") from exc
    except aiohttp.ClientError as exc:
        raise ControlError(f"the daemon at {path} broke off: {type(exc).__name__}") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ControlError(f"the daemon at {path} answered with something not JSON") from exc


def reply_of(answer: Mapping[str, Any]) -> Reply:
    """A command's answer as the CLI prints it."""
    return Reply(
        output=str(answer.get("output") or ""),
        error=str(answer.get("error") or ""),
        exit=int(answer.get("exit", 1)),
    )
