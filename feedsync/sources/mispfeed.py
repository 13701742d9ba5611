"""The ``misp_feed`` source: a MISP feed directory, its manifest and its event cache.

A directory holds ``manifest.json`` plus one ``<uuid>.json`` per event, over
http(s), file:// or a path.

The manifest is fetched conditionally; an event is downloaded again only when
its manifest ``timestamp`` grew, otherwise its cached copy (under the state
directory) is read. Events gone from the manifest drop out of the snapshot,
so their indicators are deleted, subject to the shrink guard.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from feedsync._http import translate
from feedsync.body import open_body
from feedsync.config import FeedConfig
from feedsync.errors import FetchError, ParseError
from feedsync.model import Body, Invalid, LineParser, Record, Removal, Validators
from feedsync.paths import component
from feedsync.sources.fetch import ensure_directory, fetch, is_remote, on_disk, request_for
from feedsync.sources.misp import event_records

DOWNLOADS = 4
MAX_UUID = 64
_CACHED = re.compile(r"[^/\\.\0]+\.-?[0-9]+\.json")


class MispFeedSource:
    """A MISP feed directory."""

    lines: LineParser | None = None  # records are event attributes, not lines

    def __init__(self, feed: FeedConfig) -> None:
        self.feed = feed
        self.base = feed.url.rstrip("/")
        if self.base.endswith("manifest.json"):
            self.base = self.base[: -len("manifest.json")].rstrip("/")
        self.downloaded: list[str] = []

    def _url(self, name: str) -> str:
        if is_remote(self.base) or self.base.startswith("file://"):
            return f"{self.base}/{name}"
        return str(Path(self.base) / name)

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        manifest_body = await fetch(
            request_for(self.feed, self._url("manifest.json")), previous, spool
        )
        if manifest_body is None or manifest_body.same:
            return manifest_body  # the same manifest lists the same events
        try:
            manifest = await asyncio.to_thread(_read_manifest, manifest_body.path, self.feed.name)
        finally:
            manifest_body.discard()
        cache = spool.parent / "cache" / component(self.feed.name)
        # A local manifest is read in place, so nothing has created the spool yet.
        await asyncio.to_thread(_directories, self.feed.name, cache, spool)
        wanted = {uuid: cache / f"{uuid}.{stamp}.json" for uuid, stamp in manifest.items()}
        missing = [uuid for uuid, path in wanted.items() if not path.exists()]
        gate = asyncio.Semaphore(DOWNLOADS)
        await asyncio.gather(*(self._download(uuid, wanted[uuid], spool, gate) for uuid in missing))
        self.downloaded = sorted(missing)
        await asyncio.to_thread(_prune, cache, set(wanted.values()))
        listing = spool / f"{component(self.feed.name)}.events.body"
        text = "".join(f"{path}\n" for _uuid, path in sorted(wanted.items()))
        with translate(on_disk(self.feed.name, "list the cached events")):
            await asyncio.to_thread(listing.write_text, text)
        return Body(listing, len(text), manifest_body.validators, temporary=True)

    async def _download(
        self, uuid: str, target: Path, spool: Path, gate: asyncio.Semaphore
    ) -> None:
        async with gate:
            request = request_for(self.feed, self._url(f"{uuid}.json"))
            body = await fetch(request, Validators(), spool)
            if body is None:
                raise FetchError(self.feed.name, f"event {uuid}: no body")
            with translate(on_disk(self.feed.name, f"keep event {uuid} in the cache")):
                if body.temporary:
                    await asyncio.to_thread(os.replace, body.path, target)
                else:
                    await asyncio.to_thread(_copy, body.path, target)

    def records(self, body: Body) -> Iterator[Record | Invalid | Removal]:
        for number, line in enumerate(body.path.read_text().splitlines(), start=1):
            path = Path(line)
            try:
                with open_body(path, self.feed.name) as stream:
                    event = json.load(stream)
            except (OSError, ValueError) as exc:
                uuid = path.name.split(".")[0]
                raise ParseError(self.feed.name, f"event {uuid}: not a MISP event ({exc})") from exc
            if not isinstance(event, Mapping):
                raise ParseError(self.feed.name, f"event {path.name}: not a JSON object")
            yield from event_records(event, line=number)


def _read_manifest(path: Path, feed: str) -> dict[str, int]:
    try:
        with open_body(path, feed) as stream:
            manifest: Any = json.load(stream)
    except (OSError, ValueError) as exc:
        raise ParseError(feed, f"manifest.json is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ParseError(feed, "manifest.json is not a JSON object of events")
    events: dict[str, int] = {}
    for uuid, entry in manifest.items():
        stamp = entry.get("timestamp") if isinstance(entry, dict) else None
        try:
            events[_safe(uuid, feed)] = int(stamp) if stamp is not None else 0
        except (TypeError, ValueError) as exc:
            raise ParseError(feed, f"manifest.json: event {uuid}: bad timestamp {stamp!r}") from exc
    return events


def _safe(uuid: str, feed: str) -> str:
    # The uuid names a file: keep it from naming one outside the cache, or one
    # longer than a file system takes (a MISP uuid has 36 characters).
    if not uuid or len(uuid) > MAX_UUID or any(ch in uuid for ch in "/\\.\0"):
        raise ParseError(feed, f"manifest.json: {uuid[:80]!r} is not an event uuid")
    return uuid


def _directories(feed: str, cache: Path, spool: Path) -> None:
    ensure_directory(cache, feed, "caches MISP events")
    ensure_directory(spool, feed)


def _prune(cache: Path, keep: set[Path]) -> None:
    # Only names _read_manifest could have made (uuid.stamp.json): whatever else is
    # there was not put there by feedsync.
    for path in cache.glob("*.json"):
        if path not in keep and _CACHED.fullmatch(path.name):
            path.unlink(missing_ok=True)


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
