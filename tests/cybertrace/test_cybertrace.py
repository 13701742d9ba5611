"""The CyberTrace side of a sync: bootstrap, tags, API versions, batches, refusals, resume."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from conftest import ConfigFactory, FeedServer
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.store import Store

Opener = Callable[[Config], Store]


def feed(url: str, supplier: str = "Demo", name: str = "list", extra: str = "") -> str:
    return (
        f"- name: {name}\n  type: csv\n  url: {url}\n  supplier: {supplier}\n"
        f'  tags: ["tlp:white", osint]\n  context: {{source: "1"}}\n  header: false\n{extra}'
    )


async def test_supplier_and_tags_are_created_once(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(
        emulator.url, feed(url), "Demo: {confidence: 42, retention: 60, vendor: v}\n"
    )
    store = open_store(loaded)
    await sync(loaded, store)
    supplier = emulator.supplier("Demo")
    assert supplier is not None
    assert (supplier.confidence, supplier.retention, supplier.vendor) == (42, 60, "v")
    assert emulator.tags() == {"OSINT": 0, "TLP_WHITE": 0}
    assert emulator.indicators("Demo")["a.example"].tags == {"OSINT", "TLP_WHITE"}
    emulator.clear_log()
    feed_server.set("l.txt", "a.example\nb.example\n")
    await sync(loaded, store)
    assert [r.method + " " + r.path.rsplit("/", 1)[-1] for r in emulator.requests] == [
        "GET Demo",  # its settings, and proof that it exists: no list needed
        "POST lookup",  # the supplier's canary (canary.py), then its replacement
        "GET tags",
        "PUT indicators",
        "PUT indicators",
        "DELETE indicators",
    ]


async def test_an_unchanged_supplier_costs_its_settings_and_its_canary(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    """A cycle in which nothing changed asks CyberTrace only what it must each
    cycle: the supplier's settings (its retention decides the refresh, its status
    the canary's check; drift is corrected) and whether it still holds the canary."""
    first = feed_server.set("a.txt", "a.example\n", ETag='"a1"')
    second = feed_server.set("b.txt", "b.example\n")
    feeds = feed(first, name="a") + feed(second, name="b", supplier="Other")
    suppliers = "Demo: {confidence: 42, retention: 60}\nOther: {confidence: 42, retention: 60}\n"
    loaded = make_config(emulator.url, feeds, suppliers)
    store = open_store(loaded)
    await sync(loaded, store)
    emulator.clear_log()
    await sync(loaded, store)  # a 304 and the same body
    calls = sorted(r.method + " " + r.path.removeprefix("/api/1.2/") for r in emulator.requests)
    assert calls == [
        "GET suppliers/Demo",
        "GET suppliers/Other",
        "POST lookup",
        "POST lookup",
    ]
    assert all(r.status == 200 for r in emulator.requests)


