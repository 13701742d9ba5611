"""What ``feedsync sync``, ``hold`` and ``release`` print (``status``: status.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from feedsync.config import BUILTIN_SUPPLIERS, Config
from feedsync.sync.reports import FeedReport, SupplierReport


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
        if c.excluded_reasons:
            why = ", ".join(f"{reason} {n}" for reason, n in sorted(c.excluded_reasons.items()))
            line += f"\n  {feed.feed}: excluded {c.excluded} ({why})"
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


def unknown_feeds(unknown: Sequence[str], known: Iterable[str]) -> str:
    """What the CLI and the daemon say of feed names the configuration lacks ("" for none)."""
    if not unknown:
        return ""
    return f"unknown feed(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"


def hold_message(name: str, *, hold: bool, changed: bool) -> str:
    if hold:
        if not changed:
            return f"feed {name} was already on hold"
        return (
            f"feed {name} on hold: its schedule does not run it until `feedsync release {name}`"
            f" (`feedsync sync {name}` still does)"
        )
    if not changed:
        return f"feed {name} was not on hold"
    return f"feed {name} released: its schedule runs it again"
