"""The poison guard: a fetch that newly lists a canary value, or grows a feed by
more than max_growth_ratio, is held like a shrink (confirmed by the next fetch
of the same change, or forced); through the real CLI against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PASSWORD, FeedServer, run_cli

from feedsync import metrics
from feedsync.config import parse
from feedsync.emulator import Emulator
from feedsync.safety.poison import (
    PUBLIC_RESOLVERS,
    canaries,
    plain_canaries,
    screened_canaries,
)

HASH = "44D88612FEA8A8F36DE82E1278ABB02F"

CONFIG = """\
cybertrace:
  url: {url}
  username: feedsync
  password: ${{CT_PASSWORD}}
  timeout: 5
state:
  path: {state}
{top}feeds:
  - name: list
    type: csv
    url: {feed}
    supplier: Demo
{extra}"""

BASE = [f"20.0.0.{i}" for i in range(1, 31)]


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)


def write(tmp_path: Path, emulator: Emulator, feed: str, top: str = "", extra: str = "") -> str:
    path = tmp_path / "feedsync.yaml"
    state = tmp_path / "state.db"
    path.write_text(CONFIG.format(url=emulator.url, state=state, feed=feed, top=top, extra=extra))
    return str(path)


def held() -> float | None:
    return metrics.REGISTRY.get_sample_value("feedsync_feed_held", {"feed": "list"})


def test_the_canary_set() -> None:
    check = canaries(("public_resolvers", "20.50.0.0/16", "*.corp.example"))
    assert check is not None
    for kind, value in [("ipv4", "8.8.8.8"), ("ipv6", "2606:4700:4700::1111"),
                        ("domain", "dns.google"), ("url", "dns.quad9.net/dns-query"),
                        ("ipv4", "20.50.1.1"), ("domain", "vpn.corp.example")]:  # fmt: skip
        assert check(kind, value) == "canary", value
    assert check("ipv4", "8.8.8.9") is None and check("domain", "google.com") is None
    assert canaries(()) is None


def test_a_plain_canary_set_is_looked_up_as_its_screen_checks() -> None:
    # The default set and peers by name or address take the set lookup; what
    # the screen's checks say of each probe is the reference.
    values = (*PUBLIC_RESOLVERS, "ct.corp.example", "10.1.2.3", "2001:db8::5", HASH, "[::9]")
    plain = plain_canaries(values)
    assert plain is not None
    reference = screened_canaries(values)
    hosts = ["dns.google", "x.dns.google", "google", "ct.corp.example", "corp.example"]
    addresses = ["8.8.8.8", "8.8.8.9", "10.1.2.3", "2001:db8::5", "2606:4700:4700::1111", "::9"]
    probes = [("domain", h) for h in hosts] + [("ipv4", a) for a in addresses[:3]]
    probes += [("ipv6", a) for a in addresses[3:]] + [("md5", HASH), ("md5", "0" * 32)]
    probes += [("sha1", "A" * 40), ("domain", HASH.lower() + ".x"), ("sha256", "B" * 64)]
    for host in [*hosts, *addresses[:3], *(f"[{a}]" for a in addresses[3:])]:
        probes += [("url", f"{host}/a"), ("url", f"{host}?q=1"), ("url", f"{host}/a?b/c")]
    assert any(reference(kind, value) for kind, value in probes)
    for kind, value in probes:
        assert plain(kind, value) == reference(kind, value), (kind, value)
    for wider in ("20.50.0.0/16", "*.corp.example", "corp.example/login"):
        assert plain_canaries((*values, wider)) is None, wider


async def test_a_fetch_that_adds_a_canary_is_held_until_confirmed(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    feed = feed_server.set("l.txt", "\n".join(BASE) + "\n")
    path = write(tmp_path, emulator, feed)
    assert await run_cli("sync", "-c", path) == 0
    assert set(emulator.indicators("Demo")) == set(BASE)
    capfd.readouterr()

    feed_server.set("l.txt", "\n".join([*BASE, "8.8.8.8", "20.0.1.1"]) + "\n")
    assert await run_cli("sync", "-c", path) == 0
    out = capfd.readouterr().out
    assert "held" in out and "canary value(s): 8.8.8.8" in out
    assert set(emulator.indicators("Demo")) == set(BASE), "nothing of the change was sent"
    assert held() == 1
    assert await run_cli("status", "-c", path) == 1
    status = capfd.readouterr().out
    assert "holds a change adding 2 indicators" in status and "--force" in status

    # The next fetch yields the same change: it stands, as a shrink would.
    assert await run_cli("sync", "-c", path) == 0
    assert set(emulator.indicators("Demo")) == {*BASE, "8.8.8.8", "20.0.1.1"}
    assert held() == 0
    # Listed already: not new, not held again.
    feed_server.set("l.txt", "\n".join([*BASE, "8.8.8.8", "20.0.1.2"]) + "\n")
    assert await run_cli("sync", "-c", path) == 0
    assert "20.0.1.2" in emulator.indicators("Demo")


async def test_force_applies_a_held_change_and_operator_canaries_apply(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # A first fetch is judged too; the operator's own network is a canary.
    feed = feed_server.set("l.txt", "\n".join([*BASE, "20.50.3.4"]) + "\n")
    path = write(tmp_path, emulator, feed, top="canaries: [public_resolvers, 20.50.0.0/16]\n")
    assert await run_cli("sync", "-c", path) == 0
    assert emulator.indicators("Demo") == {}
    assert "canary value(s): 20.50.3.4" in capfd.readouterr().out
    assert await run_cli("sync", "-c", path, "--force") == 0
    assert set(emulator.indicators("Demo")) == {*BASE, "20.50.3.4"}

    # A feed's own canaries replace the top level's: none, nothing held.
    feed_server.set("l.txt", "\n".join([*BASE, "20.50.3.4", "8.8.4.4"]) + "\n")
    path = write(tmp_path, emulator, feed, extra="    canaries: []\n")
    assert await run_cli("sync", "-c", path) == 0
    assert "8.8.4.4" in emulator.indicators("Demo")


async def test_a_fetch_that_grows_the_feed_past_the_ratio_is_held(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    feed = feed_server.set("l.txt", "\n".join(BASE) + "\n")
    path = write(tmp_path, emulator, feed)
    assert await run_cli("sync", "-c", path) == 0
    grown = [*BASE, *(f"20.1.{i // 250}.{i % 250 + 1}" for i in range(91))]  # +91: 3.03x
    feed_server.set("l.txt", "\n".join(grown) + "\n")
    assert await run_cli("sync", "-c", path) == 0
    assert len(emulator.indicators("Demo")) == len(grown), "under the floor of 100 added"

    many = [*grown, *(f"20.2.{i // 250}.{i % 250 + 1}" for i in range(400))]  # +400 to 121
    feed_server.set("l.txt", "\n".join(many) + "\n")
    assert await run_cli("sync", "-c", path) == 0
    out = capfd.readouterr().out
    assert "would add 400 indicators to 121" in out and "max_growth_ratio 3" in out
    assert len(emulator.indicators("Demo")) == len(grown)
    assert await run_cli("sync", "-c", path, "--force") == 0
    assert len(emulator.indicators("Demo")) == len(many)
    assert held() == 0

    # A higher ratio lets the same growth through; 0 turns the check off.
    more = [*many, *(f"20.3.{i // 250}.{i % 250 + 1}" for i in range(2000))]
    feed_server.set("l.txt", "\n".join(more) + "\n")
    path = write(tmp_path, emulator, feed, extra="    max_growth_ratio: 0\n")
    assert await run_cli("sync", "-c", path) == 0
    assert len(emulator.indicators("Demo")) == len(more)


async def test_a_feed_that_lists_feedsyncs_own_peers_is_held(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # The MISP server is disabled here: still the SOC's own host, which no feed may list.
    misp = (
        "  - {name: intel, type: misp, url: 'https://misp.corp.example', supplier: Demo,"
        " api_key: k, enabled: false, proxy: 'http://proxy.corp.example:3128'}\n"
    )
    feed = feed_server.set("l.txt", "\n".join(BASE) + "\n")
    path = write(tmp_path, emulator, feed, extra=misp)
    assert await run_cli("sync", "-c", path, "list") == 0
    capfd.readouterr()
    listed = ["misp.corp.example", "http://proxy.corp.example/x"]
    feed_server.set("l.txt", "\n".join([*BASE, *listed]) + "\n")
    assert await run_cli("sync", "-c", path, "list") == 0
    out = capfd.readouterr().out
    assert "held" in out and "2 canary value(s)" in out, out
    assert set(emulator.indicators("Demo")) == set(BASE)


def test_own_hosts_are_the_configurations_peers() -> None:
    text = CONFIG.format(
        url="https://ct.corp.example:9443", state="/tmp/s.db", feed="/tmp/l.txt", top="",
        extra="  - {name: t, type: taxii, url: 'https://taxii.corp.example/api/', supplier: D,"
        " collection: c}\n",
    )  # fmt: skip
    loaded = parse(text, env={"CT_PASSWORD": "p"})
    assert loaded.own_hosts() == ("ct.corp.example", "taxii.corp.example")
    check = canaries(("own_hosts",), loaded.own_hosts())
    assert check is not None and check("domain", "ct.corp.example") == "canary"
    assert check("url", "taxii.corp.example/api/") == "canary"
    assert canaries(("own_hosts",)) is None, "no peer named: an empty set"
