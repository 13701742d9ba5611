"""Restore detection: the canary each supplier holds, checked with POST lookup,
through the real CLI against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PASSWORD, FeedServer, run_cli

from feedsync import config
from feedsync.emulator import Emulator
from feedsync.errors import ConfigError
from feedsync.store import Store
from feedsync.store.canaries import read_all

CONFIG = """\
cybertrace:
  url: {url}
  api_version: "{version}"
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
  retry: {{attempts: 2, initial_delay: 0.01, max_delay: 0.02}}
{extra}state:
  path: {state}
suppliers:
  Demo: {{confidence: 50}}
feeds:
  - name: list
    type: csv
    url: {feed}
    supplier: Demo
"""
VALUES = {"a.example", "b.example", "c.example"}


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)


def write(
    tmp_path: Path, emulator: Emulator, feed: str, extra: str = "", version: str = "1.2"
) -> str:
    path = tmp_path / "feedsync.yaml"
    state = tmp_path / "state.db"
    path.write_text(
        CONFIG.format(url=emulator.url, state=state, feed=feed, extra=extra, version=version)
    )
    return str(path)


def canary_of(tmp_path: Path) -> str:
    store = Store.open(str(tmp_path / "state.db"), readonly=True)
    try:
        return read_all(store)["Demo"].value
    finally:
        store.close()


def feed_values(emulator: Emulator) -> set[str]:
    return set(emulator.indicators("Demo"))


async def test_a_wiped_supplier_is_refilled_by_the_next_ordinary_sync(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, emulator, feed_server.set("l.txt", "\n".join(sorted(VALUES))))
    assert await run_cli("sync", "-c", path) == 0
    canary = canary_of(tmp_path)
    assert set(emulator.indicators("Demo", canaries=True)) == VALUES | {canary}
    assert canary.endswith(".canary.feedsync.invalid")
    capfd.readouterr()

    supplier = emulator.supplier("Demo")
    assert supplier is not None
    supplier.indicators.clear()  # CyberTrace reinstalled, or its database lost
    assert await run_cli("sync", "-c", path) == 0
    assert feed_values(emulator) == VALUES, "refilled without --resync"
    err = capfd.readouterr().err
    assert "supplier.restored" in err and "no longer matches the canary" in err
    assert await run_cli("status", "-c", path) == 0
    assert "had lost this supplier's indicators" in capfd.readouterr().out
    assert len(emulator.indicators("Demo", canaries=True)) == len(VALUES) + 1, (
        "one canary, a new one"
    )

    # Nothing changed since: the next cycle only asks, and sends nothing.
    emulator.clear_log()
    assert await run_cli("sync", "-c", path) == 0
    assert emulator.indicator_requests() == []
    assert "supplier.restored" not in capfd.readouterr().err


async def test_a_supplier_made_again_empty_by_hand_is_refilled(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer
) -> None:
    path = write(tmp_path, emulator, feed_server.set("l.txt", "\n".join(sorted(VALUES))))
    assert await run_cli("sync", "-c", path) == 0
    emulator.delete_supplier("Demo")
    emulator.add_supplier("Demo", confidence=50)  # by hand, between two cycles
    assert emulator.indicators("Demo") == {}
    assert await run_cli("sync", "-c", path) == 0
    assert feed_values(emulator) == VALUES


async def test_a_restore_from_an_older_backup_is_made_exact(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer
) -> None:
    feed = feed_server.set("l.txt", "a.example\nold.example\n")
    path = write(tmp_path, emulator, feed)
    assert await run_cli("sync", "-c", path) == 0
    supplier = emulator.supplier("Demo")
    assert supplier is not None
    backup = dict(supplier.indicators)

    feed_server.set("l.txt", "a.example\nnew.example\n")
    assert await run_cli("sync", "-c", path) == 0
    supplier.indicators.clear()
    supplier.indicators.update(backup)  # the backup holds the canary of its day
    assert await run_cli("sync", "-c", path) == 0
    assert feed_values(emulator) == {"a.example", "new.example"}, "re-sent and swept"


async def test_the_canary_is_no_feed_indicator_and_no_sweep_deletes_it(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, emulator, feed_server.set("l.txt", "\n".join(sorted(VALUES))))
    assert await run_cli("sync", "-c", path) == 0
    canary = canary_of(tmp_path)
    capsys.readouterr()
    await run_cli("status", "-c", path, "--json")
    snapshot = json.loads(capsys.readouterr().out)
    text = json.dumps(snapshot)
    assert canary not in text
    demo = next(s for s in snapshot["suppliers"] if s["supplier"] == "Demo")
    assert demo["indicators"] == len(VALUES)
    assert demo["restored_at"] is None and demo["canary_checked"] is not None

    # A resync deletes every value feedsync once sent that no feed lists: not the canary.
    feed_server.set("l.txt", "a.example\nb.example\n")
    assert await run_cli("sync", "-c", path) == 0
    emulator.clear_log()
    assert await run_cli("sync", "-c", path, "--resync") == 0
    assert canary_of(tmp_path) in emulator.indicators("Demo", canaries=True)
    assert feed_values(emulator) == {"a.example", "b.example"}
    deletes = [
        [item["indicator"] for item in request.json]  # type: ignore[union-attr]
        for request in emulator.indicator_requests("DELETE")
    ]
    assert ["c.example"] in deletes, "the sweep ran"
    swept = [values for values in deletes if "c.example" in values]
    assert not any(v.endswith(".canary.feedsync.invalid") for batch in swept for v in batch)


async def test_a_changed_supplier_gets_a_new_canary_and_the_old_one_goes(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer
) -> None:
    path = write(tmp_path, emulator, feed_server.set("l.txt", "a.example\n"))
    assert await run_cli("sync", "-c", path) == 0
    first = canary_of(tmp_path)
    feed_server.set("l.txt", "a.example\nb.example\n")
    assert await run_cli("sync", "-c", path) == 0
    second = canary_of(tmp_path)
    assert second != first
    assert set(emulator.indicators("Demo", canaries=True)) == {"a.example", "b.example", second}


async def test_without_the_canary_a_wiped_supplier_stays_wiped(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer
) -> None:
    feed = feed_server.set("l.txt", "\n".join(sorted(VALUES)))
    path = write(tmp_path, emulator, feed, extra="  canary: false\n")
    assert await run_cli("sync", "-c", path) == 0
    assert set(emulator.indicators("Demo", canaries=True)) == VALUES
    supplier = emulator.supplier("Demo")
    assert supplier is not None
    supplier.indicators.clear()
    emulator.clear_log()
    assert await run_cli("sync", "-c", path) == 0
    assert emulator.indicators("Demo") == {}
    assert [r.path for r in emulator.requests if r.path.endswith("/lookup")] == []


async def test_a_disabled_supplier_is_not_taken_for_a_restored_one(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, emulator, feed_server.set("l.txt", "\n".join(sorted(VALUES))))
    assert await run_cli("sync", "-c", path) == 0
    supplier = emulator.supplier("Demo")
    assert supplier is not None
    supplier.status = "disabled"  # matches nothing now, holds everything still
    capfd.readouterr()
    emulator.clear_log()
    assert await run_cli("sync", "-c", path) == 0
    assert "supplier.restored" not in capfd.readouterr().err
    assert emulator.indicator_requests() == []


async def test_under_api_1_3_without_a_tenant_the_untenanted_lookup_is_used(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer
) -> None:
    feed = feed_server.set("l.txt", "\n".join(sorted(VALUES)))
    path = write(tmp_path, emulator, feed, version="1.3")
    assert await run_cli("sync", "-c", path) == 0
    supplier = emulator.supplier("Demo")
    assert supplier is not None
    supplier.indicators.clear()
    assert await run_cli("sync", "-c", path) == 0
    assert feed_values(emulator) == VALUES


@pytest.mark.parametrize(
    "domain", ["canary.example.com", "Canary.invalid", "a..invalid", "-x.test"]
)
def test_the_canary_domain_must_be_reserved(tmp_path: Path, domain: str) -> None:
    path = tmp_path / "feedsync.yaml"
    path.write_text(
        CONFIG.format(
            url="http://127.0.0.1:1",
            version="1.2",
            extra=f"  canary_domain: {domain}\n",
            state=tmp_path / "s.db",
            feed="x.txt",
        )
    )
    with pytest.raises(ConfigError, match="canary_domain"):
        config.load(path, env={"CT_PASSWORD": PASSWORD})
