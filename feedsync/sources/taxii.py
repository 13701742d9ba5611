"""The ``taxii`` source: a TAXII 2.1 collection's indicators.

The feed URL is an API root, or a discovery URL whose default API root is
used. The collection is found by id or title. Objects are paged with
``match[type]=indicator`` and ``limit``, following ``next`` while ``more``
(``added_after`` the page's ``X-TAXII-Date-Added-Last`` when ``more`` comes
without ``next``); TAXII 2.0 pages with ``Range`` until ``Content-Range``
reaches its total. A pull that cannot show it reached that end fails, so a
truncated set never replaces or patches the snapshot. A full pull (the first,
then every ``full_pull``) replaces the snapshot, later pulls ask for what was
``added_after`` the last ``X-TAXII-Date-Added-Last`` of an applied pull and
patch it. The newest ``modified`` of an indicator wins;
revoked or expired ones are removed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urljoin, urlsplit, urlunsplit

import orjson

from feedsync import logs
from feedsync.config import FeedConfig, TaxiiConfig
from feedsync.errors import FetchError, ParseError
from feedsync.model import Body, Invalid, LineParser, Record, Removal, Validators, pulled
from feedsync.paths import component
from feedsync.sources import taxii_paging as paging
from feedsync.sources import transport
from feedsync.sources.fetch import (
    Request,
    ensure_directory,
    redact_url,
    request_for,
    warn_unverified,
)
from feedsync.sources.retry import retried, status_error
from feedsync.sources.stix import indicator_records

log = logs.get("feedsync.taxii")

TaxiiVersion = Literal["2.0", "2.1"]
VERSIONS: tuple[TaxiiVersion, ...] = ("2.0", "2.1")
MEDIA = "application/taxii+json;version=2.1"
# TAXII 2.0: its own media types; objects come as a STIX bundle paged with Range.
MEDIA_20 = "application/vnd.oasis.taxii+json; version=2.0"
STIX_20 = "application/vnd.oasis.stix+json; version=2.0"
_RANGE = re.compile(r"items\s+(\d+)-(\d+)/(\d+|\*)")
PAGE = 1000
MAX_PAGES = 100_000


class ExpiredPage(FetchError):
    """The server no longer knows a ``next`` token (it expired)."""


class NotAcceptable(FetchError):
    """The server refused the TAXII version asked for (406)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A TAXII URL without its query, and the query each request to it carries.

    A feed URL's query (``?token=...``) is how some servers authenticate: it
    belongs to the API root, not to the end of its path, so paths are joined
    to ``base`` and the query goes along on every request to the same origin
    (never to another host a discovery document names)."""

    base: str
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, url: str, inherited: Endpoint | None = None) -> Endpoint:
        parts = urlsplit(url if inherited is None else urljoin(inherited.base, url))
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        base = urlunsplit(parts._replace(path=path, query="", fragment=""))
        query = tuple(parse_qsl(parts.query, keep_blank_values=True))
        if not query and inherited is not None and _origin(base) == _origin(inherited.base):
            query = inherited.query
        return cls(base, query)

    def join(self, path: str) -> Endpoint:
        return Endpoint(urljoin(self.base, path), self.query)

    def params(self, own: Mapping[str, str] | None) -> list[tuple[str, str]]:
        """The request's parameters after the endpoint's; the request's win."""
        own = own or {}
        return [(k, v) for k, v in self.query if k not in own] + list(own.items())


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@dataclass(frozen=True, slots=True)
class Cursor:
    added_after: str | None = None
    full_at: float = 0.0
    # Where the objects are and which TAXII version: an incremental pull goes
    # straight there, one round trip when nothing was added.
    objects: str | None = None
    version: TaxiiVersion = "2.1"
    # The configured API root and collection the objects were found from: when
    # either changes, ``objects`` points at the old collection.
    source: tuple[str, str] | None = None

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        try:
            data = json.loads(text) if text else None
            if not data:
                return None
            source = data.get("source")
            version = data.get("version", "2.1")
            if version not in VERSIONS:
                return None  # not a cursor this feedsync wrote: start with a full pull
            return cls(
                data.get("added_after"),
                float(data["full_at"]),
                data.get("objects"),
                version,
                (str(source[0]), str(source[1])) if source and len(source) == 2 else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def dump(self) -> str:
        return json.dumps(
            {
                "added_after": self.added_after,
                "full_at": self.full_at,
                "objects": self.objects,
                "version": self.version,
                "source": self.source,
            }
        )


class TaxiiSource:
    """Indicators of one TAXII 2.1 collection."""

    lines: LineParser | None = None  # records are STIX objects, not lines

    def __init__(self, feed: FeedConfig) -> None:
        self.feed = feed
        self.taxii = feed.options_as(TaxiiConfig)
        self._request: Request = request_for(feed)
        # Userinfo has left the request's URL for its Authorization header.
        self.url = Endpoint.of(self._request.url)
        self._client: transport.Client | None = None
        self.version: TaxiiVersion = "2.1"

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        cursor = Cursor.parse(previous.cursor)
        now = time.time()
        source = (self.url.base, self.taxii.collection or "")
        if cursor is not None and cursor.source != source:
            # Another collection (or a cursor from before sources were kept): the
            # cached objects URL and added_after belong to the old one.
            log.info("taxii.source_changed", feed=self.feed.name, full_pull=True)
            cursor = None
        full = cursor is None or now - cursor.full_at >= self.taxii.full_pull
        await asyncio.to_thread(ensure_directory, spool, self.feed.name)
        path = spool / f"{component(self.feed.name)}.taxii.body"
        after = None if full or cursor is None else cursor.added_after
        request = self._request
        headers = {**request.headers, "Accept": MEDIA}
        if self.taxii.api_key is not None and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.taxii.api_key.reveal()}"
        warn_unverified(request)
        # transport.Client: each page bounded by max_body_bytes, decoded, and its
        # redirects followed hop by hop (the credentials stay with the server's origin).
        authorized = replace(
            request, headers=headers, secrets=(*request.secrets, *headers.values())
        )
        async with transport.Client(authorized) as client:
            self._client = client
            if not full and cursor is not None and cursor.objects:
                objects, self.version = Endpoint.of(cursor.objects, self.url), cursor.version
            else:
                root = await self._api_root()
                # An id is a path segment: a "/", "?" or "#" in it must not end it.
                found = quote(await self._collection(root), safe="")
                objects = root.join(f"collections/{found}/objects/")
            count, last = await self._pull(objects, after, path)
        added = last or (cursor.added_after if cursor else None)
        full_at = now if full else (cursor.full_at if cursor else now)
        # The base only: the query may hold a token, and comes from the config.
        state = Cursor(added, full_at, objects.base, self.version, source)
        return pulled(path, count, state.dump(), full=full)

    async def _get(
        self,
        url: Endpoint,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, Any, int]:
        attempt = partial(self._get_once, url, params, headers)
        return await retried(self.feed.name, self.feed.retry, attempt)

    async def _get_once(
        self,
        url: Endpoint,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, Any, int]:
        assert self._client is not None
        accept = {"Accept": MEDIA if self.version == "2.1" else MEDIA_20, **(headers or {})}
        async with self._client.open(
            url.base, params=url.params(params), headers=accept
        ) as response:
            where, status = response.where, response.status
            if status in (401, 403):
                raise FetchError(
                    self.feed.name, f"TAXII server refused the credentials ({status}) at {where}"
                )
            if status in (400, 404, 410) and params and "next" in params:
                raise ExpiredPage(self.feed.name, f"TAXII next token expired ({status})")
            if status == 406:
                raise NotAcceptable(
                    self.feed.name, f"TAXII server does not speak {accept['Accept']} (406)"
                )
            if status not in (200, 206):
                message = f"HTTP {status} from {where}{response.via}"
                raise status_error(self.feed.name, status, message, response.headers)
            raw, headers = await response.read(), response.headers
        try:
            return orjson.loads(raw) if raw.strip() else {}, headers, status
        except orjson.JSONDecodeError as exc:
            raise ParseError(self.feed.name, f"{where} answered with something not JSON") from exc

    async def _api_root(self) -> Endpoint:
        try:
            data, _, _ = await self._get(self.url)
        except NotAcceptable:
            self.version = "2.0"
            data, _, _ = await self._get(self.url)
        if isinstance(data, dict) and isinstance(data.get("api_roots"), list):
            root = data.get("default") or (data["api_roots"] or [None])[0]
            if not isinstance(root, str):
                raise ParseError(self.feed.name, "the discovery document names no API root")
            return Endpoint.of(root, self.url)
        return self.url

    async def _collection(self, root: Endpoint) -> str:
        data, _, _ = await self._get(root.join("collections/"))
        wanted = self.taxii.collection
        found = data.get("collections", []) if isinstance(data, dict) else []
        for item in found:
            if isinstance(item, dict) and wanted in (item.get("id"), item.get("title")):
                return str(item["id"])
        names = ", ".join(f"{c.get('title')} ({c.get('id')})" for c in found if isinstance(c, dict))
        raise FetchError(
            self.feed.name,
            f"no collection {wanted!r} at {redact_url(root.base)}; there are: {names or 'none'}",
        )

    async def _pull(self, url: Endpoint, after: str | None, path: Path) -> tuple[int, str | None]:
        """All pages; a ``next`` the server forgot restarts the pull once from ``after``."""
        try:
            return await self._pages(url, after, path)
        except ExpiredPage as exc:
            log.warning("taxii.restart", feed=self.feed.name, reason=exc.message)
            return await self._pages(url, after, path)

    async def _pages(self, url: Endpoint, after: str | None, path: Path) -> tuple[int, str | None]:
        if self.version == "2.0":
            return await self._ranges(url, after, path)
        params = {"match[type]": "indicator", "limit": str(PAGE)}
        if after:
            params["added_after"] = after
        count, last, size = 0, None, 0
        seen: set[tuple[str, str]] = set()
        out = await asyncio.to_thread(path.open, "wb")
        try:
            for number in range(1, MAX_PAGES + 1):
                data, headers, _status = await self._get(url, params)
                if not isinstance(data, dict) or not isinstance(data.get("objects", []), list):
                    raise ParseError(self.feed.name, f"TAXII page {number} is not a TAXII envelope")
                page = [o for o in data.get("objects", []) if isinstance(o, dict)]
                lines = b"".join(orjson.dumps(o) + b"\n" for o in page)
                await asyncio.to_thread(out.write, lines)
                size += len(lines)
                self._bounded(size)
                count += len(page)
                last = headers.get("X-TAXII-Date-Added-Last") or last
                if not paging.more(data, self.feed.name, number):
                    return count, last
                params = paging.onwards(
                    self.feed.name, params, data, headers, number=number, page=page, seen=seen
                )
        finally:
            await asyncio.to_thread(out.close)
        raise FetchError(self.feed.name, f"TAXII kept paging past {MAX_PAGES} pages")

    async def _ranges(self, url: Endpoint, after: str | None, path: Path) -> tuple[int, str | None]:
        """TAXII 2.0 paging: ``Range: items a-b`` until ``Content-Range`` says all came."""
        params = {"match[type]": "indicator"}
        if after:
            params["added_after"] = after
        count, last, start, size = 0, None, 0, 0
        out = await asyncio.to_thread(path.open, "wb")
        try:
            for _ in range(MAX_PAGES):
                headers = {"Range": f"items {start}-{start + PAGE - 1}", "Accept": STIX_20}
                data, answer, status = await self._get(url, params, headers)
                raw = data.get("objects", []) if isinstance(data, dict) else None
                if not isinstance(raw, list):
                    raise ParseError(
                        self.feed.name, f"TAXII answer at item {start} is not a bundle"
                    )
                page = [o for o in raw if isinstance(o, dict)]
                lines = b"".join(orjson.dumps(o) + b"\n" for o in page)
                await asyncio.to_thread(out.write, lines)
                size += len(lines)
                self._bounded(size)
                count += len(page)
                last = answer.get("X-TAXII-Date-Added-Last") or last
                served = _RANGE.match(answer.get("Content-Range", ""))
                if served is None:
                    paging.unranged(self.feed.name, status, start)
                    return count, last  # the whole collection in one answer
                end = int(served[2])
                if paging.range_ends(
                    self.feed.name, start, (int(served[1]), end, served[3]), len(raw)
                ):
                    return count, last
                start = end + 1
        finally:
            await asyncio.to_thread(out.close)
        raise FetchError(self.feed.name, f"TAXII kept paging past {MAX_PAGES} pages")

    def _bounded(self, size: int) -> None:
        if size > self.feed.max_body_bytes:
            raise FetchError(
                self.feed.name,
                f"TAXII pages add up to over max_body_bytes ({self.feed.max_body_bytes})",
            )

    def records(self, body: Body) -> Iterator[Record | Invalid | Removal]:
        patch = body.mode == "patch"
        now = dt.datetime.now(dt.UTC)
        newest = self._newest(body.path)
        with body.path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                obj = orjson.loads(line)
                stix_id, version = obj.get("id"), str(obj.get("modified", ""))
                if obj.get("type") != "indicator":
                    continue
                if not isinstance(stix_id, str) or not stix_id:
                    yield Invalid(number, str(obj.get("pattern", ""))[:200], "no_id")
                    continue
                if version != newest.get(stix_id):
                    continue
                newest.pop(stix_id, None)
                yield from indicator_records(obj, line=number, now=now, patch=patch)

    @staticmethod
    def _newest(path: Path) -> dict[str, str]:
        # The newest version of each indicator wins, whatever order the pages came in.
        newest: dict[str, str] = {}
        with path.open("rb") as lines:
            for line in lines:
                obj = orjson.loads(line)
                stix_id, modified = obj.get("id"), str(obj.get("modified", ""))
                if isinstance(stix_id, str) and modified >= newest.get(stix_id, ""):
                    newest[stix_id] = modified
        return newest
