"""The taxii source against medallion 3.0.0 serving the samples' STIX bundles, and STIX mapping."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import ConfigFactory, free_port
from samples import sample
from test_sync import sync

from feedsync._http import basic_auth
from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.model import Invalid, Record, Removal
from feedsync.normalize import canonicalize
from feedsync.sources.stix import Unsupported, indicator_records, pattern_values
from feedsync.store import Store
from feedsync.store.story import story

VXVAULT = "a5707c2d-3d27-5a65-bcfd-d837aad4af61"
MEDIA = "application/taxii+json;version=2.1"
NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("pattern", "values"),
    [
        ("[ipv4-addr:value='45.148.10.151']", ["45.148.10.151"]),
        (
            "[ domain-name:value = 'a.example' OR url:value = 'http://b.example/x' ]",
            ["a.example", "http://b.example/x"],
        ),
        ("[file:hashes.'SHA-256' = 'aa'] OR [file:hashes.MD5 = 'bb']", ["aa", "bb"]),
        ("[url:value = 'http://x.example/it\\'s']", ["http://x.example/it's"]),
    ],
)
def test_supported_patterns(pattern: str, values: list[str]) -> None:
    assert sorted(pattern_values(pattern)) == sorted(values)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[ipv4-addr:value = '1.2.3.4' AND domain-name:value = 'x.example']", "and"),
        ("[ipv4-addr:value = '1.2.3.4'] AND [url:value = 'http://a/b']", "observation_operator"),
        ("[file:hashes.'SHA-256' = 'aa'] WITHIN 5 SECONDS", "qualifier"),
        ("[ x509-certificate:hashes.'SHA-1' = 'ab' ]", "object"),
        ("[ipv4-addr:value != '1.2.3.4']", "operator"),
        ("not a pattern", "pattern_syntax"),
    ],
)
def test_unsupported_patterns_say_why(pattern: str, reason: str) -> None:
    with pytest.raises(Unsupported) as info:
        pattern_values(pattern)
    assert info.value.reason == reason


def test_indicator_records_revoked_expired_and_context() -> None:
    base = {
        "type": "indicator",
        "id": "indicator--1",
        "pattern": "[ipv4-addr:value='192.0.2.1']",
        "pattern_type": "stix",
        "name": "bad",
        "confidence": 90,
        "indicator_types": ["malicious-activity"],
    }
    [record] = list(indicator_records(base, line=1, now=NOW, patch=False))
    assert isinstance(record, Record) and record.key == "indicator--1|0"
    assert (
        dict(record.context)["confidence"] == "90"
        and dict(record.context)["stix_id"] == "indicator--1"
    )
    assert list(indicator_records({**base, "revoked": True}, line=1, now=NOW, patch=True)) == [
        Removal("indicator--1", 1, family=True, reason="revoked")
    ]
    assert list(
        indicator_records(
            {**base, "valid_until": "2020-01-01T00:00:00Z"}, line=1, now=NOW, patch=False
        )
    ) == [Removal("indicator--1", 1, family=True, reason="expired (its valid_until passed)")]
    [invalid] = indicator_records({**base, "pattern_type": "sigma"}, line=1, now=NOW, patch=False)
    assert isinstance(invalid, Invalid) and invalid.reason == "pattern_type"


@pytest.fixture
async def medallion(tmp_path: Path) -> AsyncIterator[str]:
    data = sample("taxii/DERIVED_medallion_data_from_feeds2stix_bundles.json")
    executable = shutil.which("medallion") or str(Path(sys.executable).parent / "medallion")
    if not Path(executable).exists():
        pytest.skip("medallion is not installed (pip install medallion==3.0.0)")
    shutil.copy(data, tmp_path / "data.json")
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "backend": {
                    "module": "medallion.backends.memory_backend",
                    "module_class": "MemoryBackend",
                    "filename": str(tmp_path / "data.json"),
                },
                "users": {"reader": "s3cret"},
                "taxii": {"max_page_size": 25},
            }
        )
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        executable,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        str(tmp_path / "config.json"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api1/"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(
                        url,
                        headers={"Accept": MEDIA, "Authorization": basic_auth("reader", "s3cret")},
                    ) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        await process.wait()


async def post_objects(root: str, objects: list[dict[str, object]]) -> None:
    headers = {
        "Accept": MEDIA,
        "Content-Type": MEDIA,
        "Authorization": basic_auth("reader", "s3cret"),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{root}collections/{VXVAULT}/objects/", json={"objects": objects}, headers=headers
        ) as response,
    ):
        assert response.status in (200, 201, 202), await response.text()


def feed(root: str, collection: str = "feeds2stix_vxvault_bundle.json") -> str:
    return (
        f"- {{name: vx, type: taxii, url: '{root}', collection: '{collection}', supplier: VX,"
        " username: reader, password: s3cret}\n"
    )


async def test_multi_page_then_incremental_pulls(
    medallion: str,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    bundle = json.loads(sample("taxii/feeds2stix_vxvault_bundle.json").read_text())
    indicators = [o for o in bundle["objects"] if o["type"] == "indicator"]
    loaded = make_config(emulator.url, feed(medallion), "VX: {confidence: 50}\n")
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    expected = {canonicalize(pattern_values(o["pattern"])[0])[1] for o in indicators}
    assert emulator.indicators("VX").keys() == expected
    assert len(indicators) == 101, "more than four pages of 25"

    revoked, expired = indicators[0], indicators[1]
    later = "2026-11-22T00:00:00.000Z"
    new = {
        **indicators[2],
        "id": "indicator--00000000-0000-4000-8000-000000000001",
        "pattern": "[url:value = 'http://new.example/payload']",
        "created": later,
        "modified": later,
    }
    await post_objects(
        medallion,
        [
            {**revoked, "modified": later, "revoked": True},
            {**expired, "modified": later, "valid_until": "2026-01-01T00:00:00Z"},
            new,
        ],
    )
    emulator.clear_log()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    assert (feeds[0].change.added, feeds[0].change.removed) == (1, 2)
    gone = {canonicalize(pattern_values(o["pattern"])[0])[1] for o in (revoked, expired)}
    assert emulator.indicators("VX").keys() == (expected - gone) | {"new.example/payload"}

    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "unchanged", "nothing added after the last pull"


async def test_unknown_collection_lists_the_known_ones(
    medallion: str,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    loaded = make_config(emulator.url, feed(medallion, collection="nope"), "VX: {confidence: 50}\n")
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed"
    assert "no collection 'nope'" in (feeds[0].error or "")
    assert "feeds2stix_vxvault_bundle.json" in (feeds[0].error or "")


class FakeTaxii:
    """A TAXII 2.1 server that misbehaves on the objects endpoint."""

    def __init__(self, objects_answer: Callable[[int], bytes]) -> None:
        self.answer = objects_answer
        self.calls = 0

    async def root(self, _request: web.Request) -> web.Response:
        return web.json_response({"title": "fake", "versions": [MEDIA]})

    async def collections(self, _request: web.Request) -> web.Response:
        return web.json_response({"collections": [{"id": "c1", "title": "only", "can_read": True}]})

    async def objects(self, _request: web.Request) -> web.Response:
        self.calls += 1
        return web.Response(body=self.answer(self.calls), content_type="application/taxii+json")


def same_page_forever(_call: int) -> bytes:
    page = {
        "more": True,
        "next": "abc",
        "objects": [
            {
                "type": "indicator",
                "id": "indicator--1",
                "modified": "2026-01-01T00:00:00Z",
                "pattern": "[ipv4-addr:value='192.0.2.1']",
                "pattern_type": "stix",
            }
        ],
    }
    return json.dumps(page).encode()


def new_page_forever(call: int) -> bytes:
    page = {
        "more": True,
        "next": f"n{call}",
        "objects": [
            {
                "type": "indicator",
                "id": f"indicator--{call}",
                "modified": "2026-01-01T00:00:00Z",
                "pattern": f"[domain-name:value='host{call}.example']",
                "pattern_type": "stix",
            }
        ],
    }
    return json.dumps(page).encode()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda _call: b"<html>oops</html>", "something not JSON"),
        (same_page_forever, "TAXII pagination loops"),
        (new_page_forever, "over max_body_bytes (20000)"),
    ],
    ids=["json-garbage", "loop-on-one-next", "never-ends"],
)
async def test_misbehaving_taxii_server_fails_clearly(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    answer: Callable[[int], bytes],
    message: str,
) -> None:
    fake = FakeTaxii(answer)
    app = web.Application()
    app.router.add_get("/api1/", fake.root)
    app.router.add_get("/api1/collections/", fake.collections)
    app.router.add_get("/api1/collections/c1/objects/", fake.objects)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        root = f"http://127.0.0.1:{runner.addresses[0][1]}/api1/"
        text = feed(root, collection="only").replace("}\n", ", max_body_bytes: 20000}\n")
        loaded = make_config(emulator.url, text, "VX: {confidence: 50}\n")
        feeds, _ = await asyncio.wait_for(sync(loaded, open_store(loaded)), 20)
    finally:
        await runner.cleanup()
    assert feeds[0].result == "failed" and message in (feeds[0].error or "")
    assert fake.calls <= 200
    assert emulator.indicator_requests() == []


async def test_indicator_leaves_when_its_valid_until_passes_between_pulls(
    medallion: str,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    loaded = make_config(emulator.url, feed(medallion), "VX: {confidence: 50}\n")
    store = open_store(loaded)
    await sync(loaded, store)
    stamp = dt.datetime.now(dt.UTC)
    soon = (stamp + dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    created = stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    await post_objects(
        medallion,
        [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": "indicator--00000000-0000-4000-8000-0000000000aa",
                "created": created,
                "modified": created,
                "valid_from": created,
                "valid_until": soon,
                "pattern": "[domain-name:value = 'short-lived.example']",
                "pattern_type": "stix",
            }
        ],
    )
    await sync(loaded, store)
    assert "short-lived.example" in emulator.indicators("VX")
    await asyncio.sleep(2.2)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "unchanged"
    assert "short-lived.example" not in emulator.indicators("VX")
    told = story(store, "short-lived.example")
    assert told is not None
    unlisted = [e for e in told["journal"] if e["event"] == "unlisted"]
    assert [e["detail"] for e in unlisted] == ["expired (its valid_until passed)"]


async def test_expired_next_restarts_the_pull_once(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    def indicator(n: int) -> dict[str, object]:
        return {
            "type": "indicator",
            "id": f"indicator--{n}",
            "modified": "2026-01-01T00:00:00Z",
            "pattern": f"[domain-name:value='host{n}.example']",
            "pattern_type": "stix",
        }

    answers = iter(
        [
            (200, {"more": True, "next": "t1", "objects": [indicator(1)]}),
            (404, {"title": "next expired"}),
            (200, {"more": True, "next": "t2", "objects": [indicator(1)]}),
            (200, {"more": False, "objects": [indicator(2)]}),
        ]
    )

    async def objects(_request: web.Request) -> web.Response:
        status, body = next(answers)
        return web.json_response(body, status=status)

    fake = FakeTaxii(lambda _call: b"")
    app = web.Application()
    app.router.add_get("/api1/", fake.root)
    app.router.add_get("/api1/collections/", fake.collections)
    app.router.add_get("/api1/collections/c1/objects/", objects)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        root = f"http://127.0.0.1:{runner.addresses[0][1]}/api1/"
        loaded = make_config(emulator.url, feed(root, collection="only"), "VX: {confidence: 50}\n")
        feeds, _ = await sync(loaded, open_store(loaded))
    finally:
        await runner.cleanup()
    assert feeds[0].result == "ok", feeds[0].error
    assert emulator.indicators("VX").keys() == {"host1.example", "host2.example"}


async def test_taxii_2_0_server_with_range_paging(
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    objects = [
        {
            "type": "indicator",
            "id": f"indicator--{n}",
            "created": "2020-01-01T00:00:00.000Z",
            "modified": "2020-01-01T00:00:00.000Z",
            "labels": ["malicious-activity"],
            "pattern": f"[domain-name:value = 'old{n}.example']",
            "valid_from": "2020-01-01T00:00:00Z",
        }
        for n in range(5)
    ]
    ranges: list[str] = []
    lookups: list[str] = []

    async def root(request: web.Request) -> web.Response:
        lookups.append("root")
        if "version=2.0" not in request.headers.get("Accept", ""):
            return web.json_response({"title": "only 2.0"}, status=406)
        return web.json_response({"title": "v20"}, content_type="application/vnd.oasis.taxii+json")

    async def collections(_request: web.Request) -> web.Response:
        lookups.append("collections")
        return web.json_response({"collections": [{"id": "c20", "title": "old"}]})

    async def page(request: web.Request) -> web.Response:
        ranges.append(request.headers["Range"])
        start, end = (int(x) for x in request.headers["Range"].split()[1].split("-"))
        end = min(end, start + 1, len(objects) - 1)  # the server pages by two
        bundle = {
            "type": "bundle",
            "id": "bundle--1",
            "spec_version": "2.0",
            "objects": objects[start : end + 1],
        }
        return web.json_response(
            bundle, status=206, headers={"Content-Range": f"items {start}-{end}/{len(objects)}"}
        )

    app = web.Application()
    app.router.add_get("/api20/", root)
    app.router.add_get("/api20/collections/", collections)
    app.router.add_get("/api20/collections/c20/objects/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/api20/"
        loaded = make_config(emulator.url, feed(url, collection="old"), "VX: {confidence: 50}\n")
        store = open_store(loaded)
        feeds, _ = await sync(loaded, store)
        lookups_after_first = list(lookups)
        await sync(loaded, store)
    finally:
        await runner.cleanup()
    assert feeds[0].result == "ok", feeds[0].error
    assert emulator.indicators("VX").keys() == {f"old{n}.example" for n in range(5)}
    assert lookups == lookups_after_first, "an incremental pull goes straight to the objects"
    assert [r.split("-")[0] for r in ranges][:3] == ["items 0", "items 2", "items 4"]
    assert (
        emulator.indicators("VX")["old0.example"].context["indicator_types"] == "malicious-activity"
    )


def test_a_cursor_naming_a_taxii_version_feedsync_does_not_speak_is_no_cursor() -> None:
    from feedsync.sources.taxii import Cursor  # noqa: PLC0415

    kept = Cursor.parse('{"full_at": 1.0, "version": "2.0"}')
    assert kept is not None and kept.version == "2.0"
    assert Cursor.parse('{"full_at": 1.0, "version": "3.0"}') is None, "a full pull instead"
