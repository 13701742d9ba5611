"""Broken feed bodies and servers: each fails clearly, in bounded time, deleting nothing."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import zipfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web
from conftest import ConfigFactory
from test_sync import sync

from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.store import Store

GOOD = "".join(f"good-{i}.example\n" for i in range(10))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body(data: bytes | str, status: int = 200, **headers: str) -> Handler:
    raw = data.encode() if isinstance(data, str) else data

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=raw, headers=headers)

    return handler


def cut_short(_request: web.Request) -> Awaitable[web.StreamResponse]:
    return _partial(declared=10_000, sent=b"a.example\nb.exam")


def content_length_lie(_request: web.Request) -> Awaitable[web.StreamResponse]:
    return _partial(declared=5 * 1024**3, sent=b"a.example\n")


async def _partial(declared: int, sent: bytes) -> web.StreamResponse:
    raise _Partial(declared, sent)


class _Partial(Exception):
    def __init__(self, declared: int, sent: bytes) -> None:
        self.declared = declared
        self.sent = sent


async def stall(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(b"a.example\n")
    await asyncio.sleep(30)
    return response


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(100_000):
        await response.write(f"host-{i}.example\n".encode() * 100)
    return response


async def redirect_loop(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(str(request.url))


async def closed_mid_line(request: web.Request) -> web.StreamResponse:
    # No Content-Length, no chunking: the body ends where the server closes.
    response = web.StreamResponse(headers={"Connection": "close"})
    response.force_close()
    await response.prepare(request)
    await response.write(GOOD.encode() + b"10.5.0.15")
    if request.transport is not None:
        request.transport.close()
    return response


async def closed_mid_line_crlf(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Connection": "close"})
    response.force_close()
    await response.prepare(request)
    await response.write(GOOD.replace("\n", "\r\n").encode() + b"10.5.0.15\r")
    if request.transport is not None:
        request.transport.close()
    return response


async def closed_before_footer(request: web.Request) -> web.StreamResponse:
    # No length, no chunks: the body ends where the server closes, here at a line
    # boundary. Every line is whole; only the missing footer shows the rest is missing.
    writer = request.transport
    assert writer is not None
    writer.write(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n" + GOOD.encode()
    )
    await asyncio.sleep(0.1)
    writer.close()
    return web.StreamResponse()


async def gzip_bomb_encoding(request: web.Request) -> web.StreamResponse:
    inflated = b"bomb.example\n" * 400_000  # 5.2 MB from a few kB
    return web.Response(body=gzip.compress(inflated), headers={"Content-Encoding": "gzip"})


async def redirect_to_http_downgrade(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("http://127.0.0.1:1/feed")


async def bad_chunk(request: web.Request) -> web.StreamResponse:
    # Chunked framing that breaks after a whole first chunk: a size line of garbage.
    writer = request.transport
    assert writer is not None
    writer.write(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        + f"{len(GOOD):x}\r\n".encode()
        + GOOD.encode()
        + b"\r\nzz-not-a-size\r\nb.example\n\r\n"
    )
    await asyncio.sleep(0.1)
    writer.close()
    return web.StreamResponse()


async def drip(request: web.Request) -> web.StreamResponse:
    # A byte every half second: each read is in time, the whole body never is.
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for byte in (GOOD * 10).encode():
        await response.write(bytes([byte]))
        await asyncio.sleep(0.5)
    return response


def content_encoded(payload: bytes, encoding: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=payload, headers={"Content-Encoding": encoding})

    return handler


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    handler: Handler
    result: str  # failed | held | ok
    message: str  # must appear in the feed's error
    feed: str = ""  # extra feed keys
    first: str = GOOD  # the body the first, good sync reads


FOOTER = "footer: '# END'\n"
FOOTED = GOOD + "# END 10 entries\n"
GZ = gzip.compress(GOOD.encode() * 200)
BZ = bz2.compress(GOOD.encode() * 200)
CASES: dict[str, Case] = {
    "html-page": Case(
        body("<!DOCTYPE html><html><body>503</body></html>", **{"Content-Type": "text/html"}),
        "failed",
        "line 1: the body is an HTML page",
    ),
    "html-after-blank-lines": Case(
        body("\n\n  <html><head></head></html>"), "failed", "line 3: the body is an HTML page"
    ),
    "xml-error": Case(body('<?xml version="1.0"?><Error>Denied</Error>'), "failed", "HTML page"),
    "json-garbage": Case(
        body('{"error": {"code": 500, "detail": [1, 2, 3]}}'), "failed", "no valid indicator"
    ),
    "truncated-gzip": Case(body(GZ[: len(GZ) // 2]), "failed", "truncated gzip"),
    "corrupt-gzip": Case(body(b"\x1f\x8b\x08\x00" + b"\xff" * 100), "failed", "gzip"),
    "truncated-zip": Case(body(zipped({"f.csv": GOOD.encode()})[:40]), "failed", "zip"),
    "empty-zip": Case(body(zipped({})), "failed", "NUL byte"),
    "zip-of-garbage": Case(body(zipped({"f.csv": b"<html>nope</html>"})), "failed", "HTML page"),
    "invalid-utf8": Case(
        body(b"\xff\xfe\xfa\n" * 20), "failed", "no valid indicator in 20 rows (encoding 20)"
    ),
    "nul-bytes": Case(body(b"a.example\n\x00\x00\x00\n"), "failed", "line 2: NUL byte"),
    "ten-mb-line": Case(
        body(b"x" * (10 << 20)), "failed", "no valid indicator in 1 rows (too_long 1)"
    ),
    "too-few-columns": Case(
        body("# id,url,threat\n1\n2\n3\n"),
        "failed",
        "no valid indicator in 3 rows (missing_column 3)",
        "indicator: url\n",
    ),
    "unknown-column": Case(
        body("# id,link\n1,a.example\n"),
        "failed",
        "column 'url' not in header (id, link)",
        "indicator: url\n",
    ),
    "all-values-invalid": Case(body("not a value\nalso not\n"), "failed", "no valid indicator"),
    "empty-body": Case(body(b""), "failed", "empty body"),
    "whitespace-body": Case(body("\n \n\t\n"), "held", "would remove all 10"),
    "comments-only": Case(
        body("# nothing today\n# END 0 entries\n"), "held", "would remove all 10"
    ),
    "header-only": Case(body("# id,url\n"), "held", "would remove all 10"),
    "ninety-percent-gone": Case(body("good-0.example\n"), "held", "would remove 9 of 10"),
    "http-404": Case(body("not found", status=404), "failed", "HTTP 404 from http://127.0.0.1"),
    "http-403": Case(body("forbidden", status=403), "failed", "HTTP 403"),
    "http-500": Case(body("oops", status=500), "failed", "HTTP 500"),
    "http-503-html": Case(body("<html>down</html>", status=503), "failed", "HTTP 503"),
    "redirect-loop": Case(redirect_loop, "failed", "redirect loop"),
    "cut-short": Case(cut_short, "failed", "cut short"),
    "content-length-lie-5gb": Case(content_length_lie, "failed", "over the limit"),
    "endless-chunked": Case(
        endless, "failed", "over the limit of 1048576 bytes", "max_body_bytes: 1048576\n"
    ),
    "stalls-mid-body": Case(stall, "failed", "cannot fetch", "timeout: 1\n"),
    "binary-garbage": Case(body(bytes(range(1, 256)) * 40), "failed", "no valid indicator"),
    "closed-mid-line": Case(closed_mid_line, "failed", "cut short"),
    "gzip-bomb-body": Case(
        body(gzip.compress(b"bomb.example\n" * 400_000)),
        "failed",
        "over the limit of 1048576 bytes",
        "max_body_bytes: 1048576\n",
    ),
    "gzip-bomb-content-encoding": Case(
        gzip_bomb_encoding, "failed", "over the limit of 1048576 bytes", "max_body_bytes: 1048576\n"
    ),
    "chunked-framing-error": Case(bad_chunk, "failed", "cut short"),
    "slow-drip": Case(drip, "failed", "no complete body within 2 s", "timeout: 2\n"),
    "truncated-bzip2": Case(body(BZ[: len(BZ) // 2]), "failed", "bzip2"),
    "corrupt-bzip2": Case(body(b"BZh91AY&SY" + b"\x00" * 64), "failed", "bzip2"),
    "bzip2-bomb": Case(
        body(bz2.compress(b"bomb.example\n" * 400_000)),
        "failed",
        "over the limit of 1048576 bytes",
        "max_body_bytes: 1048576\n",
    ),
    "zip-bomb": Case(
        body(zipped({"feed.csv": b"bomb.example\n" * 400_000})),
        "failed",
        "over the limit of 1048576 bytes",
        "max_body_bytes: 1048576\n",
    ),
    "deflate-bomb-content-encoding": Case(
        content_encoded(zlib.compress(b"bomb.example\n" * 400_000), "deflate"),
        "failed",
        "over the limit of 1048576 bytes",
        "max_body_bytes: 1048576\n",
    ),
    "truncated-gzip-content-encoding": Case(
        content_encoded(GZ[: len(GZ) // 2], "gzip"), "failed", "cut short"
    ),
    "corrupt-deflate-content-encoding": Case(
        content_encoded(b"\x78\x9c" + b"\xff" * 64, "deflate"), "failed", "deflate"
    ),
    "unknown-content-encoding": Case(content_encoded(GOOD.encode(), "br"), "failed", "br"),
    "redirect-without-location": Case(body("", status=302), "failed", "names no Location"),
    "http-429": Case(
        body("slow down", status=429, **{"Retry-After": "3600"}), "failed", "HTTP 429"
    ),
    "crlf-closed-mid-line": Case(closed_mid_line_crlf, "failed", "cut short"),
    "json-error-for-named-column": Case(
        body('{"error": "invalid API key", "status": 401}\n', **{"Content-Type": "text/csv"}),
        "failed",
        "line 1: the body is JSON, not CSV: an error answer?",
        "indicator: url\n",
    ),
    "json-list-for-named-column": Case(
        body('[{"url": "http://a.example/"}]\n'),
        "failed",
        "line 1: the body is JSON, not CSV: an error answer?",
        "indicator: url\n",
    ),
    "html-fragment-for-named-column": Case(
        body("<title>Sign in</title>\n<form action=/login></form>\n"),
        "failed",
        "line 1: the body is HTML, not CSV: an error or login page?",
        "indicator: url\n",
    ),
    "footer-missing-closed-at-line-end": Case(
        closed_before_footer, "failed", "does not end with its footer '# END'", FOOTER, FOOTED
    ),
    "footer-missing-with-length": Case(
        body(GOOD), "failed", "(its last line is 'good-9.example')", FOOTER, FOOTED
    ),
    "footer-cut-inside": Case(
        body(GOOD + "# EN"), "failed", "its last line is '# EN'", FOOTER, FOOTED
    ),
    "footer-declares-more-rows": Case(
        body("".join(GOOD.splitlines(keepends=True)[:6]) + "# END 10 entries\n"),
        "failed",
        "footer '# END 10 entries' declares 10 entries, the body holds 6 rows",
        FOOTER,
        FOOTED,
    ),
    "footer-gzip-cut-before-it": Case(
        body(gzip.compress(GOOD.encode())), "failed", "does not end with its footer", FOOTER, FOOTED
    ),
    "footer-then-blank-lines": Case(body(FOOTED + "\n\n"), "ok", "", FOOTER, FOOTED),
    "duplicates-only": Case(body("dup.example\n" * 50 + GOOD), "ok", ""),
    "defanged-and-bad-mixed": Case(body("evil[.]example\nnonsense\n" + GOOD), "ok", ""),
}


@pytest.fixture
async def broken_server() -> AsyncIterator[tuple[str, dict[str, Handler]]]:
    handlers: dict[str, Handler] = {}

    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handlers[request.match_info["name"]](request)
        except _Partial as partial:
            response = web.StreamResponse(headers={"Content-Length": str(partial.declared)})
            await response.prepare(request)
            await response.write(partial.sent)
            if request.transport is not None:
                request.transport.close()
            return response

    app = web.Application()
    app.router.add_get("/{name}", route)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", handlers
    await runner.cleanup()


@pytest.mark.parametrize("name", sorted(CASES))
async def test_broken_input_changes_nothing(
    name: str,
    broken_server: tuple[str, dict[str, Handler]],
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    case = CASES[name]
    base, handlers = broken_server
    handlers["feed"] = body(GOOD)
    extra = "".join(f"  {line}\n" for line in case.feed.splitlines())
    loaded = make_config(
        emulator.url,
        f"- name: broken\n  type: csv\n  url: {base}/feed\n  supplier: Demo\n{extra}",
        "Demo: {confidence: 1}\n",
    )
    store = open_store(loaded)
    handlers["feed"] = body(case.first)
    if "indicator: url" in case.feed:
        handlers["feed"] = body(
            "# id,url\n" + "".join(f"{i},{v}\n" for i, v in enumerate(GOOD.split()))
        )
    feeds, _ = await sync(loaded, store)
    assert feeds[0].result == "ok"
    before = set(emulator.indicators("Demo"))
    assert len(before) == 10

    handlers["feed"] = case.handler
    emulator.clear_log()
    feeds, suppliers = await asyncio.wait_for(sync(loaded, store), 30)
    report = feeds[0]
    assert (report.feed, report.result) == ("broken", case.result), report.error
    assert case.message in (report.error or ""), report.error
    assert emulator.indicator_requests("DELETE") == [], "nothing is deleted"
    assert before <= set(emulator.indicators("Demo"))
    if case.result != "ok":
        assert emulator.indicator_requests() == []
        assert store.feed("broken", "Demo").indicators == 10
    assert suppliers[0].error is None
