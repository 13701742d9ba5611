"""``feedsync why VALUE``: why an indicator is, or is not, in CyberTrace.

The value is canonicalized by the rules feeds are (normalize/), so any spelling
finds it; then its story is read from the store (store/story.py) and told as
text or JSON. The daemon serves the same JSON at ``/why?value=...``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from feedsync.normalize import InvalidValue, canonicalize
from feedsync.store import Store
from feedsync.store.story import story

FOUND = 0
UNKNOWN = 1  # feedsync has no record of the value
NOT_AN_INDICATOR = 2

_TEXT = {
    "listed": "added by feed {feed}",
    "changed": "updated by feed {feed}: {detail}",
    "unlisted": "feed {feed} no longer lists it: {detail}",
    "excluded": "left out of feed {feed} by its exclusions: {detail}",
    "held": "feed {feed}: {detail}",
    "add": "sent to {supplier} as new (listed by feed {feed})",
    "update": "sent to {supplier} as updated (listed by feed {feed})",
    "delete": "deleted from {supplier}: {detail}",
    "refresh": "re-sent to {supplier} for retention",
    "rejected": "rejected by CyberTrace ({supplier}): {detail}",
}


def canonical(raw: str) -> tuple[str, str]:
    """(kind, canonical value) of ``raw``; InvalidValue when it is no indicator."""
    kind, value = canonicalize(raw)
    return str(kind), value


def read(store: Store, raw: str, limit: int) -> tuple[int, dict[str, Any]]:
    """The exit code and the answer for ``raw``: its story, or why there is none."""
    try:
        kind, value = canonical(raw)
    except InvalidValue as exc:
        return NOT_AN_INDICATOR, {"input": raw, "error": f"not an indicator: {exc}"}
    found = story(store, value, limit)
    if found is None:
        error = "feedsync has no record of it: no feed lists it, none did, nothing was sent"
        return UNKNOWN, {"input": raw, "value": value, "kind": kind, "error": error}
    for entry in found["journal"]:
        entry["text"] = entry_text(entry)
    return FOUND, {"input": raw, "kind": kind, **found}


def entry_text(entry: dict[str, Any]) -> str:
    fields = {
        "feed": entry["feed"] or "?",
        "supplier": entry["supplier"],
        "detail": entry["detail"] or "",
    }
    text = _TEXT.get(entry["event"], "{detail}").format(**fields)
    if entry["feed"] is None:
        text = text.replace(" (listed by feed ?)", "")
    if entry["event"] == "delete" and entry["feed"]:
        text += f" (the last feed that listed it: {entry['feed']})"
    elif entry["event"] in ("add", "update") and entry["detail"]:
        text += f"; {entry['detail']}"
    if entry["many"]:
        plural = "" if entry["count"] == 1 else "s"
        text = f"[one entry for {entry['count']} value{plural}] {text}"
    return text


def as_json(answer: dict[str, Any]) -> str:
    return orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode()


def as_text(answer: dict[str, Any]) -> str:
    if "error" in answer:
        shown = answer.get("value", answer["input"])
        return f"{shown}: {answer['error']}"
    lines = [f"{answer['value']} ({answer['kind']})"]
    if answer["input"] != answer["value"]:
        lines[0] += f", written {answer['input']!r}"
    lines.append("Listed now by:" if answer["feeds"] else "Listed now by: no feed")
    for row in answer["feeds"]:
        context = ", ".join(f"{k}={v}" for k, v in row["context"].items()) or "-"
        tags = ", ".join(row["tags"]) or "-"
        where = f"{row['feed']} (supplier {row['supplier']})"
        lines.append(f"  {where}: context {context}; tags {tags}")
    lines.append("CyberTrace:" if answer["cybertrace"] else "CyberTrace: never sent")
    for told in answer["cybertrace"]:
        lines.append(f"  {told['supplier']}: {_told(told)}")
    lines.append("Journal (newest first):" if answer["journal"] else "Journal: no entries")
    for entry in answer["journal"]:
        lines.append(f"  {when(entry['at'])}  {entry['text']}")
    return "\n".join(lines)


def _told(told: dict[str, Any]) -> str:
    parts = []
    if told["state"] == "present":
        parts.append(f"holds it, acknowledged {when(told['acknowledged_at'])}")
    elif told["state"] == "deleted":
        parts.append(f"deleted, acknowledged {when(told['deleted_at'])}")
    if "rejected" in told:
        refused = told["rejected"]
        parts.append(f"refused its {refused['op']} {when(refused['at'])}: {refused['reason']}")
    if "pending" in told:
        pending = told["pending"]
        parts.append(f"{pending['op']} planned {when(pending['planned_at'])}, not yet confirmed")
    return "; ".join(parts) or told["state"]


def when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
