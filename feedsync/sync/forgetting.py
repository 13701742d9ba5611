"""``feedsync forget FEED``: delete on purpose what only that feed listed.

For a feed that no longer runs: one with ``enabled: false`` (which otherwise
keeps what it listed) or one removed from the configuration (whose deletions the
guard holds otherwise). Its snapshot goes, the journal says "forgotten by
operator" of each value, and its supplier's plan deletes the values no other feed
lists, at once. An enabled feed is refused: its next run would list them again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from feedsync.config import Config
from feedsync.cybertrace import CyberTrace
from feedsync.store import FeedRow, Store
from feedsync.sync import Cycle

WHY = "forgotten by operator (feedsync forget)"


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What the CLI prints, and its exit code (2: refused, 1: not all sent)."""

    output: str = ""
    error: str = ""
    exit: int = 0


def refused(config: Config, name: str, stored: dict[str, FeedRow]) -> str | None:
    """Why ``forget NAME`` cannot run, or None."""
    configured = {feed.name: feed for feed in config.feeds}
    feed = configured.get(name)
    if feed is not None and feed.enabled:
        return (
            f"feed {name} is enabled: its next run would list its indicators again; set"
            " `enabled: false` or remove it from the configuration first"
        )
    if feed is None and name not in stored:
        return f"no feed named {name!r} in the configuration or the state database"
    return None


async def forget(
    config: Config,
    store: Store,
    name: str,
    *,
    client: CyberTrace | None = None,
    locks: dict[str, asyncio.Lock] | None = None,
) -> Forgotten:
    stored = {row.name: row for row in await store.call(store.feeds)}
    problem = refused(config, name, stored)
    if problem is not None:
        return Forgotten(error=problem, exit=2)
    row = stored.get(name)
    if row is None:
        return Forgotten(output=f"feed {name} lists nothing: nothing to forget")
    cycle = Cycle(config, store, locks=locks, client=client)
    report = await cycle.forget(row, WHY)
    output = (
        f"forgot feed {name} and the {row.indicators} indicators it listed;"
        f" {row.supplier}: deleted {report.sent.delete} that no other feed lists,"
        f" {report.pending} pending"
    )
    if report.error:
        return Forgotten(output=output, error=report.error, exit=1)
    return Forgotten(output=output)
