"""Replacing a feed's snapshot with what its latest fetch said.

The new records are staged in a temporary table and compared with the stored
snapshot in SQL, set against set: an unchanged feed rewrites nothing, a 1%
change writes 1% of the rows. Every value whose content changed, appeared or
disappeared is marked dirty for its supplier in the same transaction, which
is what reconcile plans from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Literal

import orjson

from feedsync.body import to_sql
from feedsync.model import Indicator, Invalid, Removal, Validators
from feedsync.safety.exclusions import split_reasons
from feedsync.store import FeedRow, journal, now
from feedsync.store.poison import NO_POISON, Poison, added_digest, poisoned

BATCH = 5000


@dataclass(frozen=True, slots=True)
class Change:
    """What one fetch did (or would have done) to a feed's snapshot."""

    fetched: int = 0
    invalid: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    excluded: int = 0  # values left out by the feed's exclusions (exclusions.py)
    excluded_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    before: int = 0
    held: bool = False
    held_reason: str | None = None
    lines: int = 0  # lines in the body, for sources read line by line
    lines_read: int = 0  # of which parsed and normalized (lines.py reads only changed ones)
    # Rows kept whose context or tags had bytes the feed's encoding cannot read, among
    # the lines read (an unchanged line is not read again, so not counted again).
    replaced: int = 0


def counted(
    reasons: Mapping[str, int], *, fetched: int, duplicates: int = 0, removed: int, before: int
) -> Change:
    """The change of a fetch whose rows left out were ``reasons`` (invalid or excluded)."""
    invalid, excluded = split_reasons(reasons)
    return Change(
        fetched=fetched,
        invalid=sum(invalid.values()),
        invalid_reasons=invalid,
        excluded=sum(excluded.values()),
        excluded_reasons=excluded,
        duplicates=duplicates,
        removed=removed,
        before=before,
    )


