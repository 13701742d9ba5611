"""Line-level diffs: reading only the changed lines of a CSV body gives exactly
what reading all of it gives (snapshot, lines, counts), and marks exactly the
values whose content changed."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedsync.errors import StoreError
from feedsync.model import Validators
from feedsync.sources import CsvLines
from feedsync.sources.csvfeed import CsvOptions
from feedsync.store import Store, connection, lineindex
from feedsync.store.guard import Change
from feedsync.store.linediff import LineFeed, replace_lines

OPTIONS = CsvOptions(indicator="indicator", context=(("status", "status"),), tags_field="tags")
HEADER = b"# indicator,status,tags"
# A fixed first row: a comment before it would be taken for the header.
FIRST = b'"first.example","online",""'
VALUES = (
    "a.example",
    "www.a.example",
    "http://a.example/",
    "b.example",
    "http://b.example/x",
    "1.2.3.4",
    "1.2.3.4:80",
    "d41d8cd98f00b204e9800998ecf8427e",
    "not a value",
    "",
    "c.example",
    "hxxp://c[.]example",
)
LINE = st.one_of(
    st.builds(
        lambda value, status, tags: f'"{value}","{status}","{tags}"'.encode(),
        st.sampled_from(VALUES),
        st.sampled_from(("online", "offline")),
        st.sampled_from(("", "x", "x,y", "None")),
    ),
    st.sampled_from((b"# a comment", b"", b"\xff\xfe not utf-8", b"e.example", b'"f.example')),
    # Latin-1 bytes in the context, the tags, the indicator, and a column not read.
    st.sampled_from(
        (
            b'"g.example","caf\xe9",""',
            b'"g.example","online","t\xe9g"',
            b'"h\xe9.example","online",""',
            b'"a.example","online","","\xe9"',
        )
    ),
)


class Feed:
    """One feed in its own store, fed bodies one after the other."""

    def __init__(self, directory: Path, name: str = "feed") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(str(directory / "state.db"))
        self.body = directory / "body.csv"
        self.name = name

    def apply(
        self,
        body: list[bytes],
        *,
        ratio: float = 1.0,
        force: bool = False,
        header: bytes = HEADER,
        tags: tuple[str, ...] = ("STATIC",),
        options: CsvOptions = OPTIONS,
        name: str | None = None,
    ) -> Change:
        self.body.write_bytes(b"\n".join([header, FIRST, *body]) + b"\n")
        name = self.name if name is None else name
        row = self.store.feed(name, "S")
        job = LineFeed(
            feed=row,
            path=self.body,
            lines=CsvLines(options, name),
            static_tags=tags,
            validators=Validators(sha256="x"),
            max_delete_ratio=ratio,
            force=force,
            on_invalid=lambda _invalid: None,
        )
        with self.store.transaction() as db:
            return replace_lines(db, job)

    def state(self) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        db = connection(self.store)
        snapshot = db.execute(
            "SELECT key, value, kind, context, tags, digest, expires, line FROM snapshot"
            " ORDER BY key"
        ).fetchall()
        kept = db.execute("SELECT hash, key, reason FROM lines ORDER BY hash").fetchall()
        return [tuple(r) for r in snapshot], [tuple(r) for r in kept]

    def dirty(self) -> set[str]:
        return {r[0] for r in connection(self.store).execute("SELECT value FROM dirty")}

    def clear_dirty(self) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM dirty")

    def planned(self) -> None:
        """As if its supplier had been planned: only then do its changes mark values
        (a first plan compares every value anyway)."""
        with self.store.transaction() as db:
            db.execute("INSERT OR IGNORE INTO suppliers VALUES ('S', 'any')")

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def feeds(tmp_path: Path) -> Iterator[Iterator[Feed]]:
    made: list[Feed] = []

    def make() -> Iterator[Feed]:
        for number in itertools.count():
            feed = Feed(tmp_path / f"f{len(made)}-{number}")
            made.append(feed)
            yield feed

    yield make()
    for feed in made:
        feed.close()


def counts(change: Change) -> tuple[object, ...]:
    return (
        change.fetched,
        change.invalid,
        change.invalid_reasons,
        change.duplicates,
        change.removed,
        change.added,
        change.changed,
        change.held,
    )


def check_same_as_full_read(feeds: Iterator[Feed], first: list[bytes], second: list[bytes]) -> int:
    """Apply ``first`` then ``second`` to one feed, ``second`` alone to another;
    returns how many lines the second read parsed."""
    diffed, fresh = next(feeds), next(feeds)
    before = diffed.apply(first)
    assert before.lines_read == before.lines, "a first body is read whole"
    assert diffed.dirty() == set(), "a supplier never planned gets no marks"
    diffed.planned()
    old_rows = {row[1]: row[5] for row in diffed.state()[0]}
    change = diffed.apply(second)
    whole = fresh.apply(second)
    assert diffed.state() == fresh.state()
    assert counts(change)[:4] == counts(whole)[:4]
    new_rows = {row[1]: row[5] for row in diffed.state()[0]}
    changed = {v for v in old_rows.keys() | new_rows.keys() if old_rows.get(v) != new_rows.get(v)}
    assert diffed.dirty() == changed, "exactly the values whose content changed are marked"
    assert (change.removed, change.added, change.changed) == (
        len(old_rows.keys() - new_rows.keys()),
        len(new_rows.keys() - old_rows.keys()),
        len({v for v in old_rows.keys() & new_rows.keys() if old_rows[v] != new_rows[v]}),
    )
    return change.lines_read


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=st.lists(LINE, max_size=25),
    edits=st.lists(
        st.tuples(st.sampled_from(("drop", "add", "replace", "swap")), st.integers(0, 30), LINE),
        max_size=8,
    ),
)
def test_a_diffed_body_equals_a_full_read(
    feeds: Iterator[Feed], first: list[bytes], edits: list[tuple[str, int, bytes]]
) -> None:
    second = list(first)
    for op, at, line in edits:
        where = at % (len(second) + 1)
        if op == "add":
            second.insert(where, line)
        elif second and where < len(second):
            if op == "drop":
                del second[where]
            elif op == "replace":
                second[where] = line
            else:
                other = (where * 7 + 3) % len(second)
                second[where], second[other] = second[other], second[where]
    check_same_as_full_read(feeds, first, second)


def rows(count: int, start: int = 0, status: str = "online") -> list[bytes]:
    return [f'"host{n}.example","{status}","t{n % 3}"'.encode() for n in range(start, count)]


def test_a_one_percent_change_reads_about_one_percent(feeds: Iterator[Feed]) -> None:
    first = rows(2000)
    second = rows(2000)
    second[500:510] = rows(510, 500, status="offline")
    del second[100:110]
    second.extend(rows(2010, 2000))
    read = check_same_as_full_read(feeds, first, second)
    assert read == 20, "the 10 updated and 10 added lines, nothing else"


def test_a_line_that_names_a_key_again_competes_by_position(feeds: Iterator[Feed]) -> None:
    # Two spellings of one URL: the first line wins, whichever was there before.
    first = [b'"http://a.example/","online",""', b'"b.example","online",""']
    check_same_as_full_read(feeds, first, [b'"www.a.example","offline",""', *first])
    check_same_as_full_read(feeds, first, [*first, b'"www.a.example","offline",""'])
    check_same_as_full_read(feeds, [*first, b'"a.example","offline",""'], first[1:])
    moved = [b'"a.example","offline",""', b'"http://a.example/","online",""']
    check_same_as_full_read(feeds, moved, moved[::-1])


def test_repeated_lines_count_every_copy(feeds: Iterator[Feed]) -> None:
    bad = b'"not a value","online",""'
    first = [bad, bad, b'"a.example","online",""', b'"a.example","online",""']
    second = [*first, bad, b"z.example"]
    check_same_as_full_read(feeds, first, second)
    feed = next(feeds)
    feed.apply(first)
    change = feed.apply(second)
    assert (change.invalid, change.duplicates) == (3, 1)


@pytest.mark.parametrize("bucket", [1, 4, 64])
def test_buckets_split_and_merge_as_the_feed_grows_and_shrinks(
    feeds: Iterator[Feed], monkeypatch: pytest.MonkeyPatch, bucket: int
) -> None:
    monkeypatch.setattr(lineindex, "BUCKET", bucket)
    small, big = rows(40), rows(400)
    check_same_as_full_read(feeds, small, big)
    check_same_as_full_read(feeds, big, small + rows(45, 40))
    feed = next(feeds)
    feed.apply(big)
    bits = connection(feed.store).execute("SELECT line_bits FROM feeds").fetchone()[0]
    assert 1 << bits >= 400 // bucket, "a bucket holds about BUCKET lines"


def test_many_new_lines_are_read_in_full(
    feeds: Iterator[Feed], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lineindex, "MAX_REREAD", 50)
    second = rows(300, status="offline")
    assert check_same_as_full_read(feeds, rows(300), second) == len(second) + 2


def test_a_new_layout_is_read_in_full(feeds: Iterator[Feed]) -> None:
    feed = next(feeds)
    feed.apply(rows(50))
    assert feed.apply(rows(50, status="offline")).lines_read == 50
    moved = b"# indicator,reporter,status,tags"
    change = feed.apply(rows(50, status="offline"), header=moved)
    assert change.lines_read == 52, "the status column moved: every line reads differently"
    assert change.changed == 51, "the fixed first row too"
    assert feed.apply(rows(51, status="offline"), header=moved).lines_read == 1


def test_a_held_shrink_keeps_the_index(feeds: Iterator[Feed]) -> None:
    feed = next(feeds)
    feed.apply(rows(100))
    index = connection(feed.store).execute("SELECT hashes FROM line_index").fetchall()
    held = feed.apply(rows(10), ratio=0.5)
    assert held.held
    assert connection(feed.store).execute("SELECT hashes FROM line_index").fetchall() == index
    again = feed.apply(rows(10), ratio=0.5)
    assert not again.held and again.removed == 90, "the same change a second time stands"
    fresh = next(feeds)
    fresh.apply(rows(10))
    assert feed.state() == fresh.state()


def test_new_feed_tags_read_every_line_again(feeds: Iterator[Feed]) -> None:
    feed = next(feeds)
    feed.apply(rows(30))
    change = feed.apply(rows(30), tags=("OTHER",))
    assert (change.lines_read, change.changed) == (32, 31), "every row's tags changed"
    assert all('"OTHER"' in row[4] for row in feed.state()[0])


def test_undecodable_context_is_read_alike_by_a_diff_and_a_full_read(feeds: Iterator[Feed]) -> None:
    latin = [f'"lat{n}.example","caf\xe9","t{n % 3}"'.encode("latin-1") for n in range(40)]
    first = rows(60) + latin
    second = [*first[:10], b'"new\xe9.example","online",""', *first[20:], b'"n.example","\xe9",""']
    assert check_same_as_full_read(feeds, first, second) < len(second) / 4
    feed = next(feeds)
    assert feed.apply(first).replaced == 40, "each kept row whose context was replaced"
    change = feed.apply(second)
    assert (change.replaced, change.invalid_reasons) == (1, {"encoding": 1}), "lines read only"
    contexts = {row[1]: row[3] for row in feed.state()[0]}
    assert contexts["lat0.example"] == '{"status":"caf\ufffd"}'


def test_a_new_encoding_reads_every_line_again(feeds: Iterator[Feed]) -> None:
    body = [f'"host{n}.example","caf\xe9",""'.encode("latin-1") for n in range(30)]
    feed = next(feeds)
    feed.apply(body)
    latin = dataclasses.replace(OPTIONS, encoding="iso8859-1")
    change = feed.apply([*body, b'"more.example","online",""'], options=latin)
    assert (change.lines_read, change.changed, change.replaced) == (33, 30, 0)
    contexts = {row[1]: row[3] for row in feed.state()[0]}
    assert contexts["host0.example"] == '{"status":"café"}'


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.lists(LINE, max_size=25))
def test_a_first_body_loaded_into_the_snapshot_equals_a_staged_read(
    feeds: Iterator[Feed], body: list[bytes]
) -> None:
    """A feed's first body goes straight into its empty snapshot; one whose snapshot
    holds rows (under other tags: a full read) is staged and copied: the same result."""
    loaded, staged = next(feeds), next(feeds)
    direct = loaded.apply(body)
    staged.apply(rows(3), tags=("OTHER",))
    whole = staged.apply(body)
    assert loaded.state() == staged.state()
    assert counts(direct)[:4] == counts(whole)[:4]
    assert direct.added == direct.fetched
    # The next body's line diff sees what a full read of it would.
    check_same_as_full_read(feeds, body, [*body[1:], *rows(2)])


LINE_INDEX = "SELECT sql FROM sqlite_master WHERE name = 'snapshot_line'"


def traced(feed: Feed, body: list[bytes], name: str | None = None) -> list[str]:
    """The statements applying ``body`` ran."""
    db = connection(feed.store)
    ran: list[str] = []
    db.set_trace_callback(ran.append)
    try:
        feed.apply(body, name=name)
    finally:
        db.set_trace_callback(None)
    return ran


def test_the_first_load_builds_the_line_index_after_its_rows(feeds: Iterator[Feed]) -> None:
    """Only while no other feed is in the (global) index: a second feed's first body
    keeps it row by row, else it would rebuild the first feed's part too."""
    two, one, other = next(feeds), next(feeds), next(feeds)
    db = connection(two.store)
    (definition,) = db.execute(LINE_INDEX).fetchone()
    assert "DROP INDEX snapshot_line" in traced(two, rows(50))
    assert "DROP INDEX snapshot_line" not in traced(two, rows(80, 20), name="second")
    # Nor beside another feed's rows that have no line: the build would read them too.
    lineless = next(feeds)
    other_id = lineless.store.feed("records", "S").id
    with lineless.store.transaction() as write:
        write.execute(
            "INSERT INTO snapshot (feed_id, key, value, kind, context, tags, digest)"
            " VALUES (?, 'x.example', 'x.example', 'domain', '{}', '[]', 0)",
            (other_id,),
        )
    assert "DROP INDEX snapshot_line" not in traced(lineless, rows(50))
    assert len(lineless.state()[0]) == 52
    assert tuple(db.execute(LINE_INDEX).fetchone()) == (definition,)
    assert db.execute("PRAGMA integrity_check").fetchall()[0][0] == "ok"
    one.apply(rows(50))
    other.apply(rows(80, 20), name="second")
    every = "SELECT f.name, key, value, digest, line FROM snapshot JOIN feeds f ON f.id = feed_id"
    mine = db.execute(f"{every} ORDER BY 1, 2").fetchall()
    theirs = [
        *connection(one.store).execute(f"{every} ORDER BY 1, 2").fetchall(),
        *connection(other.store).execute(f"{every} ORDER BY 1, 2").fetchall(),
    ]
    assert [tuple(r) for r in mine] == [tuple(r) for r in theirs]
    # The line diff finds the rows by their line through the rebuilt index.
    check_same_as_full_read(feeds, rows(50), [*rows(50)[1:], *rows(52, 50)])


def test_a_load_stopped_after_dropping_the_line_index_leaves_it_in_place(
    feeds: Iterator[Feed],
) -> None:
    feed = next(feeds)
    db = connection(feed.store)
    (definition,) = db.execute(LINE_INDEX).fetchone()
    dropped: list[bool] = []
    db.set_trace_callback(lambda sql: dropped.append(True) if "DROP INDEX" in sql else None)
    # Interrupts the copy that follows the drop, as a failing write would.
    db.set_progress_handler(lambda: 1 if dropped else 0, 100)
    try:
        with pytest.raises(StoreError):
            feed.apply(rows(200))
    finally:
        db.set_trace_callback(None)
        db.set_progress_handler(None, 0)
    assert dropped
    assert tuple(db.execute(LINE_INDEX).fetchone()) == (definition,)
    assert db.execute("SELECT count(*) FROM snapshot").fetchone()[0] == 0
    feed.apply(rows(200))
    assert db.execute("PRAGMA integrity_check").fetchall()[0][0] == "ok"
    assert len(feed.state()[0]) == 201
