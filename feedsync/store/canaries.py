"""The store's record of each supplier's canary (migration 8; canary.py sends them).

Kept apart from ``acked``: no count, plan, metric or sweep of feed indicators
ever meets a canary. Each call is a read, or a write in a transaction of its
own, on the store's thread (``Store.call``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from feedsync.store import Store, connection
from feedsync.store.statefile import translated


@dataclass(frozen=True, slots=True)
class Canary:
    """A supplier's canary: the value CyberTrace holds while it holds the rest."""

    supplier: str
    value: str
    placed_at: float
    previous: str | None  # replaced, its DELETE not yet confirmed
    checked_at: float | None
    restored_at: float | None  # when CyberTrace was last found not to know it


@translated
def read(store: Store, supplier: str) -> Canary | None:
    query = "SELECT * FROM canary WHERE supplier = ?"
    row = connection(store).execute(query, (supplier,)).fetchone()
    return None if row is None else _canary(row)


@translated
def read_all(store: Store) -> dict[str, Canary]:
    return {r["supplier"]: _canary(r) for r in connection(store).execute("SELECT * FROM canary")}


def placed(store: Store, supplier: str, value: str, previous: str | None) -> None:
    """``value`` is in CyberTrace now; ``previous`` (if any) is still to be deleted."""
    with store.transaction() as db:
        db.execute(
            "INSERT INTO canary (supplier, value, placed_at, previous, checked_at)"
            " VALUES (:s, :v, :at, :previous, :at) ON CONFLICT (supplier) DO UPDATE SET"
            " value = :v, placed_at = :at, checked_at = :at, previous = :previous",
            {"s": supplier, "v": value, "at": store.clock.now(), "previous": previous},
        )


def checked(store: Store, supplier: str, found: bool) -> None:
    with store.transaction() as db:
        db.execute(
            "UPDATE canary SET checked_at = ?1,"
            " restored_at = CASE WHEN ?2 THEN restored_at ELSE ?1 END WHERE supplier = ?3",
            (store.clock.now(), found, supplier),
        )


def previous_deleted(store: Store, supplier: str) -> None:
    with store.transaction() as db:
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
