"""One value's story, read from the store for ``feedsync why`` and ``/why``.

Which feeds list it now (context, tags), what each supplier's CyberTrace was
last told and when (acknowledged, pending, rejected, deleted), and its journal
entries newest first: its own, and those standing for many values at once
(journal.PER_VALUE_MAX) of the feeds and suppliers it belongs to. Every read is
by an index: a value's story costs the same in a supplier of ten or of ten million.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from feedsync.store import Store, connection, ranges
from feedsync.store.journal import SHOWN
from feedsync.store.statefile import translated


@translated
def story(store: Store, value: str, limit: int = SHOWN) -> dict[str, Any] | None:
    """The story of canonical ``value``, or None when feedsync has no record of it."""
    db = connection(store)
    feeds = listed(db, value)
    told = cybertrace(db, value)
    own = _entries(
        db, "SELECT * FROM journal WHERE value = ? ORDER BY id DESC LIMIT ?", value, limit
    )
    if not feeds and not told and not own:
        return None
    names = {f["feed"] for f in feeds} | {e["feed"] for e in own if e["feed"]}
    suppliers = {f["supplier"] for f in feeds} | {t["supplier"] for t in told}
    suppliers |= {e["supplier"] for e in own}
    many = _bulk(db, sorted(names), sorted(suppliers), limit)
    many += _refreshed(db, told, own)
    entries = sorted([*own, *many], key=lambda e: e["id"], reverse=True)[:limit]
    return {"value": value, "feeds": feeds, "cybertrace": told, "journal": entries}


@translated
def last_changed(store: Store) -> str | None:
    """The value whose content changed last (the demo tells its story)."""
    row = connection(store).execute(
        "SELECT value FROM journal WHERE event = 'changed' AND value IS NOT NULL"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


def listed(db: sqlite3.Connection, value: str) -> list[dict[str, Any]]:
    """Each feed row listing ``value`` now, in feed name order."""
    out = []
    for feed_id, name, supplier in db.execute("SELECT id, name, supplier FROM feeds ORDER BY name"):
        # Keyed by the value itself (the primary key), or by a source's own id
        # (the partial index snapshot_keyed).
        rows = db.execute(
            "SELECT key, kind, context, tags, expires FROM snapshot"
            " WHERE feed_id = ?1 AND key = ?2 AND value = ?2"
            " UNION ALL SELECT key, kind, context, tags, expires FROM snapshot"
            " WHERE value = ?2 AND key != value AND feed_id = ?1",
            (feed_id, value),
        )
        for key, kind, context, tags, expires in rows:
            out.append(
                {
                    "feed": name,
                    "supplier": supplier,
                    "key": key,
                    "kind": kind,
                    "context": orjson.loads(context),
                    "tags": orjson.loads(tags),
                    "expires": expires,
                }
            )
    return out


def cybertrace(db: sqlite3.Connection, value: str) -> list[dict[str, Any]]:
    """Per supplier, what CyberTrace was last told about ``value`` and when."""
    out = []
    for (supplier,) in db.execute("SELECT name FROM suppliers ORDER BY name"):
        key = (supplier, value)
        acked = db.execute(
            "SELECT acked_at FROM acked WHERE supplier = ? AND value = ?", key
        ).fetchone()
        pending = db.execute(
            "SELECT op, body, planned_at FROM pending WHERE supplier = ? AND value = ?", key
        ).fetchone()
        lazy = None if pending else ranges.find(db, supplier, value)
        if lazy is not None:  # a first plan's add, its body cut from the snapshots
            pending = ("add", lazy[0], lazy[1])
        refused = db.execute(
            "SELECT op, reason, rejected_at FROM rejected WHERE supplier = ? AND value = ?", key
        ).fetchone()
        retired = db.execute(
            "SELECT retired_at FROM retired WHERE supplier = ? AND value = ?", key
        ).fetchone()
        if not (acked or pending or refused or retired):
            continue
        entry: dict[str, Any] = {"supplier": supplier, "state": _state(acked, refused, retired)}
        if acked:
            entry["acknowledged_at"] = acked[0]
        if retired and not acked:
            entry["deleted_at"] = retired[0]
        if refused:
            entry["rejected"] = {"op": refused[0], "reason": refused[1], "at": refused[2]}
        if pending:
            entry["pending"] = {"op": pending[0], "planned_at": pending[2]}
            entry["pending"]["body"] = orjson.loads(pending[1])
        out.append(entry)
    return out


def _state(acked: object, refused: object, retired: object) -> str:
    if acked:
        return "present"  # acknowledged by CyberTrace (DESIGN.md invariant 1)
    if refused:
        return "rejected"
    return "deleted" if retired else "never confirmed"


def _entries(db: sqlite3.Connection, query: str, *params: object) -> list[dict[str, Any]]:
    return [
        {
            "id": row["id"],
            "at": row["at"],
            "supplier": row["supplier"],
            "feed": row["feed"],
            "event": row["event"],
            "detail": row["detail"],
            "count": row["count"],
            "many": row["value"] is None,
        }
        for row in db.execute(query, params)
    ]


def _bulk(
    db: sqlite3.Connection, feeds: list[str], suppliers: list[str], limit: int
) -> list[dict[str, Any]]:
    """Entries standing for many values, of these feeds, or of these suppliers as a
    whole (a plan journaled as one entry per kind)."""
    if not feeds and not suppliers:
        return []
    by_feed = ",".join("?" * len(feeds)) or "NULL"
    by_supplier = ",".join("?" * len(suppliers)) or "NULL"
    return _entries(
        db,
        f"SELECT * FROM journal WHERE value IS NULL AND (feed IN ({by_feed})"
        f" OR (feed IS NULL AND supplier IN ({by_supplier}))) AND event != 'refresh'"
        " ORDER BY id DESC LIMIT ?",
        *feeds,
        *suppliers,
        limit,
    )


def _refreshed(
    db: sqlite3.Connection, told: list[dict[str, Any]], own: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Re-sends for retention are one entry per plan (planlog.Planned.op): for each
    supplier holding the value, the newest one its last acknowledgement came after,
    unless a change of its own was sent since."""
    out = []
    for state in told:
        acked = state.get("acknowledged_at")
        if acked is None:
            continue
        since = max(
            (
                e["at"]
                for e in own
                if e["supplier"] == state["supplier"] and e["event"] in ("add", "update")
            ),
            default=0.0,
        )
        out += _entries(
            db,
            "SELECT * FROM journal WHERE value IS NULL AND feed IS NULL AND supplier = ?"
            " AND event = 'refresh' AND at <= ? AND at > ? ORDER BY id DESC LIMIT 1",
            state["supplier"],
            acked,
            since,
        )
    return out
