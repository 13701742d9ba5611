"""Store, snapshot diff and reconcile, without HTTP: invariants 1-5 at the SQL level."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedsync.cybertrace import Outcome
from feedsync.cybertrace.verdict import verdict
from feedsync.model import Indicator, Invalid, Kind, Removal, Validators
from feedsync.store import Store, bodies, connection, reconcile
from feedsync.store.bodies import Target
from feedsync.store.guard import Change
from feedsync.store.migrations import MIGRATIONS
from feedsync.store.pending import Batch, batches, operations, settle
from feedsync.store.reconcile import Plan, plan
from feedsync.store.snapshot import expire, patch, replace


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(str(tmp_path / "state.db"))
    yield opened
    opened.close()


def ind(value: str, context: dict[str, str] | None = None, tags: tuple[str, ...] = ()) -> Indicator:
    return Indicator(value, value, Kind.DOMAIN, tuple((context or {}).items()), tags)


def run_change(
    change: Callable[..., Change],
    store: Store,
    feed: str,
    supplier: str,
    items: list[Indicator | Invalid | Removal],
    *,
    ratio: float = 0.5,
    force: bool = False,
) -> Change:
    row = store.feed(feed, supplier)
    with store.transaction() as db:
        return change(
            db,
            row,
            items,
            max_delete_ratio=ratio,
            force=force,
            validators=Validators(sha256="x"),
            on_invalid=lambda _i: None,
        )


load = functools.partial(run_change, replace)
apply_patch = functools.partial(run_change, patch)


def target(store: Store, supplier: str, *feeds: str, **kw: bool) -> Target:
    ids = tuple(store.feed(name, supplier).id for name in feeds)
    return Target(supplier, ids, feeds, **kw)  # type: ignore[arg-type]


def replan(store: Store, t: Target, **kw: bool) -> Plan:
    with store.transaction() as db:
        return plan(db, t, **kw)


def pending(store: Store, supplier: str) -> dict[str, tuple[str, dict[str, object]]]:
    rows = operations(store, supplier)
    return {r[0]: (r[1], orjson.loads(r[3])) for r in rows}


def ack_all(store: Store, supplier: str, errors: dict[str, str] | None = None) -> None:
    for method in ("PUT", "DELETE"):
        for batch in list(batches(store, supplier, method, 1 << 20, 1000)):
            outcome = Outcome(202 if errors else 201, errors or {})
            settle(store, supplier, batch, verdict(batch, outcome))


def test_first_plan_adds_everything_with_context_and_tags(store: Store) -> None:
    load(store, "f", "S", [ind("a.example", {"threat": "x"}, ("T1",)), ind("b.example")])
    assert replan(store, target(store, "S", "f")) == Plan(add=2)
    assert pending(store, "S") == {
        "a.example": (
            "add",
            {"indicator": "a.example", "context": {"threat": "x"}, "tags": ["T1"]},
        ),
        # No context from the feed: the one field naming it, so a PUT never leaves the
        # context CyberTrace had in doubt.
        "b.example": (
            "add",
            {"indicator": "b.example", "context": {"source_feed": "f"}, "tags": []},
        ),
    }


def test_unchanged_feed_rewrites_nothing_and_plans_nothing(store: Store) -> None:
    items = [ind(f"v{i}.example", {"n": str(i)}) for i in range(100)]
    load(store, "f", "S", items)
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    before = connection(store).total_changes
    change = load(store, "f", "S", items)
    assert (change.added, change.changed, change.removed) == (0, 0, 0)
    # The staging table (an insert and a delete per row) and the feed row; no snapshot row.
    assert connection(store).total_changes - before <= 2 * len(items) + 1
    assert replan(store, t) == Plan()


def test_changes_are_exactly_the_diff(store: Store) -> None:
    load(store, "f", "S", [ind("a.example", {"s": "1"}), ind("b.example"), ind("c.example")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    change = load(
        store, "f", "S", [ind("a.example", {"s": "2"}), ind("b.example"), ind("d.example")]
    )
    assert (change.added, change.changed, change.removed) == (1, 1, 1)
    assert replan(store, t) == Plan(add=1, update=1, delete=1)
    assert {v: op for v, (op, _b) in pending(store, "S").items()} == {
        "a.example": "update",
        "c.example": "delete",
        "d.example": "add",
    }


def test_value_in_two_feeds_survives_one_dropping_it_and_tags_are_the_union(store: Store) -> None:
    load(store, "first", "S", [ind("both.example", {"from": "first"}, ("A",)), ind("one.example")])
    load(store, "second", "S", [ind("both.example", {"from": "second"}, ("B",))])
    t = target(store, "S", "first", "second")
    replan(store, t)
    body = pending(store, "S")["both.example"][1]
    assert body == {"indicator": "both.example", "context": {"from": "first"}, "tags": ["A", "B"]}
    ack_all(store, "S")
    load(store, "first", "S", [ind("one.example")], ratio=1.0)
    assert replan(store, t) == Plan(update=1)
    assert pending(store, "S")["both.example"] == (
        "update",
        {"indicator": "both.example", "context": {"from": "second"}, "tags": ["B"]},
    )


def test_feed_order_decides_context(store: Store) -> None:
    load(store, "first", "S", [ind("x.example", {"from": "first"})])
    load(store, "second", "S", [ind("x.example", {"from": "second"})])
    replan(store, target(store, "S", "second", "first"))
    assert pending(store, "S")["x.example"][1]["context"] == {"from": "second"}


def test_shrink_guard_holds_then_confirms_on_identical_refetch(store: Store) -> None:
    load(store, "f", "S", [ind(f"v{i}.example") for i in range(10)])
    smaller = [ind(f"v{i}.example") for i in range(3)]
    first = load(store, "f", "S", smaller)
    assert first.held and first.removed == 7
    assert store.feed("f", "S").held_removals == 7
    assert connection(store).execute("SELECT count(*) FROM snapshot").fetchone()[0] == 10
    other = load(store, "f", "S", [ind(f"v{i}.example") for i in range(1, 4)])
    assert other.held, "a different shrink does not confirm the first"
    confirmed = load(store, "f", "S", [ind(f"v{i}.example") for i in range(1, 4)])
    assert not confirmed.held and confirmed.removed == 7
    assert store.feed("f", "S").held_removals is None


def test_empty_fetch_is_never_confirmed_only_forced(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example")])
    assert load(store, "f", "S", []).held
    assert load(store, "f", "S", []).held
    forced = load(store, "f", "S", [], force=True)
    assert not forced.held and forced.removed == 2


def test_invalid_items_are_counted_by_reason(store: Store) -> None:
    change = load(
        store, "f", "S", [ind("a.example"), Invalid(2, "x", "domain"), Invalid(3, "", "empty")]
    )
    assert change.fetched == 1
    assert change.invalid_reasons == {"domain": 1, "empty": 1}


def test_duplicates_keep_the_first_row(store: Store) -> None:
    change = load(store, "f", "S", [ind("a.example", {"n": "1"}), ind("a.example", {"n": "2"})])
    assert (change.fetched, change.duplicates) == (1, 1)
    replan(store, target(store, "S", "f"))
    assert pending(store, "S")["a.example"][1]["context"] == {"n": "1"}


def test_rejected_are_not_resent_until_their_content_changes(store: Store) -> None:
    load(store, "f", "S", [ind("bad.example", {"n": "1"}), ind("good.example")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S", errors={"bad.example": "Invalid indicator format"})
    assert store.rejected("S") == [("bad.example", "add", "Invalid indicator format")]
    assert store.acked_values("S").keys() == {"good.example"}
    with store.transaction() as db:
        db.execute("INSERT INTO dirty VALUES ('S', 'bad.example')")
    assert replan(store, t) == Plan()
    load(store, "f", "S", [ind("bad.example", {"n": "2"}), ind("good.example")])
    assert replan(store, t) == Plan(add=1)


def test_unacknowledged_put_is_deleted_when_the_value_goes(store: Store) -> None:
    """A PUT that was planned (maybe sent) but never confirmed may be in CyberTrace."""
    load(store, "f", "S", [ind("a.example"), ind("keep.example")])
    t = target(store, "S", "f")
    replan(store, t)
    load(store, "f", "S", [ind("keep.example")], ratio=1.0)
    replan(store, t)
    assert pending(store, "S")["a.example"][0] == "delete"


def test_pending_delete_then_value_returns_is_put_again(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    load(store, "f", "S", [ind("b.example")], ratio=1.0)
    replan(store, t)
    load(store, "f", "S", [ind("a.example"), ind("b.example")])
    replan(store, t)
    assert pending(store, "S")["a.example"][0] == "update"


def test_body_shape_follows_the_target(store: Store) -> None:
    load(store, "f", "FalsePositive", [ind("a.example", {"n": "1"}, ("T",))])
    replan(store, target(store, "FalsePositive", "f", send_context=False, send_tags=False))
    assert pending(store, "FalsePositive")["a.example"][1] == {"indicator": "a.example"}


def test_signature_change_replans_everything(store: Store) -> None:
    load(store, "f", "S", [ind("a.example", {"n": "1"}, ("T",))])
    replan(store, target(store, "S", "f"))
    ack_all(store, "S")
    assert replan(store, target(store, "S", "f", send_tags=False)) == Plan(update=1)


def test_resync_replans_every_desired_value_as_new(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    assert replan(store, t, resync=True) == Plan(add=2)


def test_batches_respect_bytes_and_count(store: Store) -> None:
    load(store, "f", "S", [ind(f"value-{i:04d}.example") for i in range(50)])
    replan(store, target(store, "S", "f"))
    cut = list(batches(store, "S", "PUT", 400, 7))
    assert sum(len(b.items) for b in cut) == 50
    for batch in cut:
        assert len(batch.payload()) <= 400
        assert len(batch.items) <= 7
        assert orjson.loads(batch.payload())


def test_puts_go_in_plan_order_across_adds_and_updates(store: Store) -> None:
    """Adds and updates are read along their own index ranges, chunk by chunk,
    and still leave in the order they were planned, each once."""
    ops = ["add" if (i // 7) % 3 else "update" for i in range(12_345)]
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO pending (supplier, value, op, digest, body, planned_at)"
            " VALUES ('S', ?, ?, 1, ?, 0)",
            [(f"v{i}.example", op, f'{{"indicator":"v{i}.example"}}') for i, op in enumerate(ops)],
        )
        db.execute(
            "INSERT INTO pending (supplier, value, op, digest, body, planned_at)"
            " VALUES ('S', 'gone.example', 'delete', NULL, '{}', 0)"
        )
    cut = list(batches(store, "S", "PUT", 1 << 24, 1000))
    items = [item for batch in cut for item in batch.items]
    assert [item.value for item in items] == [f"v{i}.example" for i in range(len(ops))]
    assert [item.op for item in items] == ops
    assert [item.id for item in items] == sorted(item.id for item in items)


def test_delete_of_absent_counts_as_done_and_other_refusals_stay_pending(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example"), ind("c.example")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    load(store, "f", "S", [ind("c.example")], ratio=1.0)
    replan(store, t)
    items = list(batches(store, "S", "DELETE", 1 << 20, 100))
    assert len(items) == 1
    settle(
        store,
        "S",
        items[0],
        verdict(
            items[0],
            Outcome(
                202,
                {
                    "a.example": "Indicator doesn't exist",
                    "b.example": "Supplier doesn't exist",
                },
            ),
        ),
    )
    assert store.acked_values("S").keys() == {"b.example", "c.example"}
    assert store.rejected("S") == []
    assert store.counts("S")["delete"] == 1


def test_batch_type_is_public() -> None:
    assert Batch("PUT", ()).payload() == b"[]"


def snapshot_values(store: Store, feed: str, supplier: str) -> dict[str, str]:
    feed_id = store.feed(feed, supplier).id
    rows = connection(store).execute(
        "SELECT value, context FROM snapshot WHERE feed_id = ?", (feed_id,)
    )
    return {r[0]: r[1] for r in rows}


def test_patch_upserts_and_removes_by_key(store: Store) -> None:
    load(store, "f", "S", [ind(f"v{i}.example") for i in range(10)])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    change = apply_patch(
        store,
        "f",
        "S",
        [
            ind("v1.example", {"n": "2"}),
            ind("new.example"),
            Removal("v2.example"),
            Removal("missing"),
        ],
    )
    assert (change.added, change.changed, change.removed, change.held) == (1, 1, 1, False)
    assert store.feed("f", "S").indicators == 10
    values = snapshot_values(store, "f", "S")
    assert "v2.example" not in values and "new.example" in values and len(values) == 10
    assert values["v1.example"] == '{"n":"2"}'
    assert replan(store, t) == Plan(add=1, update=1, delete=1)


def test_patch_later_items_win(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example")])
    apply_patch(
        store,
        "f",
        "S",
        [
            Removal("a.example"),
            ind("a.example", {"back": "1"}),
            ind("c.example"),
            Removal("c.example"),
        ],
    )
    values = snapshot_values(store, "f", "S")
    assert set(values) == {"a.example", "b.example"}
    assert values["a.example"] == '{"back":"1"}'


def test_patch_removals_go_through_the_shrink_guard(store: Store) -> None:
    load(store, "f", "S", [ind(f"v{i}.example") for i in range(10)])
    gone: list[Indicator | Invalid | Removal] = [Removal(f"v{i}.example") for i in range(8)]
    assert apply_patch(store, "f", "S", gone).held
    assert len(snapshot_values(store, "f", "S")) == 10
    confirmed = apply_patch(store, "f", "S", gone)
    assert not confirmed.held and confirmed.removed == 8
    assert len(snapshot_values(store, "f", "S")) == 2
    everything: list[Indicator | Invalid | Removal] = [Removal("v8.example"), Removal("v9.example")]
    assert apply_patch(store, "f", "S", everything).held, "a patch that empties the feed is held"
    assert apply_patch(store, "f", "S", everything).held, "and never confirmed"
    assert apply_patch(store, "f", "S", everything, force=True).removed == 2


def test_patch_family_removal_takes_every_value_of_a_key(store: Store) -> None:
    items = [Indicator(f"ind--1|{i}", f"v{i}.example", Kind.DOMAIN, (), ()) for i in range(3)]
    items.append(Indicator("ind--10", "other.example", Kind.DOMAIN, (), ()))
    load(store, "f", "S", list(items), ratio=1.0)
    replacement = Indicator("ind--1|0", "v9.example", Kind.DOMAIN, (), ())
    apply_patch(store, "f", "S", [Removal("ind--1", family=True), replacement], ratio=1.0)
    assert set(snapshot_values(store, "f", "S")) == {"v9.example", "other.example"}


def test_rows_expire_between_pulls(store: Store) -> None:
    soon = time.time() + 60
    load(
        store,
        "f",
        "S",
        [Indicator("k1", "a.example", Kind.DOMAIN, (), (), expires=soon), ind("b.example")],
    )
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    row = store.feed("f", "S")
    with store.transaction() as db:
        assert expire(db, row, soon - 1) == 0
        assert expire(db, row, soon + 1) == 1
    assert set(snapshot_values(store, "f", "S")) == {"b.example"}
    assert store.feed("f", "S").indicators == 1
    assert replan(store, t) == Plan(delete=1)


def test_schema_migrates_from_the_first_release(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    old.execute("INSERT INTO feeds (name, supplier) VALUES ('f', 'S')")
    old.execute("INSERT INTO snapshot VALUES (1, 'k', 'a.example', 'domain', '{}', '[]', 7)")
    old.commit()
    old.close()
    upgraded = Store.open(str(path))
    try:
        assert connection(upgraded).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        rows = connection(upgraded).execute("SELECT value, expires FROM snapshot").fetchall()
        assert [tuple(row) for row in rows] == [("a.example", None)]
    finally:
        upgraded.close()


@given(
    value=st.text(min_size=1, max_size=20),
    context=st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.text(max_size=8),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=4,
    ),
    tags=st.lists(st.text(max_size=6), max_size=4),
    send_context=st.booleans(),
    send_tags=st.booleans(),
)
def test_a_single_rows_body_is_the_merged_body(
    value: str,
    context: dict[str, object],
    tags: list[str],
    send_context: bool,
    send_tags: bool,
) -> None:
    target = Target("S", (1, 2), ("a", "b"), send_context=send_context, send_tags=send_tags)
    stored_context = orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode()
    stored_tags = orjson.dumps(sorted(set(tags))).decode()
    row = (1, stored_context, stored_tags)
    position = {1: 0, 2: 1}
    fast = bodies.put_body(value, [row], target, position)
    merged = bodies.put_body(value, [row, (2, "{}", "[]")], target, position)
    assert fast == merged, "the same digest, so nothing is re-sent after an upgrade"


def test_a_rejected_value_that_leaves_its_feed_is_deleted_to_make_sure(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S", {"b.example": "Invalid indicator format"})
    assert store.rejected("S") == [("b.example", "add", "Invalid indicator format")]
    load(store, "f", "S", [ind("a.example")], ratio=1.0)
    replan(store, t)
    # CyberTrace said it refused b, but an answer may be wrong: a DELETE makes sure.
    assert pending(store, "S") == {"b.example": ("delete", {"indicator": "b.example"})}
    ack_all(store, "S", {"b.example": "Indicator doesn't exist"})
    assert store.counts("S")["delete"] == 0 and store.rejected("S") == []


def test_an_old_spelling_of_a_listed_url_is_forgotten_not_deleted(store: Store) -> None:
    # An older normalization kept dot segments; CyberTrace stores both spellings as one.
    load(store, "f", "S", [ind("a.example/x/../y"), ind("b.example/p/./q")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    load(store, "f", "S", [ind("a.example/y")], ratio=1.0)
    replan(store, t)
    # a's old spelling is what the feed still lists: a DELETE would remove a.example/y.
    # b's is listed no more: its DELETE (CyberTrace reads it as b.example/p/q) must go.
    assert pending(store, "S") == {
        "a.example/y": (
            "add",
            {"indicator": "a.example/y", "context": {"source_feed": "f"}, "tags": []},
        ),
        "b.example/p/./q": ("delete", {"indicator": "b.example/p/./q"}),
    }
    assert "a.example/x/../y" not in store.acked_values("S")


def retired(store: Store, supplier: str) -> set[str]:
    rows = connection(store).execute("SELECT value FROM retired WHERE supplier = ?", (supplier,))
    return {r[0] for r in rows}


def test_an_acknowledged_delete_is_remembered_and_a_resync_sweeps_it(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example"), ind("c.example")])
    t = target(store, "S", "f")
    replan(store, t)
    ack_all(store, "S")
    load(store, "f", "S", [ind("a.example"), ind("b.example")])
    assert replan(store, t) == Plan(delete=1)
    ack_all(store, "S")
    assert retired(store, "S") == {"c.example"}

    assert replan(store, t, resync=True) == Plan(add=2, delete=1)
    assert pending(store, "S")["c.example"][0] == "delete"
    ack_all(store, "S")
    assert retired(store, "S") == {"c.example"}, "swept again at the next resync"

    load(store, "f", "S", [ind("a.example"), ind("b.example"), ind("c.example")])
    replan(store, t)
    ack_all(store, "S")
    assert retired(store, "S") == set(), "listed and sent again: no longer retired"


def test_a_sweep_spares_an_old_spelling_of_a_listed_value(store: Store) -> None:
    load(store, "f", "S", [ind("a.example")])
    t = target(store, "S", "f")
    connection(store).execute(
        "INSERT INTO retired (supplier, value, retired_at) VALUES ('S', 'A.Example', 0)"
    )
    assert replan(store, t, resync=True) == Plan(add=1)
    assert set(pending(store, "S")) == {"a.example"}


def test_a_supplier_created_empty_forgets_what_was_retired(store: Store) -> None:
    load(store, "f", "S", [ind("a.example")])
    t = target(store, "S", "f")
    connection(store).execute(
        "INSERT INTO retired (supplier, value, retired_at) VALUES ('S', 'z.example', 0)"
    )
    assert replan(store, t, resync=True, sweep=False) == Plan(add=1)
    assert retired(store, "S") == set()


def test_retired_values_are_forgotten_after_the_retention(store: Store) -> None:
    now = time.time()
    connection(store).executemany(
        "INSERT INTO retired (supplier, value, retired_at) VALUES ('S', ?, ?)",
        [("old.example", now - 7200), ("recent.example", now - 60)],
    )
    with store.transaction() as db:
        reconcile.prune_retired(db, "S", now - 3600)
    assert retired(store, "S") == {"recent.example"}


@dataclass(frozen=True, slots=True)
class Fixed:
    """A clock that says ``at``, whatever the machine's says."""

    at: float

    def now(self) -> float:
        return self.at


