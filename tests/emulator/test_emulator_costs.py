"""The emulator's shortcuts per indicator keep its answers: the blank test, the collector."""

from __future__ import annotations

import gc
import ipaddress
import itertools
import sys
from typing import Any

import conftest
import pytest
from test_emulator import code, put

from feedsync.emulator import Emulator, api, values
from feedsync.emulator.api import Answer, Api
from feedsync.emulator.model import Refusal
from feedsync.emulator.routes import Resolved
from feedsync.emulator.values import NotAnIndicator, canonical

BLANK = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace() or c < 0x20 or c == 0x7F]


def test_every_blank_or_control_character_makes_a_value_invalid() -> None:
    # The whole Unicode range, as str.isspace() reads it: the test is one regex search now.
    for character in BLANK:
        with pytest.raises(NotAnIndicator):
            canonical(f"a{character}b.example")
    assert canonical("a\u200bb.example")[0] == "URL", "a zero-width space is not blank"
    assert canonical(" a.example\t") == ("URL", "a.example"), "stripped first"


def test_dotted_decimal_addresses_take_the_short_way_to_the_same_value() -> None:
    for byte in range(256):
        for spelled in (f"{byte}.0.0.1", f"1.{byte}.2.{byte}", f"10.0.0.{byte}"):
            assert canonical(spelled) == ("IP", str(ipaddress.IPv4Address(spelled)))
    # Leading zeros are octal (rule 12), past 255 is out of range: the long way.
    assert canonical("10.0.0.010") == ("IP", "10.0.0.8")
    assert canonical("010.0.0.1") == ("IP", "8.0.0.1")
    with pytest.raises(NotAnIndicator):
        canonical("10.0.0.256")


