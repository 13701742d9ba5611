"""The ``taxii`` source: a TAXII 2.1 collection's indicators.

The feed URL is an API root, or a discovery URL whose default API root is
used. The collection is found by id or title. Objects are paged with
``match[type]=indicator`` and ``limit``, following ``next`` while ``more``;
a full pull (the first, then every ``full_pull``) replaces the snapshot, later
pulls ask for what was ``added_after`` the last ``X-TAXII-Date-Added-Last`` of
an applied pull and patch it. The newest ``modified`` of an indicator wins;
revoked or expired ones are removed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from feedsync import logs
from feedsync.config import FeedConfig
from feedsync.errors import FetchError, ParseError
from feedsync.fetch import Body, Validators, pulled, redact_url, request_for, ssl_context
from feedsync.model import Invalid, Record, Removal
from feedsync.redact import plain
from feedsync.stix import indicator_records

log = logs.get("feedsync.taxii")

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
class Cursor:
    added_after: str | None = None
    full_at: float = 0.0
    # Where the objects are and which TAXII version: an incremental pull goes
    # straight there, one round trip when nothing was added.
    objects: str | None = None
    version: str = "2.1"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        try:
            data = json.loads(text) if text else None
            if not data:
                return None
            return cls(
                data.get("added_after"),
                float(data["full_at"]),
                data.get("objects"),
                data.get("version", "2.1"),
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
            }
        )


class TaxiiSource:
    """Indicators of one TAXII 2.1 collection."""

    def __init__(self, feed: FeedConfig) -> None:
        self.feed = feed
        self.url = feed.url if feed.url.endswith("/") else feed.url + "/"
        self._session: aiohttp.ClientSession | None = None
        self._tls: Any = None
        self.version = "2.1"

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        cursor = Cursor.parse(previous.cursor)
        now = time.time()
        full = cursor is None or now - cursor.full_at >= self.feed.full_pull
        await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
        path = spool / f"{self.feed.name}.taxii.body"
        after = None if full or cursor is None else cursor.added_after
        request = request_for(self.feed, self.url)
        headers = {**request.headers, "Accept": MEDIA}
        if self.feed.api_key is not None and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.feed.api_key.reveal()}"
        timeout = aiohttp.ClientTimeout(
            total=None, connect=request.timeout, sock_read=request.timeout
        )
        tls = await ssl_context(request.verify_tls)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            self._session, self._tls = session, tls
            if not full and cursor is not None and cursor.objects:
                objects, self.version = cursor.objects, cursor.version
            else:
                root = await self._api_root()
                objects = f"{root}collections/{await self._collection(root)}/objects/"
            count, last = await self._pull(objects, after, path)
        added = last or (cursor.added_after if cursor else None)
        full_at = now if full else (cursor.full_at if cursor else now)
        state = Cursor(added, full_at, objects, self.version)
        return pulled(path, count, state.dump(), full=full)

    async def _get(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, Any]:
        where = redact_url(url)
        assert self._session is not None
        accept = {"Accept": MEDIA if self.version == "2.1" else MEDIA_20, **(headers or {})}
        try:
            async with self._session.get(
                url, params=params, headers=accept, ssl=self._tls
            ) as response:
                if response.status in (401, 403):
                    raise FetchError(
                        self.feed.name,
                        f"TAXII server refused the credentials ({response.status}) at {where}",
                    )
                if response.status in (400, 404, 410) and params and "next" in params:
                    raise ExpiredPage(
                        self.feed.name, f"TAXII next token expired ({response.status})"
                    )
                if response.status == 406:
                    raise NotAcceptable(
                        self.feed.name, f"TAXII server does not speak {accept['Accept']} (406)"
                    )
                if response.status not in (200, 206):
                    raise FetchError(self.feed.name, f"HTTP {response.status} from {where}")
                raw, headers = await response.read(), response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchError(
                self.feed.name, f"cannot fetch {where}: {plain(str(exc)) or type(exc).__name__}"
            ) from exc
        try:
            return orjson.loads(raw) if raw.strip() else {}, headers
        except orjson.JSONDecodeError as exc:
            raise ParseError(self.feed.name, f"{where} answered with something not JSON") from exc

    async def _api_root(self) -> str:
        try:
            data, _ = await self._get(self.url)
        except NotAcceptable:
            self.version = "2.0"
            data, _ = await self._get(self.url)
        if isinstance(data, dict) and isinstance(data.get("api_roots"), list):
            root = data.get("default") or (data["api_roots"] or [None])[0]
            if not isinstance(root, str):
                raise ParseError(self.feed.name, "the discovery document names no API root")
            return root if root.endswith("/") else root + "/"
        return self.url

    async def _collection(self, root: str) -> str:
        data, _ = await self._get(f"{root}collections/")
        wanted = self.feed.collection
        found = data.get("collections", []) if isinstance(data, dict) else []
        for item in found:
            if isinstance(item, dict) and wanted in (item.get("id"), item.get("title")):
                return str(item["id"])
        names = ", ".join(f"{c.get('title')} ({c.get('id')})" for c in found if isinstance(c, dict))
        raise FetchError(
            self.feed.name,
            f"no collection {wanted!r} at {redact_url(root)}; there are: {names or 'none'}",
        )

    async def _pull(self, url: str, after: str | None, path: Path) -> tuple[int, str | None]:
        """All pages; a ``next`` the server forgot restarts the pull once from ``after``."""
        try:
            return await self._pages(url, after, path)
        except ExpiredPage as exc:
            log.warning("taxii.restart", feed=self.feed.name, reason=exc.message)
            return await self._pages(url, after, path)

    async def _pages(self, url: str, after: str | None, path: Path) -> tuple[int, str | None]:
        if self.version == "2.0":
            return await self._ranges(url, after, path)
        params = {"match[type]": "indicator", "limit": str(PAGE)}
        if after:
            params["added_after"] = after
        count, last, size = 0, None, 0
        seen: set[tuple[str, str]] = set()
        out = await asyncio.to_thread(path.open, "wb")
        try:
            for _ in range(MAX_PAGES):
                data, headers = await self._get(url, params)
                page = data.get("objects", []) if isinstance(data, dict) else []
                lines = b"".join(orjson.dumps(o) + b"\n" for o in page if isinstance(o, dict))
                await asyncio.to_thread(out.write, lines)
                size += len(lines)
                if size > self.feed.max_body_bytes:
                    raise FetchError(
                        self.feed.name,
                        f"TAXII pages add up to over max_body_bytes ({self.feed.max_body_bytes})",
                    )
                count += len(page)
                last = headers.get("X-TAXII-Date-Added-Last") or last
                more, token = data.get("more"), data.get("next")
                if not page or not more or not token:
                    return count, last
                # Servers may keep one next token for a whole paging session (medallion
                # does): a loop is the same page again, not the same token.
                first = (str(page[0].get("id")), str(page[0].get("modified")))
                if first in seen:
                    raise FetchError(self.feed.name, f"TAXII pagination loops (next {token!r})")
                seen.add(first)
                params = {**params, "next": str(token)}
        finally:
            await asyncio.to_thread(out.close)
        raise FetchError(self.feed.name, f"TAXII kept paging past {MAX_PAGES} pages")

    async def _ranges(self, url: str, after: str | None, path: Path) -> tuple[int, str | None]:
        """TAXII 2.0 paging: ``Range: items a-b`` until ``Content-Range`` says all came."""
        params = {"match[type]": "indicator"}
        if after:
            params["added_after"] = after
        count, last, start = 0, None, 0
        out = await asyncio.to_thread(path.open, "wb")
        try:
            for _ in range(MAX_PAGES):
                headers = {"Range": f"items {start}-{start + PAGE - 1}", "Accept": STIX_20}
                data, answer = await self._get(url, params, headers)
                page = [o for o in data.get("objects", []) if isinstance(o, dict)]
                await asyncio.to_thread(out.write, b"".join(orjson.dumps(o) + b"\n" for o in page))
                count += len(page)
                last = answer.get("X-TAXII-Date-Added-Last") or last
                served = _RANGE.match(answer.get("Content-Range", ""))
                if not page or served is None:
                    return count, last
                end, total = int(served.group(2)), served.group(3)
                if end + 1 <= start or (total != "*" and end + 1 >= int(total)):
                    return count, last
                start = end + 1
        finally:
            await asyncio.to_thread(out.close)
        raise FetchError(self.feed.name, f"TAXII kept paging past {MAX_PAGES} pages")

    def records(self, body: Body) -> Iterator[Record | Invalid | Removal]:
        patch = body.mode == "patch"
        now = dt.datetime.now(dt.UTC)
        newest = self._newest(body.path)
        with body.path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                obj = orjson.loads(line)
                version = str(obj.get("modified", ""))
                if obj.get("type") != "indicator" or version != newest.get(obj.get("id")):
                    continue
                newest.pop(obj.get("id"), None)
                yield from indicator_records(obj, line=number, now=now, patch=patch)

    @staticmethod
    def _newest(path: Path) -> dict[str, str]:
        # The newest version of each indicator wins, whatever order the pages came in.
        newest: dict[str, str] = {}
        with path.open("rb") as lines:
            for line in lines:
                obj = orjson.loads(line)
                stix_id, modified = obj.get("id"), str(obj.get("modified", ""))
                if stix_id and modified >= newest.get(stix_id, ""):
                    newest[stix_id] = modified
        return newest
