"""Cutting and settling a plan (store/pending.py): its fast paths agree with the slow ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedsync.cybertrace.verdict import Verdict
from feedsync.model import Indicator, Kind, Validators
from feedsync.store import Store, connection
from feedsync.store.batching import batched
from feedsync.store.bodies import Target
from feedsync.store.pending import (
    ITEM_FIELDS,
    Batch,
    Item,
    Sent,
    batches,
    lazy_runs,
    operations,
    settle,
    walked_runs,
)
from feedsync.store.reconcile import plan
from feedsync.store.snapshot import replace

VALUES = [f"v{n}.example" for n in range(12)]
# Refuses an id no item has: the answer settles every item, through the per-item path.
NOTHING_REFUSED = Verdict(refused={0: "no such item"})
TABLES = ("acked", "retired", "rejected", "pending", "pending_range")


@dataclasses.dataclass(frozen=True, slots=True)
class Stopped:
    at: float = 1_000_000.0

    def now(self) -> float:
        return self.at


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    opened = [Store.open(str(tmp_path / f"{n}.db"), clock=Stopped()) for n in range(2)]
    yield opened[0], opened[1]
    for store in opened:
        store.close()


def load(store: Store, listed: dict[str, str]) -> Target:
    row = store.feed("a", "S")
    items = [Indicator(v, v, Kind.DOMAIN, (("k", c),), ()) for v, c in listed.items()]
    with store.transaction() as db:
        replace(
            db,
            row,
            items,
            max_delete_ratio=1.0,
            force=True,
            validators=Validators(sha256=str(sorted(listed.items()))),
            on_invalid=lambda _i: None,
        )
    return Target("S", (row.id,), ("a",))


def replan(store: Store, target: Target) -> None:
    with store.transaction() as db:
        plan(db, target)


def cut(store: Store, method: str, count: int = 5) -> list[Batch]:
    return list(batches(store, "S", method, 1 << 20, count))


def tables(store: Store) -> dict[str, list[tuple[object, ...]]]:
    db = connection(store)
    rows = {name: db.execute(f"SELECT * FROM {name}").fetchall() for name in TABLES}
    return {name: sorted(tuple(row) for row in found) for name, found in rows.items()}


def upload(store: Store, answer: Verdict) -> list[Sent]:
    """Every batch of the plan, PUTs then DELETEs, answered with ``answer``."""
    return [settle(store, "S", batch, answer) for m in ("PUT", "DELETE") for batch in cut(store, m)]


def history(store: Store, answer: Verdict) -> list[object]:
    """A first plan sent in part, two values refused; a change that adds back one
    refused (its content changed) and deletes the other and one acknowledged; another
    that adds back a deleted value and updates one. Each step's answers and the
    tables after it."""
    seen: list[object] = []
    target = load(store, {v: "1" for v in VALUES[:8]})
    replan(store, target)
    first = cut(store, "PUT")[0]
    seen.append(settle(store, "S", Batch("PUT", first.items[2:]), answer))
    refused = {item.id: "no" for item in first.items[:2]}
    settle(store, "S", Batch("PUT", first.items[:2]), Verdict(refused=refused))
    seen += [upload(store, answer), tables(store)]
    replan(store, load(store, {VALUES[0]: "2", **{v: "1" for v in VALUES[2:7]}}))
    seen += [upload(store, answer), tables(store)]
    changed = {VALUES[0]: "2", VALUES[2]: "2", VALUES[7]: "1", **{v: "1" for v in VALUES[3:12]}}
    replan(store, load(store, changed))
    seen += [upload(store, answer), tables(store)]
    return seen


def test_an_answer_that_settles_every_item_records_what_the_per_item_path_does(
    stores: tuple[Store, Store],
) -> None:
    fast, slow = stores
    assert history(fast, Verdict()) == history(slow, NOTHING_REFUSED)
    sent = upload(fast, Verdict())
    assert sent == [] and tables(fast)["pending"] == tables(fast)["pending_range"] == []
    acked = fast.acked_values("S")
    assert set(acked) == {VALUES[0], VALUES[2], *VALUES[3:12]}


def test_the_per_op_counts_of_an_answer_that_settles_every_item(
    stores: tuple[Store, Store],
) -> None:
    store, _ = stores
    target = load(store, {v: "1" for v in VALUES[:4]})
    replan(store, target)
    assert sum(s.add for s in upload(store, Verdict())) == 4
    replan(store, load(store, {VALUES[0]: "2", VALUES[1]: "1", VALUES[9]: "1"}))
    assert {op for _v, op, *_rest in operations(store, "S")} == {"add", "update", "delete"}
    put, delete = (
        settle(store, "S", b, Verdict()) for m in ("PUT", "DELETE") for b in cut(store, m)
    )
    assert (put.add, put.update, put.delete, delete.delete) == (1, 1, 0, 2)
    assert put.rejected == put.unconfirmed == delete.rejected == delete.unconfirmed == 0


@pytest.mark.parametrize("nul", ["", "nul\x00.example"])
def test_acknowledged_digests_and_values_are_kept_exactly(
    stores: tuple[Store, Store], nul: str
) -> None:
    """The acknowledged rows go to SQLite as one JSON object: the 64-bit extremes and
    values JSON escapes come back as they were, and a batch with a NUL in a value
    (SQLite's JSON would cut it there) as well."""
    store, _ = stores
    odd = ['q"uote.example', "back\\slash.example", "é.example", "tab\t.example", "1e3"]
    odd += ["\U0001f600.example", *([nul] if nul else [])]
    digests = [-(2**63), 2**63 - 1, 0, -1, 2**53 + 1, 7, 8][: len(odd)]
    pairs = list(zip(odd, digests, strict=True))
    items = tuple(Item(-n - 1, v, "add", d, b"{}") for n, (v, d) in enumerate(pairs))
    sent = settle(store, "S", Batch("PUT", items), Verdict())
    assert sent.add == len(odd)
    assert store.acked_values("S") == dict(pairs)
    rows = connection(store).execute("SELECT typeof(value), typeof(digest) FROM acked")
    assert {tuple(row) for row in rows} == {("text", "integer")}


def test_items_cut_are_those_their_constructor_makes(stores: tuple[Store, Store]) -> None:
    assert tuple(f.name for f in dataclasses.fields(Item)) == ITEM_FIELDS
    store, _ = stores
    target = load(store, {v: "1" for v in VALUES[:6]})
    replan(store, target)
    settle(store, "S", cut(store, "PUT", 2)[0], Verdict())
    replan(store, load(store, {VALUES[0]: "2", **{v: "1" for v in VALUES[2:9]}}))
    for method in ("PUT", "DELETE"):
        for batch in cut(store, method):
            for item in batch.items:
                fields = [getattr(item, name) for name in ITEM_FIELDS]
                assert Item(*fields) == item and type(item.body) is bytes


@given(
    st.lists(st.integers(min_value=-30, max_value=30), unique=True, max_size=20),
    st.booleans(),
)
def test_lazy_runs_are_those_of_the_sorted_walk(ids: list[int], in_order: bool) -> None:
    if in_order:
        ids.sort(key=lambda i: (i < 0, -i))
    items = [Item(i, f"v{abs(i):02d}", "add", 1, b"{}") for i in ids if i != 0]
    assert lazy_runs(items) == walked_runs(items)
    assert lazy_runs(iter(items)) == walked_runs(items)


def test_lazy_runs_split_where_the_cut_skips_a_place() -> None:
    items = [Item(i, f"v{abs(i):02d}", "add", 1, b"{}") for i in (7, -1, -2, -4, -5, -6, -9)]
    expected = [("v01", "v02"), ("v04", "v06"), ("v09", "v09")]
    assert lazy_runs(items) == walked_runs(items) == expected
    assert lazy_runs(items[1:3]) == [("v01", "v02")]


def _batched_one_by_one(bodies: list[bytes], limit: int, max_count: int) -> list[list[bytes]]:
    """The cut as the per-item loop made it before ``batched``: the reference."""
    out: list[list[bytes]] = []
    items: list[bytes] = []
    size = 2
    for body in bodies:
        grown = size + len(body) + (1 if items else 0)
        if items and (grown > limit or len(items) >= max_count):
            out.append(items)
            items, grown = [], 2 + len(body)
        items.append(body)
        size = grown
    return [*out, items] if items else out


@given(
    st.lists(st.lists(st.binary(max_size=12), max_size=8), max_size=6),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=9),
)
def test_batched_cuts_chunks_as_the_per_item_loop_does(
    chunks: list[list[bytes]], limit: int, max_count: int
) -> None:
    flat = [body for chunk in chunks for body in chunk]
    cut = list(batched(chunks, lambda body: body, limit, max_count))
    assert cut == _batched_one_by_one(flat, limit, max_count)
    for batch in cut:
        assert len(batch) == 1 or len(b"[" + b",".join(batch) + b"]") <= limit
        assert len(batch) <= max_count
