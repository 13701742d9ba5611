"""The misp source against a fake MISP REST server built from a real event."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import ConfigFactory
from samples import sample
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.normalize import canonicalize
from feedsync.store import Store

KEY = "misp-KEY-0123456789"


class FakeMisp:
    """restSearch with MISP's paging (page/limit) and the filters feedsync uses."""

    def __init__(self, attributes: list[dict[str, Any]]) -> None:
        self.attributes = attributes
        self.requests: list[dict[str, Any]] = []
        self.repeat_pages = False
        self.garbage: bytes | None = None

    async def rest_search(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != KEY:
            return web.json_response({"message": "Authentication failed."}, status=403)
        if self.garbage is not None:
            return web.Response(body=self.garbage, content_type="application/json")
        query = json.loads(await request.read())
        self.requests.append(query)
        rows = [a for a in self.attributes if self._matches(a, query)]
        page, limit = int(query.get("page", 1)), int(query.get("limit", 0))
        if self.repeat_pages:
            page = 1
        if limit:
            rows = rows[(page - 1) * limit : page * limit]
        return web.json_response({"response": {"Attribute": rows}})

    @staticmethod
    def _matches(attribute: dict[str, Any], query: dict[str, Any]) -> bool:
        if query.get("to_ids") and not attribute["to_ids"]:
            return False
        if attribute.get("deleted") and query.get("deleted") != [0, 1]:
            return False
        return int(attribute["timestamp"]) >= int(query.get("timestamp", 0))


@pytest.fixture
async def misp() -> AsyncIterator[tuple[str, FakeMisp]]:
    event = json.loads(sample("misp/misp_tests_event_regin.json").read_text())["Event"]
    summary = {"id": event["id"], "uuid": event["uuid"], "info": event["info"]}
    attributes = [{**a, "deleted": False, "Event": summary} for a in event["Attribute"]]
    fake = FakeMisp(copy.deepcopy(attributes))
    app = web.Application()
    app.router.add_post("/attributes/restSearch", fake.rest_search)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", fake
    await runner.cleanup()


def feed(url: str, key: str = KEY, full_pull: str = "1d") -> str:
    return (
        f"- {{name: misp, type: misp, url: '{url}', api_key: '{key}', supplier: MISP,"
        f" page_size: 10, full_pull: {full_pull}, max_delete_ratio: 1.0}}\n"
    )


def md5s(fake: FakeMisp) -> set[str]:
    return {
        canonicalize(a["value"])[1]
        for a in fake.attributes
        if a["type"] == "md5" and a["to_ids"] and not a["deleted"]
    }


async def test_full_then_incremental_pulls(
    misp: tuple[str, FakeMisp],
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url, fake = misp
    loaded = make_config(emulator.url, feed(url, full_pull="2s"), "MISP: {confidence: 70}\n")
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    assert feeds[0].change.invalid_reasons == {"unsupported_type": 3}, "the regkey attributes"
    assert emulator.indicators("MISP").keys() == md5s(fake)
    assert [r["page"] for r in fake.requests] == [1, 2, 3, 4], (
        "30 attributes: the 4th page is short"
    )
    assert all(r["to_ids"] is True and "timestamp" not in r for r in fake.requests)
    attribute = next(a for a in fake.attributes if a["type"] == "md5")
    held = emulator.indicators("MISP")[canonicalize(attribute["value"])[1]]
    assert held.context["event_info"] == attribute["Event"]["info"]
    assert held.context["event_uuid"] == attribute["Event"]["uuid"]
    assert (held.context["category"], held.context["type"]) == (attribute["category"], "md5")

    now = str(int(time.time()) + 10)
    first, second = [a for a in fake.attributes if a["type"] == "md5"][:2]
    first.update(deleted=True, timestamp=now)
    second.update(to_ids=False, timestamp=now)
    fake.attributes.append(
        {
            **first,
            "uuid": "new-attr",
            "value": "0cc175b9c0f1b6a831c399e269772661",
            "deleted": False,
            "timestamp": now,
        }
    )
    fake.requests.clear()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok"
    assert fake.requests[0]["deleted"] == [0, 1] and "to_ids" not in fake.requests[0]
    assert (feeds[0].change.added, feeds[0].change.removed) == (1, 2)
    assert emulator.indicators("MISP").keys() == md5s(fake)

    gone = next(
        a for a in fake.attributes if a["type"] == "md5" and a["to_ids"] and not a["deleted"]
    )
    fake.attributes.remove(gone)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].change.removed == 0, "an incremental pull cannot see a hard delete"
    assert canonicalize(gone["value"])[1] in emulator.indicators("MISP")
    await asyncio.sleep(2.1)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok" and feeds[0].change.removed == 1, "the full pull does"
    assert emulator.indicators("MISP").keys() == md5s(fake)


async def test_bad_key_and_looping_pages_fail_clearly(
    misp: tuple[str, FakeMisp],
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url, fake = misp
    loaded = make_config(emulator.url, feed(url, key="wrong"), "MISP: {confidence: 70}\n")
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed" and "MISP refused the API key (403)" in (
        feeds[0].error or ""
    )
    assert "wrong" not in (feeds[0].error or "")

    fake.repeat_pages = True
    loaded = make_config(emulator.url, feed(url), "MISP: {confidence: 70}\n")
    store = Store.open(loaded.state.path + ".2")
    try:
        feeds, _ = await sync(loaded, store)
    finally:
        store.close()
    assert feeds[0].result == "failed" and "returned page 2 again" in (feeds[0].error or "")


ATTRIBUTE_WITHOUT_UUID = {
    "type": "md5",
    "category": "Payload delivery",
    "to_ids": True,
    "deleted": False,
    "timestamp": "1",
    "value": "0cc175b9c0f1b6a831c399e269772661",
    "Event": {"id": "7", "info": "no uuids"},
}


def pages_of(attribute: dict[str, Any], uuid_missing_at: int = 0) -> bytes:
    """A full page (page_size 10) of copies of ``attribute``, each with its own
    uuid when ``attribute`` has a text one, the one at ``uuid_missing_at``
    (1-based) without: every page is the same."""
    own = isinstance(attribute.get("uuid"), str)
    rows = [{**attribute, "uuid": f"a-{n}"} if own else dict(attribute) for n in range(10)]
    if uuid_missing_at:
        del rows[uuid_missing_at - 1]["uuid"]
    return json.dumps({"response": {"Attribute": rows}}).encode()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"<html>login</html>", "page 1 from http://127.0.0.1"),
        (b'{"response": {"Attribute": "nope"}}', "holds no Attribute list"),
        (b'{"name": "Not Found", "message": "x"}', "holds no Attribute list"),
        (pages_of(ATTRIBUTE_WITHOUT_UUID), "page 1, attribute 1 (event 7) has no uuid"),
        (
            pages_of({**ATTRIBUTE_WITHOUT_UUID, "uuid": "a-1"}, uuid_missing_at=7),
            "page 1, attribute 7 (event 7) has no uuid",
        ),
        (pages_of({**ATTRIBUTE_WITHOUT_UUID, "uuid": 12}), "attribute 1 (event 7) has no uuid"),
    ],
    ids=[
        "html",
        "attribute-not-a-list",
        "error-object",
        "no-uuids",
        "one-uuid-missing",
        "uuid-a-number",
    ],
)
async def test_json_garbage_from_misp_changes_nothing(
    misp: tuple[str, FakeMisp],
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    answer: bytes,
    message: str,
) -> None:
    url, fake = misp
    loaded = make_config(emulator.url, feed(url), "MISP: {confidence: 70}\n")
    store = open_store(loaded)
    await sync(loaded, store)
    before = set(emulator.indicators("MISP"))

    fake.garbage = answer
    emulator.clear_log()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "failed" and message in (feeds[0].error or ""), feeds[0].error
    assert set(emulator.indicators("MISP")) == before
    assert emulator.indicator_requests() == []


async def test_an_attribute_whose_new_value_is_excluded_leaves_its_supplier(
    misp: tuple[str, FakeMisp],
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url, fake = misp
    loaded = make_config(emulator.url, feed(url), "MISP: {confidence: 70}\n")
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    attribute = next(a for a in fake.attributes if a["type"] == "md5" and a["to_ids"])
    old = canonicalize(attribute["value"])[1]
    assert old in emulator.indicators("MISP")
    # An incremental pull brings the attribute back with the empty file's MD5.
    attribute.update(value="d41d8cd98f00b204e9800998ecf8427e", timestamp=str(int(time.time()) + 10))
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    assert feeds[0].change.excluded_reasons == {"null_hash": 1}
    held = emulator.indicators("MISP")
    assert old not in held and "D41D8CD98F00B204E9800998ECF8427E" not in held
