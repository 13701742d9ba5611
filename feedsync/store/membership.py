"""Which feeds' snapshots a supplier's merge takes (bodies.Target).

Its configured feeds, in configuration order, disabled ones included: a feed
with ``enabled: false`` is not run, and keeps in CyberTrace what it listed last.
Then the feeds removed from the configuration that the store still holds: an
edit that drops a feed must not wipe what it listed, so their deletions wait
like any the shrink guard holds (``feed.removed_held``, ``status``) until
``feedsync sync --force``, which forgets them; what only they listed is then
deleted by the same cycle's plan.
"""

from __future__ import annotations

from feedsync import logs
from feedsync.config import Config
from feedsync.store import FeedRow, Store, forget_feed, journal, now

log = logs.get("feedsync.sync")


async def members(
    config: Config, store: Store, supplier: str, *, force: bool, dry_run: bool
) -> list[tuple[str, FeedRow]]:
    """(name, row) of each feed the supplier's merge takes, in merge order."""
    rows = [
        (feed.name, await store.call(store.feed, feed.name, supplier))
        for feed in config.feeds
        if feed.supplier == supplier
    ]
    configured = {feed.name for feed in config.feeds}
    stored = await store.call(store.feeds)
    for row in stored:
        if row.supplier != supplier or row.name in configured:
            continue
        if force and not dry_run:
            await store.call(_forget, store, row)
            log.warning(
                "feed.forgotten", feed=row.name, supplier=supplier, indicators=row.indicators
            )
            continue
        if row.indicators:
            if not dry_run:
                await store.call(_note_held, store, row)
            log.warning(
                "feed.removed_held",
                feed=row.name,
                supplier=supplier,
                indicators=row.indicators,
                hint="removed from the configuration: its indicators stay until"
                " `feedsync sync --force` deletes those no other feed lists",
            )
        rows.append((row.name, row))
    return rows


FORCED = "the feed was removed from the configuration; forced by operator (sync --force)"


def _note_held(store: Store, row: FeedRow) -> None:
    with store.transaction() as db:
        journal.removed_held(db, now(db), row.name, row.supplier, row.indicators)


def _forget(store: Store, row: FeedRow) -> None:
    with store.transaction() as db:
        forget_feed(db, row.id, row.supplier, FORCED)
