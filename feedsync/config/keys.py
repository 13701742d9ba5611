"""Every configuration key: where it goes, its default, the feed types that read it,
and the JSON Schema of its value.

``feedsync check --schema`` prints the schema built from this table. Tests hold the
table, docs/configuration.md and config/example.yaml against the keys
``feedsync.config`` really accepts (``config.accepted_keys``), so a key added to the
loader without a row here, a line in the docs and one in the example fails them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

FEED_TYPES = ("csv", "misp", "misp_feed", "taxii")
DRAFT = "https://json-schema.org/draft/2020-12/schema"
REQUIRED = "(required)"

_STRING: Mapping[str, Any] = {"type": "string", "minLength": 1}
_BOOL: Mapping[str, Any] = {"type": "boolean"}
# A duration with its unit(s) (30s, 15m, 1h30m, 1d); some keys also take plain seconds.
_DURATION_TEXT = "^\\s*" + "".join(rf"(\d+(\.\d+)?\s*[{u}{u.upper()}]\s*)?" for u in "dhms") + "$"
_DURATION: Mapping[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "pattern": _DURATION_TEXT},
        {"type": "number", "exclusiveMinimum": 0},
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


def _int(low: int, high: int) -> Mapping[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def _number(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Any:
    schema: dict[str, Any] = {"type": "number"}
    schema["exclusiveMinimum" if open_low else "minimum"] = low
    schema["exclusiveMaximum" if open_high else "maximum"] = high
    return schema


@dataclass(frozen=True, slots=True)
class Key:
    """One key of one mapping. ``default`` is as a user would write it (REQUIRED, or
    None for "not set"); ``types`` are the feed types that accept it (feeds only)."""

    name: str
    schema: Mapping[str, Any]
    default: object = None
    types: tuple[str, ...] = FEED_TYPES


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
            Key("allowlist", {"$ref": "#/$defs/allowlist"}),
            Key("canaries", _NAMES, "[public_resolvers]"),
        ),
        "exclude": _EXCLUDE_KEYS,
        "allowlist": _ALLOWLIST_KEYS,
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
            Key("timeout", _number(0, 86400, open_low=True), 300),
            Key("concurrency", _int(1, 8), 2),
            Key("max_batch_bytes", _int(1024, 134217728), 16777216),
            Key("max_batch_indicators", _int(1, 10000000), 20000),
            Key("tag_weight", _int(0, 5), 0),
            Key("refresh_fraction", _number(0, 1, open_low=True, open_high=True), 0.5),
            Key("retry", {"$ref": "#/$defs/cybertrace_retry"}),
            Key("proxy", _PROXY, "environment"),
            Key("canary", _BOOL, True),
            Key("canary_domain", _STRING, "canary.feedsync.invalid"),
        ),
        "cybertrace.retry": _section(
            Key("attempts", _int(1, 100), 5),
            Key("initial_delay", _number(0, 3600, open_low=True), 1),
            Key("max_delay", _number(0, 86400, open_low=True), 60),
            Key("initializing", _DURATION, "15m"),
        ),
        "cybertrace.proxy": _PROXY_KEYS,
        "state": _section(Key("path", _STRING, "/var/lib/feedsync/state.db")),
        "server": _section(
            Key("listen", _STRING, "127.0.0.1:9464"),
            Key("shutdown_grace", _number(0, 86400), 30),
        ),
        "supplier_defaults": _section(
            Key("confidence", _int(0, 100), 50),
            Key("retention", _int(0, 2147483647), 10080),
            Key("vendor", {"type": ["string", "null"]}, "feedsync"),
        ),
        "suppliers.*": _section(
            Key("confidence", _int(0, 100), "supplier_defaults.confidence"),
            Key("retention", _int(0, 2147483647), "supplier_defaults.retention"),
            Key("vendor", _STRING),
        ),
        "feeds[]": _section(
            Key("name", {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"}, REQUIRED),
            Key("type", {"enum": list(FEED_TYPES)}, REQUIRED),
            Key("url", _STRING, REQUIRED),
            Key("supplier", {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}, REQUIRED),
            Key("schedule", _SCHEDULE, "1h"),
            Key("schedule_min_override", _BOOL, False),
            Key("enabled", _BOOL, True),
            Key("tags", {"type": "array", "items": _STRING}),
            Key("max_delete_ratio", _number(0, 1, open_low=True), 0.5),
            Key("username", _STRING),
            Key("password", _STRING),
            Key("password_file", _SECRET_FILE),
            Key("headers", {"type": "object", "additionalProperties": {"type": "string"}}),
            Key("verify_tls", _TLS, True),
            Key("timeout", _number(0, 86400, open_low=True), 300),
            Key("max_body_bytes", _int(1, 1099511627776), 4 << 30),
            Key("unmark_detections", _BOOL, False),
            Key("proxy", _PROXY, "environment"),
            Key("retry", {"$ref": "#/$defs/feed_retry"}),
            Key("exclude", {"$ref": "#/$defs/exclude"}),
            Key("expand_cidr", _int(0, 32), 24),
            Key("allowlist", {"$ref": "#/$defs/allowlist"}),
            Key("canaries", _NAMES, "the top-level canaries"),
            Key("max_growth_ratio", _number(0, 1000000), 3),
            Key("expect_change_within", _DURATION),
            Key("indicator", _COLUMN, 1, ("csv",)),
            Key("context", {"type": "object", "additionalProperties": _COLUMN}, None, ("csv",)),
            Key("tags_field", _COLUMN, None, ("csv",)),
            Key("comment", {"type": "string", "minLength": 1}, "#", ("csv",)),
            Key("delimiter", {"type": "string", "minLength": 1, "maxLength": 1}, ",", ("csv",)),
            Key("header", _BOOL, None, ("csv",)),
            Key("encoding", _STRING, "utf-8", ("csv",)),
            Key("footer", _STRING, None, ("csv",)),
            Key("footer_count", _BOOL, True, ("csv",)),
            Key("api_key", _STRING, None, ("misp", "taxii")),
            Key("api_key_file", _SECRET_FILE, None, ("misp", "taxii")),
            Key("full_pull", _DURATION, "1d", ("misp", "taxii")),
            Key("filters", {"type": "object"}, None, ("misp",)),
            Key("page_size", _int(1, 100000), 1000, ("misp",)),
            Key("collection", _STRING, REQUIRED, ("taxii",)),
        ),
        "feeds[].retry": _section(
            Key("attempts", _int(1, 20), 3),
            Key("initial_delay", _DURATION, "1s"),
            Key("max_delay", _DURATION, "30s"),
        ),
        "feeds[].proxy": _PROXY_KEYS,
        "feeds[].exclude": _EXCLUDE_KEYS,
        "feeds[].allowlist": _ALLOWLIST_KEYS,
    }
)
# $defs names: a JSON pointer in a URI fragment takes no "[]" or "*".
_DEFS = {
    "cybertrace": "cybertrace",
    "cybertrace.retry": "cybertrace_retry",
    "state": "state",
    "server": "server",
    "supplier_defaults": "supplier_defaults",
    "suppliers.*": "supplier",
    "feeds[].retry": "feed_retry",
    "exclude": "exclude",
    "allowlist": "allowlist",
}
# One of each pair is required; the loader refuses both at once.
_EITHER = {
    "cybertrace": ("password", "password_file"),
    "misp": ("api_key", "api_key_file"),
}


def keys(section: str, feed_type: str | None = None) -> frozenset[str]:
    """The key names of ``section``; for ``feeds[]`` those of one feed type."""
    return frozenset(
        key.name for key in SECTIONS[section] if feed_type is None or feed_type in key.types
    )


def json_schema() -> dict[str, Any]:
    """The configuration's JSON Schema (draft 2020-12), for editors and linters."""
    defs: dict[str, Any] = {
        name: _object(section, SECTIONS[section]) for section, name in _DEFS.items()
    }
    defs["proxy"] = _object("proxy", _PROXY_KEYS)
    defs["feed"] = {"oneOf": [_feed(kind) for kind in FEED_TYPES]}
    schema = _object("", SECTIONS[""])
    return {
        "$schema": DRAFT,
        "$id": "https://feedsync.invalid/schema/config.json",
        "title": "feedsync configuration",
        **schema,
        "$defs": defs,
    }


