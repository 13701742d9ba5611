"""TAXII paging that does not reach its documented end fails the feed and leaves its
supplier as it was; the bad-input corpus of TAXII servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import ConfigFactory
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.store import Store

TOTAL = 30
STEP = 10
MEDIA_21 = "application/taxii+json;version=2.1"


def indicator(n: int) -> dict[str, object]:
    stamp = f"2026-01-01T00:00:{n:02d}.000Z"
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
        "created": stamp,
        "modified": stamp,
        "pattern": f"[domain-name:value = 'host{n}.example']",
        "pattern_type": "stix",
        "valid_from": stamp,
    }


OBJECTS = [indicator(n) for n in range(TOTAL)]
HOSTS = {f"host{n}.example" for n in range(TOTAL)}
Page = Callable[[web.Request, int], web.Response]


def added_last(page: list[dict[str, object]]) -> dict[str, str]:
    return {"X-TAXII-Date-Added-Last": str(page[-1]["modified"])} if page else {}


def good_21(request: web.Request, start: int) -> web.Response:
    """Pages of ten, each naming the next by its offset."""
    page = OBJECTS[start : start + STEP]
    more = start + STEP < TOTAL
    envelope: dict[str, object] = {"more": more, "objects": page}
    if more:
        envelope["next"] = str(start + STEP)
    return web.json_response(envelope, headers=added_last(page))


def range_20(request: web.Request, start: int) -> web.Response:
    """TAXII 2.0: ten items per 206 answer, as Content-Range says."""
    page = OBJECTS[start : start + STEP]
    bundle = {"type": "bundle", "id": "bundle--1", "spec_version": "2.0", "objects": page}
    served = f"items {start}-{start + len(page) - 1}/{TOTAL}"
    return web.json_response(bundle, status=206, headers={"Content-Range": served})


def start_of(request: web.Request) -> int:
    if "Range" in request.headers:
        return int(request.headers["Range"].split()[1].split("-")[0])
    if "next" in request.query:
        return int(request.query["next"])
    after = request.query.get("added_after")
    return sum(1 for o in OBJECTS if after is not None and str(o["modified"]) <= after)


class Server:
    """A TAXII server at /api1/ whose objects endpoint answers with ``page``; the
    first page asked for is offset 0, later ones as ``next``, ``added_after`` or
    ``Range`` say."""

    def __init__(self, version: str = "2.1") -> None:
        self.version = version
        self.page: Page = good_21 if version == "2.1" else range_20
        self.requests: list[web.Request] = []
        app = web.Application()
        app.router.add_get("/api1/", self.root)
        app.router.add_get("/api1/collections/", self.collections)
        app.router.add_get("/api1/collections/c1/objects/", self.objects)
        self.runner = web.AppRunner(app)
        self.url = ""

    async def root(self, request: web.Request) -> web.Response:
        if self.version == "2.0" and "version=2.0" not in request.headers.get("Accept", ""):
            return web.json_response({"title": "2.0 only"}, status=406)
        return web.json_response({"title": "fake", "versions": [MEDIA_21]})

    async def collections(self, _request: web.Request) -> web.Response:
        return web.json_response({"collections": [{"id": "c1", "title": "only", "can_read": True}]})

    async def objects(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        return self.page(request, start_of(request))

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/api1/"


@pytest.fixture
async def taxii() -> AsyncIterator[Callable[[str], Server]]:
    servers: list[Server] = []

    def make(version: str) -> Server:
        server = Server(version)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.runner.cleanup()


def taxii_feed(url: str) -> str:
    # Every pull is a full pull, whose truncated set would replace the snapshot;
    # a ratio of 1 keeps the shrink guard from hiding an applied truncation.
    return (
        f"- {{name: vx, type: taxii, url: '{url}', collection: only, supplier: VX,"
        " full_pull: 0.001, max_delete_ratio: 1.0}\n"
    )


async def synced(
    server: Server,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> tuple[Config, Store]:
    await server.start()
    loaded = make_config(emulator.url, taxii_feed(server.url), "VX: {confidence: 50}\n")
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    assert emulator.indicators("VX").keys() == HOSTS
    return loaded, store


# --- bad page sequences -----------------------------------------------------------


def more_without_next(request: web.Request, start: int) -> web.Response:
    page = OBJECTS[start : start + STEP]
    return web.json_response({"more": True, "objects": page})


def next_repeated_on_empty_pages(request: web.Request, start: int) -> web.Response:
    if "next" not in request.query:
        return good_21(request, start)
    return web.json_response({"more": True, "next": request.query["next"], "objects": []})


def added_last_stands_still(request: web.Request, start: int) -> web.Response:
    return web.json_response(
        {"more": True, "objects": []}, headers={"X-TAXII-Date-Added-Last": "2026-01-01T00:00:00Z"}
    )


def more_is_text(request: web.Request, start: int) -> web.Response:
    return web.json_response({"more": "false", "next": "10", "objects": OBJECTS[:STEP]})


def envelope_is_a_list(request: web.Request, start: int) -> web.Response:
    return web.json_response([o["id"] for o in OBJECTS])


def partial_without_range(request: web.Request, start: int) -> web.Response:
    if start == 0:
        return range_20(request, start)
    bundle = {"type": "bundle", "objects": OBJECTS[start : start + STEP]}
    return web.json_response(bundle, status=206)


def range_page_short(request: web.Request, start: int) -> web.Response:
    if start == 0:
        return range_20(request, start)
    bundle = {"type": "bundle", "objects": OBJECTS[start : start + 5]}
    served = f"items {start}-{start + STEP - 1}/{TOTAL}"
    return web.json_response(bundle, status=206, headers={"Content-Range": served})


def range_empty_before_total(request: web.Request, start: int) -> web.Response:
    if start < 20:
        return range_20(request, start)
    bundle = {"type": "bundle", "objects": []}
    return web.json_response(bundle, status=206, headers={"Content-Range": f"items 0-0/{TOTAL}"})


def range_skips(request: web.Request, start: int) -> web.Response:
    if start == 0:
        return range_20(request, start)
    begin = start + 5
    bundle = {"type": "bundle", "objects": OBJECTS[begin : begin + STEP]}
    served = f"items {begin}-{min(begin + STEP, TOTAL) - 1}/{TOTAL}"
    return web.json_response(bundle, status=206, headers={"Content-Range": served})


def range_stops_paging(request: web.Request, start: int) -> web.Response:
    if start == 0:
        return range_20(request, start)
    return web.json_response({"type": "bundle", "objects": OBJECTS[start : start + STEP]})


@dataclass(frozen=True)
class Case:
    version: str
    page: Page
    message: str


CASES: dict[str, Case] = {
    "more-without-next-or-date": Case(
        "2.1", more_without_next, "page 1 says more: true but gives neither next nor"
    ),
    "next-repeated-on-empty-pages": Case(
        "2.1", next_repeated_on_empty_pages, "TAXII pagination loops (next '10')"
    ),
    "added-last-stands-still": Case("2.1", added_last_stands_still, "TAXII pagination loops"),
    "more-is-text": Case("2.1", more_is_text, "page 1: more is 'false', not true or false"),
    "envelope-is-a-list": Case("2.1", envelope_is_a_list, "page 1 is not a TAXII envelope"),
    "206-without-content-range": Case(
        "2.0", partial_without_range, "206 (a partial page) without a Content-Range"
    ),
    "range-page-short": Case(
        "2.0", range_page_short, "Content-Range says items 10-19 but the page holds 5"
    ),
    "range-empty-before-total": Case(
        "2.0", range_empty_before_total, "no items at 20 of the 30 announced"
    ),
    "range-skips-items": Case("2.0", range_skips, "answered items 15-24 when asked for 10-"),
    "range-paging-stops": Case(
        "2.0", range_stops_paging, "answered 200 without a Content-Range at item 10"
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_pull_short_of_its_end_changes_nothing(
    name: str,
    taxii: Callable[[str], Server],
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    case = CASES[name]
    server = taxii(case.version)
    loaded, store = await synced(server, emulator, make_config, open_store)
    server.page = case.page
    emulator.clear_log()
    feeds, suppliers = await asyncio.wait_for(sync(loaded, store), 30)
    report = feeds[0]
    assert (report.feed, report.result, report.stage) == ("vx", "failed", "fetch"), report
    assert case.message in (report.error or ""), report.error
    assert emulator.indicator_requests() == [], "nothing is sent"
    assert emulator.indicators("VX").keys() == HOSTS
    assert store.feed("vx", "VX").indicators == TOTAL
    assert suppliers[0].error is None
    assert len(server.requests) < 50


def added_after_paging(request: web.Request, start: int) -> web.Response:
    page = OBJECTS[start : start + STEP]
    return web.json_response(
        {"more": start + STEP < TOTAL, "objects": page}, headers=added_last(page)
    )


async def test_more_without_next_pages_on_with_added_after(
    taxii: Callable[[str], Server],
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    # TAXII 2.1 section 3.4: more without next means "go on from X-TAXII-Date-Added-Last".
    server = taxii("2.1")
    server.page = added_after_paging
    await synced(server, emulator, make_config, open_store)
    asked = [r.query.get("added_after") for r in server.requests]
    assert asked == [None, "2026-01-01T00:00:09.000Z", "2026-01-01T00:00:19.000Z"]


# --- a feed URL with a query --------------------------------------------------------

TOKEN = "tok-3141592653"


class TokenServer:
    """Discovery at /taxii2/ and an API root at /api1/ that answer only with
    ``?token=``; the discovery document names the root by ``root``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # host, path, query
        self.root = ""
        app = web.Application(middlewares=[self.token])
        app.router.add_get("/taxii2/", self.discovery)
        app.router.add_get("/api1/", self.api_root)
        app.router.add_get("/api1/collections/", self.collections)
        app.router.add_get("/api1/collections/c1/objects/", self.objects)
        self.runner = web.AppRunner(app)
        self.port = 0

    @web.middleware
    async def token(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.host.split(":")[0], request.path, request.query_string))
        if request.query.get("token") != TOKEN:
            return web.json_response({"title": "no token"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def discovery(self, _request: web.Request) -> web.Response:
        return web.json_response({"title": "d", "default": self.root, "api_roots": [self.root]})

    async def api_root(self, _request: web.Request) -> web.Response:
        return web.json_response({"title": "root"})

    async def collections(self, _request: web.Request) -> web.Response:
        return web.json_response({"collections": [{"id": "c1", "title": "only"}]})

    async def objects(self, request: web.Request) -> web.Response:
        return good_21(request, int(request.query.get("next", "0")))

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    server = TokenServer()
    await server.start()
    yield server
    await server.runner.cleanup()


@pytest.mark.parametrize(
    "path", ["/api1/?token={t}", "/api1?token={t}", "/taxii2/?token={t}"], ids=str
)
async def test_the_query_of_the_feed_url_goes_with_every_request(
    path: str,
    token_server: TokenServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
) -> None:
    token_server.root = f"http://127.0.0.1:{token_server.port}/api1/"
    url = f"http://127.0.0.1:{token_server.port}{path.format(t=TOKEN)}"
    text = taxii_feed(url).replace("full_pull: 0.001", "full_pull: 1d")
    loaded = make_config(emulator.url, text, "VX: {confidence: 50}\n")
    store = open_store(loaded)
    for _ in range(2):  # a full pull, then an incremental one from the cursor
        feeds, _ = await sync(loaded, store)
        assert feeds[0].result in ("ok", "unchanged"), feeds[0].error
    assert emulator.indicators("VX").keys() == HOSTS
    paths = [p for _, p, _ in token_server.seen]
    assert "/api1/collections/c1/objects/" in paths
    assert all(p.endswith("/") and "token" not in p for p in paths), paths
    assert all(f"token={TOKEN}" in q for _, _, q in token_server.seen)
    assert paths.count("/api1/collections/") == 1, "the second pull went to the cursor"
    store.close()
    for state in tmp_path.glob("state.db*"):  # the database, its WAL and its own directory
        for file in [state] if state.is_file() else [p for p in state.rglob("*") if p.is_file()]:
            assert TOKEN.encode() not in file.read_bytes(), file


async def test_the_query_does_not_follow_a_discovery_to_another_host(
    token_server: TokenServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    token_server.root = f"http://localhost:{token_server.port}/api1/"
    url = f"http://127.0.0.1:{token_server.port}/taxii2/?token={TOKEN}"
    loaded = make_config(emulator.url, taxii_feed(url), "VX: {confidence: 50}\n")
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed"
    assert "refused the credentials (401)" in (feeds[0].error or "")
    assert [q for host, _, q in token_server.seen if host == "localhost"] == [""]


# --- a changed collection or URL ------------------------------------------------------


class TwoCollections(Server):
    """Collections c1 (host0-9) and c2 (host10-19) under /api1/, and c1 again
    under /api2/ holding host20-29."""

    def __init__(self) -> None:
        super().__init__("2.1")
        self.held = {("api1", "c1"): OBJECTS[:10], ("api1", "c2"): OBJECTS[10:20]}
        self.held[("api2", "c1")] = OBJECTS[20:]
        app = web.Application()
        app.router.add_get("/{root}/", self.root)
        app.router.add_get("/{root}/collections/", self.collections)
        app.router.add_get("/{root}/collections/{id}/objects/", self.objects)
        self.runner = web.AppRunner(app)

    async def collections(self, _request: web.Request) -> web.Response:
        found = [{"id": "c1", "title": "one"}, {"id": "c2", "title": "two"}]
        return web.json_response({"collections": found})

    async def objects(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        held = self.held[(request.match_info["root"], request.match_info["id"])]
        after = request.query.get("added_after")
        page = [o for o in held if after is None or str(o["modified"]) > after]
        return web.json_response({"more": False, "objects": page}, headers=added_last(page))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"collection": "two"}, range(10, 20)),
        ({"collection": "c2"}, range(10, 20)),
        ({"url": "/api2/"}, range(20, 30)),
    ],
    ids=["collection-title", "collection-id", "url"],
)
async def test_a_changed_collection_or_url_starts_a_full_pull(
    change: dict[str, str],
    expected: range,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    server = TwoCollections()
    await server.start()
    try:

        def configured(url: str, collection: str) -> Config:
            text = taxii_feed(url).replace("full_pull: 0.001", "full_pull: 1d")
            text = text.replace("collection: only", f"collection: {collection}")
            return make_config(emulator.url, text, "VX: {confidence: 50}\n")

        loaded = configured(server.url, "one")
        store = open_store(loaded)
        feeds, _ = await sync(loaded, store)
        assert feeds[0].result == "ok", feeds[0].error
        assert emulator.indicators("VX").keys() == {f"host{n}.example" for n in range(10)}
        url = server.url.replace("/api1/", change.get("url", "/api1/"))
        feeds, _ = await sync(configured(url, change.get("collection", "one")), store)
    finally:
        await server.runner.cleanup()
    assert feeds[0].result == "ok", feeds[0].error
    assert emulator.indicators("VX").keys() == {f"host{n}.example" for n in expected}
    assert "added_after" not in server.requests[-1].query, "a full pull"


async def test_the_query_stays_out_of_transport_errors(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(str(request.url))  # a loop: its message names the URL

    app = web.Application()
    app.router.add_get("/api1/", loop)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/api1/?token={TOKEN}"
        loaded = make_config(emulator.url, taxii_feed(url), "VX: {confidence: 50}\n")
        feeds, _ = await sync(loaded, open_store(loaded))
    finally:
        await runner.cleanup()
    assert feeds[0].result == "failed" and "redirect loop" in (feeds[0].error or "")
    assert TOKEN not in (feeds[0].error or ""), feeds[0].error


class OddCollectionId(Server):
    """A collection whose id holds a "?" and a "#"."""

    def __init__(self) -> None:
        super().__init__("2.1")
        app = web.Application()
        app.router.add_get("/api1/", self.root)
        app.router.add_get("/api1/collections/", self.collections)
        app.router.add_get("/api1/collections/{id}/objects/", self.objects)
        self.runner = web.AppRunner(app)

    async def collections(self, _request: web.Request) -> web.Response:
        return web.json_response({"collections": [{"id": "c?1#x", "title": "only"}]})

    async def objects(self, request: web.Request) -> web.Response:
        if request.match_info["id"] != "c?1#x":
            return web.json_response({"title": "no such collection"}, status=404)
        return await super().objects(request)


async def test_a_collection_id_is_one_path_segment(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    server = OddCollectionId()
    try:
        await synced(server, emulator, make_config, open_store)
    finally:
        await server.runner.cleanup()
