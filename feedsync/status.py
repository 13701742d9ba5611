"""What ``feedsync status`` (and the daemon's ``/status``) shows, and how bad it is.

Built from the store alone, so that it needs neither CyberTrace's secret nor
the network; the daemon adds each feed's next run. Every feed, supplier and
the whole are judged as a Nagios check is:

- ok (exit 0): nothing needs a person;
- warning (exit 1): a feed is on hold, holds deletions back, or is failing
  for less than twice its interval; CyberTrace's last answer to a supplier was
  an error;
- critical (exit 2): a feed is failing for over twice its interval, or has
  never succeeded in ``NEVER_SUCCEEDED_ATTEMPTS`` attempts; a supplier's
  exchanges with CyberTrace are failing for over twice its feeds' shortest
  interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson

from feedsync.config import Config, FeedConfig
from feedsync.redact import plain
from feedsync.sources.fetch import redact_url
from feedsync.store import FeedRow, Store, canaries, history
from feedsync.sync.reports import upstream_stale

Severity = Literal["ok", "warning", "critical"]
Source = Literal["daemon", "store"]
SEVERITIES: tuple[Severity, ...] = ("ok", "warning", "critical")
NEVER_SUCCEEDED_ATTEMPTS = 3
STALE_INTERVALS = 2


def snapshot(config: Config, store: Store) -> dict[str, Any]:
    """Per feed and supplier: freshness, counts, holds, failures, judged."""
    # apscheduler only for the commands that read schedules: a cron `sync` starts faster.
    from feedsync.timing import interval_seconds  # noqa: PLC0415

    rows = {row.name: row for row in store.feeds()}
    holds = store.holds()
    streaks = history.failing_streaks(store)
    contact = _contact(store)
    watched = canaries.read_all(store)
    now = store.clock.now()
    feeds = []
    for feed in config.feeds:
        streak = streaks.get(feed.name, (None, 0))
        entry = _feed_entry(feed, rows.get(feed.name), holds, streak, interval_seconds(feed))
        entry["state"], entry["severity"] = _judge_feed(entry, now)
        feeds.append(entry)
    feeds.extend(_removed(config, rows.values(), now))
    suppliers = []
    for name in dict.fromkeys(feed.supplier for feed in config.feeds):
        entry = _supplier_entry(store, name, contact.get(name, {}), watched)
        intervals = [f["interval"] for f in feeds if f["supplier"] == name and f["enabled"]]
        entry["severity"] = _judge_supplier(entry, min(intervals, default=3600.0), now)
        suppliers.append(entry)
    out = {
        "generated": now,
        "source": "store",
        "cybertrace": _cybertrace(config, suppliers),
        "feeds": feeds,
        "suppliers": suppliers,
    }
    return _overall(out)


def _feed_entry(
    feed: FeedConfig,
    row: FeedRow | None,
    holds: Mapping[str, float],
    streak: tuple[float | None, int],
    interval: float,
) -> dict[str, Any]:
    """A configured feed as status shows it, before it is judged."""
    since, attempts = streak
    return {
        "feed": feed.name,
        "supplier": feed.supplier,
        "enabled": feed.enabled,
        "schedule": feed.schedule.text,
        "interval": interval,
        "next_run": None,
        "on_hold": feed.name in holds,
        "on_hold_since": holds.get(feed.name),
        "last_success": row.last_success if row else None,
        "last_attempt": row.last_attempt if row else None,
        # A held run keeps its reason as the last error: a hold, not a failure.
        "last_error": plain(row.last_error) if row and row.last_error and attempts else None,
        "held_reason": plain(row.last_error)
        if row and row.last_error and not attempts
        else None,
        "failing_since": since if row and row.last_error else None,
        "attempts": attempts if row and row.last_error else 0,
        "indicators": row.indicators if row else 0,
        "invalid": row.invalid if row else 0,
        "excluded": dict(row.excluded) if row else {},
        "held_deletions": row.held_removals if row else None,
        "held_additions": _held_additions(row),
        "held_since": row.held_since if row else None,
        "progress": None,
        "last_change": row.last_change if row else None,
        "expect_change_within": feed.expect_change_within,
    }


def _supplier_entry(
    store: Store, name: str, seen: Mapping[str, Any], watched: Mapping[str, Any]
) -> dict[str, Any]:
    """A supplier as status shows it, before it is judged."""
    counts = store.counts(name)
    return {
        "supplier": name,
        "indicators": counts["acked"],
        "pending": {op: counts[op] for op in ("add", "update", "delete")},
        "rejected": counts["rejected"],
        "recent_rejections": [
            {"indicator": v, "op": op, "reason": r} for v, op, r in store.rejected(name, 5)
        ],
        "last_attempt": seen.get("last_attempt"),
        "last_success": seen.get("last_success"),
        "last_error": seen.get("last_error"),
        "failing_since": seen.get("failing_since"),
        # The canary's value is left out: it is no feed indicator.
        "canary_checked": watched[name].checked_at if name in watched else None,
        "restored_at": watched[name].restored_at if name in watched else None,
    }


def with_schedule(
    snap: dict[str, Any],
    next_runs: Mapping[str, float],
    progress: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The daemon's snapshot: each feed's next run from its scheduler, and how
    far its running cycle is (feedsync.progress)."""
    for feed in snap["feeds"]:
        feed["next_run"] = next_runs.get(feed["feed"])
        feed["progress"] = (progress or {}).get(feed["feed"])
    snap["source"] = "daemon"
    return snap


