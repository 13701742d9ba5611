"""A feed's bytes read in its own encoding: one undecodable byte in a context
column never costs the indicator beside it (issue 13 item 3)."""

from __future__ import annotations

from collections.abc import Callable

from conftest import ConfigFactory, FeedServer
from structlog.testing import capture_logs
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.normalize import canonicalize
from feedsync.store import Store

FEED = """\
- name: latin
  type: csv
  url: {url}
  supplier: Demo
  indicator: host
  context: {{city: city}}
{extra}"""
CITIES = ("Zürich", "Köln", "São Paulo", "Malmö")
NON_ASCII_HOSTS = {10: "bücher", 40: "münchen", 70: "straße"}


def latin1_feed(changed: int | None = None) -> tuple[bytes, dict[str, str]]:
    """100 rows in Latin-1: every third has an accented city (34 rows), three have an
    accented host; and the context each indicator must carry, read as Latin-1."""
    rows, want = ["# host,city"], {}
    for n in range(100):
        host = f"{NON_ASCII_HOSTS.get(n, 'host')}-{n}.example"
        city = CITIES[n % 4] if n % 3 == 0 else "Bern"
        if n == changed:
            city = "Genève"
        rows.append(f"{host},{city}")
        want[canonicalize(host)[1]] = city
    return ("\n".join(rows) + "\n").encode("latin-1"), want


def contexts(emulator: Emulator) -> dict[str, object]:
    return {v: i.context.get("city") for v, i in emulator.indicators("Demo").items()}


async def test_a_latin1_feed_with_its_encoding_keeps_every_row(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    body, want = latin1_feed()
    url = feed_server.set("latin.csv", body)
    loaded = make_config(emulator.url, FEED.format(url=url, extra="  encoding: latin-1\n"))
    with capture_logs() as logs:
        feeds, _ = await sync(loaded, open_store(loaded))
    assert (feeds[0].result, feeds[0].change.fetched, feeds[0].change.invalid) == ("ok", 100, 0)
    assert contexts(emulator) == want
    assert contexts(emulator)["xn--bcher-10-65a.example"] == "Bern"
    assert not [e for e in logs if e["event"] == "feed.context_undecodable"]


async def test_without_its_encoding_only_undecodable_indicators_are_lost(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    body, want = latin1_feed()
    url = feed_server.set("latin.csv", body)
    loaded = make_config(emulator.url, FEED.format(url=url, extra=""))
    store = open_store(loaded)
    with capture_logs() as logs:
        feeds, _ = await sync(loaded, store)
    change = feeds[0].change
    assert (feeds[0].result, change.fetched, change.invalid_reasons) == ("ok", 97, {"encoding": 3})
    held = contexts(emulator)
    assert set(held) == {f"host-{n}.example" for n in range(100) if n not in NON_ASCII_HOSTS}
    for value, city in want.items():
        if value in held:
            assert held[value] == city.encode("latin-1").decode("utf-8", "replace")
    # Every row with an accented city was kept and counted; the first ones are named.
    assert change.replaced == 34
    bad_lines = [n + 2 for n in range(100) if n % 3 == 0]
    warned = [e for e in logs if e["event"] == "feed.context_undecodable"]
    assert [(e["feed"], e["line"], e["columns"]) for e in warned] == [
        ("latin", line, ["city"]) for line in bad_lines[:5]
    ]

    # A changed body is read line by line: the same result as reading it whole.
    body, _ = latin1_feed(changed=3)
    feed_server.set("latin.csv", body)
    feeds, _ = await sync(loaded, store)
    change = feeds[0].change
    assert (change.fetched, change.lines_read, change.replaced) == (97, 1, 1)
    assert held | {"host-3.example": "Gen\ufffdve"} == contexts(emulator)
