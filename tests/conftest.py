"""Shared fixtures: the emulator on a real socket, configs, sample paths."""

from __future__ import annotations

import asyncio
import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from samples import SAMPLES, sample  # noqa: F401 -- re-exported for tests

from feedsync import cli, config
from feedsync.emulator import Emulator
from feedsync.store import Store

USER = "feedsync"
PASSWORD = "s3cret-Pa55"
# A CA certificate for configs that name a bundle: the loader loads it; its key was
# thrown away, so nothing it could sign is ever trusted.
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBvjCCAWOgAwIBAgIUdydKC3GgU3Pw7gs+XB9lOqlVCaMwCgYIKoZIzj0EAwIw
MzExMC8GA1UEAwwoZmVlZHN5bmMgdGVzdCBDQSAobG9hZGVkLCBuZXZlciB0cnVz
dGVkKTAgFw0yNjEyMDMwODQ5MTNaGA8yMTI2MTEwOTA4NDkxM1owMzExMC8GA1UE
AwwoZmVlZHN5bmMgdGVzdCBDQSAobG9hZGVkLCBuZXZlciB0cnVzdGVkKTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABE+Oertk38Iq7Vpif3EMnC9TIVdmMbIFq5rB
gP1I9wVttQ8WcNNtVNKUGLZF+Ulm5wWu0NUCxXmydXiiQ0z4KQyjUzBRMB0GA1Ud
DgQWBBTom22VpPqT4VLX2DFNNV+waqO0IDAfBgNVHSMEGDAWgBTom22VpPqT4VLX
2DFNNV+waqO0IDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDg
yclwqh7vWDchSzcVHp0BCKniqSshDabYazvT97hK+AIhALFZYKYo90j2Ca7cFZ+F
b99LlScP+Qir/NifW4b/jD/w
-----END CERTIFICATE-----
"""


PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def no_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to 127.0.0.1 only: a proxy the machine's environment names must
    not carry them elsewhere (feedsync honours HTTP(S)_PROXY)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    emu = Emulator(user=USER, password=PASSWORD)
    await emu.start()
    yield emu
    await emu.stop()


class Clock:
    """A clock that stands still until a test moves ``now``."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(clock: Clock) -> AsyncIterator[Emulator]:
    """An emulator on the stopped ``clock``."""
    emulator = Emulator(user=USER, password=PASSWORD, clock=clock)
    await emulator.start()
    yield emulator
    await emulator.stop()


ConfigFactory = Callable[..., config.Config]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Write a feedsync.yaml around the given feeds/suppliers YAML and load it."""

    def factory(
        url: str,
        feeds: str,
        suppliers: str = "",
        cybertrace: str = "",
        api_version: str = "1.2",
    ) -> config.Config:
        text = textwrap.dedent(
            f"""\
            cybertrace:
              url: {url}
              api_version: "{api_version}"
              username: {USER}
              password: ${{CT_PASSWORD}}
              timeout: 10
            """
        )
        text += textwrap.indent(textwrap.dedent(cybertrace), "  ")
        text += f"state:\n  path: {tmp_path / 'state.db'}\n"
        if suppliers:
            text += "suppliers:\n" + textwrap.indent(textwrap.dedent(suppliers), "  ")
        text += "feeds:\n" + textwrap.indent(textwrap.dedent(feeds), "  ")
        path = tmp_path / "feedsync.yaml"
        path.write_text(text)
        return config.load(path, env={"CT_PASSWORD": PASSWORD})

    return factory


@pytest.fixture
def open_store() -> Callable[[config.Config], Store]:
    opened: list[Store] = []

    def factory(loaded: config.Config) -> Store:
        store = Store.open(loaded.state.path)
        opened.append(store)
        return store

    yield factory  # type: ignore[misc]
    for store in opened:
        if store._lock is not None:
            store.close()


class FeedServer:
    """A real HTTP server on 127.0.0.1 serving feed bodies the test sets."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.hits: list[tuple[str, dict[str, str]]] = []
        self.app = web.Application()
        self.app.router.add_get("/{name:.*}", self._serve)
        self.runner = web.AppRunner(self.app)
        self.url = ""

    def set(self, name: str, body: bytes | str, status: int = 200, **headers: str) -> str:
        data = body.encode() if isinstance(body, str) else body
        self.bodies[name] = (status, data, headers)
        return f"{self.url}/{name}"

    async def _serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits.append((name, dict(request.headers)))
        if name not in self.bodies:
            return web.Response(status=404, text="not found")
        status, body, headers = self.bodies[name]
        etag = headers.get("ETag")
        if etag and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(status=status, body=body, headers=headers)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    server = FeedServer()
    await server.start()
    yield server
    await server.stop()


async def run_cli(*argv: str) -> int:
    """``feedsync ARGV``; the CLI runs its own event loop, so off the test's loop."""
    return await asyncio.to_thread(cli.main, list(argv))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
