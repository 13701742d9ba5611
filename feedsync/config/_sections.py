"""One reader per section of the configuration, and the values several share.

Feeds are read in ``_feeds``; ``proxy`` and ``exclude`` appear in more than one
section. Each reader takes its mapping as a ``Map`` and returns the frozen value."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from feedsync.config import rules as configrules
from feedsync.config._reader import Context, Map, show
from feedsync.config.exclude import KEYS as EXCLUDE_KEYS
from feedsync.config.exclude import ExcludeConfig, parse_exclude
from feedsync.config.safevalues import ALLOWLIST_KEYS, parse_allowlist
from feedsync.config.settings import (
    BUILTIN_SUPPLIERS,
    PROXY_FORMS,
    CyberTraceConfig,
    ProvenanceConfig,
    ProxyConfig,
    RetryConfig,
    ServerConfig,
    SupplierConfig,
    SupplierDefaults,
)
from feedsync.errors import ConfigError
from feedsync.safety.allowlist import Allowlist

# Tenants become a path segment (/api/1.3/{tenant}/...): no separators, controls or blanks
# at the ends, so that one name cannot address another route.
_TENANT_EDGE = r"[^\s/\\?#%\x00-\x1f\x7f]"
_TENANT_NAME = re.compile(rf"{_TENANT_EDGE}(?:[^/\\?#%\x00-\x1f\x7f]{{0,126}}{_TENANT_EDGE})?")
SUPPLIER_NAME = re.compile(r"[A-Za-z0-9_-]+")
_LISTEN = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})")
_RESERVED_TLDS = frozenset({"invalid", "test", "example"})
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RETENTION_ZERO = (
    "{path}: 0 is sent as written, but CyberTrace's documentation does not say what a"
    " retention of 0 means (never expire, or refused); give minutes to be sure"
)


def exclude(context: Context, path: str, raw: object, inherited: ExcludeConfig) -> ExcludeConfig:
    if isinstance(raw, dict):
        context.accepted[path] = frozenset(EXCLUDE_KEYS)
    return parse_exclude(path, raw, inherited)


def allowlist(context: Context, path: str, raw: object, inherited: Allowlist) -> Allowlist:
    if isinstance(raw, dict):
        context.accepted[path] = frozenset(ALLOWLIST_KEYS)
    return parse_allowlist(path, raw, inherited, context.base)


def cybertrace(m: Map) -> CyberTraceConfig:
    configrules.version_text(m.at("api_version"), m.data.get("api_version"))
    version = m.choice("api_version")
    tenant = m.maybe_text("tenant")
    if tenant is not None:
        if version not in ("1.3", "auto"):
            raise ConfigError(m.at("tenant"), "needs api_version 1.3 or auto (multitenancy)")
        if not _TENANT_NAME.fullmatch(tenant):
            raise ConfigError(
                m.at("tenant"),
                f"{show(tenant)} is not a tenant name: 1-128 characters, none of / \\ ? # %"
                " or control characters, no blanks at either end",
            )
    cert, key = m.file("client_cert"), m.file("client_key")
    if key is not None and cert is None:
        raise ConfigError(m.at("client_key"), "needs client_cert")
    password = m.secret("password")
    retry = m.child("retry", "cybertrace.retry", optional=True)
    initial = retry.number("initial_delay")
    return CyberTraceConfig(
        url=_api_url(m.at("url"), m.text("url")),
        username=m.text("username"),
        password=password,
        api_version=version,
        tenant=tenant,
        verify_tls=m.verify_tls(),
        client_cert=cert,
        client_key=key,
        timeout=m.number("timeout"),
        concurrency=m.integer("concurrency"),
        max_batch_bytes=m.integer("max_batch_bytes"),
        max_batch_indicators=m.integer("max_batch_indicators"),
        tag_weight=m.integer("tag_weight"),
        refresh_fraction=m.number("refresh_fraction"),
        canary=m.flag("canary"),
        canary_domain=_canary_domain(m),
        retry=RetryConfig(
            attempts=retry.integer("attempts"),
            initial_delay=initial,
            max_delay=retry.number("max_delay", f"[{initial:g}, 86400]"),
            initializing=retry.duration("initializing"),
        ),
        proxy=proxy(m),
    )


def _canary_domain(m: Map) -> str:
    domain = m.text("canary_domain")
    labels = domain.split(".")
    # A reserved top-level domain (RFC 2606, 6761): the canary never names a real
    # host, so it never matches traffic and no one else can ever list it.
    if (
        len(domain) > 200
        or labels[-1] not in _RESERVED_TLDS
        or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
    ):
        raise ConfigError(
            m.at("canary_domain"),
            f"{show(domain)} is not a lower-case domain name under a reserved top-level"
            f" domain ({', '.join(sorted(_RESERVED_TLDS))})",
        )
    return domain


def server(m: Map) -> ServerConfig:
    listen = m.text("listen")
    match = _LISTEN.fullmatch(listen)
    port = int(match.group(2) or match.group(4)) if match else -1
    if not match or port > 65535:
        message = f"{show(listen)} is not HOST:PORT (127.0.0.1:9464, [::1]:9464); port <= 65535"
        raise ConfigError(m.at("listen"), message)
    grace = m.number("shutdown_grace")
    return ServerConfig(match.group(1) or match.group(3), port, grace)


def provenance(m: Map) -> ProvenanceConfig:
    names = {key: m.maybe_text(key) for key in ("feeds", "first_seen", "last_seen")}
    chosen = [name for name in names.values() if name is not None]
    if len(set(chosen)) != len(chosen):
        raise ConfigError(m.path, "the provenance field names must differ from each other")
    return ProvenanceConfig(**names)


def supplier_defaults(top: Map) -> SupplierDefaults:
    m = top.child("supplier_defaults", "supplier_defaults", optional=True)
    retention = m.integer("retention")
    if "retention" in m.data and retention == 0:
        m.context.warnings.append(_RETENTION_ZERO.format(path=m.at("retention")))
    return SupplierDefaults(
        confidence=m.integer("confidence"),
        retention=retention,
        vendor=m.maybe_text("vendor") if "vendor" in m.data else m.default("vendor"),
    )


def suppliers(top: Map, used: set[str], defaults: SupplierDefaults) -> dict[str, SupplierConfig]:
    entries = top.child("suppliers", None, optional=True)
    out = {}
    for name in entries.data:
        entries.name(name, SUPPLIER_NAME, key_only=True)
        if name in BUILTIN_SUPPLIERS:
            raise ConfigError(entries.at(name), "built into CyberTrace; it cannot be created")
        if name not in used:
            raise ConfigError(entries.at(name), "no feed uses this supplier")
        m = entries.child(name, "suppliers.*")
        retention = m.integer("retention", defaults.retention)
        if "retention" in m.data and retention == 0:
            m.context.warnings.append(_RETENTION_ZERO.format(path=m.at("retention")))
        out[name] = SupplierConfig(
            name=name,
            confidence=m.integer("confidence", defaults.confidence),
            retention=retention,
            # No vendor given: none is sent, and the supplier's own is left alone.
            vendor=m.maybe_text("vendor"),
        )
    return out


def port_usable(parts: SplitResult) -> bool:
    """Whether a URL's port is absent or in range (``.port`` raises on junk)."""
    try:
        return parts.port != 0
    except ValueError:
        return False


