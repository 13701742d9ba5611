"""The state file: only a missing path starts afresh; feedsync's files are its own and private."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, USER

from feedsync import config as configuration
from feedsync.emulator import Emulator
from feedsync.errors import StoreCorrupt, StoreError
from feedsync.store import Store, connection, history, statefile
from feedsync.store.migrations import MIGRATIONS
from feedsync.sync import clear_spool, spool_dir


def config_for(tmp_path: Path, url: str, state: Path) -> Path:
    (tmp_path / "l.txt").write_text("a.example\nb.example\n")
    config = tmp_path / f"{state.name}.yaml"
    config.write_text(
        f"cybertrace: {{url: '{url}', username: {USER}, password: {PASSWORD}}}\n"
        f"state: {{path: {state}}}\n"
        f"feeds: [{{name: a, type: csv, url: {tmp_path / 'l.txt'}, supplier: Demo}}]\n"
    )
    return config


async def cli(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedsync.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


def test_a_missing_path_starts_a_private_database(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    store = Store.open(str(path))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        own = statefile.private_dir(str(path))
        assert own == tmp_path / "deep" / "state.db.d"
        assert stat.S_IMODE(own.stat().st_mode) == 0o700
        assert (own / "lock").exists() and not Path(f"{path}.lock").exists()
        assert (
            connection(store).execute("PRAGMA application_id").fetchone()[0]
            == statefile.APPLICATION_ID
        )
        for wal in path.parent.glob("state.db-*"):
            assert stat.S_IMODE(wal.stat().st_mode) == 0o600, wal
    finally:
        store.close()
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "exists but is empty"),
        (b"<html>not a database</html>" * 50, "is not an SQLite database"),
    ],
)
def test_an_existing_file_that_is_not_a_database_is_refused_untouched(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    for readonly in (False, True):
        with pytest.raises(StoreCorrupt, match=reason) as raised:
            Store.open(str(path), readonly=readonly)
        assert "restore it from a backup" in str(raised.value)
    assert path.read_bytes() == content, "the file is left as it was"


def test_another_applications_sqlite_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("PRAGMA application_id = 1234")
        db.execute("CREATE TABLE feeds (x)")
    with pytest.raises(StoreCorrupt, match="another application"):
        Store.open(str(other))
    plain = tmp_path / "plain.db"
    with sqlite3.connect(plain) as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreCorrupt, match="without feedsync's tables"):
        Store.open(str(plain))
    assert sqlite3.connect(plain).execute("PRAGMA user_version").fetchone()[0] == 0


def test_a_database_of_an_older_feedsync_is_stamped_and_tightened(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(str(path)).close()
    with sqlite3.connect(path) as db:  # as feedsync before migration 4 left it
        db.execute("PRAGMA application_id = 0")
        db.execute("PRAGMA user_version = 3")
        db.execute("DROP TABLE retired")
        db.execute("DROP TABLE holds")
        db.execute("DROP TABLE contact")
        db.execute("ALTER TABLE feeds DROP COLUMN excluded")
        db.execute("ALTER TABLE feeds DROP COLUMN exclusions")
        db.execute("DROP TABLE canary")
        db.execute("ALTER TABLE feeds DROP COLUMN last_change")
        db.execute("DROP TABLE journal")
        db.execute("DROP TABLE seen")
        db.execute("ALTER TABLE feeds DROP COLUMN last_stage")
        db.execute("ALTER TABLE runs DROP COLUMN stage")
        db.execute("DROP TABLE pending_range")
        db.execute("DROP INDEX acked_due")
    path.chmod(0o644)
    store = Store.open(str(path))
    try:
        assert (
            connection(store).execute("PRAGMA application_id").fetchone()[0]
            == statefile.APPLICATION_ID
        )
        assert connection(store).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_migration_13_indexes_the_acknowledged_rows_of_a_version_12_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    Store.open(str(path)).close()
    with sqlite3.connect(path) as db:  # as feedsync before migration 13 left it
        db.execute("DROP INDEX acked_due")
        db.execute("PRAGMA user_version = 12")
        db.execute("INSERT INTO acked VALUES ('S', 'a.example', -3, 10.0)")
    store = Store.open(str(path))
    try:
        db = connection(store)
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        found = db.execute(
            "SELECT value FROM acked INDEXED BY acked_due WHERE supplier = 'S' AND acked_at <= 10.0"
        ).fetchall()
        assert [tuple(row) for row in found] == [("a.example",)]
    finally:
        store.close()


def test_a_build_that_fails_leaves_nothing_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    def broken(_db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(StoreError, match="cannot create state database"):
        statefile.create_if_missing(str(path), broken)
    assert list(tmp_path.iterdir()) == []


def test_processes_racing_to_create_end_with_one_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    made: list[int] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            statefile.create_if_missing(str(path), build)
        except BaseException as exc:
            errors.append(exc)

    def build(db: sqlite3.Connection) -> None:
        made.append(threading.get_ident())
        time.sleep(0.05)  # every racer is inside its build at once
        db.execute("CREATE TABLE feeds (id)")
        db.execute("PRAGMA user_version = 1")

    racers = [threading.Thread(target=create) for _ in range(6)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert made and not errors, errors
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == statefile.APPLICATION_ID
    assert [p.name for p in tmp_path.iterdir()] == ["state.db"], "no temporary file is left"


def test_an_older_feedsync_holding_its_lock_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(str(path)).close()
    old = Path(f"{path}.lock")
    fd = os.open(old, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreError, match="in use by another feedsync process"):
            Store.open(str(path))
    finally:
        os.close(fd)
    Store.open(str(path)).close()
    assert not old.exists(), "a lock file nobody holds is retired"


def test_spools_of_two_databases_in_one_directory_are_apart(tmp_path: Path) -> None:
    os.environ.setdefault("CT_PASSWORD", PASSWORD)
    first = configuration.load(config_for(tmp_path, "http://127.0.0.1:9", tmp_path / "one.db"))
    second = configuration.load(config_for(tmp_path, "http://127.0.0.1:9", tmp_path / "two.db"))
    assert spool_dir(first) != spool_dir(second)
    spool_dir(second).mkdir(parents=True)
    body = spool_dir(second) / "a.x.body"
    body.write_text("in flight")
    clear_spool(first)
    assert body.exists(), "one instance's start leaves the other's downloads"


def damaged(tmp_path: Path) -> Path:
    """A feedsync database whose table pages after the first few are garbage."""
    path = tmp_path / "state.db"
    store = Store.open(str(path))
    # The pages of an empty database (the schema among them) stay readable; the
    # feeds' rows, written after them, do not.
    first = connection(store).execute("PRAGMA page_count").fetchone()[0]
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO feeds (name, supplier) VALUES (?, ?)",
            [(f"feed-{i:05d}-" + "x" * 200, "Demo") for i in range(3000)],
        )
    connection(store).execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    size = path.stat().st_size
    page = 4096
    with path.open("r+b") as handle:
        for offset in range(first * page, size, page):
            handle.seek(offset + 8)
            handle.write(b"\xa5" * 2000)
    return path


async def test_damaged_pages_are_reported_not_a_traceback(
    tmp_path: Path, emulator: Emulator
) -> None:
    path = damaged(tmp_path)
    config = config_for(tmp_path, emulator.url, path)
    for command in ("status", "sync"):
        code, out = await cli(command, "-c", str(config))
        assert code == 1, out
        assert "Traceback" not in out and "state database" in out, out
    assert emulator.supplier("Demo") is None, "nothing was sent"
    code, out = await cli("check", "--state", "-c", str(config))
    assert code == 1 and "damaged (SQLite quick_check)" in out, out
    code, out = await cli("run", "-c", str(config))
    assert code == 1 and "fails SQLite's quick_check" in out, out


def test_reads_of_damaged_pages_are_store_errors_without_a_guard(tmp_path: Path) -> None:
    """The store translates at its own boundary: a caller that reads without
    ``Store.call`` or ``guarded`` still gets StoreCorrupt, never sqlite3's error."""
    path = damaged(tmp_path)
    loaded = configuration.parse(
        "cybertrace: {url: 'https://20.0.0.1', username: u, password: p}\n"
        f"state: {{path: {path}}}\n"
        "feeds: [{name: a, type: csv, url: 'https://20.0.0.2/l.txt', supplier: Demo}]\n"
    )
    store = Store.open(str(path), readonly=True)
    try:
        with pytest.raises(StoreCorrupt, match="damaged"):
            store.feeds()
        with pytest.raises(StoreCorrupt, match="damaged"):
            history.feeds_named(store, loaded, "a")
    finally:
        store.close()


