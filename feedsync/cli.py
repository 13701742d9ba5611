"""The ``feedsync`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from feedsync import __version__, config, logs, report
from feedsync.errors import AuthError, ConfigError, FeedsyncError
from feedsync.sources import source_for
from feedsync.store import Store
from feedsync.sync import Cycle, clear_spool

log = logs.get("feedsync.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


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
    sync.add_argument("--force", action="store_true", help="apply changes held by the shrink guard")
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
    check.set_defaults(handler=_check)

    status = commands.add_parser(
        "status", help="per feed and supplier: freshness, counts, problems"
    )
    _config_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    emulator = commands.add_parser("emulator", help="run the bundled CyberTrace emulator")
    from feedsync.emulator import add_arguments  # noqa: PLC0415 -- see _run

    add_arguments(emulator)
    emulator.set_defaults(handler=_emulator)
    for command in commands.choices.values():
        # After the command too (`feedsync sync --log-level debug`); unset there, the
        # option before the command (or its default) stands.
        _log_options(command, argparse.SUPPRESS, argparse.SUPPRESS)
    return parser


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


def _load(args: argparse.Namespace) -> config.Config:
    loaded = config.load(args.config or config.default_path())
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    return loaded


def _check(args: argparse.Namespace) -> int:
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
    loaded = _load(args)
    known = {feed.name for feed in loaded.feeds}
    unknown = [name for name in args.feeds if name not in known]
    if unknown:
        print(
            f"feedsync: unknown feed(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    store = Store.open(loaded.state.path)
    clear_spool(loaded)
    try:
        cycle = Cycle(loaded, store, dry_run=args.dry_run, force=args.force, resync=args.resync)
        feeds, suppliers = asyncio.run(cycle.run(args.feeds))
    finally:
        store.close()
    print(report.cycle(feeds, suppliers, dry_run=args.dry_run))
    failed = any(f.result == "failed" for f in feeds) or any(s.error for s in suppliers)
    return EXIT_FAILED if failed else EXIT_OK


def _status(args: argparse.Namespace) -> int:

    loaded = _load(args)
    store = Store.open(loaded.state.path, readonly=True)
    try:
        snapshot = store.guarded(report.status, loaded, store)
    finally:
        store.close()
    print(report.status_json(snapshot) if args.json else report.status_text(snapshot))
    return EXIT_OK


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
