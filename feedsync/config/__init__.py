"""The configuration: one YAML file loaded into frozen, validated objects.

Every error names its key path (``feeds[2].schedule: ...``). ``${VAR}`` in a
string value is read from the environment (``${VAR:-default}``, ``$$`` for a
literal ``$``); ``password_file``/``api_key_file`` read a secret from a file
(``feedsync.config.secretfile``: a small regular file, no link).
Secrets are wrapped in ``Secret`` so no repr, log line or message shows them;
``Config.warnings`` names those that others can read.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import yaml

from feedsync import paths
from feedsync.config import rules as configrules
from feedsync.config import schedule as _schedule
from feedsync.config import secretfile
from feedsync.config.exclude import KEYS as EXCLUDE_KEYS
from feedsync.config.exclude import ExcludeConfig, parse_exclude
from feedsync.config.safevalues import ALLOWLIST_KEYS, parse_allowlist, parse_canaries
from feedsync.errors import ConfigError
from feedsync.safety.allowlist import Allowlist
from feedsync.safety.poison import DEFAULT_CANARIES

Schedule = _schedule.Schedule
parse_duration = _schedule.parse_duration

DEFAULT_PATH = "/etc/feedsync/feedsync.yaml"
DEFAULT_MAX_BODY = 4 << 30
HOURLY = Schedule("1h", 3600.0, None)
BUILTIN_SUPPLIERS = frozenset({"FalsePositive", "InternalTI"})
API_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "auto")
# One row per source type: the keys it adds to the common ones, and those it requires
# (a secret's *_file counts). A new source type adds its row here and its reader module.
SOURCE_TYPES: Mapping[str, tuple[frozenset[str], tuple[str, ...]]] = MappingProxyType(
    {
        "csv": (
            frozenset({"indicator", "context", "tags_field", "comment", "delimiter", "header"})
            | {"encoding", "footer", "footer_count"},
            (),
        ),
        "misp": (
            frozenset({"api_key", "api_key_file", "filters", "full_pull", "page_size"}),
            ("api_key",),
        ),
        "misp_feed": (frozenset(), ()),
        "taxii": (
            frozenset({"collection", "api_key", "api_key_file", "full_pull"}),
            ("collection",),
        ),
    }
)
FEED_TYPES = tuple(SOURCE_TYPES)
_SUPPLIER_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Tenants become a path segment (/api/1.3/{tenant}/...): no separators, controls or blanks
# at the ends, so that one name cannot address another route.
_TENANT_EDGE = r"[^\s/\\?#%\x00-\x1f\x7f]"
_TENANT_NAME = re.compile(rf"{_TENANT_EDGE}(?:[^/\\?#%\x00-\x1f\x7f]{{0,126}}{_TENANT_EDGE})?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LISTEN = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})")
_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|(\{))")
# "${VAR}" is no plain YAML scalar in a flow mapping ({password: ${P}}): the parser
# sees its braces as private-use characters, which _expand turns back.
_BRACED = re.compile(r"\$\{([^{}\n]*)\}")
_HIDDEN = str.maketrans("\ue000\ue001", "{}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SSL_WHERE = re.compile(r"\s*\(_ssl\.c:\d+\)$")
_INTERVAL = re.compile(r"([\[(])(.+), (.+)([\])])")
# Every number has a finite range, written once where the loader reads it (these
# are the shared ones): what the scheduler, asyncio, datetime and CyberTrace take.
# Values past them used to pass `check` and crash at start (APScheduler's
# OverflowError) or on SIGHUP (every feed unscheduled).
SCHEDULE_RANGE = "[1s, 366d]"
PULL_RANGE = "(0, 366d]"  # full_pull
TIMEOUT_RANGE = "(0, 86400]"  # seconds: timeouts are plain numbers
RETENTION_RANGE = "[0, 2147483647]"  # minutes; CyberTrace's int32, year ~6100 from now
ATTEMPTS_RANGE = "[1, 100]"
MAX_BODY_RANGE = "[1, 1099511627776]"  # 1 TiB
_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
_KINDS |= {dict: "a mapping", type(None): "nothing"}
_N = TypeVar("_N", int, float)


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value; shows as ``***`` everywhere but ``reveal()``."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    # 425 "still initializing" lasts minutes after a CyberTrace restart: its own budget.
    initializing: float = 900.0


ProxyMode = Literal["environment", "none", "url"]
PROXY_FORMS = "none, environment, http://HOST:PORT, or {url: ..., username: ..., password: ...}"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """How an endpoint is reached: through the proxy the environment names
    (``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY`` lists the host; the
    default), directly (``none``), or through ``url``, with Basic credentials
    that go to the proxy alone."""

    mode: ProxyMode = "environment"
    url: str | None = None
    username: str | None = None
    password: Secret | None = None


@dataclass(frozen=True, slots=True)
class FeedRetryConfig:
    """Within one cycle, how often a feed's request that failed in a way that may
    pass (connection, timeout, 408/425/429, 5xx) is tried; the feed's ``timeout``
    still bounds the whole fetch."""

    attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 30.0


@dataclass(frozen=True, slots=True)
class CyberTraceConfig:
    url: str
    username: str
    password: Secret | None  # None only from load(secrets=False)
    api_version: str = "1.2"
    tenant: str | None = None
    verify_tls: bool | str = True
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = 300.0
    concurrency: int = 2
    max_batch_bytes: int = 16777216
    max_batch_indicators: int = 20000
    tag_weight: int = 0
    refresh_fraction: float = 0.5  # re-PUT unchanged indicators after this share of retention
    canary: bool = True  # restore detection (canary.py)
    canary_domain: str = "canary.feedsync.invalid"
    retry: RetryConfig = RetryConfig()
    proxy: ProxyConfig = ProxyConfig()


@dataclass(frozen=True, slots=True)
class StateConfig:
    path: str = "/var/lib/feedsync/state.db"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9464
    shutdown_grace: float = 30.0


@dataclass(frozen=True, slots=True)
class SupplierDefaults:
    """How feedsync creates a supplier that has no entry under ``suppliers:``.

    Retention 10080 minutes is CyberTrace's 7-day default for feeds.
    """

    confidence: int = 50
    retention: int = 10080
    vendor: str | None = "feedsync"


@dataclass(frozen=True, slots=True)
class SupplierConfig:
    name: str
    confidence: int
    retention: int = 10080
    vendor: str | None = None
    # False for settings taken from supplier_defaults: feedsync creates the supplier
    # with them but leaves an existing supplier's settings as the operator made them.
    explicit: bool = True


@dataclass(frozen=True, slots=True)
class FeedConfig:
    name: str
    type: str
    url: str
    supplier: str
    schedule: Schedule = HOURLY
    indicator: str | int | None = None
    context: tuple[tuple[str, str | int], ...] = ()  # csv: name, column (name or 1-based)
    tags: tuple[str, ...] = ()
    tags_field: str | int | None = None  # csv: a column name or 1-based index
    max_delete_ratio: float = 0.5
    comment: str = "#"
    delimiter: str = ","
    header: bool | None = None
    username: str | None = None
    password: Secret | None = None
    api_key: Secret | None = None
    headers: tuple[tuple[str, Secret], ...] = ()
    verify_tls: bool | str = True
    timeout: float = 300.0
    filters: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    collection: str | None = None
    unmark_detections: bool = False
    enabled: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY
    full_pull: float = 86400.0  # misp, taxii: seconds between full pulls (catch hard deletes)
    expect_change_within: float | None = None  # seconds; longer unchanged: upstream stale
    page_size: int = 1000  # misp: attributes per restSearch page
    encoding: str = "utf-8"  # csv: the codec of the body's bytes (see _encoding)
    footer: str | None = None  # csv: what the body's last line starts with (see _footer)
    footer_count: bool = True  # csv: a number in the footer is the count of data rows
    proxy: ProxyConfig = ProxyConfig()
    retry: FeedRetryConfig = FeedRetryConfig()
    schedule_min_override: bool = False  # allow a schedule under 30 s (configrules)
    exclude: ExcludeConfig = field(default_factory=ExcludeConfig)  # see config_exclude.py
    # Networks up to this IPv4 prefix length (its count of addresses for IPv6) become
    # their addresses; wider ones are refused, 0 refuses every network.
    expand_cidr: int = 24
    allowlist: Allowlist = field(default_factory=Allowlist)  # top level + feed (safevalues)
    canaries: tuple[str, ...] = DEFAULT_CANARIES  # the poison guard's (safety/poison.py)
    max_growth_ratio: float = 3.0  # the poison guard: more added than this times the feed

    def __repr__(self) -> str:
        # A URL's query or user part often holds a key: show neither.
        shown = {f.name: getattr(self, f.name) for f in fields(self)} | {"url": _redact(self.url)}
        return f"FeedConfig({', '.join(f'{name}={value!r}' for name, value in shown.items())})"


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    cybertrace: CyberTraceConfig
    state: StateConfig
    server: ServerConfig
    suppliers: Mapping[str, SupplierConfig]
    feeds: tuple[FeedConfig, ...]
    warnings: tuple[str, ...] = ()  # valid but unsafe (secrets others can read): log them
    supplier_defaults: SupplierDefaults = SupplierDefaults()

    def supplier_settings(self, name: str) -> SupplierConfig:
        """The settings feedsync creates supplier ``name`` with: its ``suppliers:``
        entry, else ``supplier_defaults``."""
        explicit = self.suppliers.get(name)
        if explicit is not None:
            return explicit
        defaults = self.supplier_defaults
        return SupplierConfig(
            name, defaults.confidence, defaults.retention, defaults.vendor, explicit=False
        )

    def feed(self, name: str) -> FeedConfig:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)

    def feeds_of(self, supplier: str) -> tuple[FeedConfig, ...]:
        return tuple(f for f in self.feeds if f.enabled and f.supplier == supplier)


def default_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("FEEDSYNC_CONFIG") or DEFAULT_PATH


def load(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, secrets: bool = True
) -> Config:
    """The configuration at ``path``. ``secrets=False`` leaves every secret whose
    variable is unset, and every secret file, unread (None): for commands that
    never connect (``status``), run by someone who is not given the secrets."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        mode = Path(path).stat().st_mode
    except OSError as exc:
        raise ConfigError("", f"cannot read {os.fspath(path)}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"cannot read {os.fspath(path)}: not UTF-8 text") from exc
    base = os.path.dirname(os.path.abspath(path))
    env = os.environ if env is None else env
    return _parse(text, os.fspath(path), env, base, mode, secrets=secrets)


def parse(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    return _parse(text, source, os.environ if env is None else env, base_dir or os.getcwd(), None)


def accepted_keys(
    text: str, env: Mapping[str, str], base_dir: str
) -> tuple[Config, Mapping[str, frozenset[str]]]:
    """``text`` loaded, with the keys the loader allowed in each of its mappings, by key
    path (``feeds[0].retry``): what docs, example and schema are held against."""
    data = _expand(_read_yaml(text, "<keys>"), "", env, set(), None)
    context = _Context(Path(os.path.abspath(base_dir)), "<keys>", None, set())
    loaded = _sections(data, "<keys>", context)
    return loaded, MappingProxyType(context.accepted)


def _parse(
    text: str,
    source: str,
    env: Mapping[str, str],
    base_dir: str,
    mode: int | None,
    *,
    secrets: bool = True,
) -> Config:
    unset: dict[str, str] | None = None if secrets else {}
    literal: set[str] = set()
    data = _expand(_read_yaml(text, source), "", env, literal, unset)
    context = _Context(Path(os.path.abspath(base_dir)), source, mode, literal, unset=unset)
    try:
        return _sections(data, source, context)
    except ConfigError as exc:
        # A key read empty because its variable is unset: say so, not "must not be empty".
        if unset and exc.path in unset:
            raise ConfigError(exc.path, unset[exc.path]) from None
        raise


def _sections(data: dict[Any, Any], source: str, context: _Context) -> Config:
    sections = (
        "cybertrace", "state", "server", "supplier_defaults", "suppliers", "feeds", "exclude",
        "allowlist", "canaries",
    )
    top = _Map("", data, sections, context)
    context.exclude = _exclude(context, "exclude", data.get("exclude"), ExcludeConfig())
    context.allowlist = _allowlist(context, "allowlist", data.get("allowlist"), Allowlist())
    context.canaries = parse_canaries("canaries", data.get("canaries"), DEFAULT_CANARIES)
    cybertrace = _cybertrace(top.child("cybertrace", _keys(CyberTraceConfig, "password_file")))
    state = top.child("state", _keys(StateConfig), optional=True)
    server = _server(top.child("server", ("listen", "shutdown_grace"), optional=True))
    feeds = _feeds(top)
    configrules.supplier_typos(
        top.data.get("suppliers"), feeds, BUILTIN_SUPPLIERS, _SUPPLIER_NAME
    )
    defaults = _supplier_defaults(top)
    return Config(
        path=source,
        cybertrace=cybertrace,
        state=StateConfig(_resolve(context.base, state.text("path", StateConfig().path))),
        server=server,
        suppliers=MappingProxyType(_suppliers(top, {feed.supplier for feed in feeds}, defaults)),
        feeds=feeds,
        warnings=tuple(context.warnings),
        supplier_defaults=defaults,
    )


# YAML and the environment


class _Loader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a config never needs them, and a few
    hundred bytes of nested aliases expand into gigabytes ("billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (&name, *name) are not allowed in a feedsync"
                " config; write the value out, or quote a string that starts with & or *",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def _read_yaml(text: str, source: str) -> dict[Any, Any]:
    loader = _Loader(_BRACED.sub("$\ue000\\1\ue001", text))
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("", f"{source}: the file is empty; expected cybertrace: and feeds:")
        _refuse_duplicate_keys(node, "")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        where = _where(source, exc.problem_mark)
        context = (
            f" ({exc.context} at line {exc.context_mark.line + 1})" if exc.context_mark else ""
        )
        hint = configrules.yaml_hint(exc.problem or "", exc.context or "")
        raise ConfigError("", f"{where}: {exc.problem}{context}; hint: {hint}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{source}: {exc}") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        message = f"expected a mapping of settings, got {_kind(data)}"
        raise ConfigError("", f"{_where(source, node.start_mark)}: {message}")
    return data


def _refuse_duplicate_keys(node: yaml.Node, path: str) -> None:
    # PyYAML silently keeps the last of two equal keys; a config must not lose one that way.
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{index}]")
    if not isinstance(node, yaml.MappingNode):
        return
    first: dict[tuple[str, str], yaml.Node] = {}
    for key, value in node.value:
        here = _join(path, key.value if isinstance(key, yaml.ScalarNode) else "?")
        if isinstance(key, yaml.ScalarNode):
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                lines = f"lines {earlier.start_mark.line + 1} and {key.start_mark.line + 1}"
                raise ConfigError(here, f"key given twice ({lines})")
        _refuse_duplicate_keys(value, here)


def _where(source: str, mark: yaml.Mark | None) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source


def _expand(
    value: Any, path: str, env: Mapping[str, str], literal: set[str], unset: dict[str, str] | None
) -> Any:
    """``value`` with variables replaced; ``literal`` gets the paths of strings without any.
    With ``unset`` given, an unset variable reads as "" and ``unset`` gets its path."""
    if isinstance(value, str):
        value = value.translate(_HIDDEN)
        expanded = _VARIABLE.sub(lambda match: _variable(match, path, env, unset), value)
        if not any(match.group(2) for match in _VARIABLE.finditer(value)):
            literal.add(path)
        return expanded
    if isinstance(value, dict):
        value = {k.translate(_HIDDEN) if isinstance(k, str) else k: v for k, v in value.items()}
        return {k: _expand(item, _join(path, k), env, literal, unset) for k, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, f"{path}[{i}]", env, literal, unset) for i, item in enumerate(value)]
    return value


def _variable(
    match: re.Match[str], path: str, env: Mapping[str, str], unset: dict[str, str] | None
) -> str:
    dollar, name, default, malformed = match.groups()
    if dollar:
        return "$"
    if malformed:
        # The text may be a secret: say what is wrong without showing it.
        raise ConfigError(path, "bad ${...}: write ${NAME}, ${NAME:-default}, or $$ for a $")
    # As in the shell, ${NAME:-default} also replaces a variable set to "".
    if default is not None and not env.get(name):
        return default.replace("$$", "$")
    if name not in env:
        hint = _UNSET_HINTS.get(name, "")
        if unset is not None:
            unset[path] = f"environment variable {name} is not set{hint}"
            return ""
        raise ConfigError(path, f"environment variable {name} is not set{hint}")
    return env[name]


_UNSET_HINTS = {
    # The unit's secrets: `feedsync check` run by hand has no LoadCredential= of its own.
    "CREDENTIALS_DIRECTORY": " (systemd sets it in a unit with LoadCredential=; outside the"
    " unit, set it to the directory of the credential files, as in"
    " CREDENTIALS_DIRECTORY=/etc/feedsync/credentials feedsync check)",
}


# Sections


def _cybertrace(m: _Map) -> CyberTraceConfig:
    configrules.version_text(m.at("api_version"), m.data.get("api_version"))
    version = m.choice("api_version", API_VERSIONS, "1.2")
    tenant = m.maybe_text("tenant")
    if tenant is not None:
        if version not in ("1.3", "auto"):
            raise ConfigError(m.at("tenant"), "needs api_version 1.3 or auto (multitenancy)")
        if not _TENANT_NAME.fullmatch(tenant):
            raise ConfigError(
                m.at("tenant"),
                f"{_show(tenant)} is not a tenant name: 1-128 characters, none of / \\ ? # %"
                " or control characters, no blanks at either end",
            )
    cert, key = m.file("client_cert"), m.file("client_key")
    if key is not None and cert is None:
        raise ConfigError(m.at("client_key"), "needs client_cert")
    password = m.secret("password", required=True)
    retry = m.child("retry", _keys(RetryConfig), optional=True)
    initial = retry.number("initial_delay", 1.0, "(0, 3600]")
    return CyberTraceConfig(
        url=_api_url(m.at("url"), m.text("url")),
        username=m.text("username"),
        password=password,
        api_version=version,
        tenant=tenant,
        verify_tls=m.verify_tls(),
        client_cert=cert,
        client_key=key,
        timeout=m.number("timeout", 300.0, TIMEOUT_RANGE),
        concurrency=m.integer("concurrency", 2, "[1, 8]"),
        max_batch_bytes=m.integer("max_batch_bytes", 16777216, "[1024, 134217728]"),
        max_batch_indicators=m.integer("max_batch_indicators", 20000, "[1, 10000000]"),
        tag_weight=m.integer("tag_weight", 0, "[0, 5]"),
        refresh_fraction=m.number("refresh_fraction", 0.5, "(0, 1)"),
        canary=m.flag("canary", True),
        canary_domain=_canary_domain(m),
        retry=RetryConfig(
            attempts=retry.integer("attempts", 5, ATTEMPTS_RANGE),
            initial_delay=initial,
            max_delay=retry.number("max_delay", 60.0, f"[{initial:g}, 86400]"),
            initializing=retry.duration("initializing", 900.0, "(0, 1d]"),
        ),
        proxy=_proxy(m),
    )


def _canary_domain(m: _Map) -> str:
    domain = m.text("canary_domain", "canary.feedsync.invalid")
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
            f"{_show(domain)} is not a lower-case domain name under a reserved top-level"
            f" domain ({', '.join(sorted(_RESERVED_TLDS))})",
        )
    return domain


