"""Egress proxies: feeds and CyberTrace through a real forwarding proxy on 127.0.0.1.

http targets go as absolute-URI requests, https ones through CONNECT; the
environment's HTTP(S)_PROXY/NO_PROXY apply unless an endpoint says ``proxy:``;
the proxy's credentials reach the proxy alone and no message or log line.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from conftest import PASSWORD, ConfigFactory, FeedServer, free_port
from forward_proxy import ForwardProxy
from test_mispapi import feed as misp_feed
from test_mispapi import misp  # noqa: F401 -- the fixture, shared
from test_sync import sync
from test_taxii import feed as taxii_feed
from test_taxii import medallion  # noqa: F401 -- the fixture, shared
from test_tls import certificates, tls_emulator  # noqa: F401 -- the fixtures, shared

from feedsync import config, proxy
from feedsync.config import Config, ConfigError, ProxyConfig
from feedsync.cybertrace import CyberTrace
from feedsync.emulator import Emulator
from feedsync.errors import AuthError, FetchError
from feedsync.model import Validators
from feedsync.sources import source_for
from feedsync.store import Store

GOOD = "".join(f"proxied-{i}.example\n" for i in range(5))
PROXY_USER = "egress"
PROXY_SECRET = "Pr0xy-Pa55-w0rd"
SUPPLIER = "Demo: {confidence: 1}\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def feed(url: str, extra: str = "", name: str = "viaproxy") -> str:
    lines = "".join(f"  {line}\n" for line in extra.splitlines())
    return f"- name: {name}\n  type: csv\n  url: {url}\n  supplier: Demo\n{lines}"


def secret_file(tmp_path: Path, value: str = PROXY_SECRET) -> Path:
    path = tmp_path / "proxy.password"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def proxy_headers(seen: dict[str, str]) -> set[str]:
    return {name.lower() for name in seen if name.lower().startswith("proxy-")}


@pytest.fixture
async def forward_proxy() -> AsyncIterator[ForwardProxy]:
    server = await ForwardProxy().start()
    yield server
    await server.stop()


@pytest.fixture
async def guarded_proxy() -> AsyncIterator[ForwardProxy]:
    """A proxy that asks for PROXY_USER/PROXY_SECRET."""
    server = await ForwardProxy(credentials=(PROXY_USER, PROXY_SECRET)).start()
    yield server
    await server.stop()


@pytest.fixture
async def https_origin(certificates: Path) -> AsyncIterator[FeedServer]:  # noqa: F811
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    server = FeedServer()
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server.url = f"https://127.0.0.1:{server.runner.addresses[0][1]}"
    yield server
    await server.stop()


def origin_port(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


async def synced(loaded: Config, store: Store) -> None:
    feeds, suppliers = await sync(loaded, store)
    assert [f.result for f in feeds] == ["ok"], feeds[0].error
    assert suppliers[0].error is None


# Feeds


async def test_http_feed_goes_through_the_configured_proxy(
    feed_server: FeedServer,
    forward_proxy: ForwardProxy,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url = feed_server.set("feed.txt", GOOD)
    loaded = make_config(emulator.url, feed(url, f"proxy: {forward_proxy.url}"), SUPPLIER)
    await synced(loaded, open_store(loaded))
    # An absolute URI: the proxy, not the origin, was asked for the feed.
    assert forward_proxy.targets == [f"GET {url}"]
    assert len(emulator.indicators("Demo")) == 5
    # CyberTrace has no proxy of its own and the environment names none: it went direct.
    assert not any(emulator.url in target for target in forward_proxy.targets)


async def test_https_feed_tunnels_through_connect_from_the_environment(
    https_origin: FeedServer,
    guarded_proxy: ForwardProxy,
    certificates: Path,  # noqa: F811
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(
        "HTTPS_PROXY", guarded_proxy.url.replace("//", f"//{PROXY_USER}:{PROXY_SECRET}@")
    )
    url = https_origin.set("feed.txt", GOOD)
    loaded = make_config(
        emulator.url, feed(url, f"verify_tls: {certificates / 'ca.pem'}"), SUPPLIER
    )
    await synced(loaded, open_store(loaded))
    assert guarded_proxy.targets == [f"CONNECT {origin_port(url)}"]
    assert guarded_proxy.seen[0].headers["Proxy-Authorization"] == basic(PROXY_USER, PROXY_SECRET)
    # TLS ran end to end inside the tunnel: the origin got the request, and no proxy header.
    [(name, headers)] = https_origin.hits
    assert name == "feed.txt"
    assert proxy_headers(headers) == set()
    assert len(emulator.indicators("Demo")) == 5
    captured = capsys.readouterr()
    assert PROXY_SECRET not in captured.out + captured.err


async def test_configured_proxy_credentials_go_to_the_proxy_only(
    https_origin: FeedServer,
    feed_server: FeedServer,
    guarded_proxy: ForwardProxy,
    certificates: Path,  # noqa: F811
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CONNECT carries them; neither the https request inside the tunnel nor a
    redirect hop that goes direct (proxy: none of the same feed cannot, so the
    environment's NO_PROXY) does."""
    url = https_origin.set("feed.txt", GOOD)
    setting = (
        f"proxy: {{url: {guarded_proxy.url}, username: {PROXY_USER},"
        f" password_file: {secret_file(tmp_path)}}}\n"
        f"verify_tls: {certificates / 'ca.pem'}"
    )
    loaded = make_config(emulator.url, feed(url, setting), SUPPLIER)
    assert PROXY_SECRET not in repr(loaded)
    await synced(loaded, open_store(loaded))
    assert guarded_proxy.targets == [f"CONNECT {origin_port(url)}"]
    assert guarded_proxy.seen[0].headers["Proxy-Authorization"] == basic(PROXY_USER, PROXY_SECRET)
    [(_name, headers)] = https_origin.hits
    assert proxy_headers(headers) == set()
    captured = capsys.readouterr()
    assert PROXY_SECRET not in captured.out + captured.err


