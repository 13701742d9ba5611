"""One cycle run by the daemon, answered as the reply the CLI would print.

A cycle's failure is the daemon's to survive: an authentication failure, any
FeedsyncError and even a crash become a logged error and a Reply with exit 1,
never an exception out of the feed's task.
"""

from __future__ import annotations

import asyncio

from feedsync import logs
from feedsync import render as report
from feedsync.config import Config
from feedsync.cybertrace import CyberTrace
from feedsync.daemon.control import Reply
from feedsync.errors import AuthError, FeedsyncError
from feedsync.progress import Board
from feedsync.store import Store
from feedsync.sync import Cycle

log = logs.get("feedsync.daemon")


async def run_cycle(
    config: Config,
    store: Store,
    names: list[str],
    *,
    locks: dict[str, asyncio.Lock],
    client: CyberTrace | None,
    progress: Board,
    force: bool = False,
    resync: bool = False,
    dry_run: bool = False,
) -> tuple[Reply, bool]:
    """The reply to a cycle of ``names``, and whether the cycle failed."""
    shown = ",".join(names)
    try:
        cycle = Cycle(
            config,
            store,
            locks=locks,
            client=client,
            force=force,
            resync=resync,
            dry_run=dry_run,
            progress=progress,
        )
        feeds, suppliers = await cycle.run(names)
        failed = any(f.result == "failed" for f in feeds) or any(s.error for s in suppliers)
        return Reply(report.cycle(feeds, suppliers, dry_run=dry_run), exit=int(failed)), failed
    except AuthError as exc:
        log.error("feed.cycle_failed", feed=shown, error=str(exc))
        return Reply(error=f"authentication failed: {exc}", exit=1), True
    except FeedsyncError as exc:
        log.error("feed.cycle_failed", feed=shown, error=str(exc))
        return Reply(error=str(exc), exit=1), True
    except Exception:
        log.exception("feed.cycle_crashed", feed=shown)
        return Reply(error="the cycle crashed; the daemon's log has the traceback", exit=1), True