_RESERVED_TLDS = frozenset({"invalid", "test", "example"})
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _server(m: _Map) -> ServerConfig:
    listen = m.text("listen", "127.0.0.1:9464")
    match = _LISTEN.fullmatch(listen)
    port = int(match.group(2) or match.group(4)) if match else -1
    if not match or port > 65535:
        message = f"{_show(listen)} is not HOST:PORT (127.0.0.1:9464, [::1]:9464); port <= 65535"
        raise ConfigError(m.at("listen"), message)
    grace = m.number("shutdown_grace", 30.0, "[0, 86400]")
    return ServerConfig(match.group(1) or match.group(3), port, grace)


def _supplier_defaults(top: _Map) -> SupplierDefaults:
    m = top.child("supplier_defaults", _keys(SupplierDefaults), optional=True)
    base = SupplierDefaults()
    retention = m.integer("retention", base.retention, RETENTION_RANGE)
    if "retention" in m.data and retention == 0:
        m.context.warnings.append(_RETENTION_ZERO.format(path=m.at("retention")))
    return SupplierDefaults(
        confidence=m.integer("confidence", base.confidence, "[0, 100]"),
        retention=retention,
        vendor=m.maybe_text("vendor") if "vendor" in m.data else base.vendor,
    )


_RETENTION_ZERO = (
    "{path}: 0 is sent as written, but CyberTrace's documentation does not say what a"
    " retention of 0 means (never expire, or refused); give minutes to be sure"
)


