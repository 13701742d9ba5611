"""Replacing a feed's snapshot with what its latest fetch said.

The new records are staged in a temporary table and compared with the stored
snapshot in SQL, set against set: an unchanged feed rewrites nothing, a 1%
change writes 1% of the rows. Every value whose content changed, appeared or
disappeared is marked dirty for its supplier in the same transaction, which
is what reconcile plans from.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import orjson

from feedsync.body import to_sql
from feedsync.model import Indicator, Invalid, Removal, Validators
from feedsync.store import FeedRow, journal
from feedsync.store.guard import (
    FULL_KEYS,
    LOADED_KEYS,
    Change,
    Guard,
    counted,
    guarded,
    loaded,
)
from feedsync.store.poison import NO_POISON, Poison

BATCH = 5000


def digest64(data: bytes) -> int:
    """A signed 64-bit content hash: what SQLite stores as an INTEGER.

    "Digest" names this hash only: a snapshot row's content (value, context,
    tags), as pending, acked and rejected keep it. A physical line's xxh3 is its
    *line hash* (feedsync.body), a body's SHA-256 its ``sha256`` (Validators), and
    the keys of a held fetch hash to ``held_digest`` (``_key_set_hash``)."""
    hashed = _copy()
    hashed.update(data)
    return int(_unpack(hashed.digest())[0])


# A prepared hash copied, and its bytes unpacked by a compiled struct: a million
# rows are digested per first sync, and keyword arguments cost a third of each.
_copy = hashlib.blake2b(digest_size=8).copy
_unpack = struct.Struct(">q").unpack
Row = tuple[str, str, str, str, str, int, float | None, int | None]
# The JSON of contexts and tags seen before: a feed repeats a few combinations
# over millions of rows. Bounded: cleared when full.
_CONTEXTS: dict[object, str] = {}
_TAGS: dict[object, str] = {}
_JSON_SIZE = 4096


def encode(indicator: Indicator) -> Row:
    """The snapshot row of an indicator: key, value, kind, context, tags, digest,
    expires, and the hash of its source line (as SQLite stores it)."""
    context = _CONTEXTS.get(indicator.context)
    if context is None:
        context = _json(_CONTEXTS, indicator.context, dict(indicator.context), orjson.OPT_SORT_KEYS)
    tags = _TAGS.get(indicator.tags)
    if tags is None:
        tags = _json(_TAGS, indicator.tags, indicator.tags, 0)
    value, kind, hashed = indicator.value, indicator.kind, indicator.line_hash
    content = f"{value}\x00{kind}\x00{context}\x00{tags}".encode()
    return (
        indicator.key,
        value,
        str(kind),
        context,
        tags,
        digest64(content),
        indicator.expires,
        None if hashed is None else to_sql(hashed),
    )


def _json(known: dict[object, str], key: object, data: object, option: int) -> str:
    if len(known) >= _JSON_SIZE:
        known.clear()
    text = known[key] = orjson.dumps(data, option=option).decode()
    return text


def replace(
    db: sqlite3.Connection,
    feed: FeedRow,
    items: Iterable[Indicator | Invalid | Removal],
    *,
    max_delete_ratio: float,
    force: bool,
    validators: Validators,
    on_invalid: Callable[[Invalid], None],
    poison: Poison = NO_POISON,
) -> Change:
    """Stage ``items`` and apply them as the feed's new snapshot, unless the
    shrink guard holds the change. Runs inside the caller's transaction."""
    stage_tables(db)
    reasons: Counter[str] = Counter()
    screened = journal.Screened(db, on_invalid)
    valid = _stage(db, items, reasons, screened)
    return replace_staged(
        db,
        feed,
        valid,
        reasons,
        max_delete_ratio=max_delete_ratio,
        force=force,
        validators=validators,
        screened=screened,
        poison=poison,
    )


