"""Sources: how each feed type is fetched and read into records.

A source has two halves. ``fetch`` runs on the event loop and downloads the
feed completely (or says it is unchanged); ``records`` runs in the store's
worker thread and streams records out of what was downloaded. Nothing is parsed
before the download is complete, so a broken download changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from feedsync.body import open_body
from feedsync.config import CsvConfig, FeedConfig
from feedsync.errors import ConfigError
from feedsync.model import (
    Body,
    Invalid,
    LineLayout,
    LineParser,
    OnReplaced,
    Record,
    Removal,
    Validators,
)
from feedsync.sources.csvfeed import (
    CsvOptions,
    Layout,
    check_footer,
    parse_csv,
    parse_selected,
    read_layout,
)
from feedsync.sources.fetch import fetch, request_for


class Source(Protocol):
    """One feed's way in. ``lines`` is its line parser where each record is one
    physical line of the body (a CSV list): the store then diffs a replacing body
    line by line; None where records are not lines (MISP, TAXII)."""

    lines: LineParser | None

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        """Download the feed; None when it has not changed since ``previous``
        (a ``same`` body when only its HTTP validators did: nothing to read)."""

    def records(self, body: Body) -> Iterator[Record | Invalid | Removal]:
        """Stream the records of a downloaded body (blocking: run it off the loop);
        ``Removal``s only in a patch (``body.mode == "patch"``)."""


@dataclass(frozen=True, slots=True)
class CsvLines:
    """The CSV source's line parser (feedsync.model.LineParser)."""

    options: CsvOptions
    feed: str

    def layout(self, stream: BinaryIO) -> Layout | None:
        return read_layout(stream, self.options, self.feed)

    def parse(
        self, stream: BinaryIO, on_replaced: OnReplaced | None = None
    ) -> Iterator[Record | Invalid]:
        return parse_csv(stream, self.options, self.feed, on_replaced)

    def parse_selected(
        self,
        stream: BinaryIO,
        layout: LineLayout,
        wanted: set[int],
        on_replaced: OnReplaced | None = None,
    ) -> Iterator[Record | Invalid]:
        # Only this parser's layout() made it: the line diff hands back what it got.
        assert isinstance(layout, Layout)
        return parse_selected(stream, layout, wanted, self.feed, on_replaced)


class CsvSource:
    """CSV and plain-text lists, over http(s), file:// or a path."""

    def __init__(self, feed: FeedConfig) -> None:
        self.feed = feed
        self.csv = csv = feed.options_as(CsvConfig)
        self.options = CsvOptions(
            indicator=csv.indicator,
            context=csv.context,
            tags_field=csv.tags_field,
            comment=csv.comment,
            delimiter=csv.delimiter,
            header=csv.header,
            encoding=csv.encoding,
        )
        self.lines: LineParser | None = CsvLines(self.options, feed.name)

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        body = await fetch(request_for(self.feed), previous, spool)
        footer = self.csv.footer
        if body is not None and not body.same and footer is not None:
            try:
                await asyncio.to_thread(
                    check_footer,
                    body.path,
                    body.end,
                    self.options,
                    self.feed.name,
                    footer=footer,
                    count=self.csv.footer_count,
                )
            except BaseException:
                body.discard()
                raise
        return body

    def records(self, body: Body) -> Iterator[Record | Invalid]:
        with open_body(body.path, self.feed.name) as stream:
            yield from parse_csv(stream, self.options, self.feed.name)


def source_for(feed: FeedConfig) -> Source:
    """The source that reads ``feed``."""
    # The other sources are imported when a feed needs them: STIX patterns take a
    # parser generator's runtime, which a CSV-only `feedsync sync` need not start.
    if feed.type == "csv":
        return CsvSource(feed)
    if feed.type == "misp_feed":
        from feedsync.sources.mispfeed import MispFeedSource  # noqa: PLC0415

        return MispFeedSource(feed)
    if feed.type == "misp":
        from feedsync.sources.mispapi import MispSource  # noqa: PLC0415

        return MispSource(feed)
    if feed.type == "taxii":
        from feedsync.sources.taxii import TaxiiSource  # noqa: PLC0415

        return TaxiiSource(feed)
    raise ConfigError(f"feeds.{feed.name}.type", f"feed type {feed.type!r} is not supported yet")