class Watching(Api):
    """An Api that notes whether the cyclic collector ran while it answered."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.collecting: list[bool] = []

    def answer(self, request: Resolved, body: list[Any] | None) -> Answer:
        self.collecting.append(gc.isenabled())
        return super().answer(request, body)


@pytest.fixture
async def watched(clock: conftest.Clock) -> Any:
    emulator = Emulator(user=conftest.USER, password=conftest.PASSWORD)
    emulator.api = Watching(tenants=(), clock=emulator.api.clock, readings=emulator.readings)
    emulator.add_supplier("S")
    await emulator.start()
    yield emulator
    await emulator.stop()


async def test_the_collector_is_paused_while_a_body_is_applied_and_resumed_after(
    watched: Emulator,
) -> None:
    assert isinstance(watched.api, Watching)
    assert gc.isenabled()
    status, _ = await put(watched, [{"indicator": "a.example"}])
    assert status == 201 and watched.api.collecting == [False]
    assert gc.isenabled()
    refused = await code(watched, "PUT", "/api/1.2/suppliers/S/indicators", data=b"[{")
    assert refused == 400 and gc.isenabled(), "resumed after a refusal too"


async def test_a_collector_paused_by_someone_else_stays_paused(watched: Emulator) -> None:
    gc.disable()
    try:
        status, _ = await put(watched, [{"indicator": "a.example"}])
        assert status == 201 and not gc.isenabled()
    finally:
        gc.enable()


async def test_the_log_keeps_bodies_not_their_objects(watched: Emulator) -> None:
    items = [{"indicator": "a.example", "context": {"k": "v"}}]
    await put(watched, items)
    logged = watched.requests[-1]
    assert logged.json == items and logged.parsed
    assert logged.json is not logged.json, "parsed again at each read"
    await code(watched, "PUT", "/api/1.2/suppliers/S/indicators", data=b"[{")
    assert watched.requests[-1].json is None and not watched.requests[-1].parsed


def test_paths_without_dot_segments_skip_the_steps_to_the_same_path() -> None:
    for length in range(8):
        for letters in itertools.product("/.a", repeat=length):
            path = "".join(letters)
            assert values._rule_1_without_dot_segments(path) == values.rfc_3986_steps(path), path


SCHEMES = ("", "http://", "HTTPS://", "hTtPs://", "ftp://", "http:/", "http:///", "//", "a@")
HOSTS = (
    "a.example",
    "A.Example",
    "www.a.b",
    "WWW.a.b",
    "wWw.a.b",
    "www.b",
    "a.b.",
    "x_y.a-b.c",
    "-a.b",
    "a-.b",
    "a.b-",
    "1.2.3.4",
    "1.2.3.04",
    "01.2.3.4",
    "1.2.3.256",
    "a.0x1f",
    "a.1",
    "a.k1",
    "b.\u212a",
    "a.b:80",
    "a..b",
    "h" * 63 + ".ab",
    "h" * 64 + ".ab",
    ("a" * 60 + ".") * 4 + "ab",
    ("a" * 60 + ".") * 4 + "abcdefghijklmno",
    "a.b%41",
)
PATHS = (
    "",
    "/",
    "/a",
    "/A.b",
    "/.a",
    "/a/..",
    "/..",
    "//a",
    "/a/",
    "/~x-_",
    "/a%41",
    "?q",
    "#f",
    "/a?",
    "/a.b/c",
)


def _long_way(text: str) -> object:
    try:
        return values.read_in_full(text.strip())
    except NotAnIndicator:
        return NotAnIndicator


def _short_way(text: str) -> object:
    try:
        return canonical(text)
    except NotAnIndicator:
        return NotAnIndicator


def test_the_plain_shapes_take_the_short_way_to_the_same_value() -> None:
    for scheme, host, path in itertools.product(SCHEMES, HOSTS, PATHS):
        text = scheme + host + path
        assert _short_way(text) == _long_way(text), text
    # What feeds send most, which the short way is for.
    assert values._PLAIN_URL.fullmatch("http://host0.example/path/888598/payload.bin")
    assert values._PLAIN_URL.fullmatch("bad-1.example")
    assert values._DOTTED_DECIMAL.fullmatch("12.0.0.3")


async def test_items_sharing_a_tag_list_are_read_once_and_hold_their_own_tags(
    watched: Emulator,
) -> None:
    watched.add_tag("T")
    items = [{"indicator": f"{n}.example", "tags": ["t"]} for n in "ab"]
    items.append({"indicator": "c.example", "tags": ["t", "u"]})
    items.append({"indicator": "d.example", "tags": ["t", "u"]})
    status, answer = await put(watched, items)
    assert status == 202
    assert [e["reason"] for e in answer[0]["error_indicators"]] == ["Unknown tag u"] * 2
    held = watched.indicators("S")
    held["a.example"].tags.add("X")
    assert held["b.example"].tags == {"T"}, "one set per indicator, not one per list"


class _Mapping(dict[str, Any]):
    pass


class _Text(str):
    __slots__ = ()


ITEMS: tuple[object, ...] = (
    {"indicator": "a.example"},
    {"indicator": "a.example", "tags": ["T"], "context": {"k": "v"}},
    {"indicator": "a.example", "mark_detections": True},
    {"indicator": "a.example", "mark_detections": 1},
    {"indicator": "a.example", "unmark_detections": False},
    {"indicator": "a.example", "unmark_detections": None},
    {"indicator": 1},
    {"indicator": None},
    {"value": "a.example"},
    {},
    [],
    ["indicator"],
    "a.example",
    None,
    _Mapping(indicator="a.example"),
    {"indicator": _Text("a.example")},
)


def _refusal(body: list[Any], flag: str, level: tuple[int, ...], tags_allowed: bool) -> object:
    try:
        api.check_items(body, flag, level, tags_allowed)
    except Refusal as refusal:
        return refusal.status, refusal.reason
    return None


def test_batches_the_quick_check_passes_are_those_the_item_checks_pass() -> None:
    plain = 0
    for length in range(4):
        for body in itertools.product(ITEMS, repeat=length):
            for flag, level, tags_allowed in itertools.product(
                ("mark_detections", "unmark_detections"), ((1, 0), (1, 1), (1, 2)), (True, False)
            ):
                if api.plain_items(list(body), flag, tags_allowed):
                    plain += 1
                    assert _refusal(list(body), flag, level, tags_allowed) is None, body
    assert plain > 500, "the quick check passes the usual batches"


def test_the_hex_test_of_hash_lengths_is_the_set_of_hex_digits() -> None:
    # In each end of a hash-length text: what ASCII and Latin spell, the full-width digits
    # and letters, lone surrogates, other scripts' and mathematical digits, the last one.
    codes = [*range(0x800), *range(0xFF00, 0xFF70), 0x0663, 0x0966, 0xD800, 0xDFFF, 0x1D7CE]
    for length in values.HASH_TYPES:
        for at in (0, length - 1):
            for point in (*codes, sys.maxunicode):
                letters = ["a"] * length
                letters[at] = chr(point)
                text = "".join(letters)
                assert values._hex_digits(text) == values._HEX.issuperset(text), (length, point)
    for text in ("0" * 32, "F" * 40, "a." * 16, "0x" + "a" * 30, " " + "a" * 31):
        assert values._hex_digits(text) == values._HEX.issuperset(text), text
        assert _short_way(text) == _long_way(text), text
