"""The commands that change the state: run here, or by the daemon holding the store.

The configuration is read without secrets first: a running daemon does the work
with its own, and only a command run here reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from feedsync import config, terminal
from feedsync import render as report
from feedsync.cli.common import EXIT_FAILED, EXIT_OK, load, unknown_feeds
from feedsync.daemon import control
from feedsync.errors import StoreBusy
from feedsync.progress import Board, Relayed
from feedsync.store import Store
from feedsync.sync import Cycle, clear_spool, forgetting
from feedsync.terminal import Terminal

# A steered sync asks the daemon for its progress: never longer than a redraw can wait.
STATUS_WAIT = 5.0


def sync_command(args: argparse.Namespace) -> int:
    # Without secrets first: a running daemon does the work with its own.
    loaded = load(args, secrets=False)
    unknown = unknown_feeds(loaded, args.feeds)
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
        loaded = load(args)
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


def hold_command(args: argparse.Namespace) -> int:
    loaded = load(args, secrets=False)
    unknown = unknown_feeds(loaded, [args.feed])
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


def forget_command(args: argparse.Namespace) -> int:
    loaded = load(args, secrets=False)
    try:
        store = Store.open(loaded.state.path)
    except StoreBusy:
        return _by_daemon(loaded, "forget", {"feed": args.feed})
    try:
        done = asyncio.run(forgetting.forget(load(args), store, args.feed))
    finally:
        store.close()
    if done.output:
        print(done.output)
    if done.error:
        print(f"feedsync: {done.error}", file=sys.stderr)
    return done.exit


def reload_command(args: argparse.Namespace) -> int:
    loaded = load(args, secrets=False)
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
