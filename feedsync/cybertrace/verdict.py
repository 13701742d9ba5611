"""What CyberTrace's answer to a batch says of each indicator in it.

CyberTrace may echo a refused value in another spelling than the one sent;
an answer that names a value feedsync cannot map
back settles nothing in its batch (invariants 1 and 7).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from feedsync.cybertrace import Outcome
from feedsync.normalize import InvalidValue, canonicalize

if TYPE_CHECKING:
    from feedsync.store.pending import Batch


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one answer says of each item of its batch.

    ``refused``: item id -> reason, for indicators CyberTrace refused one by one
    (a PUT is recorded as rejected, not re-sent until its content changes; a
    DELETE refused because the indicator does not exist is done).
    ``unconfirmed``: item ids the answer does not settle; they stay pending.
    ``unmatched``: refused values as CyberTrace echoed them that name no item.
    """

    refused: Mapping[int, str] = field(default_factory=dict)
    unconfirmed: frozenset[int] = frozenset()
    unmatched: tuple[tuple[str, str], ...] = ()


def verdict(batch: Batch, outcome: Outcome) -> Verdict:
    """Read an answer item by item (invariants 1 and 7: only what CyberTrace
    confirmed counts as done, and what it did not settle stays pending)."""
    if not outcome.readable:
        return Verdict(unconfirmed=frozenset(item.id for item in batch.items))
    if not outcome.errors:
        return _ALL_DONE  # most answers: a batch of 20,000 needs no walk
    matched, unmatched = _match(batch, outcome.errors)
    refused: dict[int, str] = {}
    unconfirmed: set[int] = set()
    for item in batch.items:
        reason = matched.get(item.value)
        if reason is None:
            continue
        refused[item.id] = reason
        if item.op == "delete" and not absent(reason):
            # Only "this indicator does not exist" means a DELETE did its work; a
            # missing supplier or an internal error does not.
            unconfirmed.add(item.id)
    if unmatched:
        # CyberTrace refused something it names in a way feedsync cannot map back:
        # none of the other items of the batch is confirmed.
        unconfirmed.update(item.id for item in batch.items if item.id not in refused)
    return Verdict(refused, frozenset(unconfirmed), tuple(unmatched))


_ALL_DONE = Verdict(refused=MappingProxyType({}))
_ABSENT = re.compile(r"\b(?:does ?n[o']t|not) exists?\b|\bnot found\b", re.IGNORECASE)


def absent(reason: str) -> bool:
    """The documented DELETE reason "Indicator doesn't exist": the DELETE has
    done what it was for. "Supplier doesn't exist" and the like have not."""
    return bool(_ABSENT.search(reason)) and "supplier" not in reason.lower()


def _match(batch: Batch, errors: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Map CyberTrace's refused indicators onto the values sent, which it may echo
    in another spelling; returns those mapped and those that map to none."""
    if not errors:
        return {}, []
    sent = {item.value for item in batch.items}
    matched: dict[str, str] = {}
    unmatched: list[tuple[str, str]] = []
    for indicator, reason in errors.items():
        if indicator in sent:
            matched[indicator] = reason
            continue
        try:
            canonical = canonicalize(indicator)[1]
        except InvalidValue:
            canonical = indicator
        if canonical in sent:
            matched[canonical] = reason
        else:
            unmatched.append((indicator, reason))
    return matched, unmatched
