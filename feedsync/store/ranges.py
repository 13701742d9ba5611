"""Pending ranges: a first plan's adds, kept as value ranges of the feeds' snapshots.

A supplier's first plan (firstplan.py) adds every value its feeds list. Instead
of a pending row per value, body and all, it writes one row of ``pending_range``
(migration 12): "every value these feeds list between ``lo`` and ``hi`` (both
exclusive; '' from the start, NULL to the end) is a pending add, its body made by
``put_body`` from the snapshots when it is cut". Settling removes the values
CyberTrace answered for from the ranges; what it did not stays inside one.

Invariants: a value inside a range is in none of ``pending``, ``acked`` and
``rejected``; every change of a snapshot marks its values dirty, so a plan that
finds a dirty value inside a range first turns the ranges into pending rows
(``materialize``), and the general plan decides those values as it would have.
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from feedsync.store.bodies import Target, put_body, single_put_payloads
from feedsync.store.snapshot import digest64

CHUNK = 5000

Listing = list[tuple[int, str, str]]  # (feed id, context, tags) of the rows listing a value


def write(db: sqlite3.Connection, target: Target, at: float) -> None:
    """The supplier's whole plan: every value its feeds list is an add."""
    shape = {
        "feed_ids": list(target.feed_ids),
        "feed_names": list(target.feed_names),
        "send_context": target.send_context,
        "send_tags": target.send_tags,
        "unmark_detections": target.unmark_detections,
    }
    db.execute(
        "INSERT INTO pending_range (supplier, lo, hi, target, planned_at)"
        " VALUES (?, '', NULL, ?, ?)",
        (target.supplier, orjson.dumps(shape).decode(), at),
    )


def exists(db: sqlite3.Connection, supplier: str) -> bool:
    row = db.execute("SELECT 1 FROM pending_range WHERE supplier = ? LIMIT 1", (supplier,))
    return row.fetchone() is not None


def _ranges(db: sqlite3.Connection, supplier: str) -> list[tuple[str, str | None, Target, float]]:
    rows = db.execute(
        "SELECT lo, hi, target, planned_at FROM pending_range WHERE supplier = ? ORDER BY lo",
        (supplier,),
    ).fetchall()
    return [(row[0], row[1], _target(supplier, row[2]), row[3]) for row in rows]


def _target(supplier: str, text: str) -> Target:
    shape = orjson.loads(text)
    return Target(
        supplier,
        tuple(shape["feed_ids"]),
        tuple(shape["feed_names"]),
        send_context=shape["send_context"],
        send_tags=shape["send_tags"],
        unmark_detections=shape["unmark_detections"],
    )


def listed(
    db: sqlite3.Connection, target: Target, lo: str, hi: str | None
) -> Iterator[tuple[str, Listing]]:
    """Each value the target's feeds list strictly between ``lo`` and ``hi``, by
    value, with its rows (as plan_first merges them)."""
    streams = [_rows(db, feed_id, lo, hi) for feed_id in target.feed_ids]
    merged = heapq.merge(*streams, key=_value_of)
    for value, group in itertools.groupby(merged, key=_value_of):
        yield value, [row[1:] for row in group]


def _rows(
    db: sqlite3.Connection, feed_id: int, lo: str, hi: str | None
) -> Iterator[tuple[str, int, str, str]]:
    """A feed's rows keyed by their value, in (lo, hi)."""
    for rows in _chunks(db, "value, feed_id, context, tags", feed_id, lo, hi):
        yield from rows


def _chunks(
    db: sqlite3.Connection, columns: str, feed_id: int, lo: str, hi: str | None
) -> Iterator[list[Any]]:
    """``columns`` (the value first) of a feed's rows keyed by their value, in (lo, hi),
    by value, a chunk at a time."""
    # Two forms, not "(? IS NULL OR key < ?)": that would read past ``hi`` to the end.
    bound = "" if hi is None else " AND key < :hi"
    query = (
        f"SELECT {columns} FROM snapshot WHERE feed_id = :feed"
        f" AND key > :after{bound} AND value = key ORDER BY key LIMIT :limit"
    )
    params = {"feed": feed_id, "after": lo, "hi": hi, "limit": CHUNK}
    cursor = db.cursor()
    cursor.row_factory = None  # plain tuples: a million rows are read this way
    while rows := cursor.execute(query, params).fetchall():
        yield rows
        if len(rows) < CHUNK:
            return
        params["after"] = rows[-1][0]


