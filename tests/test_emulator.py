"""The emulator is as strict as CyberTrace, over real HTTP."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from feedsync.emulator import Emulator, serve
from feedsync.fetch import basic_auth

USER, PASSWORD = "u", "p"
AUTH = basic_auth(USER, PASSWORD)
JSON = {"Accept": "application/json", "Authorization": AUTH, "Content-Type": "application/json"}
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SUPPLIERS = "/api/1.2/suppliers"
INDICATORS = "/api/1.2/suppliers/S/indicators"


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
    emulator = Emulator(user=USER, password=PASSWORD, clock=clock)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def old(clock: Clock) -> AsyncIterator[Emulator]:
    emulator = Emulator(user=USER, password=PASSWORD, api_versions=("1.1", "1.2"))
    await emulator.start()
    yield emulator
    await emulator.stop()


def headers(**changes: str) -> dict[str, str]:
    """The usual headers with some changed; ``content_type`` stands for Content-Type."""
    changed = {k.replace("content_type", "Content-Type"): v for k, v in changes.items()}
    return {**JSON, **changed}


async def call(
    emu: Emulator,
    method: str,
    path: str,
    body: object = None,
    *,
    data: bytes | None = None,
    head: dict[str, str] = JSON,
) -> tuple[int, Any]:
    if data is None and body is not None:
        data = orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, emu.url + path, data=data, headers=head) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, orjson.loads(await response.read())


async def code(emu: Emulator, method: str, path: str, body: object = None, **kw: Any) -> int:
    return (await call(emu, method, path, body, **kw))[0]


async def put(emu: Emulator, items: list[Any], supplier: str = "S", version: str = "1.2") -> Any:
    return await call(emu, "PUT", f"/api/{version}/suppliers/{supplier}/indicators", items)


async def delete(emu: Emulator, items: list[Any], supplier: str = "S", version: str = "1.2") -> Any:
    return await call(emu, "DELETE", f"/api/{version}/suppliers/{supplier}/indicators", items)


def reasons(body: Any) -> dict[str, str]:
    return {e["indicator"]: e["reason"] for e in body[0]["error_indicators"]}


async def raw_exchange(emu: Emulator, request_head: bytes) -> tuple[bytes, bytes]:
    """Send a request head and no body over a raw socket; the status line and answer body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
    writer.write(request_head)
    await writer.drain()

    async def answer() -> tuple[bytes, bytes]:
        status_line, length = await reader.readline(), 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status_line, await reader.readexactly(length)

    try:
        return await asyncio.wait_for(answer(), 5)
    finally:
        writer.close()


def announced(method: str, path: str, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        f"Authorization: {AUTH}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n["
    ).encode()


# Credentials, Accept, versions


async def test_credentials_are_checked_first(emu: Emulator) -> None:
    status, body = await call(emu, "GET", SUPPLIERS, head={"Accept": "*/*"})
    assert status == 401 and isinstance(body[0]["status"], str)
    for wrong in (basic_auth(USER, "nope"), "Basic !!!", "Bearer x", f"Digest {AUTH[6:]}"):
        assert await code(emu, "GET", SUPPLIERS, head=headers(Authorization=wrong)) == 401
    assert await code(emu, "GET", "/api/9.9/suppliers", head={}) == 401
    lowercase_scheme = headers(Authorization="basic " + AUTH[6:])
    assert await code(emu, "GET", SUPPLIERS, head=lowercase_scheme) == 200


async def test_accept_must_allow_json(emu: Emulator) -> None:
    for accept in ("text/html", "application/xml", "text/plain, text/html"):
        status, body = await call(emu, "GET", SUPPLIERS, head=headers(Accept=accept))
        assert status == 406 and "status" in body[0]
    for accept in ("application/json", "*/*", "text/plain, application/json;q=0.9"):
        assert await code(emu, "GET", SUPPLIERS, head=headers(Accept=accept)) == 200
    assert await code(emu, "GET", SUPPLIERS, head={"Authorization": AUTH}) == 200


