"""The ``feedsync`` command line: its commands, options and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedsync import __version__, config, logs, status, terminal, why
from feedsync import render as report
from feedsync.daemon import control
from feedsync.errors import AuthError, ConfigError, FeedsyncError, StoreBusy
from feedsync.progress import Board, Relayed
from feedsync.sources import source_for
from feedsync.store import Store, history
from feedsync.store.journal import SHOWN
from feedsync.sync import Cycle, clear_spool, forgetting
from feedsync.terminal import Terminal

log = logs.get("feedsync.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# A steered sync asks the daemon for its progress: never longer than a redraw can wait.
STATUS_WAIT = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        logs.configure(level=args.log_level, json=_json_logs(args.log_format))
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"feedsync: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AuthError as exc:
        print(f"feedsync: authentication failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except FeedsyncError as exc:
        print(f"feedsync: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    """The command line's grammar. Over 50 lines on purpose: one declaration per
    command, read top to bottom in the order ``--help`` lists them; split up, a
    command's options would sit away from its name and help."""
    parser = argparse.ArgumentParser(
        prog="feedsync",
        description="Mirror threat-intelligence feeds into Kaspersky CyberTrace suppliers.",
    )
    parser.add_argument("--version", action="version", version=f"feedsync {__version__}")
    _log_options(parser, None, "auto")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon: sync every feed on its schedule")
    _config_option(run)
    run.set_defaults(handler=_run)

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
    sync.set_defaults(handler=_sync)

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
    check.set_defaults(handler=_check)

    show = commands.add_parser(
        "status",
        help="per feed and supplier: freshness, failures, holds; exit 0 ok, 1 warning, 2 critical",
    )
    _config_option(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_status)

    past = commands.add_parser(
        "history", help="the run history of every feed, one feed or one supplier's feeds"
    )
    _config_option(past)
    past.add_argument("name", nargs="?", metavar="FEED|SUPPLIER", help="default: every feed")
    past.add_argument(
        "--limit",
        type=_positive,
        default=history.DEFAULT_LIMIT,
        help=f"at most this many runs, newest first (default {history.DEFAULT_LIMIT})",
    )
    past.add_argument("--json", action="store_true", help="machine-readable output")
    past.set_defaults(handler=_history)

    _story_commands(commands)

    for name, verb, hold in (
        ("hold", "stop the feed's schedule from running it, until released", True),
        ("release", "let the schedule run a held feed again", False),
    ):
        holding = commands.add_parser(name, help=verb)
        _config_option(holding)
        holding.add_argument("feed", metavar="FEED")
        holding.set_defaults(handler=_hold, hold=hold)

    reload = commands.add_parser("reload", help="make the running daemon re-read its configuration")
    _config_option(reload)
    reload.set_defaults(handler=_reload)

    emulator = commands.add_parser("emulator", help="run the bundled CyberTrace emulator")
    from feedsync.emulator import add_arguments  # noqa: PLC0415 -- see _run

    add_arguments(emulator)
    emulator.set_defaults(handler=_emulator)
    for command in commands.choices.values():
        # After the command too (`feedsync sync --log-level debug`); unset there, the
        # option before the command (or its default) stands.
        _log_options(command, argparse.SUPPRESS, argparse.SUPPRESS)
    return parser


def _story_commands(commands: Any) -> None:
    """``why`` and ``forget``: an indicator's story, and a feed's end on purpose."""
    story = commands.add_parser(
        "why", help="an indicator's story: the feeds listing it, what CyberTrace was told, its"
        " journal; exit 0 known, 1 unknown to feedsync, 2 not an indicator"
    )
    _config_option(story)
    story.add_argument("value", metavar="VALUE", help="any spelling: it is canonicalized first")
    story.add_argument(
        "--limit", type=_positive, default=SHOWN, help=f"journal entries (default {SHOWN})"
    )
    story.add_argument("--json", action="store_true", help="machine-readable output")
    story.set_defaults(handler=_why)

    forget = commands.add_parser(
        "forget", help="delete what only a disabled or removed feed listed, and forget the feed"
    )
    _config_option(forget)
    forget.add_argument("feed", metavar="FEED")
    forget.set_defaults(handler=_forget)


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