def _value_of(row: tuple[str, int, str, str]) -> str:
    return row[0]


Chunk = tuple[list[str], list[int], list[bytes], float]  # values, digests, bodies, planned_at


def items(db: sqlite3.Connection, supplier: str) -> Iterator[tuple[str, int, str, float]]:
    """Every pending add the supplier's ranges hold: (value, digest, body, planned_at),
    by value (``chunks`` an item at a time, the bodies as text)."""
    for values, digests, bodies, at in chunks(db, supplier):
        yield from zip(values, digests, map(bytes.decode, bodies), itertools.repeat(at))


def chunks(db: sqlite3.Connection, supplier: str) -> Iterator[Chunk]:
    """Every pending add the supplier's ranges hold, by value, a chunk at a time: the
    values, their digests, their bodies as UTF-8 (encoded once, for both the digest
    and the request) and the plan's time. The ranges are read once: settling
    meanwhile only removes values already cut."""
    for lo, hi, target, at in _ranges(db, supplier):
        if len(target.feed_ids) == 1:
            # One feed lists each value once: no merge, and a chunk's bodies are made
            # by one comprehension, from the JSON columns as stored, read as bytes.
            feed_id = target.feed_ids[0]
            columns = "value, CAST(context AS BLOB), CAST(tags AS BLOB)"
            for rows in _chunks(db, columns, feed_id, lo, hi):
                bodies = single_put_payloads(target, feed_id, rows)
                yield [row[0] for row in rows], list(map(digest64, bodies)), bodies, at
            continue
        position = {feed_id: index for index, feed_id in enumerate(target.feed_ids)}
        merged = listed(db, target, lo, hi)
        while group := list(itertools.islice(merged, CHUNK)):
            bodies = [put_body(v, listing, target, position).encode() for v, listing in group]
            yield [value for value, _listing in group], list(map(digest64, bodies)), bodies, at


def count(db: sqlite3.Connection, supplier: str) -> int:
    """How many values the supplier's ranges hold."""
    total = 0
    for lo, hi, target, _at in _ranges(db, supplier):
        bound = "" if hi is None else " AND key < :hi"
        each = [
            f"SELECT key FROM snapshot WHERE feed_id = {int(feed_id)} AND key > :lo{bound}"
            " AND value = key"
            for feed_id in target.feed_ids
        ]
        if not each:
            continue
        query = f"SELECT count(*) FROM ({' UNION '.join(each)})"
        total += db.execute(query, {"lo": lo, "hi": hi}).fetchone()[0]
    return total


def find(db: sqlite3.Connection, supplier: str, value: str) -> tuple[str, float] | None:
    """The body and plan time of ``value`` when a range of the supplier holds it."""
    row = db.execute(
        "SELECT hi, target, planned_at FROM pending_range WHERE supplier = ? AND lo < ?"
        " ORDER BY lo DESC LIMIT 1",
        (supplier, value),
    ).fetchone()
    if row is None or (row[0] is not None and row[0] <= value):
        return None
    target = _target(supplier, row[1])
    feeds = ",".join(str(int(feed_id)) for feed_id in target.feed_ids) or "NULL"
    listing = db.execute(
        f"SELECT feed_id, context, tags FROM snapshot WHERE feed_id IN ({feeds})"
        " AND key = ?1 AND value = ?1",
        (value,),
    ).fetchall()
    if not listing:
        return None
    position = {feed_id: index for index, feed_id in enumerate(target.feed_ids)}
    rows = [(r[0], r[1], r[2]) for r in listing]
    return put_body(value, rows, target, position), row[2]


def tags(db: sqlite3.Connection, supplier: str) -> set[str]:
    """Every tag the bodies of the supplier's ranges name (the union of their rows')."""
    found: set[str] = set()
    for lo, hi, target, _at in _ranges(db, supplier):
        if not target.send_tags:
            continue
        bound = "" if hi is None else " AND key < :hi"
        for feed_id in target.feed_ids:
            # Distinct tag lists, not each row's tags: a million rows share a few.
            rows = db.execute(
                f"SELECT DISTINCT tags FROM snapshot WHERE feed_id = :feed AND key > :lo{bound}"
                " AND value = key",
                {"feed": feed_id, "lo": lo, "hi": hi},
            )
            for (text,) in rows:
                found.update(orjson.loads(text))
    return found


