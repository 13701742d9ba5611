"""The ``misp`` source: MISP's REST API, ``POST {url}/attributes/restSearch``.

A full pull (the first, then every ``full_pull``) asks for the feed's filters
(default: ``to_ids`` attributes) and replaces the snapshot, which also catches
attributes deleted for good. In between, incremental pulls ask for what changed
since the last attribute ``timestamp`` seen (minus an overlap), deleted ones
included, and patch the snapshot: a soft deletion or a ``to_ids`` flip removes
the attribute. Pages go to a spool file as JSON lines, so memory holds a page.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from feedsync.config import FeedConfig, MispConfig
from feedsync.errors import FetchError, ParseError
from feedsync.model import Body, Invalid, LineParser, Record, Removal, Validators, pulled
from feedsync.paths import component
from feedsync.sources import transport
from feedsync.sources.fetch import ensure_directory, redact_url, request_for, warn_unverified
from feedsync.sources.misp import attribute_record, not_for_detection
from feedsync.sources.retry import retried, status_error

OVERLAP = 300
MAX_PAGES = 100_000


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the last applied pull ended: newest attribute timestamp, last full pull."""

    since: int = 0
    full_at: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        try:
            data = json.loads(text) if text else None
            return cls(int(data["since"]), float(data["full_at"])) if data else None
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps({"since": self.since, "full_at": self.full_at})


class MispSource:
    """Attributes of a MISP instance."""

    lines: LineParser | None = None  # records are attributes, not lines

    def __init__(self, feed: FeedConfig, clock: Any = time.time) -> None:
        self.feed = feed
        self.misp = feed.options_as(MispConfig)
        self.clock = clock
        self.endpoint = feed.url.rstrip("/") + "/attributes/restSearch"

    def _filters(self, cursor: Cursor | None, full: bool) -> dict[str, object]:
        filters: dict[str, object] = {"to_ids": True, **self.misp.filters}
        filters |= {"returnFormat": "json", "includeEventTags": True}
        if not full and cursor is not None:
            # to_ids flips and soft deletions must come back to be removed.
            filters.pop("to_ids", None)
            filters |= {"timestamp": max(0, cursor.since - OVERLAP), "deleted": [0, 1]}
        return filters

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        cursor = Cursor.parse(previous.cursor)
        now = self.clock()
        full = cursor is None or now - cursor.full_at >= self.misp.full_pull
        filters = self._filters(cursor, full)
        await asyncio.to_thread(ensure_directory, spool, self.feed.name)
        path = spool / f"{component(self.feed.name)}.misp.body"
        count, newest = await self._pull(filters, path)
        since = max(newest, cursor.since if cursor else 0)
        state = Cursor(since, now if full else (cursor.full_at if cursor else now))
        return pulled(path, count, state.dump(), full=full)

    async def _pull(self, filters: dict[str, object], path: Path) -> tuple[int, int]:
        request = self._request()
        warn_unverified(request)
        count = newest = size = 0
        seen_first: set[str] = set()
        out = await asyncio.to_thread(path.open, "wb")
        try:
            # transport.Client: each page bounded by max_body_bytes, decoded, and its
            # redirects followed hop by hop (the key stays with MISP's own origin).
            async with transport.Client(request) as client:
                for page in range(1, MAX_PAGES + 1):
                    body = {**filters, "page": page, "limit": self.misp.page_size}
                    attempt = partial(self._page, client, body, page)
                    attributes = await retried(self.feed.name, self.feed.retry, attempt)
                    if attributes and str(attributes[0].get("uuid")) in seen_first:
                        raise FetchError(
                            self.feed.name, f"MISP returned page {page} again (a loop)"
                        )
                    if attributes:
                        seen_first.add(str(attributes[0].get("uuid")))
                    lines = b"".join(orjson.dumps(a) + b"\n" for a in attributes)
                    await asyncio.to_thread(out.write, lines)
                    size += len(lines)
                    if size > self.feed.max_body_bytes:
                        raise FetchError(
                            self.feed.name,
                            f"MISP pages add up to over max_body_bytes"
                            f" ({self.feed.max_body_bytes})",
                        )
                    newest = max([newest, *(_int(a.get("timestamp")) for a in attributes)])
                    count += len(attributes)
                    if len(attributes) < self.misp.page_size:
                        return count, newest
        finally:
            await asyncio.to_thread(out.close)
        raise FetchError(self.feed.name, f"MISP kept paging past {MAX_PAGES} pages")

    def _request(self) -> transport.Request:
        """The feed's request settings with MISP's key: a credential, as private
        as the feed's own Authorization, and hidden from every message."""
        request = request_for(self.feed, self.endpoint)
        assert self.misp.api_key is not None
        key = self.misp.api_key.reveal()
        headers = {
            **request.headers,
            "Authorization": key,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        return replace(request, headers=headers, secrets=(*request.secrets, key))

    async def _page(
        self, client: transport.Client, body: dict[str, object], page: int
    ) -> list[Mapping[str, Any]]:
        where = redact_url(self.endpoint)
        async with client.open(self.endpoint, method="POST", data=orjson.dumps(body)) as response:
            if response.status == 403:
                raise FetchError(self.feed.name, f"MISP refused the API key (403) at {where}")
            if response.status != 200:
                message = (
                    f"HTTP {response.status} from {response.where}{response.via} (page {page})"
                )
                raise status_error(self.feed.name, response.status, message, response.headers)
            raw = await response.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(self.feed.name, f"page {page} from {where} is not JSON") from exc
        payload = data.get("response", data) if isinstance(data, dict) else None
        attributes = payload.get("Attribute") if isinstance(payload, dict) else None
        if not isinstance(attributes, list):
            raise ParseError(self.feed.name, f"page {page} from {where} holds no Attribute list")
        found: list[Mapping[str, Any]] = [a for a in attributes if isinstance(a, dict)]
        for number, attribute in enumerate(found, start=1):
            _keyed(attribute, self.feed.name, page, number)
        return found

    def records(self, body: Body) -> Iterator[Record | Invalid | Removal]:
        patch = body.mode == "patch"
        with body.path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                attribute = orjson.loads(line)
                event = attribute.get("Event")
                if not isinstance(event, Mapping):
                    event = {}
                context = tuple(
                    (k, str(event[f]))
                    for k, f in (("event_id", "id"), ("event_uuid", "uuid"), ("event_info", "info"))
                    if event.get(f) not in (None, "")
                )
                record = attribute_record(attribute, context, (), number)
                if record is None:
                    if patch:
                        why = not_for_detection(attribute)
                        yield Removal(str(attribute.get("uuid")), number, reason=why)
                    continue
                yield record


def _keyed(attribute: Mapping[str, Any], feed: str, page: int, number: int) -> None:
    # The uuid keys the snapshot, names what an incremental pull removes and
    # tells a repeated page: without it the pull would go wrong three ways.
    uuid = attribute.get("uuid")
    if isinstance(uuid, str) and uuid.strip():
        return
    event = attribute.get("Event")
    named = event.get("uuid") or event.get("id") if isinstance(event, Mapping) else None
    where = f"page {page}, attribute {number}" + (f" (event {named})" if named else "")
    raise ParseError(feed, f"MISP {where} has no uuid ({uuid!r}): attributes are keyed by it")


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
