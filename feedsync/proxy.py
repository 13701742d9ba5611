"""Egress proxies: which proxy, if any, one request goes through.

A route is chosen per request URL, so each redirect hop gets its own (a hop to
a host ``NO_PROXY`` lists goes direct). The environment is read as urllib and
curl read it (urllib.request.getproxies_environment): ``http_proxy``/``https_proxy``
/``no_proxy``, the lowercase name first, ``HTTP_PROXY`` ignored in a CGI
process. aiohttp's ``trust_env`` would
read the same variables but also ``~/.netrc``, sending credentials feedsync's
configuration never named, and would not tell which proxy failed.

The proxy's credentials go in the ``CONNECT`` of an https target (aiohttp's
``proxy_headers``) and in a plain http request, which goes to the proxy
itself; never on a direct hop, so never to an origin server. What a proxy's
failure means (a refused tunnel, an unreachable proxy) is read from aiohttp's
exceptions by feedsync._http.translate, the one module that reads them.
"""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from yarl import URL

from feedsync.config import ProxyConfig
from feedsync.redact import redact_url

__all__ = ["DIRECT", "ProxyUnusable", "Route", "answered", "route"]

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Route:
    """How one request reaches its server: directly, or through ``proxy``
    (an ``http://host:port`` URL without credentials)."""

    proxy: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # Proxy-Authorization
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def tunnel(self, url: str | URL) -> Mapping[str, str] | None:
        """The headers of the ``CONNECT`` for an https ``url`` (aiohttp's ``proxy_headers``)."""
        return self.headers if self.proxy and _scheme(url) == "https" else None

    def forward(self, url: str | URL) -> Mapping[str, str]:
        """The headers to add to a plain http request, which goes to the proxy itself
        (aiohttp adds ``proxy_headers`` to a ``CONNECT`` only)."""
        return self.headers if self.proxy and _scheme(url) == "http" else {}

    @property
    def shown(self) -> str:
        return redact_url(self.proxy) if self.proxy else "none"

    @property
    def via(self) -> str:
        """`` via proxy http://...`` for a message about a request, or nothing."""
        return f" via proxy {self.shown}" if self.proxy else ""


DIRECT = Route()


class ProxyUnusable(ValueError):
    """The environment names a proxy feedsync cannot use; the message names the
    variable (never its value, which may hold a password)."""


def _scheme(url: str | URL) -> str:
    return (url.scheme if isinstance(url, URL) else urlsplit(url).scheme).lower()


def route(setting: ProxyConfig, url: str) -> Route:
    """The route of a request to ``url``; ProxyUnusable for an environment
    variable that is not an http:// proxy URL."""
    if setting.mode == "none":
        return DIRECT
    if setting.mode == "url":
        assert setting.url is not None
        if setting.username is None:
            return Route(setting.url)
        password = setting.password.reveal() if setting.password is not None else ""
        return _authenticated(setting.url, setting.username, password)
    return _from_environment(url)


def _from_environment(url: str) -> Route:
    target = urlsplit(url)
    scheme = target.scheme.lower()
    proxies = urllib.request.getproxies_environment()
    value = proxies.get(scheme)
    host = target.hostname
    port = target.port or DEFAULT_PORTS.get(scheme)
    if not value or not host or _bypassed(host, port, proxies.get("no", "")):
        return DIRECT
    if "://" not in value:
        value = f"http://{value}"  # curl's reading of a bare host:port
    parts = urlsplit(value)
    name = f"{scheme}_proxy"
    try:
        port_ok = parts.port != 0
    except ValueError:
        port_ok = False
    if parts.scheme.lower() != "http" or not parts.hostname or not port_ok:
        raise ProxyUnusable(
            f"the environment's {name} is not an http://HOST:PORT proxy URL"
            " (feedsync speaks plain HTTP to a proxy; https targets tunnel through it)"
        )
    netloc = parts.netloc.rpartition("@")[2]
    proxy = f"http://{netloc}"
    if parts.username is None:
        return Route(proxy)
    user, password = unquote(parts.username), unquote(parts.password or "")
    return _authenticated(proxy, user, password, parts.password or "")


def _authenticated(proxy: str, user: str, password: str, *also_secret: str) -> Route:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    secrets = tuple(s for s in (password, token, *also_secret) if s)
    return Route(proxy, {"Proxy-Authorization": f"Basic {token}"}, secrets)


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` lists the host, as curl and urllib read it: ``*``,
    a name (its subdomains too; a leading dot changes nothing), an IP address,
    each with an optional ``:port``; no CIDR ranges."""
    host = host.lower()
    for item in no_proxy.split(","):
        entry = item.strip().lower()
        if entry == "*":
            return True
        name, wanted = _host_port(entry)
        name = name.lstrip(".")
        if not name or (wanted is not None and wanted != port):
            continue
        if host == name or host.endswith(f".{name}"):
            return True
    return False


def _host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6] or [v6]:port
        name, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        name, _, port = entry.partition(":")
    else:  # a name, or a bare IPv6 address
        name, port = entry, ""
    if not port:
        return name, None
    return (name, int(port)) if port.isdigit() else ("", None)


def answered(route: Route, status: int) -> str | None:
    """What a 407 to a plain http request means: the proxy, not the server,
    wants credentials (feedsync never answers one with a retry)."""
    if route.proxy is None or status != 407:
        return None
    return (
        f"proxy {route.shown} refused the request: HTTP 407 Proxy Authentication Required"
        " (check the proxy's username and password)"
    )
