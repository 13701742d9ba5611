"""What every command shares: its exit codes, its configuration, its feeds' names."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from feedsync import config, logs
from feedsync import render as report

log = logs.get("feedsync.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def load(args: argparse.Namespace, *, secrets: bool = True) -> config.Config:
    """The configuration the command names (``-c``, else the default), its warnings logged."""
    loaded = config.load(args.config or config.default_path(), secrets=secrets)
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    return loaded


def unknown_feeds(loaded: config.Config, names: Sequence[str]) -> int:
    """EXIT_USAGE, said on stderr, when a name is no configured feed; else EXIT_OK."""
    known = {feed.name for feed in loaded.feeds}
    message = report.unknown_feeds([n for n in names if n not in known], known)
    if message:
        print(f"feedsync: {message}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
