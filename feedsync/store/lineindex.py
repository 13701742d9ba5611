"""The line index: the line hashes of a feed's last applied body, and their diff.

The hash of every line of the body last applied is kept in buckets by the
hash's top bits, one blob per bucket.

A new body is hashed line by line into the same buckets (``scan``) and
compared with the index bucket by bucket (``diff``): the sets compared are at
most a bucket, so memory does not grow with the feed, and they fit the CPU's
cache. Once the body is applied, its scan becomes the index (``keep``),
re-bucketed when the feed grew or shrank.
"""

from __future__ import annotations

import math
import sqlite3
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from feedsync.body import line_hash, open_body, physical_lines, to_sql
from feedsync.store import FeedRow

# Lines per bucket: a bucket's sets are what the diff holds in memory, and sets that
# fit in the CPU's cache compare several times faster than one set of a million.
BUCKET = 1 << 14
SPILL = 1 << 20  # hashes held before they go to a temporary table
MAX_REREAD = 1 << 18  # lines to re-read beyond which the whole body is read


def scan(db: sqlite3.Connection, path: Path, feed: str, bits: int) -> int:
    """Hash every line into ``scan`` (bucket, blob) rows; returns the line count."""
    parts = [array("Q") for _ in range(1 << bits)]
    routes = [part.append for part in parts]
    shift = 64 - bits
    held = 0
    count = 0
    with open_body(path, feed) as stream:
        for batch in physical_lines(stream, feed):
            count += len(batch)
            if bits == 0:
                parts[0].extend(map(line_hash, batch))
            else:
                for hashed in map(line_hash, batch):
                    routes[hashed >> shift](hashed)
            held += len(batch)
            if held >= SPILL:
                _spill(db, parts)
                held = 0
    _spill(db, parts)
    return count


def _spill(db: sqlite3.Connection, parts: list[array[int]]) -> None:
    db.executemany(
        "INSERT INTO scan (bucket, hashes) VALUES (?, ?)",
        [(bucket, part.tobytes()) for bucket, part in enumerate(parts) if part],
    )
    for part in parts:
        del part[:]


def _bucket(db: sqlite3.Connection, table: str, where: str, params: tuple[int, ...]) -> array[int]:
    hashes = array("Q")
    for (blob,) in db.execute(f"SELECT hashes FROM {table} WHERE {where}", params):
        hashes.frombytes(blob)
    return hashes


@dataclass(frozen=True, slots=True)
class Delta:
    added: set[int]
    removed: int


def diff(db: sqlite3.Connection, feed: FeedRow, bits: int) -> Delta | None:
    """Compare the scan with the feed's index, bucket by bucket: the added
    hashes in memory, the removed ones into ``gone_lines``; None when so many
    lines are new that a full read is as cheap."""
    added: set[int] = set()
    removed = 0
    for bucket in range(1 << bits):
        scanned = _bucket(db, "scan", "bucket = ?", (bucket,))
        new = set(scanned)
        if len(new) != len(scanned):
            # Lines repeated verbatim: each copy counts (as a duplicate or an invalid row).
            db.executemany(
                "INSERT INTO repeats VALUES (?, ?)",
                [(to_sql(h), n) for h, n in Counter(scanned).items() if n > 1],
            )
        del scanned
        old = _bucket(db, "line_index", "feed_id = ? AND bucket = ?", (feed.id, bucket))
        gone = [to_sql(hashed) for hashed in old if hashed not in new]
        db.executemany("INSERT OR IGNORE INTO gone_lines VALUES (?)", ((g,) for g in gone))
        removed += len(gone)
        new.difference_update(old)
        added |= new
        if len(added) > MAX_REREAD:
            return None
    return Delta(added, removed)


def keep(
    db: sqlite3.Connection, feed: FeedRow, signature: str | None, bits: int, wanted_bits: int
) -> None:
    """The scan becomes the feed's index, re-bucketed when the feed's size asks for it."""
    db.execute("DELETE FROM line_index WHERE feed_id = ?", (feed.id,))
    if wanted_bits <= bits:
        merge = 1 << (bits - wanted_bits)
        for bucket in range(1 << wanted_bits):
            span = (bucket * merge, (bucket + 1) * merge)
            _store_bucket(db, feed, bucket, _bucket(db, "scan", "bucket >= ? AND bucket < ?", span))
    else:
        shift = 64 - wanted_bits
        for old in range(1 << bits):
            split: dict[int, array[int]] = {}
            for hashed in _bucket(db, "scan", "bucket = ?", (old,)):
                split.setdefault(hashed >> shift, array("Q")).append(hashed)
            for bucket, hashes in split.items():
                _store_bucket(db, feed, bucket, hashes)
    db.execute(
        "UPDATE feeds SET layout = ?, line_bits = ? WHERE id = ?",
        (signature, wanted_bits, feed.id),
    )


def _store_bucket(db: sqlite3.Connection, feed: FeedRow, bucket: int, hashes: array[int]) -> None:
    if hashes:
        db.execute(
            "INSERT INTO line_index (feed_id, bucket, hashes) VALUES (?, ?, ?)",
            (feed.id, bucket, hashes.tobytes()),
        )


def bits_for_size(path: Path) -> int:
    # A first guess from the size (32 bytes a line); the index is re-bucketed once applied.
    return bits_for_lines(path.stat().st_size // 32)


def bits_for_lines(lines: int) -> int:
    return max(0, math.ceil(math.log2(max(lines, 1) / BUCKET)))


def forget(db: sqlite3.Connection, feed: FeedRow) -> None:
    """Drop the feed's index."""
    db.execute("DELETE FROM line_index WHERE feed_id = ?", (feed.id,))
    db.execute("UPDATE feeds SET layout = NULL, line_bits = NULL WHERE id = ?", (feed.id,))


def index_tables(db: sqlite3.Connection) -> None:
    """The temporary tables a scan and a diff fill, created and emptied."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS scan (bucket INTEGER, hashes BLOB)")
    db.execute("CREATE INDEX IF NOT EXISTS temp.scan_bucket ON scan (bucket)")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS gone_lines (hash INTEGER PRIMARY KEY)")
    db.execute("CREATE TEMP TABLE IF NOT EXISTS repeats (hash INTEGER PRIMARY KEY, n INTEGER)")
    for table in ("scan", "gone_lines", "repeats"):
        db.execute(f"DELETE FROM {table}")