def digest64(data: bytes) -> int:
    """A signed 64-bit content hash: what SQLite stores as an INTEGER.

    "Digest" names this hash only: a snapshot row's content (value, context,
    tags), as pending, acked and rejected keep it. A physical line's xxh3 is its
    *line hash* (feedsync.body), a body's SHA-256 its ``sha256`` (Validators), and
    the keys of a held fetch hash to ``held_digest`` (``_key_set_hash``)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


Row = tuple[str, str, str, str, str, int, float | None, int | None]
# Which snapshot rows a staged change replaces: all of a feed's ("replace"), those of
# the keys a line diff touched ("delta"), or those a patch names ("patch").
Outgoing = Literal["replace", "delta", "patch"]


def encode(indicator: Indicator) -> Row:
    """The snapshot row of an indicator: key, value, kind, context, tags, digest,
    expires, and the hash of its source line (as SQLite stores it)."""
    context = orjson.dumps(dict(indicator.context), option=orjson.OPT_SORT_KEYS).decode()
    tags = orjson.dumps(indicator.tags).decode()
    content = f"{indicator.value}\x00{indicator.kind}\x00{context}\x00{tags}".encode()
    digest = digest64(content)
    return (
        indicator.key,
        indicator.value,
        str(indicator.kind),
        context,
        tags,
        digest,
        indicator.expires,
        None if indicator.line_hash is None else to_sql(indicator.line_hash),
    )


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


@dataclass(frozen=True, slots=True)
class Guard:
    """The shrink guard's settings, what identifies a held change (a query of
    its keys), and how the staged rows replace the snapshot (``_OUTGOING``)."""

    ratio: float
    force: bool
    keys: str
    mode: Outgoing
    screened: journal.Screened | None = None  # flushed before the change is journaled
    poison: Poison = NO_POISON  # the poison guard beside it (poison.py)


def guarded(
    db: sqlite3.Connection,
    feed: FeedRow,
    change: Change,
    total: int,
    guard: Guard,
    *,
    validators: Validators,
) -> Change:
    """Hold a change that shrinks the feed too much, or that the poison guard
    finds poisoned, or apply it."""
    if guard.screened is not None:
        guard.screened.flush()
    shrink = _shrink(change.before, total, change.removed, guard.ratio)
    journaled = _journaled(db, feed, change, guard, shrink)
    poison = None if guard.force else poisoned(db, feed, change.before, guard.poison)
    if poison is not None:
        keys = hashlib.sha256(
            (_key_set_hash(db, guard.keys, feed) + added_digest(db, feed)).encode()
        ).hexdigest()
        if keys != feed.held_digest:
            journal.held(db, journaled, f"held by the poison guard: {poison}")
            _hold(db, feed, change.removed, total, keys)
            return dataclasses.replace(change, held=True, held_reason=shrink or poison)
    elif shrink is not None and not guard.force:
        keys = _key_set_hash(db, guard.keys, feed)
        # A shrink stands once a second fetch yields the very same set; an empty one never does.
        if total == 0 or keys != feed.held_digest:
            if keys != feed.held_digest:  # journaled once per held change, not per fetch
                journal.held(db, journaled, f"held by the shrink guard: {shrink}")
            _hold(db, feed, change.removed, total, keys)
            return dataclasses.replace(change, held=True, held_reason=shrink)
    added, changed = _apply(db, feed, total, change, validators, mode=guard.mode, log=journaled)
    return dataclasses.replace(change, added=added, changed=changed)


def _journaled(
    db: sqlite3.Connection, feed: FeedRow, change: Change, guard: Guard, shrink: str | None
) -> journal.FeedChange:
    suffix = ""
    if shrink is not None:
        suffix = (
            f"; forced by operator over the shrink guard ({shrink})"
            if guard.force
            else "; held by the shrink guard, then confirmed by an identical fetch"
        )
    return journal.FeedChange(
        feed_id=feed.id,
        feed=feed.name,
        supplier=feed.supplier,
        at=now(db),
        gone=_GONE[guard.mode],
        added=0,
        changed=0,
        removed=change.removed,
        suffix=suffix,
    )


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


def _shrink(before: int, total: int, removed: int, ratio: float) -> str | None:
    if before == 0 or removed == 0:
        return None
    if total == 0:
        return f"the fetch is empty and would remove all {before} indicators"
    if removed / before > ratio:
        return (
            f"the fetch would remove {removed} of {before} indicators"
            f" ({removed / before:.0%}, over max_delete_ratio {ratio:g})"
        )
    return None


def _key_set_hash(db: sqlite3.Connection, query: str, feed: FeedRow) -> str:
    """The SHA-256 of the keys a held fetch would leave (kept as ``held_digest``,
    the column's name since migration 1): what tells a repeated shrink."""
    keys = hashlib.sha256()
    for (key,) in db.execute(query, {"feed": feed.id}):
        keys.update(key.encode())
        keys.update(b"\x00")
    return keys.hexdigest()


def _hold(db: sqlite3.Connection, feed: FeedRow, removed: int, total: int, keys: str) -> None:
    db.execute(
        "UPDATE feeds SET held_removals = ?, held_total = ?, held_digest = ?,"
        " held_since = coalesce(held_since, ?) WHERE id = ?",
        (removed, total, keys, now(db), feed.id),
    )


# What identifies a full replacement held by the shrink guard: the keys it removes
# and adds (the same whether the body was read whole or by its changed lines).
FULL_KEYS = (
    "SELECT '-' || s.key FROM snapshot s WHERE s.feed_id = :feed"
    " AND NOT EXISTS (SELECT 1 FROM stage t WHERE t.key = s.key)"
    " UNION ALL SELECT '+' || t.key FROM stage t WHERE NOT EXISTS"
    " (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key) ORDER BY 1"
)

# Snapshot rows (alias s) that a change takes out: under a full replacement every
# row the new fetch does not repeat verbatim; under a patch the removed rows and
# those the patch rewrites; under a delta (a replacement staged only for the keys
# its changed lines touch) the touched rows not repeated verbatim.
_OUTGOING: dict[Outgoing, str] = {
    "replace": "NOT EXISTS (SELECT 1 FROM stage t WHERE t.key = s.key AND t.digest = s.digest)",
    "delta": "s.key IN (SELECT key FROM touched) AND NOT EXISTS"
    " (SELECT 1 FROM stage t WHERE t.key = s.key AND t.digest = s.digest)",
    "patch": "(s.key IN (SELECT key FROM gone)"
    " OR EXISTS (SELECT 1 FROM stage t WHERE t.key = s.key AND t.digest != s.digest))",
}
# Of those, the rows whose key goes away (the others are rewritten in place).
_GONE = {
    "replace": "NOT EXISTS (SELECT 1 FROM stage t WHERE t.key = s.key)",
    "delta": "s.key IN (SELECT key FROM touched)"
    " AND NOT EXISTS (SELECT 1 FROM stage t WHERE t.key = s.key)",
    "patch": "s.key IN (SELECT key FROM gone)",
}


def _apply(
    db: sqlite3.Connection,
    feed: FeedRow,
    total: int,
    change: Change,
    validators: Validators,
    *,
    mode: Outgoing = "replace",
    log: journal.FeedChange | None = None,
) -> tuple[int, int]:
    params = {"feed": feed.id, "supplier": feed.supplier}
    outgoing = _OUTGOING[mode]
    added = db.execute(
        "SELECT count(*) FROM stage t WHERE NOT EXISTS"
        " (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key)",
        params,
    ).fetchone()[0]
    changed = db.execute(
        "SELECT count(*) FROM stage t CROSS JOIN snapshot s ON s.feed_id = :feed AND s.key = t.key"
        " WHERE s.digest != t.digest",
        params,
    ).fetchone()[0]
    if log is not None:
        journal.applied(db, dataclasses.replace(log, added=added, changed=changed))
    db.execute(
        "INSERT OR IGNORE INTO dirty (supplier, value) SELECT :supplier, s.value FROM snapshot s"
        f" WHERE s.feed_id = :feed AND {outgoing}",
        params,
    )
    db.execute(
        "INSERT OR IGNORE INTO dirty (supplier, value) SELECT :supplier, t.value FROM stage t"
        " WHERE NOT EXISTS (SELECT 1 FROM snapshot s"
        " WHERE s.feed_id = :feed AND s.key = t.key AND s.digest = t.digest)",
        params,
    )
    db.execute("DELETE FROM snapshot AS s WHERE s.feed_id = :feed AND " + _GONE[mode], params)
    # Changed rows are rewritten in place: their key, and mostly their value, stay, so
    # fewer index pages are touched than by deleting and inserting them. A row whose
    # content stayed may still come from another line of a CSV body (lines.py).
    db.execute(
        "UPDATE snapshot SET (value, kind, context, tags, digest, expires, line) ="
        " (SELECT value, kind, context, tags, digest, expires, line FROM stage t"
        "  WHERE t.key = snapshot.key)"
        " WHERE feed_id = :feed AND key IN (SELECT key FROM stage)"
        " AND EXISTS (SELECT 1 FROM stage t WHERE t.key = snapshot.key"
        "  AND (t.digest != snapshot.digest OR t.line IS NOT snapshot.line))",
        params,
    )
    db.execute(
        "INSERT INTO snapshot (feed_id, key, value, kind, context, tags, digest, expires, line)"
        " SELECT :feed, key, value, kind, context, tags, digest, expires, line FROM stage t"
        " WHERE NOT EXISTS (SELECT 1 FROM snapshot s WHERE s.feed_id = :feed AND s.key = t.key)",
        params,
    )
    db.execute(
        "UPDATE feeds SET indicators = ?, invalid = ?, excluded = ?, etag = ?, last_modified = ?,"
        " sha256 = ?, cursor = ?, held_removals = NULL, held_total = NULL, held_digest = NULL,"
        " held_since = NULL WHERE id = ?",
        (
            total,
            change.invalid,
            orjson.dumps(change.excluded_reasons).decode(),
            validators.etag,
            validators.last_modified,
            validators.sha256,
            validators.cursor,
            feed.id,
        ),
    )
    # The stage stays until the next change empties it: line bookkeeping reads it.
    return added, changed