def _json_logs(choice: str) -> bool | None:
    return None if choice == "auto" else choice == "json"


def _load(args: argparse.Namespace, *, secrets: bool = True) -> config.Config:
    loaded = config.load(args.config or config.default_path(), secrets=secrets)
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    return loaded


def _check(args: argparse.Namespace) -> int:
    if args.schema:
        from feedsync.config.keys import json_schema  # noqa: PLC0415 -- only for --schema

        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    loaded = _load(args)
    for feed in loaded.feeds:
        source_for(feed)
    print(
        f"{loaded.path}: ok ({len(loaded.feeds)} feeds,"
        f" {len({f.supplier for f in loaded.feeds})} suppliers)"
    )
    for line in report.suppliers_to_create(loaded):
        print(f"  {line}")
    for warning in loaded.warnings:
        print(f"  warning: {warning}")
    return _check_state(loaded) if args.state else EXIT_OK


def _check_state(loaded: config.Config) -> int:
    path = loaded.state.path
    if not Path(path).exists():
        print(f"{path}: no state database yet (the first sync creates it)")
        return EXIT_OK
    store = Store.open(path, readonly=True)
    try:
        damage = store.quick_check()
        feeds = 0 if damage else len(store.guarded(store.feeds))
    finally:
        store.close()
    if damage:
        print(f"{path}: damaged (SQLite quick_check):", file=sys.stderr)
        for line in damage:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{path}: ok ({feeds} feeds)")
    return EXIT_OK


def _sync(args: argparse.Namespace) -> int:
    # Without secrets first: a running daemon does the work with its own.
    loaded = _load(args, secrets=False)
    unknown = _unknown(loaded, args.feeds)
    if unknown:
        return unknown
    request = {
        "feeds": args.feeds,
        "force": args.force,
        "resync": args.resync,
        "dry_run": args.dry_run,
    }
    try:
        store = Store.open(loaded.state.path)
    except StoreBusy:
        return _steered_sync(loaded, request, args)
    try:
        loaded = _load(args)
        clear_spool(loaded)
        names = control.runnable(loaded.feeds, args.feeds, store.holds())
        if not names:
            print("nothing to sync: every enabled feed is on hold")
            return EXIT_OK
        board = Board()
        options = {"dry_run": args.dry_run, "force": args.force, "resync": args.resync}
        cycle = Cycle(loaded, store, progress=board, **options)
        showing = Terminal(board) if terminal.wanted(args.log_format) else contextlib.nullcontext()
        with showing:
            feeds, suppliers = asyncio.run(cycle.run(names))
    finally:
        store.close()
    print(report.cycle(feeds, suppliers, dry_run=args.dry_run))
    failed = any(f.result == "failed" for f in feeds) or any(s.error for s in suppliers)
    return EXIT_FAILED if failed else EXIT_OK


def _steered_sync(
    loaded: config.Config, request: dict[str, object], args: argparse.Namespace
) -> int:
    """The sync run by the daemon, with its progress line on the terminal
    read from the daemon's status while this waits."""
    if not terminal.wanted(args.log_format):
        return _by_daemon(loaded, "sync", request)
    path = loaded.state.path

    def read() -> dict[str, Any] | None:
        answer: dict[str, Any] | None = control.ask(path, "status", timeout=STATUS_WAIT)
        return answer

    with Terminal(Relayed(read, args.feeds)):
        return _by_daemon(loaded, "sync", request)


def _hold(args: argparse.Namespace) -> int:
    loaded = _load(args, secrets=False)
    unknown = _unknown(loaded, [args.feed])
    if unknown:
        return unknown
    try:
        store = Store.open(loaded.state.path)
    except StoreBusy:
        return _by_daemon(loaded, "hold" if args.hold else "release", {"feed": args.feed})
    try:
        changed = (store.hold if args.hold else store.release)(args.feed)
    finally:
        store.close()
    print(report.hold_message(args.feed, hold=args.hold, changed=changed))
    return EXIT_OK


