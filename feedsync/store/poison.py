"""The poison guard, beside the shrink guard (guard.guarded).

A fetch that newly lists a canary value (safety/poison.py) or grows the feed by
more than ``max_growth_ratio`` times its size is held like a shrink, until the
next fetch yields the same change or an operator forces it.

It reads the staged rows (``stage``) against the feed's snapshot, inside the
change's transaction: only what the fetch adds is looked at, so a steady feed
costs nothing and a first fetch is checked once.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from feedsync.store import FeedRow

# Growth is judged from this many added indicators: a feed of 10 that lists 40
# tomorrow is ordinary; of 10,000 that lists 40,000, a feed gone wrong.
GROWTH_FLOOR = 100
SHOWN = 3  # canary values named in the reason

Canary = Callable[[str, str], str | None]  # (kind, canonical value) -> why, or None


@dataclass(frozen=True, slots=True)
class Poison:
    """A feed's poison guard settings: the growth ratio (0: off) and its canaries."""

    growth: float = 0.0
    canary: Canary | None = None


NO_POISON = Poison()  # the guard off: what callers that give none get

_ADDED = (
    "SELECT t.key, t.kind, t.value FROM stage t WHERE NOT EXISTS"
    " (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key) ORDER BY t.key"
)

# A body loaded straight into the feed's empty snapshot adds all of its rows.
LOADED = "SELECT key, kind, value FROM snapshot WHERE feed_id = :feed ORDER BY key"


def poisoned(db: sqlite3.Connection, feed: FeedRow, before: int, poison: Poison) -> str | None:
    """Why the staged change is poison, or None."""
    if poison.growth <= 0 and poison.canary is None:
        return None
    added, canaries = 0, []
    canary = poison.canary
    if canary is None:
        added = db.execute(f"SELECT count(*) FROM ({_ADDED})", {"feed": feed.id}).fetchone()[0]
    else:
        for _key, kind, value in db.execute(_ADDED, {"feed": feed.id}):
            added += 1
            if canary(kind, value) is not None and not _listed(db, feed, value):
                canaries.append(value)
    return _reason(canaries, added, before, poison)


def poisoned_load(
    db: sqlite3.Connection,
    feed: FeedRow,
    candidates: list[tuple[str, str, str]],
    poison: Poison,
    *,
    before: int,
    added: int,
) -> str | None:
    """Why a body loaded straight into the feed's empty snapshot is poison, or None:
    ``candidates`` are the rows read whose value is a canary (key, kind, value), of
    which those that won their key count (every loaded row is an added one)."""
    if poison.growth <= 0 and poison.canary is None:
        return None
    canaries = [
        value
        for key, kind, value in sorted(set(candidates))
        if db.execute(
            "SELECT 1 FROM snapshot WHERE feed_id = ? AND key = ? AND kind = ? AND value = ?",
            (feed.id, key, kind, value),
        ).fetchone()
    ]
    return _reason(canaries, added, before, poison)


def _reason(canaries: list[str], added: int, before: int, poison: Poison) -> str | None:
    if canaries:
        shown = ", ".join(canaries[:SHOWN]) + (
            f" and {len(canaries) - SHOWN} more" if len(canaries) > SHOWN else ""
        )
        return f"the fetch newly lists {len(canaries)} canary value(s): {shown}"
    if (
        poison.growth > 0
        and before > 0
        and added >= GROWTH_FLOOR
        and added > poison.growth * before
    ):
        return (
            f"the fetch would add {added} indicators to {before}"
            f" ({added / before:.1f}x, over max_growth_ratio {poison.growth:g})"
        )
    return None


def _listed(db: sqlite3.Connection, feed: FeedRow, value: str) -> bool:
    # Under another key (a CSV line that moved, a record re-keyed): not new.
    found = db.execute(
        "SELECT 1 FROM snapshot WHERE value = ? AND feed_id = ?", (value, feed.id)
    ).fetchone()
    return found is not None


def added_digest(db: sqlite3.Connection, feed: FeedRow, query: str = _ADDED) -> str:
    """What identifies the rows a held change adds (a patch's key digest has only
    its removals), so that a second fetch confirms the very same additions
    (``LOADED``: those of a body loaded into an empty snapshot)."""
    digest = hashlib.sha256()
    for key, _kind, value in db.execute(query, {"feed": feed.id}):
        digest.update(f"{key}\x00{value}\x00".encode())
    return digest.hexdigest()
