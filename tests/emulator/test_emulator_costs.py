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

from feedsync.emulator import Emulator, values
from feedsync.emulator.api import Answer, Api
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
