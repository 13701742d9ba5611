"""A staged change to a feed's snapshot: what it did, the guards that hold it, its application.

The shrink guard is here, the poison guard in poison.py.

``guarded`` is where every fetch's change passes: held (the feed's row records
what identifies it, so that an identical next fetch confirms it) or applied,
set against set in SQL, marking each value it touches dirty for its supplier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from feedsync.model import Validators
from feedsync.safety.exclusions import split_reasons
from feedsync.store import FeedRow, journal, now
from feedsync.store.poison import (
    LOADED,
    NO_POISON,
    Poison,
    added_digest,
    poisoned,
    poisoned_load,
)

# Which snapshot rows a staged change replaces: all of a feed's ("replace"), those of
# the keys a line diff touched ("delta"), or those a patch names ("patch").
Outgoing = Literal["replace", "delta", "patch"]


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


def loaded(
    db: sqlite3.Connection,
    feed: FeedRow,
    change: Change,
    candidates: list[tuple[str, str, str]],
    guard: Guard,
    *,
    validators: Validators,
) -> Change:
    """``guarded`` for a body loaded straight into the feed's empty snapshot: nothing
    is removed, so only the poison guard may hold it, and holding it empties the
    snapshot again (as it was)."""
    if guard.screened is not None:
        guard.screened.flush()
    total = change.fetched
    journaled = _journaled(db, feed, change, guard, None)
    params = {"feed": feed.id, "supplier": feed.supplier}
    if not guard.force:
        poison = poisoned_load(
            db, feed, candidates, guard.poison, before=change.before, added=total
        )
        if poison is not None:
            keys = hashlib.sha256(
                (_key_set_hash(db, LOADED_KEYS, feed) + added_digest(db, feed, LOADED)).encode()
            ).hexdigest()
            if keys != feed.held_digest:
                db.execute("DELETE FROM snapshot WHERE feed_id = :feed", params)
                journal.held(db, journaled, f"held by the poison guard: {poison}")
                _hold(db, feed, 0, total, keys)
                return dataclasses.replace(change, held=True, held_reason=poison)
    journal.applied(db, dataclasses.replace(journaled, added=total), loaded=True)
    if planned_before(db, feed.supplier):
        db.execute(
            "INSERT OR IGNORE INTO dirty (supplier, value)"
            " SELECT :supplier, value FROM snapshot WHERE feed_id = :feed",
            params,
        )
    _record_feed(db, feed, total, change, validators)
    return dataclasses.replace(change, added=total)


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

# FULL_KEYS of a body loaded into an empty snapshot: it removes none, adds every row.
LOADED_KEYS = "SELECT '+' || key FROM snapshot WHERE feed_id = :feed ORDER BY 1"

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
    """Make the staged rows the feed's snapshot (``mode`` says which rows they
    replace); returns how many were added and changed."""
    params = {"feed": feed.id, "supplier": feed.supplier}
    added, changed = _counts(db, params)
    if log is not None:
        journal.applied(db, dataclasses.replace(log, added=added, changed=changed))
    if planned_before(db, feed.supplier):
        _mark_dirty(db, params, mode)
    _write_rows(db, params, mode)
    _record_feed(db, feed, total, change, validators)
    # The stage stays until the next change empties it: line bookkeeping reads it.
    return added, changed


def _counts(db: sqlite3.Connection, params: Mapping[str, object]) -> tuple[int, int]:
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
    return int(added), int(changed)


def planned_before(db: sqlite3.Connection, supplier: str) -> bool:
    """Whether the supplier was ever planned: the first plan of one that was not
    compares every value it has (reconcile.mark_all_dirty), so marks are redundant."""
    found = db.execute("SELECT 1 FROM suppliers WHERE name = ?", (supplier,)).fetchone()
    return found is not None


def _mark_dirty(db: sqlite3.Connection, params: Mapping[str, object], mode: Outgoing) -> None:
    """Every value going out or coming in is compared again by the supplier's plan."""
    db.execute(
        "INSERT OR IGNORE INTO dirty (supplier, value) SELECT :supplier, s.value FROM snapshot s"
        f" WHERE s.feed_id = :feed AND {_OUTGOING[mode]}",
        params,
    )
    db.execute(
        "INSERT OR IGNORE INTO dirty (supplier, value) SELECT :supplier, t.value FROM stage t"
        " WHERE NOT EXISTS (SELECT 1 FROM snapshot s"
        " WHERE s.feed_id = :feed AND s.key = t.key AND s.digest = t.digest)",
        params,
    )


def _write_rows(db: sqlite3.Connection, params: Mapping[str, object], mode: Outgoing) -> None:
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


def _record_feed(
    db: sqlite3.Connection, feed: FeedRow, total: int, change: Change, validators: Validators
) -> None:
    """The feed's row after an applied change: its counts and validators, no hold."""
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
