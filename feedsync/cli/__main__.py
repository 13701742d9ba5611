"""``python -m feedsync.cli``: the command line, as the installed ``feedsync`` runs it."""

from feedsync.cli import run

raise SystemExit(run())
