"""Schedules: a duration (``30s``, ``15m``, ``1h30m``, ``1d``) or a 5-field cron line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from apscheduler.triggers.cron import CronTrigger

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a feed runs: every ``seconds``, or on a ``cron`` line."""

    text: str
    seconds: float | None
    cron: str | None


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``30s``, ``15m``, ``1h30m``, ``1d`` or a plain number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        compact = text.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", compact):
            seconds = float(compact)
        elif compact and _DURATION.sub("", compact) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(compact))
        else:
            raise ValueError(f"{text!r} is not a duration (30s, 15m, 1h, 1d)")
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


def parse_schedule(value: object) -> Schedule:
    """A duration or a 5-field cron line; ValueError says which neither it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Schedule(str(value), parse_duration(value), None)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration or a cron line, got {type(value).__name__}")
    text = value.strip()
    if len(text.split()) == 5:
        try:
            CronTrigger.from_crontab(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid cron line: {exc}") from exc
        return Schedule(text, None, text)
    try:
        return Schedule(text, parse_duration(text), None)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (30s, 15m, 1h, 1d) or a 5-field cron line"
        ) from None