def replace_staged(
    db: sqlite3.Connection,
    feed: FeedRow,
    valid: int,
    reasons: Counter[str],
    *,
    max_delete_ratio: float,
    force: bool,
    validators: Validators,
    screened: journal.Screened | None = None,
    poison: Poison = NO_POISON,
) -> Change:
    """Apply the whole new snapshot in ``stage`` (``valid`` rows were read into
    it, so duplicates are the difference), unless the shrink guard holds it."""
    total = db.execute("SELECT count(*) FROM stage").fetchone()[0]
    removed = db.execute(
        "SELECT count(*) FROM snapshot s WHERE s.feed_id = ?"
        " AND NOT EXISTS (SELECT 1 FROM stage t WHERE t.key = s.key)",
        (feed.id,),
    ).fetchone()[0]
    change = counted(
        reasons, fetched=total, duplicates=valid - total, removed=removed, before=feed.indicators
    )
    guard = Guard(max_delete_ratio, force, FULL_KEYS, "replace", screened, poison)
    return guarded(db, feed, change, total, guard, validators=validators)


def replace_loaded(
    db: sqlite3.Connection,
    feed: FeedRow,
    valid: int,
    reasons: Counter[str],
    candidates: list[tuple[str, str, str]],
    *,
    force: bool,
    validators: Validators,
    screened: journal.Screened | None = None,
    poison: Poison = NO_POISON,
) -> Change:
    """``replace_staged`` for a body loaded straight into the feed's empty snapshot
    (``valid`` rows were read into it; ``candidates`` are its canary rows)."""
    total = db.execute("SELECT count(*) FROM snapshot WHERE feed_id = ?", (feed.id,)).fetchone()[0]
    change = counted(
        reasons, fetched=total, duplicates=valid - total, removed=0, before=feed.indicators
    )
    guard = Guard(0.0, force, LOADED_KEYS, "replace", screened, poison)
    return loaded(db, feed, change, candidates, guard, validators=validators)


def is_empty(db: sqlite3.Connection, feed: FeedRow) -> bool:
    """Whether the feed's snapshot has no row (its first fetch, or every row gone)."""
    return (
        db.execute("SELECT 1 FROM snapshot WHERE feed_id = ? LIMIT 1", (feed.id,)).fetchone()
        is None
    )


def expire(db: sqlite3.Connection, feed: FeedRow, now: float) -> int:
    """Drop the feed's rows whose validity ended (between pulls too); returns how many.
    The source said when they end, so the shrink guard does not hold this."""
    params = {"feed": feed.id, "supplier": feed.supplier, "now": now}
    where = "feed_id = :feed AND expires IS NOT NULL AND expires <= :now"
    journal.feed_rows(
        db,
        now,
        feed.id,
        "unlisted",
        detail="expired (its valid_until passed)",
        where="expires IS NOT NULL AND expires <= :now",
    )
    db.execute(
        f"INSERT OR IGNORE INTO dirty (supplier, value) SELECT :supplier, value FROM snapshot"
        f" WHERE {where}",
        params,
    )
    gone = db.execute(f"DELETE FROM snapshot WHERE {where}", params).rowcount
    if gone:
        db.execute("UPDATE feeds SET indicators = indicators - ? WHERE id = ?", (gone, feed.id))
    return gone


def revalidate(db: sqlite3.Connection, feed: FeedRow, validators: Validators) -> None:
    """Keep the HTTP validators of a body whose content is the one applied (its
    SHA-256 did not change), so that the next conditional request can be a 304."""
    db.execute(
        "UPDATE feeds SET etag = ?, last_modified = ? WHERE id = ?",
        (validators.etag, validators.last_modified, feed.id),
    )


def stage_tables(db: sqlite3.Connection) -> None:
    """The temporary tables a change is staged in, created and emptied."""
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage (key TEXT PRIMARY KEY, value TEXT, kind TEXT,"
        " context TEXT, tags TEXT, digest INTEGER, expires REAL, line INTEGER) WITHOUT ROWID"
    )
    db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (key TEXT PRIMARY KEY) WITHOUT ROWID")
    db.execute("DELETE FROM stage")
    db.execute("DELETE FROM gone")
    journal.temp_tables(db)


