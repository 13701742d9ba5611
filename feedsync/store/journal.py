"""The change journal (migration 10): why each value is, or is not, in CyberTrace.

Every change feedsync applies to a feed's snapshot or plans for a supplier, and
every one it refuses or CyberTrace refuses, is a row with its reason. Two levels,
as the facts arise: a feed's snapshot (``listed``, ``changed``, ``unlisted``,
``excluded``, ``held``: here) and a supplier's plan and answer (``add``,
``update``, ``delete``, ``refresh``, ``rejected``: planlog.py). ``feedsync why``
reads them back (story.py).

Cheap by construction: rows are written set against set (``INSERT ... SELECT``
from the tables the change is staged in) or one ``executemany`` per batch; never
a statement per value. One change of more than ``PER_VALUE_MAX`` values (the
first fetch of a big feed, a resync of a big supplier) is one row with its count
(``value`` NULL), which ``why`` shows for every value of that feed or supplier.
Retention is bounded by age and by rows (``prune``, state.journal_max_*).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from feedsync.model import Invalid
from feedsync.safety.exclusions import EXCLUDED

Event = Literal[
    "listed",
    "changed",
    "unlisted",
    "excluded",
    "held",
    "add",
    "update",
    "delete",
    "refresh",
    "rejected",
]
PER_VALUE_MAX = 50_000
BATCH = 5000
SHOWN = 50  # journal entries `why` shows by default
DETAIL_MAX = 500  # characters of a reason kept: the journal's size is rows x this at most

INSERT = "INSERT INTO journal (at, supplier, value, event, feed, detail, count)"


def temp_tables(db: sqlite3.Connection) -> None:
    """Why rows a change takes out went (a source's word, by key) and which values its
    exclusions left out (by value): the reasons ``applied`` journals. Emptied per change."""
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS why_gone (key TEXT PRIMARY KEY, reason TEXT NOT NULL)"
        " WITHOUT ROWID"
    )
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS screened (value TEXT PRIMARY KEY, reason TEXT NOT NULL)"
        " WITHOUT ROWID"
    )
    db.execute("DELETE FROM why_gone")
    db.execute("DELETE FROM screened")


def note_gone(db: sqlite3.Connection, reasons: Sequence[tuple[str, str]]) -> None:
    """(key, reason) of rows a source said are gone (revoked, soft-deleted, ...)."""
    db.executemany(
        "INSERT INTO why_gone (key, reason) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET reason = excluded.reason",
        reasons,
    )


@dataclass(slots=True)
class Screened:
    """An ``on_invalid`` that also keeps the values exclusions left out (and why),
    a batch at a time, for ``applied``; call ``flush`` before applying."""

    db: sqlite3.Connection
    forward: Callable[[Invalid], None]
    rows: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, invalid: Invalid) -> None:
        self.forward(invalid)
        if invalid.reason.startswith(EXCLUDED):
            self.rows.append((invalid.value, invalid.reason[len(EXCLUDED) :]))
            if len(self.rows) >= BATCH:
                self.flush()

    def flush(self) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO screened (value, reason) VALUES (?, ?)", self.rows
        )
        self.rows.clear()


@dataclass(frozen=True, slots=True)
class FeedChange:
    """One applied change of a feed's snapshot, for the journal: ``gone`` is the SQL
    condition (on snapshot alias ``s``) of the rows whose key it takes out."""

    feed_id: int
    feed: str
    supplier: str
    at: float
    gone: str
    added: int
    changed: int
    removed: int
    suffix: str = ""  # how a change the shrink guard stopped went through (--force, confirmed)


def applied(db: sqlite3.Connection, change: FeedChange, *, loaded: bool = False) -> None:
    """Journal a change before it is applied (the snapshot still holds the old rows,
    ``stage`` the new; ``loaded``: a body loaded into an empty snapshot, which holds
    the new): values listed, changed (which fields), unlisted (why), excluded."""
    params = {
        "feed_id": change.feed_id,
        "feed": change.feed,
        "supplier": change.supplier,
        "at": change.at,
    }
    if change.added:
        _listed(db, change, params, loaded)
    if change.changed:
        _changed(db, change, params)
    if change.removed:
        _unlisted(db, change, params, change.suffix)
    _excluded(db, params)


def _listed(
    db: sqlite3.Connection, change: FeedChange, params: dict[str, Any], loaded: bool
) -> None:
    if change.added > PER_VALUE_MAX:
        bulk(
            db,
            change.at,
            change.supplier,
            "listed",
            feed=change.feed,
            detail="",
            count=change.added,
        )
        return
    if loaded:
        db.execute(
            f"{INSERT} SELECT :at, :supplier, s.value, 'listed', :feed, '', 1 FROM snapshot s"
            " WHERE s.feed_id = :feed_id ORDER BY s.key",
            params,
        )
        return
    db.execute(
        f"{INSERT} SELECT :at, :supplier, t.value, 'listed', :feed, '', 1 FROM stage t"
        " WHERE NOT EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed_id"
        " AND s.key = t.key)",
        params,
    )


def _changed(db: sqlite3.Connection, change: FeedChange, params: dict[str, Any]) -> None:
    if change.changed > PER_VALUE_MAX:
        bulk(
            db,
            change.at,
            change.supplier,
            "changed",
            feed=change.feed,
            detail="",
            count=change.changed,
        )
        return
    rows = db.execute(
        "SELECT t.value, s.value, s.context, t.context, s.tags, t.tags FROM stage t"
        " CROSS JOIN snapshot s ON s.feed_id = :feed_id AND s.key = t.key"
        " WHERE s.digest != t.digest",
        params,
    )
    while batch := rows.fetchmany(BATCH):
        db.executemany(
            f"{INSERT} VALUES (?, ?, ?, 'changed', ?, ?, 1)",
            [
                (change.at, change.supplier, row[0], change.feed, fields_changed(row))
                for row in batch
            ],
        )


def fields_changed(row: Sequence[str]) -> str:
    """Which fields of a row (value, value before, context before and now, tags
    before and now) changed: ``context.NAME``, ``tags``, ``value``."""
    value, before, context_before, context, tags_before, tags = row
    old, new = orjson.loads(context_before), orjson.loads(context)
    names = [f"context.{k}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if tags_before != tags:
        names.append("tags")
    if before != value:
        names.insert(0, f"value (was {before})")
    return ", ".join(names) or "type"


def _unlisted(
    db: sqlite3.Connection, change: FeedChange, params: dict[str, Any], suffix: str
) -> None:
    if change.removed > PER_VALUE_MAX:
        detail = f"no longer in the feed{suffix}"
        bulk(
            db,
            change.at,
            change.supplier,
            "unlisted",
            feed=change.feed,
            detail=detail,
            count=change.removed,
        )
        return
    db.execute(
        f"{INSERT} SELECT :at, :supplier, s.value, 'unlisted', :feed, coalesce("
        " (SELECT w.reason FROM why_gone w WHERE w.key = s.key),"
        " (SELECT w.reason FROM why_gone w WHERE instr(s.key, '|') > 0"
        "  AND w.key = substr(s.key, 1, instr(s.key, '|') - 1)),"
        " (SELECT 'excluded (' || x.reason || ')' FROM screened x WHERE x.value = s.value),"
        f" 'no longer in the feed') || :suffix, 1 FROM snapshot s"
        f" WHERE s.feed_id = :feed_id AND {change.gone}",
        params | {"suffix": suffix},
    )


def _excluded(db: sqlite3.Connection, params: dict[str, Any]) -> None:
    """Values the feed lists that its exclusions leave out, each once: not again
    while its newest entry of this feed already says so (a full fetch re-excludes
    them every time), nor for one the feed listed until now (``unlisted`` says it)."""
    fresh = (
        " FROM screened x WHERE NOT EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed_id"
        " AND s.value = x.value AND s.key = x.value)"
        " AND NOT EXISTS (SELECT 1 FROM journal j WHERE j.id = (SELECT max(k.id) FROM journal k"
        " WHERE k.value = x.value AND k.feed = :feed) AND j.event = 'excluded'"
        " AND j.detail = x.reason)"
    )
    count = db.execute(f"SELECT count(*){fresh}", params).fetchone()[0]
    if count > PER_VALUE_MAX:
        bulk(
            db,
            params["at"],
            params["supplier"],
            "excluded",
            feed=params["feed"],
            detail="",
            count=count,
        )
    elif count:
        db.execute(
            f"{INSERT} SELECT :at, :supplier, x.value, 'excluded', :feed, x.reason, 1{fresh}",
            params,
        )


def held(db: sqlite3.Connection, change: FeedChange, reason: str) -> None:
    """A change the shrink guard holds: each value it would remove (once per held
    change: the caller journals only a new one)."""
    if change.removed > PER_VALUE_MAX:
        bulk(
            db,
            change.at,
            change.supplier,
            "held",
            feed=change.feed,
            detail=reason,
            count=change.removed,
        )
        return
    db.execute(
        f"{INSERT} SELECT :at, :supplier, s.value, 'held', :feed, :reason, 1 FROM snapshot s"
        f" WHERE s.feed_id = :feed_id AND {change.gone}",
        {
            "at": change.at,
            "supplier": change.supplier,
            "feed": change.feed,
            "feed_id": change.feed_id,
            "reason": reason,
        },
    )


def feed_rows(
    db: sqlite3.Connection, at: float, feed_id: int, event: Event, *, detail: str, where: str = "1"
) -> None:
    """Journal ``event`` for every snapshot row of a feed matching ``where`` (on
    ``snapshot`` columns, with ``:feed_id``, ``:now``), before they go."""
    row = db.execute("SELECT name, supplier FROM feeds WHERE id = ?", (feed_id,)).fetchone()
    if row is None:
        return
    params = {"at": at, "feed_id": feed_id, "now": at, "detail": detail}
    params |= {"feed": row[0], "supplier": row[1]}
    condition = f"feed_id = :feed_id AND {where}"
    count = db.execute(f"SELECT count(*) FROM snapshot WHERE {condition}", params).fetchone()[0]
    if count > PER_VALUE_MAX:
        bulk(db, at, row[1], event, feed=row[0], detail=detail, count=count)
    elif count:
        db.execute(
            f"{INSERT} SELECT :at, :supplier, value, '{event}', :feed, :detail, 1 FROM snapshot"
            f" WHERE {condition}",
            params,
        )


def bulk(
    db: sqlite3.Connection,
    at: float,
    supplier: str,
    event: Event,
    *,
    feed: str | None,
    detail: str,
    count: int,
) -> None:
    """One entry standing for ``count`` values."""
    db.execute(
        f"{INSERT} VALUES (?, ?, NULL, ?, ?, ?, ?)",
        (at, supplier, event, feed, detail[:DETAIL_MAX], count),
    )


def removed_held(db: sqlite3.Connection, at: float, feed: str, supplier: str, count: int) -> None:
    """A feed removed from the configuration whose deletions wait for --force: said
    once, not every cycle it still waits."""
    last = db.execute(
        "SELECT event, detail FROM journal WHERE value IS NULL AND feed = ?"
        " ORDER BY id DESC LIMIT 1",
        (feed,),
    ).fetchone()
    detail = REMOVED_HELD
    if last is None or tuple(last) != ("held", detail):
        bulk(db, at, supplier, "held", feed=feed, detail=detail, count=count)


REMOVED_HELD = (
    "the feed was removed from the configuration: its deletions wait for"
    " `feedsync sync --force` or `feedsync forget`"
)


def prune(db: sqlite3.Connection, now: float, max_age: float, max_rows: int) -> int:
    """Drop entries older than ``max_age`` seconds, then the oldest past ``max_rows``;
    returns how many went. Ids only grow and entries only go from the oldest end, so
    both cost what they delete (a walk from the oldest, not a scan)."""
    gone = db.execute(
        "DELETE FROM journal WHERE id < coalesce((SELECT id FROM journal WHERE at >= ?"
        " ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM journal))",
        (now - max_age,),
    ).rowcount
    gone += db.execute(
        "DELETE FROM journal WHERE id <= (SELECT max(id) FROM journal) - ?", (max_rows,)
    ).rowcount
    return gone
