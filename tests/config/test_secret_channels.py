"""Every secret kind stays out of every output channel and every file feedsync writes.

The servers here are hostile: they echo what they were sent into their error
bodies, and a redirect loop carries the query string, so a secret can only be
kept out by feedsync itself redacting what it shows and stores.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from conftest import PASSWORD, free_port
from test_daemon import eventually, get

from feedsync.emulator import Emulator

FEED_PASSWORD = "feed-Pa55-77"
AUTH_KEY = "abusech-KEY-4242"
QUERY_KEY = "query-KEY-9999"
USERINFO_PASSWORD = "userinfo-Pa55-5150"
MISP_KEY = "misp-KEY-31337"
TAXII_PASSWORD = "taxii-Pa55-2718"
ENV = {
    "CT_PASSWORD": PASSWORD,
    "FEED_PASSWORD": FEED_PASSWORD,
    "AUTH_KEY": AUTH_KEY,
    "QUERY_KEY": QUERY_KEY,
    "USERINFO_PASSWORD": USERINFO_PASSWORD,
    "MISP_KEY": MISP_KEY,
    "TAXII_PASSWORD": TAXII_PASSWORD,
}
SECRETS = tuple(ENV.values())

CONFIG = """\
cybertrace:
  url: {ct}
  username: feedsync
  password: ${{CT_PASSWORD}}
  retry: {{attempts: 1}}
state:
  path: {state}
server:
  listen: 127.0.0.1:{port}
suppliers:
  Demo: {{confidence: 5}}
feeds:
  - name: private
    type: csv
    url: {feeds}/good.txt
    supplier: Demo
    username: reader
    password: ${{FEED_PASSWORD}}
    headers: {{Auth-Key: "${{AUTH_KEY}}"}}
    schedule: 2s
    schedule_min_override: true
  - name: echoed
    type: csv
    url: {feeds}/echo
    supplier: Demo
    headers: {{Auth-Key: "${{AUTH_KEY}}"}}
    schedule: 2s
    schedule_min_override: true
  - name: looping
    type: csv
    url: {feeds}/loop?key=${{QUERY_KEY}}
    supplier: Demo
    schedule: 2s
    schedule_min_override: true
  - name: userinfo
    type: csv
    url: http://reader:${{USERINFO_PASSWORD}}@{feeds_host}/echo-userinfo.txt?key=${{QUERY_KEY}}
    supplier: Demo
    schedule: 2s
    schedule_min_override: true
  - name: misp
    type: misp
    url: {feeds}/misp
    api_key: ${{MISP_KEY}}
    supplier: Demo
    schedule: 2s
    schedule_min_override: true
  - name: taxii
    type: taxii
    url: {feeds}/taxii/api1/
    collection: c
    username: reader
    password: ${{TAXII_PASSWORD}}
    supplier: Demo
    schedule: 2s
    schedule_min_override: true
"""


async def _echo(request: web.Request) -> web.StreamResponse:
    """A server whose errors repeat the request: its URL, query and headers."""
    name = request.match_info["name"]
    if name == "good.txt":
        return web.Response(text="a.example\nb.example\n")
    if name == "loop":
        raise web.HTTPFound(str(request.url))
    echoed = f"{request.method} {request.url}\n" + "".join(
        f"{k}: {v}\n" for k, v in request.headers.items()
    )
    return web.Response(status=500, text=echoed, content_type="text/plain")


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{name:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def _cli(*argv: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedsync.cli",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != "feedsync.yaml"]


@pytest.mark.slow
async def test_no_secret_in_any_channel_or_file(
    tmp_path: Path, emulator: Emulator, hostile: str
) -> None:
    port = free_port()
    config = tmp_path / "feedsync.yaml"
    config.write_text(
        CONFIG.format(
            ct=emulator.url,
            state=tmp_path / "state" / "s.db",
            port=port,
            feeds=f"http://{hostile}",
            feeds_host=hostile,
        )
    )
    env = {**os.environ, **ENV}
    outputs: list[str] = []
    for argv in (
        ["--log-level", "debug", "sync", "-c", str(config), "--dry-run"],
        ["--log-level", "debug", "sync", "-c", str(config)],
        ["--log-level", "debug", "--log-format", "json", "sync", "-c", str(config)],
        ["status", "-c", str(config), "--json"],
        ["status", "-c", str(config)],
        ["check", "-c", str(config)],
        ["--log-level", "debug", "sync", "-c", str(config), "--resync"],
    ):
        code, out = await _cli(*argv, env=env)
        outputs.append(f"$ feedsync {' '.join(argv)} -> {code}\n{out}")
    code, out = await _cli(
        "--log-level", "debug", "sync", "-c", str(config), env={**env, "CT_PASSWORD": "wrong"}
    )
    assert code == 1
    outputs.append(out)

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedsync.cli",
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "run",
        "-c",
        str(config),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _listening(port), 20)
        for path in ("/status", "/metrics", "/readyz", "/healthz"):
            status, body = await get(base + path)
            outputs.append(f"GET {path} -> {status}\n{body.decode(errors='replace')}")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    outputs.append((await process.stderr.read()).decode(errors="replace"))

    text = "\n".join(outputs)
    # The runs did happen, and failed where the hostile server made them fail.
    assert "redirect loop" in text and "HTTP 500" in text
    assert {"a.example", "b.example"} <= set(emulator.indicators("Demo"))
    status = orjson.loads(next(o for o in outputs if o.startswith("GET /status")).split("\n", 1)[1])
    assert {f["feed"] for f in status["feeds"]} >= {"private", "looping", "userinfo"}
    for secret in SECRETS:
        assert secret not in text, f"{secret} shown"
    written = _files(tmp_path)
    assert any(p.name == "s.db" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} stored in {path}"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
