"""Downloading a feed's body to a local spool file.

A body is spooled to disk completely before anything parses it: a download
that fails or is cut short never reaches the store, memory stays bounded by
the chunk size, and an unchanged body (same validators or same SHA-256) costs
one round trip and no parsing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from feedsync import __version__, logs
from feedsync.config import FeedConfig
from feedsync.errors import FetchError

log = logs.get("feedsync.fetch")

CHUNK = 1 << 20
USER_AGENT = f"feedsync/{__version__}"


@dataclass(frozen=True, slots=True)
class Validators:
    """What identifies the last body applied: HTTP validators and its SHA-256."""

    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None
    cursor: str | None = None  # an incremental source's position (JSON), kept with the snapshot


@dataclass(frozen=True, slots=True)
class Body:
    """A completely downloaded body; ``temporary`` bodies are deleted after use."""

    path: Path
    size: int
    validators: Validators
    temporary: bool
    # "replace": the records are the whole feed; "patch": only what changed since
    # the cursor, with Removal items for rows that went away.
    mode: str = "replace"

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Request:
    """How to fetch one feed URL."""

    feed: str
    url: str
    headers: Mapping[str, str]
    verify_tls: bool | str
    timeout: float
    max_bytes: int


def pulled(path: Path, count: int, cursor: str, *, full: bool) -> Body | None:
    """The body of an API pull spooled to ``path``: a full pull replaces the
    snapshot, an incremental one patches it, and an empty incremental pull is
    no change at all."""
    if not full and count == 0:
        path.unlink(missing_ok=True)
        return None
    mode = "replace" if full else "patch"
    return Body(path, count, Validators(cursor=cursor), temporary=True, mode=mode)


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP Basic authentication."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def redact_url(url: str) -> str:
    """The URL without userinfo and query, which may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def local_path(url: str) -> Path:
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    return Path(url)


async def ssl_context(verify_tls: bool | str) -> ssl.SSLContext | bool:
    """The TLS setting for aiohttp; loading a CA bundle reads files, so off the loop."""
    if verify_tls is False:
        return False
    cafile = verify_tls if isinstance(verify_tls, str) else None
    return await asyncio.to_thread(ssl.create_default_context, cafile=cafile)


async def fetch(request: Request, previous: Validators, spool: Path) -> Body | None:
    """Download ``request.url`` into ``spool``; None when it is unchanged."""
    if is_remote(request.url):
        body = await _download(request, previous, spool)
    else:
        body = await asyncio.to_thread(_local, request, previous)
    if body is None:
        return None
    if body.size == 0:
        body.discard()
        raise FetchError(request.feed, f"empty body from {redact_url(request.url)}")
    if previous.sha256 is not None and body.validators.sha256 == previous.sha256:
        body.discard()
        return None
    return body


def _local(request: Request, previous: Validators) -> Body | None:
    path = local_path(request.url)
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise FetchError(request.feed, f"cannot read {path}: {exc.strerror or exc}") from exc
    return Body(path, size, Validators(sha256=digest.hexdigest()), temporary=False)


async def _download(request: Request, previous: Validators, spool: Path) -> Body | None:
    headers = {"User-Agent": USER_AGENT, **request.headers}
    if previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    timeout = aiohttp.ClientTimeout(total=None, connect=request.timeout, sock_read=request.timeout)
    where = redact_url(request.url)
    if request.verify_tls is False and request.url.startswith("https://"):
        log.warning("feed.tls_unverified", feed=request.feed, url=where)
    tls = await ssl_context(request.verify_tls)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(request.url, headers=headers, ssl=tls) as response,
        ):
            if response.status == 304:
                return None
            if response.status != 200:
                raise FetchError(request.feed, f"HTTP {response.status} from {where}")
            return await _spool(request, response, spool)
    except aiohttp.ClientPayloadError as exc:
        raise FetchError(request.feed, f"body from {where} was cut short: {exc}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise FetchError(request.feed, f"cannot fetch {where}: {reason}") from exc


async def _spool(request: Request, response: aiohttp.ClientResponse, spool: Path) -> Body:
    declared = response.content_length
    if declared is not None and declared > request.max_bytes:
        raise FetchError(
            request.feed,
            f"body of {declared} bytes is over the limit of {request.max_bytes} bytes",
        )
    await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
    handle, path = await asyncio.to_thread(_temporary, spool, request.feed)
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in response.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > request.max_bytes:
                raise FetchError(
                    request.feed, f"body is over the limit of {request.max_bytes} bytes"
                )
            digest.update(chunk)
            await asyncio.to_thread(handle.write, chunk)
        await asyncio.to_thread(handle.close)
    except BaseException:
        await asyncio.to_thread(_abandon, handle, path)
        raise
    validators = Validators(
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
        sha256=digest.hexdigest(),
    )
    return Body(path, size, validators, temporary=True)


def _temporary(spool: Path, feed: str) -> tuple[BinaryIO, Path]:
    fd, name = tempfile.mkstemp(prefix=f"{feed}.", suffix=".body", dir=spool)
    return os.fdopen(fd, "wb"), Path(name)


def _abandon(handle: BinaryIO, path: Path) -> None:
    handle.close()
    path.unlink(missing_ok=True)


def request_for(feed: FeedConfig, url: str | None = None) -> Request:
    """The HTTP request settings of a feed: its headers, credentials and TLS."""
    headers = {"User-Agent": USER_AGENT}
    headers.update((name, secret.reveal()) for name, secret in feed.headers)
    if feed.username is not None:
        password = feed.password.reveal() if feed.password else ""
        headers["Authorization"] = basic_auth(feed.username, password)
    return Request(
        feed=feed.name,
        url=url or feed.url,
        headers=headers,
        verify_tls=feed.verify_tls,
        timeout=feed.timeout,
        max_bytes=feed.max_body_bytes,
    )
