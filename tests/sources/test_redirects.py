"""Redirects: a feed's credentials stay with its origin, and https never falls back to http."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from conftest import ConfigFactory, FeedServer
from test_sync import sync
from test_tls import certificates

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.store import Store

__all__ = ["certificates"]  # a fixture, imported for its name

AUTH_KEY = "abusech-KEY-4242"
FEED = """\
- name: private
  type: csv
  url: {url}
  supplier: Demo
  username: reader
  password: feed-Pa55
  headers: {{Auth-Key: "{key}"}}
"""


def private_feed(make_config: ConfigFactory, emulator: Emulator, url: str, **extra: str) -> Config:
    keys = "".join(f"  {k}: {v}\n" for k, v in extra.items())
    return make_config(emulator.url, FEED.format(url=url, key=AUTH_KEY) + keys, "Demo: {}\n")


def redirect(target: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": target})


@pytest.fixture
async def elsewhere() -> AsyncIterator[FeedServer]:
    """A second host:port: another origin than ``feed_server``."""
    server = FeedServer()
    await server.start()
    yield server
    await server.stop()


def heard(server: FeedServer, name: str) -> dict[str, str]:
    return next(headers for hit, headers in server.hits if hit == name)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_credentials_are_dropped_when_a_redirect_leaves_the_origin(
    status: int,
    feed_server: FeedServer,
    elsewhere: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    target = elsewhere.set("moved.txt", "a.example\nb.example\n")
    feed_server.set("feed.txt", "", status=status, Location=target)
    loaded = private_feed(make_config, emulator, f"{feed_server.url}/feed.txt")
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "ok", feeds[0].error
    assert set(emulator.indicators("Demo")) == {"a.example", "b.example"}
    home = heard(feed_server, "feed.txt")
    assert home["Auth-Key"] == AUTH_KEY and home["Authorization"].startswith("Basic ")
    away = heard(elsewhere, "moved.txt")
    assert "Auth-Key" not in away and "Authorization" not in away
    assert away["User-Agent"].startswith("feedsync/"), "what is not a credential still goes"


async def test_a_redirect_within_the_origin_keeps_credentials(
    feed_server: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    feed_server.set("feed.txt", "", status=301, Location="/v2/feed.txt")
    feed_server.set("v2/feed.txt", "a.example\n")
    loaded = private_feed(make_config, emulator, f"{feed_server.url}/feed.txt")
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "ok", feeds[0].error
    moved = heard(feed_server, "v2/feed.txt")
    assert moved["Auth-Key"] == AUTH_KEY and moved["Authorization"].startswith("Basic ")


async def test_credentials_once_dropped_are_not_regained_on_the_way_back(
    feed_server: FeedServer,
    elsewhere: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    # The other host chose where the request goes next: it is not the feed's word.
    feed_server.set("feed.txt", "", status=302, Location=f"{elsewhere.url}/bounce")
    elsewhere.set("bounce", "", status=302, Location=f"{feed_server.url}/back.txt")
    feed_server.set("back.txt", "a.example\n")
    loaded = private_feed(make_config, emulator, f"{feed_server.url}/feed.txt")
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "ok", feeds[0].error
    back = heard(feed_server, "back.txt")
    assert "Auth-Key" not in back and "Authorization" not in back


async def test_https_to_http_is_never_followed(
    certificates: Path,
    feed_server: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    plain = feed_server.set("feed.txt", "a.example\n")
    app = web.Application()

    async def moved(_request: web.Request) -> web.Response:
        return redirect(plain)

    app.router.add_get("/feed.txt", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        url = f"https://127.0.0.1:{runner.addresses[0][1]}/feed.txt"
        loaded = private_feed(make_config, emulator, url, verify_tls=str(certificates / "ca.pem"))
        feeds, _ = await sync(loaded, open_store(loaded))
    finally:
        await runner.cleanup()
    assert feeds[0].result == "failed"
    assert "refusing to leave https for http" in (feeds[0].error or "")
    assert feed_server.hits == [], "the plain-http URL is never requested"
    assert not emulator.indicators("Demo")


async def test_a_redirect_to_another_scheme_is_refused(
    feed_server: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    feed_server.set("feed.txt", "", status=302, Location="file:///etc/passwd")
    loaded = private_feed(make_config, emulator, f"{feed_server.url}/feed.txt")
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed"
    assert "which is not http(s)" in (feeds[0].error or "")
