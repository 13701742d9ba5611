"""Provenance context fields: which feeds list an indicator, first and last sent.

Configured under ``provenance:``.

The feeds field is part of the body reconcile compares, so a second feed listing
a value makes it an update. The two dates are not: they are stamped on a body
only once it is planned (``stamp``), so an unchanged indicator is not re-sent to
move a date. ``first_seen`` is kept per supplier and value in ``seen``
(migration 10) from its first planned PUT until its DELETE is planned.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

CHUNK = 500  # values per lookup of ``seen`` (SQLite's bound parameters)

Write = tuple[str, str, int | None, str]  # op, value, digest, body


@dataclass(frozen=True, slots=True)
class Provenance:
    """The context field names (None: that field is not sent)."""

    feeds: str | None = None
    first_seen: str | None = None
    last_seen: str | None = None

    @property
    def dated(self) -> bool:
        return self.first_seen is not None or self.last_seen is not None


def stamp(
    db: sqlite3.Connection, supplier: str, writes: Sequence[Write], *, fields: Provenance, at: float
) -> list[Write]:
    """The planned writes with their PUT bodies dated; ``seen`` kept up to date."""
    puts = [w[1] for w in writes if w[0] != "delete"]
    db.executemany(
        "DELETE FROM seen WHERE supplier = ? AND value = ?",
        [(supplier, w[1]) for w in writes if w[0] == "delete"],
    )
    if not fields.dated or not puts:
        return list(writes)
    db.executemany(
        "INSERT OR IGNORE INTO seen (supplier, value, first_seen) VALUES (?, ?, ?)",
        [(supplier, value, at) for value in puts],
    )
    first: dict[str, float] = {}
    for start in range(0, len(puts), CHUNK):
        chunk = puts[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        first.update(
            db.execute(
                f"SELECT value, first_seen FROM seen WHERE supplier = ? AND value IN ({marks})",
                (supplier, *chunk),
            ).fetchall()
        )
    return [
        (op, value, digest, body if op == "delete" else _dated(body, fields, first[value], at))
        for op, value, digest, body in writes
    ]


def _dated(body: str, provenance: Provenance, first: float, last: float) -> str:
    parsed = orjson.loads(body)
    context = parsed.get("context")
    if not isinstance(context, dict):
        return body  # a supplier that takes no context (FalsePositive)
    if provenance.first_seen is not None:
        context[provenance.first_seen] = iso(first)
    if provenance.last_seen is not None:
        context[provenance.last_seen] = iso(last)
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS).decode()


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
