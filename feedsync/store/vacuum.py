"""Giving the state database's free pages back to the file system.

A first sync writes every value into ``pending`` with its body and deletes it
as CyberTrace acknowledges; SQLite keeps the pages it freed in its freelist,
and the file keeps its size (gigabytes at 10M rows). With ``auto_vacuum =
INCREMENTAL`` those pages can be handed back a few at a time
(``PRAGMA incremental_vacuum(N)``) without rewriting the file.

A new database is made so (``statefile.create_if_missing`` sets it before the
first table). A database made before is converted once, on open, by
``VACUUM`` (``convert``). That is a check on open and not a numbered migration
on purpose: a migration runs inside a transaction and ``VACUUM`` cannot; a
migration that fails stops the store, while this one may fail for want of
disk space (it writes a copy of the database) and the daemon must go on
without it; and it changes the file's layout, not its schema: the header says
whether it is done (``PRAGMA auto_vacuum``), so a failed attempt is simply
tried again at the next open, with no version number to keep in step.

After each cycle ``release`` frees pages when there are many free, in bounded
steps, each a short store call of its own so that other store work gets the
store's thread between them. A freelist of more than ``SWEEP_PAGES`` is
released in one commit instead (``release_all``): ``incremental_vacuum`` takes
each free page at the end of the file out of the freelist by a search of the
whole list, so its cost grows with the square of the free pages (2.2 GB free
after a first sync of 10M rows: 565k pages, 100 s of CPU), while a commit in
``auto_vacuum = FULL`` truncates the list at once and costs the pages it moves.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from feedsync import logs
from feedsync.errors import StoreError

if TYPE_CHECKING:
    from feedsync.store import Store

log = logs.get("feedsync.store")

FULL, INCREMENTAL = 1, 2  # PRAGMA auto_vacuum: 0 NONE, 1 FULL, 2 INCREMENTAL
# Free pages are released when they are over this share of the file and this many:
# below it the next cycle's writes reuse them, and releasing would only regrow the file.
FREE_SHARE = 0.10
FREE_MIN_PAGES = 1000
# Pages one step releases: 16 MiB at 4 KiB pages, one short write transaction.
STEP_PAGES = 4096
# Free pages beyond which one commit releases them all (release_all): 64 MiB.
SWEEP_PAGES = 4 * STEP_PAGES


@dataclass(frozen=True, slots=True)
class Space:
    """How big the state database is and how much of it is free pages."""

    page_size: int
    pages: int
    free_pages: int
    file_bytes: int  # the database file and its WAL, as on disk

    @property
    def free_bytes(self) -> int:
        return self.free_pages * self.page_size

    def crowded(self) -> bool:
        """Whether there are enough free pages to be worth releasing."""
        return self.free_pages > max(FREE_MIN_PAGES, FREE_SHARE * self.pages)


def file_bytes(path: str) -> int:
    """The database file's size and its WAL's (0 for one that is missing)."""
    total = 0
    for name in (path, f"{path}-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(name).st_size
    return total


def space(db: sqlite3.Connection, path: str) -> Space:
    """The database's pages, its free pages and its files' size now."""
    return Space(
        page_size=db.execute("PRAGMA page_size").fetchone()[0],
        pages=db.execute("PRAGMA page_count").fetchone()[0],
        free_pages=db.execute("PRAGMA freelist_count").fetchone()[0],
        file_bytes=file_bytes(path),
    )


def free_disk(path: str) -> int:
    """Bytes free on the file system of the database ``path``."""
    return shutil.disk_usage(Path(path).resolve().parent).free


def convert(db: sqlite3.Connection, path: str, available: Callable[[str], int] = free_disk) -> bool:
    """Turn an older database (``auto_vacuum = NONE``) into an incremental one,
    once: ``VACUUM`` rewrites the file, outside any transaction. It needs free
    disk about the database's size (the copy SQLite builds in its temporary
    directory, then the WAL it copies back through); without it, or when it
    fails anyway, a warning and the database stays as it was. True if done."""
    mode = db.execute("PRAGMA auto_vacuum").fetchone()[0]
    if mode == INCREMENTAL or db.in_transaction:
        return False
    if mode == FULL:
        # A release_all stopped between its two pragmas: FULL and INCREMENTAL share
        # the file's layout, so the mode is set back without a VACUUM.
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        return False
    before = space(db, path)
    needed = (before.pages - before.free_pages) * before.page_size
    room = available(path)
    if room < needed:
        log.warning(
            "store.vacuum_skipped",
            path=path,
            reason="not enough free disk",
            needed_bytes=needed,
            available_bytes=room,
        )
        return False
    started = time.monotonic()
    try:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError as exc:  # disk full, I/O, another connection's lock
        log.warning(
            "store.vacuum_failed",
            path=path,
            error=str(exc),
            needed_bytes=needed,
            hint="free disk about the state database's size and restart feedsync",
        )
        return False
    log.info(
        "store.vacuumed",
        path=path,
        before_bytes=before.file_bytes,
        after_bytes=file_bytes(path),
        seconds=round(time.monotonic() - started, 3),
    )
    return True


def release_step(db: sqlite3.Connection, path: str, pages: int = STEP_PAGES) -> Space:
    """Release up to ``pages`` free pages when there are many (``Space.crowded``);
    the space left after. Only outside a transaction: ``executescript`` (the
    one way Python's sqlite3 runs the pragma to its end) commits first."""
    now = space(db, path)
    if not now.crowded() or db.in_transaction:
        return now
    db.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
    # In WAL mode the file shrinks when a checkpoint copies the last frame back.
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return space(db, path)


def release_all(db: sqlite3.Connection, path: str) -> Space:
    """Release every free page in one commit, when there are many: the file in
    ``auto_vacuum = FULL`` for one empty write transaction, whose commit moves
    the pages past the new end into free ones and truncates the freelist, then
    back to INCREMENTAL. Only outside a transaction; the space left after."""
    now = space(db, path)
    if not now.crowded() or db.in_transaction:
        return now
    # Each pragma commits on its own; a crash between them leaves FULL, which
    # convert sets back on the next open.
    db.execute("PRAGMA auto_vacuum = FULL")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
    finally:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return space(db, path)


def truncate_wal(db: sqlite3.Connection, path: str) -> Space:
    """Checkpoint the WAL and cut it to nothing, if no reader (``feedsync status``)
    holds on to an older snapshot: then it is left for another cycle at once,
    rather than holding the store's thread for the busy timeout."""
    timeout = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(timeout)}")
    return space(db, path)


