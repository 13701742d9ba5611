"""The commands that become a long-running process: the daemon, the emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from feedsync import config
from feedsync.cli.common import EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    # Imported by the commands that need them: a `sync` from cron starts faster.
    from feedsync.daemon import service  # noqa: PLC0415

    return service.run(args.config or config.default_path())


def emulator_command(args: argparse.Namespace) -> int:
    from feedsync.emulator import serve_from  # noqa: PLC0415 -- see run_command

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_from(args))
    return EXIT_OK
