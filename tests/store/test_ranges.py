"""A first plan kept as pending ranges (store/ranges.py) behaves as the eager plan of rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedsync.cybertrace.verdict import Verdict
from feedsync.model import Indicator, Kind, Validators
from feedsync.store import Store, connection, ranges, story
from feedsync.store.bodies import Target, put_body, single_put_payloads
from feedsync.store.pending import (
    Batch,
    batches,
    operations,
    planned_tags,
    preview,
    reject_oversize,
    settle,
)
from feedsync.store.reconcile import Plan, plan
from feedsync.store.snapshot import digest64, replace

Listed = list[tuple[str, str, dict[str, str], tuple[str, ...]]]  # (feed, value, context, tags)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(str(tmp_path / "state.db"))
    yield opened
    opened.close()


def ind(value: str, context: dict[str, str] | None = None, tags: tuple[str, ...] = ()) -> Indicator:
    return Indicator(value, value, Kind.DOMAIN, tuple((context or {}).items()), tags)


def load(store: Store, feed: str, items: list[Indicator]) -> None:
    row = store.feed(feed, "S")
    with store.transaction() as db:
        replace(
            db,
            row,
            list(items),
            max_delete_ratio=1.0,
            force=True,
            validators=Validators(sha256=str(len(items))),
            on_invalid=lambda _i: None,
        )


def load_all(store: Store, listed: Listed, names: tuple[str, ...] = ("b", "a", "c")) -> Target:
    for name in names:
        load(store, name, [ind(v, c, t) for f, v, c, t in listed if f == name])
    ids = tuple(store.feed(name, "S").id for name in names)
    return Target("S", ids, names)


def replan(store: Store, target: Target, *, eager: bool = False) -> Plan:
    with store.transaction() as db:
        return plan(db, target, eager=eager)


def cut(store: Store, count: int = 3) -> list[Batch]:
    return list(batches(store, "S", "PUT", 1 << 20, count))


def shape(batch: Batch) -> list[tuple[str, str, int | None, bytes]]:
    return [(i.value, i.op, i.digest, i.body) for i in batch.items]


def ranged(store: Store) -> int:
    return int(connection(store).execute("SELECT count(*) FROM pending_range").fetchone()[0])


VALUES = [f"{c}{n}.example" for c in "pqrxyz" for n in range(3)]
LISTED = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(VALUES),
        st.sampled_from([{}, {"k": "1"}, {"k": "2", "j": "é"}]),
        st.sampled_from([(), ("T1",), ("T2", "T1")]),
    ),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(LISTED, st.integers(min_value=1, max_value=7), st.sampled_from([("a",), ("b", "a", "c")]))
def test_batches_cut_from_a_range_plan_are_the_eager_plans(
    tmp_path_factory: pytest.TempPathFactory, listed: Listed, count: int, names: tuple[str, ...]
) -> None:
    """Values, ops, digests, bodies and their order, batch by batch, and the plan's
    count, for one feed (read without a merge) and for three."""
    cuts = []
    for eager in (True, False):
        opened = Store.open(str(tmp_path_factory.mktemp("cut") / "state.db"))
        try:
            made = replan(opened, load_all(opened, listed, names), eager=eager)
            assert ranged(opened) == (0 if eager or not made.add else 1)
            cuts.append((made, [shape(b) for b in cut(opened, count)], opened.counts("S")))
        finally:
            opened.close()
    assert cuts[0] == cuts[1]


def play(store: Store, batches_: list[Batch]) -> None:
    """An interrupted upload: answers out of order, an item unconfirmed, one refused,
    a half of a split batch answered and the other never, the last batch never sent."""
    first, second, third, fourth = batches_[:4]
    settle(store, "S", second, Verdict())
    one = first.items[1].id
    settle(store, "S", first, Verdict(refused={first.items[0].id: "bad"}, unconfirmed={one}))
    settle(store, "S", Batch("PUT", third.items[:1]), Verdict())
    reject_oversize(store, "S", fourth.items[2], 10)
    settle(store, "S", Batch("PUT", fourth.items[:1]), Verdict())


def state(store: Store) -> tuple[object, ...]:
    db = connection(store)
    rejected = db.execute("SELECT value, op, digest, reason FROM rejected ORDER BY value")
    pending = {row[0]: row[1:4] for row in operations(store, "S")}
    return store.acked_values("S"), [tuple(r) for r in rejected], pending


def test_an_interrupted_first_sync_then_a_change_ends_as_the_eager_plan(tmp_path: Path) -> None:
    listed: Listed = [("a", v, {"k": "1"}, ("T1",)) for v in VALUES]
    listed += [("b", v, {}, ()) for v in VALUES[::3]]
    states = []
    for eager in (True, False):
        opened = Store.open(str(tmp_path / f"{eager}.db"))
        try:
            target = load_all(opened, listed)
            replan(opened, target, eager=eager)
            play(opened, cut(opened))
            # Gone: an unconfirmed one (may have reached CyberTrace), one never sent, one
            # of the unanswered half; changed: one never sent; new: one in the middle.
            gone = {"p1.example", "r1.example", "x2.example", "q0.example"}
            kept = [(f, v, c, t) for f, v, c, t in listed if v not in gone]
            kept = [(f, v, {"k": "9"} if v == "y0.example" else c, t) for f, v, c, t in kept]
            load_all(opened, [*kept, ("c", "q5.example", {}, ("T3",))])
            made = replan(opened, target)
            assert ranged(opened) == 0
            states.append((made, state(opened)))
            for batch in [*cut(opened, 4), *batches(opened, "S", "DELETE", 1 << 20, 4)]:
                settle(opened, "S", batch, Verdict())
            states.append((made, state(opened)))
        finally:
            opened.close()
    assert states[0] == states[2] and states[1] == states[3]
    acked = states[3][1][0]
    assert isinstance(acked, dict) and "p1.example" not in acked and "q5.example" in acked


def test_settling_takes_values_out_of_the_range_and_leaves_the_rest(store: Store) -> None:
    target = load_all(store, [("a", v, {}, ("T1",)) for v in VALUES])
    assert replan(store, target).add == len(VALUES)
    assert store.counts("S")["add"] == len(VALUES) and ranged(store) == 1
    assert planned_tags(store, "S") == {"T1"}
    play(store, cut(store))
    left = {row[0] for row in operations(store, "S")}
    assert store.counts("S")["add"] == len(left) == len(VALUES) - 8
    assert "p1.example" in left and "p0.example" not in left
    # Another upload cuts only what is left; all answered, no range is left.
    for batch in cut(store, 5):
        settle(store, "S", batch, Verdict())
    assert ranged(store) == 0 and store.counts("S")["add"] == 0
    assert len(store.acked_values("S")) == len(VALUES) - 2


def test_why_shows_a_value_a_range_holds_as_a_pending_add(store: Store) -> None:
    listed: Listed = [("a", "p0.example", {"k": "1"}, ("T1",)), ("b", "p0.example", {}, ())]
    target = load_all(store, listed)
    replan(store, target)
    told = story.story(store, "p0.example")
    assert told is not None
    (entry,) = told["cybertrace"]
    assert entry["state"] == "never confirmed"
    assert entry["pending"]["op"] == "add"
    assert entry["pending"]["body"] == {
        "indicator": "p0.example",
        "context": {"source_feed": "b"},
        "tags": ["T1"],
    }
    settle(store, "S", cut(store)[0], Verdict())
    assert "pending" not in story.story(store, "p0.example")["cybertrace"][0]  # type: ignore[index]


def test_a_value_unlisted_while_its_batch_is_unconfirmed_is_deleted(store: Store) -> None:
    """A range piece keeps a dirty value no feed lists now: it may have reached
    CyberTrace unconfirmed, and the next plan must delete it as the eager one does."""
    listed: Listed = [("a", v, {}, ()) for v in VALUES]
    target = load_all(store, listed)
    replan(store, target)
    first = cut(store)[0]  # p0, p1, p2: p1 left unconfirmed
    settle(store, "S", Batch("PUT", first.items[:1]), Verdict())
    load_all(store, [row for row in listed if row[1] != "p1.example"])
    settle(store, "S", Batch("PUT", first.items[2:]), Verdict())
    replan(store, target)
    assert {row[0]: row[1] for row in operations(store, "S")}["p1.example"] == "delete"


def test_a_dry_run_reads_the_ranges_as_rows_and_keeps_them(store: Store) -> None:
    target = load_all(store, [("a", v, {}, ()) for v in VALUES])
    replan(store, target)
    settle(store, "S", cut(store)[0], Verdict())
    with store.transaction(rollback=True) as db:
        plan(db, target, eager=True)
        shown = preview(db, "S")
    assert shown[0] == "add q0.example" and shown[-1] == f"add ... and {len(VALUES) - 13} more"
    assert ranged(store) == 1 and store.counts("S")["add"] == len(VALUES) - 3


# Every character JSON escapes, and those an escaper might (DEL, U+2028/2029, BOM,
# non-ASCII, astral); lone surrogates cannot be stored (not UTF-8).
AWKWARD = [chr(c) for c in range(0x80)] + ["é", "\u00a0", "\u2028", "\u2029", "\ufeff", "中", "𝄞"]


@pytest.mark.parametrize("send_tags", [True, False])
@pytest.mark.parametrize("send_context", [True, False])
def test_a_one_feed_ranges_bodies_are_the_merged_bodies(
    store: Store, send_context: bool, send_tags: bool
) -> None:
    """A one-feed range's bodies are made a chunk at a time from the rows as stored:
    each is the text the merge makes, digested as a planned row's would be."""
    values = [f"v{c}.example" for c in AWKWARD] + [f"{c}{c}" for c in AWKWARD]
    listed: Listed = [
        ("a", v, {"k": v} if n % 2 else {}, ("T1", "T2") if n % 3 else ())
        for n, v in enumerate(values)
    ]
    (feed,) = load_all(store, listed, ("a",)).feed_ids
    shape = {"send_context": send_context, "send_tags": send_tags}
    db = connection(store)
    ranges.write(db, Target("S", (feed,), ("a",), **shape), 1.0)
    cut = list(ranges.items(db, "S"))
    assert [item[0] for item in cut] == sorted(set(values))
    # A second feed listing nothing: put_body merges the rows, as for a value two list.
    merged = Target("S", (feed, -1), ("a", "none"), **shape)
    for value, digest, body, at in cut:
        query = "SELECT feed_id, context, tags FROM snapshot WHERE feed_id = ? AND key = ?"
        row = tuple(db.execute(query, (feed, value)).fetchone())
        assert body == put_body(value, [row, (-1, "{}", "[]")], merged, {feed: 0, -1: 1})
        assert (digest, at) == (digest64(body.encode()), 1.0)


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.sampled_from([{}, {"k": "1"}, {"é": "\n"}]),
            st.sampled_from([(), ("T1",), ("T1", "T2")]),
        ),
        max_size=5,
    ),
    st.booleans(),
    st.booleans(),
)
def test_a_chunks_bodies_are_the_merged_bodies(
    listed: list[tuple[str, dict[str, str], tuple[str, ...]]], send_context: bool, send_tags: bool
) -> None:
    shape = {"send_context": send_context, "send_tags": send_tags}
    rows = [(v, orjson.dumps(c).decode(), orjson.dumps(t).decode()) for v, c, t in listed]
    merged = Target("S", (1, 2), ("a", "b"), **shape)
    expected = [put_body(v, [(1, c, t), (2, "{}", "[]")], merged, {1: 0, 2: 1}) for v, c, t in rows]
    assert [put_body(v, [(1, c, t)], merged, {1: 0}) for v, c, t in rows] == expected
    # The bodies a range's cut sends: the same text as UTF-8, from the JSON read as bytes.
    read = [(v, c.encode(), t.encode()) for v, c, t in rows]
    payloads = single_put_payloads(Target("S", (1,), ("a",), **shape), 1, read)
    assert payloads == [body.encode() for body in expected]


@pytest.mark.parametrize("names", [("a",), ("b", "a", "c")])
def test_a_range_is_cut_the_same_across_chunks(
    store: Store, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]
) -> None:
    listed: Listed = [(f, v, {"k": f}, (f.upper(),)) for f in "abc" for v in VALUES[:: len(f)]]
    target = load_all(store, listed, names)
    db = connection(store)
    ranges.write(db, target, 1.0)
    whole = list(ranges.items(db, "S"))
    assert len(whole) == len(VALUES)
    for size in (1, 2, len(VALUES) - 1, len(VALUES)):
        monkeypatch.setattr(ranges, "CHUNK", size)
        assert list(ranges.items(db, "S")) == whole