def test_every_stamp_comes_from_the_stores_clock(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "state.db"), clock=Fixed(1234.0))
    try:
        load(store, "f", "S", [ind("a.example"), ind("b.example")])
        t = target(store, "S", "f")
        replan(store, t)
        db = connection(store)
        assert {r[4] for r in operations(store, "S")} == {1234.0}
        ack_all(store, "S")
        assert {r[0] for r in db.execute("SELECT acked_at FROM acked")} == {1234.0}
        replan(store, t, resync=True)
        assert {r[0] for r in db.execute("SELECT retired_at FROM retired")} == {1234.0}
        load(store, "f", "S", [], ratio=0.5)  # held by the shrink guard
        assert store.feed("f", "S").held_since == 1234.0
        assert store.hold("f") and store.holds() == {"f": 1234.0}
    finally:
        store.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),  # the feed that lists it
            st.sampled_from(["x.example", "y.example", "z.example", "ü.example", "w.example"]),
            st.sampled_from([{}, {"k": "1"}, {"k": "2", "j": "é"}]),
            st.sampled_from([(), ("T1",), ("T2", "T1")]),
        ),
        max_size=12,
    ),
    st.booleans(),
    st.booleans(),
)
def test_a_first_plan_straight_from_the_snapshots_is_the_general_plan(
    tmp_path_factory: pytest.TempPathFactory,
    listed: list[tuple[str, str, dict[str, str], tuple[str, ...]]],
    send_context: bool,
    send_tags: bool,
) -> None:
    """A supplier's first plan is read straight from its feeds' snapshots; what it
    writes to ``pending`` (values, ops, digests, bodies, in id order) is what the
    general plan writes, which marks every value dirty and compares each."""
    planned = []
    for general in (False, True):
        opened = Store.open(str(tmp_path_factory.mktemp("first") / "state.db"))
        try:
            for name in ("a", "b", "c"):
                load(opened, name, "S", [ind(v, c, t) for f, v, c, t in listed if f == name])
            shape = {"send_context": send_context, "send_tags": send_tags}
            t = target(opened, "S", "b", "a", "c", **shape)
            if general:  # a supplier planned before under another merge: every value compared
                with opened.transaction() as db:
                    db.execute("INSERT INTO suppliers VALUES ('S', 'older')")
            made = replan(opened, t)
            rows = [r[:4] for r in operations(opened, "S")]
            left = connection(opened).execute("SELECT count(*) FROM dirty").fetchone()[0]
            signature = connection(opened).execute("SELECT signature FROM suppliers").fetchone()[0]
            planned.append((made, [tuple(r) for r in rows], left, signature))
        finally:
            opened.close()
    assert planned[0] == planned[1]
    assert planned[0][0].add == len({v for _f, v, _c, _t in listed})


