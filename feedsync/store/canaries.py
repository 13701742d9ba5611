"""The store's record of each supplier's canary (migration 8; canary.py sends them).

Kept apart from ``acked``: no count, plan, metric or sweep of feed indicators
ever meets a canary.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from feedsync.store import now


@dataclass(frozen=True, slots=True)
class Canary:
    """A supplier's canary: the value CyberTrace holds while it holds the rest."""

    supplier: str
    value: str
    placed_at: float
    previous: str | None  # replaced, its DELETE not yet confirmed
    checked_at: float | None
    restored_at: float | None  # when CyberTrace was last found not to know it


def read(db: sqlite3.Connection, supplier: str) -> Canary | None:
    row = db.execute("SELECT * FROM canary WHERE supplier = ?", (supplier,)).fetchone()
    return None if row is None else _canary(row)


def read_all(db: sqlite3.Connection) -> dict[str, Canary]:
    return {r["supplier"]: _canary(r) for r in db.execute("SELECT * FROM canary")}


def placed(db: sqlite3.Connection, supplier: str, value: str, previous: str | None) -> None:
    """``value`` is in CyberTrace now; ``previous`` (if any) is still to be deleted."""
    db.execute(
        "INSERT INTO canary (supplier, value, placed_at, previous, checked_at)"
        " VALUES (:s, :v, :at, :previous, :at) ON CONFLICT (supplier) DO UPDATE SET"
        " value = :v, placed_at = :at, checked_at = :at, previous = :previous",
        {"s": supplier, "v": value, "at": now(), "previous": previous},
    )


def checked(db: sqlite3.Connection, supplier: str, *, found: bool) -> None:
    at = now()
    db.execute(
        "UPDATE canary SET checked_at = ?1,"
        " restored_at = CASE WHEN ?2 THEN restored_at ELSE ?1 END WHERE supplier = ?3",
        (at, found, supplier),
    )


def previous_deleted(db: sqlite3.Connection, supplier: str) -> None:
    db.execute("UPDATE canary SET previous = NULL WHERE supplier = ?", (supplier,))


def _canary(row: sqlite3.Row) -> Canary:
    return Canary(
        row["supplier"],
        row["value"],
        row["placed_at"],
        row["previous"],
        row["checked_at"],
        row["restored_at"],
    )
