"""Exclusions: built-ins on by default, turned off per feed, counted per reason,
and an excluded value that was already sent deleted from its supplier; network
ranges expanded up to expand_cidr, wider ones refused."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from conftest import PASSWORD, ConfigFactory, FeedServer
from samples import sample
from test_sync import sync

from feedsync import config, metrics, status
from feedsync import render as report
from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.errors import ConfigError
from feedsync.model import Indicator, Invalid, Record, Validators
from feedsync.safety.exclusions import BUILTIN, EXCLUDED, TOO_WIDE, Screen, intervals
from feedsync.safety.tables import HOST, SUFFIX, names_table, substrings
from feedsync.safety.warninglists import available, chosen, entries, screen_for
from feedsync.sources import CsvLines
from feedsync.sources.csvfeed import CsvOptions
from feedsync.store import Store, connection
from feedsync.store.guard import Change
from feedsync.store.linediff import LineFeed, replace_lines

# Each built-in with values it excludes, and neighbours just outside it.
BUILTIN_CASES = {
    "loopback": (["127.0.0.1", "127.255.255.254", "::1"], ["128.0.0.1", "::2"]),
    "private": (
        ["10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fd00::1", "fc00::5"],
        ["172.32.0.1", "11.0.0.1", "192.169.0.1", "fe00::1"],
    ),
    "link_local": (["169.254.10.10", "fe80::1"], ["169.255.0.1", "fec0::1"]),
    "cgnat": (["100.64.0.1", "100.127.255.254"], ["100.63.255.255", "100.128.0.1"]),
    "multicast": (["224.0.0.1", "239.255.255.250", "ff02::1"], ["223.255.255.255"]),
    "reserved": (
        ["0.0.0.0", "240.0.0.1", "255.255.255.255", "198.18.0.1", "::", "::ffff:1.2.3.4"],
        ["198.20.0.1", "1.1.1.1"],
    ),
    "documentation": (
        ["192.0.2.10", "198.51.100.1", "203.0.113.74", "2001:db8::bad:1"],
        ["192.0.3.1", "2001:db9::1"],
    ),
    "null_hash": (
        [
            "d41d8cd98f00b204e9800998ecf8427e",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ],
        ["d41d8cd98f00b204e9800998ecf8427f"],
    ),
    "localhost": (
        ["foo.localhost", "http://a.b.localhost/x"],
        ["localhost.com", "mylocalhost.net"],
    ),
    "example": (
        ["example.com", "www.example.net", "http://x.example.org/a?b", "a.b.example.com"],
        ["example.co", "notexample.com", "example.com.evil.ru"],
    ),
    "local": (["printer.local"], ["local.com"]),
    "test": (["foo.test", "https://bar.test/x"], ["test.com", "testing.org"]),
    "invalid": (["nothing.invalid"], ["invalid.org"]),
}


def builtin_screen(names: Iterable[str], expand_cidr: int = 24) -> Screen:
    return screen_for(tuple(names), (), expand_cidr)


def test_every_builtin_has_cases() -> None:
    assert set(BUILTIN_CASES) == set(BUILTIN)


@pytest.mark.parametrize("name", sorted(BUILTIN_CASES))
def test_builtin_exclusion(name: str) -> None:
    excluded, kept = BUILTIN_CASES[name]
    screen = builtin_screen(BUILTIN)
    for value in excluded:
        (out,) = screen.screened(Record(1, value), ())
        assert isinstance(out, Invalid), value
        assert out.reason == EXCLUDED + name, value
    for value in kept:
        (out,) = screen.screened(Record(1, value), ())
        assert isinstance(out, Indicator), value
    # Off, the same values pass: each built-in stands alone.
    others = builtin_screen([n for n in BUILTIN if n != name])
    for value in excluded:
        (out,) = others.screened(Record(1, value), ())
        assert isinstance(out, Indicator), value


def test_ips_inside_urls_and_defanged_values() -> None:
    screen = builtin_screen(BUILTIN)
    for value in ("http://10.0.0.1:8080/bin.sh", "hxxp://192.168[.]1[.]1/a", "http://[::1]/x"):
        (out,) = screen.screened(Record(1, value), ())
        assert isinstance(out, Invalid) and out.reason.startswith(EXCLUDED), value
    (out,) = screen.screened(Record(1, "http://8.8.8.8/x"), ())
    assert isinstance(out, Indicator)


def test_interval_table_first_given_wins_and_merges() -> None:
    table = intervals([(10, 20, "a"), (15, 30, "b"), (31, 40, "b"), (0, 100, "c")])
    assert [table.find(n) for n in (0, 9, 10, 20, 21, 30, 35, 40, 41, 100, 101)] == [
        "c",
        "c",
        "a",
        "a",
        "b",
        "b",
        "b",
        "b",
        "c",
        "c",
        None,
    ]
    assert table.covering(21, 40) == "b" and table.covering(19, 21) is None


def parse(make_config: ConfigFactory, url: str, top: str = "", feed: str = "") -> Config:
    loaded = make_config(url, f"- {{name: f, type: csv, url: {url}/f, supplier: S{feed}}}\n")
    return with_top(loaded, top) if top else loaded


def with_top(loaded: Config, top: str) -> Config:
    """``loaded``'s file with top-level keys ``top`` put before the rest."""
    path = Path(loaded.path)
    path.write_text(top + path.read_text())
    return config.load(path, env={"CT_PASSWORD": PASSWORD})


