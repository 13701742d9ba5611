"""A small forwarding HTTP proxy on 127.0.0.1 for the tests.

It serves absolute-URI requests (``GET http://host:port/path``) for http
targets and ``CONNECT host:port`` tunnels for https ones, asks for Basic
credentials when given some (407 otherwise), can refuse every request with a
fixed status, and records each request line and its headers. Like a real
proxy it consumes ``Proxy-Authorization``: an origin server never sees it from
here, so a test that finds it there found feedsync sending it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset({"proxy-authorization", "proxy-connection", "connection", "keep-alive"})


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]


class ForwardProxy:
    def __init__(self, credentials: tuple[str, str] | None = None, refuse: int | None = None):
        self.credentials = credentials
        self.refuse = refuse
        self.seen: list[Seen] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def targets(self) -> list[str]:
        return [f"{seen.method} {seen.target}" for seen in self.seen]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
        self.seen.append(Seen(method, target, headers))
        if self.credentials is not None and not self._authorized(headers):
            await _answer(writer, 407, "Proxy Authentication Required", 'Basic realm="test"')
            return
        if self.refuse is not None:
            await _answer(writer, self.refuse, "Refused")
            return
        if method == "CONNECT":
            await self._tunnel(target, writer, reader)
        else:
            await self._forward(method, target, headers, reader, writer)

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.credentials is not None
        user, password = self.credentials
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        given = {k.lower(): v for k, v in headers.items()}.get("proxy-authorization")
        return given == f"Basic {token}"

    async def _tunnel(
        self, target: str, writer: asyncio.StreamWriter, reader: asyncio.StreamReader
    ) -> None:
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = urlsplit(target)
        assert url.scheme == "http" and url.hostname, f"not an absolute URI: {target}"
        length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        path = url.path or "/"
        if url.query:
            path += f"?{url.query}"
        kept = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        out = f"{method} {path} HTTP/1.1\r\n"
        out += "".join(f"{k}: {v}\r\n" for k, v in kept.items()) + "Connection: close\r\n\r\n"
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        try:
            up_writer.write(out.encode("latin-1") + body)
            await up_writer.drain()
            await _pipe(up_reader, writer)
        finally:
            up_writer.close()


async def _answer(
    writer: asyncio.StreamWriter, status: int, reason: str, challenge: str | None = None
) -> None:
    extra = f"Proxy-Authenticate: {challenge}\r\n" if challenge else ""
    head = f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n"
    writer.write(f"{head}\r\n".encode())
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