async def test_proxy_none_goes_direct_whatever_the_environment_says(
    feed_server: FeedServer,
    forward_proxy: ForwardProxy,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    url = feed_server.set("feed.txt", GOOD)
    loaded = make_config(
        emulator.url, feed(url, "proxy: none"), SUPPLIER, cybertrace="proxy: none\n"
    )
    store = open_store(loaded)
    await synced(loaded, store)
    assert forward_proxy.seen == []
    assert [name for name, _headers in feed_server.hits] == ["feed.txt"]
    # Without proxy: none the same environment sends both through the proxy.
    loaded = make_config(
        emulator.url, feed(feed_server.set("other.txt", GOOD + "more.example\n")), SUPPLIER
    )
    await synced(loaded, store)
    assert f"GET {feed_server.url}/other.txt" in forward_proxy.targets
    assert any(t.startswith(f"GET {emulator.url}/api/") for t in forward_proxy.targets)


async def test_no_proxy_is_honoured_for_each_redirect_hop(
    feed_server: FeedServer,
    guarded_proxy: ForwardProxy,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The feed's first host goes through the environment's proxy; its redirect
    leads to a host NO_PROXY lists, which is fetched directly, without the
    proxy's credentials."""
    direct = FeedServer()
    await direct.start()
    try:
        target = direct.set("feed.txt", GOOD)
        start = feed_server.set("start", "", status=302, Location=target)
        with_user = guarded_proxy.url.replace("//", f"//{PROXY_USER}:{PROXY_SECRET}@")
        monkeypatch.setenv("http_proxy", with_user)
        monkeypatch.setenv("no_proxy", f"{origin_port(direct.url)}, {origin_port(emulator.url)}")
        loaded = make_config(emulator.url, feed(start), SUPPLIER)
        await synced(loaded, open_store(loaded))
        assert guarded_proxy.targets == [f"GET {start}"]
        [(name, headers)] = direct.hits
        assert name == "feed.txt"
        assert proxy_headers(headers) == set()
        assert len(emulator.indicators("Demo")) == 5
    finally:
        await direct.stop()


# Refusals


async def fetch_error(loaded: Config, tmp_path: Path) -> str:
    with pytest.raises(FetchError) as caught:
        await source_for(loaded.feeds[0]).fetch(Validators(), tmp_path / "spool")
    return str(caught.value)


async def test_proxy_refusing_credentials_is_a_clear_fetch_error(
    feed_server: FeedServer,
    https_origin: FeedServer,
    guarded_proxy: ForwardProxy,
    certificates: Path,  # noqa: F811
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "Wr0ng-Pr0xy-Secret"
    setting = (
        f"proxy: {{url: {guarded_proxy.url}, username: {PROXY_USER},"
        f" password_file: {secret_file(tmp_path, wrong)}}}\n"
        f"verify_tls: {certificates / 'ca.pem'}"
    )
    plain = make_config(emulator.url, feed(feed_server.set("feed.txt", GOOD), setting), SUPPLIER)
    message = await fetch_error(plain, tmp_path)
    assert message.startswith("feed viaproxy: cannot fetch http://127.0.0.1:")
    assert f"proxy {guarded_proxy.url} refused the request: HTTP 407" in message
    tunnelled = make_config(emulator.url, feed(https_origin.set("f.txt", GOOD), setting), SUPPLIER)
    message = await fetch_error(tunnelled, tmp_path)
    assert message.startswith("feed viaproxy: cannot fetch https://127.0.0.1:")
    assert f"proxy {guarded_proxy.url} refused the tunnel: HTTP 407" in message
    assert "(tried" not in message, "a 407 is not retried"
    assert len(guarded_proxy.seen) == 2

    # Through a whole cycle: the feed fails, its supplier is not touched.
    store = open_store(plain)
    feeds, _suppliers = await sync(plain, store)
    assert feeds[0].result == "failed"
    assert "refused the request: HTTP 407" in (feeds[0].error or "")
    assert emulator.indicator_requests() == []
    captured = capsys.readouterr()
    assert wrong not in captured.out + captured.err
    assert feed_server.hits == [], "the origin never saw a request"


async def test_proxy_password_in_the_environment_is_redacted_from_errors(
    https_origin: FeedServer,
    guarded_proxy: ForwardProxy,
    certificates: Path,  # noqa: F811
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "Env-Wr0ng-Secret"
    monkeypatch.setenv("https_proxy", guarded_proxy.url.replace("//", f"//{PROXY_USER}:{wrong}@"))
    url = https_origin.set("feed.txt", GOOD)
    loaded = make_config(
        emulator.url, feed(url, f"verify_tls: {certificates / 'ca.pem'}"), SUPPLIER
    )
    message = await fetch_error(loaded, tmp_path)
    assert f"proxy {guarded_proxy.url} refused the tunnel: HTTP 407" in message
    feeds, _ = await sync(loaded, open_store(loaded))
    assert feeds[0].result == "failed"
    captured = capsys.readouterr()
    for text in (message, feeds[0].error or "", captured.out, captured.err):
        assert wrong not in text
        assert f"{PROXY_USER}:" not in text


@pytest.mark.parametrize("status", [502, 503])
async def test_proxy_refusing_the_tunnel_names_the_proxy(
    status: int,
    https_origin: FeedServer,
    certificates: Path,  # noqa: F811
    emulator: Emulator,
    make_config: ConfigFactory,
    tmp_path: Path,
) -> None:
    refusing = await ForwardProxy(refuse=status).start()
    try:
        url = https_origin.set("feed.txt", GOOD)
        setting = (
            f"proxy: {refusing.url}\nverify_tls: {certificates / 'ca.pem'}\n"
            "retry: {attempts: 2, initial_delay: 0.01}"
        )
        message = await fetch_error(
            make_config(emulator.url, feed(url, setting), SUPPLIER), tmp_path
        )
        assert message.startswith(f"feed viaproxy: cannot fetch {url} via proxy {refusing.url}:")
        assert f"proxy {refusing.url} refused the tunnel: HTTP {status}" in message
        # A gateway failure may pass: it was tried again.
        assert len(refusing.seen) == 2
        assert "(tried 2 times)" in message
    finally:
        await refusing.stop()


async def test_unreachable_proxy_is_named(
    feed_server: FeedServer, emulator: Emulator, make_config: ConfigFactory, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    setting = f"proxy: {nowhere}\nretry: {{attempts: 1}}"
    url = feed_server.set("feed.txt", GOOD)
    message = await fetch_error(make_config(emulator.url, feed(url, setting), SUPPLIER), tmp_path)
    assert f"cannot reach proxy {nowhere}" in message, message


# CyberTrace


async def test_cybertrace_goes_through_its_proxy(
    guarded_proxy: ForwardProxy,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = tmp_path / "feed.txt"
    body.write_text(GOOD)
    setting = (
        f"proxy: {{url: {guarded_proxy.url}, username: {PROXY_USER},"
        f" password_file: {secret_file(tmp_path)}}}\n"
    )
    loaded = make_config(emulator.url, feed(str(body)), SUPPLIER, cybertrace=setting)
    await synced(loaded, open_store(loaded))
    assert guarded_proxy.targets, "nothing went through the proxy"
    assert all(t.split()[1].startswith(f"{emulator.url}/api/") for t in guarded_proxy.targets)
    assert f"PUT {emulator.url}/api/1.2/suppliers/Demo/indicators" in guarded_proxy.targets
    for seen in guarded_proxy.seen:
        assert seen.headers["Proxy-Authorization"] == basic(PROXY_USER, PROXY_SECRET)
        assert seen.headers["Authorization"].startswith("Basic ")  # CyberTrace's own, as ever
    assert len(emulator.indicators("Demo")) == 5
    captured = capsys.readouterr()
    assert PROXY_SECRET not in captured.out + captured.err


async def test_cybertrace_proxy_refusing_credentials_stops_with_its_name(
    guarded_proxy: ForwardProxy, emulator: Emulator, make_config: ConfigFactory, tmp_path: Path
) -> None:
    wrong = "Wr0ng-CT-Pr0xy"
    setting = (
        f"proxy: {{url: {guarded_proxy.url}, username: {PROXY_USER},"
        f" password_file: {secret_file(tmp_path, wrong)}}}\n"
    )
    loaded = make_config(emulator.url, feed("/dev/null"), SUPPLIER, cybertrace=setting)
    async with CyberTrace(loaded.cybertrace) as client:
        with pytest.raises(AuthError) as caught:
            await client.supplier_names()
    message = str(caught.value)
    assert f"proxy {guarded_proxy.url} refused the request: HTTP 407" in message
    assert wrong not in message
    assert len(guarded_proxy.seen) == 1, "a 407 is not retried"
    assert emulator.indicator_requests() == []


async def test_cybertrace_over_tls_tunnels_without_showing_its_password_to_the_proxy(
    tls_emulator: Emulator,  # noqa: F811
    certificates: Path,  # noqa: F811
    forward_proxy: ForwardProxy,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
    tmp_path: Path,
) -> None:
    """aiohttp copies a session's default headers into the proxy's and sends an
    Authorization among them as Proxy-Authorization: CyberTrace's password must
    not be a session default."""
    body = tmp_path / "feed.txt"
    body.write_text(GOOD)
    setting = f"proxy: {forward_proxy.url}\nverify_tls: {certificates / 'ca.pem'}\n"
    loaded = make_config(tls_emulator.url, feed(str(body)), SUPPLIER, cybertrace=setting)
    await synced(loaded, open_store(loaded))
    tunnel = f"CONNECT {origin_port(tls_emulator.url)}"
    assert forward_proxy.targets and set(forward_proxy.targets) == {tunnel}
    for seen in forward_proxy.seen:
        assert {name.lower() for name in seen.headers} & {
            "authorization",
            "proxy-authorization",
        } == set()
    assert len(tls_emulator.indicators("Demo")) == 5


async def test_misp_api_goes_through_the_proxy_without_its_key_as_proxy_credentials(
    misp: tuple[str, object],  # noqa: F811
    forward_proxy: ForwardProxy,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url, _fake = misp
    feeds = misp_feed(url).replace(
        "supplier: MISP,", f"supplier: MISP, proxy: '{forward_proxy.url}',"
    )
    loaded = make_config(emulator.url, feeds, "MISP: {confidence: 70}\n")
    feeds_report, _ = await sync(loaded, open_store(loaded))
    assert feeds_report[0].result == "ok", feeds_report[0].error
    assert forward_proxy.targets
    assert set(forward_proxy.targets) == {f"POST {url}/attributes/restSearch"}
    assert all(proxy_headers(seen.headers) == set() for seen in forward_proxy.seen)


async def test_taxii_goes_through_the_proxy_without_its_password_as_proxy_credentials(
    medallion: str,  # noqa: F811
    forward_proxy: ForwardProxy,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    feeds = taxii_feed(medallion).replace(
        "supplier: VX,", f"supplier: VX, proxy: '{forward_proxy.url}',"
    )
    loaded = make_config(emulator.url, feeds, "VX: {confidence: 50}\n")
    feeds_report, _ = await sync(loaded, open_store(loaded))
    assert feeds_report[0].result == "ok", feeds_report[0].error
    assert forward_proxy.targets
    assert all(t.startswith(f"GET {medallion}") for t in forward_proxy.targets)
    assert all(proxy_headers(seen.headers) == set() for seen in forward_proxy.seen)


# Configuration and routes


def parsed(proxy_yaml: str, env: dict[str, str] | None = None) -> ProxyConfig:
    text = (
        "cybertrace: {url: 'http://127.0.0.1:1', username: u, password: p}\n"
        "feeds:\n- {name: f, type: csv, url: /dev/null, supplier: FalsePositive,"
        f" proxy: {proxy_yaml}}}\n"
    )
    return config.parse(text, env=env or {}).feeds[0].proxy


def test_proxy_setting_forms() -> None:
    assert parsed("environment") == ProxyConfig() == parsed("null")
    assert parsed("none") == ProxyConfig(mode="none")
    assert parsed("'http://proxy.example:3128'") == ProxyConfig("url", "http://proxy.example:3128")
    with_secret = parsed(
        "{url: 'http://proxy.example:3128', username: u, password: ${PROXY_PW}}",
        {"PROXY_PW": PASSWORD},
    )
    assert (with_secret.url, with_secret.username) == ("http://proxy.example:3128", "u")
    assert with_secret.password is not None and with_secret.password.reveal() == PASSWORD
    assert PASSWORD not in repr(with_secret)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("'socks5://proxy.example:1080'", "a proxy URL is http://HOST:PORT"),
        ("'https://proxy.example:3128'", "a proxy URL is http://HOST:PORT"),
        ("'http://u:secretpw@proxy.example:3128'", "as username and password"),
        ("'http://proxy.example:3128/path'", "no path or query"),
        ("{url: 'http://proxy.example:3128', password: x}", "needs username"),
        ("{username: u}", "required"),
        ("{url: 'http://p.example:1', user: u}", "unknown key"),
        ("5", "expected none, environment"),
        ("false", "expected none, environment"),
    ],
)
def test_bad_proxy_settings_are_refused(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parsed(value)
    assert caught.value.path.startswith("feeds[0].proxy"), caught.value
    assert fragment in str(caught.value)
    assert "secretpw" not in str(caught.value)


def test_cybertrace_takes_a_proxy() -> None:
    text = (
        "cybertrace: {url: 'http://127.0.0.1:1', username: u, password: p, proxy: none}\n"
        "feeds:\n- {name: f, type: csv, url: /dev/null, supplier: FalsePositive}\n"
    )
    loaded = config.parse(text, env={})
    assert loaded.cybertrace.proxy.mode == "none"
    assert loaded.feeds[0].proxy.mode == "environment"


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("*", "https://feeds.example/x", True),
        ("example", "https://feeds.example/x", True),
        (".example", "https://feeds.example/x", True),
        ("feeds.example", "https://feeds.example/x", True),
        ("eeds.example", "https://feeds.example/x", False),
        ("feeds.example:443", "https://feeds.example/x", True),
        ("feeds.example:8443", "https://feeds.example/x", False),
        ("10.0.0.1, feeds.example", "https://FEEDS.example:443/x", True),
        ("[::1]:8080", "http://[::1]:8080/x", True),
        ("::1", "http://[::1]:8080/x", True),
        ("other.example", "https://feeds.example/x", False),
    ],
)
def test_no_proxy_forms(
    no_proxy: str, url: str, bypassed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("http_proxy", "proxy.example:3128")  # no scheme: curl reads http://
    monkeypatch.setenv("no_proxy", no_proxy)
    chosen = proxy.route(ProxyConfig(), url)
    assert chosen.proxy == (None if bypassed else "http://proxy.example:3128")


def test_unusable_environment_proxy_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "socks5://u:envsecret@proxy.example:1080")
    with pytest.raises(proxy.ProxyUnusable) as caught:
        proxy.route(ProxyConfig(), "https://feeds.example/x")
    assert "https_proxy" in str(caught.value)
    assert "envsecret" not in str(caught.value)
