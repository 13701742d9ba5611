"""The real CLI against the emulator in strict mode, under every reading of the
CyberTrace pages the emulator can play (docs/emulator.md).

Each test runs once per reading: the defaults (the strictest plausible CyberTrace)
and each switch flipped on its own. The client must work with all of them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, USER, FeedServer, run_cli

from feedsync.emulator import Emulator
from feedsync.emulator.faults import GARBLES, Faults
from feedsync.store import Store

# One entry per switch of feedsync.emulator.readings.Readings, flipped from its default.
READINGS: dict[str, dict[str, Any]] = {
    "strict": {},
    "missing_supplier_404": {"missing_supplier_status": 404},
    "retention_zero_never": {"retention_zero": "never"},
    "tenant_immediate": {"tenant_visibility": "immediate"},
    "accept_lenient": {"accept_header": "lenient"},
    "internal_ti_put_accept": {"internal_ti_put": "accept"},
    "empty_batch_accept": {"empty_batch": "accept"},
    "all_rejected_400": {"all_rejected_status": 400},
    "unknown_fields_ignore": {"unknown_fields": "ignore"},
    "missing_tag_404": {"missing_tag_status": 404},
}

CONFIG = """\
cybertrace:
  url: {url}
  api_version: "{version}"
  username: {user}
  password: ${{CT_PASSWORD}}
  timeout: 10
  concurrency: 1
  max_batch_indicators: {batch}
  retry: {{attempts: 3, initial_delay: 0.02, max_delay: 0.1}}
{cybertrace}state:
  path: {state}
{suppliers}feeds:
{feeds}"""


class Clock:
    """The emulator's clock, running ``speed`` times faster than the real one."""

    def __init__(self, speed: float = 1.0) -> None:
        self.start = time.time()
        self.speed = speed

    def __call__(self) -> float:
        return self.start + (time.time() - self.start) * self.speed


@pytest.fixture(params=list(READINGS), ids=list(READINGS))
def reading(request: pytest.FixtureRequest) -> dict[str, Any]:
    return READINGS[request.param]


