"""The change journal and `feedsync why`, through the real CLI and the emulator:
each reason a change is journaled with, read back the way an analyst would."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, FeedServer, run_cli

from feedsync.emulator import Emulator

CONFIG = """\
cybertrace:
  url: {url}
  api_version: "1.2"
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
state:
  path: {state}
{extra}feeds:
{feeds}"""
A_CSV = "  - {{name: a, type: csv, url: {url}, supplier: Demo, indicator: value,"
A_CSV += " context: {{threat: threat}}}}\n"
B_TXT = "  - {{name: b, type: csv, url: {url}, supplier: Demo{more}}}\n"


def write(path: Path, emulator: Emulator, feeds: str, extra: str = "") -> Path:
    state = path.parent / "s.db"
    path.write_text(CONFIG.format(url=emulator.url, state=state, extra=extra, feeds=feeds))
    return path


async def why(
    path: Path, value: str, capsys: pytest.CaptureFixture[str], expect: int = 0
) -> dict[str, Any]:
    capsys.readouterr()
    assert await run_cli("why", "-c", str(path), value, "--json") == expect
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    return answer


def texts(answer: dict[str, Any]) -> list[str]:
    return [entry["text"] for entry in answer["journal"]]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    return tmp_path / "feedsync.yaml"


async def test_added_updated_deleted_excluded_held_and_forced(
    config: Path,
    emulator: Emulator,
    feed_server: FeedServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a = feed_server.set(
        "a.csv",
        "value,threat\nkeep.example,phish\ngone.example,phish\nshared.example,phish\n10.0.0.1,x\n",
    )
    b = feed_server.set("b.txt", "shared.example\n")
    feeds = A_CSV.format(url=a) + B_TXT.format(url=b, more="")
    write(config, emulator, feeds)
    assert await run_cli("sync", "-c", str(config)) == 0

    # Any spelling finds the value: it is canonicalized as the feeds' values are.
    story = await why(config, "KEEP.Example", capsys)
    assert story["value"] == "keep.example" and story["kind"] == "domain"
    assert [(f["feed"], f["context"]) for f in story["feeds"]] == [("a", {"threat": "phish"})]
    assert story["cybertrace"][0]["supplier"] == "Demo"
    assert story["cybertrace"][0]["state"] == "present"
    assert texts(story) == ["sent to Demo as new (listed by feed a)", "added by feed a"]

    story = await why(config, "10.0.0.1", capsys)
    assert story["feeds"] == [] and story["cybertrace"] == []
    [excluded] = story["journal"]
    assert excluded["event"] == "excluded" and excluded["feed"] == "a"
    assert excluded["text"].startswith("left out of feed a by its exclusions: ")
    assert await run_cli("sync", "-c", str(config)) == 0
    assert len((await why(config, "10.0.0.1", capsys))["journal"]) == 1, "journaled once"

    shared = await why(config, "shared.example", capsys)
    assert {f["feed"] for f in shared["feeds"]} == {"a", "b"}
    assert shared["journal"][0]["text"] == (
        "sent to Demo as new (listed by feed a); listed by a, b"
    )

    feed_server.set("a.csv", "value,threat\nkeep.example,malware\nshared.example,phish\n")
    assert await run_cli("sync", "-c", str(config)) == 0
    story = await why(config, "keep.example", capsys)
    assert texts(story)[:2] == [
        "sent to Demo as updated (listed by feed a)",
        "updated by feed a: context.threat",
    ]
    gone = await why(config, "gone.example", capsys)
    assert "gone.example" not in emulator.indicators("Demo")
    assert gone["feeds"] == [] and gone["cybertrace"][0]["state"] == "deleted"
    assert texts(gone)[:2] == [
        "deleted from Demo: no feed lists it any more (the last feed that listed it: a)",
        "feed a no longer lists it: no longer in the feed",
    ]

    # An empty fetch is held by the shrink guard, and journaled once as such...
    feed_server.set("a.csv", "value,threat\n")
    for _ in range(2):
        assert await run_cli("sync", "-c", str(config)) == 0
    story = await why(config, "keep.example", capsys)
    assert "keep.example" in emulator.indicators("Demo")
    held = texts(story)[0]
    assert held.startswith("feed a: held by the shrink guard: the fetch is empty"), held
    assert texts(story).count(held) == 1
    # ... until an operator forces it: then what only feed a listed is deleted.
    assert await run_cli("sync", "-c", str(config), "--force") == 0
    story = await why(config, "keep.example", capsys)
    assert texts(story)[0].startswith("deleted from Demo: no feed lists it any more")
    assert "forced by operator over the shrink guard" in texts(story)[1]
    shared = await why(config, "shared.example", capsys)
    assert shared["cybertrace"][0]["state"] == "present", "feed b still lists it"
    assert [f["feed"] for f in shared["feeds"]] == ["b"]
    # Its context came from feed a, the first that listed it; now it comes from b.
    assert texts(shared)[0] == "sent to Demo as updated (listed by feed b)"
    assert "forced by operator" in texts(shared)[1]

    story = await why(config, "never.example", capsys, expect=1)
    assert story["error"].startswith("feedsync has no record of it")
    story = await why(config, "not a value", capsys, expect=2)
    assert story["error"].startswith("not an indicator")


async def test_text_output_tells_the_story(
    config: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = feed_server.set("a.csv", "value,threat\nkeep.example,phish\n")
    write(config, emulator, A_CSV.format(url=a))
    assert await run_cli("sync", "-c", str(config)) == 0
    capsys.readouterr()
    assert await run_cli("why", "-c", str(config), "keep.example") == 0
    out = capsys.readouterr().out
    assert out.startswith("keep.example (domain)\nListed now by:\n  a (supplier Demo):")
    assert "context threat=phish" in out
    assert "  Demo: holds it, acknowledged " in out
    assert "Journal (newest first):" in out and "added by feed a" in out


async def test_removed_feed_held_then_forced_and_a_disabled_feed_forgotten(
    config: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = feed_server.set("a.csv", "value,threat\nonly-a.example,x\nshared.example,x\n")
    b = feed_server.set("b.txt", "only-b.example\nshared.example\n")
    feeds = A_CSV.format(url=a) + B_TXT.format(url=b, more="")
    write(config, emulator, feeds)
    assert await run_cli("sync", "-c", str(config)) == 0

    write(config, emulator, A_CSV.format(url=a))  # feed b removed from the configuration
    for _ in range(2):
        assert await run_cli("sync", "-c", str(config)) == 0
    story = await why(config, "only-b.example", capsys)
    removed = [t for t in texts(story) if "removed from the configuration" in t]
    assert len(removed) == 1, texts(story)
    assert removed[0].startswith("[one entry for 2 values] feed b: the feed was removed")
    assert await run_cli("sync", "-c", str(config), "--force") == 0
    assert set(emulator.indicators("Demo")) == {"only-a.example", "shared.example"}
    story = await why(config, "only-b.example", capsys)
    assert texts(story)[:2] == [
        "deleted from Demo: no feed lists it any more (the last feed that listed it: b)",
        "feed b no longer lists it: the feed was removed from the configuration;"
        " forced by operator (sync --force)",
    ]

    # forget: refused for an enabled feed (its next run would list them again)...
    assert await run_cli("forget", "-c", str(config), "a") == 2
    assert "feed a is enabled" in capsys.readouterr().err
    assert await run_cli("forget", "-c", str(config), "nosuch") == 2
    # ... done for a disabled one, which otherwise keeps what it listed.
    disabled = A_CSV.format(url=a).replace("}}\n", "}, enabled: false}\n")
    write(config, emulator, disabled + B_TXT.format(url=b, more=""))
    assert await run_cli("sync", "-c", str(config)) == 0
    assert "only-a.example" in emulator.indicators("Demo")
    capsys.readouterr()
    assert await run_cli("forget", "-c", str(config), "a") == 0
    assert "forgot feed a and the 2 indicators it listed" in capsys.readouterr().out
    assert set(emulator.indicators("Demo")) == {"only-b.example", "shared.example"}
    story = await why(config, "only-a.example", capsys)
    assert texts(story)[:2] == [
        "deleted from Demo: no feed lists it any more (the last feed that listed it: a)",
        "feed a no longer lists it: forgotten by operator (feedsync forget)",
    ]
    shared = await why(config, "shared.example", capsys)
    assert shared["cybertrace"][0]["state"] == "present"
    assert texts(shared)[:2] == [
        "sent to Demo as updated (listed by feed b); re-planned: the supplier's feeds or"
        " its indicators' shape changed",
        "feed a no longer lists it: forgotten by operator (feedsync forget)",
    ]


async def test_rejected_by_cybertrace_and_re_sent_for_retention(
    config: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = feed_server.set("a.csv", "value,threat\nkeep.example,phish\n")
    extra = "suppliers:\n  Demo: {confidence: 50, retention: 1}\n"
    write(config, emulator, A_CSV.format(url=a), extra)
    path = str(config)
    assert await run_cli("sync", "-c", path) == 0
    # CyberTrace refuses what feedsync cannot make it refuse: a body planned by hand.
    with sqlite3.connect(config.parent / "s.db") as db:
        db.execute(
            "INSERT INTO pending (supplier, value, op, digest, body, planned_at)"
            " VALUES ('Demo', 'refused.example', 'add', 1, ?, 0)",
            ('{"indicator":"refused.example","context":{"nested":{"a":1}}}',),
        )
        # Acknowledged an hour ago: with a retention of a minute, the next cycle re-sends it.
        db.execute("UPDATE acked SET acked_at = acked_at - 3600 WHERE value = 'keep.example'")
    assert await run_cli("sync", "-c", path) == 0
    story = await why(config, "refused.example", capsys)
    assert story["cybertrace"][0]["state"] == "rejected"
    assert texts(story)[0].startswith("rejected by CyberTrace (Demo): ")
    story = await why(config, "keep.example", capsys)
    assert texts(story)[0] == "[one entry for 1 value] re-sent to Demo for retention"
    assert texts(story)[1] == "sent to Demo as new (listed by feed a)"
