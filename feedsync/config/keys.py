"""Every configuration key, declared once, with its type, default and range.

Each declaration says where the key goes, its type (as JSON Schema), its
default, the allowed range of a number or duration, and the feed types that
take it.

The loader reads each mapping against these declarations (``feedsync.config._reader``:
the known keys, "only for csv feeds", defaults, ranges, what a feed type requires),
``feedsync check --schema`` prints the schema built from them (schema.py), and tests hold
docs/configuration.md and config/example.yaml against them. A new key is one ``Key``
line in its section here, then the reader's use of it, a docs row and an example line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

from feedsync.config.schedule import parse_duration

FeedType = Literal["csv", "misp", "misp_feed", "taxii"]
FEED_TYPES: tuple[FeedType, ...] = get_args(FeedType)
REQUIRED = "(required)"

_STRING: Mapping[str, Any] = {"type": "string", "minLength": 1}
_INTEGER: Mapping[str, Any] = {"type": "integer"}
_NUMBER: Mapping[str, Any] = {"type": "number"}
_BOOL: Mapping[str, Any] = {"type": "boolean"}
# A duration with its unit(s) (30s, 15m, 1h30m, 1d); some keys also take plain seconds.
_DURATION_TEXT = "^\\s*" + "".join(rf"(\d+(\.\d+)?\s*[{u}{u.upper()}]\s*)?" for u in "dhms") + "$"
_DURATION: Mapping[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "pattern": _DURATION_TEXT},
        {"type": "number"},
    ]
}
_SCHEDULE: Mapping[str, Any] = {
    "type": "string",
    "anyOf": [{"pattern": _DURATION_TEXT}, {"pattern": r"^\s*\S+(\s+\S+){4}\s*$"}],
}
_TLS: Mapping[str, Any] = {"type": ["boolean", "string"]}
_SECRET_FILE: Mapping[str, Any] = _STRING
_PROXY: Mapping[str, Any] = {
    "anyOf": [
        {"enum": ["none", "environment"]},
        {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp]://"},
        {"$ref": "#/$defs/proxy"},
    ]
}
_COLUMN: Mapping[str, Any] = {"anyOf": [_STRING, {"type": "integer", "minimum": 1}]}


# Every number has a finite range, declared with its key: what the scheduler, asyncio,
# datetime and CyberTrace take. Values past them used to pass `check` and crash at
# start (APScheduler's OverflowError) or on SIGHUP (every feed unscheduled).
_SCHEDULE_RANGE = "[1s, 366d]"
_PULL = "(0, 366d]"  # full_pull, expect_change_within
_TIMEOUT = "(0, 86400]"  # seconds: timeouts are plain numbers
_RETENTION = "[0, 2147483647]"  # minutes; CyberTrace's int32, year ~6100 from now
_INTERVAL = re.compile(r"([\[(])(.+), (.+)([\])])")


@dataclass(frozen=True, slots=True)
class Key:
    """One key of one mapping, e.g. ``Key("page_size", _INTEGER, 1000, ("misp",),
    range="[1, 100000]")``. ``schema`` is its value's JSON Schema; ``default`` is as a
    user would write it (REQUIRED, or None for "not set"); ``types`` are the feed types
    that accept it (feeds only)."""

    name: str
    schema: Mapping[str, Any]
    default: object = None
    types: tuple[FeedType, ...] = FEED_TYPES
    # A number's or duration's allowed values, "[1, 8]" or "(0, 1d]" (bounds may be
    # durations); the loader refuses others and the schema carries the bounds.
    range: str | None = None
    required_for: tuple[FeedType, ...] = ()  # feed types that need it although others do not


def _section(*keys: Key) -> tuple[Key, ...]:
    return keys


_PROXY_KEYS = _section(
    Key("url", {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp]://"}, REQUIRED),
    Key("username", _STRING),
    Key("password", _STRING),
    Key("password_file", _SECRET_FILE),
)
_NAMES: Mapping[str, Any] = {"type": "array", "items": _STRING}
_EXCLUDE_KEYS = _section(
    Key("builtin", {"anyOf": [_BOOL, _NAMES]}, True),
    Key("builtin_off", _NAMES, "[]"),
    Key("warninglists", _NAMES, "[]"),
)
_ALLOWLIST_KEYS = _section(
    Key("files", _NAMES, "[]"),
    Key("values", _NAMES, "[]"),
)
# Key paths as ConfigError names them, with "feeds[]" for any feed and "suppliers.*"
# for any supplier's entry.
SECTIONS: Mapping[str, tuple[Key, ...]] = MappingProxyType(
    {
        "": _section(
            Key("cybertrace", {"$ref": "#/$defs/cybertrace"}, REQUIRED),
            Key("state", {"$ref": "#/$defs/state"}),
            Key("server", {"$ref": "#/$defs/server"}),
            Key("supplier_defaults", {"$ref": "#/$defs/supplier_defaults"}),
            Key(
                "suppliers",
                {
                    "type": "object",
                    "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                    "additionalProperties": {"$ref": "#/$defs/supplier"},
                },
            ),
            Key(
                "feeds",
                {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/feed"}},
                REQUIRED,
            ),
            Key("exclude", {"$ref": "#/$defs/exclude"}),
            Key("provenance", {"$ref": "#/$defs/provenance"}),
            Key("allowlist", {"$ref": "#/$defs/allowlist"}),
            Key("canaries", _NAMES, "[public_resolvers, own_hosts]"),
        ),
        "exclude": _EXCLUDE_KEYS,
        "allowlist": _ALLOWLIST_KEYS,
        "provenance": _section(
            Key("feeds", _STRING),
            Key("first_seen", _STRING),
            Key("last_seen", _STRING),
        ),
        "cybertrace": _section(
            Key("url", {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}, REQUIRED),
            Key("username", _STRING, REQUIRED),
            Key("password", _STRING, REQUIRED),
            Key("password_file", _SECRET_FILE),
            Key("api_version", {"enum": ["1.0", "1.1", "1.2", "1.3", "auto"]}, "1.2"),
            Key("tenant", _STRING),
            Key("verify_tls", _TLS, True),
            Key("client_cert", _STRING),
            Key("client_key", _STRING),
            Key("timeout", _NUMBER, 300, range=_TIMEOUT),
            Key("concurrency", _INTEGER, 2, range="[1, 8]"),
            Key("max_batch_bytes", _INTEGER, 16777216, range="[1024, 134217728]"),
            Key("max_batch_indicators", _INTEGER, 20000, range="[1, 10000000]"),
            Key("tag_weight", _INTEGER, 0, range="[0, 5]"),
            Key("refresh_fraction", _NUMBER, 0.5, range="(0, 1)"),
            Key("retry", {"$ref": "#/$defs/cybertrace_retry"}),
            Key("proxy", _PROXY, "environment"),
            Key("canary", _BOOL, True),
            Key("canary_domain", _STRING, "canary.feedsync.invalid"),
        ),
        "cybertrace.retry": _section(
            Key("attempts", _INTEGER, 5, range="[1, 100]"),
            Key("initial_delay", _NUMBER, 1, range="(0, 3600]"),
            Key("max_delay", _NUMBER, 60, range=_TIMEOUT),
            Key("initializing", _DURATION, "15m", range="(0, 1d]"),
        ),
        "cybertrace.proxy": _PROXY_KEYS,
        "state": _section(
            Key("path", _STRING, "/var/lib/feedsync/state.db"),
            Key("journal_max_age", _DURATION, "90d", range="[1h, 36500d]"),
            Key("journal_max_rows", _INTEGER, 1000000, range="[1000, 1000000000]"),
        ),
        "server": _section(
            Key("listen", _STRING, "127.0.0.1:9464"),
            Key("shutdown_grace", _NUMBER, 30, range="[0, 86400]"),
        ),
        "supplier_defaults": _section(
            Key("confidence", _INTEGER, 50, range="[0, 100]"),
            Key("retention", _INTEGER, 10080, range=_RETENTION),
            Key("vendor", {"type": ["string", "null"]}, "feedsync"),
        ),
        "suppliers.*": _section(
            Key("confidence", _INTEGER, "supplier_defaults.confidence", range="[0, 100]"),
            Key("retention", _INTEGER, "supplier_defaults.retention", range=_RETENTION),
            Key("vendor", _STRING),
        ),
        "feeds[]": _section(
            Key("name", {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"}, REQUIRED),
            Key("type", {"enum": list(FEED_TYPES)}, REQUIRED),
            Key("url", _STRING, REQUIRED),
            Key("supplier", {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}, REQUIRED),
            Key("schedule", _SCHEDULE, "1h", range=_SCHEDULE_RANGE),
            Key("schedule_min_override", _BOOL, False),
            Key("enabled", _BOOL, True),
            Key("tags", {"type": "array", "items": _STRING}),
            Key("max_delete_ratio", _NUMBER, 0.5, range="(0, 1]"),
            Key("username", _STRING),
            Key("password", _STRING),
            Key("password_file", _SECRET_FILE),
            Key("headers", {"type": "object", "additionalProperties": {"type": "string"}}),
            Key("verify_tls", _TLS, True),
            Key("timeout", _NUMBER, 300, range=_TIMEOUT),
            Key("max_body_bytes", _INTEGER, 4 << 30, range="[1, 1099511627776]"),
            Key("unmark_detections", _BOOL, False),
            Key("proxy", _PROXY, "environment"),
            Key("retry", {"$ref": "#/$defs/feed_retry"}),
            Key("exclude", {"$ref": "#/$defs/exclude"}),
            Key("expand_cidr", _INTEGER, 24, range="[0, 32]"),
            Key("allowlist", {"$ref": "#/$defs/allowlist"}),
            Key("canaries", _NAMES, "the top-level canaries"),
            Key("max_growth_ratio", _NUMBER, 3, range="[0, 1000000]"),
            Key("expect_change_within", _DURATION, range=_PULL),
            Key("indicator", _COLUMN, 1, ("csv",)),
            Key("context", {"type": "object", "additionalProperties": _COLUMN}, None, ("csv",)),
            Key("tags_field", _COLUMN, None, ("csv",)),
            Key("comment", {"type": "string", "minLength": 1}, "#", ("csv",)),
            Key("delimiter", {"type": "string", "minLength": 1, "maxLength": 1}, ",", ("csv",)),
            Key("header", _BOOL, None, ("csv",)),
            Key("encoding", _STRING, "utf-8", ("csv",)),
            Key("footer", _STRING, None, ("csv",)),
            Key("footer_count", _BOOL, True, ("csv",)),
            Key("api_key", _STRING, None, ("misp", "taxii"), required_for=("misp",)),
            Key("api_key_file", _SECRET_FILE, None, ("misp", "taxii")),
            Key("full_pull", _DURATION, "1d", ("misp", "taxii"), range=_PULL),
            Key("filters", {"type": "object"}, None, ("misp",)),
            Key("page_size", _INTEGER, 1000, ("misp",), range="[1, 100000]"),
            Key("collection", _STRING, REQUIRED, ("taxii",)),
        ),
        "feeds[].retry": _section(
            Key("attempts", _INTEGER, 3, range="[1, 20]"),
            Key("initial_delay", _DURATION, "1s", range="(0, 1h]"),
            Key("max_delay", _DURATION, "30s", range="(0, 1d]"),
        ),
        "feeds[].proxy": _PROXY_KEYS,
        "feeds[].exclude": _EXCLUDE_KEYS,
        "feeds[].allowlist": _ALLOWLIST_KEYS,
    }
)
def keys(section: str, feed_type: str | None = None) -> frozenset[str]:
    """The key names of ``section``; for ``feeds[]`` those of one feed type."""
    return frozenset(
        key.name for key in SECTIONS[section] if feed_type is None or feed_type in key.types
    )


def declared(section: str, name: str) -> Key:
    """The declaration of key ``name`` in ``section`` (KeyError: a reader's typo)."""
    for key in SECTIONS[section]:
        if key.name == name:
            return key
    raise KeyError(f"{section}.{name}")


def kind_of(key: Key) -> str:
    """What a key's value is, as the reader reads it: a JSON type, or duration/schedule."""
    if key.schema is _DURATION:
        return "duration"
    if key.schema is _SCHEDULE:
        return "schedule"
    kind = key.schema.get("type")
    return kind if isinstance(kind, str) else "any"


def is_required(key: Key, feed_type: str | None = None) -> bool:
    return key.default == REQUIRED or (feed_type is not None and feed_type in key.required_for)


def only_for(name: str) -> tuple[str, ...]:
    """The feed types a feed key is for, when not every type takes it; else ()."""
    for key in SECTIONS["feeds[]"]:
        if key.name == name and key.types != FEED_TYPES:
            return key.types
    return ()


def own_keys(feed_type: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The keys a feed type adds to the common ones, and those of them it requires."""
    own = [key for key in SECTIONS["feeds[]"] if key.types != FEED_TYPES and feed_type in key.types]
    names = frozenset(key.name for key in own)
    return names, tuple(key.name for key in own if is_required(key, feed_type))


SOURCE_TYPES: Mapping[str, tuple[frozenset[str], tuple[str, ...]]] = MappingProxyType(
    {kind: own_keys(kind) for kind in FEED_TYPES}
)


def bounds(interval: str) -> tuple[bool, float, float, bool]:
    """``interval`` ("[1, 8]", "(0, 1d]") as (low closed, low, high, high closed)."""
    match = _INTERVAL.fullmatch(interval)
    if match is None:
        raise ValueError(f"not an interval: {interval!r}")
    opening, low, high, closing = match.groups()
    return opening == "[", _bound(low), _bound(high), closing == "]"


def _bound(text: str) -> float:
    return parse_duration(text) if text[-1] in "smhd" else float(text)


def is_reference(default: object) -> bool:
    # "supplier_defaults.confidence": the default is another key's value.
    return isinstance(default, str) and re.fullmatch(r"[a-z_]+\.[a-z_]+", default) is not None