def _object(name: str, section: tuple[Key, ...], feed_type: str | None = None) -> dict[str, Any]:
    properties = {}
    for key in section:
        if feed_type is not None and feed_type not in key.types:
            continue
        prop = dict(key.schema)
        if key.default != REQUIRED:
            # The loader reads an optional key given as null as its default.
            prop = {"anyOf": [prop, {"type": "null"}]}
            if key.default is not None and not _is_reference(key.default):
                prop["default"] = key.default
        properties[key.name] = prop
    required = [
        key.name
        for key in section
        if key.default == REQUIRED
        and (feed_type is None or feed_type in key.types)
        and key.name not in _EITHER.get(feed_type or name, ())
    ]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["additionalProperties"] = False
    if required:
        schema["required"] = required
    pair = _EITHER.get(feed_type or name)
    if pair is not None:
        schema["oneOf"] = [
            {"required": [pair[0]], "not": {"required": [pair[1]]}},
            {"required": [pair[1]], "not": {"required": [pair[0]]}},
        ]
    return schema


def _feed(kind: str) -> dict[str, Any]:
    schema = _object("feeds[]", SECTIONS["feeds[]"], kind)
    schema["properties"]["type"] = {"const": kind}
    return schema


def _is_reference(default: object) -> bool:
    # "supplier_defaults.confidence": the default is another key's value.
    return isinstance(default, str) and re.fullmatch(r"[a-z_]+\.[a-z_]+", default) is not None
