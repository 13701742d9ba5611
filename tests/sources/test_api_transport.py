"""MISP and TAXII pages go through the feed transport: bounded, decoded, redirected with care."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web
from conftest import ConfigFactory
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.normalize import canonicalize
from feedsync.store import Store

KEY = "misp-KEY-0123456789"
MEDIA = "application/taxii+json;version=2.1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serving(routes: Mapping[tuple[str, str], Handler]) -> AsyncGenerator[str, None]:
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def first(servers: AsyncGenerator[str, None]) -> str:
    return await servers.__anext__()


def bomb(document: dict[str, Any], padding: int) -> bytes:
    """``document`` as JSON followed by ``padding`` spaces (valid JSON), gzipped:
    a few kilobytes on the wire."""
    return gzip.compress(json.dumps(document).encode() + b" " * padding)


MD5 = "0cc175b9c0f1b6a831c399e269772661"
ATTRIBUTE = {
    "uuid": "a-1",
    "type": "md5",
    "category": "Payload delivery",
    "to_ids": True,
    "deleted": False,
    "timestamp": "1",
    "value": MD5,
    "Event": {"id": "7", "uuid": "e-7", "info": "one"},
}


def misp_feed(url: str, extra: str = "") -> str:
    return (
        f"- {{name: misp, type: misp, url: '{url}', api_key: '{KEY}', supplier: MISP,"
        f" page_size: 10, full_pull: 1d, max_delete_ratio: 1.0{extra}}}\n"
    )


async def misp_sync(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    routes: Mapping[tuple[str, str], Handler],
    extra: str = "",
) -> tuple[str, str]:
    servers = serving(routes)
    url = await first(servers)
    try:
        loaded = make_config(emulator.url, misp_feed(url, extra), "MISP: {confidence: 70}\n")
        feeds, _ = await sync(loaded, open_store(loaded))
    finally:
        await servers.aclose()
    return feeds[0].result, feeds[0].error or ""


async def test_a_misp_page_that_inflates_past_max_body_bytes_is_refused(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    async def search(_request: web.Request) -> web.Response:
        body = bomb({"response": {"Attribute": [ATTRIBUTE]}}, 5_000_000)
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    routes = {("POST", "/attributes/restSearch"): search}
    result, error = await misp_sync(
        emulator, make_config, open_store, routes, ", max_body_bytes: 1000000"
    )
    # Inflated whole, the page would be one small attribute: only the decoded size tells.
    assert result == "failed" and "inflates to over the limit of 1000000 bytes" in error, error
    assert emulator.indicator_requests() == []


async def test_a_gzip_misp_page_is_read(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    async def search(request: web.Request) -> web.Response:
        assert "gzip" in request.headers.get("Accept-Encoding", "")
        body = bomb({"response": {"Attribute": [ATTRIBUTE]}}, 10)
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    routes = {("POST", "/attributes/restSearch"): search}
    result, error = await misp_sync(emulator, make_config, open_store, routes)
    assert result == "ok", error
    assert set(emulator.indicators("MISP")) == {canonicalize(MD5)[1]}


async def test_misp_answering_the_search_with_a_302_is_not_followed_as_a_get(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    gets: list[str] = []

    async def search(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/users/login")

    async def login(request: web.Request) -> web.Response:
        gets.append(request.path)  # a login page answers 200: no Attribute list
        return web.json_response({"response": {"Attribute": []}})

    routes = {("POST", "/attributes/restSearch"): search, ("GET", "/users/login"): login}
    result, error = await misp_sync(emulator, make_config, open_store, routes)
    assert result == "failed" and "answers the POST with HTTP 302" in error, error
    assert gets == [], "a search turned into a GET would answer something else"


async def test_a_misp_307_to_another_origin_keeps_the_post_but_not_the_key(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    seen: list[tuple[str, str | None]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("Authorization")))
        return web.json_response({"message": "Authentication failed."}, status=403)

    other = serving({("POST", "/attributes/restSearch"): elsewhere})
    target = await first(other)
    try:

        async def search(_request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(f"{target}/attributes/restSearch")

        routes = {("POST", "/attributes/restSearch"): search}
        result, error = await misp_sync(emulator, make_config, open_store, routes)
    finally:
        await other.aclose()
    assert result == "failed" and "MISP refused the API key (403)" in error, error
    assert seen == [("POST", None)], "the key stays with the feed's own origin"
    assert KEY not in error


def taxii_feed(root: str, extra: str = "") -> str:
    return (
        f"- {{name: vx, type: taxii, url: '{root}', collection: only, supplier: VX,"
        f" username: reader, password: s3cret{extra}}}\n"
    )


INDICATOR = {
    "type": "indicator",
    "id": "indicator--1",
    "modified": "2026-01-01T00:00:00Z",
    "pattern": "[domain-name:value='one.example']",
    "pattern_type": "stix",
}


async def taxii_sync(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    version: str,
    objects: Handler,
    max_body_bytes: int,
) -> tuple[str, str]:
    """One sync of a TAXII server of ``version`` whose one collection answers ``objects``."""

    async def root(request: web.Request) -> web.Response:
        if version == "2.0" and "version=2.0" not in request.headers.get("Accept", ""):
            return web.json_response({"title": "only 2.0"}, status=406)
        return web.json_response({"title": "fake", "versions": [MEDIA]})

    async def collections(_request: web.Request) -> web.Response:
        return web.json_response({"collections": [{"id": "c1", "title": "only", "can_read": True}]})

    servers = serving(
        {
            ("GET", "/api1/"): root,
            ("GET", "/api1/collections/"): collections,
            ("GET", "/api1/collections/c1/objects/"): objects,
        }
    )
    url = await first(servers)
    try:
        text = taxii_feed(f"{url}/api1/", f", max_body_bytes: {max_body_bytes}")
        loaded = make_config(emulator.url, text, "VX: {confidence: 50}\n")
        feeds, _ = await sync(loaded, open_store(loaded))
    finally:
        await servers.aclose()
    return feeds[0].result, feeds[0].error or ""


@pytest.mark.parametrize("version", ["2.1", "2.0"])
async def test_a_taxii_page_that_inflates_past_max_body_bytes_is_refused(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    version: str,
) -> None:
    async def objects(_request: web.Request) -> web.Response:
        page = {"objects": [INDICATOR]} | ({"more": False} if version == "2.1" else {})
        headers = {"Content-Encoding": "gzip"}
        if version == "2.0":
            headers["Content-Range"] = "items 0-0/1"
        return web.Response(body=bomb(page, 5_000_000), headers=headers, status=200)

    result, error = await taxii_sync(emulator, make_config, open_store, version, objects, 1_000_000)
    assert result == "failed" and "inflates to over the limit of 1000000" in error, error
    assert emulator.indicator_requests() == []


async def test_taxii_2_0_pages_that_never_end_stop_at_max_body_bytes(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    async def objects(request: web.Request) -> web.Response:
        start = int(request.headers["Range"].split()[1].split("-")[0])
        page = [{**INDICATOR, "id": f"indicator--{start}"}]
        # Always one item of a total that keeps growing: the pull never reaches its end.
        headers = {"Content-Range": f"items {start}-{start}/{start + 2}"}
        return web.json_response({"objects": page}, status=206, headers=headers)

    result, error = await taxii_sync(emulator, make_config, open_store, "2.0", objects, 20000)
    assert result == "failed" and "over max_body_bytes (20000)" in error, error
