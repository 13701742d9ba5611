"""Schedules: a duration (``30s``, ``15m``, ``1h30m``, ``1d``) or a 5-field cron line."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

DURATION_FORMS = "30s, 15m, 1h, 1d"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Largest unit first, each at most once: "1h30m", not "30m1h" or "1h1h".
_DURATION = re.compile("".join(rf"(?:(\d+(?:\.\d+)?){unit})?" for unit in "dhms"))
_UNIT_SECONDS = (86400, 3600, 60, 1)
_SPACE_AFTER_UNIT = re.compile(r"(?<=[dhms])\s+")


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a feed runs: every ``seconds``, or on a ``cron`` line."""

    text: str
    seconds: float | None
    cron: str | None


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``30s``, ``15m``, ``1h30m``, ``1d`` or a plain number of seconds."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"expected a duration ({DURATION_FORMS}), got {type(text).__name__}")
    seconds = _seconds(text) if isinstance(text, str) else float(text)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{_quote(text)} is not a positive duration")
    return seconds


def parse_schedule(value: object) -> Schedule:
    """A duration or a 5-field cron line; the ValueError says why it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Schedule(str(value), parse_duration(value), None)
    if not isinstance(value, str):
        raise ValueError(
            f"expected a duration ({DURATION_FORMS}) or a 5-field cron line, "
            f"got {type(value).__name__}"
        )
    text = value.strip()
    if len(text.split()) == 5:
        # Imported for cron lines only: it is a fifth of a one-off `feedsync sync`'s start-up.
        from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

        try:
            # The zone matters only when firing; validation must not depend on the host's.
            cron = CronTrigger.from_crontab(text, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{_quote(text)} is not a valid cron line: {exc}") from None
        # A day no month has (30 2, 31 4) passes the fields' own checks; the feed would
        # run once at start and never again.
        if cron.get_next_fire_time(None, datetime.now(UTC)) is None:
            raise ValueError(
                f"{_quote(text)} never fires: no date matches it (30 February, 31 April)"
            )
        return Schedule(text, None, text)
    try:
        return Schedule(text, parse_duration(text), None)
    except ValueError:
        raise ValueError(
            f"{_quote(value)} is not a duration ({DURATION_FORMS}) or a 5-field cron line"
        ) from None


def _seconds(text: str) -> float:
    compact = _SPACE_AFTER_UNIT.sub("", text.strip().lower())
    if _NUMBER.fullmatch(compact):
        return float(compact)
    match = _DURATION.fullmatch(compact)
    if not compact or match is None:
        raise ValueError(f"{_quote(text)} is not a duration ({DURATION_FORMS}, 1h30m, 90)")
    parts = zip(match.groups(), _UNIT_SECONDS, strict=True)
    return sum(float(number) * unit for number, unit in parts if number is not None)


def _quote(value: object) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
