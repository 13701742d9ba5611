"""Whether the state database can take the daemon's next write (``/readyz``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from feedsync.redact import cause
from feedsync.store import Store
from feedsync.store.statefile import write_probe

MIN_FREE_BYTES = 1 << 20  # below this a commit (WAL frames, a checkpoint) may fail


async def store_problem(store: Store) -> str:
    """Why the store could not take a write now ("" when it could)."""
    # Off the loop and off the store's thread (a heavy cycle may hold it for
    # minutes): the files' permissions and free space, then whether the
    # database takes a write lock within half a second. A lock our own cycle
    # holds is work, not a problem; asked again after the probe, since the
    # cycle may have begun its transaction while the probe waited.
    problem = await asyncio.to_thread(writability_problem, store.path)
    if problem or store.in_write():
        return problem
    problem = await asyncio.to_thread(write_probe, store.path)
    return "" if store.in_write() else problem


def writability_problem(path: str) -> str:
    """Why the state database could not take a write, as far as the file system
    tells without touching the database ("" when none)."""
    database = Path(path)
    for target in (database, database.parent):
        if not os.access(target, os.W_OK):
            return f"state database not writable: {target} is not writable"
    try:
        stats = os.statvfs(database.parent)
    except OSError as exc:
        return f"state database not writable: {cause(exc)}"
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        return f"state database not writable: no free space in {database.parent}"
    return ""
