"""Local allowlists: entries from files and the configuration, never sent,
counted with reason allowlist; through the real CLI against the emulator."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, FeedServer, run_cli

from feedsync import config, metrics
from feedsync.emulator import Emulator
from feedsync.errors import ConfigError
from feedsync.model import Indicator, Invalid, Record
from feedsync.safety.allowlist import Allowlist, AllowlistError, parse_entry, with_allowlist
from feedsync.safety.exclusions import EXCLUDED
from feedsync.safety.warninglists import screen_for

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
{feed_extra}"""

FEED = [
    "20.1.2.3", "20.9.9.9", "20.200.0.7", "corp.example", "www2.corp.example",
    "shop.example", "a.shop.example", "evil.example/login/x", "evil.example/other",
    "20.1.2.3/30", "44d88612fea8a8f36de82e1278abb02f", "21.0.0.1",
]  # fmt: skip


HASH = "44d88612fea8a8f36de82e1278abb02f"


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CT_PASSWORD", PASSWORD)


def write(
    tmp_path: Path, emulator: Emulator, feed: str, top: str = "", feed_extra: str = ""
) -> str:
    path = tmp_path / "feedsync.yaml"
    text = CONFIG.format(
        url=emulator.url, state=tmp_path / "state.db", feed=feed, top=top, feed_extra=feed_extra
    )
    path.write_text(text)
    return str(path)


def events(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_entries_by_how_they_are_written() -> None:
    allow = Allowlist(
        values=(
            "20.1.2.0/24", "shop.example", "*.corp.example", "evil.example/login/",
            "44D88612FEA8A8F36DE82E1278ABB02F", "2603:1000::/25", "*.corp.a1",
        )
    )  # fmt: skip
    screen = with_allowlist(screen_for((), (), 24), allow)
    allowed = [
        "20.1.2.200", "shop.example", "http://shop.example/a", "corp.example", "x.y.corp.example",
        "https://a.corp.example/z", "evil.example/login/x", "44d88612fea8a8f36de82e1278abb02f",
        "2603:1000::1", "http://20.1.2.3/bin", "https://x.corp.a1/z",
    ]  # fmt: skip
    kept = [
        "20.1.3.1", "a.shop.example", "notcorp.example", "evil.example/login", "evil.example/x",
        "corp.example.evil.ru", "2603:1100::1", "http://cdn.a1/x", "http://1a.b2c3/x?q",
    ]  # fmt: skip
    for value in allowed:
        (out,) = screen.screened(Record(1, value), ())
        assert isinstance(out, Invalid) and out.reason == EXCLUDED + "allowlist", value
    for value in kept:
        (out,) = screen.screened(Record(1, value), ())
        assert isinstance(out, Indicator), value
    # A range the allowlist covers whole is one exclusion, not its addresses.
    (out,) = screen.screened(Record(1, "20.1.2.16/28"), ())
    assert isinstance(out, Invalid) and out.reason == EXCLUDED + "allowlist"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [("20.1.2.3/16", "host bits set"), ("*.20.1.2.3", "only a name"), ("a b", "no allowlist")],
)
def test_bad_entries_say_why(entry: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_entry(entry)


def test_config_names_a_bad_value_and_a_missing_file(tmp_path: Path, emulator: Emulator) -> None:
    path = write(tmp_path, emulator, "x.txt", top="allowlist: {values: [20.1.2.3, 20.1.2.3/8]}\n")
    with pytest.raises(ConfigError, match=r"^allowlist.values\[1\]: .*host bits set"):
        config.load(path, env={"CT_PASSWORD": PASSWORD})
    path = write(tmp_path, emulator, "x.txt", feed_extra="    allowlist: {files: [gone.txt]}\n")
    with pytest.raises(ConfigError, match=r"^feeds\[0\].allowlist.files\[0\]: .*gone.txt"):
        config.load(path, env={"CT_PASSWORD": PASSWORD})


async def test_allowlisted_values_never_reach_cybertrace(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "allow.txt").write_text(
        "# ours\n20.1.2.0/24   # office\n*.corp.example\nnot an entry\n20.200.0.0/8\n"
    )
    feed = feed_server.set("l.txt", "\n".join(FEED) + "\n")
    path = write(
        tmp_path,
        emulator,
        feed,
        top="allowlist: {files: [allow.txt], values: [shop.example]}\n",
        feed_extra=f"    allowlist: {{values: [evil.example/login, {HASH}]}}\n",
    )
    assert await run_cli("sync", "-c", path) == 0
    sent = set(emulator.indicators("Demo"))
    assert sent == {"20.9.9.9", "20.200.0.7", "a.shop.example", "evil.example/other", "21.0.0.1"}
    out, err = capfd.readouterr()
    # Counted per feed with its reason, in the output, the log and the metric.
    assert "excluded 7 (allowlist 7)" in out
    assert "feed.excluded" in err and "allowlist" in err
    bad = [e for e in events(err) if e["event"] == "allowlist.bad_line"]
    assert [(e["file"], e["line"], e["level"]) for e in bad] == [
        (str(tmp_path / "allow.txt"), 4, "warning"),
        (str(tmp_path / "allow.txt"), 5, "warning"),
    ], "each bad line named, the rest applied"
    assert "host bits set" in bad[1]["error"]
    sample = metrics.REGISTRY.get_sample_value(
        "feedsync_excluded_indicators", {"feed": "list", "reason": "allowlist"}
    )
    assert sample == 7

    # The file changes: read again, and what it now allows is deleted from the supplier.
    allow = tmp_path / "allow.txt"
    allow.write_text("20.1.2.0/24\n*.corp.example\n20.9.9.9\n")
    stat = allow.stat()
    os.utime(allow, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert await run_cli("sync", "-c", path) == 0
    assert set(emulator.indicators("Demo")) == sent - {"20.9.9.9"}
    # A file gone: the configuration is refused, and a daemon that loaded it before
    # fails the feed rather than send what the file allowed.
    allow.unlink()
    assert await run_cli("sync", "-c", path) == 2
    assert set(emulator.indicators("Demo")) == sent - {"20.9.9.9"}
    with pytest.raises(AllowlistError, match=r"allow\.txt"):
        with_allowlist(screen_for((), (), 24), Allowlist(files=(str(allow),)))
