"""Feed downloads retried within a cycle: connection failures, timeouts, 408/425/429
(Retry-After honoured) and 5xx, with backoff, inside the feed's budget and timeout."""

from __future__ import annotations

import asyncio
import copy
import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import ConfigFactory, free_port
from samples import sample
from test_mispapi import FakeMisp
from test_mispapi import feed as misp_feed
from test_sync import sync

from feedsync import config, logs
from feedsync.config import Config, ConfigError, FeedRetryConfig
from feedsync.emulator import Emulator
from feedsync.metrics import REGISTRY
from feedsync.sources.retry import backoff, retry_after, transient
from feedsync.store import Store

GOOD = "".join(f"retried-{i}.example\n" for i in range(6))
SUPPLIER = "Demo: {confidence: 1}\n"
QUICK = "retry: {attempts: 3, initial_delay: 0.05, max_delay: 0.2}"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ok(_request: web.Request) -> Awaitable[web.StreamResponse]:
    return answer(200, GOOD)


async def answer(status: int, text: str = "", **headers: str) -> web.StreamResponse:
    return web.Response(status=status, text=text, headers=headers)


def status(code: int, **headers: str) -> Handler:
    return lambda _request: answer(code, "try later", **headers)


async def cut_short(request: web.Request) -> web.StreamResponse:
    """Half the promised body, then the connection goes: a reset mid-download."""
    response = web.StreamResponse(headers={"Content-Length": "10000"})
    await response.prepare(request)
    await response.write(GOOD[:20].encode())
    assert request.transport is not None
    request.transport.close()
    return response


class Flaky:
    """A feed server that answers with ``script`` in turn (the last one from then
    on) and records when each request arrived."""

    def __init__(self, *script: Handler) -> None:
        self.script = list(script)
        self.arrived: list[float] = []
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.arrived.append(time.monotonic())
        handler = self.script[min(len(self.arrived), len(self.script)) - 1]
        return await handler(request)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{name:.*}", self.serve)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrived, self.arrived[1:], strict=False)]


@pytest.fixture
async def flaky() -> AsyncIterator[Flaky]:
    server = Flaky(ok)
    await server.start()
    yield server
    await server.stop()


def feed(url: str, extra: str = QUICK) -> str:
    lines = "".join(f"  {line}\n" for line in extra.splitlines())
    return f"- name: flaky\n  type: csv\n  url: {url}\n  supplier: Demo\n{lines}"


def retries(name: str = "flaky") -> float:
    return REGISTRY.get_sample_value("feedsync_feed_fetch_retries_total", {"feed": name}) or 0.0


async def first_sync(loaded: Config, store: Store, emulator: Emulator) -> None:
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    assert len(emulator.indicators("Demo")) == 6
    emulator.clear_log()