async def release(
    store: Store, db: sqlite3.Connection, pages: int = STEP_PAGES, sweep: int = SWEEP_PAGES
) -> Space:
    """``release_step`` on the thread of ``store`` (``db`` its connection) until
    few pages are free, each step a call of its own, or ``release_all`` when more
    than ``sweep`` are; the space left. A step that fails ends it with a warning:
    the pages are released another cycle."""
    left = await store.call(space, db, store.path)
    steps = 0
    started = time.monotonic()
    before = left
    while left.crowded():
        if left.free_pages > sweep:
            step = functools.partial(release_all, db, store.path)
        else:
            step = functools.partial(release_step, db, store.path, pages)
        try:
            after = await store.call(step)
        except StoreError as exc:  # Store.call's translation of SQLite's error
            log.warning("store.release_failed", path=store.path, error=str(exc))
            break
        steps += 1
        if after.free_pages >= left.free_pages:
            break  # nothing moved (a transaction open elsewhere on the connection)
        left = after
    if steps:
        # The WAL keeps the size of the largest transaction it held (a first sync's):
        # truncated once the steps are checkpointed, after them, not once per step.
        with contextlib.suppress(StoreError):
            left = await store.call(truncate_wal, db, store.path)
        log.info(
            "store.released",
            path=store.path,
            pages=before.free_pages - left.free_pages,
            steps=steps,
            before_bytes=before.file_bytes,
            after_bytes=left.file_bytes,
            seconds=round(time.monotonic() - started, 3),
        )
    return left
