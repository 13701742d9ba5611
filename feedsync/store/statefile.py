"""The state database as files, and SQLite's errors as feedsync's.

Recognising feedsync's file, its lock, its private directory.

Which file is feedsync's, who may write it, and whether it can take a write
now; ``translate`` and ``translated`` are the store's one boundary for SQLite's
errors.

Only a path that does not exist starts a new database: an existing file that
is empty, is not SQLite, or is another application's database is refused with
what to do, because taking it as new would leave everything feedsync ever
sent in CyberTrace, unmanaged, forever. A new database is built under a
temporary name and linked into place, so a crash never leaves a half-made one
at the path and two processes racing to create it end with one.

Next to the database feedsync keeps one directory of its own,
``<state.path>.d`` (0700): the writers' lock, the spool of downloads and the
MISP-feed cache. It belongs to that database alone; two instances with their
state in one directory never touch each other's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from feedsync.clock import SYSTEM, Clock
from feedsync.errors import StoreBusy, StoreCorrupt, StoreError

# "FSYN": PRAGMA application_id, so a database is known as feedsync's by its header.
APPLICATION_ID = 0x4653594E
SQLITE_MAGIC = b"SQLite format 3\x00"
T = TypeVar("T")
P = ParamSpec("P")


class _Located(Protocol):
    @property
    def path(self) -> str: ...


S = TypeVar("S", bound=_Located)

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
LOCK_NAME = "lock"


def private_dir(path: str) -> Path:
    """The directory of feedsync's own files beside the database ``path``."""
    database = Path(path).resolve()
    return database.with_name(database.name + ".d")


def ensure_private_dir(path: str) -> Path:
    """``private_dir(path)``, created 0700 if missing and tightened if not."""
    directory = private_dir(path)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(
                f"{directory} is not a directory; feedsync keeps its lock and spool there"
            )
        if info.st_mode & 0o077:
            directory.chmod(PRIVATE_DIR)
    except OSError as exc:
        raise StoreError(f"cannot create {directory}: {exc}") from exc
    return directory