def test_a_supplier_never_planned_gets_no_marks_and_plans_the_same(tmp_path: Path) -> None:
    """A never-planned supplier's applies leave no dirty marks (its first plan compares
    every value): its plan after two changes is the plan of the last snapshot alone."""
    first = [ind("a.example"), ind("b.example", {"k": "1"}), ind("c.example")]
    second = [ind("b.example", {"k": "2"}), ind("c.example"), ind("d.example")]
    plans = []
    for bodies_applied in ((first, second), (second,)):
        (tmp_path / f"s{len(plans)}").mkdir()
        opened = Store.open(str(tmp_path / f"s{len(plans)}" / "state.db"))
        try:
            for items in bodies_applied:
                load(opened, "f", "S", list(items), ratio=1.0)
            marks = connection(opened).execute("SELECT count(*) FROM dirty").fetchone()[0]
            made = replan(opened, target(opened, "S", "f", send_context=True))
            plans.append((marks, made, pending(opened, "S")))
        finally:
            opened.close()
    assert plans[0] == plans[1]
    assert plans[0][0] == 0


def test_a_supplier_planned_before_sees_every_change(store: Store) -> None:
    load(store, "f", "S", [ind("a.example"), ind("b.example", {"k": "1"}), ind("c.example")])
    t = target(store, "S", "f", send_context=True)
    replan(store, t)
    ack_all(store, "S")
    load(
        store,
        "f",
        "S",
        [ind("b.example", {"k": "2"}), ind("c.example"), ind("d.example")],
        ratio=1.0,
    )
    marked = {r[0] for r in connection(store).execute("SELECT value FROM dirty")}
    assert marked == {"a.example", "b.example", "d.example"}
    made = replan(store, t)
    assert (made.add, made.update, made.delete) == (1, 1, 1)


