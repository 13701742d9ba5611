"""The daemon's control channel: its socket, its commands and the CLI's client of it.

How ``feedsync sync``, ``status``, ``hold``, ``release``, ``reload`` and
``forget`` steer a running ``feedsync run``.

While the daemon runs it holds the state database's writers' lock, so the CLI
cannot do the work itself; it asks the daemon instead, over a unix socket in
the database's private directory (``<state.path>.d/control.sock``, 0600 in a
0700 directory). Whoever may open that socket may write the state database
anyway, so the file system is the whole of the access control: no token, no
TCP port. Requests are small JSON bodies; a ``sync`` is answered when its
cycle is done, with the text and exit code the CLI would print itself. The
daemon's server of the socket is listener.py's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from feedsync.config import FeedConfig
from feedsync.errors import ControlError
from feedsync.store import statefile

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
