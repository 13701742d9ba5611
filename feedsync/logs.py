"""Logging: structlog, JSON when stderr is not a terminal, console when it is.

The level is ``--log-level``, else ``$FEEDSYNC_LOG_LEVEL``, else info. A JSON
line carries ``priority``, the syslog number of its level (journald's
PRIORITY), for whatever ships the lines on; when stderr is the journal's own
stream (``$JOURNAL_STREAM`` names it) each line also starts with ``<N>``, which
journald takes as the entry's priority, so ``journalctl -p warning`` works.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from feedsync.errors import ConfigError

_SECRET_KEYS = frozenset({"password", "api_key", "authorization", "secret", "token"})

LEVEL_ENV = "FEEDSYNC_LOG_LEVEL"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# syslog(3) priorities, as journald's PRIORITY field has them.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "exception": 3, "critical": 2}


def redact(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank any key that names a secret, whoever logged it."""
    for key in event:
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
    return event


def add_priority(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event["priority"] = PRIORITIES.get(str(event.get("level")), 6)
    return event


class _JournalPrefix:
    """Starts each rendered line with ``<priority>`` (sd-daemon(3)'s prefix)."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: object, name: str, event: MutableMapping[str, Any]) -> str:
        priority = event.get("priority", 6)
        return f"<{priority}>{self.renderer(logger, name, event)}"


def level_of(given: str | None, env: Mapping[str, str] | None = None) -> str:
    """The level to log at: ``given``, else ``$FEEDSYNC_LOG_LEVEL``, else info."""
    env = os.environ if env is None else env
    if given is not None:
        return given
    value = env.get(LEVEL_ENV, "").strip().lower() or "info"
    if value not in LEVELS:
        raise ConfigError(LEVEL_ENV, f"{value!r} is not one of {', '.join(LEVELS)}")
    return value


def to_journal(env: Mapping[str, str] | None = None) -> bool:
    """Whether stderr is the stream systemd connected to the journal."""
    env = os.environ if env is None else env
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        stats = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False  # replaced by something without a descriptor (a test's capture)
    return f"{stats.st_dev}:{stats.st_ino}" == f"{device}:{inode}"


def configure(*, level: str | None = None, json: bool | None = None) -> None:
    """Set up structlog for the process; ``json=None`` decides by the terminal."""
    level = level_of(level)
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
    ]
    if json:
        processors.append(add_priority)
        if to_journal():
            renderer = _JournalPrefix(renderer)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr is looked up per logger, not once: it may be replaced after configure().
    return structlog.PrintLogger(sys.stderr)


def get(name: str) -> Any:
    return structlog.get_logger(name)