async def test_unknown_versions_and_requests_are_404(old: Emulator) -> None:
    for path in (
        "/api/1.0/suppliers",
        "/api/1.3/suppliers",
        "/api/9.9/suppliers",
        "/api/1.2/nothing",
        "/api/1.2",
        "/api/1.2/suppliers/FalsePositive/indicators/x",
        "/api/1.2/suppliers/",
        "/elsewhere",
    ):
        status, body = await call(old, "GET", path)
        assert status == 404 and isinstance(body, list), path
    assert await code(old, "GET", SUPPLIERS) == 200
    assert await code(old, "PATCH", f"{SUPPLIERS}/FalsePositive", [{}]) == 404
    assert await code(old, "POST", f"{SUPPLIERS}/FalsePositive/indicators", []) == 404


async def test_versions_must_look_like_versions() -> None:
    with pytest.raises(ValueError, match="not like"):
        Emulator(api_versions=("1.2", "latest"))


# Body framing


async def test_bodies_need_a_json_content_type(emu: Emulator) -> None:
    emu.add_supplier("S")
    item = [{"indicator": "a.example"}]
    for wrong in ("text/plain", "application/json; charset=latin-1", "application/jsonx"):
        assert await code(emu, "PUT", INDICATORS, item, head=headers(content_type=wrong)) == 400
    untyped = {k: v for k, v in JSON.items() if k != "Content-Type"}
    assert await code(emu, "PUT", INDICATORS, data=b'["x"]', head=untyped) == 400
    assert emu.indicators("S") == {}
    assert emu.requests[-1].body == b'["x"]', "a refused body is still logged"
    for right in ("application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        assert await code(emu, "PUT", INDICATORS, item, head=headers(content_type=right)) == 201


async def test_a_chunked_body_is_refused(emu: Emulator) -> None:
    emu.add_supplier("S")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'[{"indicator": "a.example"}]'

    async with (
        aiohttp.ClientSession() as session,
        session.put(emu.url + INDICATORS, data=chunks(), headers=JSON) as response,
    ):
        assert response.status == 400
        assert "Content-Length" in (await response.json())[0]["status"]
    assert emu.requests[-1].headers.get("Transfer-Encoding") == "chunked"
    assert emu.indicators("S") == {}


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("DELETE", INDICATORS, 67108864),
        ("PUT", INDICATORS, 134217728),
        ("POST", SUPPLIERS, 134217728),
    ],
)
async def test_an_oversize_body_is_refused_from_its_header(
    emu: Emulator, method: str, path: str, limit: int
) -> None:
    emu.add_supplier("S")
    # One byte of the announced body is sent: an answer proves it was not waited for.
    status_line, answer = await raw_exchange(emu, announced(method, path, limit + 1))
    assert b" 400 " in status_line
    assert str(limit) in orjson.loads(answer)[0]["status"]
    assert emu.requests[-1].status == 400 and emu.requests[-1].body == b""


