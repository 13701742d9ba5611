"""Every source's parser, fed what a hostile or broken server may send: records,
Invalid rows or a feedsync error come out, never another exception (which would
be a traceback where the operator expects the feed's name and cause)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedsync.config import FeedConfig
from feedsync.errors import FeedsyncError
from feedsync.model import Body, Validators
from feedsync.sources.csvfeed import CsvOptions, parse_csv
from feedsync.sources.misp import event_records
from feedsync.sources.mispapi import MispSource
from feedsync.sources.mispfeed import MispFeedSource
from feedsync.sources.stix import Unsupported, pattern_values
from feedsync.sources.taxii import TaxiiSource

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
# Attribute- and object-shaped dicts with hostile values in the fields parsers read.
ATTRIBUTE_KEYS = [
    "type",
    "value",
    "to_ids",
    "uuid",
    "category",
    "comment",
    "Event",
    "Tag",
    "timestamp",
    "deleted",
    "id",
    "event_id",
    "first_seen",
    "last_seen",
]
STIX_KEYS = [
    "type",
    "id",
    "modified",
    "pattern",
    "pattern_type",
    "spec_version",
    "revoked",
    "valid_until",
    "valid_from",
    "labels",
    "indicator_types",
    "name",
    "description",
    "created",
]
EVENT_KEYS = [
    "Attribute",
    "Object",
    "Tag",
    "info",
    "uuid",
    "id",
    "threat_level_id",
    "Orgc",
    "date",
    "timestamp",
    "published",
]


def shaped(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    plausible = {
        "type": st.sampled_from(["ip-src", "domain", "url", "md5", "indicator", "sha256"]),
        "pattern": st.sampled_from(
            ["[ipv4-addr:value = '1.2.3.4']", "[domain-name:value = 'a.example']"]
        ),
        "to_ids": st.booleans(),
    }
    return st.fixed_dictionaries(
        {},
        optional={k: (plausible[k] | json_values) if k in plausible else json_values for k in keys},
    )


def drain(items: Iterable[object]) -> None:
    try:
        for _ in items:
            pass
    except FeedsyncError:
        pass


def json_lines(objects: list[Any]) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objects)


def body_of(data: bytes, mode: str = "replace") -> Body:
    fd, name = tempfile.mkstemp(prefix="fuzz.", suffix=".body")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return Body(Path(name), len(data), Validators(), True, mode)  # type: ignore[arg-type]


def feed(kind: str, url: str = "https://feeds.example/x/") -> FeedConfig:
    return FeedConfig("fuzz", kind, url, "Demo")  # type: ignore[arg-type]


def through(parse: Callable[[Body], Iterable[object]], data: bytes, mode: str = "replace") -> None:
    body = body_of(data, mode)
    try:
        drain(parse(body))
    finally:
        body.discard()


csv_lines = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60), max_size=20
)


@FUZZ
@given(
    lines=csv_lines,
    raw=st.binary(max_size=200),
    delimiter=st.sampled_from([",", ";", "\t", " "]),
    header=st.sampled_from([True, False, None]),
)
def test_csv_parser(lines: list[str], raw: bytes, delimiter: str, header: bool | None) -> None:
    data = "\n".join(lines).encode() + raw
    for options in (
        CsvOptions(delimiter=delimiter, header=header),
        CsvOptions(delimiter=delimiter, indicator="value", context=(("c", "comment"),)),
        CsvOptions(delimiter=delimiter, indicator=2, context=(("c", "5"),), tags_field="tags"),
    ):
        drain(parse_csv(io.BytesIO(data), options, "fuzz"))


@FUZZ
@given(event=shaped(EVENT_KEYS), attributes=st.lists(shaped(ATTRIBUTE_KEYS), max_size=5))
def test_misp_event_records(event: dict[str, Any], attributes: list[dict[str, Any]]) -> None:
    drain(event_records(event | {"Attribute": attributes}))
    drain(event_records(event))


@FUZZ
@given(
    # The pager keeps a page's objects only: each spooled line is one.
    lines=st.lists(shaped(ATTRIBUTE_KEYS), max_size=6),
    mode=st.sampled_from(["replace", "patch"]),
)
def test_misp_api_records(lines: list[Any], mode: str) -> None:
    source = MispSource(feed("misp"))
    through(source.records, json_lines(lines), mode)


@FUZZ
@given(events=st.lists(shaped(EVENT_KEYS) | json_values, min_size=1, max_size=3))
def test_misp_feed_records(events: list[Any]) -> None:
    source = MispFeedSource(feed("misp_feed"))
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for number, event in enumerate(events):
            path = Path(folder) / f"{number}.json"
            path.write_bytes(orjson.dumps({"Event": event} if number % 2 else event))
            paths.append(str(path))
        through(source.records, "\n".join(paths).encode())


@FUZZ
@given(
    lines=st.lists(shaped(STIX_KEYS), max_size=6),
    mode=st.sampled_from(["replace", "patch"]),
)
def test_taxii_records(lines: list[Any], mode: str) -> None:
    source = TaxiiSource(feed("taxii"))
    through(source.records, json_lines(lines), mode)


@FUZZ
@given(pattern=st.text(max_size=80), version=st.sampled_from(["2.0", "2.1"]))
def test_stix_patterns(pattern: str, version: str) -> None:
    with contextlib.suppress(Unsupported):
        pattern_values(pattern, version)


def test_stix_patterns_deep_and_wide() -> None:
    deep = "(" * 400 + "[ipv4-addr:value = '1.2.3.4']" + ")" * 400
    wide = " OR ".join(f"[ipv4-addr:value = '10.0.{i // 256}.{i % 256}']" for i in range(1000))
    for pattern in (deep, wide, "[" * 5000):
        try:
            values = pattern_values(pattern)
        except Unsupported:
            continue
        assert values, pattern[:40]