async def test_api_1_0_never_sends_tags(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(emulator.url, feed(url), "Demo: {confidence: 42}\n", api_version="1.0")
    await sync(loaded, open_store(loaded))
    assert emulator.indicators("Demo").keys() == {"a.example"}
    assert not any("tags" in r.path for r in emulator.requests)
    for request in emulator.indicator_requests():
        assert all("tags" not in item for item in request.json)  # type: ignore[union-attr]


async def test_false_positive_never_gets_context(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "good.example\n")
    loaded = make_config(emulator.url, feed(url, supplier="FalsePositive"))
    await sync(loaded, open_store(loaded))
    assert emulator.indicators("FalsePositive").keys() == {"good.example"}
    for request in emulator.indicator_requests():
        assert all("context" not in item for item in request.json)  # type: ignore[union-attr]


async def test_a_supplier_without_settings_is_created_with_supplier_defaults(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(emulator.url, feed(url, supplier="Nowhere"))
    assert "Nowhere" not in loaded.suppliers
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None and suppliers[0].pending == 0
    created = emulator.supplier("Nowhere")
    assert created is not None
    assert (created.confidence, created.retention, created.vendor) == (50, 10080, "feedsync")
    assert emulator.indicators("Nowhere").keys() == {"a.example"}


async def test_an_existing_supplier_without_settings_keeps_its_own(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    emulator.add_supplier("Mine", confidence=7, retention=60, vendor="ops")
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(emulator.url, feed(url, supplier="Mine"))
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None
    mine = emulator.supplier("Mine")
    assert mine is not None and (mine.confidence, mine.retention, mine.vendor) == (7, 60, "ops")
    changes = [r for r in emulator.requests if r.method in ("POST", "PUT")]
    assert not any(r.path.endswith("/Mine") for r in changes)


async def test_batches_stay_under_the_limits(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    body = "".join(f"host-{i:04d}.example\n" for i in range(500))
    url = feed_server.set("l.txt", body)
    loaded = make_config(
        emulator.url,
        feed(url),
        "Demo: {confidence: 1}\n",
        cybertrace="max_batch_bytes: 4096\nmax_batch_indicators: 40\n",
    )
    await sync(loaded, open_store(loaded))
    puts = emulator.indicator_requests("PUT")
    assert len(emulator.indicators("Demo")) == 500
    assert len(puts) >= 500 // 40
    for request in puts:
        assert len(request.body) <= 4096
        assert int(request.headers["Content-Length"]) == len(request.body)
        assert len(orjson.loads(request.body)) <= 40


async def test_tags_deleted_by_hand_are_created_again(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\nb.example\n")
    loaded = make_config(emulator.url, feed(url), "Demo: {confidence: 1}\n")
    store = open_store(loaded)
    await sync(loaded, store)
    # A tag removed by hand in CyberTrace makes the next PUT of its indicators fail (202).
    emulator.delete_tag("OSINT")
    feed_server.set("l.txt", "a.example\nb.example\nc.example\n")
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].sent.rejected == 0, "feedsync re-creates the tags it needs"
    assert "c.example" in emulator.indicators("Demo")


@pytest.mark.parametrize("api_version", ["1.1", "1.2"])
async def test_rejected_by_cybertrace_is_kept_with_its_reason(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Opener,
    api_version: str,
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(emulator.url, feed(url, supplier="FalsePositive"), api_version=api_version)
    store = open_store(loaded)
    # Simulate a CyberTrace that refuses one indicator: pre-plan a body it rejects.
    await sync(loaded, store)
    with store.transaction() as db:
        db.execute(
            "INSERT INTO pending (supplier, value, op, digest, body, planned_at)"
            " VALUES ('FalsePositive', 'x.example', 'add', 1, ?, 0)",
            ('{"indicator":"x.example","context":{"a":"b"}}',),
        )
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].sent.rejected == 1
    assert store.rejected("FalsePositive")[0][0] == "x.example"
    assert "FalsePositive" in store.rejected("FalsePositive")[0][2]


async def test_plan_survives_an_outage_and_resumes(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\nb.example\n")
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    loaded_down = make_config(
        down,
        feed(url),
        "Demo: {confidence: 1}\n",
        cybertrace="retry: {attempts: 2, initial_delay: 0.01, max_delay: 0.01}\n",
    )
    store = open_store(loaded_down)
    feeds, suppliers = await sync(loaded_down, store)
    assert feeds[0].result == "ok"
    assert suppliers[0].error and suppliers[0].pending == 2
    store.close()
    loaded_up = make_config(emulator.url, feed(url), "Demo: {confidence: 1}\n")
    store = open_store(loaded_up)
    feeds, suppliers = await sync(loaded_up, store)
    assert feeds[0].result == "unchanged"
    assert suppliers[0].pending == 0 and suppliers[0].sent.add == 2
    assert emulator.indicators("Demo").keys() == {"a.example", "b.example"}


async def test_supplier_deleted_by_hand_is_recreated_complete(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\nb.example\n")
    loaded = make_config(emulator.url, feed(url), "Demo: {confidence: 1}\n")
    store = open_store(loaded)
    await sync(loaded, store)
    emulator.delete_supplier("Demo")
    await sync(loaded, store)
    assert emulator.indicators("Demo").keys() == {"a.example", "b.example"}


async def test_supplier_drift_is_corrected(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(
        emulator.url, feed(url), "Demo: {confidence: 70, retention: 5, vendor: x}\n"
    )
    emulator.add_supplier("Demo", confidence=10, retention=0, vendor="y")
    await sync(loaded, open_store(loaded))
    supplier = emulator.supplier("Demo")
    assert supplier is not None
    assert (supplier.confidence, supplier.retention, supplier.vendor) == (70, 5, "x")
