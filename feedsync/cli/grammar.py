"""The command line's grammar: every command, its options and its handler."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from feedsync import __version__, logs
from feedsync.cli import processes, reads, steered
from feedsync.store import history
from feedsync.store.journal import SHOWN


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's grammar (for parsing ``argv``: None for every command's options).

    Long because it is a table: one declaration per command, read top to bottom
    in the order ``--help`` lists them; split up, a command's options would sit
    away from its name and help."""
    parser = argparse.ArgumentParser(
        prog="feedsync",
        description="Mirror threat-intelligence feeds into Kaspersky CyberTrace suppliers.",
    )
    parser.add_argument("--version", action="version", version=f"feedsync {__version__}")
    _log_options(parser, None, "auto")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon: sync every feed on its schedule")
    _config_option(run)
    run.set_defaults(handler=processes.run_command)

    sync = commands.add_parser("sync", help="one cycle for the named (or all) feeds, then exit")
    _config_option(sync)
    sync.add_argument("feeds", nargs="*", metavar="FEED", help="feed names (default: all)")
    sync.add_argument(
        "--dry-run", action="store_true", help="show the planned changes, send nothing"
    )
    sync.add_argument(
        "--force",
        action="store_true",
        help="apply changes held by the shrink guard, and delete what only feeds removed"
        " from the configuration listed",
    )
    sync.add_argument(
        "--resync",
        action="store_true",
        help="make the feeds' suppliers exact after a CyberTrace restore: re-send every"
        " indicator the feeds list, delete every one feedsync once sent that they do not",
    )
    sync.set_defaults(handler=steered.sync_command)

    check = commands.add_parser(
        "check", help="validate the configuration (exit 0 or 2), with --state the state file too"
    )
    _config_option(check)
    check.add_argument(
        "--state",
        action="store_true",
        help="also open the state database read-only and run SQLite's quick_check (exit 1 if bad)",
    )
    check.add_argument(
        "--schema",
        action="store_true",
        help="print the configuration's JSON Schema (draft 2020-12) for editors; read no config",
    )
    check.set_defaults(handler=reads.check_command)

    show = commands.add_parser(
        "status",
        help="per feed and supplier: freshness, failures, holds; exit 0 ok, 1 warning, 2 critical",
    )
    _config_option(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=reads.status_command)

    past = commands.add_parser(
        "history", help="the run history of every feed, one feed or one supplier's feeds"
    )
    _config_option(past)
    past.add_argument("name", nargs="?", metavar="FEED|SUPPLIER", help="default: every feed")
    past.add_argument(
        "--limit",
        type=positive,
        default=history.DEFAULT_LIMIT,
        help=f"at most this many runs, newest first (default {history.DEFAULT_LIMIT})",
    )
    past.add_argument("--json", action="store_true", help="machine-readable output")
    past.set_defaults(handler=reads.history_command)

    _story_commands(commands)

    for name, verb, hold in (
        ("hold", "stop the feed's schedule from running it, until released", True),
        ("release", "let the schedule run a held feed again", False),
    ):
        holding = commands.add_parser(name, help=verb)
        _config_option(holding)
        holding.add_argument("feed", metavar="FEED")
        holding.set_defaults(handler=steered.hold_command, hold=hold)

    reload = commands.add_parser("reload", help="make the running daemon re-read its configuration")
    _config_option(reload)
    reload.set_defaults(handler=steered.reload_command)

    emulator = commands.add_parser("emulator", help="run the bundled CyberTrace emulator")
    if argv is None or "emulator" in argv:
        # Its options are the emulator package's, which a `sync` would import for
        # nothing (aiohttp.web, its checks): only a command line naming it needs them.
        from feedsync.emulator import add_arguments  # noqa: PLC0415 -- see processes.run_command

        add_arguments(emulator)
    emulator.set_defaults(handler=processes.emulator_command)
    for command in commands.choices.values():
        # After the command too (`feedsync sync --log-level debug`); unset there, the
        # option before the command (or its default) stands.
        _log_options(command, argparse.SUPPRESS, argparse.SUPPRESS)
    return parser


def _story_commands(commands: Any) -> None:
    """``why`` and ``forget``: an indicator's story, and a feed's end on purpose."""
    story = commands.add_parser(
        "why",
        help="an indicator's story: the feeds listing it, what CyberTrace was told, its"
        " journal; exit 0 known, 1 unknown to feedsync, 2 not an indicator",
    )
    _config_option(story)
    story.add_argument("value", metavar="VALUE", help="any spelling: it is canonicalized first")
    story.add_argument(
        "--limit", type=positive, default=SHOWN, help=f"journal entries (default {SHOWN})"
    )
    story.add_argument("--json", action="store_true", help="machine-readable output")
    story.set_defaults(handler=reads.why_command)

    forget = commands.add_parser(
        "forget", help="delete what only a disabled or removed feed listed, and forget the feed"
    )
    _config_option(forget)
    forget.add_argument("feed", metavar="FEED")
    forget.set_defaults(handler=steered.forget_command)


def _log_options(parser: argparse.ArgumentParser, level: str | None, form: str) -> None:
    parser.add_argument(
        "--log-level",
        default=level,
        choices=list(logs.LEVELS),
        help=f"default: ${logs.LEVEL_ENV}, else info",
    )
    parser.add_argument(
        "--log-format",
        default=form,
        choices=["auto", "json", "console"],
        help="auto: console on a terminal, JSON otherwise",
    )


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        help="configuration file (default: $FEEDSYNC_CONFIG, then /etc/feedsync/feedsync.yaml)",
    )


def positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return number