def exit_code(snap: Mapping[str, Any]) -> int:
    return SEVERITIES.index(snap.get("severity", "critical"))


def _contact(store: Store) -> dict[str, dict[str, Any]]:
    contact = store.contacts()
    for seen in contact.values():
        seen["last_error"] = plain(seen["last_error"]) if seen["last_error"] else None
    return contact


def _removed(config: Config, rows: Iterable[FeedRow], now: float) -> list[dict[str, Any]]:
    """Feeds the store holds that the configuration no longer names, whose
    indicators feedsync keeps (membership.py)."""
    configured = {feed.name for feed in config.feeds}
    out = []
    for row in rows:
        if row.name in configured or not row.indicators:
            continue
        entry: dict[str, Any] = {
            "feed": row.name,
            "supplier": row.supplier,
            "enabled": False,
            "removed": True,
            "schedule": "-",
            "interval": 0.0,
            "next_run": None,
            "on_hold": False,
            "on_hold_since": None,
            "last_success": row.last_success,
            "last_attempt": row.last_attempt,
            "last_error": None,
            "failing_since": None,
            "attempts": 0,
            "indicators": row.indicators,
            "invalid": row.invalid,
            "held_deletions": None,
            "held_since": None,
            "last_change": row.last_change,
            "expect_change_within": None,
        }
        entry["state"], entry["severity"] = _judge_feed(entry, now)
        out.append(entry)
    return out


def _judge_feed(f: Mapping[str, Any], now: float) -> tuple[str, Severity]:
    if f.get("removed"):
        return (
            f"removed from the configuration: its {f['indicators']} indicators are kept"
            " until `feedsync sync --force`",
            "warning",
        )
    if not f["enabled"]:
        kept = f" (its {f['indicators']} indicators are kept)" if f["indicators"] else ""
        return f"disabled{kept}", "ok"
    if f["last_error"]:
        attempts = max(1, f["attempts"])
        since = f["failing_since"] or f["last_attempt"] or now
        if f["last_success"] is None and attempts >= NEVER_SUCCEEDED_ATTEMPTS:
            return f"never succeeded ({attempts} attempts)", "critical"
        if now - since > STALE_INTERVALS * f["interval"]:
            return f"failing for {_span(now - since)}", "critical"
        return f"failing ({attempts} attempts)", "warning"
    if f["on_hold"]:
        return "on hold", "warning"
    if f["held_deletions"] is not None:
        if not f["held_deletions"] and f.get("held_additions"):
            # The poison guard's hold: a change that adds, not one that deletes.
            return f"holds a change adding {f['held_additions']} indicators", "warning"
        return f"holds {f['held_deletions']} deletions", "warning"
    if f["last_attempt"] is None:
        return "never synced", "ok"
    if upstream_stale(f["last_change"], f["expect_change_within"], now):
        unchanged = _span(now - f["last_change"])
        expected = _span(f["expect_change_within"])
        return f"upstream unchanged for {unchanged} (expected within {expected})", "warning"
    return "ok", "ok"


def _judge_supplier(s: Mapping[str, Any], interval: float, now: float) -> Severity:
    since = s["failing_since"]
    if since is None:
        return "ok"
    return "critical" if now - since > STALE_INTERVALS * interval else "warning"


def _cybertrace(config: Config, suppliers: list[dict[str, Any]]) -> dict[str, Any]:
    """CyberTrace's state as the newest exchange of any supplier left it."""
    seen = [s for s in suppliers if s["last_attempt"] is not None]
    newest = max(seen, key=lambda s: s["last_attempt"], default=None)
    state = "unknown" if newest is None else "failing" if newest["last_error"] else "up"
    errors = [s for s in seen if s["last_error"]]
    last = max(errors, key=lambda s: s["last_attempt"], default=None)
    return {
        "url": redact_url(config.cybertrace.url),
        "state": state,
        "as_of": newest["last_attempt"] if newest else None,
        "last_error": last["last_error"] if last else None,
        "last_error_supplier": last["supplier"] if last else None,
        "last_error_at": last["last_attempt"] if last else None,
    }