def _api_url(path: str, url: str) -> str:
    parts = urlsplit(url)
    port_ok = port_usable(parts)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(path, "expected http(s)://HOST[:PORT], e.g. https://cybertrace:443")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(path, "expected http(s)://HOST[:PORT], with no path, query or user")
    return url.rstrip("/")


def proxy(m: Map) -> ProxyConfig:
    """``proxy:`` of a feed or of ``cybertrace:``."""
    value = m.data.get("proxy")
    if value is None or value == "environment":
        return ProxyConfig()
    if value == "none":
        return ProxyConfig(mode="none")
    if isinstance(value, str):
        return ProxyConfig(mode="url", url=_proxy_url(m.at("proxy"), value))
    if not isinstance(value, dict):
        raise ConfigError(m.at("proxy"), f"expected {PROXY_FORMS}, got {show(value)}")
    entry = m.child("proxy", f"{m.section}.proxy")
    username, password = entry.maybe_text("username"), entry.secret("password")
    if password is not None and username is None:
        raise ConfigError(entry.at("password"), "needs username (proxy Basic authentication)")
    url = _proxy_url(entry.at("url"), entry.text("url"))
    return ProxyConfig(mode="url", url=url, username=username, password=password)


def _proxy_url(path: str, url: str) -> str:
    parts = urlsplit(url)
    port_ok = port_usable(parts)
    # https:// targets tunnel through CONNECT, so their TLS runs end to end whatever the
    # proxy's own scheme; feedsync speaks plain HTTP to the proxy.
    if parts.scheme.lower() != "http" or not parts.hostname or not port_ok:
        raise ConfigError(path, f"expected {PROXY_FORMS}; a proxy URL is http://HOST:PORT")
    if "@" in parts.netloc:
        # A password in the URL would be written into the file and shown with the URL.
        raise ConfigError(path, "give the proxy's credentials as username and password(_file)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(path, "expected http://HOST:PORT, with no path or query")
    return url.rstrip("/")
