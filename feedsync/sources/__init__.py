"""Sources: how each feed type is fetched and read into records.

A source has two halves. ``fetch`` runs on the event loop and downloads the
feed completely (or says it is unchanged); ``records`` runs in the store's
worker thread and streams records out of what was downloaded. Nothing is parsed
before the download is complete, so a broken download changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from feedsync.body import open_body
from feedsync.config import FeedConfig
from feedsync.errors import ConfigError
from feedsync.model import Body, Invalid, Record, Removal, Validators
from feedsync.sources.csvfeed import CsvOptions, check_footer, parse_csv
from feedsync.sources.fetch import fetch, request_for


class Source(Protocol):
    """One feed's way in."""

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        """Download the feed; None when it has not changed since ``previous``
        (a ``same`` body when only its HTTP validators did: nothing to read)."""

    def records(self, body: Body) -> Iterator[Record | Invalid | Removal]:
        """Stream the records of a downloaded body (blocking: run it off the loop);
        ``Removal``s only in a patch (``body.mode == "patch"``)."""


class CsvSource:
    """CSV and plain-text lists, over http(s), file:// or a path."""

    def __init__(self, feed: FeedConfig) -> None:
        self.feed = feed
        self.options = CsvOptions(
            indicator=feed.indicator,
            context=feed.context,
            tags_field=feed.tags_field,
            comment=feed.comment,
            delimiter=feed.delimiter,
            header=feed.header,
            encoding=feed.encoding,
        )

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        body = await fetch(request_for(self.feed), previous, spool)
        footer = self.feed.footer
        if body is not None and not body.same and footer is not None:
            try:
                await asyncio.to_thread(
                    check_footer,
                    body.path,
                    body.end,
                    self.options,
                    self.feed.name,
                    footer=footer,
                    count=self.feed.footer_count,
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
