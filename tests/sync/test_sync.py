"""End to end: CSV feed -> normalize -> store -> reconcile -> the emulator, over HTTP."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

from conftest import ConfigFactory, FeedServer
from samples import sample

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.normalize import canonical_tags, canonicalize
from feedsync.store import Store
from feedsync.sync import Cycle
from feedsync.sync.reports import FeedReport, SupplierReport

URLHAUS_FEED = """\
- name: urlhaus
  type: csv
  url: {url}
  supplier: URLhaus
  indicator: url
  context: {{threat: threat, status: url_status}}
  tags: [abusech]
  tags_field: tags
"""
URLHAUS_SUPPLIER = "URLhaus: {confidence: 80, retention: 43200, vendor: abuse.ch}\n"


async def sync(
    loaded: Config, store: Store, *names: str, **options: bool
) -> tuple[list[FeedReport], list[SupplierReport]]:
    return await Cycle(loaded, store, **options).run(names)


def urlhaus_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return list(csv.reader(lines, skipinitialspace=True))


def urlhaus_text(header: str, rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerows(rows)
    return header + out.getvalue()


def expected(rows: list[list[str]]) -> dict[str, tuple[dict[str, str], set[str]]]:
    """What CyberTrace must hold for these URLhaus rows, computed independently."""
    out: dict[str, tuple[dict[str, str], set[str]]] = {}
    for row in rows:
        value = canonicalize(row[2])[1]
        context = {"threat": row[5], "status": row[3]}
        tags = [t for t in row[6].split(",") if t not in ("None", "")]
        out.setdefault(value, (context, set(canonical_tags(("abusech",), tuple(tags)))))
    return out


def held(emulator: Emulator, supplier: str) -> dict[str, tuple[dict[str, object], set[str]]]:
    return {v: (i.context, set(i.tags)) for v, i in emulator.indicators(supplier).items()}


def sent_values(emulator: Emulator, method: str) -> list[str]:
    values: list[str] = []
    for request in emulator.indicator_requests(method):
        assert isinstance(request.json, list)
        values.extend(item["indicator"] for item in request.json)
    return values


async def test_urlhaus_mirrors_exactly_then_sends_only_changes(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    text = sample("csv/urlhaus_csv_recent_excerpt_20260226.csv").read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    rows = urlhaus_rows(text)
    url = feed_server.set("urlhaus.csv", text)
    loaded = make_config(emulator.url, URLHAUS_FEED.format(url=url), URLHAUS_SUPPLIER)
    store = open_store(loaded)

    feeds, suppliers = await sync(loaded, store)
    assert [f.result for f in feeds] == ["ok"]
    assert suppliers[0].error is None
    assert held(emulator, "URLhaus") == expected(rows)
    assert suppliers[0].sent.add == len(expected(rows))

    # v2: one row removed, one added, one context field changed.
    removed = rows[0]
    changed = list(rows[2])
    changed[3] = "offline"
    added = [
        "4000001",
        "2026-02-27 00:00:00",
        "http://new.example/payload.bin",
        "online",
        "",
        "malware_download",
        "exe",
        "https://urlhaus.abuse.ch/url/4000001/",
        "tester",
    ]
    rows2 = [added, rows[1], changed, *rows[3:]]
    feed_server.set("urlhaus.csv", urlhaus_text(header, rows2))
    emulator.clear_log()

    feeds, suppliers = await sync(loaded, store)
    assert (feeds[0].change.added, feeds[0].change.changed, feeds[0].change.removed) == (1, 1, 1)
    assert sorted(sent_values(emulator, "PUT")) == sorted(
        [canonicalize(added[2])[1], canonicalize(changed[2])[1]]
    )
    assert sent_values(emulator, "DELETE") == [canonicalize(removed[2])[1]]
    assert held(emulator, "URLhaus") == expected(rows2)

    # v2 again: nothing changed, nothing is sent.
    emulator.clear_log()
    feeds, suppliers = await sync(loaded, store)
    assert feeds[0].result == "unchanged"
    assert emulator.indicator_requests() == []
    assert held(emulator, "URLhaus") == expected(rows2)


async def test_file_urls_paths_and_conditional_get(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
) -> None:
    local = tmp_path / "list.txt"
    local.write_text("a.example\n")
    remote = feed_server.set("etag.txt", "b.example\n", ETag='"v1"')
    feeds_yaml = "".join(
        f"- {{name: {name}, type: csv, url: '{url}', supplier: Demo}}\n"
        for name, url in (("path", local), ("fileurl", f"file://{local}"), ("http", remote))
    )
    loaded = make_config(emulator.url, feeds_yaml, "Demo: {confidence: 5}\n")
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert [f.result for f in feeds] == ["ok", "ok", "ok"]
    assert emulator.indicators("Demo").keys() == {"a.example", "b.example"}
    feeds, _ = await sync(loaded, store)
    assert [f.result for f in feeds] == ["unchanged"] * 3
    assert feed_server.hits[-1][1].get("If-None-Match") == '"v1"'


async def test_same_body_under_new_validators_keeps_them(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    """A server that rewrites an unchanged file answers 200 with new validators:
    the cycle finds the same SHA-256, and keeps the new ETag and Last-Modified so
    that the next conditional request gets a 304 instead of the whole body again."""
    stamp = "Wed, 02 Dec 2026 10:00:00 GMT"
    url = feed_server.set("list.txt", "b.example\n", ETag='"v1"', **{"Last-Modified": stamp})
    feeds_yaml = f"- {{name: http, type: csv, url: '{url}', supplier: Demo}}\n"
    loaded = make_config(emulator.url, feeds_yaml, "Demo: {confidence: 5}\n")
    store = open_store(loaded)
    assert [f.result for f in (await sync(loaded, store))[0]] == ["ok"]
    later = "Thu, 03 Dec 2026 10:00:00 GMT"
    feed_server.set("list.txt", "b.example\n", ETag='"v2"', **{"Last-Modified": later})
    feeds, _ = await sync(loaded, store)
    assert [f.result for f in feeds] == ["unchanged"]
    assert feed_server.hits[-1][1].get("If-None-Match") == '"v1"'  # answered 200
    row = store.feed("http", "Demo")
    assert (row.validators.etag, row.validators.last_modified) == ('"v2"', later)
    emulator.clear_log()
    feeds, _ = await sync(loaded, store)
    assert [f.result for f in feeds] == ["unchanged"]
    # The server answers 304 to the ETag it sent last.
    assert feed_server.hits[-1][1].get("If-None-Match") == '"v2"'
    assert feed_server.hits[-1][1].get("If-Modified-Since") == later
    assert emulator.indicator_requests() == []
    assert emulator.indicators("Demo").keys() == {"b.example"}


async def test_the_plan_is_a_phase_of_every_cycle(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    """The plan's time is counted (as ``plan``) in a cycle that sends, not only in
    a dry run: a first sync's plan is seconds that no phase showed."""
    url = feed_server.set("list.txt", "a.example\nb.example\n")
    feeds_yaml = f"- {{name: plain, type: csv, url: '{url}', supplier: Demo}}\n"
    loaded = make_config(emulator.url, feeds_yaml, "Demo: {confidence: 5}\n")
    store = open_store(loaded)
    for dry_run in (True, False):
        cycle = Cycle(loaded, store, dry_run=dry_run)
        await cycle.run()
        assert cycle.phases.wall["plan"] > 0, dry_run
        assert cycle.phases.fields().keys() >= {"plan_cpu", "plan_wall"}