def _overall(snap: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    worst = 0
    for f in snap["feeds"]:
        level = SEVERITIES.index(f["severity"])
        if level:
            problems.append(f"feed {f['feed']}: {f['state']}")
        worst = max(worst, level)
    for s in snap["suppliers"]:
        level = SEVERITIES.index(s["severity"])
        if level:
            problems.append(f"supplier {s['supplier']}: CyberTrace: {s['last_error']}")
        worst = max(worst, level)
    snap["severity"] = SEVERITIES[worst]
    snap["problems"] = problems
    return snap


def as_json(snap: Mapping[str, Any]) -> str:
    return orjson.dumps(snap, option=orjson.OPT_INDENT_2).decode()


def as_text(snap: Mapping[str, Any]) -> str:
    now = snap["generated"]
    ct = snap["cybertrace"]
    lines = [f"CyberTrace {ct['url']}: {ct['state']}"]
    if ct["as_of"] is not None:
        lines[0] += f" (last exchange {_ago(now, ct['as_of'])})"
    if ct["last_error"]:
        lines.append(
            f"  last error ({ct['last_error_supplier']}, {_ago(now, ct['last_error_at'])}):"
            f" {ct['last_error']}"
        )
    lines.append("")
    lines.append(
        "FEED                 SUPPLIER         SCHEDULE     LAST SUCCESS   NEXT RUN      "
        " INDICATORS  INVALID  EXCLUDED  STATE"
    )
    details = []
    for f in snap["feeds"]:
        state = f["state"] + (", on hold" if f["on_hold"] and f["state"] != "on hold" else "")
        lines.append(
            f"{f['feed']:<20} {f['supplier']:<16} {f['schedule']:<12}"
            f" {_ago(now, f['last_success']):<14} {_in(now, f['next_run']):<14}"
            f" {f['indicators']:>10}  {f['invalid']:>7}  {sum(f['excluded'].values()):>8}  {state}"
        )
        details.extend(_feed_details(f, now))
    lines.extend(details)
    lines.append("")
    lines.append("SUPPLIER         INDICATORS  PENDING (add/update/delete)  REJECTED")
    for s in snap["suppliers"]:
        lines.extend(_supplier_lines(s, now))
    lines.append("")
    source = "the daemon" if snap["source"] == "daemon" else "the state database (no daemon)"
    summary = "; ".join(snap["problems"]) or "every feed is fine"
    lines.append(f"{snap['severity'].upper()}: {summary} (from {source})")
    return "\n".join(lines)


def _feed_details(f: Mapping[str, Any], now: float) -> list[str]:
    """The lines under the feed table about one feed: exclusions, progress,
    failures, holds."""
    out: list[str] = []
    if f["excluded"]:
        why = ", ".join(f"{reason} {count}" for reason, count in sorted(f["excluded"].items()))
        out.append(f"  {f['feed']}: excluded {why}")
    running = f.get("progress")
    if running:
        out.append(
            f"  {f['feed']}: running for {_span(now - running['started'])}:"
            f" {running['summary']}"
        )
    if f["last_error"]:
        out.append(
            f"  {f['feed']}: failing since {_ago(now, f['failing_since'])},"
            f" {f['attempts']} attempts: {f['last_error']}"
        )
    if f["on_hold"]:
        out.append(
            f"  {f['feed']}: on hold since {_ago(now, f['on_hold_since'])};"
            f" `feedsync release {f['feed']}` lets its schedule run it again"
        )
    if f["held_deletions"] is not None and not f["held_deletions"]:
        out.append(
            f"  {f['feed']}: a change adding {f.get('held_additions') or 0} indicators held"
            f" since {_ago(now, f['held_since'])} ({f.get('held_reason') or 'poison guard'});"
            f" `feedsync sync {f['feed']} --force` applies it"
        )
    elif f["held_deletions"] is not None:
        out.append(
            f"  {f['feed']}: {f['held_deletions']} deletions held since"
            f" {_ago(now, f['held_since'])}; `feedsync sync {f['feed']} --force` applies them"
        )
    return out


def _supplier_lines(s: Mapping[str, Any], now: float) -> list[str]:
    """A supplier's row of the supplier table and the lines under it."""
    out: list[str] = []
    pending = "/".join(str(s["pending"][op]) for op in ("add", "update", "delete"))
    out.append(
        f"{s['supplier']:<16} {s['indicators']:>10}  {pending:>27}  {s['rejected']:>8}"
    )
    if s["last_error"]:
        out.append(
            f"  CyberTrace failing since {_ago(now, s['failing_since'])}: {s['last_error']}"
        )
    if s.get("restored_at") is not None:
        out.append(
            f"  CyberTrace had lost this supplier's indicators {_ago(now, s['restored_at'])}"
            " (its canary was gone): feedsync resynced it"
        )
    out.extend(
        f"  rejected {r['op']} {r['indicator']}: {r['reason']}" for r in s["recent_rejections"]
    )
    return out


def _ago(now: float, then: float | None) -> str:
    return "never" if then is None else f"{_span(now - then)} ago"


def _in(now: float, then: float | None) -> str:
    if then is None:
        return "-"
    return "now" if then <= now else f"in {_span(then - now)}"


def _span(seconds: float) -> str:
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _held_additions(row: FeedRow | None) -> int | None:
    """What a held change would add: its new size less what it keeps."""
    if row is None or row.held_total is None:
        return None
    return max(0, row.held_total - (row.indicators - (row.held_removals or 0)))
