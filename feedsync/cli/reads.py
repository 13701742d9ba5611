"""The commands that read: ``check``, ``status``, ``history`` and ``why``.

None of them needs CyberTrace's secret or the network, and each opens the state
database read-only, so that they work beside a running daemon.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from feedsync import config, status, why
from feedsync import render as report
from feedsync.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, load, log
from feedsync.daemon import control
from feedsync.errors import FeedsyncError
from feedsync.sources import source_for
from feedsync.store import Store, history


def check_command(args: argparse.Namespace) -> int:
    if args.schema:
        from feedsync.config.schema import json_schema  # noqa: PLC0415 -- only for --schema

        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    loaded = load(args)
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


def why_command(args: argparse.Namespace) -> int:
    loaded = load(args, secrets=False)
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


def status_command(args: argparse.Namespace) -> int:
    # At 3 a.m. the on-call engineer may have neither CyberTrace's secret nor the
    # network: the store and the daemon's socket are all this reads.
    loaded = load(args, secrets=False)
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


def history_command(args: argparse.Namespace) -> int:
    loaded = load(args, secrets=False)
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
