"""The misp_feed source on real MISP events: mapping, manifests, incremental downloads."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ConfigFactory, FeedServer
from samples import sample
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.model import Invalid, Record
from feedsync.normalize import canonicalize
from feedsync.sources.misp import event_records
from feedsync.store import Store
from feedsync.sync import spool_dir

CIRCL = "misp/feed_circl_osint_subset/57c4445b-c548-4654-af0b-4be3950d210f.json"
REGIN = "misp/misp_tests_event_regin.json"


def load(relative: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(sample(relative).read_text())
    return data


def test_circl_event_mapping() -> None:
    items = list(event_records(load(CIRCL)))
    records = [i for i in items if isinstance(i, Record)]
    assert sorted(canonicalize(r.value)[0] for r in records) == ["md5", "sha1", "sha256"]
    md5 = next(r for r in records if dict(r.context)["type"] == "md5")
    assert md5.value == "0749bae92ca336a02c83d126e04ec628"
    assert md5.key == "57c4448b-454c-4d17-90d1-4d2f950d210f", "keyed by attribute uuid"
    assert dict(md5.context)["event_info"] == "Ransomware - Xorist"
    assert dict(md5.context)["event_uuid"] == "57c4445b-c548-4654-af0b-4be3950d210f"
    assert "tlp:white" in md5.tags
    reasons = sorted(i.reason for i in items if isinstance(i, Invalid))
    assert reasons == ["unsupported_type", "unsupported_type"], "filename and regkey|value"


def test_composites_take_their_indicator_half() -> None:
    event = {
        "Event": {
            "uuid": "e",
            "Attribute": [
                {
                    "uuid": "1",
                    "type": "filename|sha256",
                    "to_ids": "1",
                    "value": "a.exe|" + "ab" * 32,
                },
                {"uuid": "2", "type": "ip-dst|port", "to_ids": True, "value": "192.0.2.1|443"},
                {"uuid": "3", "type": "domain", "to_ids": False, "value": "not-for-ids.example"},
                {
                    "uuid": "4",
                    "type": "domain",
                    "to_ids": True,
                    "deleted": True,
                    "value": "gone.example",
                },
            ],
            "Object": [
                {
                    "Attribute": [
                        {"uuid": "5", "type": "url", "to_ids": 1, "value": "http://o.example/x"}
                    ]
                }
            ],
        }
    }
    values = {r.key: r.value for r in event_records(event) if isinstance(r, Record)}
    assert values == {"1": "ab" * 32, "2": "192.0.2.1", "5": "http://o.example/x"}


def manifest(events: dict[str, tuple[dict[str, object], int]]) -> str:
    return json.dumps(
        {
            uuid: {"info": body["Event"]["info"], "timestamp": str(stamp)}  # type: ignore[index]
            for uuid, (body, stamp) in events.items()
        }
    )


async def test_feed_directory_sync_incremental_and_removal(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    circl, regin = load(CIRCL), load(REGIN)
    circl_uuid = "57c4445b-c548-4654-af0b-4be3950d210f"
    regin_uuid = str(regin["Event"]["uuid"])  # type: ignore[index]
    events = {circl_uuid: (circl, 1472541011), regin_uuid: (regin, 1418217625)}
    for uuid, (body, _stamp) in events.items():
        feed_server.set(f"feed/{uuid}.json", json.dumps(body))
    feed_server.set("feed/manifest.json", manifest(events))
    loaded = make_config(
        emulator.url,
        f"- {{name: circl, type: misp_feed, url: '{feed_server.url}/feed/', supplier: CIRCL,"
        " max_delete_ratio: 1.0}\n",
        "CIRCL: {confidence: 60}\n",
    )
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    held = emulator.indicators("CIRCL")
    regin_md5 = {
        canonicalize(str(a["value"]))[1]
        for a in regin["Event"]["Attribute"]  # type: ignore[index]
        if a["type"] == "md5" and a["to_ids"]
    }
    assert len(held) == 3 + len(regin_md5)
    assert regin_md5 <= held.keys()
    assert held["0749BAE92CA336A02C83D126E04EC628"].context["event_info"] == "Ransomware - Xorist"
    assert "TLP_WHITE" in held["0749BAE92CA336A02C83D126E04EC628"].tags

    feed_server.hits.clear()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "unchanged"
    assert [name for name, _ in feed_server.hits] == ["feed/manifest.json"]

    events[regin_uuid] = (regin, 1418217625 + 60)
    feed_server.set("feed/manifest.json", manifest(events))
    feed_server.hits.clear()
    emulator.clear_log()
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok"
    downloaded = sorted(name for name, _ in feed_server.hits)
    assert downloaded == sorted(["feed/manifest.json", f"feed/{regin_uuid}.json"])
    assert emulator.indicator_requests() == [], "same content: nothing to send"

    del events[regin_uuid]
    feed_server.set("feed/manifest.json", manifest(events))
    feeds, _ = await sync(loaded, store)
    assert feeds[0].change.removed == len(regin_md5)
    assert emulator.indicators("CIRCL").keys() == held.keys() - regin_md5


async def test_broken_event_leaves_the_supplier_as_it_was(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    circl_uuid = "57c4445b-c548-4654-af0b-4be3950d210f"
    feed_server.set(f"feed/{circl_uuid}.json", json.dumps(load(CIRCL)))
    feed_server.set("feed/manifest.json", json.dumps({circl_uuid: {"timestamp": 1}}))
    loaded = make_config(
        emulator.url,
        f"- {{name: circl, type: misp_feed, url: '{feed_server.url}/feed', supplier: CIRCL}}\n",
        "CIRCL: {confidence: 60}\n",
    )
    store = open_store(loaded)
    await sync(loaded, store)
    assert len(emulator.indicators("CIRCL")) == 3
    feed_server.set(
        "feed/manifest.json",
        json.dumps({circl_uuid: {"timestamp": 2}, "new-event": {"timestamp": 1}}),
    )
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "failed" and "HTTP 404" in (feeds[0].error or "")
    feed_server.set("feed/new-event.json", "{not json")
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "failed" and "event new-event: not a MISP event" in (
        feeds[0].error or ""
    )
    feed_server.set("feed/manifest.json", "<html>oops</html>")
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "failed" and "manifest.json is not JSON" in (feeds[0].error or "")
    # A uuid longer than any file name (ENAMETOOLONG once it named the cached event).
    feed_server.set("feed/manifest.json", json.dumps({"a" * 300: {"timestamp": 1}}))
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "failed" and "is not an event uuid" in (feeds[0].error or "")
    assert len(emulator.indicators("CIRCL")) == 3


async def test_zipped_event_bodies_and_string_timestamps(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    circl_uuid = "57c4445b-c548-4654-af0b-4be3950d210f"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{circl_uuid}.json", json.dumps(load(CIRCL)))
    feed_server.set(f"feed/{circl_uuid}.json", buffer.getvalue())
    feed_server.set("feed/manifest.json", json.dumps({circl_uuid: {"timestamp": "1472541011"}}))
    loaded = make_config(
        emulator.url,
        f"- {{name: circl, type: misp_feed, url: '{feed_server.url}/feed/manifest.json',"
        " supplier: CIRCL}\n",
        "CIRCL: {confidence: 60}\n",
    )
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "ok", feeds[0].error
    assert len(emulator.indicators("CIRCL")) == 3


@pytest.mark.parametrize("scheme", ["", "file://"], ids=["path", "file-url"])
async def test_local_feed_directory_on_a_fresh_state_directory(
    scheme: str,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
) -> None:
    circl_uuid = "57c4445b-c548-4654-af0b-4be3950d210f"
    directory = tmp_path / "misp-feed"
    directory.mkdir()
    (directory / f"{circl_uuid}.json").write_text(json.dumps(load(CIRCL)))
    (directory / "manifest.json").write_text(json.dumps({circl_uuid: {"timestamp": 1}}))
    loaded = make_config(
        emulator.url,
        f"- {{name: circl, type: misp_feed, url: '{scheme}{directory}', supplier: CIRCL}}\n",
        "CIRCL: {confidence: 60}\n",
    )
    assert not spool_dir(loaded).exists(), "no cycle ran here before"
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok", feeds[0].error
    assert len(emulator.indicators("CIRCL")) == 3
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "unchanged", feeds[0].error
