"""What ``feedsync sync`` and ``feedsync status`` print."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from feedsync.config import BUILTIN_SUPPLIERS, Config
from feedsync.outcome import FeedReport, SupplierReport
from feedsync.store import Store


def cycle(
    feeds: Sequence[FeedReport], suppliers: Sequence[SupplierReport], *, dry_run: bool
) -> str:
    """One line per feed and per supplier, then the planned changes of a dry run."""
    lines = []
    for feed in feeds:
        c = feed.change
        line = (
            f"feed {feed.feed:<20} {feed.result:<9} fetched {c.fetched:>7}  invalid {c.invalid:>5}"
            f"  added {c.added:>6}  changed {c.changed:>6}  removed {0 if c.held else c.removed:>6}"
            f"  held {c.removed if c.held else 0:>6}  {feed.seconds:6.2f}s"
        )
        if feed.error:
            line += f"\n  {feed.feed}: {feed.error}"
        if c.held:
            line += f"\n  {feed.feed}: held; run `feedsync sync {feed.feed} --force` to apply it"
        lines.append(line)
    verb = "would send" if dry_run else "sent"
    for s in suppliers:
        if dry_run:
            planned = s.planned
            counts = f"add {planned.add:>6}  update {planned.update:>6}  delete {planned.delete:>6}"
        else:
            counts = (
                f"added {s.sent.add:>6}  updated {s.sent.update:>6}  deleted {s.sent.delete:>6}"
                f"  rejected {s.sent.rejected:>5}"
            )
        line = (
            f"supplier {s.supplier:<16} {verb:<10} {counts}"
            f"  pending {s.pending:>6}  {s.seconds:6.2f}s"
        )
        if s.error:
            line += f"\n  {s.supplier}: {s.error}"
        lines.extend([line, *(f"  {p}" for p in s.preview)])
    return "\n".join(lines)


def suppliers_to_create(config: Config) -> list[str]:
    """What ``feedsync check`` says of each supplier the feeds fill: the settings
    feedsync creates it with where CyberTrace lacks it, and whether it enforces them."""
    lines = []
    for name in dict.fromkeys(feed.supplier for feed in config.feeds):
        if name in BUILTIN_SUPPLIERS:
            lines.append(f"supplier {name}: built into CyberTrace")
            continue
        settings = config.supplier_settings(name)
        vendor = f", vendor {settings.vendor}" if settings.vendor is not None else ""
        shown = (
            f"confidence {settings.confidence}, retention {settings.retention} minutes{vendor}"
        )
        if settings.explicit:
            lines.append(
                f"supplier {name}: created with its suppliers: entry ({shown}) if CyberTrace"
                " lacks it; an existing one is corrected to these settings"
            )
        else:
            lines.append(
                f"supplier {name}: created with supplier_defaults ({shown}) if CyberTrace lacks"
                " it; an existing one keeps its own settings"
            )
    return lines


def status(config: Config, store: Store) -> dict[str, Any]:
    """Per feed and supplier: last success, counts, pending, rejected, held."""
    rows = {row.name: row for row in store.feeds()}
    feeds = []
    for feed in config.feeds:
        row = rows.get(feed.name)
        feeds.append(
            {
                "feed": feed.name,
                "supplier": feed.supplier,
                "enabled": feed.enabled,
                "last_success": row.last_success if row else None,
                "last_attempt": row.last_attempt if row else None,
                "last_error": row.last_error if row else None,
                "indicators": row.indicators if row else 0,
                "invalid": row.invalid if row else 0,
                "held_deletions": row.held_removals if row else None,
                "held_since": row.held_since if row else None,
            }
        )
    suppliers = []
    for name in dict.fromkeys(feed.supplier for feed in config.feeds):
        counts = store.counts(name)
        suppliers.append(
            {
                "supplier": name,
                "indicators": counts["acked"],
                "pending": {op: counts[op] for op in ("add", "update", "delete")},
                "rejected": counts["rejected"],
                "recent_rejections": [
                    {"indicator": v, "op": op, "reason": r} for v, op, r in store.rejected(name, 5)
                ],
            }
        )
    return {"generated": time.time(), "feeds": feeds, "suppliers": suppliers}


def status_json(snapshot: dict[str, Any]) -> str:
    return orjson.dumps(snapshot, option=orjson.OPT_INDENT_2).decode()


def status_text(snapshot: dict[str, Any]) -> str:
    now = snapshot["generated"]
    lines = ["FEED                 SUPPLIER         LAST SUCCESS   INDICATORS  INVALID  STATE"]
    for f in snapshot["feeds"]:
        state = "disabled" if not f["enabled"] else "ok"
        if f["held_deletions"] is not None:
            state = f"HELD ({f['held_deletions']} deletions)"
        elif f["last_error"]:
            state = f"FAILING: {f['last_error']}"
        elif f["last_attempt"] is None:
            state = "never synced"
        lines.append(
            f"{f['feed']:<20} {f['supplier']:<16} {_ago(now, f['last_success']):<14}"
            f" {f['indicators']:>10}  {f['invalid']:>7}  {state}"
        )
    lines.append("")
    lines.append("SUPPLIER         INDICATORS  PENDING (add/update/delete)  REJECTED")
    for s in snapshot["suppliers"]:
        pending = "/".join(str(s["pending"][op]) for op in ("add", "update", "delete"))
        lines.append(
            f"{s['supplier']:<16} {s['indicators']:>10}  {pending:>27}  {s['rejected']:>8}"
        )
        lines.extend(
            f"  rejected {r['op']} {r['indicator']}: {r['reason']}" for r in s["recent_rejections"]
        )
    return "\n".join(lines)


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