async def test_a_client_leaving_mid_body_changes_nothing(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.add_supplier("S")
    _, writer = await asyncio.open_connection("127.0.0.1", int(emu.url.rsplit(":", 1)[1]))
    writer.write(announced("PUT", INDICATORS, 1000) + b'{"indicator": "a.example"}')
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    await asyncio.sleep(0.1)
    assert emu.requests == [] and emu.indicators("S") == {}
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.slow
async def test_the_delete_limit_is_not_the_put_limit(emu: Emulator) -> None:
    emu.add_supplier("S")
    body = b"[" + b" " * (67108865 - 2) + b"]"
    assert await code(emu, "PUT", INDICATORS, data=body) == 201
    status, answer = await call(emu, "DELETE", INDICATORS, data=body)
    assert status == 400 and "67108864" in answer[0]["status"]


async def test_bodies_must_be_json_arrays(emu: Emulator) -> None:
    emu.add_supplier("S")
    assert await code(emu, "PUT", INDICATORS, {"indicator": "a.example"}) == 400
    assert emu.requests[-1].json == {"indicator": "a.example"}
    not_arrays: tuple[object, ...] = ({}, "", 0, None)
    for not_an_array in not_arrays:
        assert await code(emu, "PUT", INDICATORS, data=orjson.dumps(not_an_array)) == 400
        assert await code(emu, "POST", "/api/1.2/tags", data=orjson.dumps(not_an_array)) == 400
    assert await code(emu, "PUT", INDICATORS, data=b"[{") == 400
    assert await code(emu, "PUT", INDICATORS) == 400, "a PUT needs a body"
    assert emu.indicators("S") == {} and emu.tags() == {}


# Suppliers


async def test_builtin_suppliers(emu: Emulator) -> None:
    assert await call(emu, "GET", SUPPLIERS) == (
        200,
        [
            {"name": "FalsePositive", "status": "enabled"},
            {"name": "InternalTI", "status": "enabled"},
        ],
    )
    _, body = await call(emu, "GET", f"{SUPPLIERS}/InternalTI")
    assert body == [
        {"name": "InternalTI", "status": "enabled", "confidence": 100, "retention": 0, "vendor": ""}
    ]
    for method in ("DELETE", "PUT"):
        assert await code(emu, method, f"{SUPPLIERS}/FalsePositive", [{"confidence": 5}]) == 400
    assert emu.supplier("FalsePositive") is not None


async def test_supplier_creation(emu: Emulator) -> None:
    new = {"name": "S-1_x", "confidence": 50, "retention": 10, "vendor": "v"}
    assert await code(emu, "POST", SUPPLIERS, [new]) == 201
    assert await call(emu, "GET", f"{SUPPLIERS}/S-1_x") == (200, [{**new, "status": "enabled"}])
    assert await code(emu, "POST", SUPPLIERS, [new]) == 400, "a duplicate"
    assert (
        await code(emu, "POST", SUPPLIERS, [{"name": "T", "confidence": 0, "retention": 0}]) == 201
    )
    assert (await call(emu, "GET", f"{SUPPLIERS}/T"))[1][0]["vendor"] == ""
    ok = {"name": "U", "confidence": 5, "retention": 0}
    for bad in (
        [{**ok, "name": "bad name"}],
        [{**ok, "name": "U\n"}],
        [{**ok, "name": ""}],
        [{**ok, "name": "InternalTI"}],
        [{**ok, "confidence": 101}],
        [{**ok, "confidence": -1}],
        [{**ok, "confidence": "5"}],
        [{**ok, "confidence": True}],
        [{**ok, "retention": -1}],
        [{**ok, "retention": 1.5}],
        [{**ok, "vendor": 3}],
        [{"name": "U", "confidence": 5}],
        [{"name": "U", "retention": 0}],
        [ok, {**ok, "name": "V"}],
        [],
        ["U"],
    ):
        assert await code(emu, "POST", SUPPLIERS, bad) == 400, bad
    assert emu.supplier("U") is None and emu.supplier("V") is None


async def test_supplier_update(emu: Emulator) -> None:
    emu.add_supplier("S", confidence=50, retention=0, vendor="v")
    update = {"name": "S", "confidence": 60, "retention": 5, "vendor": "w", "status": "disabled"}
    assert await code(emu, "PUT", f"{SUPPLIERS}/S", [update]) == 200
    assert await call(emu, "GET", f"{SUPPLIERS}/S") == (200, [update])
    bad: list[Any]
    for bad in (
        [{"status": "off"}],
        [{"confidence": 101, "vendor": "x"}],
        [{"retention": -5}],
        [{"name": "a b"}],
        [{"vendor": []}],
        [{"confidence": 1}, {"confidence": 2}],
    ):
        assert await code(emu, "PUT", f"{SUPPLIERS}/S", bad) == 400, bad
    assert await call(emu, "GET", f"{SUPPLIERS}/S") == (200, [update]), "refusals change nothing"
    assert await code(emu, "PUT", f"{SUPPLIERS}/Nope", [{"confidence": 1}]) == 404


async def test_supplier_rename_and_deletion(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_supplier("Other")
    await put(emu, [{"indicator": "a.example"}])
    assert await code(emu, "PUT", f"{SUPPLIERS}/S", [{"name": "Other"}]) == 400
    assert await code(emu, "PUT", f"{SUPPLIERS}/S", [{"name": "Renamed"}]) == 200
    assert emu.supplier("S") is None
    assert await code(emu, "GET", f"{SUPPLIERS}/S") == 404
    assert emu.indicators("Renamed").keys() == {"a.example"}
    assert await code(emu, "DELETE", f"{SUPPLIERS}/Renamed") == 200
    assert await code(emu, "GET", f"{SUPPLIERS}/Renamed") == 404
    assert await code(emu, "DELETE", f"{SUPPLIERS}/Renamed") == 404
    emu.add_supplier("Renamed")
    assert emu.indicators("Renamed") == {}, "deleting a supplier deletes its indicators"


# Tags


async def test_tags_are_created_uppercase(emu: Emulator) -> None:
    body = [{"name": "tlp_white", "weight": 2}, {"name": "Mal-1", "weight": 0}]
    assert await code(emu, "POST", "/api/1.1/tags", body) == 201
    assert emu.tags() == {"TLP_WHITE": 2, "MAL-1": 0}
    again = [{"name": "TLP_white", "weight": 5}]
    assert await code(emu, "POST", "/api/1.1/tags", again) in (200, 201)
    assert emu.tags()["TLP_WHITE"] == 2, "an existing tag is left as it is"
    assert await call(emu, "GET", "/api/1.2/tags") == (
        200,
        [{"name": "MAL-1", "weight": 0}, {"name": "TLP_WHITE", "weight": 2}],
    )


async def test_tag_validation_refuses_the_whole_request(emu: Emulator) -> None:
    ok = {"name": "good", "weight": 1}
    for bad in (
        {"name": "bad tag", "weight": 1},
        {"name": "tag\n", "weight": 1},
        {"name": "", "weight": 1},
        {"name": "x" * 129, "weight": 1},
        {"name": "x", "weight": 6},
        {"name": "x", "weight": -1},
        {"name": "x", "weight": "1"},
        {"name": "x"},
        "x",
    ):
        assert await code(emu, "POST", "/api/1.2/tags", [ok, bad]) == 400, bad
    assert emu.tags() == {}
    assert await code(emu, "POST", "/api/1.2/tags", [{"name": "x" * 128, "weight": 5}]) == 201


async def test_tags_need_api_1_1_and_no_tenant(emu: Emulator) -> None:
    assert await code(emu, "GET", "/api/1.0/tags") == 404
    assert await code(emu, "POST", "/api/1.0/tags", [{"name": "a", "weight": 1}]) == 404
    assert await code(emu, "GET", "/api/1.3/acme/tags") == 404
    assert await code(emu, "GET", "/api/1.3/tags") == 200
    assert emu.tags() == {}


# PUT indicators


async def test_put_is_an_upsert_that_replaces_context(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S")
    assert await put(emu, [{"indicator": "a.example", "context": {"x": "1", "y": 2}}]) == (
        201,
        [{"status": "All indicators were successfully added to the database"}],
    )
    first = emu.indicators("S")["a.example"]
    assert (first.type, first.context, first.tags) == ("URL", {"x": "1", "y": 2}, set())
    assert first.updated == clock.now
    clock.now += 10
    both = [{"indicator": "a.example", "context": {"z": True}}, {"indicator": "b.example"}]
    assert (await put(emu, both))[0] == 201
    held = emu.indicators("S")
    assert held.keys() == {"a.example", "b.example"}
    assert held["a.example"].context == {"z": True}, "context is replaced, not merged"
    assert held["a.example"].updated == clock.now
    await put(emu, [{"indicator": "a.example"}])
    assert emu.indicators("S")["a.example"].context == {}


async def test_put_tags_absent_empty_or_given(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_tag("A")
    emu.add_tag("b")
    await put(emu, [{"indicator": "a.example", "tags": ["a", "B"]}])
    assert emu.indicators("S")["a.example"].tags == {"A", "B"}
    await put(emu, [{"indicator": "a.example", "context": {"k": "v"}}])
    assert emu.indicators("S")["a.example"].tags == {"A", "B"}, "absent tags: unchanged"
    await put(emu, [{"indicator": "a.example", "tags": ["b"]}])
    assert emu.indicators("S")["a.example"].tags == {"B"}, "given tags: replaced"
    await put(emu, [{"indicator": "a.example", "tags": []}])
    assert emu.indicators("S")["a.example"].tags == set(), "empty tags: all removed"
    assert emu.tags() == {"A": 0, "B": 0}, "the tags themselves stay"
    emu.delete_tag("a")
    status, body = await put(emu, [{"indicator": "a.example", "tags": ["A"]}])
    assert status == 202 and "Unknown tag" in reasons(body)["a.example"]


async def test_a_tags_field_under_api_1_0_is_a_400(emu: Emulator) -> None:
    emu.add_supplier("S")
    items = [{"indicator": "a.example"}, {"indicator": "b.example", "tags": []}]
    assert (await put(emu, items, version="1.0"))[0] == 400
    assert emu.indicators("S") == {}
    assert (await put(emu, items[:1], version="1.0"))[0] == 201


async def test_partial_success_applies_the_valid_indicators(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_tag("KNOWN")
    status, body = await put(
        emu,
        [
            {"indicator": "good.example", "tags": ["known"]},
            {"indicator": "bad indicator"},
            {"indicator": "bad\\.example.com"},
            {"indicator": "t.example", "tags": ["NOPE"]},
            {"indicator": "n.example", "context": {"deep": {"x": 1}}},
            {"indicator": "l.example", "context": ["x"]},
            {"indicator": "e.example", "context": {}},
            {"indicator": "z.example", "context": {"x": None}},
            {"indicator": "s.example", "tags": "KNOWN"},
            {"indicator": MD5, "context": {"ok": 1.5}},
        ],
    )
    assert status == 202 and isinstance(body[0]["status"], str)
    errors = reasons(body)
    assert set(errors) == {
        *("bad indicator", "bad\\.example.com", "t.example", "n.example"),
        *("l.example", "e.example", "z.example", "s.example"),
    }
    assert errors["bad indicator"] == "Invalid indicator format"
    assert "Unknown tag" in errors["t.example"]
    assert emu.indicators("S").keys() == {"good.example", MD5.upper()}


async def test_false_positive_takes_no_context(emu: Emulator) -> None:
    items = [
        {"indicator": "a.example", "context": {"a": "b"}},
        {"indicator": "b.example", "context": {}},
        {"indicator": "c.example"},
    ]
    status, body = await put(emu, items, supplier="FalsePositive")
    assert status == 202 and set(reasons(body)) == {"a.example", "b.example"}
    assert all("FalsePositive" in reason for reason in reasons(body).values())
    assert emu.indicators("FalsePositive").keys() == {"c.example"}
    assert (await put(emu, items[:1], supplier="InternalTI"))[0] == 201


async def test_malformed_items_refuse_the_whole_batch(emu: Emulator) -> None:
    emu.add_supplier("S")
    for bad in ("a.example", {"value": "a.example"}, {"indicator": 5}, None, ["a.example"]):
        assert (await put(emu, [{"indicator": "ok.example"}, bad]))[0] == 400, bad
        assert (await delete(emu, [{"indicator": "ok.example"}, bad]))[0] == 400, bad
    assert emu.indicators("S") == {}


async def test_an_unknown_supplier_is_404(emu: Emulator) -> None:
    assert (await put(emu, [{"indicator": "a.example"}], supplier="Nope"))[0] == 404
    assert (await delete(emu, [{"indicator": "a.example"}], supplier="Nope"))[0] == 404


async def test_values_are_stored_canonical(emu: Emulator) -> None:
    emu.add_supplier("S")
    await put(emu, [{"indicator": "http://www.Example.com:8080/a/", "context": {"v": 1}}])
    assert (await put(emu, [{"indicator": "example.com/a", "context": {"v": 2}}]))[0] == 201
    await put(emu, [{"indicator": MD5}, {"indicator": "10.0.0.1"}, {"indicator": "Host.Example."}])
    held = emu.indicators("S")
    assert {value: found.type for value, found in held.items()} == {
        "example.com/a": "URL",
        MD5.upper(): "MD5",
        "10.0.0.1": "IP",
        "host.example": "URL",
    }
    assert held["example.com/a"].context == {"v": 2}
    assert await delete(emu, [{"indicator": "https://EXAMPLE.com/a#x"}, {"indicator": MD5}]) == (
        201,
        [{"status": "All indicators were successfully deleted from the database"}],
    )
    assert emu.indicators("S").keys() == {"10.0.0.1", "host.example"}


# DELETE indicators


async def test_delete_reports_absent_and_invalid_and_deletes_the_rest(emu: Emulator) -> None:
    emu.add_supplier("S")
    await put(emu, [{"indicator": f"{name}.example"} for name in "abc"])
    status, body = await delete(
        emu,
        [
            {"indicator": "a.example"},
            {"indicator": "gone.example"},
            {"indicator": "bad value"},
            {"indicator": "c.example"},
        ],
    )
    assert status == 202
    assert reasons(body) == {
        "gone.example": "Indicator doesn't exist",
        "bad value": "Invalid indicator format",
    }
    assert emu.indicators("S").keys() == {"b.example"}
    status, body = await delete(emu, [{"indicator": "a.example"}])
    assert status == 202 and reasons(body) == {"a.example": "Indicator doesn't exist"}


async def test_unmark_detections_needs_api_1_2(emu: Emulator) -> None:
    await put(emu, [{"indicator": MD5}], supplier="FalsePositive")
    item = {"indicator": MD5, "unmark_detections": True}
    assert (await delete(emu, [item], "FalsePositive", version="1.1"))[0] == 400
    assert (await delete(emu, [{**item, "unmark_detections": "yes"}], "FalsePositive"))[0] == 400
    assert emu.indicators("FalsePositive").keys() == {MD5.upper()}
    assert (await delete(emu, [item], "FalsePositive"))[0] == 201
    assert emu.indicators("FalsePositive") == {}


# Tenants


async def test_tenants_are_isolated(emu: Emulator) -> None:
    new = [{"name": "S", "confidence": 1, "retention": 0}]
    for tenant, value in (("acme", "a.example"), ("other", "b.example")):
        assert await code(emu, "POST", f"/api/1.3/{tenant}/suppliers", new) == 201
        path = f"/api/1.3/{tenant}/suppliers/S/indicators"
        assert await code(emu, "PUT", path, [{"indicator": value}]) == 201
    assert emu.indicators("S", tenant="acme").keys() == {"a.example"}
    assert emu.indicators("S", tenant="other").keys() == {"b.example"}
    assert emu.supplier("S") is None
    assert await code(emu, "GET", "/api/1.3/suppliers/S") == 404
    query = [{"indicator": "a.example"}]
    assert (await call(emu, "POST", "/api/1.3/acme/lookup", query))[1][0]["found"] is True
    assert (await call(emu, "POST", "/api/1.3/other/lookup", query))[1][0]["found"] is False
    assert await code(emu, "GET", "/api/1.2/acme/suppliers") == 404, "no tenants before 1.3"


async def test_untenanted_1_3_paths_are_the_general_tenant(emu: Emulator) -> None:
    emu.add_supplier("S")
    await call(emu, "PUT", "/api/1.3/suppliers/S/indicators", [{"indicator": "a.example"}])
    await call(emu, "PUT", "/api/1.3/General/suppliers/S/indicators", [{"indicator": "b.example"}])
    assert emu.indicators("S").keys() == {"a.example", "b.example"}


async def test_configured_tenants_only() -> None:
    emulator = Emulator(user=USER, password=PASSWORD, tenants=("acme",))
    await emulator.start()
    try:
        assert await code(emulator, "GET", "/api/1.3/acme/suppliers") == 200
        assert await code(emulator, "GET", "/api/1.3/General/suppliers") == 200
        assert await code(emulator, "GET", "/api/1.3/evil/suppliers") == 404
    finally:
        await emulator.stop()


# Retention and lookup


async def test_retention_counts_from_the_last_update(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S", retention=1)
    emu.add_supplier("Forever", retention=0)
    await put(emu, [{"indicator": "a.example"}, {"indicator": "b.example"}])
    await put(emu, [{"indicator": "a.example"}], supplier="Forever")
    clock.now += 45
    await put(emu, [{"indicator": "a.example"}])
    clock.now += 30
    assert emu.indicators("S").keys() == {"a.example"}
    supplier = emu.supplier("S")
    assert supplier is not None and "b.example" not in supplier.indicators, "removed, not hidden"
    query = [{"indicator": "b.example"}, {"indicator": "a.example"}]
    _, body = await call(emu, "POST", "/api/1.2/lookup", query)
    assert [item["found"] for item in body] == [False, True]
    clock.now += 3600
    assert emu.indicators("S") == {}
    assert emu.indicators("Forever").keys() == {"a.example"}


async def test_an_expired_indicator_is_gone_for_put_and_delete(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S", retention=1)
    emu.add_tag("T")
    await put(emu, [{"indicator": "a.example", "tags": ["T"]}, {"indicator": "b.example"}])
    clock.now += 61
    await put(emu, [{"indicator": "a.example"}])
    assert emu.indicators("S")["a.example"].tags == set(), "an expired indicator's tags are gone"
    status, body = await delete(emu, [{"indicator": "b.example"}])
    assert status == 202 and reasons(body) == {"b.example": "Indicator doesn't exist"}


async def test_lookup(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_supplier("Off")
    emu.add_tag("X")
    await put(emu, [{"indicator": "http://Example.com/p", "context": {"k": "v"}, "tags": ["x"]}])
    await put(emu, [{"indicator": "example.com/p"}], supplier="Off")
    await call(emu, "PUT", f"{SUPPLIERS}/Off", [{"status": "disabled"}])
    query = [{"indicator": "WWW.example.com/p/"}, {"indicator": "no.example"}, {"indicator": "a b"}]
    assert await call(emu, "POST", "/api/1.1/lookup", query) == (
        200,
        [
            {
                "indicator": "example.com/p",
                "found": True,
                "suppliers": [{"name": "S", "context": {"k": "v"}, "tags": ["X"]}],
            },
            {"indicator": "no.example", "found": False, "suppliers": []},
            {"indicator": "a b", "found": False, "suppliers": []},
        ],
    )
    assert await code(emu, "POST", "/api/1.2/lookup", [{"value": "x"}]) == 400


# The request log and the debug endpoints


async def test_the_request_log(emu: Emulator) -> None:
    emu.add_supplier("S")
    await call(emu, "GET", SUPPLIERS, head={"Accept": "*/*"})
    await put(emu, [{"indicator": "a.example"}])
    await delete(emu, [{"indicator": "a.example"}])
    first, second, third = emu.requests
    assert (first.method, first.path, first.version, first.status) == ("GET", SUPPLIERS, "1.2", 401)
    assert first.body == b"" and first.json is None
    assert (second.method, second.path, second.status) == ("PUT", INDICATORS, 201)
    assert second.body == b'[{"indicator":"a.example"}]'
    assert second.json == [{"indicator": "a.example"}]
    assert second.headers["Authorization"] == "***" and second.headers["authorization"] == "***"
    assert AUTH not in repr(second)
    assert second.headers["content-type"] == "application/json"
    assert second.headers["Content-Length"] == str(len(second.body))
    assert emu.indicator_requests() == [second, third]
    assert emu.indicator_requests("DELETE") == [third]
    emu.clear_log()
    assert emu.requests == []


async def test_the_log_can_be_bounded() -> None:
    emulator = Emulator(user=USER, password=PASSWORD, log_limit=2)
    await emulator.start()
    try:
        for version in ("1.0", "1.1", "1.2"):
            await call(emulator, "GET", f"/api/{version}/suppliers")
        assert [r.version for r in emulator.requests] == ["1.1", "1.2"]
    finally:
        await emulator.stop()


async def test_debug_endpoints(emu: Emulator) -> None:
    emu.add_supplier("S", vendor="v")
    emu.add_tag("T", 3)
    await put(emu, [{"indicator": "a.example", "context": {"k": "v"}, "tags": ["T"]}])
    auth = {"Authorization": AUTH}
    async with aiohttp.ClientSession() as session:
        async with session.get(emu.url + "/emulator/state") as response:
            assert response.status == 401 and "WWW-Authenticate" in response.headers
        async with session.get(emu.url + "/emulator/state", headers=auth) as response:
            state = await response.json()
        async with session.get(emu.url + "/emulator/requests", headers=auth) as response:
            log = await response.json()
    assert state["tags"] == {"T": 3}
    supplier = state["tenants"]["General"]["S"]
    assert supplier["vendor"] == "v"
    assert supplier["indicators"]["a.example"] == {
        "type": "URL",
        "context": {"k": "v"},
        "tags": ["T"],
        "updated": emu.indicators("S")["a.example"].updated,
    }
    size = len(emu.requests[0].body)
    assert log == [
        {"method": "PUT", "path": INDICATORS, "version": "1.2", "status": 201, "bytes": size}
    ]
    assert len(emu.requests) == 1, "the debug endpoints are not logged"


async def test_minimal_json_of_the_changes_and_clearing_the_log(emu: Emulator) -> None:
    emu.add_supplier("S")
    first = {"indicator": "a.example", "context": {"k": "v"}, "tags": []}
    second = {"indicator": "a.example", "context": {"k": "w"}, "tags": []}
    await put(emu, [first, {"indicator": "b.example"}])
    await put(emu, [second])
    auth = {"Authorization": AUTH}
    async with aiohttp.ClientSession() as session:
        async with session.get(emu.url + "/emulator/minimal", headers=auth) as response:
            minimal = (await response.json())["bytes"]
        async with session.delete(emu.url + "/emulator/requests", headers=auth) as response:
            assert response.status == 200
        async with session.get(emu.url + "/emulator/minimal", headers=auth) as response:
            cleared = (await response.json())["bytes"]
    each = [orjson.dumps(second), orjson.dumps({"indicator": "b.example"})]
    assert minimal == len(b"[" + b",".join(each) + b"]"), "each value once, its last body"
    assert cleared == 0 and emu.requests == []


async def test_the_minimal_json_counts_changes_beyond_the_log_bound() -> None:
    emulator = Emulator(user=USER, password=PASSWORD, log_limit=1)
    await emulator.start()
    try:
        emulator.add_supplier("S")
        await put(emulator, [{"indicator": "a.example"}])
        await put(emulator, [{"indicator": "b.example"}])
        await delete(emulator, [{"indicator": "a.example"}])
        assert len(emulator.requests) == 1
        puts = b'[{"indicator":"a.example"},{"indicator":"b.example"}]'
        assert emulator.changes.bytes() == len(puts) + len(b'[{"indicator":"a.example"}]')
    finally:
        await emulator.stop()


# serve()


async def printed(capsys: pytest.CaptureFixture[str]) -> str:
    for _ in range(250):
        out = capsys.readouterr().out
        if out:
            return out
        await asyncio.sleep(0.02)
    raise AssertionError("serve() printed nothing")


async def test_serve_prints_its_url_and_stops_on_cancel(capsys: pytest.CaptureFixture[str]) -> None:
    versions = ["1.1", "1.2"]
    task = asyncio.create_task(
        serve("127.0.0.1:0", user=USER, password=PASSWORD, api_versions=versions)
    )
    line = await printed(capsys)
    assert line.startswith("emulator listening on http://127.0.0.1:")
    assert line.endswith(" (API 1.1,1.2)\n")
    url = line.split()[3]
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/api/1.2/suppliers", headers=JSON) as response:
            assert response.status == 200
        async with session.get(url + "/api/1.0/suppliers", headers=JSON) as response:
            assert response.status == 404
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))


async def test_serve_stops_cleanly_on_a_signal(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(
        serve("127.0.0.1:0", user=USER, password=PASSWORD, api_versions=["1.2"])
    )
    await printed(capsys)
    signal.raise_signal(signal.SIGINT)
    await asyncio.wait_for(task, 5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "its handler is removed"


async def test_serve_refuses_a_bad_listen_address() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        await serve("localhost", user=USER, password=PASSWORD, api_versions=["1.2"])


async def test_a_sink_checks_indicators_and_keeps_none() -> None:
    emulator = Emulator(user=USER, password=PASSWORD, sink=True)
    await emulator.start()
    try:
        emulator.add_supplier("S")
        _, answer = await put(emulator, [{"indicator": "a.example"}, {"indicator": "x y"}])
        assert "Invalid indicator format" in str(answer), "still checked"
        assert "a.example" not in str(answer)
        assert emulator.indicators("S") == {}
        status, answer = await delete(emulator, [{"indicator": "never-sent.example"}])
        assert status < 300 and "exist" not in str(answer), "nothing held: any delete succeeds"
    finally:
        await emulator.stop()
