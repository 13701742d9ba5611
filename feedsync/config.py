"""The configuration: one YAML file loaded into frozen, validated objects.

Every error names its key path (``feeds[2].schedule: ...``). ``${VAR}`` in a
string value is read from the environment (``${VAR:-default}``, ``$$`` for a
literal ``$``); ``password_file``/``api_key_file`` read a secret from a file.
Secrets are wrapped in ``Secret`` so no repr, log line or message shows them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from feedsync.errors import ConfigError
from feedsync.schedule import Schedule, parse_schedule

DEFAULT_MAX_BODY = 4 << 30
DEFAULT_STATE_PATH = "/var/lib/feedsync/state.db"
HOURLY = Schedule("1h", 3600.0, None)
BUILTIN_SUPPLIERS = frozenset({"FalsePositive", "InternalTI"})
API_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "auto")
FEED_TYPES = ("csv", "misp", "misp_feed", "taxii")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SUPPLIER = re.compile(r"^[A-Za-z0-9_-]+$")
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_COMMON_FEED_KEYS = frozenset(
    {
        "name",
        "type",
        "url",
        "supplier",
        "schedule",
        "tags",
        "max_delete_ratio",
        "username",
        "password",
        "password_file",
        "headers",
        "verify_tls",
        "timeout",
        "enabled",
        "context",
        "unmark_detections",
        "max_body_bytes",
    }
)
FEED_KEYS: Mapping[str, frozenset[str]] = {
    "csv": _COMMON_FEED_KEYS | {"indicator", "tags_field", "comment", "delimiter", "header"},
    "misp": _COMMON_FEED_KEYS | {"api_key", "api_key_file", "filters"},
    "misp_feed": _COMMON_FEED_KEYS,
    "taxii": _COMMON_FEED_KEYS | {"collection", "api_key", "api_key_file"},
}


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


@dataclass(frozen=True, slots=True)
class CyberTraceConfig:
    url: str
    username: str
    password: Secret
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
    refresh_fraction: float = 0.5
    retry: RetryConfig = RetryConfig()


@dataclass(frozen=True, slots=True)
class StateConfig:
    path: str = DEFAULT_STATE_PATH


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9464
    shutdown_grace: float = 30.0


@dataclass(frozen=True, slots=True)
class SupplierConfig:
    name: str
    confidence: int
    retention: int = 0
    vendor: str | None = None


@dataclass(frozen=True, slots=True)
class FeedConfig:
    name: str
    type: str
    url: str
    supplier: str
    schedule: Schedule = HOURLY
    indicator: str | int | None = None
    context: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    tags_field: str | None = None
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


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    cybertrace: CyberTraceConfig
    state: StateConfig
    server: ServerConfig
    suppliers: Mapping[str, SupplierConfig]
    feeds: tuple[FeedConfig, ...]

    def feed(self, name: str) -> FeedConfig:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise KeyError(name)

    def feeds_of(self, supplier: str) -> tuple[FeedConfig, ...]:
        return tuple(f for f in self.feeds if f.enabled and f.supplier == supplier)


def default_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("FEEDSYNC_CONFIG") or "/etc/feedsync/feedsync.yaml"


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read {path}: {exc}") from exc
    return parse(text, source=str(path), env=env, base_dir=str(Path(path).resolve().parent))


def parse(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError("", f"{where}: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{source}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("", f"{source}: expected a mapping of settings, got {_kind(data)}")
    reader = _Reader(env if env is not None else os.environ, Path(base_dir or os.getcwd()))
    return reader.config(data, source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Reader:
    """Validation with the key path at hand."""

    def __init__(self, env: Mapping[str, str], base: Path) -> None:
        self.env = env
        self.base = base

    def config(self, data: dict[str, Any], source: str) -> Config:
        self.keys("", data, {"cybertrace", "state", "server", "suppliers", "feeds"})
        if "cybertrace" not in data:
            raise ConfigError("cybertrace", "required")
        feeds = self.feeds(data.get("feeds"))
        suppliers = self.suppliers(data.get("suppliers") or {}, feeds)
        return Config(
            path=source,
            cybertrace=self.cybertrace(self.mapping("cybertrace", data["cybertrace"])),
            state=self.state(self.mapping("state", data.get("state") or {})),
            server=self.server(self.mapping("server", data.get("server") or {})),
            suppliers=MappingProxyType(suppliers),
            feeds=feeds,
        )

    # Sections

    def cybertrace(self, d: dict[str, Any]) -> CyberTraceConfig:
        p = "cybertrace"
        self.keys(
            p,
            d,
            {
                "url",
                "api_version",
                "tenant",
                "username",
                "password",
                "password_file",
                "verify_tls",
                "client_cert",
                "client_key",
                "timeout",
                "concurrency",
                "max_batch_bytes",
                "max_batch_indicators",
                "tag_weight",
                "refresh_fraction",
                "retry",
            },
        )
        url = self.string(f"{p}.url", d.get("url"), required=True).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{p}.url", f"{url!r} is not an http:// or https:// URL")
        version = d.get("api_version", "1.2")
        version = f"{version:.1f}" if isinstance(version, float) else version
        version = self.choice(f"{p}.api_version", version, API_VERSIONS)
        tenant = self.optional_string(f"{p}.tenant", d.get("tenant"))
        if tenant is not None and version not in ("1.3", "auto"):
            raise ConfigError(f"{p}.tenant", "needs api_version 1.3 (multitenancy)")
        password = self.secret(p, d, "password", required=True)
        assert password is not None
        cert = self.path(f"{p}.client_cert", d.get("client_cert"))
        key = self.path(f"{p}.client_key", d.get("client_key"))
        if key is not None and cert is None:
            raise ConfigError(f"{p}.client_key", "needs client_cert")
        return CyberTraceConfig(
            url=url,
            username=self.string(f"{p}.username", d.get("username"), required=True),
            password=password,
            api_version=version,
            tenant=tenant,
            verify_tls=self.verify(f"{p}.verify_tls", d.get("verify_tls", True)),
            client_cert=cert,
            client_key=key,
            timeout=self.number(f"{p}.timeout", d.get("timeout", 300.0), low=0, open_low=True),
            concurrency=self.integer(f"{p}.concurrency", d.get("concurrency", 2), 1, 8),
            max_batch_bytes=self.integer(
                f"{p}.max_batch_bytes", d.get("max_batch_bytes", 16777216), 1024, 134217728
            ),
            max_batch_indicators=self.integer(
                f"{p}.max_batch_indicators", d.get("max_batch_indicators", 20000), 1, None
            ),
            tag_weight=self.integer(f"{p}.tag_weight", d.get("tag_weight", 0), 0, 5),
            refresh_fraction=self.fraction(
                f"{p}.refresh_fraction", d.get("refresh_fraction", 0.5), upper_open=True
            ),
            retry=self.retry(self.mapping(f"{p}.retry", d.get("retry") or {})),
        )

    def retry(self, d: dict[str, Any]) -> RetryConfig:
        p = "cybertrace.retry"
        self.keys(p, d, {"attempts", "initial_delay", "max_delay"})
        attempts = self.integer(f"{p}.attempts", d.get("attempts", 5), 1, 100)
        initial = self.number(
            f"{p}.initial_delay", d.get("initial_delay", 1.0), low=0, open_low=True
        )
        maximum = self.number(f"{p}.max_delay", d.get("max_delay", 60.0), low=initial)
        return RetryConfig(attempts, initial, maximum)

    def state(self, d: dict[str, Any]) -> StateConfig:
        self.keys("state", d, {"path"})
        path = self.string("state.path", d.get("path", DEFAULT_STATE_PATH), required=True)
        return StateConfig(str(self.base / path))

    def server(self, d: dict[str, Any]) -> ServerConfig:
        self.keys("server", d, {"listen", "shutdown_grace"})
        listen = self.string("server.listen", d.get("listen", "127.0.0.1:9464"), required=True)
        match = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d+)", listen)
        if not match or int(match.group(2)) > 65535:
            raise ConfigError("server.listen", f"{listen!r} is not HOST:PORT")
        grace = self.number("server.shutdown_grace", d.get("shutdown_grace", 30.0), low=0)
        return ServerConfig(match.group(1) or "127.0.0.1", int(match.group(2)), grace)

    def suppliers(self, data: object, feeds: tuple[FeedConfig, ...]) -> dict[str, SupplierConfig]:
        used = {feed.supplier for feed in feeds}
        out = {}
        for name, raw in self.mapping("suppliers", data).items():
            p = f"suppliers.{name}"
            if not isinstance(name, str) or not _SUPPLIER.match(name):
                raise ConfigError(p, "supplier names are [A-Za-z0-9_-]+")
            if name in BUILTIN_SUPPLIERS:
                raise ConfigError(p, f"{name} is built into CyberTrace and cannot be created")
            if name not in used:
                raise ConfigError(p, "no feed uses this supplier")
            d = self.mapping(p, raw)
            self.keys(p, d, {"confidence", "retention", "vendor"})
            if "confidence" not in d:
                raise ConfigError(f"{p}.confidence", "required (0-100)")
            out[name] = SupplierConfig(
                name=name,
                confidence=self.integer(f"{p}.confidence", d["confidence"], 0, 100),
                retention=self.integer(f"{p}.retention", d.get("retention", 0), 0, None),
                vendor=self.optional_string(f"{p}.vendor", d.get("vendor")),
            )
        return out

    def feeds(self, data: object) -> tuple[FeedConfig, ...]:
        if not isinstance(data, list) or not data:
            raise ConfigError("feeds", "required: a non-empty list of feeds")
        feeds: list[FeedConfig] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(data):
            feed = self.feed(f"feeds[{index}]", self.mapping(f"feeds[{index}]", raw))
            if feed.name in seen:
                raise ConfigError(
                    f"feeds[{index}].name",
                    f"duplicate feed name {feed.name!r} (also feeds[{seen[feed.name]}])",
                )
            seen[feed.name] = index
            feeds.append(feed)
        return tuple(feeds)

    def feed(self, p: str, d: dict[str, Any]) -> FeedConfig:
        kind = self.choice(f"{p}.type", d.get("type"), FEED_TYPES)
        self.keys(p, d, FEED_KEYS[kind])
        name = self.string(f"{p}.name", d.get("name"), required=True)
        if not _NAME.match(name):
            raise ConfigError(f"{p}.name", f"{name!r}: feed names are [A-Za-z0-9_.-]+")
        supplier = self.string(f"{p}.supplier", d.get("supplier"), required=True)
        if not _SUPPLIER.match(supplier):
            raise ConfigError(f"{p}.supplier", f"{supplier!r}: supplier names are [A-Za-z0-9_-]+")
        indicator = d.get("indicator")
        if indicator is not None and not (
            (isinstance(indicator, int) and not isinstance(indicator, bool) and indicator >= 1)
            or (isinstance(indicator, str) and indicator.strip())
        ):
            raise ConfigError(f"{p}.indicator", "expected a column name or a 1-based index")
        api_key = self.secret(p, d, "api_key", required=kind == "misp")
        if kind == "taxii" and not d.get("collection"):
            raise ConfigError(f"{p}.collection", "required for a taxii feed (id or title)")
        delimiter = self.string(f"{p}.delimiter", d.get("delimiter", ","), required=True)
        if len(delimiter) != 1:
            raise ConfigError(f"{p}.delimiter", "expected one character")
        return FeedConfig(
            name=name,
            type=kind,
            url=self.url(f"{p}.url", d.get("url")),
            supplier=supplier,
            schedule=self.schedule(f"{p}.schedule", d.get("schedule", "1h")),
            indicator=indicator,
            context=self.pairs(f"{p}.context", d.get("context") or {}),
            tags=tuple(self.strings(f"{p}.tags", d.get("tags") or [])),
            tags_field=self.optional_string(f"{p}.tags_field", d.get("tags_field")),
            max_delete_ratio=self.fraction(f"{p}.max_delete_ratio", d.get("max_delete_ratio", 0.5)),
            comment=self.string(f"{p}.comment", d.get("comment", "#"), required=True),
            delimiter=delimiter,
            header=self.optional_bool(f"{p}.header", d.get("header")),
            username=self.optional_string(f"{p}.username", d.get("username")),
            password=self.secret(p, d, "password"),
            api_key=api_key,
            headers=tuple(
                (k, Secret(v)) for k, v in self.pairs(f"{p}.headers", d.get("headers") or {})
            ),
            verify_tls=self.verify(f"{p}.verify_tls", d.get("verify_tls", True)),
            timeout=self.number(f"{p}.timeout", d.get("timeout", 300.0), low=0, open_low=True),
            filters=MappingProxyType(dict(self.mapping(f"{p}.filters", d.get("filters") or {}))),
            collection=self.optional_string(f"{p}.collection", d.get("collection")),
            unmark_detections=self.boolean(
                f"{p}.unmark_detections", d.get("unmark_detections", False)
            ),
            enabled=self.boolean(f"{p}.enabled", d.get("enabled", True)),
            max_body_bytes=self.integer(
                f"{p}.max_body_bytes", d.get("max_body_bytes", DEFAULT_MAX_BODY), 1, None
            ),
        )

    # Values

    def keys(self, path: str, d: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
        for key in d:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                known = ", ".join(sorted(allowed))
                raise ConfigError(where, f"unknown key; known keys: {known}")

    def mapping(self, path: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_kind(value)}")
        return value

    def expand(self, path: str, text: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            raise ConfigError(path, f"environment variable {name} is not set")

        return _VARIABLE.sub(substitute, text)

    def string(self, path: str, value: object, *, required: bool = False) -> str:
        if value is None and required:
            raise ConfigError(path, "required")
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_kind(value)}")
        text = self.expand(path, value)
        if required and not text.strip():
            raise ConfigError(path, "must not be empty")
        return text

    def optional_string(self, path: str, value: object) -> str | None:
        return None if value is None else self.string(path, value, required=True)

    def strings(self, path: str, value: object) -> list[str]:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_kind(value)}")
        return [self.string(f"{path}[{i}]", v, required=True) for i, v in enumerate(value)]

    def pairs(self, path: str, value: object) -> tuple[tuple[str, str], ...]:
        out = []
        for key, item in self.mapping(path, value).items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(path, f"keys must be non-empty strings, got {key!r}")
            text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
            out.append((key, self.string(f"{path}.{key}", text, required=True)))
        return tuple(out)

    def secret(
        self, path: str, d: dict[str, Any], key: str, *, required: bool = False
    ) -> Secret | None:
        inline, from_file = d.get(key), d.get(f"{key}_file")
        if inline is not None and from_file is not None:
            raise ConfigError(f"{path}.{key}_file", f"give either {key} or {key}_file, not both")
        if from_file is not None:
            file_path = self.base / self.string(f"{path}.{key}_file", from_file, required=True)
            try:
                text = file_path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}.{key}_file", f"cannot read {file_path}: {exc}") from exc
            if not text:
                raise ConfigError(f"{path}.{key}_file", f"{file_path} is empty")
            return Secret(text)
        if inline is None:
            if required:
                raise ConfigError(f"{path}.{key}", f"required (or {key}_file)")
            return None
        if not isinstance(inline, str):
            raise ConfigError(f"{path}.{key}", f"expected a string, got {_kind(inline)}")
        return Secret(self.string(f"{path}.{key}", inline, required=True))

    def integer(self, path: str, value: object, low: int, high: int | None) -> int:
        if isinstance(value, str):
            value = self.expand(path, value)
            value = int(value) if re.fullmatch(r"-?\d+", value.strip()) else value
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(path, f"expected an integer, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise ConfigError(path, f"{value} is out of range ({bound})")
        return value

    def number(self, path: str, value: object, *, low: float, open_low: bool = False) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(path, f"expected a number, got {_kind(value)}")
        if value < low or (open_low and value == low):
            raise ConfigError(path, f"{value} must be {'>' if open_low else '>='} {low:g}")
        return float(value)

    def fraction(self, path: str, value: object, *, upper_open: bool = False) -> float:
        ratio = self.number(path, value, low=0, open_low=True)
        if ratio > 1 or (upper_open and ratio == 1):
            raise ConfigError(path, f"{ratio:g} must be in (0, 1{')' if upper_open else ']'}")
        return ratio

    def boolean(self, path: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_kind(value)}")
        return value

    def optional_bool(self, path: str, value: object) -> bool | None:
        return None if value is None else self.boolean(path, value)

    def choice(self, path: str, value: object, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise ConfigError(path, f"{value!r} is not one of {', '.join(allowed)}")
        assert isinstance(value, str)
        return value

    def path(self, path: str, value: object) -> str | None:
        if value is None:
            return None
        full = self.base / self.string(path, value, required=True)
        if not full.is_file():
            raise ConfigError(path, f"{full} is not a readable file")
        return str(full)

    def verify(self, path: str, value: object) -> bool | str:
        if isinstance(value, bool):
            return value
        found = self.path(path, value)
        assert found is not None
        return found

    def url(self, path: str, value: object) -> str:
        url = self.string(path, value, required=True)
        if url.startswith(("http://", "https://", "file://")):
            return url
        if "://" in url:
            raise ConfigError(path, f"{url!r}: only http://, https://, file:// or a path")
        return str(self.base / url)

    def schedule(self, path: str, value: object) -> Schedule:
        return _validated(path, parse_schedule, value)


def _validated(path: str, parser: Callable[[Any], Schedule], value: object) -> Schedule:
    try:
        return parser(value)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from exc


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value)
    return type(value).__name__