def test_config_shapes(make_config: ConfigFactory) -> None:
    url = "http://127.0.0.1:1"
    assert parse(make_config, url).feeds[0].exclude.builtin == BUILTIN
    off = parse(make_config, url, feed=", exclude: {builtin_off: [private, test]}")
    assert set(BUILTIN) - set(off.feeds[0].exclude.builtin) == {"private", "test"}
    none = parse(make_config, url, feed=", exclude: {builtin: false}")
    assert none.feeds[0].exclude.builtin == ()
    only = parse(make_config, url, feed=", exclude: {builtin: [loopback]}")
    assert only.feeds[0].exclude.builtin == ("loopback",)
    # The feed's own key replaces the top-level one; the others are inherited.
    both = parse(
        make_config,
        url,
        top="exclude: {builtin_off: [documentation], warninglists: [public-dns-v4]}\n",
        feed=", exclude: {builtin_off: [private]}",
    )
    assert "documentation" in both.feeds[0].exclude.builtin
    assert "private" not in both.feeds[0].exclude.builtin
    assert both.feeds[0].exclude.warninglists == ("public-dns-v4",)
    for bad, message in (
        (", exclude: {builtin_off: [privat]}", "'privat' is not one of"),
        (", exclude: {warninglists: [no-such-list]}", "no warninglist"),
        (", exclude: {warninglists: ['type:ip']}", "the types are"),
        (", exclude: {block: []}", "unknown key"),
        (", expand_cidr: 33", "expand_cidr"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse(make_config, url, feed=bad)


async def test_excluded_values_are_counted_and_a_sent_one_is_deleted(
    feed_server: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    public = ["8.8.4.5", "1.2.3.4", "5.6.7.8", "9.9.9.10", "4.4.4.4"]
    body = "\n".join([*public, "127.0.0.1", "10.1.1.1", "10.2.2.2", "http://192.168.0.1/x"])
    body += "\nevil.test\n"
    url = feed_server.set("ips", body)
    feed = f"- {{name: ips, type: csv, url: {url}, supplier: S{{extra}}}}\n"
    allowing = make_config(
        emulator.url, feed.replace("{extra}", ", exclude: {builtin_off: [private]}")
    )
    store = open_store(allowing)
    feeds, _ = await sync(allowing, store)
    assert feeds[0].result == "ok"
    assert feeds[0].change.excluded_reasons == {"loopback": 1, "test": 1}
    private = {"10.1.1.1", "10.2.2.2", "192.168.0.1/x"}
    assert set(emulator.indicators("S")) == {*public, *private}
    store.close()

    # The same body under the default exclusions: the private values leave the supplier.
    default = make_config(emulator.url, feed.replace("{extra}", ""))
    store = open_store(default)
    emulator.clear_log()
    feeds, suppliers = await sync(default, store)
    change = feeds[0].change
    assert feeds[0].result == "ok", feeds[0].error
    assert change.excluded_reasons == {"loopback": 1, "test": 1, "private": 3}
    assert (change.removed, change.excluded, change.invalid) == (3, 5, 0)
    assert set(emulator.indicators("S")) == set(public)
    assert suppliers[0].sent.delete == 3
    line = report.cycle(feeds, suppliers, dry_run=False)
    assert "ips: excluded 5 (loopback 1, private 3, test 1)" in line
    sample_value = metrics.REGISTRY.get_sample_value
    labels = {"feed": "ips", "reason": "private"}
    assert sample_value("feedsync_excluded_indicators", labels) == 3
    snap = status.snapshot(default, store)
    assert snap["feeds"][0]["excluded"] == {"loopback": 1, "test": 1, "private": 3}
    assert "ips: excluded loopback 1, private 3, test 1" in status.as_text(snap)

    # Unchanged body and settings: nothing is read again.
    feeds, _ = await sync(default, store)
    assert feeds[0].result == "unchanged"


async def test_spamhaus_drop_ranges_expand_up_to_expand_cidr(
    feed_server: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    text = sample("csv/spamhaus_drop_20230220_head.txt").read_text()
    url = feed_server.set("drop", text)
    feed = (
        f"- {{name: drop, type: csv, url: {url}, supplier: S,"
        " comment: ';', delimiter: ';'{extra}}\n"
    )
    loaded = make_config(emulator.url, feed.replace("{extra}", ""))
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    change = feeds[0].change
    assert feeds[0].result == "ok", feeds[0].error
    # 4 /24s of 256 addresses; the 32 wider ranges refused, none cut down to a /24.
    assert change.fetched == 4 * 256
    assert change.invalid_reasons == {TOO_WIDE: 32}
    held = emulator.indicators("S")
    assert "5.42.199.0" in held and "5.42.199.255" in held and "5.42.198.255" not in held
    store.close()

    # Four times as many addresses: not held by the poison guard's growth ratio here.
    wider_feed = feed.replace("{extra}", ", expand_cidr: 22, max_growth_ratio: 0")
    wider = make_config(emulator.url, wider_feed)
    store = open_store(wider)
    feeds, _ = await sync(wider, store)
    assert feeds[0].change.fetched == 7 * 1024 + 4 * 512 + 4 * 256
    assert feeds[0].change.invalid_reasons == {TOO_WIDE: 21}
    assert len(emulator.indicators("S")) == 7 * 1024 + 4 * 512 + 4 * 256
    store.close()

    none = make_config(emulator.url, feed.replace("{extra}", ", expand_cidr: 0"))
    store = open_store(none)
    feeds, _ = await sync(none, store)
    assert feeds[0].result == "failed"
    assert "no valid indicator in 36 rows (cidr_too_wide 36)" in (feeds[0].error or "")


def reasons(items: object) -> list[str]:
    assert isinstance(items, list)
    return [item.reason if isinstance(item, Invalid) else "kept" for item in items]


def test_a_range_is_never_widened_and_excluded_parts_are_counted() -> None:
    screen = builtin_screen(BUILTIN, expand_cidr=24)
    # 10.0.0.0/24 lies in one exclusion: one value, one reason.
    assert reasons(list(screen.screened(Record(1, "10.0.0.0/24"), ()))) == [EXCLUDED + "private"]
    # A range that reaches into an exclusion keeps its other addresses.
    wider = builtin_screen(BUILTIN, expand_cidr=23)
    out = list(wider.screened(Record(1, "192.0.3.7/23"), ()))
    assert reasons(out) == [EXCLUDED + "documentation"] * 256 + ["kept"] * 256
    out = list(screen.screened(Record(1, "100.63.255.254/31"), ()))
    assert [o.value for o in out] == ["100.63.255.254", "100.63.255.255"]
    out = list(screen.screened(Record(1, "2001:db7:ffff:ffff:ffff:ffff:ffff:fffe/127"), ()))
    assert all(isinstance(o, Indicator) for o in out) and len(out) == 2
    out = list(screen.screened(Record(1, "1.2.3.4/23"), ()))
    assert reasons(out) == [TOO_WIDE]
    # IPv6 expands by the same count of addresses as an IPv4 /24.
    assert len(list(screen.screened(Record(1, "2a00::/120"), ()))) == 256
    assert reasons(list(screen.screened(Record(1, "2a00::/119"), ()))) == [TOO_WIDE]


OPTIONS = CsvOptions(indicator=1, header=False)


def apply_lines(store: Store, path: Path, lines: list[str], names: tuple[str, ...]) -> Change:
    path.write_text("".join(f"{line}\n" for line in lines))
    job = LineFeed(
        feed=store.feed("f", "S"),
        path=path,
        lines=CsvLines(OPTIONS, "f"),
        static_tags=(),
        validators=Validators(sha256=str(len(lines))),
        max_delete_ratio=1.0,
        force=False,
        on_invalid=lambda _invalid: None,
        screen=builtin_screen(names),
    )
    with store.transaction() as db:
        return replace_lines(db, job)


def snapshot(store: Store) -> list[tuple[object, ...]]:
    return [
        tuple(r) for r in connection(store).execute("SELECT key, value FROM snapshot ORDER BY key")
    ]


def test_line_diff_and_full_read_agree_on_exclusions_and_ranges(tmp_path: Path) -> None:
    first = [f"8.8.{i}.1" for i in range(50)] + ["127.0.0.1", "10.0.0.1", "9.9.9.0/30"]
    second = [*first[:-3], "192.168.1.1", "127.0.0.1", "10.0.0.1", "7.7.7.7", "9.9.9.0/30"]
    diffed = Store.open(str(tmp_path / "a.db"))
    fresh = Store.open(str(tmp_path / "b.db"))
    try:
        apply_lines(diffed, tmp_path / "a.txt", first, BUILTIN)
        one = apply_lines(diffed, tmp_path / "a.txt", second, BUILTIN)
        two = apply_lines(fresh, tmp_path / "b.txt", second, BUILTIN)
        assert snapshot(diffed) == snapshot(fresh)
        assert one.excluded_reasons == two.excluded_reasons == {"loopback": 1, "private": 2}
        # Without ranges, the line index is used and still agrees.
        plain = [line for line in second if "/" not in line]
        apply_lines(diffed, tmp_path / "a.txt", plain, BUILTIN)
        three = apply_lines(diffed, tmp_path / "a.txt", [*plain, "6.6.6.6"], BUILTIN)
        four = apply_lines(fresh, tmp_path / "b.txt", [*plain, "6.6.6.6"], BUILTIN)
        assert three.lines_read == 1
        assert snapshot(diffed) == snapshot(fresh)
        assert three.excluded_reasons == four.excluded_reasons
        # Other exclusions change what unchanged lines become: the body is read whole.
        five = apply_lines(diffed, tmp_path / "a.txt", [*plain, "6.6.6.6"], ("loopback",))
        assert five.lines_read == five.lines
        assert ("10.0.0.1", "10.0.0.1") in snapshot(diffed)
    finally:
        diffed.close()
        fresh.close()


# Real lists of the pymispwarninglists wheel, one per match kind.
WARNINGLIST_CASES = [
    # cidr: containment, for addresses and the address host of a URL
    ("public-dns-v4", ["8.8.8.8", "http://8.8.8.8/dns-query"], ["8.8.8.9"]),
    ("google-gcp", ["104.154.113.7", "104.154.115.255"], ["104.154.112.255"]),
    ("public-dns-v6", ["2001:148f:fffe::1"], ["2001:148f:fffe::2"]),
    # hostname: the name and every name under it, for domains and URL hosts
    ("url-shortener", ["bit.ly", "x.bit.ly", "https://bit.ly/3abc"], ["notbit.ly", "bit.ly.ru"]),
    # string: the exact canonical value (www. and a scheme are no part of it)
    ("cisco_top10k", ["google.com", "https://www.google.com"], ["mail.google.com/x"]),
    ("empty-hashes", ["D41D8CD98F00B204E9800998ECF8427E"], ["0CC175B9C0F1B6A831C399E269772661"]),
    # substring: anywhere in the value, ignoring case
    ("automated-malware-analysis", ["http://app.any.run/tasks/1", "APP.ANY.RUN"], ["any.run"]),
    # regex lists apply by their matching_attributes: phone numbers are no kind of ours
    ("phone_numbers", [], ["http://evil.ru/call/15550123"]),
]


def test_regex_lists_are_read_as_written() -> None:
    # "/pattern/flags", as PHP writes them.
    (pattern, *_) = entries("common-contact-emails").patterns
    assert pattern.search("SOC@example.org") and not pattern.search("bob@example.org")
    assert len(entries("phone_numbers").patterns) == 33


@pytest.mark.parametrize(("name", "excluded", "kept"), WARNINGLIST_CASES)
def test_warninglist_matches(name: str, excluded: list[str], kept: list[str]) -> None:
    screen = screen_for((), (name,), 24)
    for value in excluded:
        (out,) = screen.screened(Record(1, value), ())
        assert isinstance(out, Invalid) and out.reason == f"{EXCLUDED}warninglist:{name}", value
    for value in kept:
        (out,) = screen.screened(Record(1, value), ())
        assert isinstance(out, Indicator), value


def test_warninglists_by_type_and_builtins_first() -> None:
    picked = chosen(("type:substring", "public-dns-v4"))
    assert {"automated-malware-analysis", "disposable-email"} <= set(picked)
    assert picked[-1] == "public-dns-v4"
    assert all(name in available() for name in chosen(("all",)))
    # A value a built-in and a list both exclude counts for the built-in.
    screen = screen_for(BUILTIN, ("empty-hashes",), 24)
    (out,) = screen.screened(Record(1, "d41d8cd98f00b204e9800998ecf8427e"), ())
    assert isinstance(out, Invalid) and out.reason == EXCLUDED + "null_hash"


async def test_warninglists_per_feed_over_the_top_level(
    feed_server: FeedServer,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url = feed_server.set("ips", "8.8.8.8\n9.9.9.9\n1.2.3.4\nbit.ly\n")
    loaded = make_config(
        emulator.url,
        f"- {{name: a, type: csv, url: {url}, supplier: A}}\n"
        f"- {{name: b, type: csv, url: {url}, supplier: B,"
        " exclude: {warninglists: [url-shortener]}}\n",
    )
    # The resolvers are canaries too: none here, this is about the lists.
    loaded = with_top(loaded, "exclude: {warninglists: ['type:cidr']}\ncanaries: []\n")
    store = open_store(loaded)
    feeds, _ = await sync(loaded, store)
    assert [f.result for f in feeds] == ["ok", "ok"]
    # 8.8.8.8 and 9.9.9.9, each under the first cidr list that names it.
    reasons = feeds[0].change.excluded_reasons
    assert sum(reasons.values()) == 2
    assert set(reasons) <= {f"warninglist:{n}" for n in available()}
    assert set(emulator.indicators("A")) == {"1.2.3.4", "bit.ly"}
    assert feeds[1].change.excluded_reasons == {"warninglist:url-shortener": 1}
    assert set(emulator.indicators("B")) == {"8.8.8.8", "9.9.9.9", "1.2.3.4"}


def test_name_table_flags_and_first_given() -> None:
    table = names_table(
        [("exact", 0, ["a.com"]), ("host", HOST, ["a.com", "b.com"]), ("under", SUFFIX, ["b.com"])]
    )
    assert table.get("a.com") == "exact" and table.get("a.com", HOST | SUFFIX) == "host"
    assert table.get("b.com", SUFFIX) == "under" and table.get("c.com") is None
    # Thousands of entries: each is found, and no other value.
    many = names_table([("n", SUFFIX, (f"h{i}.net" for i in range(5000)))])
    assert all(many.get(f"h{i}.net") == "n" for i in range(5000))
    assert not any(many.get(f"h{i}.org") for i in range(5000))


def test_substring_trie_matches_words_that_prefix_others() -> None:
    listed = substrings("r", ["ab", "abcd", "b.c", "xyz"])
    assert listed.pattern is not None
    for value in ("zab", "abc", "a.b.c", "qxyzq", "abcd"):
        assert listed.found(value), value
    for value in ("a", "bc", "xy", "b-c"):
        assert not listed.found(value), value
    # An entry no IPv4 address can hold is left out of that kind's list.
    assert substrings("r", ["1.2.3.4", "evil.com"], "0123456789.").entries == {"1.2.3.4"}
