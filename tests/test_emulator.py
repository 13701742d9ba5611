"""The emulator is as strict as CyberTrace, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from feedsync.emulator import Emulator
from feedsync.fetch import basic_auth

USER, PASSWORD = "u", "p"
AUTH = basic_auth(USER, PASSWORD)
JSON = {"Accept": "application/json", "Authorization": AUTH, "Content-Type": "application/json"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(clock: Clock) -> AsyncIterator[Emulator]:
    emulator = Emulator(
        user=USER, password=PASSWORD, clock=clock, api_versions=("1.0", "1.1", "1.2", "1.3")
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


async def call(
    emu: Emulator,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, object]:
    data = None if body is None else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, emu.url + path, data=data, headers=headers if headers is not None else JSON
        ) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def test_auth_accept_and_version(emu: Emulator) -> None:
    assert (await call(emu, "GET", "/api/1.2/suppliers", headers={"Accept": "application/json"}))[
        0
    ] == 401
    wrong = {**JSON, "Authorization": basic_auth(USER, "nope")}
    assert (await call(emu, "GET", "/api/1.2/suppliers", headers=wrong))[0] == 401
    assert (await call(emu, "GET", "/api/1.2/suppliers", headers={**JSON, "Accept": "text/html"}))[
        0
    ] == 406
    assert (await call(emu, "GET", "/api/9.9/suppliers"))[0] == 404
    assert (await call(emu, "GET", "/api/1.2/nothing"))[0] == 404
    status, body = await call(emu, "GET", "/api/1.2/suppliers")
    assert status == 200 and {s["name"] for s in body} == {"FalsePositive", "InternalTI"}  # type: ignore[union-attr]
    assert emu.requests[1].headers["Authorization"] == "***"


async def test_bodies_need_json_arrays_content_type_and_length(emu: Emulator) -> None:
    emu.add_supplier("S")
    path = "/api/1.2/suppliers/S/indicators"
    assert (await call(emu, "PUT", path, {"indicator": "a.example"}))[0] == 400
    assert (
        await call(
            emu, "PUT", path, [{"indicator": "a.example"}], {**JSON, "Content-Type": "text/plain"}
        )
    )[0] == 400

    async def chunks() -> AsyncIterator[bytes]:
        yield b'[{"indicator": "a.example"}]'

    async with (
        aiohttp.ClientSession() as session,
        session.put(emu.url + path, data=chunks(), headers=JSON) as response,
    ):
        assert response.status == 400
        assert "Content-Length" in (await response.text())
    assert emu.indicators("S") == {}


async def test_oversize_body_is_refused_from_the_header(emu: Emulator) -> None:
    emu.add_supplier("S")
    reader, writer = await asyncio.open_connection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
    writer.write(
        b"DELETE /api/1.2/suppliers/S/indicators HTTP/1.1\r\nHost: x\r\n"
        b"Accept: application/json\r\n"
        + f"Authorization: {AUTH}\r\nContent-Type: application/json\r\n".encode()
        + b"Content-Length: 67108865\r\n\r\n[]"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert b" 400 " in status_line


async def test_suppliers_lifecycle_and_validation(emu: Emulator) -> None:
    assert (
        await call(
            emu,
            "POST",
            "/api/1.2/suppliers",
            [{"name": "S", "confidence": 50, "retention": 10, "vendor": "v"}],
        )
    )[0] == 201
    assert (
        await call(
            emu, "POST", "/api/1.2/suppliers", [{"name": "S", "confidence": 50, "retention": 10}]
        )
    )[0] == 400
    assert (
        await call(
            emu,
            "POST",
            "/api/1.2/suppliers",
            [{"name": "bad name", "confidence": 5, "retention": 0}],
        )
    )[0] == 400
    assert (
        await call(
            emu, "POST", "/api/1.2/suppliers", [{"name": "T", "confidence": 101, "retention": 0}]
        )
    )[0] == 400
    assert (
        await call(
            emu,
            "POST",
            "/api/1.2/suppliers",
            [{"name": "FalsePositive", "confidence": 1, "retention": 0}],
        )
    )[0] == 400
    status, body = await call(emu, "GET", "/api/1.2/suppliers/S")
    assert status == 200 and body == [
        {"name": "S", "status": "enabled", "confidence": 50, "retention": 10, "vendor": "v"}
    ]
    assert (await call(emu, "PUT", "/api/1.2/suppliers/S", [{"confidence": 60}]))[0] == 200
    assert emu.supplier("S").confidence == 60  # type: ignore[union-attr]
    assert (await call(emu, "DELETE", "/api/1.2/suppliers/S"))[0] == 200
    assert (await call(emu, "GET", "/api/1.2/suppliers/S"))[0] == 404


async def test_tags(emu: Emulator) -> None:
    assert (await call(emu, "POST", "/api/1.1/tags", [{"name": "tlp_white", "weight": 2}]))[
        0
    ] == 201
    assert emu.tags() == {"TLP_WHITE": 2}
    assert (await call(emu, "POST", "/api/1.1/tags", [{"name": "bad tag", "weight": 1}]))[0] == 400
    assert (await call(emu, "POST", "/api/1.1/tags", [{"name": "x", "weight": 6}]))[0] == 400
    assert (await call(emu, "GET", "/api/1.0/tags"))[0] == 404
    assert (await call(emu, "GET", "/api/1.2/tags"))[1] == [{"name": "TLP_WHITE", "weight": 2}]


async def test_put_is_an_upsert_with_tag_semantics(emu: Emulator) -> None:
    emu.add_supplier("S")
    await call(
        emu, "POST", "/api/1.2/tags", [{"name": "A", "weight": 0}, {"name": "B", "weight": 0}]
    )
    path = "/api/1.2/suppliers/S/indicators"
    await call(
        emu,
        "PUT",
        path,
        [
            {
                "indicator": "http://www.Example.com:8080/a/",
                "context": {"x": "1", "y": "2"},
                "tags": ["a"],
            }
        ],
    )
    await call(emu, "PUT", path, [{"indicator": "example.com/a", "context": {"x": "3"}}])
    held = emu.indicators("S")
    assert list(held) == ["example.com/a"]
    assert (held["example.com/a"].context, held["example.com/a"].tags) == ({"x": "3"}, {"A"})
    await call(emu, "PUT", path, [{"indicator": "example.com/a", "tags": ["b"]}])
    assert emu.indicators("S")["example.com/a"].tags == {"B"}
    await call(emu, "PUT", path, [{"indicator": "example.com/a", "tags": []}])
    assert emu.indicators("S")["example.com/a"].tags == set()
    assert (
        await call(
            emu, "PUT", "/api/1.0/suppliers/S/indicators", [{"indicator": "b.example", "tags": []}]
        )
    )[0] == 400


async def test_partial_success(emu: Emulator) -> None:
    emu.add_supplier("S")
    status, body = await call(
        emu,
        "PUT",
        "/api/1.2/suppliers/S/indicators",
        [
            {"indicator": "good.example"},
            {"indicator": "bad indicator"},
            {"indicator": "t.example", "tags": ["NOPE"]},
        ],
    )
    assert status == 202
    errors = {e["indicator"]: e["reason"] for e in body[0]["error_indicators"]}  # type: ignore[index]
    assert set(errors) == {"bad indicator", "t.example"}
    assert emu.indicators("S").keys() == {"good.example"}
    status, body = await call(
        emu,
        "PUT",
        "/api/1.2/suppliers/FalsePositive/indicators",
        [{"indicator": "a.example", "context": {"a": "b"}}],
    )
    assert status == 202 and "FalsePositive" in body[0]["error_indicators"][0]["reason"]  # type: ignore[index]
    assert (
        await call(emu, "PUT", "/api/1.2/suppliers/Nope/indicators", [{"indicator": "a.example"}])
    )[0] == 404


async def test_delete(emu: Emulator) -> None:
    emu.add_supplier("S")
    path = "/api/1.2/suppliers/S/indicators"
    await call(emu, "PUT", path, [{"indicator": "a.example"}, {"indicator": "b.example"}])
    status, body = await call(
        emu, "DELETE", path, [{"indicator": "a.example"}, {"indicator": "gone.example"}]
    )
    assert status == 202
    assert body[0]["error_indicators"] == [
        {"indicator": "gone.example", "reason": "Indicator doesn't exist"}
    ]  # type: ignore[index]
    assert emu.indicators("S").keys() == {"b.example"}
    assert (
        await call(
            emu,
            "DELETE",
            "/api/1.1/suppliers/S/indicators",
            [{"indicator": "b.example", "unmark_detections": True}],
        )
    )[0] == 400
    assert (
        await call(
            emu,
            "DELETE",
            "/api/1.2/suppliers/S/indicators",
            [{"indicator": "b.example", "unmark_detections": True}],
        )
    )[0] == 201


async def test_tenants_are_isolated(emu: Emulator) -> None:
    assert (
        await call(
            emu, "POST", "/api/1.3/acme/suppliers", [{"name": "S", "confidence": 1, "retention": 0}]
        )
    )[0] == 201
    await call(emu, "PUT", "/api/1.3/acme/suppliers/S/indicators", [{"indicator": "a.example"}])
    assert emu.indicators("S", tenant="acme").keys() == {"a.example"}
    assert emu.supplier("S") is None


async def test_retention_counts_from_the_last_update(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S", retention=1)
    path = "/api/1.2/suppliers/S/indicators"
    await call(emu, "PUT", path, [{"indicator": "a.example"}, {"indicator": "b.example"}])
    clock.now += 45
    await call(emu, "PUT", path, [{"indicator": "a.example"}])
    clock.now += 30
    assert emu.indicators("S").keys() == {"a.example"}
    _, body = await call(
        emu, "POST", "/api/1.2/lookup", [{"indicator": "b.example"}, {"indicator": "a.example"}]
    )
    assert [item["found"] for item in body] == [False, True]  # type: ignore[union-attr,index]