async def test_a_feed_that_fails_twice_then_answers_is_synced(
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure(level="info", json=True)
    flaky.script = [cut_short, status(503), ok]
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed"), SUPPLIER)
    before = retries()
    feeds, suppliers = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "ok", feeds[0].error
    assert suppliers[0].error is None
    assert len(flaky.arrived) == 3
    assert len(emulator.indicators("Demo")) == 6
    assert retries() - before == 2
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    logged = [line for line in lines if line["event"] == "feed.fetch_retry"]
    assert [(e["level"], e["feed"], e["attempt"]) for e in logged] == [
        ("warning", "flaky", 1),
        ("warning", "flaky", 2),
    ]
    assert "cut short" in logged[0]["error"]
    assert "HTTP 503" in logged[1]["error"]


async def test_a_server_down_at_first_is_reached_on_a_retry(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    port = free_port()
    server = Flaky(ok)

    async def come_up() -> None:
        await asyncio.sleep(0.3)
        await server.start(port)

    loaded = make_config(
        emulator.url,
        feed(f"http://127.0.0.1:{port}/feed", "retry: {attempts: 4, initial_delay: 0.4}"),
        SUPPLIER,
    )
    starting = asyncio.create_task(come_up())
    try:
        feeds, _ = await sync(loaded, open_store(loaded))
        assert feeds[0].result == "ok", feeds[0].error
        assert len(emulator.indicators("Demo")) == 6
    finally:
        await starting
        await server.stop()


async def test_a_feed_that_always_fails_gives_up_after_its_budget(
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed"), SUPPLIER)
    store = open_store(loaded)
    await first_sync(loaded, store, emulator)
    flaky.script = [status(503)]
    flaky.arrived.clear()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "failed"
    assert f"HTTP 503 from {flaky.url}/feed (tried 3 times)" in (feeds[0].error or "")
    assert len(flaky.arrived) == 3
    assert emulator.indicator_requests() == [], "the supplier is not touched"
    assert store.feed("flaky", "Demo").indicators == 6


def http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_waits_as_long_as_retry_after_says(
    form: str,
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    async def refuse(_request: web.Request) -> web.StreamResponse:
        # An HTTP-date has whole seconds: 2.5 s ahead is at least 1.5 s after the 429.
        when = "2" if form == "seconds" else http_date(2.5)
        return await answer(429, "slow down", **{"Retry-After": when})

    flaky.script = [refuse, ok]
    extra = "retry: {attempts: 2, initial_delay: 0.01, max_delay: 5}"
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed", extra), SUPPLIER)
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "ok", feeds[0].error
    [gap] = flaky.gaps
    assert gap >= 1.5, f"retried {gap:.2f} s after the 429"
    assert gap < 4.5


async def test_retry_after_beyond_max_delay_ends_the_fetch_at_once(
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    flaky.script = [status(503, **{"Retry-After": "3600"}), ok]
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed"), SUPPLIER)
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed"
    assert "asks for 3600 s before a retry, longer than retry.max_delay (0.2 s)" in (
        feeds[0].error or ""
    )
    assert len(flaky.arrived) == 1


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 501])
async def test_final_answers_are_not_retried(
    code: int,
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    flaky.script = [status(code), ok]
    before = retries()
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed"), SUPPLIER)
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed"
    assert f"HTTP {code}" in (feeds[0].error or "")
    assert "(tried" not in (feeds[0].error or "")
    assert len(flaky.arrived) == 1
    assert retries() == before


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 504])
async def test_transient_answers_are_retried(
    code: int,
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    flaky.script = [status(code), ok]
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed"), SUPPLIER)
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "ok", feeds[0].error
    assert len(flaky.arrived) == 2


async def test_retries_stay_inside_the_feed_timeout(
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    flaky.script = [status(503)]
    extra = "timeout: 2\nretry: {attempts: 10, initial_delay: 0.8, max_delay: 0.8}"
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed", extra), SUPPLIER)
    feeds, _ = await sync(loaded, open_store(loaded))
    error = feeds[0].error or ""
    assert feeds[0].result == "failed"
    # The real cause, not "no complete body within 2 s": no wait began that would end
    # past the timeout (a wall-clock bound here would measure the machine's load).
    assert "HTTP 503" in error and "the next would start past the feed's timeout" in error, error
    assert 2 <= len(flaky.arrived) < 10


async def test_attempts_1_never_retries(
    flaky: Flaky,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    flaky.script = [status(503), ok]
    loaded = make_config(emulator.url, feed(f"{flaky.url}/feed", "retry: {attempts: 1}"), SUPPLIER)
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed"
    assert len(flaky.arrived) == 1


async def test_misp_api_pages_are_retried(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[[Config], Store]
) -> None:
    event = json.loads(sample("misp/misp_tests_event_regin.json").read_text())["Event"]
    summary = {"id": event["id"], "uuid": event["uuid"], "info": event["info"]}
    attributes: list[dict[str, Any]] = [
        {**a, "deleted": False, "Event": summary} for a in event["Attribute"]
    ]
    fake = FakeMisp(copy.deepcopy(attributes))
    server = Flaky(status(502), fake.rest_search, status(503), fake.rest_search)
    await server.start()
    try:
        feeds_yaml = misp_feed(server.url).replace(
            "supplier: MISP,", "supplier: MISP, retry: {initial_delay: 0.05},"
        )
        loaded = make_config(emulator.url, feeds_yaml, "MISP: {confidence: 70}\n")
        before = retries("misp")
        feeds, _ = await sync(loaded, open_store(loaded))
        assert feeds[0].result == "ok", feeds[0].error
        assert retries("misp") - before >= 2
    finally:
        await server.stop()


# Settings and rules


def parsed(retry_yaml: str | None) -> FeedRetryConfig:
    entry = f", retry: {retry_yaml}" if retry_yaml is not None else ""
    text = (
        "cybertrace: {url: 'http://127.0.0.1:1', username: u, password: p}\n"
        f"feeds:\n- {{name: f, type: csv, url: /dev/null, supplier: FalsePositive{entry}}}\n"
    )
    return config.parse(text, env={}).feeds[0].retry


def test_retry_settings() -> None:
    assert parsed(None) == FeedRetryConfig(attempts=3, initial_delay=1.0, max_delay=30.0)
    assert parsed("{attempts: 5, initial_delay: 2s, max_delay: 1m}") == FeedRetryConfig(
        5, 2.0, 60.0
    )
    assert parsed("{initial_delay: 45}") == FeedRetryConfig(3, 45.0, 45.0)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{attempts: 0}", "out of range"),
        ("{attempts: 2.5}", "expected an integer"),
        ("{initial_delay: 0}", "not a positive duration"),
        ("{initial_delay: 10, max_delay: 5}", "shorter than initial_delay"),
        ("{tries: 3}", "unknown key"),
        ("3", "expected a mapping"),
    ],
)
def test_bad_retry_settings_are_refused(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parsed(value)
    assert caught.value.path.startswith("feeds[0].retry"), caught.value
    assert fragment in str(caught.value)


def test_which_statuses_may_pass() -> None:
    assert [s for s in range(400, 600) if transient(s)] == [
        408,
        425,
        429,
        500,
        502,
        503,
        504,
        *range(506, 600),
    ]


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert retry_after("120", now) == 120.0
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after("-5", now) is None
    assert retry_after(None, now) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = FeedRetryConfig(attempts=10, initial_delay=1.0, max_delay=8.0)
    for failed, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {backoff(policy, failed, None) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "jitter"
    assert backoff(policy, 1, 5.0) == 5.0
    assert backoff(policy, 1, 20.0) == 8.0
