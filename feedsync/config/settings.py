"""The configuration's values: frozen, typed, validated by the loader.

A feed's settings are the common ones (``FeedConfig``) and those of its source
type, in one options class per type (``CsvConfig``, ``MispFeedConfig``,
``MispConfig``, ``TaxiiConfig``), so that a csv feed holds no MISP filters and a
source reads only what its type accepts. ``Secret`` keeps secrets out of every
repr, log line and message.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from feedsync.config.exclude import ExcludeConfig
from feedsync.config.keys import FeedType
from feedsync.config.schedule import Schedule
from feedsync.safety.allowlist import Allowlist
from feedsync.safety.poison import DEFAULT_CANARIES

DEFAULT_MAX_BODY = 4 << 30
HOURLY = Schedule("1h", 3600.0, None)
BUILTIN_SUPPLIERS = frozenset({"FalsePositive", "InternalTI"})


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
    # The change journal's bounds (store/journal.py): entries older go, then the oldest
    # past the count; an entry is at most ~600 bytes, so rows bound the size too.
    journal_max_age: float = 90 * 86400.0
    journal_max_rows: int = 1_000_000


@dataclass(frozen=True, slots=True)
class ProvenanceConfig:
    """Context fields feedsync adds to every indicator it sends (None: not sent):
    the feeds that list it, and when feedsync first and last sent it."""

    feeds: str | None = None
    first_seen: str | None = None
    last_seen: str | None = None


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
class CsvConfig:
    """A csv feed's own settings: how its lines and columns map onto records."""

    indicator: str | int | None = None
    context: tuple[tuple[str, str | int], ...] = ()  # name, column (name or 1-based)
    tags_field: str | int | None = None  # a column name or a 1-based index
    comment: str = "#"
    delimiter: str = ","
    header: bool | None = None
    encoding: str = "utf-8"  # the codec of the body's bytes (_feeds.encoding)
    footer: str | None = None  # what the body's last line starts with (_feeds.footer)
    footer_count: bool = True  # a number in the footer is the count of data rows


@dataclass(frozen=True, slots=True)
class MispFeedConfig:
    """A misp_feed feed has no settings of its own."""


@dataclass(frozen=True, slots=True)
class MispConfig:
    """A MISP instance's restSearch API."""

    api_key: Secret | None = None  # None only from load(secrets=False)
    filters: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    full_pull: float = 86400.0  # seconds between full pulls (catch hard deletes)
    page_size: int = 1000  # attributes per restSearch page


@dataclass(frozen=True, slots=True)
class TaxiiConfig:
    """A TAXII 2.x collection."""

    collection: str | None = None  # None only in a FeedConfig built without the loader
    api_key: Secret | None = None
    full_pull: float = 86400.0  # seconds between full pulls (catch hard deletes)


SourceOptions = CsvConfig | MispFeedConfig | MispConfig | TaxiiConfig
OPTIONS: Mapping[str, type[SourceOptions]] = MappingProxyType(
    {"csv": CsvConfig, "misp": MispConfig, "misp_feed": MispFeedConfig, "taxii": TaxiiConfig}
)
# The default of FeedConfig.options, replaced by the feed type's own defaults: a
# FeedConfig built by hand (tests) need not spell out options it leaves as they are.
_UNSET_OPTIONS = MispFeedConfig()
_O = TypeVar("_O", bound=SourceOptions)


@dataclass(frozen=True, slots=True)
class FeedConfig:
    name: str
    type: FeedType
    url: str
    supplier: str
    schedule: Schedule = HOURLY
    options: SourceOptions = _UNSET_OPTIONS  # the type's own settings (OPTIONS[type])
    tags: tuple[str, ...] = ()
    max_delete_ratio: float = 0.5
    username: str | None = None
    password: Secret | None = None
    headers: tuple[tuple[str, Secret], ...] = ()
    verify_tls: bool | str = True
    timeout: float = 300.0
    unmark_detections: bool = False
    enabled: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY
    expect_change_within: float | None = None  # seconds; longer unchanged: upstream stale
    proxy: ProxyConfig = ProxyConfig()
    retry: FeedRetryConfig = FeedRetryConfig()
    schedule_min_override: bool = False  # allow a schedule under 30 s (configrules)
    exclude: ExcludeConfig = field(default_factory=ExcludeConfig)  # see exclude.py
    # Networks up to this IPv4 prefix length (its count of addresses for IPv6) become
    # their addresses; wider ones are refused, 0 refuses every network.
    expand_cidr: int = 24
    allowlist: Allowlist = field(default_factory=Allowlist)  # top level + feed (safevalues)
    canaries: tuple[str, ...] = DEFAULT_CANARIES  # the poison guard's (safety/poison.py)
    max_growth_ratio: float = 3.0  # the poison guard: more added than this times the feed

    def __post_init__(self) -> None:
        wanted = OPTIONS[self.type]
        if self.options is _UNSET_OPTIONS:
            object.__setattr__(self, "options", wanted())
        elif type(self.options) is not wanted:
            raise TypeError(f"a {self.type} feed takes {wanted.__name__}, not {self.options!r}")

    def options_as(self, kind: builtins.type[_O]) -> _O:
        """The options of a feed its source knows the type of (``MispConfig`` for misp)."""
        if not isinstance(self.options, kind):
            raise TypeError(f"feed {self.name} is a {self.type} feed, not {kind.__name__}")
        return self.options

    def __repr__(self) -> str:
        # A URL's query or user part often holds a key: show neither.
        shown = {f.name: getattr(self, f.name) for f in fields(self)} | {"url": redact(self.url)}
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
    provenance: ProvenanceConfig = ProvenanceConfig()

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

    def own_hosts(self) -> tuple[str, ...]:
        """The hosts of feedsync's own peers, which no honest feed lists: CyberTrace,
        the proxies, and the MISP and TAXII servers (disabled feeds' too)."""
        urls = [self.cybertrace.url, self.cybertrace.proxy.url]
        urls += [feed.url for feed in self.feeds if feed.type in ("misp", "taxii")]
        urls += [feed.proxy.url for feed in self.feeds]
        hosts = {urlsplit(url).hostname for url in urls if url}
        return tuple(sorted(host for host in hosts if host))

    def feeds_of(self, supplier: str) -> tuple[FeedConfig, ...]:
        return tuple(f for f in self.feeds if f.enabled and f.supplier == supplier)


def redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))
