"""The state database: the only state feedsync shares between its steps.

SQLite in WAL mode with ``synchronous=FULL``: a plan is durable before any of
it is sent, and an acknowledgement is durable before the next batch goes out,
so a crash at any moment resumes without losing or inventing anything.

All access goes through one worker thread (one connection); the event loop
awaits ``Store.call``. Writers hold an exclusive lock in the database's own
directory (statefile.py), so two daemons cannot interleave plans; readers
(``status``) do not need it. What it keeps of each feed is feeds.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeAlias, TypeVar

from feedsync.clock import SYSTEM, Clock
from feedsync.errors import StoreError
from feedsync.store import statefile, vacuum
from feedsync.store.feeds import (
    RUNS_KEPT_PER_FEED,
    FeedRow,
    Run,
    feed_row,
    forget_feed,
    mark_feed_dirty,
    now,
    read_feed,
    record_exclusions,
    record_run,
)
from feedsync.store.migrations import MIGRATIONS
from feedsync.store.statefile import translate, translated

# The store's face: the Store, the rows it reads back, and the functions that the
# cycle (sync/) runs inside one of its transactions.
__all__ = [
    "RUNS_KEPT_PER_FEED",
    "Connection",
    "FeedRow",
    "Run",
    "Store",
    "connection",
    "forget_feed",
    "migrate",
    "now",
    "read_feed",
    "record_exclusions",
    "record_run",
]

T = TypeVar("T")

# A transaction's handle as ``Store.transaction`` yields it: callers outside the
# store only pass it on to the store's own functions.
Connection: TypeAlias = sqlite3.Connection


class Store:
    """The SQLite state database, reached through one worker thread. Its
    connection is its own: other packages ask by name (its methods, pending.py,
    history.py), and only the store's modules speak SQL."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: str,
        lock: int | None,
        clock: Clock = SYSTEM,
    ) -> None:
        self._db = connection
        self.path = path
        self.clock = clock
        self._lock = lock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedsync-store")

    @classmethod
    def open(cls, path: str, *, readonly: bool = False, clock: Clock = SYSTEM) -> Store:
        """Open (creating and migrating) the database; writers take the lock."""
        if not readonly:
            statefile.create_if_missing(path, migrate)
        lock = None if readonly else statefile.take_lock(path)
        try:
            statefile.check_file(path)
            connection = statefile.connect(path, readonly=readonly, clock=clock)
            try:
                statefile.check_identity(connection, path)
                if not readonly:
                    migrate(connection)
                    vacuum.convert(connection, path)  # outside any transaction, under the lock
                else:
                    statefile.check_version(connection, path, len(MIGRATIONS))
            except BaseException:
                connection.close()
                raise
        except BaseException:
            if lock is not None:
                os.close(lock)
            raise
        return cls(connection, path, lock, clock)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread; SQLite's errors come out as
        StoreError (a damaged page found mid-cycle fails the feed, not the daemon)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.guarded, fn, *args)

    def guarded(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the calling thread, SQLite's errors as StoreError."""
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def quick_check(self) -> list[str]:
        """What ``PRAGMA quick_check`` finds wrong with the file (empty: sound)."""
        return statefile.quick_check(self._db, self.path)

    def in_write(self) -> bool:
        """Whether this store's connection holds a transaction now (safe to ask
        from another thread: it reads SQLite's autocommit flag)."""
        return self._db.in_transaction

    async def release_space(self) -> vacuum.Space:
        """Free pages back to the file system when there are many (vacuum.py)."""
        return await vacuum.release(self, self._db)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._db.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @contextlib.contextmanager
    def transaction(self, *, rollback: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; ``rollback=True`` keeps nothing (dry runs)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.rollback()
                raise
            if rollback:
                self._db.rollback()
            else:
                self._db.commit()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[sqlite3.Connection]:
        """A nested unit inside ``transaction``: its failure undoes only itself.
        SQLite's errors come out as StoreError, so that a caller tells the
        store's failure from whatever else the unit raised."""
        try:
            self._db.execute("SAVEPOINT unit")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO unit")
                self._db.execute("RELEASE unit")
                raise
            self._db.execute("RELEASE unit")
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    # Feeds

    @translated
    def feed(self, name: str, supplier: str) -> FeedRow:
        """The feed's row, created on first use; a feed moved to another
        supplier leaves its indicators to be re-planned on both."""
        row = self._db.execute("SELECT * FROM feeds WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self.transaction() as db:
                db.execute("INSERT INTO feeds (name, supplier) VALUES (?, ?)", (name, supplier))
        elif row["supplier"] != supplier:
            with self.transaction() as db:
                mark_feed_dirty(db, row["id"], row["supplier"])
                mark_feed_dirty(db, row["id"], supplier)
                db.execute("UPDATE feeds SET supplier = ? WHERE id = ?", (supplier, row["id"]))
        row = self._db.execute("SELECT * FROM feeds WHERE name = ?", (name,)).fetchone()
        return feed_row(row)

    @translated
    def feeds(self) -> list[FeedRow]:
        return [feed_row(r) for r in self._db.execute("SELECT * FROM feeds ORDER BY name")]

    @translated
    def record_run(self, run: Run) -> None:
        """Append to the run history and keep the feed's last attempt/error current."""
        with self.transaction() as db:
            record_run(db, run)

    # Operator holds (migration 6)

    @translated
    def holds(self) -> dict[str, float]:
        """Each held feed and since when."""
        return {r[0]: r[1] for r in self._db.execute("SELECT feed, since FROM holds")}

    @translated
    def hold(self, feed: str) -> bool:
        """Put ``feed`` on hold; False when it already was (its time is kept)."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO holds (feed, since) VALUES (?, ?)",
                (feed, self.clock.now()),
            )
            return cursor.rowcount == 1

    @translated
    def release(self, feed: str) -> bool:
        """Take ``feed`` off hold; False when it was not held."""
        with self.transaction() as db:
            return db.execute("DELETE FROM holds WHERE feed = ?", (feed,)).rowcount == 1

    @translated
    def record_contact(self, supplier: str, error: str | None) -> None:
        """How the supplier's last exchange with CyberTrace ended (None: well)."""
        at = self.clock.now()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO contact (supplier, last_attempt, last_success, last_error,"
                " failing_since) VALUES (:s, :at, :ok, :error, :failed)"
                " ON CONFLICT (supplier) DO UPDATE SET last_attempt = :at,"
                " last_success = coalesce(:ok, last_success), last_error = :error,"
                " failing_since = CASE WHEN :error IS NULL THEN NULL"
                " ELSE coalesce(failing_since, :at) END",
                {
                    "s": supplier,
                    "at": at,
                    "ok": None if error else at,
                    "error": error,
                    "failed": at if error else None,
                },
            )

    @translated
    def contacts(self) -> dict[str, dict[str, Any]]:
        """Per supplier, how its exchanges with CyberTrace went (``record_contact``)."""
        rows = self._db.execute(
            "SELECT supplier, last_attempt, last_success, last_error, failing_since FROM contact"
        )
        return {
            r[0]: {
                "last_attempt": r[1],
                "last_success": r[2],
                "last_error": r[3],
                "failing_since": r[4],
            }
            for r in rows
        }

    # Reading for status and metrics

    @translated
    def last_contact_ok(self) -> bool | None:
        """Whether the newest exchange with CyberTrace, of any supplier, ended well
        (None: there was none yet)."""
        row = self._db.execute(
            "SELECT last_error IS NULL FROM contact ORDER BY last_attempt DESC LIMIT 1"
        ).fetchone()
        return None if row is None else bool(row[0])

    @translated
    def counts(self, supplier: str, *, acked: bool = True) -> dict[str, int]:
        """Acknowledged (unless ``acked`` is false: it costs a scan of them),
        pending (by op) and rejected counts of a supplier."""
        db = self._db
        out = {
            "acked": db.execute(
                "SELECT count(*) FROM acked WHERE supplier = ?", (supplier,)
            ).fetchone()[0]
            if acked
            else 0,
            "rejected": db.execute(
                "SELECT count(*) FROM rejected WHERE supplier = ?", (supplier,)
            ).fetchone()[0],
            "add": 0,
            "update": 0,
            "delete": 0,
        }
        for op, count in db.execute(
            "SELECT op, count(*) FROM pending WHERE supplier = ? GROUP BY op", (supplier,)
        ):
            out[op] = count
        # A first plan's adds wait as ranges of the snapshots (ranges.py), not as rows.
        from feedsync.store import ranges  # noqa: PLC0415 -- it imports the store's face

        out["add"] += ranges.count(db, supplier)
        return out

    @translated
    def rejected(self, supplier: str, limit: int = 20) -> list[tuple[str, str, str]]:
        """(value, op, reason) of the supplier's most recent rejections."""
        rows = self._db.execute(
            "SELECT value, op, reason FROM rejected WHERE supplier = ?"
            " ORDER BY rejected_at DESC, value LIMIT ?",
            (supplier, limit),
        )
        return [(r["value"], r["op"], r["reason"]) for r in rows]

    @translated
    def acked_values(self, supplier: str) -> dict[str, int]:
        """Every acknowledged value of a supplier with its digest (for tests and tools)."""
        rows = self._db.execute("SELECT value, digest FROM acked WHERE supplier = ?", (supplier,))
        return {r[0]: r[1] for r in rows}


def connection(store: Store) -> sqlite3.Connection:
    """The store's connection, for the store package's own modules alone."""
    return store._db


def migrate(db: sqlite3.Connection) -> None:
    """Bring the schema to the newest version, one migration per transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"state database schema version {version} is newer than this feedsync"
            f" ({len(MIGRATIONS)}); upgrade feedsync"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        try:
            db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")
        except sqlite3.Error as exc:
            db.rollback()
            raise StoreError(f"state database migration {number} failed: {exc}") from exc
