"""A CyberTrace that fails, throttles, resets and refuses: feedsync converges without hammering."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest
from conftest import Clock as HandClock
from conftest import ConfigFactory, FeedServer
from test_sync import sync

from feedsync.config import Config
from feedsync.cybertrace import DELETE_LIMIT, PUT_LIMIT, CyberTrace
from feedsync.emulator import Emulator
from feedsync.emulator.faults import Faults
from feedsync.errors import AuthError, RequestError
from feedsync.store import Store, story

Opener = Callable[[Config], Store]
FAST_RETRY = "retry: {attempts: 4, initial_delay: 0.001, max_delay: 0.01}\n"


def listing(values: list[str]) -> str:
    return "".join(f"{v}\n" for v in values)


def feed(url: str, supplier: str = "Demo", ratio: float = 0.5) -> str:
    return (
        f"- name: list\n  type: csv\n  url: {url}\n  supplier: {supplier}\n"
        f"  tags: [storm]\n  max_delete_ratio: {ratio}\n"
    )


async def converge(loaded: Config, store: Store, rounds: int = 8) -> int:
    """Sync until a cycle ends clean; returns how many cycles it took."""
    for attempt in range(1, rounds + 1):
        _, suppliers = await sync(loaded, store)
        if not suppliers[0].error and suppliers[0].pending == 0:
            return attempt
    raise AssertionError(f"no convergence in {rounds} cycles")


async def test_fault_storm_converges_for_adds_and_deletes(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    first = [f"host-{i:04d}.example" for i in range(600)]
    url = feed_server.set("l.txt", listing(first))
    loaded = make_config(
        emulator.url,
        feed(url, ratio=1.0),
        "Demo: {confidence: 5}\n",
        cybertrace=FAST_RETRY + "max_batch_indicators: 25\nconcurrency: 4\n",
    )
    store = open_store(loaded)
    emulator.faults = Faults(
        rate=0.3, statuses=(500, 429, 425, 503), after_apply=0.1, reset=0.05, seed=7
    )
    await converge(loaded, store)
    assert emulator.indicators("Demo").keys() == set(first)

    second = first[240:] + [f"new-{i:03d}.example" for i in range(100)]
    feed_server.set("l.txt", listing(second))
    await converge(loaded, store)
    assert emulator.indicators("Demo").keys() == set(second)
    assert all(i.tags == {"STORM"} for i in emulator.indicators("Demo").values())

    state = emulator.fault_state
    assert state is not None
    assert {"500_after_apply", "reset", "429"} <= set(state.injected)
    for request in emulator.indicator_requests():
        limit = DELETE_LIMIT if request.method == "DELETE" else PUT_LIMIT
        assert len(request.body) <= limit
        assert len(orjson.loads(request.body)) <= 25


async def test_acknowledged_state_never_claims_more_than_confirmed(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", listing([f"v{i}.example" for i in range(50)]))
    loaded = make_config(emulator.url, feed(url), "Demo: {confidence: 5}\n", cybertrace=FAST_RETRY)
    store = open_store(loaded)
    emulator.faults = Faults(rate=1.0, statuses=(503,))
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].error
    assert store.acked_values("Demo") == {}
    assert suppliers[0].pending == 50


async def test_retry_after_is_honoured_and_attempts_bounded(
    emulator: Emulator, make_config: ConfigFactory
) -> None:
    loaded = make_config(
        emulator.url,
        feed("/dev/null"),
        "Demo: {confidence: 5}\n",
        cybertrace="retry: {attempts: 3, initial_delay: 0.01, max_delay: 30}\n",
    )
    emulator.add_supplier("Demo")
    emulator.faults = Faults(rate=1.0, statuses=(429,), retry_after=7)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with CyberTrace(loaded.cybertrace, sleep=sleep) as client:
        with pytest.raises(RequestError) as info:
            await client.put_indicators("Demo", b'[{"indicator":"a.example"}]')
    assert info.value.status == 429
    assert slept == [7, 7]
    assert len(emulator.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 406])
async def test_no_retry_for_client_errors(
    emulator: Emulator, make_config: ConfigFactory, status: int
) -> None:
    loaded = make_config(
        emulator.url, feed("/dev/null"), "Demo: {confidence: 5}\n", cybertrace=FAST_RETRY
    )
    emulator.faults = Faults(rate=1.0, statuses=(status,), everywhere=True)
    async with CyberTrace(loaded.cybertrace) as client:
        with pytest.raises(AuthError if status in (401, 403) else RequestError) as info:
            await client.put_indicators("Demo", b'[{"indicator":"a.example"}]')
    assert len(emulator.requests) == 1
    if status == 403:
        assert "role" in str(info.value)


async def test_bad_batch_is_bisected_to_the_culprits(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    values = [f"v{i:02d}.example" for i in range(40)]
    url = feed_server.set("l.txt", listing(values))
    loaded = make_config(emulator.url, feed(url), "Demo: {confidence: 5}\n", cybertrace=FAST_RETRY)
    store = open_store(loaded)
    emulator.faults = Faults(reject_values=frozenset({"v07.example", "v31.example"}))
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].error is None
    assert emulator.indicators("Demo").keys() == set(values) - {"v07.example", "v31.example"}
    assert {v for v, _op, _r in store.rejected("Demo")} == {"v07.example", "v31.example"}
    assert "400" in store.rejected("Demo")[0][2]
    emulator.clear_log()
    await sync(loaded, store)
    assert emulator.indicator_requests() == [], "rejected values are not re-sent unchanged"


async def test_api_version_auto_and_tenants(
    feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    old = Emulator(user="feedsync", password="s3cret-Pa55", api_versions=("1.0", "1.1"))
    await old.start()
    try:
        url = feed_server.set("l.txt", "a.example\n")
        loaded = make_config(old.url, feed(url), "Demo: {confidence: 5}\n", api_version="auto")
        await sync(loaded, open_store(loaded))
        assert {r.version for r in old.requests if r.status != 404} == {"1.1"}
        assert old.indicators("Demo")["a.example"].tags == {"STORM"}
    finally:
        await old.stop()


async def test_resync_resends_everything_after_a_restore(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\nb.example\n")
    # Without the canary (tests/sync/test_canary.py finds a restore by itself), only --resync.
    loaded = make_config(emulator.url, feed(url), "Demo: {confidence: 5}\n", "canary: false\n")
    store = open_store(loaded)
    await sync(loaded, store)
    supplier = emulator.supplier("Demo")
    assert supplier is not None
    supplier.indicators.clear()  # CyberTrace restored from an old backup
    await sync(loaded, store)
    assert emulator.indicators("Demo") == {}, "nothing changed as far as feedsync knows"
    _, suppliers = await sync(loaded, store, resync=True)
    assert suppliers[0].sent.add == 2
    assert emulator.indicators("Demo").keys() == {"a.example", "b.example"}


@dataclass(frozen=True, slots=True)
class Stepped:
    """feedsync's Clock on the test's: wall time is ``clock.now``, moved by hand."""

    clock: HandClock

    def now(self) -> float:
        return self.clock.now


async def test_retention_refresh_keeps_indicators_alive(
    emu: Emulator, clock: HandClock, feed_server: FeedServer, make_config: ConfigFactory
) -> None:
    # One clock for both sides: the emulator's (its retention) and the store's
    # (acknowledgement stamps, refresh deadlines), moved by the test alone.
    values = [f"v{i:03d}.example" for i in range(200)]
    url = feed_server.set("l.txt", listing(values))
    loaded = make_config(emu.url, feed(url), "Demo: {confidence: 5, retention: 1}\n")
    store = Store.open(loaded.state.path, clock=Stepped(clock))
    try:
        await sync(loaded, store)
        emu.clear_log()
        clock.now += 10
        await sync(loaded, store)
        assert emu.indicator_requests() == [], "nothing is due a sixth of the retention in"
        refreshed = []
        for _ in range(6):
            clock.now += 25
            emu.clear_log()
            _, suppliers = await sync(loaded, store)
            refreshed.append(suppliers[0].refreshed)
            assert sum(len(r.json) for r in emu.indicator_requests("PUT")) == refreshed[-1]  # type: ignore[arg-type]
            assert emu.indicators("Demo").keys() == set(values), "none ever expires"
        assert sum(refreshed) >= 200 * 3
        assert any(0 < count < 200 for count in refreshed), "deadlines are spread, not one burst"
        # The emulator does read the moved clock: without a cycle, the retention runs out.
        clock.now += 61
        assert emu.indicators("Demo") == {}, "expired once nothing refreshes them"
    finally:
        store.close()


async def test_concurrency_is_bounded(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", listing([f"v{i:03d}.example" for i in range(300)]))
    loaded = make_config(
        emulator.url,
        feed(url),
        "Demo: {confidence: 5}\n",
        cybertrace="concurrency: 2\nmax_batch_indicators: 10\nretry: {attempts: 1}\n",
    )
    emulator.faults = Faults(latency=0.02, max_concurrent=2)
    _, suppliers = await sync(loaded, open_store(loaded))
    assert suppliers[0].error is None
    assert emulator.fault_state is not None and emulator.fault_state.injected == {}
    assert len(emulator.indicator_requests("PUT")) == 30


@pytest.mark.parametrize(("api_version", "expected"), [("1.1", None), ("1.2", True)])
async def test_false_positive_deletes_unmark_detections(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Opener,
    api_version: str,
    expected: bool | None,
) -> None:
    url = feed_server.set("l.txt", "a.example\nb.example\n")
    text = feed(url, supplier="FalsePositive", ratio=1.0) + "  unmark_detections: true\n"
    loaded = make_config(emulator.url, text, api_version=api_version)
    store = open_store(loaded)
    await sync(loaded, store)
    feed_server.set("l.txt", "a.example\n")
    emulator.clear_log()
    await sync(loaded, store)
    [delete] = emulator.indicator_requests("DELETE")
    assert delete.status == 201
    wanted: dict[str, object] = {"indicator": "b.example"}
    if expected is not None:
        wanted["unmark_detections"] = expected
    assert delete.json == [wanted]
    assert emulator.indicators("FalsePositive").keys() == {"a.example"}


async def test_unreachable_cybertrace_under_auto_is_recorded_per_feed(
    feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    loaded = make_config(
        "http://127.0.0.1:9",
        feed(url),
        "Demo: {confidence: 5}\n",
        api_version="auto",
        cybertrace="retry: {attempts: 1}\n",
    )
    store = open_store(loaded)
    feeds, suppliers = await sync(loaded, store)
    assert feeds[0].result == "failed" and feeds[0].stage == "cybertrace"
    assert suppliers[0].error
    row = store.feed("list", "Demo")
    assert row.last_error and "not applied" in row.last_error
    assert row.indicators == 0, "nothing was applied"


async def test_an_interrupted_first_sync_is_shown_pending_and_converges_exactly(
    emulator: Emulator, feed_server: FeedServer, make_config: ConfigFactory, open_store: Opener
) -> None:
    """The first plan is one pending range (store/ranges.py): what an upload that
    failed part way left is shown pending (status counts, why) and, after a change
    that unlists some values and changes others, CyberTrace ends exactly as listed,
    values it applied without answering included."""
    first = [f"v{i:03d}.example" for i in range(120)]
    url = feed_server.set("l.txt", listing(first))
    loaded = make_config(
        emulator.url,
        feed(url, ratio=1.0),
        "Demo: {confidence: 5}\n",
        # One request at a time: with several in flight, the first failure cancels the
        # others before their answers are settled, which may leave none acknowledged.
        cybertrace="retry: {attempts: 1, initial_delay: 0.001, max_delay: 0.01}\n"
        "max_batch_indicators: 10\nconcurrency: 1\n",
    )
    store = open_store(loaded)
    emulator.faults = Faults(rate=0.1, statuses=(503,), after_apply=0.1, seed=8)
    _, suppliers = await sync(loaded, store)
    assert suppliers[0].error
    acked = store.acked_values("Demo")
    counts = store.counts("Demo")
    assert 0 < len(acked) < len(first)
    assert counts["add"] == suppliers[0].pending == len(first) - len(acked)
    waiting = next(v for v in first if v not in acked)
    told = story.story(store, waiting)
    assert told is not None and told["cybertrace"][0]["pending"]["op"] == "add"
    assert told["cybertrace"][0]["pending"]["body"]["indicator"] == waiting
    emulator.faults = Faults()
    second = [v.replace("v0", "w0") if v.endswith("5.example") else v for v in first[::2]]
    feed_server.set("l.txt", listing(second))
    await converge(loaded, store)
    assert emulator.indicators("Demo").keys() == set(second)
    assert store.acked_values("Demo").keys() == set(second)