def remove(db: sqlite3.Connection, supplier: str, runs: Iterable[tuple[str, str]]) -> None:
    """Take each run (first, last value) of values CyberTrace answered for out of
    the ranges; what is left of a range that holds no value listed or dirty goes."""
    for first, last in runs:
        overlapping = db.execute(
            "SELECT lo, hi, target, planned_at FROM pending_range WHERE supplier = ?"
            " AND lo < ? AND (hi IS NULL OR hi > ?)",
            (supplier, last, first),
        ).fetchall()
        for lo, hi, text, at in overlapping:
            db.execute("DELETE FROM pending_range WHERE supplier = ? AND lo = ?", (supplier, lo))
            target = _target(supplier, text)
            pieces = []
            if lo < first:
                pieces.append((lo, first))
            if hi is None or hi > last:
                pieces.append((last, hi))
            for piece_lo, piece_hi in pieces:
                if _holds(db, target, piece_lo, piece_hi):
                    db.execute(
                        "INSERT INTO pending_range (supplier, lo, hi, target, planned_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (supplier, piece_lo, piece_hi, text, at),
                    )


def _holds(db: sqlite3.Connection, target: Target, lo: str, hi: str | None) -> bool:
    """Whether a value in (lo, hi) is listed, or dirty: a dirty one may have been
    sent unconfirmed and unlisted since, and its plan must see it was pending."""
    if _dirty_in(db, target.supplier, lo, hi, first=True):
        return True
    bound = "" if hi is None else " AND key < :hi"
    for feed_id in target.feed_ids:
        found = db.execute(
            f"SELECT 1 FROM snapshot WHERE feed_id = :feed AND key > :lo{bound}"
            " AND value = key LIMIT 1",
            {"feed": feed_id, "lo": lo, "hi": hi},
        ).fetchone()
        if found is not None:
            return True
    return False


def dirty_inside(db: sqlite3.Connection, supplier: str) -> bool:
    """Whether a value marked dirty lies inside one of the supplier's ranges."""
    return any(
        _dirty_in(db, supplier, lo, hi, first=True)
        for lo, hi, _target, _at in _ranges(db, supplier)
    )


def _dirty_in(
    db: sqlite3.Connection, supplier: str, lo: str, hi: str | None, *, first: bool = False
) -> list[str]:
    """The supplier's dirty values in (lo, hi) in value order; with ``first``, at most one."""
    bound = "" if hi is None else " AND value < :hi"
    limit = " LIMIT 1" if first else ""
    rows = db.execute(
        f"SELECT value FROM dirty WHERE supplier = :supplier AND value > :lo{bound}{limit}",
        {"supplier": supplier, "lo": lo, "hi": hi},
    ).fetchall()
    return [value for (value,) in rows]


def materialize(db: sqlite3.Connection, supplier: str) -> None:
    """Turn the supplier's ranges into the pending rows an eager plan would hold:
    an add of each value listed now, and a placeholder add of each dirty value
    inside a range no feed lists now (it may have been sent: its plan deletes it)."""
    insert = (
        "INSERT INTO pending (supplier, value, op, digest, body, planned_at)"
        " VALUES (?, ?, 'add', ?, ?, ?) ON CONFLICT (supplier, value) DO NOTHING"
    )
    # Listed values first, so that a dirty value still listed gets its real body.
    cut = ((supplier, v, d, b, at) for v, d, b, at in items(db, supplier))
    while chunk := list(itertools.islice(cut, CHUNK)):
        db.executemany(insert, chunk)
    for lo, hi, _target, at in _ranges(db, supplier):
        dirty = _dirty_in(db, supplier, lo, hi)
        db.executemany(
            insert,
            [(supplier, v, None, orjson.dumps({"indicator": v}).decode(), at) for v in dirty],
        )
    db.execute("DELETE FROM pending_range WHERE supplier = ?", (supplier,))
