"""The change journal's other reasons (a source's word: revoked, expired, soft-deleted,
to_ids off), its bound, provenance in CyberTrace, and the daemon's /why and forget."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import PASSWORD, FeedServer, run_cli
from test_control import ran, steered
from test_daemon import SECOND, daemon_at, write_config  # noqa: F401 -- fixture
from test_why import texts, why

from feedsync.emulator import Emulator
from feedsync.store import Store, journal

MEDIA = "application/taxii+json;version=2.1"
CONFIG = """\
cybertrace:
  url: {url}
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
state:
  path: {state}
{extra}feeds:
{feeds}"""


def write(path: Path, url: str, feeds: str, extra: str = "") -> str:
    text = CONFIG.format(url=url, state=path.parent / "s.db", extra=extra, feeds=feeds)
    path.write_text(text)
    return str(path)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    return tmp_path / "feedsync.yaml"


class Taxii:
    """A TAXII 2.1 API root whose one collection holds ``objects`` (every pull
    answers all of them: a patch of what is there)."""

    def __init__(self) -> None:
        self.objects: list[dict[str, object]] = []
        app = web.Application()
        app.router.add_get("/api1/", self.root)
        app.router.add_get("/api1/collections/", self.collections)
        app.router.add_get("/api1/collections/c1/objects/", self.page)
        self.runner = web.AppRunner(app)
        self.url = ""

    async def root(self, _request: web.Request) -> web.Response:
        return web.json_response({"title": "fake", "versions": [MEDIA]})

    async def collections(self, _request: web.Request) -> web.Response:
        return web.json_response({"collections": [{"id": "c1", "title": "c1", "can_read": True}]})

    async def page(self, _request: web.Request) -> web.Response:
        return web.json_response({"more": False, "objects": self.objects})


@pytest.fixture
async def taxii() -> AsyncIterator[Taxii]:
    server = Taxii()
    await server.runner.setup()
    await web.TCPSite(server.runner, "127.0.0.1", 0).start()
    server.url = f"http://127.0.0.1:{server.runner.addresses[0][1]}/api1/"
    yield server
    await server.runner.cleanup()


def stix(n: int, modified: str, **more: object) -> dict[str, object]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
        "created": "2026-01-01T00:00:00.000Z",
        "modified": modified,
        "valid_from": "2026-01-01T00:00:00.000Z",
        "pattern": f"[domain-name:value = 'host{n}.example']",
        "pattern_type": "stix",
        **more,
    }


async def test_revoked_and_expired_stix_indicators(
    config: Path, emulator: Emulator, taxii: Taxii, capsys: pytest.CaptureFixture[str]
) -> None:
    first = "2026-01-01T00:00:00.000Z"
    taxii.objects = [stix(n, first) for n in range(3)]
    feeds = (
        f"  - {{name: vx, type: taxii, url: '{taxii.url}', collection: c1, supplier: VX,"
        " max_delete_ratio: 1.0}\n"
    )
    path = write(config, emulator.url, feeds)
    assert await run_cli("sync", "-c", path) == 0
    assert set(emulator.indicators("VX")) == {"host0.example", "host1.example", "host2.example"}
    later = "2026-01-02T00:00:00.000Z"
    taxii.objects = [
        stix(0, later, revoked=True),
        stix(1, later, valid_until="2026-01-01T12:00:00.000Z"),
        stix(2, first),
    ]
    assert await run_cli("sync", "-c", path) == 0
    assert set(emulator.indicators("VX")) == {"host2.example"}
    story = await why(config, "host0.example", capsys)
    assert texts(story)[:2] == [
        "deleted from VX: no feed lists it any more (the last feed that listed it: vx)",
        "feed vx no longer lists it: revoked",
    ]
    story = await why(config, "host1.example", capsys)
    assert texts(story)[1] == "feed vx no longer lists it: expired (its valid_until passed)"


def event(attributes: list[dict[str, object]]) -> str:
    return json.dumps({"Event": {"uuid": "e1", "info": "demo", "Attribute": attributes}})


async def test_misp_soft_deleted_and_to_ids_off(
    config: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    def attribute(n: int, **more: object) -> dict[str, object]:
        return {"uuid": f"a{n}", "type": "domain", "value": f"m{n}.example", "to_ids": True, **more}

    feed_server.set("feed/e1.json", event([attribute(n) for n in range(3)]))
    feed_server.set("feed/manifest.json", json.dumps({"e1": {"info": "demo", "timestamp": "1"}}))
    feeds = (
        f"  - {{name: circl, type: misp_feed, url: '{feed_server.url}/feed/', supplier: CIRCL,"
        " max_delete_ratio: 1.0}\n"
    )
    path = write(config, emulator.url, feeds)
    assert await run_cli("sync", "-c", path) == 0
    assert len(emulator.indicators("CIRCL")) == 3
    changed = [attribute(0, deleted=True), attribute(1, to_ids=False), attribute(2)]
    feed_server.set("feed/e1.json", event(changed))
    feed_server.set("feed/manifest.json", json.dumps({"e1": {"info": "demo", "timestamp": "2"}}))
    assert await run_cli("sync", "-c", path) == 0
    assert set(emulator.indicators("CIRCL")) == {"m2.example"}
    story = await why(config, "m0.example", capsys)
    assert texts(story)[1] == "feed circl no longer lists it: soft-deleted in MISP"
    story = await why(config, "m1.example", capsys)
    assert texts(story)[1] == "feed circl no longer lists it: to_ids is off in MISP"


def test_prune_bounds_the_journal_by_age_and_rows(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "s.db"))
    try:
        with store.transaction() as db:
            rows = [(float(n), "S", f"v{n}", "listed", "f", "", 1) for n in range(3000)]
            db.executemany(f"{journal.INSERT} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            assert journal.prune(db, 3000.0, max_age=2500.0, max_rows=10**6) == 500
            (oldest,) = db.execute("SELECT min(at) FROM journal").fetchone()
            assert oldest == 500.0, "every entry older than max_age went, none younger"
            assert journal.prune(db, 3000.0, max_age=2500.0, max_rows=1000) == 1500
            count, oldest = db.execute("SELECT count(*), min(at) FROM journal").fetchone()
            assert (count, oldest) == (1000, 2000.0), "the newest max_rows stay"
    finally:
        store.close()


async def test_a_cycle_keeps_the_journal_within_journal_max_rows(
    config: Path, emulator: Emulator, feed_server: FeedServer
) -> None:
    url = feed_server.set("l.txt", "".join(f"host{n}.example\n" for n in range(1200)))
    feeds = f"  - {{name: l, type: csv, url: {url}, supplier: Demo}}\n"
    path = write(config, emulator.url, feeds)
    config.write_text(config.read_text().replace("state:\n", "state:\n  journal_max_rows: 1000\n"))
    assert await run_cli("sync", "-c", path) == 0
    assert len(emulator.indicators("Demo")) == 1200
    with sqlite3.connect(config.parent / "s.db") as db:
        (count,) = db.execute("SELECT count(*) FROM journal").fetchone()
    assert count == 1000, "2400 entries written (listed and add), the oldest 1400 pruned"


async def test_a_big_first_fetch_is_journaled_as_one_entry(
    config: Path,
    emulator: Emulator,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "PER_VALUE_MAX", 100)
    url = feed_server.set("l.txt", "".join(f"host{n}.example\n" for n in range(150)))
    path = write(config, emulator.url, f"  - {{name: l, type: csv, url: {url}, supplier: Demo}}\n")
    assert await run_cli("sync", "-c", path) == 0
    with sqlite3.connect(config.parent / "s.db") as db:
        rows = db.execute("SELECT value, event, count FROM journal ORDER BY id").fetchall()
    assert rows == [(None, "listed", 150), (None, "add", 150)]
    story = await why(config, "host7.example", capsys)
    assert texts(story) == [
        "[one entry for 150 values] sent to Demo as new",
        "[one entry for 150 values] added by feed l",
    ]


PROVENANCE = "provenance: {feeds: ft_feeds, first_seen: ft_first, last_seen: ft_last}\n"


async def test_provenance_fields_reach_cybertrace_and_a_second_feed_is_an_update(
    config: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = feed_server.set("a.txt", "x.example\n")
    b = feed_server.set("b.txt", "y.example\n")
    feeds = (
        f"  - {{name: a, type: csv, url: {a}, supplier: Demo}}\n"
        f"  - {{name: b, type: csv, url: {b}, supplier: Demo}}\n"
    )
    path = write(config, emulator.url, feeds, PROVENANCE)
    assert await run_cli("sync", "-c", path) == 0
    held = emulator.indicators("Demo")["x.example"].context
    assert held["ft_feeds"] == "a" and held["source_feed"] == "a"
    assert held["ft_first"] == held["ft_last"] and held["ft_first"].endswith("Z")

    emulator.clear_log()
    assert await run_cli("sync", "-c", path) == 0
    assert emulator.indicator_requests() == [], "an unchanged feed sends nothing: no date moves"

    feed_server.set("b.txt", "y.example\nx.example\n")
    assert await run_cli("sync", "-c", path) == 0
    now = emulator.indicators("Demo")["x.example"].context
    assert now["ft_feeds"] == "a,b"
    assert now["ft_first"] == held["ft_first"], "first seen stays"
    story = await why(config, "x.example", capsys)
    assert texts(story)[:2] == [
        "sent to Demo as updated (listed by feed a); listed by a, b",
        "added by feed b",
    ]


async def test_daemon_serves_why_and_forgets_through_its_control_socket(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "second.txt").write_text("c.example\na.example\n")
    path = write_config(tmp_path, emulator.url, SECOND % tmp_path)
    daemon = await steered(daemon_at, path)
    await daemon.server.start("127.0.0.1", 0)
    await ran(daemon, "first")
    await ran(daemon, "second")
    base = f"http://127.0.0.1:{daemon.server.port}/why"
    async with aiohttp.ClientSession() as session:
        async with session.get(base, params={"value": "C.EXAMPLE"}) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["value"] == "c.example" and answer["feeds"][0]["feed"] == "second"
        assert answer["journal"][0]["text"] == "sent to Demo as new (listed by feed second)"
        wrong = (({"value": "nobody.example"}, 404), ({}, 400), ({"value": "a b"}, 400))
        for params, status in wrong:
            async with session.get(base, params=params) as response:
                assert response.status == status
                assert "error" in await response.json()

    disabled = SECOND.replace("override: true}", "override: true, enabled: false}")
    write_config(tmp_path, emulator.url, disabled % tmp_path)
    assert await daemon.reload() == ""
    capsys.readouterr()
    assert await run_cli("forget", "-c", str(path), "second") == 0
    assert "forgot feed second and the 2 indicators it listed" in capsys.readouterr().out
    assert set(emulator.indicators("Demo")) == {"a.example"}, "feed first still lists it"


async def test_forget_a_feed_removed_from_the_configuration(
    config: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = feed_server.set("a.txt", "a.example\nshared.example\n")
    b = feed_server.set("b.txt", "b.example\nshared.example\n")
    only_a = f"  - {{name: a, type: csv, url: {a}, supplier: Demo}}\n"
    path = write(
        config, emulator.url, only_a + f"  - {{name: b, type: csv, url: {b}, supplier: Demo}}\n"
    )
    assert await run_cli("sync", "-c", path) == 0
    write(config, emulator.url, only_a)
    assert await run_cli("sync", "-c", path) == 0
    assert "b.example" in emulator.indicators("Demo"), "held: an edit alone deletes nothing"
    capsys.readouterr()
    assert await run_cli("forget", "-c", path, "b") == 0
    assert "forgot feed b and the 2 indicators it listed" in capsys.readouterr().out
    assert set(emulator.indicators("Demo")) == {"a.example", "shared.example"}
    story = await why(config, "b.example", capsys)
    assert texts(story)[1] == "feed b no longer lists it: forgotten by operator (feedsync forget)"
    assert await run_cli("forget", "-c", path, "b") == 2, "b is known no more"


async def test_a_dry_run_journals_nothing(
    config: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = feed_server.set("l.txt", "a.example\n")
    path = write(config, emulator.url, f"  - {{name: l, type: csv, url: {url}, supplier: Demo}}\n")
    assert await run_cli("sync", "-c", path, "--dry-run") == 0
    assert emulator.indicators("Demo") == {}
    story = await why(config, "a.example", capsys, expect=1)
    assert story["error"].startswith("feedsync has no record of it")
