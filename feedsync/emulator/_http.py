"""The HTTP framing every CyberTrace request page prescribes, apart from routing.

Page 198537: every request carries ``Authorization: Basic`` and ``Accept:
application/json``. Each request page with a body: ``Content-Type:
application/json`` ("You can also specify the utf-8 charset type"), a
``Content-Length`` and its maximum body size; pages without one say "This
request has an empty body". Bodies and answers are JSON arrays.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from feedsync.emulator.model import Refusal
from feedsync.emulator.readings import AcceptHeader


def accepts_json(header: str | None, reading: AcceptHeader) -> bool:
    if header is None or not header.strip():
        return reading == "lenient"
    ranges = {part.split(";")[0].strip().lower() for part in header.split(",")}
    allowed = {"application/json"} if reading == "strict" else {"application/json", "*/*"}
    if reading == "lenient":
        allowed.add("application/*")
    return not ranges.isdisjoint(allowed)


def json_content_type(header: str) -> bool:
    media, *params = header.split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in filter(None, (p.strip() for p in params)):
        key, _, value = param.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


async def read_body(request: web.Request, limit: int | None) -> bytes:
    """The body, refused from its headers alone when it breaks the request's rules."""
    if limit is None:
        raise Refusal(400, "This request has an empty body")
    if request.content_length is None:
        raise Refusal(400, "Content-Length is required (chunked bodies are not accepted)")
    if request.content_length > limit:
        raise Refusal(400, f"The request body exceeds the maximum size of {limit} bytes")
    return await request.read()


def parse(body: bytes, content_type: str) -> list[Any]:
    """The body as the JSON array every request takes."""
    if not json_content_type(content_type):
        raise Refusal(400, "Content-Type must be application/json")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refusal(400, f"The body is not valid JSON: {exc}") from None
    if not isinstance(parsed, list):
        raise BodyNotArray(parsed)
    return parsed


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: parsing and applying a 20,000-item body
    makes ~100,000 containers, and each collection they set off walks every stored
    indicator and logged body again (most of the emulator's CPU in a large sync).
    What was made meanwhile is collected at the first allocation after."""
    if not gc.isenabled():  # someone else paused it: theirs to resume
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class BodyNotArray(Refusal):
    """A JSON body that is not an array; keeps what was parsed for the request log."""

    def __init__(self, parsed: object) -> None:
        super().__init__(400, "The body must be a JSON array")
        self.parsed = parsed


def respond(status: int, answer: object) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(answer), content_type="application/json")


def unauthorized() -> web.Response:
    response = respond(401, [{"status": "Unauthorized user"}])
    # Lets a browser ask for the credentials, for the humans the debug endpoints are for.
    response.headers["WWW-Authenticate"] = 'Basic realm="feedsync CyberTrace emulator"'
    return response


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request as the emulator received it; ``Authorization`` reads ``***``."""

    method: str
    path: str
    version: str
    status: int
    body: bytes
    # Whether the body was read as JSON: ``json`` is None where it was not.
    parsed: bool
    headers: Mapping[str, str]

    @property
    def json(self) -> object | None:
        """The body as the emulator parsed it, parsed anew at each read: keeping the
        objects of every logged body cost ~800 bytes per indicator (0.8 GB over a
        bounded log of 1M-row syncs), which the collector walked again and again."""
        return orjson.loads(self.body) if self.parsed else None


def logged(
    request: web.Request, version: str, status: int, body: bytes, parsed: object
) -> LoggedRequest:
    headers = CIMultiDict(request.headers)
    if "Authorization" in headers:
        headers["Authorization"] = "***"
    masked = CIMultiDictProxy(headers)
    # A body that parsed to None was "null": parsing it again gives None too.
    read = parsed is not None
    return LoggedRequest(request.method, request.path, version, status, body, read, masked)