def take_lock(path: str) -> int:
    """The writers' lock of the database ``path``, held until the fd is closed."""
    lock_path = ensure_private_dir(path) / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE)
    except OSError as exc:
        raise StoreError(f"cannot open lock file {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _retire_old_lock(path)
    except BlockingIOError as exc:
        os.close(fd)
        raise StoreBusy(
            f"state database {path} is in use by another feedsync process (lock {lock_path});"
            " `feedsync status` still works"
        ) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def _retire_old_lock(path: str) -> None:
    """feedsync before 0.x kept ``<path>.lock`` beside the database: one still
    holding it is a running older feedsync, which must not share the database."""
    old = Path(f"{path}.lock")
    try:
        fd = os.open(old, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        old.unlink(missing_ok=True)
    finally:
        os.close(fd)


def create_if_missing(path: str, build: Callable[[sqlite3.Connection], None]) -> None:
    """Create the database at ``path`` when nothing is there: a file made 0600
    under a temporary name, ``build(connection)`` run on it, then linked into
    place."""
    target = Path(path)
    if target.exists() or target.is_symlink():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of state database {path}: {exc}") from exc
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.new-", dir=target.parent)  # 0600
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot create state database {path}: {exc}") from exc
    temporary = Path(name)
    try:
        connection = sqlite3.connect(temporary, isolation_level=None)
        try:
            # Before the first table, or it takes a VACUUM (vacuum.py): free pages
            # can then be given back to the file system a few at a time.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            build(connection)
        finally:
            connection.close()
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(temporary, target)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot create state database {path}: {exc}") from exc
    finally:
        for leftover in (temporary, Path(f"{temporary}-journal")):
            leftover.unlink(missing_ok=True)


def check_file(path: str) -> None:
    """Refuse an existing ``path`` that cannot be feedsync's database."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise StoreCorrupt(f"state database {path} is not a regular file")
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError as exc:
        raise StoreError(f"state database {path} does not exist yet (nothing synced)") from exc
    except OSError as exc:
        raise StoreError(f"state database {path}: {exc}") from exc
    if info.st_size == 0:
        raise StoreCorrupt(f"state database {path} exists but is empty (0 bytes). {ADVICE}")
    if header != SQLITE_MAGIC:
        raise StoreCorrupt(f"state database {path} is not an SQLite database. {ADVICE}")
    if info.st_mode & 0o077 and info.st_uid == os.geteuid():
        # Older feedsync made it 0644: feed contents and cached bodies are not for every user.
        with contextlib.suppress(OSError):
            os.chmod(path, PRIVATE_FILE)


def check_identity(db: sqlite3.Connection, path: str) -> None:
    """Refuse a readable SQLite database that is not feedsync's. A database of
    feedsync from before application_id was stamped has its schema version
    and its ``feeds`` table; migration 4 stamps it."""
    application = db.execute("PRAGMA application_id").fetchone()[0]
    if application == APPLICATION_ID:
        return
    if application != 0:
        raise StoreCorrupt(
            f"state database {path} belongs to another application"
            f" (application_id {application:#x}). {ADVICE}"
        )
    version = db.execute("PRAGMA user_version").fetchone()[0]
    feeds = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feeds'"
    ).fetchone()
    if version == 0 or feeds is None:
        raise StoreCorrupt(
            f"state database {path} is an SQLite database without feedsync's tables. {ADVICE}"
        )


ADVICE = (
    "If this is a new installation, remove the file and start again. If it held"
    " feedsync's state, restore it from a backup; to start over instead, move it"
    " away and run `feedsync sync --resync` once, then delete by hand in CyberTrace"
    " what the old state had sent and the feeds no longer list."
)


def quick_check(db: sqlite3.Connection, path: str, limit: int = 5) -> list[str]:
    """What ``PRAGMA quick_check`` finds wrong (empty when the file is sound)."""
    try:
        rows = [str(r[0]) for r in db.execute(f"PRAGMA quick_check({int(limit)})")]
    except sqlite3.DatabaseError as exc:
        return [f"{path}: {exc}"]
    return [] if rows == ["ok"] else rows


def write_probe(path: str, timeout: float = 0.5) -> str:
    """Whether the database can take a write now: a connection of its own asks
    for the write lock (``BEGIN IMMEDIATE``) and gives it back at once. "" when
    it can; what stops it otherwise."""
    try:
        db = sqlite3.connect(
            f"file:{Path(path).resolve()}?mode=rw", uri=True, timeout=timeout, isolation_level=None
        )
    except sqlite3.Error as exc:
        return f"state database cannot be opened for writing: {exc}"
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return f"state database is write-locked by another connection for over {timeout:g} s"
        return f"state database cannot take a write: {exc}"
    except sqlite3.Error as exc:
        return f"state database cannot take a write: {exc}"
    finally:
        db.close()
    return ""


class Clocked(sqlite3.Connection):
    """A store's connection, carrying the store's clock: what the store's
    functions stamp inside a caller's transaction is read from it (``store.now``)."""

    clock: Clock = SYSTEM


def connect(path: str, *, readonly: bool, clock: Clock = SYSTEM) -> Clocked:
    """A connection to the database ``path`` as the store uses it: autocommit
    (the store begins its own transactions), WAL, rows by name."""
    try:
        if readonly:
            uri = f"file:{Path(path).resolve()}?mode=ro"
            db = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, factory=Clocked
            )
        else:
            db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, factory=Clocked
            )
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed plan or acknowledgement survives power loss, not only a crash.
            db.execute("PRAGMA synchronous = FULL")
        db.clock = clock
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


def translated(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """A Store method (or a store function of a Store) whose SQLite errors come
    out as StoreError (``translate``): reads as well as writes, whether or not
    the caller went through ``Store.call``. The one boundary, with ``translate``."""

    @functools.wraps(method)
    def wrapper(store: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(store, *args, **kwargs)
        except sqlite3.Error as exc:
            raise translate(exc, store.path) from exc

    return wrapper


def check_version(db: sqlite3.Connection, path: str, expected: int) -> None:
    """Refuse, read-only, a database of another schema version than ``expected``."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version != expected:
        raise StoreError(
            f"state database {path} has schema version {version}, expected {expected}"
        )
