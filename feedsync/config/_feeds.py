"""Reading ``feeds:``: every feed's settings, then its source type's own.

One reader per type, into that type's options class."""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import cast
from urllib.parse import urlsplit

from feedsync import paths
from feedsync.config import keys as registry
from feedsync.config import rules as configrules
from feedsync.config import schedule as _schedule
from feedsync.config._reader import Context, Map, kind, resolve, show, within
from feedsync.config._sections import SUPPLIER_NAME, allowlist, exclude, proxy
from feedsync.config.keys import FeedType
from feedsync.config.safevalues import parse_canaries
from feedsync.config.schedule import Schedule
from feedsync.config.settings import (
    HOURLY,
    CsvConfig,
    FeedConfig,
    FeedRetryConfig,
    MispConfig,
    MispFeedConfig,
    SourceOptions,
    TaxiiConfig,
)
from feedsync.errors import ConfigError

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# Lines are split, and comments, delimiters and quotes found, in a body's bytes: its
# encoding must write every ASCII character as that one byte (UTF-16 or UTF-7 do not).
_ASCII = "".join(map(chr, range(0x20, 0x7F))) + "\t\r\n"


def feeds(top: Map) -> tuple[FeedConfig, ...]:
    raw = top.data.get("feeds")
    if not isinstance(raw, list) or not raw:
        got = "an empty list" if raw == [] else kind(raw)
        raise ConfigError("feeds", f"required: a non-empty list of feeds, got {got}")
    found: list[FeedConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        loaded = feed(f"feeds[{index}]", item, top.context)
        if loaded.name in seen:
            message = f"duplicate feed name {show(loaded.name)} (also feeds[{seen[loaded.name]}])"
            raise ConfigError(f"feeds[{index}].name", message)
        seen[loaded.name] = index
        found.append(loaded)
    return tuple(found)


def feed(path: str, raw: object, context: Context) -> FeedConfig:
    feed_type = cast(FeedType, Map(path, raw, None, context).choice("type", registry.FEED_TYPES))
    m = Map(path, raw, "feeds[]", context, feed_type)
    _own, required = registry.SOURCE_TYPES[feed_type]
    for key in required:
        if m.data.get(key) is None and m.data.get(f"{key}_file") is None:
            raise ConfigError(m.at(key), f"required for a {feed_type} feed")
    supplier = m.name("supplier", SUPPLIER_NAME)
    username, password = m.maybe_text("username"), m.secret("password")
    if password is not None and username is None:
        raise ConfigError(m.at("password"), "needs username (HTTP basic authentication)")
    unmark = m.flag("unmark_detections")
    if unmark and supplier != "FalsePositive":
        raise ConfigError(m.at("unmark_detections"), "only applies to the FalsePositive supplier")
    return FeedConfig(
        name=m.name("name", paths.FEED_NAME, paths.FEED_NAME_RULE),
        type=feed_type,
        url=_source_url(m.at("url"), m.text("url"), context),
        supplier=supplier,
        schedule=_schedule_of(m),
        options=_OPTIONS[feed_type](m),
        tags=configrules.tags(m.at("tags"), m.strings("tags")),
        max_delete_ratio=m.number("max_delete_ratio"),
        username=username,
        password=password,
        headers=m.headers(),
        verify_tls=m.verify_tls(),
        timeout=m.number("timeout"),
        unmark_detections=unmark,
        enabled=m.flag("enabled"),
        max_body_bytes=m.integer("max_body_bytes"),
        expect_change_within=m.maybe_duration("expect_change_within"),
        proxy=proxy(m),
        retry=_retry(m),
        schedule_min_override=m.flag(configrules.SCHEDULE_OVERRIDE),
        exclude=exclude(context, m.at("exclude"), m.data.get("exclude"), context.exclude),
        expand_cidr=m.integer("expand_cidr"),
        allowlist=allowlist(context, m.at("allowlist"), m.data.get("allowlist"), context.allowlist),
        canaries=parse_canaries(m.at("canaries"), m.data.get("canaries"), context.canaries),
        max_growth_ratio=_growth(m),
    )


def _growth(m: Map) -> float:
    ratio = m.number("max_growth_ratio")
    if 0 < ratio <= 1:
        raise ConfigError(m.at("max_growth_ratio"), f"{ratio:g} is no growth: above 1, or 0 (off)")
    return ratio


def _csv(m: Map) -> CsvConfig:
    delimiter = m.text("delimiter")
    if len(delimiter) != 1:
        raise ConfigError(m.at("delimiter"), f"{show(delimiter)} is not one character")
    return CsvConfig(
        indicator=_indicator(m),
        context=configrules.columns(m.at("context"), m.child("context", None, optional=True).data),
        tags_field=configrules.column(m.at("tags_field"), m.data.get("tags_field")),
        comment=m.text("comment"),
        delimiter=delimiter,
        header=m.maybe_flag("header"),
        encoding=_encoding(m),
        footer=_footer(m),
        footer_count=m.flag("footer_count"),
    )


def _misp_feed(_m: Map) -> MispFeedConfig:
    return MispFeedConfig()


def _misp(m: Map) -> MispConfig:
    return MispConfig(
        api_key=m.secret("api_key"),
        filters=MappingProxyType(m.child("filters", None, optional=True).data),
        full_pull=m.duration("full_pull"),
        page_size=m.integer("page_size"),
    )


def _taxii(m: Map) -> TaxiiConfig:
    return TaxiiConfig(
        collection=m.maybe_text("collection"),
        api_key=m.secret("api_key"),
        full_pull=m.duration("full_pull"),
    )


# One reader per source type; a new type adds its keys (with their types) in keys.py,
# its options class in settings.py and its reader here.
_OPTIONS: Mapping[FeedType, Callable[[Map], SourceOptions]] = MappingProxyType(
    {"csv": _csv, "misp": _misp, "misp_feed": _misp_feed, "taxii": _taxii}
)


def _schedule_of(m: Map) -> Schedule:
    value = m.data.get("schedule")
    if value is None:
        return HOURLY
    try:
        parsed = _schedule.parse_schedule(value)
    except ValueError as exc:
        raise ConfigError(m.at("schedule"), str(exc)) from None
    if parsed.seconds is not None:
        override = m.flag(configrules.SCHEDULE_OVERRIDE)
        at = m.at("schedule")
        configrules.schedule_seconds(at, value, parsed.seconds, override=override)
        within(at, parsed.seconds, m.range("schedule", "schedule"), shown=value)
    return parsed


def _indicator(m: Map) -> str | int | None:
    what = "a column name or a 1-based index"
    value: str | int | None = m.get("indicator", (str, int), what)
    if value == "" or (isinstance(value, int) and value < 1):
        raise ConfigError(m.at("indicator"), f"{show(value)}: columns are numbered from 1")
    return value


def _source_url(path: str, url: str, context: Context) -> str:
    scheme = _SCHEME.match(url)
    if scheme is None:
        return resolve(context.base, url)
    name = scheme.group(1).lower()
    if name not in ("http", "https", "file"):
        raise ConfigError(path, f"{name}:// is not supported: use http(s)://, file:// or a path")
    if name != "file" and not urlsplit(url).hostname:
        raise ConfigError(path, f"the {name}:// URL has no host")
    return url


def _retry(m: Map) -> FeedRetryConfig:
    retry = m.child("retry", "feeds[].retry", optional=True)
    initial = retry.duration("initial_delay")
    # Without a max_delay, an initial_delay above the default's is the longest wait too.
    default = _schedule.parse_duration(retry.default("max_delay"))
    longest = retry.duration("max_delay", max(default, initial))
    if longest < initial:
        raise ConfigError(retry.at("max_delay"), f"shorter than initial_delay ({initial:g} s)")
    return FeedRetryConfig(
        attempts=retry.integer("attempts"), initial_delay=initial, max_delay=longest
    )


def _encoding(m: Map) -> str:
    name = m.text("encoding")
    ascii_bytes = _ASCII.encode("ascii")
    try:
        codec = codecs.lookup(name)
        # A BOM is not a byte of the text (utf-8-sig writes one first).
        written = _ASCII.encode(codec.name).removeprefix(codecs.BOM_UTF8)
        same = written == ascii_bytes and ascii_bytes.decode(codec.name) == _ASCII
    except LookupError:
        # Also for a codec that is no text encoding (base64, rot13).
        raise ConfigError(
            m.at("encoding"), f"{show(name)} is not a text encoding Python knows, e.g. cp1252"
        ) from None
    except UnicodeError:
        same = False
    if not same:
        raise ConfigError(
            m.at("encoding"),
            f"{show(name)} does not write ASCII as ASCII, which a line-based feed needs;"
            " use e.g. utf-8, latin-1 or cp1252",
        )
    return codec.name


def _footer(m: Map) -> str | None:
    footer = m.maybe_text("footer")
    if footer is None:
        if m.data.get("footer_count") is not None:
            raise ConfigError(m.at("footer_count"), "needs footer")
        return None
    comment = m.text("comment")
    if footer != footer.strip() or not footer.startswith(comment):
        # Any other last line would be read as a data row as well.
        raise ConfigError(
            m.at("footer"),
            f"{show(footer)} must start with the feed's comment ({show(comment)})"
            " and have no blanks at either end",
        )
    return footer
