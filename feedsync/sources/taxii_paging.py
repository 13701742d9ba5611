"""When a TAXII pull has reached its documented end.

A set of pages short of its end would replace (full pull) or patch the
snapshot as if it were the whole collection: every page sequence that cannot
show where it ended fails the feed instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feedsync.errors import FetchError, ParseError


def more(envelope: Mapping[str, Any], feed: str, number: int) -> bool:
    # An absent ``more`` is false (TAXII 2.1, 3.7.1); a text "false" is truthy in
    # Python and would page on, or end a pull early as "true" would not.
    value = envelope.get("more", False)
    if not isinstance(value, bool):
        raise ParseError(feed, f"TAXII page {number}: more is {value!r}, not true or false")
    return value


def onwards(
    feed: str,
    params: dict[str, str],
    data: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    number: int,
    page: list[Any],
    seen: set[tuple[str, str]],
) -> dict[str, str]:
    """The parameters of the page after one that said ``more``: its ``next``
    token, else (TAXII 2.1, 3.4) ``added_after`` its X-TAXII-Date-Added-Last.
    Without either the pull cannot reach its end, and a set short of its end
    must not replace the snapshot."""
    token, added = data.get("next"), headers.get("X-TAXII-Date-Added-Last")
    if token not in (None, ""):
        moved = {**params, "next": str(token)}
    elif added:
        moved = {k: v for k, v in params.items() if k != "next"} | {"added_after": added}
    else:
        raise FetchError(
            feed,
            f"TAXII page {number} says more: true but gives neither next nor"
            " X-TAXII-Date-Added-Last to page on with: the pull cannot reach its end",
        )
    # Servers may keep one next token for a whole paging session (medallion
    # does): a loop is the same page again, or an empty page that moves nowhere.
    first = (str(page[0].get("id")), str(page[0].get("modified"))) if page else None
    if (first in seen) if first else moved == params:
        shown = f"next {token!r}" if token else f"added_after {added}"
        raise FetchError(feed, f"TAXII pagination loops ({shown})")
    if first:
        seen.add(first)
    return moved


def unranged(feed: str, status: int, start: int) -> None:
    """An answer without Content-Range is the whole collection only when it is
    a 200 to the first request; otherwise nothing says where the set ends."""
    if status == 206:
        raise FetchError(
            feed,
            f"TAXII server answered 206 (a partial page) without a Content-Range"
            f" at item {start}: cannot tell whether the pull reached its end",
        )
    if start > 0:
        raise FetchError(
            feed,
            f"TAXII server answered 200 without a Content-Range at item {start},"
            " after paging with ranges: cannot tell whether the pull reached its end",
        )


def range_ends(feed: str, start: int, served: tuple[int, int, str], held: int) -> bool:
    """Whether the answer to ``Range: items start-`` that says it ``served``
    items first-end of total (``*``: unknown) and holds ``held`` ends the pull.
    Each answer must go on where the last ended, hold what it says it holds,
    and move on; anything else leaves items unread."""
    first, end, total = served
    if not held and total != "*" and start < int(total):
        raise FetchError(
            feed,
            f"TAXII server sent no items at {start} of the {total} announced:"
            " the pull stops short of its end",
        )
    if first > start or end < first:
        raise FetchError(
            feed,
            f"TAXII server answered items {first}-{end} when asked for {start}-:"
            " items would be missing",
        )
    if held < end - first + 1:
        raise FetchError(
            feed,
            f"TAXII Content-Range says items {first}-{end} but the page holds {held}:"
            " items would be missing",
        )
    # An unknown total ends with an empty page.
    return not held if total == "*" else end + 1 >= int(total)
