"""Items cut into requests under a byte limit and a count limit, a chunk of items at a time."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator
from operator import add
from typing import TypeVar

T = TypeVar("T")


def batched(
    chunks: Iterable[list[T]], body: Callable[[T], bytes], limit: int, max_count: int
) -> Iterator[list[T]]:
    """The items of ``chunks`` in order, in batches whose JSON array of bodies ("[a,b]")
    is at most ``limit`` bytes and which hold at most ``max_count`` items; an item
    over the limit makes a batch of its own (the upload refuses it as oversize)."""
    items: list[T] = []
    size = 2
    for chunk in chunks:
        # Where each item of the chunk ends, counting a comma after each: the items that
        # fit are found by a bisection, not by a comparison of each from Python.
        ends = list(itertools.accumulate(map(add, map(len, map(body, chunk)), itertools.repeat(1))))
        start = 0
        while start < len(chunk):
            # The batch's first item has no comma before it.
            base, first = ends[start - 1] if start else 0, 0 if items else 1
            fit = bisect.bisect_right(ends, limit - size + first + base, lo=start) - start
            fit = min(fit, max_count - len(items))
            if fit <= 0 and items:
                yield items
                items, size = [], 2
                continue
            fit = max(fit, 1)
            items.extend(chunk[start : start + fit])
            size += ends[start + fit - 1] - base - first
            start += fit
    if items:
        yield items
