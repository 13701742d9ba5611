"""The state database's schema, one script per version (``PRAGMA user_version``).

A released migration never changes; a new version appends one. ``store.migrate``
runs the missing ones, each in its own transaction.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the first release.
    """
    CREATE TABLE feeds (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        supplier TEXT NOT NULL,
        etag TEXT, last_modified TEXT, sha256 TEXT, cursor TEXT,
        indicators INTEGER NOT NULL DEFAULT 0,
        invalid INTEGER NOT NULL DEFAULT 0,
        last_attempt REAL, last_success REAL, last_error TEXT,
        held_removals INTEGER, held_total INTEGER, held_digest TEXT, held_since REAL
    );
    CREATE TABLE snapshot (
        feed_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        kind TEXT NOT NULL,
        context TEXT NOT NULL,
        tags TEXT NOT NULL,
        digest INTEGER NOT NULL,
        PRIMARY KEY (feed_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX snapshot_value ON snapshot (value, feed_id);
    CREATE TABLE suppliers (
        name TEXT PRIMARY KEY,
        signature TEXT
    ) WITHOUT ROWID;
    CREATE TABLE dirty (
        supplier TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (supplier, value)
    ) WITHOUT ROWID;
    CREATE TABLE acked (
        supplier TEXT NOT NULL,
        value TEXT NOT NULL,
        digest INTEGER NOT NULL,
        acked_at REAL NOT NULL,
        PRIMARY KEY (supplier, value)
    ) WITHOUT ROWID;
    CREATE TABLE pending (
        id INTEGER PRIMARY KEY,
        supplier TEXT NOT NULL,
        value TEXT NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('add', 'update', 'delete')),
        digest INTEGER,
        body TEXT NOT NULL,
        planned_at REAL NOT NULL,
        UNIQUE (supplier, value)
    );
    CREATE INDEX pending_send ON pending (supplier, op, id);
    CREATE TABLE rejected (
        supplier TEXT NOT NULL,
        value TEXT NOT NULL,
        op TEXT NOT NULL,
        digest INTEGER,
        reason TEXT NOT NULL,
        rejected_at REAL NOT NULL,
        PRIMARY KEY (supplier, value)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        feed TEXT NOT NULL,
        started REAL NOT NULL,
        finished REAL NOT NULL,
        result TEXT NOT NULL,
        fetched INTEGER NOT NULL DEFAULT 0,
        invalid INTEGER NOT NULL DEFAULT 0,
        added INTEGER NOT NULL DEFAULT 0,
        changed INTEGER NOT NULL DEFAULT 0,
        removed INTEGER NOT NULL DEFAULT 0,
        held INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX runs_feed ON runs (feed, id);
    """,
    # 2: rows a source gives an end of validity (STIX valid_until) expire on their own.
    """
    ALTER TABLE snapshot ADD COLUMN expires REAL;
    CREATE INDEX snapshot_expires ON snapshot (feed_id, expires) WHERE expires IS NOT NULL;
    """,
    # 3: line indexes, so that a CSV body is diffed by its changed lines (see lines.py).
    """
    ALTER TABLE snapshot ADD COLUMN line INTEGER;
    CREATE INDEX snapshot_line ON snapshot (feed_id, line) WHERE line IS NOT NULL;
    CREATE TABLE lines (
        feed_id INTEGER NOT NULL,
        hash INTEGER NOT NULL,
        key TEXT,
        reason TEXT,
        PRIMARY KEY (feed_id, hash)
    ) WITHOUT ROWID;
    CREATE INDEX lines_key ON lines (feed_id, key) WHERE key IS NOT NULL;
    CREATE TABLE line_index (
        feed_id INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        hashes BLOB NOT NULL,
        PRIMARY KEY (feed_id, bucket)
    ) WITHOUT ROWID;
    ALTER TABLE feeds ADD COLUMN layout TEXT;
    ALTER TABLE feeds ADD COLUMN line_bits INTEGER;
    -- Most rows are keyed by their value (CSV), and found by the primary key: index
    -- only the others, so that changing a row touches one index page fewer.
    DROP INDEX snapshot_value;
    CREATE INDEX snapshot_keyed ON snapshot (value, feed_id) WHERE key != value;
    """,
    # 4: the header names the file as feedsync's (statefile.APPLICATION_ID, "FSYN"),
    # so that an empty or foreign SQLite file is never mistaken for a new state.
    """
    PRAGMA application_id = 1179867470
    """,
    # 5: values feedsync deleted from a supplier, so that a resync after CyberTrace was
    # restored from an older backup deletes them again (CyberTrace cannot list a
    # supplier's indicators). Kept for the supplier's retention, or for ever.
    """
    CREATE TABLE retired (
        supplier TEXT NOT NULL,
        value TEXT NOT NULL,
        retired_at REAL NOT NULL,
        PRIMARY KEY (supplier, value)
    ) WITHOUT ROWID
    """,
    # 6: what `feedsync status` tells an operator without the daemon or CyberTrace's
    # secret. Feeds put on hold (`feedsync hold`), which their schedule does not run
    # until `feedsync release`, across restarts; by name, not feeds.id, since a feed
    # can be held before its first run made its row. Each supplier's last exchange
    # with CyberTrace, so that its state and last error outlive the process.
    """
    CREATE TABLE holds (
        feed TEXT PRIMARY KEY,
        since REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE contact (
        supplier TEXT PRIMARY KEY,
        last_attempt REAL NOT NULL,
        last_success REAL,
        last_error TEXT,
        failing_since REAL
    ) WITHOUT ROWID;
    """,
    # 7: the values the last applied fetch of each feed left out by its exclusions,
    # by reason (a JSON object), for `feedsync status`; the fingerprint of the
    # exclusion settings it was applied under (a feed whose settings changed is read
    # again, although its body did not).
    """
    ALTER TABLE feeds ADD COLUMN excluded TEXT;
    ALTER TABLE feeds ADD COLUMN exclusions TEXT;
    """,
    # 8: each supplier's canary (canary.py): the value CyberTrace must still match,
    # and the one it replaced until its DELETE is done. Apart from acked, so that no
    # count, plan or sweep of feed indicators ever meets it.
    """
    CREATE TABLE canary (
        supplier TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        placed_at REAL NOT NULL,
        previous TEXT,
        checked_at REAL,
        restored_at REAL
    ) WITHOUT ROWID
    """,
    # 9: when each feed's content last changed (upstream staleness, expect_change_within),
    # from the run history for feeds that have one: the last run that changed anything,
    # else the first run known.
    """
    ALTER TABLE feeds ADD COLUMN last_change REAL;
    UPDATE feeds SET last_change = coalesce(
        (SELECT max(finished) FROM runs r WHERE r.feed = feeds.name
            AND r.added + r.changed + r.removed + r.held > 0),
        (SELECT min(started) FROM runs r WHERE r.feed = feeds.name));
    """,
    # 10: the change journal (journal.py): every change feedsync applied or refused, with
    # its reason, newest last; ``value`` NULL for one entry standing for ``count`` values
    # (a first fetch of a big feed). Bounded by state.journal_max_age / journal_max_rows.
    # ``seen``: when feedsync first sent each value to a supplier (provenance fields).
    """
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        supplier TEXT NOT NULL,
        value TEXT,
        event TEXT NOT NULL,
        feed TEXT,
        detail TEXT NOT NULL DEFAULT '',
        count INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX journal_value ON journal (value, id);
    CREATE TABLE seen (
        supplier TEXT NOT NULL,
        value TEXT NOT NULL,
        first_seen REAL NOT NULL,
        PRIMARY KEY (supplier, value)
    ) WITHOUT ROWID;
    """,
    # 11: where a failed run failed (fetch, parse, store, cybertrace), in the history and
    # as the feed's last, so that a daemon started while a feed fails shows
    # feedsync_feed_failing{stage} at once instead of after the feed's next run.
    """
    ALTER TABLE runs ADD COLUMN stage TEXT;
    ALTER TABLE feeds ADD COLUMN last_stage TEXT;
    """,
    # 12: a supplier's first plan as value ranges of its feeds' snapshots (ranges.py):
    # every value listed strictly between lo ('' from the start) and hi (NULL to the end)
    # is a pending add, its body cut when sent; ``target`` is the merge and body shape.
    """
    CREATE TABLE pending_range (
        supplier TEXT NOT NULL,
        lo TEXT NOT NULL,
        hi TEXT,
        target TEXT NOT NULL,
        planned_at REAL NOT NULL,
        PRIMARY KEY (supplier, lo)
    ) WITHOUT ROWID
    """,
    # 13: acknowledged values by age, so that a plan's refresh (reconcile._due) reads the
    # rows past two thirds of the span, not every acknowledged row of the supplier. By
    # age alone: a batch's acks, stamped alike, append to one place of it.
    """
    CREATE INDEX acked_due ON acked (supplier, acked_at)
    """,
)