def patch(
    db: sqlite3.Connection,
    feed: FeedRow,
    items: Iterable[Indicator | Invalid | Removal],
    *,
    max_delete_ratio: float,
    force: bool,
    validators: Validators,
    on_invalid: Callable[[Invalid], None],
    poison: Poison = NO_POISON,
) -> Change:
    """Apply an incremental fetch: upserts by key and ``Removal``s, in order
    (a later item about a key wins). The shrink guard counts the removals."""
    stage_tables(db)
    reasons: Counter[str] = Counter()
    screened = journal.Screened(db, on_invalid)
    for item in items:
        if isinstance(item, Removal):
            _remove(db, feed, item)
        elif isinstance(item, Invalid):
            reasons[item.reason] += 1
            screened(item)
            if item.key is not None:
                # An upsert whose new value is excluded: the value it had goes.
                _remove(db, feed, Removal(item.key, item.line, family=True))
        else:
            row = encode(item)
            db.execute("DELETE FROM gone WHERE key = ?", (row[0],))
            db.execute("INSERT OR REPLACE INTO stage VALUES (?,?,?,?,?,?,?,?)", row)
    params = {"feed": feed.id}
    removed = db.execute(
        "SELECT count(*) FROM snapshot WHERE feed_id = :feed AND key IN (SELECT key FROM gone)",
        params,
    ).fetchone()[0]
    new = db.execute(
        "SELECT count(*) FROM stage t WHERE NOT EXISTS"
        " (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key)",
        params,
    ).fetchone()[0]
    total = feed.indicators - removed + new
    staged = db.execute("SELECT count(*) FROM stage").fetchone()[0]
    change = counted(reasons, fetched=staged, removed=removed, before=feed.indicators)
    gone = "SELECT key FROM gone ORDER BY key"
    guard = Guard(max_delete_ratio, force, gone, "patch", screened, poison)
    return guarded(db, feed, change, total, guard, validators=validators)


def _remove(db: sqlite3.Connection, feed: FeedRow, item: Removal) -> None:
    if item.reason:
        journal.note_gone(db, [(item.key, item.reason)])
    db.execute("DELETE FROM stage WHERE key = ?", (item.key,))
    db.execute("INSERT OR IGNORE INTO gone VALUES (?)", (item.key,))
    if item.family:
        # "|" sorts right after the key's own prefix: a range scan on the primary key.
        bounds = (item.key + "|", item.key + "}")
        db.execute("DELETE FROM stage WHERE key >= ? AND key < ?", bounds)
        db.execute(
            "INSERT OR IGNORE INTO gone SELECT key FROM snapshot"
            " WHERE feed_id = ? AND key >= ? AND key < ?",
            (feed.id, *bounds),
        )


def _stage(
    db: sqlite3.Connection,
    items: Iterable[Indicator | Invalid | Removal],
    reasons: Counter[str],
    on_invalid: Callable[[Invalid], None],
) -> int:
    valid = 0
    hints: list[tuple[str, str]] = []
    rows = _rows(items, reasons, on_invalid, hints)
    while batch := list(islice(rows, BATCH)):
        valid += len(batch)
        # First occurrence wins: a feed listing a value twice keeps its first row's content.
        db.executemany("INSERT OR IGNORE INTO stage VALUES (?,?,?,?,?,?,?,?)", batch)
        journal.note_gone(db, hints)
        hints.clear()
    journal.note_gone(db, hints)
    return valid


def _rows(
    items: Iterable[Indicator | Invalid | Removal],
    reasons: Counter[str],
    on_invalid: Callable[[Invalid], None],
    hints: list[tuple[str, str]],
) -> Iterator[Row]:
    for item in items:
        if isinstance(item, Invalid):
            reasons[item.reason] += 1
            on_invalid(item)
        elif isinstance(item, Indicator):
            yield encode(item)
        elif item.reason:
            # In a full snapshot absent is removed; a source's word says why (journal).
            hints.append((item.key, item.reason))
