"""The client against answers a documented CyberTrace may give, scripted exactly.

A small real HTTP server on 127.0.0.1 answers each request the way a test
says; by default it behaves like an empty, healthy CyberTrace. These are the
answers the bundled emulator gives only under faults or ambiguity switches,
checked here one at a time at the client's edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import ConfigFactory, FeedServer
from test_sync import sync

from feedsync.config import Config, CyberTraceConfig, RetryConfig, Secret
from feedsync.cybertrace import CyberTrace, Outcome
from feedsync.cybertrace.verdict import absent, verdict
from feedsync.errors import CyberTraceError, RequestError
from feedsync.store import Store
from feedsync.store.pending import Batch, Item
from feedsync.sync.reports import SupplierReport

Opener = Callable[[Config], Store]
Reply = tuple[int, bytes]
Script = Callable[[str, str, Any], Reply | None]


@dataclass
class Scripted:
    """A CyberTrace whose answers a test scripts; None from the script means
    "answer as an empty, healthy CyberTrace would"."""

    script: Script = lambda method, path, body: None
    suppliers: set[str] = field(default_factory=lambda: {"FalsePositive", "InternalTI"})
    tags: set[str] = field(default_factory=set)
    held: dict[str, set[str]] = field(default_factory=dict)
    log: list[tuple[str, str, Any]] = field(default_factory=list)
    raw_paths: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        self.log.append((request.method, request.path, body))
        self.raw_paths.append(request.raw_path)
        scripted = self.script(request.method, request.path, body)
        status, answer = scripted if scripted is not None else self.healthy(request, body)
        return web.Response(status=status, body=answer, content_type="application/json")

    def healthy(self, request: web.Request, body: Any) -> Reply:
        parts = request.path.split("/")[3:]
        if parts and parts[0] not in ("suppliers", "tags", "lookup"):
            parts = parts[1:]  # /api/1.3/{tenant}/...: one tenant holds everything here
        ok = orjson.dumps([{"status": "done"}])
        match request.method, parts:
            case "GET", ["suppliers"]:
                return 200, orjson.dumps([{"name": n, "status": "enabled"} for n in self.suppliers])
            case "GET", ["suppliers", name] if name in self.suppliers:
                return 200, orjson.dumps([{"name": name, "confidence": 50, "retention": 0}])
            case "POST", ["suppliers"]:
                self.suppliers.add(body[0]["name"])
                return 201, ok
            case "GET", ["tags"]:
                return 200, orjson.dumps([{"name": t, "weight": 0} for t in sorted(self.tags)])
            case "POST", ["tags"] if len(body) == 1 and body[0]["name"].upper() not in self.tags:
                self.tags.add(body[0]["name"].upper())
                return 201, ok
            case "PUT", ["suppliers", name, "indicators"] if name in self.suppliers:
                self.held.setdefault(name, set()).update(_feeds_only(body))
                return 201, ok
            case "DELETE", ["suppliers", name, "indicators"] if name in self.suppliers:
                self.held.setdefault(name, set()).difference_update(_feeds_only(body))
                return 201, ok
        return 400, orjson.dumps([{"status": "An error occurred", "reason": "refused"}])

    def requests(self, method: str, tail: str) -> list[Any]:
        return [body for m, path, body in self.log if m == method and path.endswith(tail)]


def _feeds_only(body: Any) -> set[str]:
    """The values of a body but feedsync's restore canary (canary.py): the tests
    here compare what feeds put in a supplier. The lookup it is checked with is
    refused here (400), which must cost the cycle nothing."""
    return {i["indicator"] for i in body if not i["indicator"].startswith("fs-")}


def when(method: str, tail: str, reply: Reply) -> Script:
    """A script answering ``reply`` to ``method`` on paths ending in ``tail``."""
    return lambda m, p, b: reply if m == method and p.endswith(tail) else None


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


def client_config(url: str, **overrides: Any) -> CyberTraceConfig:
    fields: dict[str, Any] = {
        "url": url,
        "username": "u",
        "password": Secret("p"),
        "timeout": 10.0,
        "retry": RetryConfig(attempts=2, initial_delay=0.01, max_delay=0.02),
    }
    return CyberTraceConfig(**(fields | overrides))


def feed(url: str, supplier: str = "Demo", extra: str = "") -> str:
    return (
        f"- name: list\n  type: csv\n  url: {url}\n  supplier: {supplier}\n  header: false\n"
        f"{extra}"
    )


async def cycle(
    scripted: Scripted,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Opener,
    lines: list[str],
) -> tuple[Store, list[SupplierReport]]:
    """One cycle of a feed listing ``lines`` into supplier Demo of ``scripted``."""
    url = feed_server.set("l.txt", "".join(f"{line}\n" for line in lines))
    loaded = make_config(scripted.url, feed(url))
    store = open_store(loaded)
    _, suppliers = await sync(loaded, store)
    return store, suppliers


# Suppliers


@pytest.mark.parametrize("status", [400, 404])
async def test_a_listed_supplier_whose_details_cannot_be_read_is_not_created_again(
    scripted: Scripted,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Opener,
    status: int,
) -> None:
    scripted.suppliers.add("Demo")
    refused = orjson.dumps([{"status": "An error occurred while getting the supplier"}])
    scripted.script = when("GET", "/Demo", (status, refused))
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(scripted.url, feed(url))
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None
    assert scripted.requests("POST", "/suppliers") == []
    assert scripted.held["Demo"] == {"a.example"}


async def test_an_unlisted_supplier_is_created_even_if_its_get_answers(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(scripted.url, feed(url), "Demo: {confidence: 9, retention: 60}\n")
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None
    assert scripted.requests("POST", "/suppliers") == [
        [{"name": "Demo", "confidence": 9, "retention": 60}]
    ]


async def test_a_supplier_list_that_is_no_array_is_an_error(scripted: Scripted) -> None:
    scripted.script = when("GET", "/suppliers", (200, b'{"name": "Demo"}'))
    async with CyberTrace(client_config(scripted.url)) as client:
        with pytest.raises(RequestError, match="not a JSON array"):
            await client.supplier_names()


async def test_a_supplier_created_by_someone_else_meanwhile_counts_as_present(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    def race(method: str, path: str, body: Any) -> Reply | None:
        if method == "POST" and path.endswith("/suppliers"):
            scripted.suppliers.add("Demo")  # the other writer won
            return 400, orjson.dumps([{"status": "Supplier Demo already exists"}])
        return None

    scripted.script = race
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(scripted.url, feed(url))
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None
    assert scripted.held["Demo"] == {"a.example"}


# Tags


async def test_each_new_tag_is_created_by_a_request_of_its_own(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(scripted.url, feed(url, extra="  tags: [one, two, three]\n"))
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None
    posts = scripted.requests("POST", "/tags")
    assert posts == [[{"name": n, "weight": 0}] for n in ("ONE", "THREE", "TWO")]


async def test_a_refused_tag_that_exists_now_counts_as_created(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    def elsewhere(method: str, path: str, body: Any) -> Reply | None:
        if method == "POST" and path.endswith("/tags") and body[0]["name"] == "ONE":
            scripted.tags.add("ONE")  # created by another writer between GET and POST
            return 400, orjson.dumps([{"status": "Tag already exists"}])
        return None

    scripted.script = elsewhere
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(scripted.url, feed(url, extra="  tags: [one, two]\n"))
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None and suppliers[0].pending == 0
    assert scripted.tags == {"ONE", "TWO"}


async def test_a_refused_tag_that_does_not_exist_fails_with_the_reason(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    refused = orjson.dumps([{"status": "Invalid tag", "reason": "weight is mandatory"}])
    scripted.script = when("POST", "/tags", (400, refused))
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(scripted.url, feed(url, extra="  tags: [one]\n"))
    _, suppliers = await sync(loaded, open_store(loaded))
    assert "Invalid tag (weight is mandatory)" in (suppliers[0].error or "")
    assert suppliers[0].pending == 1


async def test_a_tag_list_that_is_no_array_is_an_error(scripted: Scripted) -> None:
    scripted.script = lambda m, p, b: (200, b'{"tags": []}') if p.endswith("/tags") else None
    async with CyberTrace(client_config(scripted.url)) as client:
        with pytest.raises(RequestError, match="not a JSON array"):
            await client.tags()


# Answers to indicator requests

UNREADABLE_202 = {
    "not_json": b"<html>partial</html>",
    "empty": b"",
    "object_not_array": b'{"status": "partial", "error_indicators": []}',
    "no_error_indicators": orjson.dumps([{"status": "An error occurred"}]),
    "entry_without_indicator": orjson.dumps(
        [{"status": "partial", "error_indicators": [{"reason": "Invalid indicator format"}]}]
    ),
    "indicator_not_a_string": orjson.dumps(
        [{"status": "partial", "error_indicators": [{"indicator": 7}]}]
    ),
    "names_none": orjson.dumps([{"status": "partial", "error_indicators": []}]),
}


@pytest.mark.parametrize("body", UNREADABLE_202.values(), ids=UNREADABLE_202.keys())
async def test_a_202_that_does_not_say_what_it_refused_confirms_nothing(
    scripted: Scripted, body: bytes
) -> None:
    scripted.script = lambda m, p, b: (202, body) if p.endswith("/indicators") else None
    async with CyberTrace(client_config(scripted.url)) as client:
        outcome = await client.put_indicators("Demo", b'[{"indicator":"a.example"}]')
    assert not outcome.readable
    batch = Batch("PUT", (item(1, "a.example"), item(2, "b.example")))
    assert verdict(batch, outcome).unconfirmed == {1, 2}


async def test_unreadable_202s_leave_the_batch_pending_until_an_answer_confirms_it(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    scripted.suppliers.add("Demo")
    garbled = UNREADABLE_202["no_error_indicators"]
    scripted.script = lambda m, p, b: (202, garbled) if p.endswith("/indicators") else None
    url = feed_server.set("l.txt", "a.example\nb.example\n")
    loaded = make_config(scripted.url, feed(url))
    store = open_store(loaded)
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].pending == 2 and suppliers[0].sent.add == 0
    assert "without saying which indicators it refused" in (suppliers[0].error or "")
    assert store.acked_values("Demo") == {}
    scripted.script = lambda m, p, b: None
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].error is None and suppliers[0].pending == 0
    assert store.acked_values("Demo").keys() == {"a.example", "b.example"}


async def test_a_refusal_echoed_unlike_any_value_sent_is_split_out(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    scripted.suppliers.add("Demo")

    def echo_otherwise(method: str, path: str, body: Any) -> Reply | None:
        if path.endswith("/indicators") and any(i["indicator"] == "c.example" for i in body):
            entry = {"indicator": "C.EXAMPLE/%", "reason": "Invalid indicator format"}
            return 202, orjson.dumps([{"status": "partial", "error_indicators": [entry]}])
        return None

    scripted.script = echo_otherwise
    lines = ["a.example", "b.example", "c.example", "d.example"]
    store, suppliers = await cycle(scripted, feed_server, make_config, open_store, lines)
    assert store.acked_values("Demo").keys() == {"a.example", "b.example", "d.example"}
    assert store.rejected("Demo") == [("c.example", "add", "Invalid indicator format")]
    assert suppliers[0].pending == 0


async def test_a_request_level_400_never_becomes_a_rejection(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    scripted.suppliers.add("Demo")
    refused = orjson.dumps([{"status": "An error occurred while adding indicators"}])
    scripted.script = lambda m, p, b: (400, refused) if p.endswith("/indicators") else None
    lines = [f"v{i}.example" for i in range(300)]
    store, suppliers = await cycle(scripted, feed_server, make_config, open_store, lines)
    assert suppliers[0].pending == 300 and suppliers[0].rejected == 0
    assert store.rejected("Demo") == []
    assert "An error occurred while adding indicators" in (suppliers[0].error or "")
    # Halving is bounded: far fewer requests than one per indicator.
    assert len(scripted.requests("PUT", "/indicators")) <= 40


async def test_one_indicator_spoiling_its_batch_is_isolated_and_rejected(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    scripted.suppliers.add("Demo")

    def spoiled(method: str, path: str, body: Any) -> Reply | None:
        if path.endswith("/indicators") and any(i["indicator"] == "v77.example" for i in body):
            return 400, orjson.dumps([{"status": "Bad request", "reason": "context too large"}])
        return None

    scripted.script = spoiled
    url = feed_server.set("l.txt", "".join(f"v{i}.example\n" for i in range(200)))
    loaded = make_config(scripted.url, feed(url))
    store = open_store(loaded)
    await sync(loaded, store)
    assert len(store.acked_values("Demo")) == 199
    [(value, op, reason)] = store.rejected("Demo")
    assert (value, op) == ("v77.example", "add") and "context too large" in reason
    assert len(scripted.requests("PUT", "/indicators")) <= 2 * 8 + 1
    # --resync re-sends rejected indicators too.
    scripted.script = lambda m, p, b: None
    await sync(loaded, store, resync=True)
    assert store.rejected("Demo") == [] and len(store.acked_values("Demo")) == 200


@pytest.mark.parametrize("status", [400, 404])
async def test_a_supplier_deleted_during_the_upload_is_created_again_and_refilled(
    scripted: Scripted,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Opener,
    status: int,
) -> None:
    sent = [0]

    def operator(method: str, path: str, body: Any) -> Reply | None:
        if method == "PUT" and path.endswith("/indicators"):
            sent[0] += 1
            if sent[0] == 3:
                scripted.suppliers.discard("Demo")  # deleted by hand, with what it held
                scripted.held.pop("Demo", None)
            if "Demo" not in scripted.suppliers:
                return status, orjson.dumps([{"status": "An error occurred"}])
        return None

    scripted.script = operator
    url = feed_server.set("l.txt", "".join(f"v{i}.example\n" for i in range(50)))
    loaded = make_config(
        scripted.url, feed(url), cybertrace="max_batch_indicators: 10\nconcurrency: 1\n"
    )
    store = open_store(loaded)
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].error is None and suppliers[0].pending == 0
    assert scripted.held["Demo"] == {f"v{i}.example" for i in range(50)}
    assert store.rejected("Demo") == []


def test_only_an_indicator_level_does_not_exist_completes_a_delete() -> None:
    assert absent("Indicator doesn't exist")
    assert absent("Indicator does not exist")
    assert absent("indicator not found")
    assert not absent("Supplier doesn't exist")
    assert not absent("The supplier does not exist")
    assert not absent("Internal error")
    assert not absent("Invalid indicator format")


async def test_errors_show_the_documented_status_and_reason(scripted: Scripted) -> None:
    answer = orjson.dumps([{"status": "An error occurred", "reason": "Supplier is read-only"}])
    scripted.script = lambda m, p, b: (500, answer)
    async with CyberTrace(client_config(scripted.url)) as client:
        with pytest.raises(RequestError) as info:
            await client.supplier_names()
    assert "An error occurred (Supplier is read-only)" in str(info.value)
    assert info.value.status == 500


# 425: still initializing


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_two_minute_425_storm_is_ridden_out(scripted: Scripted) -> None:
    time = FakeTime()
    start = time.now
    initializing = orjson.dumps([{"status": "Kaspersky CyberTrace is initializing"}])
    scripted.script = lambda m, p, b: (425, initializing) if time.now < start + 120 else None
    config = client_config(scripted.url, retry=RetryConfig(5, 1.0, 10.0))
    async with CyberTrace(config, sleep=time.sleep, clock=time.clock) as client:
        assert "InternalTI" in await client.supplier_names()
    assert time.now >= start + 120
    assert 12 <= len(scripted.log) <= 200


async def test_425_beyond_its_budget_fails_the_request(scripted: Scripted) -> None:
    time = FakeTime()
    initializing = orjson.dumps([{"status": "Kaspersky CyberTrace is initializing"}])
    scripted.script = lambda m, p, b: (425, initializing)
    config = client_config(scripted.url, retry=RetryConfig(5, 1.0, 10.0, initializing=60.0))
    async with CyberTrace(config, sleep=time.sleep, clock=time.clock) as client:
        with pytest.raises(RequestError, match="425"):
            await client.supplier_names()
    assert 59.0 <= time.now - 1000.0 <= 61.0


async def test_a_425_storm_of_over_a_thousand_waits_neither_overflows_nor_gives_up(
    scripted: Scripted,
) -> None:
    # The loader's bounds allow max_delay 1 s with initializing 1 d: thousands of waits.
    time = FakeTime()
    initializing = orjson.dumps([{"status": "Kaspersky CyberTrace is initializing"}])
    scripted.script = lambda m, p, b: (425, initializing) if len(scripted.log) <= 1100 else None
    config = client_config(scripted.url, retry=RetryConfig(5, 1.0, 1.0, initializing=86400.0))
    async with CyberTrace(config, sleep=time.sleep, clock=time.clock) as client:
        assert "InternalTI" in await client.supplier_names()
    assert len(scripted.log) > 1100


# Tenants


async def test_auto_version_below_1_3_with_a_tenant_is_refused(scripted: Scripted) -> None:
    scripted.script = lambda m, p, b: (404, b"[]") if p.startswith("/api/1.3/") else None
    config = client_config(scripted.url, api_version="auto", tenant="acme")
    async with CyberTrace(config) as client:
        with pytest.raises(CyberTraceError, match="no tenants"):
            await client.resolve_version()


async def test_tenant_names_are_one_escaped_path_segment(scripted: Scripted) -> None:
    config = client_config(scripted.url, api_version="1.3", tenant="Blue Team")
    async with CyberTrace(config) as client:
        await client.supplier("InternalTI")
        await client.put_indicators("InternalTI", b'[{"indicator":"a.example"}]')
        await client.supplier_names()
    assert scripted.raw_paths == [
        "/api/1.3/Blue%20Team/suppliers/InternalTI",
        "/api/1.3/Blue%20Team/suppliers/InternalTI/indicators",
        "/api/1.3/suppliers",
    ]


def item(item_id: int, value: str, op: str = "add") -> Item:
    return Item(item_id, value, op, 1, orjson.dumps({"indicator": value}))


def test_outcome_defaults_are_readable() -> None:
    assert Outcome(201).readable


async def test_a_tag_deleted_after_it_was_ensured_is_created_again_on_refusal(
    scripted: Scripted, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    scripted.suppliers.add("Demo")
    deleted = [False]

    def operator(method: str, path: str, body: Any) -> Reply | None:
        if method == "PUT" and path.endswith("/indicators"):
            if not deleted[0]:
                deleted[0] = True
                scripted.tags.discard("ONE")  # an operator removes it just before the PUT
            if "ONE" not in scripted.tags:
                return 400, orjson.dumps([{"status": "Unknown tag", "reason": "ONE"}])
        return None

    scripted.script = operator
    url = feed_server.set("l.txt", "a.example\nb.example\n")
    loaded = make_config(scripted.url, feed(url, extra="  tags: [one]\n"))
    store = open_store(loaded)
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].error is None and suppliers[0].pending == 0
    assert len(scripted.requests("POST", "/tags")) == 2
    assert store.rejected("Demo") == []
    assert scripted.held["Demo"] == {"a.example", "b.example"}
