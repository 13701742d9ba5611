"""The emulator's HTTP layer, request log, debug endpoints, serve() and faults, over real HTTP.

What each documented rule does is in tests/emulator/test_emulator_conformance.py; the
helpers here are shared with it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import conftest
import orjson
import pytest
from conftest import Clock

from feedsync._http import basic_auth
from feedsync.emulator import Emulator, add_arguments, serve, serve_from
from feedsync.emulator.faults import Faults
from feedsync.emulator.readings import Readings

USER, PASSWORD = conftest.USER, conftest.PASSWORD
AUTH = basic_auth(USER, PASSWORD)
JSON = {"Accept": "application/json", "Authorization": AUTH, "Content-Type": "application/json"}
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SUPPLIERS = "/api/1.2/suppliers"
INDICATORS = "/api/1.2/suppliers/S/indicators"


@pytest.fixture
async def old(clock: Clock) -> AsyncIterator[Emulator]:
    emulator = Emulator(user=USER, password=PASSWORD, api_versions=("1.1", "1.2"))
    await emulator.start()
    yield emulator
    await emulator.stop()


async def started(**options: Any) -> Emulator:
    emulator = Emulator(user=USER, password=PASSWORD, **options)
    await emulator.start()
    return emulator


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
    # aiohttp would send Accept: */* of its own where a test sends none.
    async with (
        aiohttp.ClientSession(skip_auto_headers=("Accept",)) as session,
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


def error(body: Any) -> dict[str, str]:
    """The one error object of a refusal, after checking the documented shape."""
    assert isinstance(body, list) and len(body) == 1 and isinstance(body[0]["status"], str)
    assert set(body[0]) <= {"status", "reason"}
    return dict(body[0])


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


# Credentials, Accept, versions, requests, methods


async def test_credentials_are_checked_first(emu: Emulator) -> None:
    status, body = await call(emu, "GET", SUPPLIERS, head={"Accept": "text/html"})
    assert status == 401 and error(body)["status"] == "Unauthorized user"
    for wrong in (basic_auth(USER, "nope"), "Basic !!!", "Bearer x", f"Digest {AUTH[6:]}"):
        assert await code(emu, "GET", SUPPLIERS, head=headers(Authorization=wrong)) == 401
    assert await code(emu, "GET", "/api/9.9/suppliers", head={}) == 401
    lowercase_scheme = headers(Authorization="basic " + AUTH[6:])
    assert await code(emu, "GET", SUPPLIERS, head=lowercase_scheme) == 200


async def test_accept_must_list_json(emu: Emulator) -> None:
    for accept in ("text/html", "application/xml", "text/plain, text/html", "*/*"):
        status, body = await call(emu, "GET", SUPPLIERS, head=headers(Accept=accept))
        assert status == 406 and error(body)["status"] == "Not Acceptable", accept
    assert await code(emu, "GET", SUPPLIERS, head={"Authorization": AUTH}) == 406, "no Accept"
    for accept in ("application/json", "text/plain, application/json;q=0.9"):
        assert await code(emu, "GET", SUPPLIERS, head=headers(Accept=accept)) == 200


async def test_unknown_versions_are_404(old: Emulator) -> None:
    for path in ("/api/1.0/suppliers", "/api/1.3/suppliers", "/api/9.9/suppliers", "/elsewhere"):
        status, body = await call(old, "GET", path)
        assert status == 404 and error(body)["status"] == "Request not supported", path
    assert await code(old, "GET", SUPPLIERS) == 200


async def test_unknown_requests_are_404(emu: Emulator) -> None:
    for path in (
        "/api/1.2/nothing",
        "/api/1.2",
        "/api/1.2/login",
        "/api/1.2/suppliers/FalsePositive/indicators/x",
        "/api/1.2/suppliers/",
        "/api/1.2/tags/",
    ):
        status, body = await call(emu, "POST", path, [{}])
        assert status == 404 and error(body)["status"] == "Request not supported", path


async def test_a_wrong_method_is_405(emu: Emulator) -> None:
    for method, path in (
        ("GET", "/api/1.1/lookup"),
        ("PATCH", f"{SUPPLIERS}/FalsePositive"),
        ("POST", f"{SUPPLIERS}/FalsePositive"),
        ("POST", f"{SUPPLIERS}/FalsePositive/indicators"),
        ("GET", f"{SUPPLIERS}/FalsePositive/indicators"),
        ("DELETE", SUPPLIERS),
        ("PUT", "/api/1.2/tags"),
        ("POST", "/api/1.2/tags/X"),
    ):
        status, body = await call(emu, method, path)
        assert status == 405 and error(body)["status"] == "Method Not Allowed", (method, path)


async def test_versions_must_look_like_versions() -> None:
    with pytest.raises(ValueError, match="not like"):
        Emulator(api_versions=("1.2", "latest"))


async def test_readings_are_checked() -> None:
    with pytest.raises(ValueError, match="missing_supplier_status"):
        Emulator(missing_supplier_status=410)  # type: ignore[arg-type]


# Body framing


async def test_bodies_need_a_json_content_type(emu: Emulator) -> None:
    emu.add_supplier("S")
    item = [{"indicator": "a.example"}]
    for wrong in ("text/plain", "application/json; charset=latin-1", "application/jsonx"):
        status, body = await call(emu, "PUT", INDICATORS, item, head=headers(content_type=wrong))
        assert status == 400 and "Content-Type" in error(body)["reason"]
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
        assert "Content-Length" in error(await response.json())["reason"]
    assert emu.requests[-1].headers.get("Transfer-Encoding") == "chunked"
    assert emu.indicators("S") == {}


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("DELETE", INDICATORS, 67108864),
        ("PUT", INDICATORS, 134217728),
        ("POST", SUPPLIERS, 134217728),
        ("PUT", f"{SUPPLIERS}/S", 134217728),
        ("POST", "/api/1.2/tags", 134217728),
        ("PUT", "/api/1.2/tags/T", 134217728),
        ("POST", "/api/1.2/lookup", 67108864),
    ],
)
async def test_an_oversize_body_is_refused_from_its_header(
    emu: Emulator, method: str, path: str, limit: int
) -> None:
    emu.add_supplier("S")
    emu.add_tag("T")
    # One byte of the announced body is sent: an answer proves it was not waited for.
    status_line, answer = await raw_exchange(emu, announced(method, path, limit + 1))
    assert b" 400 " in status_line
    assert str(limit) in error(orjson.loads(answer))["reason"]
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
    body = b"[" + b" " * (67108865 - 3) + b"{}]"
    status, answer = await call(emu, "PUT", INDICATORS, data=body)
    assert status == 400 and "indicator" in answer[0]["reason"], "read and parsed, not too big"
    status, answer = await call(emu, "DELETE", INDICATORS, data=body)
    assert status == 400 and "67108864" in answer[0]["reason"]


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


async def test_bodyless_requests_refuse_a_body(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.add_tag("T")
    for method, path in (
        ("GET", SUPPLIERS),
        ("GET", f"{SUPPLIERS}/S"),
        ("DELETE", f"{SUPPLIERS}/S"),
        ("GET", "/api/1.2/tags"),
        ("GET", "/api/1.2/tags/T"),
        ("DELETE", "/api/1.2/tags/T"),
    ):
        status, body = await call(emu, method, path, [])
        assert status == 400 and "empty body" in error(body)["reason"], (method, path)
    assert emu.supplier("S") is not None and emu.tags() == {"T": 0}
    assert await code(emu, "DELETE", f"{SUPPLIERS}/S") == 201


async def test_refusals_carry_the_requests_error_text(emu: Emulator) -> None:
    cases = [
        ("GET", f"{SUPPLIERS}/Nope", None, "An error occurred while getting the supplier"),
        ("PUT", f"{SUPPLIERS}/Nope", [{}], "An error occurred while updating the supplier"),
        ("DELETE", f"{SUPPLIERS}/Nope", None, "An error occurred while removing the supplier"),
        ("POST", SUPPLIERS, [], "An error occurred while adding the supplier"),
        ("PUT", INDICATORS, [{"indicator": "a.b"}], "An error occurred while adding indicators"),
        ("DELETE", INDICATORS, [{"indicator": "a.b"}], "An error occurred while deleting"),
        ("GET", "/api/1.2/tags/X", None, "An error occurred while getting tag info"),
        ("DELETE", "/api/1.2/tags/X", None, "An error occurred while removing tag"),
        ("POST", "/api/1.2/tags", [], "An error occurred while adding tag"),
    ]
    for method, path, body, text in cases:
        status, answer = await call(emu, method, path, body)
        assert status == 400 and error(answer)["status"].startswith(text), (method, path)
        assert error(answer)["reason"], "a reason says what was wrong"


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
    emulator = await started(log_limit=2)
    try:
        for version in ("1.0", "1.1", "1.2"):
            await call(emulator, "GET", f"/api/{version}/suppliers")
        assert [r.version for r in emulator.requests] == ["1.1", "1.2"]
    finally:
        await emulator.stop()


async def test_debug_endpoints(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S", vendor="v", retention=1)
    emu.add_tag("T", 3)
    await put(emu, [{"indicator": "a.example", "context": {"k": "v"}, "tags": ["T"]}])
    clock.now += 61
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
        "updated": clock.now - 61,
        "expired": True,
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
    emulator = await started(log_limit=1)
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


async def test_a_sink_checks_indicators_and_keeps_none() -> None:
    emulator = await started(sink=True)
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


# serve() and its command-line options


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


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_reading_has_a_flag_with_the_strict_default() -> None:
    defaults = vars(parsed())
    assert Readings(**{k: defaults[k] for k in Readings.__dataclass_fields__}) == Readings()
    args = parsed("--missing-supplier-status", "404", "--retention-zero", "never")
    assert (args.missing_supplier_status, args.retention_zero) == (404, "never")
    with pytest.raises(SystemExit):
        parsed("--tenant-visibility", "sometimes")


async def test_serve_from_plays_the_chosen_readings(capsys: pytest.CaptureFixture[str]) -> None:
    args = parsed(
        "--listen", "127.0.0.1:0", "--user", USER, "--password", PASSWORD,
        "--missing-supplier-status", "404", "--tenants", "acme, other",
    )  # fmt: skip
    task = asyncio.create_task(serve_from(args))
    url = (await printed(capsys)).split()[3]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/api/1.2/suppliers/Nope", headers=JSON) as response:
                assert response.status == 404
            async with session.get(url + "/api/1.3/other/suppliers/InternalTI", headers=JSON) as r:
                assert r.status == 200, "multitenancy mode with the listed tenants"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# Faults


async def test_initializing_answers_425_until_its_time_is_up(emu: Emulator, clock: Clock) -> None:
    emu.add_supplier("S")
    emu.faults = Faults(initializing=120, retry_after=30)
    requests = (("GET", SUPPLIERS, None), ("PUT", INDICATORS, [{"indicator": "a.b"}]))
    for method, path, body in requests:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, emu.url + path, json=body, headers=JSON) as response,
        ):
            assert response.status == 425 and response.headers["Retry-After"] == "30"
            assert error(await response.json())["status"] == "Kaspersky CyberTrace initializing"
    assert emu.indicators("S") == {} and emu.requests[-1].status == 425
    clock.now += 119
    assert await code(emu, "GET", SUPPLIERS) == 425
    clock.now += 1
    assert await code(emu, "GET", SUPPLIERS) == 200


async def test_the_supplier_is_dropped_after_n_successful_indicator_requests(
    emu: Emulator,
) -> None:
    emu.add_supplier("S")
    emu.faults = Faults(drop_supplier_after=2)
    assert (await put(emu, [{"indicator": "a.example"}]))[0] == 201
    assert (await put(emu, [{"indicator": "nope nope"}]))[0] == 202, "a 202 counts as success"
    assert await code(emu, "GET", f"{SUPPLIERS}/S") == 200, "other requests neither count nor drop"
    status, body = await put(emu, [{"indicator": "b.example"}])
    assert status == 400 and error(body)["reason"] == "Supplier doesn't exist"
    assert emu.supplier("S") is None and emu.fault_state is not None
    assert emu.fault_state.dropped == "S"
    emu.add_supplier("S")
    assert (await put(emu, [{"indicator": "b.example"}]))[0] == 201, "once only"


@pytest.mark.parametrize("kind", ["not_json", "empty", "no_indicator", "unmapped", "no_errors"])
async def test_garbled_202_answers_come_after_the_request_was_applied(
    emu: Emulator, kind: str
) -> None:
    emu.add_supplier("S")
    emu.faults = Faults(garble=1.0, garble_kinds=(kind,))  # type: ignore[arg-type]
    sent = [{"indicator": "a.example"}, {"indicator": "b.example"}]
    async with (
        aiohttp.ClientSession() as session,
        session.put(emu.url + INDICATORS, json=sent, headers=JSON) as response,
    ):
        status, raw = response.status, await response.read()
    assert status == 202 and emu.indicators("S").keys() == {"a.example", "b.example"}
    if kind == "not_json":
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
        return
    if kind == "empty":
        assert raw == b""
        return
    answer = orjson.loads(raw)[0]
    entries = answer.get("error_indicators")
    if kind == "no_errors":
        assert entries is None and isinstance(answer["status"], str)
    elif kind == "no_indicator":
        assert entries and not any(isinstance(e.get("indicator"), str) for e in entries)
    else:
        assert [e["indicator"] for e in entries] not in (["a.example"], ["b.example"])
        assert {e["indicator"] for e in entries}.isdisjoint({"a.example", "b.example"})
    assert emu.fault_state is not None and emu.fault_state.injected == {f"garble_{kind}": 1}


async def test_garbling_is_a_seeded_share(emu: Emulator) -> None:
    emu.add_supplier("S")

    async def garbled_statuses(seed: int) -> list[bool]:
        emu.faults = Faults(garble=0.5, garble_kinds=("empty",), seed=seed)
        seen = []
        for n in range(20):
            async with (
                aiohttp.ClientSession() as session,
                session.put(
                    emu.url + INDICATORS, json=[{"indicator": f"v{n}.example"}], headers=JSON
                ) as response,
            ):
                seen.append(await response.read() == b"")
        return seen

    first = await garbled_statuses(3)
    assert 0 < sum(first) < 20
    assert await garbled_statuses(3) == first, "the same seed, the same faults"
    assert len(emu.indicators("S")) == 20, "garbled or not, every request was applied"


async def test_existing_faults_still_work(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.faults = Faults(rate=1.0, statuses=(429,), retry_after=7)
    status, body = await put(emu, [{"indicator": "a.example"}])
    assert status == 429 and error(body)["status"] == "Too Many Requests"
    emu.faults = Faults(after_apply=1.0)
    assert (await put(emu, [{"indicator": "a.example"}]))[0] == 500
    assert emu.indicators("S").keys() == {"a.example"}
    emu.faults = Faults(reject_values=frozenset({"b.example"}))
    assert (await put(emu, [{"indicator": "b.example"}]))[0] == 400
    assert emu.indicators("S").keys() == {"a.example"}


def test_garble_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="garble_kinds"):
        Faults(garble=0.5, garble_kinds=("gibberish",))  # type: ignore[arg-type]


async def test_resets_drop_the_connection_before_or_after_applying(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.faults = Faults(reset=1.0, seed=1)
    for n in range(12):
        with pytest.raises(aiohttp.ClientError):
            await put(emu, [{"indicator": f"v{n}.example"}])
    # aiohttp sends an idempotent PUT a second time after a disconnect: counts, not equality.
    applied = len(emu.indicators("S"))
    assert emu.fault_state is not None and emu.fault_state.injected.keys() == {
        "reset",
        "reset_after_apply",
    }
    assert 0 < applied <= emu.fault_state.injected["reset_after_apply"]
    assert applied < 12, "some before, some after applying"


async def test_latency_and_max_concurrent(emu: Emulator) -> None:
    emu.add_supplier("S")
    emu.faults = Faults(latency=0.2, max_concurrent=1)
    first, second = await asyncio.gather(
        put(emu, [{"indicator": "a.example"}]), put(emu, [{"indicator": "b.example"}])
    )
    assert sorted([first[0], second[0]]) == [201, 429]


async def test_everywhere_extends_faults_beyond_indicator_requests(emu: Emulator) -> None:
    emu.faults = Faults(rate=1.0, statuses=(503,))
    assert await code(emu, "GET", SUPPLIERS) == 200
    emu.faults = Faults(rate=1.0, statuses=(503,), everywhere=True)
    assert await code(emu, "GET", SUPPLIERS) == 503