def _why(args: argparse.Namespace) -> int:
    loaded = _load(args, secrets=False)
    if not Path(loaded.state.path).exists():
        print(f"{loaded.state.path}: no state database yet (the first sync creates it)")
        return why.UNKNOWN
    # Read-only, beside a running daemon too: its answer is the same (/why).
    store = Store.open(loaded.state.path, readonly=True)
    try:
        code, answer = store.guarded(why.read, store, args.value, args.limit)
    finally:
        store.close()
    print(why.as_json(answer) if args.json else why.as_text(answer))
    return code


def _forget(args: argparse.Namespace) -> int:
    loaded = _load(args, secrets=False)
    try:
        store = Store.open(loaded.state.path)
    except StoreBusy:
        return _by_daemon(loaded, "forget", {"feed": args.feed})
    try:
        done = asyncio.run(forgetting.forget(_load(args), store, args.feed))
    finally:
        store.close()
    if done.output:
        print(done.output)
    if done.error:
        print(f"feedsync: {done.error}", file=sys.stderr)
    return done.exit


def _reload(args: argparse.Namespace) -> int:
    loaded = _load(args, secrets=False)
    if _by_daemon(loaded, "reload", {}, alone=True) == EXIT_OK:
        return EXIT_OK
    return EXIT_FAILED


def _by_daemon(
    loaded: config.Config, command: control.Command, body: dict[str, object], *, alone: bool = False
) -> int:
    """The command run by the daemon that holds the store; ``alone``: no
    daemon is no reason to fall back to doing it here."""
    answer = control.ask(loaded.state.path, command, body, timeout=None)
    if answer is None:
        where = control.socket_path(loaded.state.path)
        if alone:
            print(f"feedsync: no daemon is running (no answer on {where})", file=sys.stderr)
            return EXIT_FAILED
        print(
            f"feedsync: state database {loaded.state.path} is in use by another feedsync"
            f" process that does not answer on {where}; `feedsync status` still works",
            file=sys.stderr,
        )
        return EXIT_FAILED
    reply = control.reply_of(answer)
    if reply.output:
        print(reply.output)
    if reply.error:
        print(f"feedsync: {reply.error}", file=sys.stderr)
    return reply.exit


def _unknown(loaded: config.Config, names: Sequence[str]) -> int:
    known = {feed.name for feed in loaded.feeds}
    message = report.unknown_feeds([n for n in names if n not in known], known)
    if message:
        print(f"feedsync: {message}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    # At 3 a.m. the on-call engineer may have neither CyberTrace's secret nor the
    # network: the store and the daemon's socket are all this reads.
    loaded = _load(args, secrets=False)
    snapshot: dict[str, Any] | None = None
    try:
        snapshot = control.ask(loaded.state.path, "status", timeout=control.ANSWER_TIMEOUT)
    except FeedsyncError as exc:
        log.warning("status.daemon_unanswered", error=str(exc))
    if snapshot is None:
        store = Store.open(loaded.state.path, readonly=True)
        try:
            snapshot = store.guarded(status.snapshot, loaded, store)
        finally:
            store.close()
    print(status.as_json(snapshot) if args.json else status.as_text(snapshot))
    return status.exit_code(snapshot)


def _history(args: argparse.Namespace) -> int:
    loaded = _load(args, secrets=False)
    if not Path(loaded.state.path).exists():
        print(f"{loaded.state.path}: no state database yet (the first sync creates it)")
        return EXIT_OK
    store = Store.open(loaded.state.path, readonly=True)
    try:
        feeds = history.feeds_named(store, loaded, args.name)
        if feeds == []:
            print(f"feedsync: no feed or supplier named {args.name!r}", file=sys.stderr)
            return EXIT_USAGE
        runs = history.read(store, feeds, args.limit)
    finally:
        store.close()
    print(history.as_json(runs) if args.json else history.as_text(runs))
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return number


def _run(args: argparse.Namespace) -> int:
    # Imported by the commands that need them: a `sync` from cron starts faster.
    from feedsync import daemon  # noqa: PLC0415

    return daemon.run(args.config or config.default_path())


def _emulator(args: argparse.Namespace) -> int:
    from feedsync.emulator import serve_from  # noqa: PLC0415 -- see _run

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_from(args))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
