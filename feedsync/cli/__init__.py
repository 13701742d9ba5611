"""The ``feedsync`` command line: its entry point, which turns errors into exit codes.

Its grammar is grammar.py's; the commands are reads.py's (they read the state),
steered.py's (they change it, here or by the running daemon) and processes.py's
(the daemon and the emulator); common.py holds what they share.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

from feedsync import logs
from feedsync.cli.common import EXIT_FAILED, EXIT_USAGE
from feedsync.cli.grammar import build_parser
from feedsync.errors import AuthError, ConfigError, FeedsyncError


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words).parse_args(words)
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


def _json_logs(choice: str) -> bool | None:
    return None if choice == "auto" else choice == "json"


# A sync makes millions of short-lived objects in batches of thousands: with the
# default thresholds the collector ran 48 full collections over every object the
# imports made (3.4 s of a 1M-row first sync, gc.callbacks). The imports and
# configuration are frozen out of its walks; a young walk waits for 50,000 net
# allocations, and a full one still comes every 200 young ones (10M), so cyclic
# garbage is still freed in a daemon that runs for months.
COLLECTOR_THRESHOLDS = (50_000, 20, 10)


def run(argv: Sequence[str] | None = None) -> int:
    """The process's entry point (``feedsync``, ``python -m feedsync.cli``): ``main``
    with the garbage collector set for a process that reads millions of rows."""
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    return main(argv)
