"""A broken feed leaves its supplier as it was; two feeds share a supplier; the guard holds."""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import PASSWORD, ConfigFactory, FeedServer, run_cli
from samples import sample
from structlog.testing import capture_logs
from test_daemon import eventually
from test_sync import sync

from feedsync.config import Config, FeedConfig
from feedsync.emulator import Emulator
from feedsync.model import Body, Invalid, Record, Validators
from feedsync.sources import CsvSource, Source, source_for
from feedsync.store import Store
from feedsync.sync import Cycle, spool_dir

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


# Whatever a source raises, and however slowly a server answers, fails that feed alone.

TWO_SUPPLIERS = "Demo: {confidence: 50}\nOther: {confidence: 50}\n"


class Raising:
    """A source whose fetch or records raise what no feedsync code translated."""

    lines = None  # read record by record, so that records() is what raises

    def __init__(self, feed: FeedConfig, fetch: BaseException | None, parse: Exception | None):
        self.inner = CsvSource(feed)
        self.fetch_error = fetch
        self.parse_error = parse

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        if self.fetch_error is not None:
            raise self.fetch_error
        return await self.inner.fetch(previous, spool)

    def records(self, body: Body) -> Iterator[Record | Invalid]:
        for record in self.inner.records(body):
            yield record
            if self.parse_error is not None:
                raise self.parse_error


def raising_sources(errors: dict[str, tuple[BaseException | None, Exception | None]]) -> Any:
    def sources(feed: FeedConfig) -> Source:
        if feed.name in errors:
            return Raising(feed, *errors[feed.name])
        return source_for(feed)

    return sources


