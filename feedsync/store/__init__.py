"""The state database: the only state feedsync shares between its steps.

SQLite in WAL mode with ``synchronous=FULL``: a plan is durable before any of
it is sent, and an acknowledgement is durable before the next batch goes out,
so a crash at any moment resumes without losing or inventing anything.

All access goes through one worker thread (one connection); the event loop
awaits ``Store.call``. Writers hold an exclusive lock in the database's own
directory (statefile.py), so two daemons cannot interleave plans; readers
(``status``) do not need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from feedsync.errors import StoreCorrupt, StoreError
from feedsync.model import Validators
from feedsync.store import statefile
from feedsync.store.migrations import MIGRATIONS

T = TypeVar("T")

RUNS_KEPT_PER_FEED = 1000


@dataclass(frozen=True, slots=True)
class FeedRow:
    """What the store knows about one feed."""

    id: int
    name: str
    supplier: str
    validators: Validators
    indicators: int
    invalid: int
    last_attempt: float | None
    last_success: float | None
    last_error: str | None
    held_removals: int | None
    held_total: int | None
    held_digest: str | None
    held_since: float | None
    layout: str | None = None  # what the feed's line index was built under (lines.py)
    line_bits: int | None = None
    excluded: tuple[tuple[str, int], ...] = ()  # the last applied fetch's, by reason
    exclusions: str | None = None  # the fingerprint of the settings it was applied under
    last_change: float | None = None  # the last run that changed its content (migration 9)


@dataclass(frozen=True, slots=True)
class Run:
    """One feed cycle, for the run history."""

    feed: str
    started: float
    finished: float
    result: str
    fetched: int = 0
    invalid: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    held: int = 0
    error: str | None = None


class Store:
    """The SQLite state database, reached through one worker thread."""

    def __init__(self, connection: sqlite3.Connection, path: str, lock: int | None) -> None:
        self.db = connection
        self.path = path
        self._lock = lock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedsync-store")

    @classmethod
    def open(cls, path: str, *, readonly: bool = False) -> Store:
        """Open (creating and migrating) the database; writers take the lock."""
        if not readonly:
            statefile.create_if_missing(path, migrate)
        lock = None if readonly else statefile.take_lock(path)
        try:
            statefile.check_file(path)
            connection = _connect(path, readonly=readonly)
            try:
                statefile.check_identity(connection, path)
                if not readonly:
                    migrate(connection)
                else:
                    _check_version(connection, path)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            if lock is not None:
                os.close(lock)
            raise
        return cls(connection, path, lock)

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
        return statefile.quick_check(self.db, self.path)

    def in_write(self) -> bool:
        """Whether this store's connection holds a transaction now (safe to ask
        from another thread: it reads SQLite's autocommit flag)."""
        return self.db.in_transaction

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @contextlib.contextmanager
    def transaction(self, *, rollback: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; ``rollback=True`` keeps nothing (dry runs)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.rollback()
                raise
            if rollback:
                self.db.rollback()
            else:
                self.db.commit()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[sqlite3.Connection]:
        """A nested unit inside ``transaction``: its failure undoes only itself."""
        self.db.execute("SAVEPOINT unit")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK TO unit")
            self.db.execute("RELEASE unit")
            raise
        self.db.execute("RELEASE unit")

    # Feeds

    def feed(self, name: str, supplier: str) -> FeedRow:
        """The feed's row, created on first use; a feed moved to another
        supplier leaves its indicators to be re-planned on both."""
        row = self.db.execute("SELECT * FROM feeds WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self.transaction() as db:
                db.execute("INSERT INTO feeds (name, supplier) VALUES (?, ?)", (name, supplier))
        elif row["supplier"] != supplier:
            with self.transaction() as db:
                _mark_feed_dirty(db, row["id"], row["supplier"])
                _mark_feed_dirty(db, row["id"], supplier)
                db.execute("UPDATE feeds SET supplier = ? WHERE id = ?", (supplier, row["id"]))
        row = self.db.execute("SELECT * FROM feeds WHERE name = ?", (name,)).fetchone()
        return _feed_row(row)

    def feeds(self) -> list[FeedRow]:
        return [_feed_row(r) for r in self.db.execute("SELECT * FROM feeds ORDER BY name")]

    def record_run(self, run: Run) -> None:
        """Append to the run history and keep the feed's last attempt/error current."""
        with self.transaction() as db:
            record_run(db, run)

    # Operator holds (migration 6)

    def holds(self) -> dict[str, float]:
        """Each held feed and since when."""
        return {r[0]: r[1] for r in self.db.execute("SELECT feed, since FROM holds")}

    def hold(self, feed: str) -> bool:
        """Put ``feed`` on hold; False when it already was (its time is kept)."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO holds (feed, since) VALUES (?, ?)", (feed, now())
            )
            return cursor.rowcount == 1

    def release(self, feed: str) -> bool:
        """Take ``feed`` off hold; False when it was not held."""
        with self.transaction() as db:
            return db.execute("DELETE FROM holds WHERE feed = ?", (feed,)).rowcount == 1

    def record_contact(self, supplier: str, error: str | None) -> None:
        """How the supplier's last exchange with CyberTrace ended (None: well)."""
        at = now()
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

    # Reading for status and metrics

    def last_contact_ok(self) -> bool | None:
        """Whether the newest exchange with CyberTrace, of any supplier, ended well
        (None: there was none yet)."""
        row = self.db.execute(
            "SELECT last_error IS NULL FROM contact ORDER BY last_attempt DESC LIMIT 1"
        ).fetchone()
        return None if row is None else bool(row[0])

    def counts(self, supplier: str, *, acked: bool = True) -> dict[str, int]:
        """Acknowledged (unless ``acked`` is false: it costs a scan of them),
        pending (by op) and rejected counts of a supplier."""
        db = self.db
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
        return out

    def rejected(self, supplier: str, limit: int = 20) -> list[tuple[str, str, str]]:
        """(value, op, reason) of the supplier's most recent rejections."""
        rows = self.db.execute(
            "SELECT value, op, reason FROM rejected WHERE supplier = ?"
            " ORDER BY rejected_at DESC, value LIMIT ?",
            (supplier, limit),
        )
        return [(r["value"], r["op"], r["reason"]) for r in rows]

    def acked_values(self, supplier: str) -> dict[str, int]:
        """Every acknowledged value of a supplier with its digest (for tests and tools)."""
        rows = self.db.execute("SELECT value, digest FROM acked WHERE supplier = ?", (supplier,))
        return {r[0]: r[1] for r in rows}


def read_feed(db: sqlite3.Connection, feed_id: int) -> FeedRow:
    """A feed's row as the current transaction sees it."""
    return _feed_row(db.execute("SELECT * FROM feeds WHERE id = ?", (feed_id,)).fetchone())


def record_run(db: sqlite3.Connection, run: Run) -> None:
    db.execute(
        "INSERT INTO runs (feed, started, finished, result, fetched, invalid, added, changed,"
        " removed, held, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            run.feed,
            run.started,
            run.finished,
            run.result,
            run.fetched,
            run.invalid,
            run.added,
            run.changed,
            run.removed,
            run.held,
            run.error,
        ),
    )
    db.execute(
        "DELETE FROM runs WHERE feed = ? AND id <= (SELECT max(id) FROM runs WHERE feed = ?) - ?",
        (run.feed, run.feed, RUNS_KEPT_PER_FEED),
    )
    db.execute(
        "UPDATE feeds SET last_attempt = ?, last_error = ? WHERE name = ?",
        (run.finished, run.error, run.feed),
    )
    if run.result in ("ok", "unchanged", "held"):
        db.execute("UPDATE feeds SET last_success = ? WHERE name = ?", (run.finished, run.feed))
        # A held change is a change upstream all the same; the first success starts the clock.
        changed = run.added + run.changed + run.removed + run.held > 0
        db.execute(
            "UPDATE feeds SET last_change = ? WHERE name = ? AND (? OR last_change IS NULL)",
            (run.finished, run.feed, changed),
        )


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


def translate(exc: sqlite3.Error, path: str) -> StoreError:
    """SQLite's error as feedsync's: damage (a page that does not parse, a file
    that is not a database) is StoreCorrupt, with what to do."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.OperationalError | sqlite3.IntegrityError
    ):
        return StoreCorrupt(
            f"state database {path} is damaged ({exc}): stop feedsync and run"
            " `feedsync check --state`"
        )
    return StoreError(f"state database {path}: {exc}")


def now() -> float:
    return time.time()


def forget_feed(db: sqlite3.Connection, feed_id: int, supplier: str) -> None:
    """Drop a feed's snapshot and row; its values are compared again, so that the
    supplier's next plan deletes those no other feed lists. Its runs stay."""
    _mark_feed_dirty(db, feed_id, supplier)
    for table in ("snapshot", "lines", "line_index"):
        db.execute(f"DELETE FROM {table} WHERE feed_id = ?", (feed_id,))
    db.execute("DELETE FROM feeds WHERE id = ?", (feed_id,))


def _mark_feed_dirty(db: sqlite3.Connection, feed_id: int, supplier: str) -> None:
    db.execute(
        "INSERT OR IGNORE INTO dirty (supplier, value)"
        " SELECT ?, value FROM snapshot WHERE feed_id = ?",
        (supplier, feed_id),
    )


def _feed_row(row: sqlite3.Row) -> FeedRow:
    return FeedRow(
        id=row["id"],
        name=row["name"],
        supplier=row["supplier"],
        validators=Validators(row["etag"], row["last_modified"], row["sha256"], row["cursor"]),
        indicators=row["indicators"],
        invalid=row["invalid"],
        last_attempt=row["last_attempt"],
        last_success=row["last_success"],
        last_error=row["last_error"],
        held_removals=row["held_removals"],
        held_total=row["held_total"],
        held_digest=row["held_digest"],
        held_since=row["held_since"],
        layout=row["layout"],
        line_bits=row["line_bits"],
        excluded=tuple(orjson.loads(row["excluded"] or "{}").items()),
        exclusions=row["exclusions"],
        last_change=row["last_change"],
    )


def _connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            uri = f"file:{Path(path).resolve()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed plan or acknowledgement survives power loss, not only a crash.
            db.execute("PRAGMA synchronous = FULL")
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA temp_store = FILE")
        db.execute("PRAGMA cache_size = -65536")
        db.execute("PRAGMA temp.cache_size = -32768")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(f"state database {path} is unreadable or corrupt: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"state database {path}: {exc}") from exc


def _check_version(db: sqlite3.Connection, path: str) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version != len(MIGRATIONS):
        raise StoreError(
            f"state database {path} has schema version {version}, expected {len(MIGRATIONS)}"
        )
