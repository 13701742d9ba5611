"""The supplier half of the change journal: a plan's operations, CyberTrace's refusals.

Written a batch at a time, beside journal.py's feed half."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from feedsync.store import journal
from feedsync.store.journal import BATCH, DETAIL_MAX, INSERT, Event, bulk

# For a delete: the feed that listed the value last, from its own entries.
_LAST_FEED = (
    "(SELECT j.feed FROM journal j WHERE j.value = ?3 AND j.event = 'unlisted'"
    " ORDER BY j.id DESC LIMIT 1)"
)


def start(db: sqlite3.Connection, supplier: str, at: float, *, why: str, reshaped: str) -> Planned:
    """A plan's journal: a row per operation, unless the plan is too big for that."""
    (dirty,) = db.execute("SELECT count(*) FROM dirty WHERE supplier = ?", (supplier,)).fetchone()
    if dirty <= journal.PER_VALUE_MAX and not _planned(db, supplier):
        # The feeds' changes mark no value for a supplier never planned (guard.py):
        # its first plan is about every value its feeds list.
        (dirty,) = db.execute(
            "SELECT count(*) FROM (SELECT DISTINCT s.value FROM snapshot s"
            " JOIN feeds f ON f.id = s.feed_id WHERE f.supplier = ? LIMIT ?)",
            (supplier, journal.PER_VALUE_MAX + 1),
        ).fetchone()
    return Planned(db, supplier, at, dirty > journal.PER_VALUE_MAX, why, reshaped)


def _planned(db: sqlite3.Connection, supplier: str) -> bool:
    found = db.execute("SELECT 1 FROM suppliers WHERE name = ?", (supplier,)).fetchone()
    return found is not None


@dataclass(slots=True)
class Planned:
    """A supplier's plan being journaled: a row per operation, a batch at a time, or
    (``bulk``: a plan of more than journal.PER_VALUE_MAX values) one row per kind."""

    db: sqlite3.Connection
    supplier: str
    at: float
    bulk: bool
    why: str = ""  # what caused the plan, when not the feeds (a resync)
    # Why its PUTs are made, when not for a change of content (a new body shape);
    # a DELETE's cause is its feeds'.
    reshaped: str = ""
    rows: list[tuple[float, str, str, str, str | None, str]] = field(default_factory=list)
    counts: Counter[Event] = field(default_factory=Counter)

    def op(self, event: Event, value: str, feeds: Sequence[str]) -> None:
        """A planned operation on ``value``, which ``feeds`` list (merge order)."""
        if event == "refresh":
            # One entry per plan: a supplier of a million values re-sends them all
            # within each retention, which would be most of the journal otherwise.
            self.counts[event] += 1
        elif event == "delete":
            self.note(event, value, None, "no feed lists it any more")
        else:
            detail = "listed by " + ", ".join(feeds) if len(feeds) > 1 else ""
            self.note(event, value, feeds[0], "; ".join(filter(None, [detail, self.reshaped])))

    def note(self, event: Event, value: str, feed: str | None, detail: str = "") -> None:
        if self.bulk:
            self.counts[event] += 1
            return
        shown = "; ".join(filter(None, [detail, self.why]))
        self.rows.append((self.at, self.supplier, value, event, feed, shown))
        if len(self.rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        self.db.executemany(
            f"{INSERT} VALUES (?1, ?2, ?3, ?4, coalesce(?5, CASE WHEN ?4 = 'delete'"
            f" THEN {_LAST_FEED} END), ?6, 1)",
            self.rows,
        )
        self.rows.clear()

    def close(self) -> None:
        self.flush()
        for event, count in sorted(self.counts.items()):
            detail = "re-sent for retention" if event == "refresh" else self.why
            bulk(self.db, self.at, self.supplier, event, feed=None, detail=detail, count=count)
        self.counts.clear()


def rejected(
    db: sqlite3.Connection, at: float, supplier: str, rows: Iterable[tuple[str, str]]
) -> None:
    """(value, reason) CyberTrace refused."""
    db.executemany(
        f"{INSERT} VALUES (?, ?, ?, 'rejected', NULL, ?, 1)",
        [(at, supplier, value, reason[:DETAIL_MAX]) for value, reason in rows],
    )


def journal_op(
    noted: Planned,
    feed_names: Sequence[str],
    position: dict[int, int],
    op: tuple[journal.Event, str],
    rows: Sequence[tuple[int, str, str]],
) -> None:
    if noted.bulk or op[0] == "refresh":  # counted, not named (the hot loop)
        noted.counts[op[0]] += 1
    else:
        feeds = [feed_names[i] for i in sorted(position[row[0]] for row in rows)]
        noted.op(op[0], op[1], feeds)
