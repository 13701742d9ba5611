"""Feed names never become path components unescaped (issue 13 item 16): the
loader allows only plain names, and every place a name becomes part of a path
(spool bodies of each source, the misp_feed cache) goes through one escape."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from feedsync.config import OPTIONS, FeedConfig, Secret, parse
from feedsync.errors import ConfigError
from feedsync.model import Validators
from feedsync.paths import FEED_NAME, component
from feedsync.sources import source_for
from feedsync.sources.fetch import fetch, request_for
from feedsync.sync.fetching import discard_spooled

ENV = {"CT_PASSWORD": "pw"}
HOSTILE = [".", "..", "../x", "a/b", "/abs", "a\0b", "a\\b", "-x", ".hidden", "a b", "x" * 101]
HOSTILE += ["f\u00fcr", "a%2Fb", "", "\udcff", "..%2F"]


def config(name: str, extra: str = "") -> str:
    return (
        "cybertrace: {url: 'https://ct.example', username: u, password: '${CT_PASSWORD}'}\n"
        f"feeds:\n  - {{name: {json.dumps(name)}, type: csv, url: /x.txt, supplier: S{extra}}}\n"
    )


@pytest.mark.parametrize("name", [n for n in HOSTILE if n and "\udcff" not in n])
def test_the_loader_refuses_path_hostile_feed_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(config(name), env=ENV)
    assert str(info.value).startswith("feeds[0].name: "), info.value
    assert "starting with a letter, digit or _" in str(info.value)


@pytest.mark.parametrize("name", ["urlhaus", "abuse.ch-feodo", "_x", "a..b", "x" * 100, "0"])
def test_plain_names_load_and_stay_as_they_are_on_disk(name: str) -> None:
    assert parse(config(name), env=ENV).feeds[0].name == name
    assert component(name) == name


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_becomes_one_harmless_component(name: str) -> None:
    part = component(name)
    assert part not in (".", "..") and "/" not in part and "\0" not in part
    assert not part.startswith((".", "-")) and len(part.encode()) <= 100
    assert "%" in part, "escaped forms never equal a plain name"


@given(st.text(max_size=120), st.text(max_size=120))
def test_distinct_names_never_share_a_component(a: str, b: str) -> None:
    part = component(a)
    assert "/" not in part and "\0" not in part and part not in ("", ".", "..")
    assert (component(a) == component(b)) == (a == b)
    assert FEED_NAME.fullmatch(part) or "%" in part


def hand_built(tmp_path: Path, name: str, kind: str, url: str, **options: object) -> FeedConfig:
    """A feed the loader would refuse: built by hand, as a test or a tool might;
    ``options`` are the type's own (``OPTIONS[kind]``)."""
    feed = parse(config("plain"), env=ENV, base_dir=str(tmp_path)).feeds[0]
    own = OPTIONS[kind](**options)  # type: ignore[arg-type]
    return dataclasses.replace(feed, name=name, type=kind, url=url, options=own)


async def test_a_misp_feed_named_dotdot_caches_inside_its_own_directory(tmp_path: Path) -> None:
    source_dir = tmp_path / "feed"
    source_dir.mkdir()
    event = {"Event": {"uuid": "e1", "Attribute": []}}
    (source_dir / "e1.json").write_text(json.dumps(event))
    (source_dir / "manifest.json").write_text(json.dumps({"e1": {"timestamp": 5}}))
    state = tmp_path / "state"
    spool = state / "spool"
    unrelated = state / "notes.json"  # the operator's, next to state.db
    spool.mkdir(parents=True)  # the cycle's to make (issue 13 item 9)
    unrelated.write_text("{}")
    source = source_for(hand_built(tmp_path, "..", "misp_feed", str(source_dir)))
    body = await source.fetch(Validators(), spool)
    assert body is not None
    assert unrelated.exists(), "pruning the cache reached the state directory"
    cache = state / "cache" / "%2E%2E"
    assert sorted(p.name for p in cache.iterdir()) == ["e1.5.json"]
    assert body.path.parent == spool and body.path.name == "%2E%2E.events.body"
    body.discard()


async def test_the_misp_feed_cache_prunes_only_what_it_cached(tmp_path: Path) -> None:
    source_dir = tmp_path / "feed"
    source_dir.mkdir()
    (source_dir / "e1.json").write_text(json.dumps({"Event": {"uuid": "e1", "Attribute": []}}))
    (source_dir / "manifest.json").write_text(json.dumps({"e1": {"timestamp": 6}}))
    cache = tmp_path / "cache" / "plain"
    cache.mkdir(parents=True)
    (cache / "e1.5.json").write_text("{}")  # an older version: pruned
    (cache / "keep.json").write_text("{}")  # not a name feedsync makes: kept
    (tmp_path / "spool").mkdir()
    source = source_for(hand_built(tmp_path, "plain", "misp_feed", str(source_dir)))
    body = await source.fetch(Validators(), tmp_path / "spool")
    assert body is not None
    body.discard()
    assert sorted(p.name for p in cache.iterdir()) == ["e1.6.json", "keep.json"]


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def csv(_: web.Request) -> web.Response:
        return web.Response(text="192.0.2.1\n")

    async def misp(_: web.Request) -> web.Response:
        return web.json_response({"response": {"Attribute": []}})

    async def taxii_root(_: web.Request) -> web.Response:
        return web.json_response({"title": "root"})

    async def collections(_: web.Request) -> web.Response:
        return web.json_response({"collections": [{"id": "c", "title": "c"}]})

    async def objects(_: web.Request) -> web.Response:
        return web.json_response({"more": False, "objects": []})

    app = web.Application()
    app.router.add_get("/list.txt", csv)
    app.router.add_post("/attributes/restSearch", misp)
    app.router.add_get("/taxii/", taxii_root)
    app.router.add_get("/taxii/collections/", collections)
    app.router.add_get("/taxii/collections/c/objects/", objects)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.parametrize("name", ["..", "a/b", "../../escape", "a\0b"])
async def test_spooled_bodies_of_every_source_stay_in_the_spool(
    tmp_path: Path, server: str, name: str
) -> None:
    spool = tmp_path / "state" / "spool"
    csv = hand_built(tmp_path, name, "csv", f"{server}/list.txt")
    body = await fetch(request_for(csv), Validators(), spool)
    assert body is not None and body.path.parent == spool
    assert body.path.name.startswith(component(name) + ".")
    discard_spooled(spool, name)
    assert not body.path.exists(), "the feed's own spool files are found by its name"

    misp = hand_built(tmp_path, name, "misp", server, api_key=Secret("k"))
    pulled = await source_for(misp).fetch(Validators(), spool)
    assert pulled is not None and pulled.path == spool / f"{component(name)}.misp.body"

    taxii = hand_built(tmp_path, name, "taxii", f"{server}/taxii/", collection="c")
    pulled = await source_for(taxii).fetch(Validators(), spool)
    assert pulled is not None and pulled.path == spool / f"{component(name)}.taxii.body"
    assert {p.parent for p in (tmp_path / "state").rglob("*") if p.is_file()} == {spool}
    discard_spooled(spool, name)
    assert list(spool.iterdir()) == []