@pytest.fixture
async def emu(reading: dict[str, Any]) -> AsyncIterator[Emulator]:
    # Two minutes of the emulator's time pass in two real seconds (the 425 storm).
    emulator = Emulator(
        user=USER, password=PASSWORD, tenants=("acme",), clock=Clock(60.0), **reading
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


class Setup:
    def __init__(self, tmp_path: Path, emulator: Emulator, feeds: FeedServer) -> None:
        self.tmp_path, self.emulator, self.feeds = tmp_path, emulator, feeds

    def config(
        self,
        feeds: str,
        suppliers: str = "",
        *,
        version: str = "1.2",
        cybertrace: str = "",
        batch: int = 1000,
    ) -> Path:
        path = self.tmp_path / "feedsync.yaml"
        path.write_text(
            CONFIG.format(
                url=self.emulator.url,
                version=version,
                user=USER,
                batch=batch,
                cybertrace=cybertrace,
                state=self.tmp_path / "state.db",
                suppliers=f"suppliers:\n{suppliers}" if suppliers else "",
                feeds=feeds,
            )
        )
        return path

    def feed(self, name: str, supplier: str, values: list[str], extra: str = "") -> str:
        url = self.feeds.set(f"{name}.txt", "".join(f"{v}\n" for v in values))
        return (
            f"  - name: {name}\n    type: csv\n    url: {url}\n    supplier: {supplier}\n"
            f"    header: false\n{extra}"
        )

    def store(self) -> Store:
        return Store.open(str(self.tmp_path / "state.db"), readonly=True)


@pytest.fixture
def setup(
    tmp_path: Path, emu: Emulator, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> Setup:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)
    return Setup(tmp_path, emu, feed_server)


async def sync(path: Path, *args: str) -> int:
    return await run_cli("--log-level", "warning", "sync", "-c", str(path), *args)


def pending(setup: Setup, supplier: str) -> int:
    store = setup.store()
    try:
        counts = store.counts(supplier)
    finally:
        store.close()
    return counts["add"] + counts["update"] + counts["delete"]


async def test_a_first_sync_creates_suppliers_with_and_without_settings_and_every_tag(
    setup: Setup,
) -> None:
    emu = setup.emulator
    emu.add_tag("BETA", 2)  # created by someone else before feedsync came
    tags = "    tags: [alpha, beta, gamma]\n"
    path = setup.config(
        setup.feed("one", "Configured", ["a.example", "1.2.3.4"], tags)
        + setup.feed("two", "Defaulted", ["b.example/x", "0CC175B9C0F1B6A831C399E269772661"]),
        "  Configured: {confidence: 70, retention: 60, vendor: ops}\n",
    )
    assert await sync(path) == 0
    configured, defaulted = emu.supplier("Configured"), emu.supplier("Defaulted")
    assert configured is not None and defaulted is not None
    assert (configured.confidence, configured.retention, configured.vendor) == (70, 60, "ops")
    assert (defaulted.confidence, defaulted.retention, defaulted.vendor) == (50, 10080, "feedsync")
    assert emu.tags() == {"ALPHA": 0, "BETA": 2, "GAMMA": 0}
    posts = [r.json for r in emu.requests if r.method == "POST" and r.path.endswith("/tags")]
    assert posts == [[{"name": "ALPHA", "weight": 0}], [{"name": "GAMMA", "weight": 0}]]
    held = emu.indicators("Configured")
    assert held.keys() == {"a.example", "1.2.3.4"}
    assert held["a.example"].tags == {"ALPHA", "BETA", "GAMMA"}
    assert held["a.example"].context == {"source_feed": "one"}
    assert emu.indicators("Defaulted").keys() == {
        "b.example/x",
        "0CC175B9C0F1B6A831C399E269772661",
    }
    emu.clear_log()
    assert await sync(path) == 0
    assert emu.indicator_requests() == []


async def test_an_operator_deleting_the_supplier_mid_sync_loses_nothing(setup: Setup) -> None:
    emu = setup.emulator
    values = [f"host{i}.example" for i in range(3000)]
    path = setup.config(setup.feed("big", "Big", values), batch=200)
    emu.faults = Faults(drop_supplier_after=5)
    state = emu.fault_state
    first = await sync(path)
    assert state is not None and state.injected.get("drop_supplier") == 1
    emu.faults = None
    # Within two cycles (feedsync refills it in the cycle that found it gone).
    if emu.indicators("Big").keys() != set(values):
        assert first == 1
        assert await sync(path) == 0
    assert emu.indicators("Big").keys() == set(values)
    assert pending(setup, "Big") == 0
    assert [r.path for r in emu.requests if r.method == "POST"].count("/api/1.2/suppliers") == 2


@pytest.mark.parametrize("kind", [k for k in GARBLES if k != "unmapped"])
async def test_an_unreadable_202_leaves_the_batch_pending_and_the_next_cycle_converges(
    setup: Setup, kind: str
) -> None:
    emu = setup.emulator
    values = [f"v{i}.example" for i in range(50)]
    path = setup.config(setup.feed("f", "Garbled", values))
    emu.faults = Faults(garble=1.0, garble_kinds=(kind,))  # type: ignore[arg-type]
    assert await sync(path) == 1
    assert pending(setup, "Garbled") == 50
    emu.faults = None
    assert await sync(path) == 0
    assert pending(setup, "Garbled") == 0
    assert emu.indicators("Garbled").keys() == set(values)


async def test_a_refusal_named_unlike_anything_sent_converges(setup: Setup) -> None:
    emu = setup.emulator
    values = [f"v{i}.example" for i in range(20)]
    path = setup.config(setup.feed("f", "Echo", values))
    emu.faults = Faults(garble=0.5, garble_kinds=("unmapped",), seed=3)
    await sync(path)
    emu.faults = None
    await sync(path)
    assert emu.indicators("Echo").keys() == set(values)
    assert pending(setup, "Echo") == 0


async def test_tenants_get_their_supplier_created_and_confirmed(
    setup: Setup, reading: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    emu = setup.emulator
    path = setup.config(
        setup.feed("t", "Tenanted", ["a.example", "b.example"]),
        version="1.3",
        cybertrace="  tenant: acme\n",
    )
    first = await sync(path)
    posts = [r.path for r in emu.requests if r.method == "POST"]
    assert posts == ["/api/1.3/suppliers"], "POST suppliers has no tenant form"
    if reading.get("tenant_visibility") != "immediate":
        assert first == 1
        assert "must assign 'Tenanted' to 'acme'" in capfd.readouterr().out
        assert emu.indicators("Tenanted", tenant="acme") == {}
        emu.assign_supplier("Tenanted", "acme")
        assert await sync(path) == 0
    else:
        assert first == 0
    assert emu.indicators("Tenanted", tenant="acme").keys() == {"a.example", "b.example"}
    writes = [r.path for r in emu.indicator_requests()]
    assert writes and all(p.startswith("/api/1.3/acme/suppliers/Tenanted/") for p in writes)


async def test_a_two_minute_425_storm_is_ridden_out(setup: Setup) -> None:
    emu = setup.emulator
    path = setup.config(setup.feed("s", "Storm", ["a.example", "b.example"]))
    emu.faults = Faults(initializing=120.0)  # emulator seconds: two real seconds
    assert await sync(path) == 0
    assert emu.fault_state is not None and emu.fault_state.injected.get("425", 0) >= 5
    assert emu.indicators("Storm").keys() == {"a.example", "b.example"}


async def test_retention_0_works_where_it_means_never_and_fails_clearly_where_refused(
    setup: Setup, reading: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    path = setup.config(
        setup.feed("r", "Forever", ["a.example"]), "  Forever: {confidence: 10, retention: 0}\n"
    )
    assert await run_cli("check", "-c", str(path)) == 0
    assert "retention of 0 means" in capfd.readouterr().out
    code = await sync(path)
    if reading.get("retention_zero") == "never":
        assert code == 0
        assert setup.emulator.indicators("Forever").keys() == {"a.example"}
    else:
        assert code == 1
        out = capfd.readouterr().out
        assert "POST suppliers: CyberTrace answered 400" in out
        assert pending(setup, "Forever") == 1


async def test_a_restore_from_an_older_backup_is_found_and_made_exact(
    setup: Setup,
) -> None:
    emu = setup.emulator
    kept = [f"v{i}.example" for i in range(50)]
    dropped = [f"old{i}.example" for i in range(10)]
    path = setup.config(setup.feed("f", "Restored", kept + dropped))
    assert await sync(path) == 0
    supplier = emu.supplier("Restored")
    assert supplier is not None
    backup = dict(supplier.indicators)

    added = [f"new{i}.example" for i in range(5)]
    setup.feed("f", "Restored", kept + added)
    assert await sync(path) == 0
    assert emu.indicators("Restored").keys() == set(kept + added)

    supplier.indicators.clear()  # CyberTrace restored from the backup
    supplier.indicators.update(backup)
    # The backup holds an older canary than the one feedsync placed last (canary.py).
    assert await sync(path) == 0
    assert emu.indicators("Restored").keys() == set(kept + added), "found, re-sent and swept"
    assert pending(setup, "Restored") == 0
    assert await sync(path, "--resync") == 0
    assert emu.indicators("Restored").keys() == set(kept + added)
    assert pending(setup, "Restored") == 0

    # Again, when CyberTrace holds none of what is swept: deleting those is done too.
    assert await sync(path, "--resync") == 0
    assert emu.indicators("Restored").keys() == set(kept + added)
    assert pending(setup, "Restored") == 0
