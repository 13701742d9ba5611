"""What a supplier's plan sends: its target (the feeds merged, the body shape) and the bodies.

A value's PUT body merges the feeds that list it (context from the first in
configuration order, tags the union of all); its DELETE body names it alone.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from feedsync.store.provenance import Provenance

# CyberTrace's documentation gives no way to clear a context, nor says what a PUT
# without one does to the context stored: an indicator whose feeds give it no context
# is sent this one field naming the feed, so every PUT replaces the context it had.
SOURCE_FIELD = "source_feed"
BODY_VERSION = 2  # bump when bodies are shaped differently: every value is re-planned


@dataclass(frozen=True, slots=True)
class Target:
    """One supplier and how indicator bodies are shaped for it."""

    supplier: str
    feed_ids: tuple[int, ...]
    feed_names: tuple[str, ...]  # the same feeds' names, for the ``source_feed`` context
    send_context: bool = True
    send_tags: bool = True
    unmark_detections: bool | None = None
    provenance: Provenance | None = None  # context fields naming feeds and dates (off: None)

    def signature(self) -> str:
        """Changes whenever the merge or the body shape changes, forcing a full replan."""
        shape: tuple[object, ...] = (self.send_context, self.send_tags, self.unmark_detections)
        shape += (BODY_VERSION,)
        if self.provenance is not None:
            shape += (self.provenance,)
        text = repr((self.feed_ids, self.feed_names, *shape))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def source_context(self, feed_id: int) -> str:
        """The context sent for a value whose feed gives it none (JSON text)."""
        return _source_json(self.feed_names[self.feed_ids.index(feed_id)])


@functools.lru_cache(maxsize=256)
def _source_json(feed: str) -> str:
    # A plain list of a million addresses asks for the same few texts a million times.
    return orjson.dumps({SOURCE_FIELD: feed}).decode()


def put_body(
    value: str, rows: Sequence[tuple[int, str, str]], target: Target, position: dict[int, int]
) -> str:
    if len(rows) == 1 and target.provenance is None:
        return _single_put_body(value, rows[0], target)
    ordered = sorted(rows, key=lambda row: position[row[0]])
    body: dict[str, object] = {"indicator": value}
    if target.send_context:
        first = ordered[0]
        context = orjson.loads(first[1] if first[1] != "{}" else target.source_context(first[0]))
        if target.provenance is not None and target.provenance.feeds is not None:
            names = [target.feed_names[position[row[0]]] for row in ordered]
            context[target.provenance.feeds] = ",".join(dict.fromkeys(names))
        body["context"] = context
    if target.send_tags:
        tags: set[str] = set()
        for row in ordered:
            tags.update(orjson.loads(row[2]))
        # Always sent, even empty: an absent "tags" would leave removed tags in place.
        body["tags"] = sorted(tags)
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def _single_put_body(value: str, row: tuple[int, str, str], target: Target) -> str:
    feed_id, context, tags = row
    read = ((value, context.encode(), tags.encode()),)
    return single_put_payloads(target, feed_id, read)[0].decode()


def single_put_payloads(
    target: Target, feed_id: int, rows: Iterable[tuple[str, bytes, bytes]]
) -> list[bytes]:
    """The body of each value of ``rows`` (value, context, tags), which one feed lists,
    as UTF-8, from the row's JSON as stored (compact, sorted keys, sorted tags) and
    read as bytes (``CAST(... AS BLOB)``): the same text as the merge above makes,
    without parsing and re-encoding it, which is most of planning a million values
    (and one comprehension a chunk: most of cutting them)."""
    dumps = orjson.dumps
    if not target.send_context:
        if target.send_tags:
            return [
                b"".join((b'{"indicator":', dumps(v), b',"tags":', t, b"}")) for v, _c, t in rows
            ]
        return [b"".join((b'{"indicator":', dumps(v), b"}")) for v, _c, _t in rows]
    source = target.source_context(feed_id).encode()
    if target.send_tags:
        return [
            b"".join(
                (
                    b'{"context":',
                    source if c == b"{}" else c,
                    b',"indicator":',
                    dumps(v),
                    b',"tags":',
                    t,
                    b"}",
                )
            )
            for v, c, t in rows
        ]
    return [
        b"".join((b'{"context":', source if c == b"{}" else c, b',"indicator":', dumps(v), b"}"))
        for v, c, _t in rows
    ]


def delete_body(value: str, target: Target) -> str:
    body: dict[str, object] = {"indicator": value}
    if target.unmark_detections is not None:
        body["unmark_detections"] = target.unmark_detections
    return orjson.dumps(body).decode()