async def test_check_state_on_a_sound_and_on_a_missing_database(
    tmp_path: Path, emulator: Emulator
) -> None:
    path = tmp_path / "state.db"
    config = config_for(tmp_path, emulator.url, path)
    code, out = await cli("check", "--state", "-c", str(config))
    assert code == 0 and "no state database yet" in out, out
    assert not path.exists(), "check creates nothing"
    code, out = await cli("sync", "-c", str(config))
    assert code == 0, out
    code, out = await cli("check", "--state", "-c", str(config))
    assert code == 0 and "ok (1 feeds)" in out, out


async def test_an_empty_state_file_stops_sync_and_leaves_the_supplier(
    tmp_path: Path, emulator: Emulator
) -> None:
    path = tmp_path / "state.db"
    config = config_for(tmp_path, emulator.url, path)
    assert (await cli("sync", "-c", str(config)))[0] == 0
    assert set(emulator.indicators("Demo")) == {"a.example", "b.example"}
    path.write_bytes(b"")  # a full disk, a bad restore
    (tmp_path / "l.txt").write_text("c.example\n")
    code, out = await cli("sync", "-c", str(config))
    assert code == 1 and "exists but is empty" in out, out
    assert set(emulator.indicators("Demo")) == {"a.example", "b.example"}
    assert path.read_bytes() == b""


def test_write_probe_sees_a_lock_another_connection_holds(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store.open(str(path)).close()
    assert statefile.write_probe(str(path)) == ""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert "write-locked" in statefile.write_probe(str(path), timeout=0.2)
        assert time.monotonic() - started < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert statefile.write_probe(str(path)) == ""
