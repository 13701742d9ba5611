"""Downloading a feed's body to a local spool file.

A body is spooled to disk completely before anything parses it: a download
that fails or is cut short never reaches the store, memory stays bounded by
the chunk size, and an unchanged body (same validators or same SHA-256) costs
one round trip and no parsing. A compressed body is inflated once here, so a
truncated or oversized one fails the fetch; what its end looks like (``end``)
and whether the server framed it (``framed``) let a line source tell a body
cut short at a line boundary from a complete one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

from feedsync import logs
from feedsync._http import USER_AGENT, Failure, basic_auth, translate
from feedsync.body import inspect
from feedsync.config import FeedConfig, MispConfig, TaxiiConfig
from feedsync.errors import FetchError
from feedsync.model import Body, Validators
from feedsync.paths import component
from feedsync.progress import DOWNLOAD
from feedsync.redact import redact_url, url_secrets
from feedsync.sources.retry import retried, status_error
from feedsync.sources.transport import Client, Request, Response

__all__ = [
    "Request",
    "fetch",
    "redact_url",
    "request_for",
]

log = logs.get("feedsync.fetch")

CHUNK = 1 << 20


def is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def local_path(url: str) -> Path:
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    return Path(url)


async def fetch(request: Request, previous: Validators, spool: Path) -> Body | None:
    """Download ``request.url`` into ``spool``; None when it is unchanged, a
    ``same`` body (nothing to read) when only its HTTP validators changed."""
    if is_remote(request.url):
        body = await _download(request, previous, spool)
    else:
        body = await asyncio.to_thread(_local, request)
    if body is None:
        return None
    if body.size == 0:
        body.discard()
        raise FetchError(request.feed, f"empty body from {redact_url(request.url)}")
    if previous.sha256 is not None and body.validators.sha256 == previous.sha256:
        body.discard()
        new = body.validators
        if (new.etag, new.last_modified) == (previous.etag, previous.last_modified):
            return None
        return dataclasses.replace(body, same=True)
    try:
        tail = await asyncio.to_thread(inspect, body.path, request.feed, request.max_bytes)
    except BaseException:
        body.discard()
        raise
    return dataclasses.replace(body, end=tail.end, framed=body.framed or tail.compressed)


def _local(request: Request) -> Body:
    path = local_path(request.url)
    sha256 = hashlib.sha256()
    size = 0
    with translate(on_disk(request.feed, "read the feed")), path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha256.update(chunk)
            size += len(chunk)
            if size > request.max_bytes:
                raise FetchError(
                    request.feed, f"{path} is over the limit of {request.max_bytes} bytes"
                )
    return Body(path, size, Validators(sha256=sha256.hexdigest()), temporary=False)


async def _download(request: Request, previous: Validators, spool: Path) -> Body | None:
    headers = {}
    if previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    warn_unverified(request)
    async with Client(request) as client:
        return await retried(
            request.feed, request.retry, lambda: _get(client, request, headers, spool)
        )


async def _get(
    client: Client, request: Request, headers: dict[str, str], spool: Path
) -> Body | None:
    async with client.open(request.url, headers=headers) as response:
        if response.status == 304:
            return None
        if response.status != 200:
            message = f"HTTP {response.status} from {redact_url(request.url)}{response.via}"
            raise status_error(request.feed, response.status, message, response.headers)
        return await _spool(request, response, spool)


async def _spool(request: Request, response: Response, spool: Path) -> Body:
    await asyncio.to_thread(ensure_directory, spool, request.feed)
    handle, path = await asyncio.to_thread(_temporary, spool, request.feed)
    sha256 = hashlib.sha256()
    size = 0
    meter = DOWNLOAD.get()
    # Content-Length counts the bytes on the wire, not those a gzip body inflates to.
    encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    meter.enter("fetch", None if encoded else response.raw.content_length)
    try:
        async for chunk in response.chunks():
            size += len(chunk)
            meter(len(chunk))
            sha256.update(chunk)
            await asyncio.to_thread(handle.write, chunk)
        await asyncio.to_thread(handle.close)
    except BaseException:
        await asyncio.to_thread(_abandon, handle, path)
        raise
    validators = Validators(
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
        sha256=sha256.hexdigest(),
    )
    return Body(path, size, validators, temporary=True, framed=response.framed)


def warn_unverified(request: Request) -> None:
    """Every fetch of an https feed with ``verify_tls: false`` says so, whatever its type."""
    if request.verify_tls is False and request.url.startswith("https://"):
        log.warning("feed.tls_unverified", feed=request.feed, url=redact_url(request.url))


def ensure_directory(path: Path, feed: str, what: str = "spools downloads") -> None:
    """Create the directory ``path`` (the spool, a cache) if missing; FetchError
    naming it where it cannot be: mkdir's own "File exists" would not say that a
    regular file stands where the directory should be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FetchError(feed, f"{path} is not a directory; feedsync {what} there") from None
    except OSError as exc:
        raise FetchError(feed, f"cannot create {path}: {exc.strerror or exc}") from exc


def on_disk(feed: str, doing: str) -> Callable[[Failure], FetchError]:
    """``translate``'s ``errors`` for a feed's local file work: ``cannot DOING: PATH: why``."""
    return lambda failure: FetchError(feed, f"cannot {doing}: {failure.reason}")


def _temporary(spool: Path, feed: str) -> tuple[BinaryIO, Path]:
    fd, name = tempfile.mkstemp(prefix=f"{component(feed)}.", suffix=".body", dir=spool)
    return os.fdopen(fd, "wb"), Path(name)


def _abandon(handle: BinaryIO, path: Path) -> None:
    handle.close()
    path.unlink(missing_ok=True)


def request_for(feed: FeedConfig, url: str | None = None) -> Request:
    """The HTTP request settings of a feed: its headers, credentials and TLS.
    Userinfo in the URL becomes Basic authentication (unless ``username`` is
    set) and leaves the URL, so that it is never sent or shown as part of it."""
    target, user, password = _split_userinfo(url or feed.url)
    own = {name: secret.reveal() for name, secret in feed.headers}
    headers = {"User-Agent": USER_AGENT, **own}
    if feed.username is not None:
        password = feed.password.reveal() if feed.password else ""
        headers["Authorization"] = basic_auth(feed.username, password)
    elif user is not None:
        headers["Authorization"] = basic_auth(user, password or "")
    options = feed.options
    api_key = options.api_key if isinstance(options, MispConfig | TaxiiConfig) else None
    secrets = [s.reveal() for s in (feed.password, api_key) if s is not None]
    secrets += [*own.values(), *url_secrets(feed.url), *url_secrets(url or feed.url)]
    if feed.proxy.password is not None:
        secrets.append(feed.proxy.password.reveal())
    return Request(
        feed=feed.name,
        url=target,
        headers=headers,
        verify_tls=feed.verify_tls,
        timeout=feed.timeout,
        max_bytes=feed.max_body_bytes,
        private=frozenset({*own, "Authorization", "Cookie"}),
        secrets=tuple(secrets),
        proxy=feed.proxy,
        retry=feed.retry,
    )


def _split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    parts = urlsplit(url)
    if not is_remote(url) or "@" not in parts.netloc:
        return url, None, None
    host = parts.netloc.rpartition("@")[2]
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit(parts._replace(netloc=host)), user, password
