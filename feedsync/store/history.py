"""The run history the store keeps, read for ``feedsync history`` and shown newest first.

The ``runs`` table keeps the last ``store.RUNS_KEPT_PER_FEED`` cycles of each feed.

Read from the state database alone, read-only like ``status``: it works while
the daemon runs, without CyberTrace's secret or the network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from feedsync.config import Config
from feedsync.redact import plain
from feedsync.store import Store, connection
from feedsync.store.statefile import translated

DEFAULT_LIMIT = 20


@translated
def feeds_named(store: Store, config: Config, name: str | None) -> list[str] | None:
    """The feeds whose runs ``name`` asks for: all (None), the feed of that name,
    or the feeds of that supplier (configured now, or recorded in the store: a
    feed removed from the configuration keeps its history). Empty: unknown."""
    if name is None:
        return None
    rows = connection(store).execute("SELECT name, supplier FROM feeds")
    stored = {row[0]: row[1] for row in rows}
    configured = {feed.name: feed.supplier for feed in config.feeds}
    if name in configured or name in stored:
        return [name]
    return sorted({feed for feed, supplier in (stored | configured).items() if supplier == name})


@translated
def read(store: Store, feeds: Sequence[str] | None, limit: int) -> list[dict[str, Any]]:
    """The runs of ``feeds`` (None: every feed), newest first, at most ``limit``."""
    where, params = "", list[object]()
    if feeds is not None:
        where = f"WHERE feed IN ({','.join('?' * len(feeds))})"
        params.extend(feeds)
    rows = connection(store).execute(
        "SELECT feed, started, finished, result, fetched, invalid, added, changed, removed,"
        f" held, error FROM runs {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    return [
        {
            "feed": r["feed"],
            "started": r["started"],
            "finished": r["finished"],
            "seconds": round(max(0.0, r["finished"] - r["started"]), 3),
            "result": r["result"],
            "fetched": r["fetched"],
            "invalid": r["invalid"],
            "added": r["added"],
            "changed": r["changed"],
            "removed": r["removed"],
            "held": r["held"],
            "error": plain(r["error"]) if r["error"] else None,
        }
        for r in rows
    ]


@translated
def failing_streaks(store: Store) -> dict[str, tuple[float, int]]:
    """Per feed failing now: when its current run of failures began, and how many."""
    rows = connection(store).execute(
        "SELECT r.feed, min(r.finished), count(*) FROM runs r WHERE r.result = 'failed'"
        " AND r.id > coalesce((SELECT max(o.id) FROM runs o WHERE o.feed = r.feed"
        " AND o.result != 'failed'), 0) GROUP BY r.feed"
    )
    return {feed: (since, attempts) for feed, since, attempts in rows}


def as_json(runs: list[dict[str, Any]]) -> str:
    return orjson.dumps(runs, option=orjson.OPT_INDENT_2).decode()


def as_text(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no runs recorded"
    lines = [
        "FINISHED (UTC)        FEED                 RESULT     FETCHED  INVALID    ADDED"
        "  CHANGED  REMOVED     HELD  SECONDS"
    ]
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["finished"]))
        lines.append(
            f"{when:<21} {r['feed']:<20} {r['result']:<9} {r['fetched']:>8} {r['invalid']:>8}"
            f" {r['added']:>8} {r['changed']:>8} {r['removed']:>8} {r['held']:>8}"
            f" {r['seconds']:>8.2f}"
        )
        if r["error"]:
            lines.append(f"  error: {r['error']}")
    return "\n".join(lines)