def _suppliers(top: _Map, used: set[str], defaults: SupplierDefaults) -> dict[str, SupplierConfig]:
    entries = top.child("suppliers", None, optional=True)
    out = {}
    for name in entries.data:
        entries.name(name, _SUPPLIER_NAME, key_only=True)
        if name in BUILTIN_SUPPLIERS:
            raise ConfigError(entries.at(name), "built into CyberTrace; it cannot be created")
        if name not in used:
            raise ConfigError(entries.at(name), "no feed uses this supplier")
        m = entries.child(name, _keys(SupplierConfig) - {"name", "explicit"})
        retention = m.integer("retention", defaults.retention, RETENTION_RANGE)
        if "retention" in m.data and retention == 0:
            m.context.warnings.append(_RETENTION_ZERO.format(path=m.at("retention")))
        out[name] = SupplierConfig(
            name=name,
            confidence=m.integer("confidence", defaults.confidence, "[0, 100]"),
            retention=retention,
            # No vendor given: none is sent, and the supplier's own is left alone.
            vendor=m.maybe_text("vendor"),
        )
    return out


def _feeds(top: _Map) -> tuple[FeedConfig, ...]:
    raw = top.data.get("feeds")
    if not isinstance(raw, list) or not raw:
        got = "an empty list" if raw == [] else _kind(raw)
        raise ConfigError("feeds", f"required: a non-empty list of feeds, got {got}")
    feeds: list[FeedConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        feed = _feed(f"feeds[{index}]", item, top.context)
        if feed.name in seen:
            message = f"duplicate feed name {_show(feed.name)} (also feeds[{seen[feed.name]}])"
            raise ConfigError(f"feeds[{index}].name", message)
        seen[feed.name] = index
        feeds.append(feed)
    return tuple(feeds)


def _feed(path: str, raw: object, context: _Context) -> FeedConfig:
    kind = _Map(path, raw, None, context).choice("type", FEED_TYPES)
    own, required = SOURCE_TYPES[kind]
    # The common keys are the feed fields that no source type claims as its own.
    claimed = frozenset().union(*(keys for keys, _required in SOURCE_TYPES.values()))
    m = _Map(path, raw, _keys(FeedConfig, "password_file") - claimed | own, context)
    for key in required:
        if m.data.get(key) is None and m.data.get(f"{key}_file") is None:
            raise ConfigError(m.at(key), f"required for a {kind} feed")
    supplier = m.name("supplier", _SUPPLIER_NAME)
    username, password = m.maybe_text("username"), m.secret("password")
    if password is not None and username is None:
        raise ConfigError(m.at("password"), "needs username (HTTP basic authentication)")
    unmark = m.flag("unmark_detections", False)
    if unmark and supplier != "FalsePositive":
        raise ConfigError(m.at("unmark_detections"), "only applies to the FalsePositive supplier")
    delimiter = m.text("delimiter", ",")
    if len(delimiter) != 1:
        raise ConfigError(m.at("delimiter"), f"{_show(delimiter)} is not one character")
    return FeedConfig(
        name=m.name("name", paths.FEED_NAME, paths.FEED_NAME_RULE),
        type=kind,
        url=_source_url(m.at("url"), m.text("url"), context.base),
        supplier=supplier,
        schedule=m.schedule(),
        indicator=m.indicator(),
        context=configrules.columns(m.at("context"), m.child("context", None, optional=True).data),
        tags=configrules.tags(m.at("tags"), m.strings("tags")),
        tags_field=configrules.column(m.at("tags_field"), m.data.get("tags_field")),
        max_delete_ratio=m.number("max_delete_ratio", 0.5, "(0, 1]"),
        comment=m.text("comment", "#"),
        delimiter=delimiter,
        header=m.maybe_flag("header"),
        username=username,
        password=password,
        api_key=m.secret("api_key"),
        headers=m.headers(),
        verify_tls=m.verify_tls(),
        timeout=m.number("timeout", 300.0, TIMEOUT_RANGE),
        filters=MappingProxyType(m.child("filters", None, optional=True).data),
        collection=m.maybe_text("collection"),
        unmark_detections=unmark,
        enabled=m.flag("enabled", True),
        max_body_bytes=m.integer("max_body_bytes", DEFAULT_MAX_BODY, MAX_BODY_RANGE),
        full_pull=m.duration("full_pull", 86400.0, PULL_RANGE),
        expect_change_within=(
            None
            if m.data.get("expect_change_within") is None
            else m.duration("expect_change_within", 0.0, PULL_RANGE)
        ),
        page_size=m.integer("page_size", 1000, "[1, 100000]"),
        encoding=_encoding(m),
        footer=_footer(m),
        footer_count=m.flag("footer_count", True),
        proxy=_proxy(m),
        retry=_feed_retry(m),
        schedule_min_override=m.flag(configrules.SCHEDULE_OVERRIDE, False),
        exclude=_exclude(context, m.at("exclude"), m.data.get("exclude"), context.exclude),
        expand_cidr=m.integer("expand_cidr", 24, "[0, 32]"),
        allowlist=_allowlist(
            context, m.at("allowlist"), m.data.get("allowlist"), context.allowlist
        ),
        canaries=parse_canaries(m.at("canaries"), m.data.get("canaries"), context.canaries),
        max_growth_ratio=_growth(m),
    )


def _allowlist(context: _Context, path: str, raw: object, inherited: Allowlist) -> Allowlist:
    if isinstance(raw, dict):
        context.accepted[path] = frozenset(ALLOWLIST_KEYS)
    return parse_allowlist(path, raw, inherited, context.base)


def _growth(m: _Map) -> float:
    ratio = m.number("max_growth_ratio", 3.0, "[0, 1000000]")
    if 0 < ratio <= 1:
        raise ConfigError(m.at("max_growth_ratio"), f"{ratio:g} is no growth: above 1, or 0 (off)")
    return ratio


def _exclude(context: _Context, path: str, raw: object, inherited: ExcludeConfig) -> ExcludeConfig:
    if isinstance(raw, dict):
        context.accepted[path] = frozenset(EXCLUDE_KEYS)
    return parse_exclude(path, raw, inherited)


def _proxy(m: _Map) -> ProxyConfig:
    """``proxy:`` of a feed or of ``cybertrace:``."""
    value = m.data.get("proxy")
    if value is None or value == "environment":
        return ProxyConfig()
    if value == "none":
        return ProxyConfig(mode="none")
    if isinstance(value, str):
        return ProxyConfig(mode="url", url=_proxy_url(m.at("proxy"), value))
    if not isinstance(value, dict):
        raise ConfigError(m.at("proxy"), f"expected {PROXY_FORMS}, got {_show(value)}")
    entry = m.child("proxy", ("url", "username", "password", "password_file"))
    username, password = entry.maybe_text("username"), entry.secret("password")
    if password is not None and username is None:
        raise ConfigError(entry.at("password"), "needs username (proxy Basic authentication)")
    url = _proxy_url(entry.at("url"), entry.text("url"))
    return ProxyConfig(mode="url", url=url, username=username, password=password)


def _proxy_url(path: str, url: str) -> str:
    parts = urlsplit(url)
    port_ok = _port_usable(parts)
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


def _feed_retry(m: _Map) -> FeedRetryConfig:
    base = FeedRetryConfig()
    retry = m.child("retry", _keys(FeedRetryConfig), optional=True)
    initial = retry.duration("initial_delay", base.initial_delay, "(0, 1h]")
    longest = retry.duration("max_delay", max(base.max_delay, initial), "(0, 1d]")
    if longest < initial:
        raise ConfigError(retry.at("max_delay"), f"shorter than initial_delay ({initial:g} s)")
    return FeedRetryConfig(
        attempts=retry.integer("attempts", base.attempts, "[1, 20]"),
        initial_delay=initial,
        max_delay=longest,
    )


# Lines are split, and comments, delimiters and quotes found, in a body's bytes: its
# encoding must write every ASCII character as that one byte (UTF-16 or UTF-7 do not).
_ASCII = "".join(map(chr, range(0x20, 0x7F))) + "\t\r\n"


def _encoding(m: _Map) -> str:
    name = m.text("encoding", "utf-8")
    ascii_bytes = _ASCII.encode("ascii")
    try:
        codec = codecs.lookup(name)
        # A BOM is not a byte of the text (utf-8-sig writes one first).
        written = _ASCII.encode(codec.name).removeprefix(codecs.BOM_UTF8)
        same = written == ascii_bytes and ascii_bytes.decode(codec.name) == _ASCII
    except LookupError:
        # Also for a codec that is no text encoding (base64, rot13).
        raise ConfigError(
            m.at("encoding"), f"{_show(name)} is not a text encoding Python knows, e.g. cp1252"
        ) from None
    except UnicodeError:
        same = False
    if not same:
        raise ConfigError(
            m.at("encoding"),
            f"{_show(name)} does not write ASCII as ASCII, which a line-based feed needs;"
            " use e.g. utf-8, latin-1 or cp1252",
        )
    return codec.name


def _footer(m: _Map) -> str | None:
    footer = m.maybe_text("footer")
    if footer is None:
        if m.data.get("footer_count") is not None:
            raise ConfigError(m.at("footer_count"), "needs footer")
        return None
    comment = m.text("comment", "#")
    if footer != footer.strip() or not footer.startswith(comment):
        # Any other last line would be read as a data row as well.
        raise ConfigError(
            m.at("footer"),
            f"{_show(footer)} must start with the feed's comment ({_show(comment)})"
            " and have no blanks at either end",
        )
    return footer


# Values


@dataclass(slots=True)
class _Context:
    """What reading any value may need beyond its own mapping."""

    base: Path  # relative paths start here
    source: str
    mode: int | None  # the config file's, when load() read one
    literal: set[str]  # key paths of strings written without ${...}
    warnings: list[str] = field(default_factory=list)
    unset: dict[str, str] | None = None  # load(secrets=False): paths of unset variables
    accepted: dict[str, frozenset[str]] = field(default_factory=dict)  # see accepted_keys
    # The top-level exclude:, what each feed's inherits.
    exclude: ExcludeConfig = field(default_factory=ExcludeConfig)
    allowlist: Allowlist = field(default_factory=Allowlist)  # each feed adds to it
    canaries: tuple[str, ...] = DEFAULT_CANARIES

    def check_inline(self, path: str, instead: str) -> None:
        if path in self.literal and self.mode is not None:
            self.check_mode(path, f"a secret written into {self.source}, which", self.mode, instead)

    def check_mode(self, path: str, what: str, mode: int, instead: str = "") -> None:
        if mode & 0o004:
            advice = f"; use {instead}" if instead else ""
            message = f"{what} is readable by others (mode {mode & 0o777:04o}){advice}"
            self.warnings.append(f"{path}: {message}")


class _Map:
    """A mapping being read, with its key path at hand for error messages.

    ``keys`` are the keys it may hold; None for any key (names, MISP filters).
    """

    def __init__(
        self, path: str, data: object, keys: Collection[str] | None, context: _Context
    ) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {_kind(data)}")
        self.path, self.data, self.context = path, data, context
        if keys is not None:
            context.accepted[path] = frozenset(keys)
        for key in data:
            if not isinstance(key, str) or not key:
                raise ConfigError(self.at(key), "keys must be non-empty strings")
            if keys is not None and key not in keys:
                known = ", ".join(sorted(keys))
                raise ConfigError(self.at(key), f"unknown key; known keys: {known}{_only(key)}")

    def at(self, key: object) -> str:
        return _join(self.path, key)

    def child(self, key: str, keys: Collection[str] | None, *, optional: bool = False) -> _Map:
        value = self.data.get(key)
        if value is None and not optional:
            raise ConfigError(self.at(key), "required")
        return _Map(self.at(key), {} if value is None else value, keys, self.context)

    def get(self, key: str, kinds: tuple[type, ...], what: str, secret: bool = False) -> Any:
        """The value if present and of one of ``kinds``, else None."""
        value = self.data.get(key)
        # bool is a subclass of int, but true is no count.
        if value is None or (
            isinstance(value, kinds) and (bool in kinds or type(value) is not bool)
        ):
            return value
        # _kind, not _show, for secrets: the wrong-typed value may be the secret itself.
        got = _kind(value) if secret else _show(value)
        raise ConfigError(self.at(key), f"expected {what}, got {got}")

    def maybe_text(self, key: str, *, secret: bool = False) -> str | None:
        value: str | None = self.get(key, (str,), "a string", secret)
        if value == "":
            raise ConfigError(self.at(key), "must not be empty")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.maybe_text(key) or default
        if value is None:
            raise ConfigError(self.at(key), "required")
        return value

    def name(
        self, key: str, pattern: re.Pattern[str], rule: str = "", *, key_only: bool = False
    ) -> str:
        value = key if key_only else self.text(key)
        if not pattern.fullmatch(value):
            raise ConfigError(
                self.at(key), f"{_show(value)} is not a valid name ({rule or pattern.pattern})"
            )
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = self.data.get(key, default)
        if isinstance(value, float):
            value = repr(value)  # YAML reads an unquoted 1.2 as a float
        if value is None:
            raise ConfigError(self.at(key), f"required; one of {', '.join(allowed)}")
        if value not in allowed:
            raise ConfigError(self.at(key), f"{_show(value)} is not one of {', '.join(allowed)}")
        return str(value)

    def integer(self, key: str, default: int | None, interval: str) -> int:
        value: int | None = self.get(key, (int,), "an integer")
        value = default if value is None else value
        if value is None:
            raise ConfigError(self.at(key), f"required, in {interval}")
        return _within(self.at(key), value, interval)

    def number(self, key: str, default: float, interval: str) -> float:
        value: float | None = self.get(key, (int, float), "a number")
        if value is not None and not math.isfinite(value):
            raise ConfigError(self.at(key), f"expected a finite number, got {_show(value)}")
        return float(_within(self.at(key), default if value is None else value, interval))

    def flag(self, key: str, default: bool) -> bool:
        value = self.maybe_flag(key)
        return default if value is None else value

    def maybe_flag(self, key: str) -> bool | None:
        value: bool | None = self.get(key, (bool,), "true or false")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items: list[object] = self.get(key, (list,), "a list of strings") or []
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item:
                message = f"expected a non-empty string, got {_show(item)}"
                raise ConfigError(f"{self.at(key)}[{index}]", message)
        return tuple(str(item) for item in items)

    def secret(self, key: str, *, required: bool = False) -> Secret | None:
        file_key = f"{key}_file"
        if self.data.get(key) is not None and self.data.get(file_key) is not None:
            raise ConfigError(self.at(file_key), f"give {key} or {file_key}, not both")
        unset = self.context.unset  # load(secrets=False): read no secret file, need no variable
        if self.data.get(file_key) is not None:
            return None if unset is not None else Secret(self._read_secret(file_key))
        if unset is not None and self.at(key) in unset:
            del unset[self.at(key)]
            return None
        value = self.maybe_text(key, secret=True)
        if value is None:
            if required:
                raise ConfigError(self.at(key), f"required (or {file_key})")
            return None
        self.context.check_inline(self.at(key), f"${{VAR}} or {file_key}")
        return Secret(value)

    def _read_secret(self, key: str) -> str:
        path = _resolve(self.context.base, self.text(key))
        value, mode = secretfile.read(self.at(key), path)
        self.context.check_mode(self.at(key), f"the secret file {path}", mode)
        return value

    def file(self, key: str) -> str | None:
        if self.maybe_text(key) is None:
            return None
        path = _resolve(self.context.base, self.text(key))
        if not os.path.isfile(path):
            raise ConfigError(self.at(key), f"{path} is not an existing file")
        return path

    def verify_tls(self) -> bool | str:
        value = self.get("verify_tls", (bool, str), "true, false or the path of a CA bundle")
        if value is None or isinstance(value, bool):
            return value is not False
        path = self.file("verify_tls") or ""
        # Loaded here, so that `check` refuses a bundle the client would fail on, and a
        # reload with one keeps the running configuration.
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, OSError) as exc:
            reason = _SSL_WHERE.sub("", str(exc.args[-1] if exc.args else exc))
            message = f"cannot load {path} as a CA bundle (PEM certificates): {reason}"
            raise ConfigError(self.at("verify_tls"), message) from None
        return path

    def duration(self, key: str, default: float, interval: str) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        try:
            seconds = _schedule.parse_duration(value)
        except ValueError as exc:
            raise ConfigError(self.at(key), str(exc)) from None
        return _within(self.at(key), seconds, interval, shown=value)

    def schedule(self) -> Schedule:
        value = self.data.get("schedule")
        if value is None:
            return HOURLY
        try:
            parsed = _schedule.parse_schedule(value)
        except ValueError as exc:
            raise ConfigError(self.at("schedule"), str(exc)) from None
        if parsed.seconds is not None:
            override = self.flag(configrules.SCHEDULE_OVERRIDE, False)
            at = self.at("schedule")
            configrules.schedule_seconds(at, value, parsed.seconds, override=override)
            _within(self.at("schedule"), parsed.seconds, SCHEDULE_RANGE, shown=value)
        return parsed

    def indicator(self) -> str | int | None:
        what = "a column name or a 1-based index"
        value: str | int | None = self.get("indicator", (str, int), what)
        if value == "" or (isinstance(value, int) and value < 1):
            raise ConfigError(self.at("indicator"), f"{_show(value)}: columns are numbered from 1")
        return value

    def headers(self) -> tuple[tuple[str, Secret], ...]:
        entries = self.child("headers", None, optional=True)
        found = []
        for name in entries.data:
            entries.name(name, _HEADER_NAME, key_only=True)
            if self.context.unset is not None and entries.at(name) in self.context.unset:
                del self.context.unset[entries.at(name)]
                continue
            value = entries.maybe_text(name, secret=True)
            if value is None or "\n" in value or "\r" in value:
                raise ConfigError(entries.at(name), "expected a one-line string")
            self.context.check_inline(entries.at(name), "${VAR}")
            found.append((name, Secret(value)))
        return tuple(found)


