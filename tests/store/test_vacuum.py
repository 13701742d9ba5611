"""The state database gives its free pages back: new files are incremental,
older ones are converted once on open, and a cycle releases what it freed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import ConfigFactory
from structlog.testing import capture_logs

from feedsync import metrics
from feedsync.emulator import Emulator
from feedsync.store import Store, connection, statefile, vacuum
from feedsync.sync import Cycle


def auto_vacuum(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA auto_vacuum").fetchone()[0])


def old_style(path: Path, rows: int = 20_000) -> None:
    """A feedsync database as releases before auto_vacuum left it, with some runs."""
    Store.open(str(path)).close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA auto_vacuum = NONE")
        db.execute("VACUUM")
        db.executemany(
            "INSERT INTO runs (feed, started, finished, result) VALUES (?, 0, 0, 'ok')",
            [(f"feed-{i:05d}-" + "x" * 200,) for i in range(rows)],
        )
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    assert auto_vacuum(path) == 0


def test_a_new_database_is_incremental(tmp_path: Path) -> None:
    Store.open(str(tmp_path / "state.db")).close()
    assert auto_vacuum(tmp_path / "state.db") == vacuum.INCREMENTAL


def test_an_older_database_is_converted_once_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old_style(path)
    with capture_logs() as logged:
        Store.open(str(path)).close()
        Store.open(str(path)).close()
    assert auto_vacuum(path) == vacuum.INCREMENTAL
    [done] = [e for e in logged if e["event"] == "store.vacuumed"]
    assert done["log_level"] == "info"
    assert done["before_bytes"] > 0 and done["after_bytes"] > 0 and done["seconds"] >= 0
    with sqlite3.connect(path) as db:  # nothing lost
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 20_000


def test_a_vacuum_that_fails_is_a_warning_and_the_database_stays_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    old_style(path)
    holder = sqlite3.connect(path, isolation_level=None)  # another writer, mid-transaction
    holder.execute("BEGIN IMMEDIATE")
    db = statefile.connect(str(path), readonly=False)
    try:
        db.execute("PRAGMA busy_timeout = 0")
        with capture_logs() as logged:
            assert not vacuum.convert(db, str(path))
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 20_000
    finally:
        db.close()
        holder.execute("ROLLBACK")
        holder.close()
    [failed] = [e for e in logged if e["event"] == "store.vacuum_failed"]
    assert failed["log_level"] == "warning" and "locked" in failed["error"]
    assert auto_vacuum(path) == 0
    Store.open(str(path)).close()  # tried again at the next open
    assert auto_vacuum(path) == vacuum.INCREMENTAL


def test_without_the_disk_for_a_copy_the_conversion_is_skipped_with_a_warning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    old_style(path)
    db = statefile.connect(str(path), readonly=False)
    try:
        with capture_logs() as logged:
            assert not vacuum.convert(db, str(path), available=lambda _path: 4096)
    finally:
        db.close()
    [skipped] = [e for e in logged if e["event"] == "store.vacuum_skipped"]
    assert skipped["log_level"] == "warning"
    assert skipped["needed_bytes"] > skipped["available_bytes"] == 4096
    assert auto_vacuum(path) == 0


async def test_a_database_that_grew_and_shrank_gives_its_free_pages_back(
    tmp_path: Path, emulator: Emulator, make_config: ConfigFactory
) -> None:
    body = tmp_path / "big.txt"
    body.write_text("".join(f"host-{i:06d}.feedsync-test.net\n" for i in range(30_000)))
    loaded = make_config(
        emulator.url,
        f"- {{name: a, type: csv, url: {body}, supplier: Demo, max_delete_ratio: 1.0}}\n",
    )
    store = Store.open(loaded.state.path)
    try:
        await Cycle(loaded, store).run()
        body.write_text("".join(f"host-{i:06d}.feedsync-test.net\n" for i in range(10)))
        with capture_logs() as logged:
            [report], _ = await Cycle(loaded, store).run()
        assert report.change.removed == 29_990
        left = vacuum.space(connection(store), store.path)
    finally:
        store.close()
    # The shrink freed the snapshot's and the acknowledged values' pages (and the
    # deletions' own pending rows), while retired and the journal took in every
    # removed value: the file ends smaller than the cycle left it, and nearly full.
    [released] = [e for e in logged if e["event"] == "store.released"]
    assert released["pages"] > vacuum.FREE_MIN_PAGES and released["steps"] >= 1
    assert left.file_bytes == released["after_bytes"] < released["before_bytes"] * 0.8
    assert not left.crowded() and left.free_pages <= vacuum.FREE_MIN_PAGES
    assert metrics.REGISTRY.get_sample_value("feedsync_state_db_bytes") == left.file_bytes
    assert metrics.REGISTRY.get_sample_value("feedsync_state_db_free_bytes") == left.free_bytes


async def test_release_leaves_a_few_free_pages_alone(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "state.db"))
    try:
        before = vacuum.space(connection(store), store.path)
        with capture_logs() as logged:
            left = await store.release_space()
    finally:
        store.close()
    assert left.pages == before.pages
    assert not [e for e in logged if e["event"] == "store.released"]


def test_a_step_releases_at_most_its_pages(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store.open(str(path))
    db = connection(store)
    try:
        with store.transaction() as tx:
            tx.executemany(
                "INSERT INTO runs (feed, started, finished, result) VALUES (?, 0, 0, 'ok')",
                [(f"feed-{i:05d}-" + "x" * 400,) for i in range(30_000)],
            )
        with store.transaction() as tx:
            tx.execute("DELETE FROM runs")
        crowded = vacuum.space(db, str(path))
        assert crowded.crowded()
        after = vacuum.release_step(db, str(path), pages=100)
    finally:
        store.close()
    assert after.free_pages == crowded.free_pages - 100


def test_a_reader_on_an_older_snapshot_leaves_the_wal_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store.open(str(path))
    db = connection(store)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM runs").fetchone()  # holds its snapshot
        with store.transaction() as tx:
            tx.execute(
                "INSERT INTO runs (feed, started, finished, result) VALUES ('a', 0, 0, 'ok')"
            )
        wal = Path(f"{path}-wal").stat().st_size
        assert wal > 0
        vacuum.truncate_wal(db, str(path))  # returns at once, busy
        assert Path(f"{path}-wal").stat().st_size == wal
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
        reader.execute("COMMIT")
        vacuum.truncate_wal(db, str(path))
        assert Path(f"{path}-wal").stat().st_size == 0
    finally:
        reader.close()
        store.close()


def _freed(store: Store, rows: int = 30_000) -> None:
    with store.transaction() as tx:
        tx.executemany(
            "INSERT INTO runs (feed, started, finished, result) VALUES (?, 0, 0, 'ok')",
            [(f"feed-{i:05d}-" + "x" * 400,) for i in range(rows)],
        )
        tx.execute("INSERT INTO holds (feed, since) VALUES ('kept', 1)")
    with store.transaction() as tx:
        tx.execute("DELETE FROM runs")


def test_a_big_freelist_is_released_in_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store.open(str(path))
    db = connection(store)
    try:
        _freed(store)
        crowded = vacuum.space(db, str(path))
        assert crowded.crowded()
        after = vacuum.release_all(db, str(path))
        assert [tuple(r) for r in db.execute("SELECT feed FROM holds")] == [("kept",)]
        assert statefile.quick_check(db, str(path)) == []
    finally:
        store.close()
    assert after.free_pages == 0 and after.pages < crowded.pages - crowded.free_pages // 2
    assert auto_vacuum(path) == vacuum.INCREMENTAL


async def test_release_takes_a_freelist_over_the_sweep_in_one_call(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "state.db"))
    try:
        _freed(store)
        with capture_logs() as logged:
            left = await vacuum.release(store, connection(store), pages=100, sweep=1000)
    finally:
        store.close()
    [released] = [e for e in logged if e["event"] == "store.released"]
    assert released["steps"] == 1 and left.free_pages == 0


def test_a_database_a_release_left_in_full_mode_is_set_back_without_a_vacuum(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    Store.open(str(path)).close()
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA auto_vacuum = FULL")  # a crash between release_all's pragmas
    assert auto_vacuum(path) == vacuum.FULL
    with capture_logs() as logged:
        Store.open(str(path)).close()
    assert auto_vacuum(path) == vacuum.INCREMENTAL
    assert not [e for e in logged if e["event"] == "store.vacuumed"]
