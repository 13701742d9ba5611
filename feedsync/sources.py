"""Sources: how each feed type is fetched and read into records.

A source has two halves. ``fetch`` runs on the event loop and downloads the
feed completely (or says it is unchanged); ``records`` runs in the store's
worker thread and streams records out of what was downloaded. Nothing is parsed
before the download is complete, so a broken download changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from feedsync.config import FeedConfig
from feedsync.csvfeed import CsvOptions, open_body, parse_csv
from feedsync.errors import ConfigError
from feedsync.fetch import USER_AGENT, Body, Request, Validators, basic_auth, fetch
from feedsync.model import Invalid, Record


class Source(Protocol):
    """One feed's way in."""

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        """Download the feed; None when it has not changed since ``previous``."""

    def records(self, body: Body) -> Iterator[Record | Invalid]:
        """Stream the records of a downloaded body (blocking: run it off the loop)."""


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
        )

    async def fetch(self, previous: Validators, spool: Path) -> Body | None:
        return await fetch(request_for(self.feed), previous, spool)

    def records(self, body: Body) -> Iterator[Record | Invalid]:
        with open_body(body.path, self.feed.name) as stream:
            yield from parse_csv(stream, self.options, self.feed.name)


def request_for(feed: FeedConfig, url: str | None = None) -> Request:
    """The HTTP request settings of a feed: its headers, credentials and TLS."""
    headers = {"User-Agent": USER_AGENT}
    headers.update((name, secret.reveal()) for name, secret in feed.headers)
    if feed.username is not None:
        password = feed.password.reveal() if feed.password else ""
        headers["Authorization"] = basic_auth(feed.username, password)
    return Request(
        feed=feed.name,
        url=url or feed.url,
        headers=headers,
        verify_tls=feed.verify_tls,
        timeout=feed.timeout,
        max_bytes=feed.max_body_bytes,
    )


def source_for(feed: FeedConfig) -> Source:
    """The source that reads ``feed``."""
    if feed.type == "csv":
        return CsvSource(feed)
    raise ConfigError(f"feeds.{feed.name}.type", f"feed type {feed.type!r} is not supported yet")
