"""The configuration's JSON Schema, built from the key declarations (``check --schema``).

Each section is an object that takes its declared keys alone; an optional key
also takes null (the loader reads it as its default), a number or duration
carries its declared range, a required secret is given as itself or as its
``_file``, never both, and a feed is one of the feed types' objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feedsync.config.keys import (
    _PROXY_KEYS,
    FEED_TYPES,
    REQUIRED,
    SECTIONS,
    Key,
    bounds,
    is_reference,
    is_required,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"

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
    "provenance": "provenance",
    "allowlist": "allowlist",
}


def json_schema() -> dict[str, Any]:
    """The configuration's JSON Schema (draft 2020-12), for editors and linters."""
    defs: dict[str, Any] = {name: _object(SECTIONS[section]) for section, name in _DEFS.items()}
    defs["proxy"] = _object(_PROXY_KEYS)
    defs["feed"] = {"oneOf": [_feed(kind) for kind in FEED_TYPES]}
    schema = _object(SECTIONS[""])
    return {
        "$schema": DRAFT,
        "$id": "https://feedsync.invalid/schema/config.json",
        "title": "feedsync configuration",
        **schema,
        "$defs": defs,
    }


def _object(section: tuple[Key, ...], feed_type: str | None = None) -> dict[str, Any]:
    properties = {}
    for key in section:
        if feed_type is not None and feed_type not in key.types:
            continue
        prop = _bounded(key.schema, key.range)
        if key.default != REQUIRED:
            # The loader reads an optional key given as null as its default.
            prop = {"anyOf": [prop, {"type": "null"}]}
            if key.default is not None and not is_reference(key.default):
                prop["default"] = key.default
        properties[key.name] = prop
    names = {key.name for key in section}
    needed = [
        key.name
        for key in section
        if is_required(key, feed_type) and (feed_type is None or feed_type in key.types)
    ]
    # A required secret is given as itself or as its file, never both.
    pairs = [name for name in needed if f"{name}_file" in names]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["additionalProperties"] = False
    required = [name for name in needed if name not in pairs]
    if required:
        schema["required"] = required
    either = [
        {
            "oneOf": [
                {"required": [name], "not": {"required": [f"{name}_file"]}},
                {"required": [f"{name}_file"], "not": {"required": [name]}},
            ]
        }
        for name in pairs
    ]
    if len(either) == 1:
        schema |= either[0]
    elif either:
        schema["allOf"] = either
    return schema


def _bounded(schema: Mapping[str, Any], interval: str | None) -> dict[str, Any]:
    """``schema`` with the bounds of ``interval`` on its numbers (a duration's too)."""
    if interval is None:
        return dict(schema)
    closed_low, low, high, closed_high = bounds(interval)
    limits = {
        "minimum" if closed_low else "exclusiveMinimum": _plain(low),
        "maximum" if closed_high else "exclusiveMaximum": _plain(high),
    }
    if schema.get("type") in ("integer", "number"):
        return {**schema, **limits}
    if "anyOf" in schema and any(s.get("type") == "number" for s in schema["anyOf"]):
        alternatives = [
            {**s, **limits} if s.get("type") == "number" else s for s in schema["anyOf"]
        ]
        return {**schema, "anyOf": alternatives}
    return dict(schema)


def _plain(number: float) -> int | float:
    return int(number) if number.is_integer() else number


def _feed(kind: str) -> dict[str, Any]:
    schema = _object(SECTIONS["feeds[]"], kind)
    schema["properties"]["type"] = {"const": kind}
    return schema