async def test_any_exception_fails_its_feed_alone(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    good = feed_server.set("good.txt", "good.example\n")
    other = feed_server.set("other.txt", "other.example\n")
    feeds = (
        feed("deep", feed_server.set("deep.txt", GOOD))
        + feed("keyed", feed_server.set("keyed.txt", GOOD))
        + feed("long", feed_server.set("long.txt", GOOD))
        + feed("good", good)
        + feed("other", other).replace("supplier: Demo", "supplier: Other")
    )
    loaded = make_config(emulator.url, feeds, TWO_SUPPLIERS)
    store = open_store(loaded)
    too_long = OSError(36, "File name too long", "x" * 5000)
    sources = raising_sources(
        {
            "deep": (RecursionError("maximum recursion depth exceeded"), None),
            "keyed": (None, KeyError("Attribute")),
            "long": (
                OSError(f"cannot open https://me:pw@misp.example/events?key=SECRET {too_long}"),
                None,
            ),
        }
    )
    with capture_logs() as logged:
        reports, suppliers = await Cycle(loaded, store, sources=sources).run(())
    by_name = {r.feed: r for r in reports}
    assert by_name["good"].result == by_name["other"].result == "ok"
    assert set(emulator.indicators("Demo")) == {"good.example"}
    assert set(emulator.indicators("Other")) == {"other.example"}
    assert [s.error for s in suppliers] == [None, None]
    expected = {
        "deep": ("fetch", "RecursionError: maximum recursion depth"),
        "keyed": ("parse", "KeyError: 'Attribute'"),
        "long": ("fetch", "OSError: cannot open https://misp.example/events?..."),
    }
    for name, (stage, error) in expected.items():
        report = by_name[name]
        assert (report.result, report.stage) == ("failed", stage), report
        assert report.error is not None and report.error.startswith(error), report.error
        assert "SECRET" not in report.error and "pw" not in report.error
        assert len(report.error) < 400
        row = store.feed(name, "Demo")
        assert row.last_error == report.error, "recorded in the run history"
        assert row.indicators == 0, "nothing of the failed feed was applied"
        [entry] = [e for e in logged if e.get("feed") == name and "exc_info" in e]
        assert entry["log_level"] == "error" and entry["error"] == report.error
        assert isinstance(entry["exc_info"], BaseException), "logged with its traceback"


async def test_a_file_where_the_spool_should_be_fails_only_the_downloads(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
) -> None:
    local = tmp_path / "local.txt"
    local.write_text("local.example\n")
    feeds = feed("remote", feed_server.set("remote.txt", GOOD)) + feed("local", str(local))
    loaded = make_config(emulator.url, feeds, SUPPLIER)
    store = open_store(loaded)
    spool_dir(loaded).write_text("not a directory\n")
    reports, suppliers = await sync(loaded, store)
    by_name = {r.feed: r for r in reports}
    assert (by_name["remote"].result, by_name["remote"].stage) == ("failed", "fetch")
    assert by_name["local"].result == "ok"
    assert set(emulator.indicators("Demo")) == {"local.example"}
    assert suppliers[0].error is None


class SlowServer:
    """Feeds that send one byte a second, and a feed that answers at once."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_get("/slow.txt", self.slow)
        self.app.router.add_get("/fast.txt", self.fast)
        self.runner = web.AppRunner(self.app)
        self.url = ""
        self.sent = 0

    async def slow(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        # Long enough that a cycle waiting for the whole body outlasts the test's bounds.
        for _ in range(45):
            await response.write(b"slow.example\n"[self.sent % 13 : self.sent % 13 + 1])
            self.sent += 1
            await asyncio.sleep(1)
        return response

    async def fast(self, _request: web.Request) -> web.Response:
        return web.Response(text="fast.example\n")

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"


@pytest.fixture
async def slow_server() -> AsyncIterator[SlowServer]:
    server = SlowServer()
    await server.start()
    yield server
    await server.runner.cleanup()


def slow_feeds(server: SlowServer, timeout: float) -> str:
    return (
        feed("slow", f"{server.url}/slow.txt").replace("supplier: Demo", "supplier: Other")
        + f"  timeout: {timeout}\n"
        + feed("fast", f"{server.url}/fast.txt")
    )


async def test_slow_feed_fails_on_its_timeout_and_delays_no_other_supplier(
    emulator: Emulator,
    slow_server: SlowServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    loaded = make_config(emulator.url, slow_feeds(slow_server, 3), TWO_SUPPLIERS)
    store = open_store(loaded)
    cycle = asyncio.create_task(sync(loaded, store))
    await eventually(lambda: "fast.example" in emulator.indicators("Demo"), 20)
    assert not cycle.done(), "Demo's upload did not wait for Other's slow feed"
    reports, _ = await asyncio.wait_for(cycle, 30)
    by_name = {r.feed: r for r in reports}
    slow = by_name["slow"]
    assert (slow.result, slow.stage) == ("failed", "fetch")
    assert "within 3 s" in (slow.error or "")
    assert slow_server.sent < 20, "the timeout bounds the whole download"
    assert list(spool_dir(loaded).glob("*.body")) == [], "the partial body is discarded"
    assert store.feed("slow", "Other").indicators == 0
    assert emulator.indicators("Other") == {}
    assert by_name["fast"].result == "ok"


async def test_cycle_deadline_bounds_fetches_whatever_their_timeout(
    emulator: Emulator,
    slow_server: SlowServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    loaded = make_config(emulator.url, slow_feeds(slow_server, 300), TWO_SUPPLIERS)
    store = open_store(loaded)
    run = Cycle(loaded, store, deadline=3).run(())
    reports, _ = await asyncio.wait_for(run, 30)
    by_name = {r.feed: r for r in reports}
    assert by_name["slow"].result == "failed"
    assert "deadline of 3 s" in (by_name["slow"].error or "")
    assert by_name["fast"].result == "ok"
    assert list(spool_dir(loaded).glob("*.body")) == []


async def test_feedsync_sync_ends_on_the_feed_timeout(
    emulator: Emulator, slow_server: SlowServer, make_config: ConfigFactory
) -> None:
    loaded = make_config(emulator.url, slow_feeds(slow_server, 2), TWO_SUPPLIERS)
    os.environ.setdefault("CT_PASSWORD", PASSWORD)
    code = await asyncio.wait_for(run_cli("sync", "-c", loaded.path), 30)
    assert code != 0, "a failed feed fails the command"
    assert "fast.example" in emulator.indicators("Demo")


# A body cut at a line boundary, before the footer its format always has.


class ClosingServer:
    """A real HTTP server on 127.0.0.1 that sends ``body`` with no length and no
    chunks and then closes: where the body ends is where the connection did."""

    def __init__(self) -> None:
        self.body = b""
        self.url = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/csv\r\n\r\n"
        writer.write(head + self.body)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> ClosingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/ipblocklist.csv"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


FEODO = """\
- name: feodo
  type: csv
  url: {url}
  supplier: Feodo
  indicator: dst_ip
  context: {{malware: malware}}
{extra}"""


async def test_a_feodo_list_cut_before_its_footer_changes_nothing(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    whole = sample("csv/feodo_ipblocklist_20240404.csv").read_bytes()
    # The last five rows and the "# END 28 entries" footer lost, every line whole: few
    # enough removals that the shrink guard would let them through.
    lines = whole.splitlines(keepends=True)
    cut = b"".join(lines[:-6])
    async with ClosingServer() as server:
        loaded = make_config(
            emulator.url,
            FEODO.format(url=server.url, extra='  footer: "# END"\n'),
            "Feodo: {confidence: 90}\n",
        )
        store = open_store(loaded)
        server.body = whole
        feeds, _ = await sync(loaded, store)
        assert (feeds[0].result, feeds[0].change.fetched) == ("ok", 28)
        before = dict(emulator.indicators("Feodo"))
        assert len(before) == 28

        server.body = cut
        emulator.clear_log()
        feeds, _ = await sync(loaded, store)
    report = feeds[0]
    assert (report.feed, report.result, report.stage) == ("feodo", "failed", "fetch")
    assert "body does not end with its footer '# END'" in (report.error or "")
    assert "its last line is '\"2024-03-26" in (report.error or "")
    assert emulator.indicator_requests() == []
    assert emulator.indicators("Feodo").keys() == before.keys()
    assert store.feed("feodo", "Feodo").indicators == 28


async def test_a_footer_declaring_more_entries_than_the_body_holds_fails(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    # This SSLBL copy lost rows upstream but kept its "# END (295) entries" footer.
    body = sample("csv/sslbl_sslblacklist_v1.csv").read_bytes()
    feed = "- {{name: sslbl, type: csv, url: {url}, supplier: SSLBL, indicator: SHA1,{extra}}}\n"
    async with ClosingServer() as server:
        server.body = body
        strict = make_config(emulator.url, feed.format(url=server.url, extra=" footer: '# END'"))
        store = open_store(strict)
        feeds, _ = await sync(strict, store)
        assert feeds[0].result == "failed"
        assert "declares 295 entries, the body holds 285 rows" in (feeds[0].error or "")
        assert emulator.indicators("SSLBL") == {}
        extra = " footer: '# END', footer_count: false"
        lenient = make_config(emulator.url, feed.format(url=server.url, extra=extra))
        feeds, _ = await sync(lenient, store)
    assert (feeds[0].result, feeds[0].change.fetched) == ("ok", 285)