def _port_usable(parts: SplitResult) -> bool:
    """Whether a URL's port is absent or in range (``.port`` raises on junk)."""
    try:
        return parts.port != 0
    except ValueError:
        return False


def _api_url(path: str, url: str) -> str:
    parts = urlsplit(url)
    port_ok = _port_usable(parts)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(path, "expected http(s)://HOST[:PORT], e.g. https://cybertrace:443")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(path, "expected http(s)://HOST[:PORT], with no path, query or user")
    return url.rstrip("/")


def _source_url(path: str, url: str, base: Path) -> str:
    scheme = _SCHEME.match(url)
    if scheme is None:
        return _resolve(base, url)
    name = scheme.group(1).lower()
    if name not in ("http", "https", "file"):
        raise ConfigError(path, f"{name}:// is not supported: use http(s)://, file:// or a path")
    if name != "file" and not urlsplit(url).hostname:
        raise ConfigError(path, f"the {name}:// URL has no host")
    return url


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))


def _resolve(base: Path, path: str) -> str:
    if os.path.isabs(path):
        return path
    # normpath drops a trailing "/", which still means "a directory" to a feed reader.
    resolved = os.path.normpath(base / path)
    return resolved + "/" if path.endswith("/") else resolved


def _within(path: str, value: _N, interval: str, *, shown: object = None) -> _N:
    """``value`` if in ``interval`` ("[1, 8]", "(0, 1d]": bounds may be durations)."""
    match = _INTERVAL.fullmatch(interval)
    assert match is not None, interval
    opening, low, high, closing = match.groups()
    above = value > _bound(low) if opening == "(" else value >= _bound(low)
    below = value < _bound(high) if closing == ")" else value <= _bound(high)
    if not (above and below):
        given = _show(value if shown is None else shown)
        raise ConfigError(path, f"{given} is out of range; allowed: {interval}")
    return value


def _bound(text: str) -> float:
    return _schedule.parse_duration(text) if text[-1] in "smhd" else float(text)


def _keys(cls: Any, *extra: str) -> frozenset[str]:
    # A section's keys are its dataclass's fields, so the two cannot drift apart.
    return frozenset(f.name for f in fields(cls)) | set(extra)


def _only(key: str) -> str:
    types = [name for name, (keys, _required) in SOURCE_TYPES.items() if key in keys]
    return f" ({key} is only for {' and '.join(types)} feeds)" if types else ""


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return _kind(value)
