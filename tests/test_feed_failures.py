"""A broken feed leaves its supplier as it was; two feeds share a supplier; the guard holds."""

from __future__ import annotations

import gzip
from collections.abc import Callable

import pytest
from conftest import ConfigFactory, FeedServer
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.store import Store

SUPPLIER = "Demo: {confidence: 50}\n"
FEED = """\
- name: {name}
  type: csv
  url: {url}
  supplier: Demo
  tags: [{name}]
  max_delete_ratio: {ratio}
"""
GOOD = "a.example\nb.example\nc.example\nd.example\n"


def feed(name: str, url: str, ratio: float = 0.5) -> str:
    return FEED.format(name=name, url=url, ratio=ratio)


async def first_sync(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> tuple[Config, Store]:
    url = feed_server.set("list.txt", GOOD)
    loaded = make_config(emulator.url, feed("list", url), SUPPLIER)
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok"
    assert set(emulator.indicators("Demo")) == {"a.example", "b.example", "c.example", "d.example"}
    return loaded, store


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, "not found", "HTTP 404"),
        (500, "oops", "HTTP 500"),
        (200, "", "empty body"),
        (200, "<!DOCTYPE html><html><body>Maintenance</body></html>\n", "HTML"),
        (200, gzip.compress(GOOD.encode())[:20], "gzip"),
    ],
    ids=["404", "500", "empty", "html", "truncated-gzip"],
)
async def test_broken_fetch_leaves_supplier_untouched(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    status: int,
    body: str | bytes,
    message: str,
) -> None:
    loaded, store = await first_sync(emulator, feed_server, make_config, open_store)
    before = dict(emulator.indicators("Demo"))
    feed_server.set("list.txt", body, status=status)
    emulator.clear_log()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "failed"
    assert message.lower() in (feeds[0].error or "").lower()
    assert emulator.indicator_requests() == []
    assert emulator.indicators("Demo").keys() == before.keys()
    assert store.feed("list", "Demo").indicators == 4


async def test_shrink_is_held_then_forced(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    loaded, store = await first_sync(emulator, feed_server, make_config, open_store)
    feed_server.set("list.txt", "a.example\n")
    emulator.clear_log()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "held"
    assert feeds[0].change.removed == 3
    assert emulator.indicator_requests() == []
    feeds, _ = await sync(loaded, store, force=True)
    assert feeds[0].result == "ok"
    assert set(emulator.indicators("Demo")) == {"a.example"}


async def test_comment_only_body_is_held_not_applied(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    loaded, store = await first_sync(emulator, feed_server, make_config, open_store)
    feed_server.set("list.txt", "# nothing today\n")
    for _ in range(2):
        feeds, _ = await sync(loaded, store)
        assert feeds[0].result == "held"
    assert len(emulator.indicators("Demo")) == 4


async def test_two_feeds_one_supplier(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    one = feed_server.set("one.txt", "shared.example\nonly-one.example\n")
    two = feed_server.set("two.txt", "shared.example\nonly-two.example\n")
    loaded = make_config(emulator.url, feed("one", one, 1.0) + feed("two", two, 1.0), SUPPLIER)
    store = open_store(loaded)
    await sync(loaded, store)
    shared = emulator.indicators("Demo")["shared.example"]
    assert shared.tags == {"ONE", "TWO"}
    feed_server.set("one.txt", "only-one.example\n")
    emulator.clear_log()
    await sync(loaded, store, "one")
    held = emulator.indicators("Demo")
    assert set(held) == {"shared.example", "only-one.example", "only-two.example"}
    assert held["shared.example"].tags == {"TWO"}
    assert [r.method for r in emulator.indicator_requests()] == ["PUT"]


async def test_dry_run_sends_and_keeps_nothing(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url = feed_server.set("list.txt", GOOD)
    loaded = make_config(emulator.url, feed("list", url), SUPPLIER)
    store = open_store(loaded)
    _, suppliers = await sync(loaded, store, dry_run=True)
    assert suppliers[0].planned.add == 4
    assert "add a.example" in suppliers[0].preview
    assert emulator.requests == []
    assert store.feed("list", "Demo").indicators == 0
    assert store.counts("Demo")["add"] == 0