def _refresh_rows(store: Store, span: float, now: float, count: int) -> set[str]:
    """Acked rows around every bucket's deadline (some exactly on it); the values the
    full-scan predicate of ``_due`` takes."""
    db = connection(store)
    rows = []
    for n in range(count):
        digest = (n * 7919) % 4096 - 2048  # negative digests too: their low bits
        factor = 0.6667 + 0.3333 * ((digest & 1023) / 1024.0)
        offsets = (-1.0, -1e-9, 0.0, 1e-9, 1.0, span * 0.2)
        acked_at = now - span * factor + offsets[n % len(offsets)]
        rows.append(("S", f"v{n}", digest, acked_at))
    rows.append(("T", "other-supplier", 0, 0.0))
    with store.transaction() as tx:
        tx.executemany("INSERT INTO acked VALUES (?, ?, ?, ?)", rows)
    scan = db.execute(
        f"SELECT value FROM acked a WHERE supplier = 'S' AND {reconcile._due('a')}",
        {"span": span, "now": now},
    )
    return {value for (value,) in scan}


@pytest.mark.parametrize(("span", "now"), [(86400.0 * 20, 1.8e9), (3.0, 1e-3), (0.0, 5.0)])
def test_the_refresh_marks_exactly_what_the_full_scan_finds_due(
    store: Store, span: float, now: float
) -> None:
    expected = _refresh_rows(store, span, now, 6000)
    assert expected  # and not everything: the offsets put rows either side
    assert len(expected) < 6000
    with store.transaction() as db:
        db.execute(reconcile._MARK_DUE, reconcile._due_bounds("S", reconcile.Refresh(span, now)))
        marked = {r[1] for r in db.execute("SELECT supplier, value FROM dirty")}
        assert db.execute("SELECT count(*) FROM dirty WHERE supplier != 'S'").fetchone()[0] == 0
    assert marked == expected


def test_the_refresh_reads_the_due_rows_through_their_index(store: Store) -> None:
    # A scan of every acknowledged row was most of a 10M supplier's unchanged cycle.
    details = [
        row[3]
        for row in connection(store).execute(
            "EXPLAIN QUERY PLAN " + reconcile._MARK_DUE,
            reconcile._due_bounds("S", reconcile.Refresh(3600.0, 1.8e9)),
        )
    ]
    assert any("USING INDEX acked_due" in d and "acked_at<?" in d for d in details), details
    assert not any(d.startswith("SCAN a") for d in details), details
