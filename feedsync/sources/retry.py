"""Retries of a feed's requests within its cycle: backoff, Retry-After, the feed's deadline.

One connection reset must not cost a daily feed its day.

A request that failed in a way that may pass (a TransientFetchError: the
connection, a timeout, 408, 425, 429, a 5xx) is tried again after an
exponential backoff with jitter, at least the server's ``Retry-After`` (one
longer than the feed's ``retry.max_delay`` ends the fetch at once) and at most
``retry.max_delay``, until ``retry.attempts`` are spent. No
wait starts that would end past the feed's deadline (``DEADLINE``, set by the
cycle's fetcher): the feed then fails at once with the real cause, not later
with a bare timeout. Other 4xx answers are the server's final word.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TypeVar

from feedsync import logs, metrics
from feedsync.config import FeedRetryConfig
from feedsync.errors import FetchError, TransientFetchError

log = logs.get("feedsync.fetch")

# The event-loop time by which the feed's fetch must be done; None outside a cycle.
DEADLINE: ContextVar[float | None] = ContextVar("feedsync_fetch_deadline", default=None)
# 501 (not implemented) and 505 (HTTP version) say what the server is, not how it is.
_PERMANENT_5XX = frozenset({501, 505})
_T = TypeVar("_T")


def transient(status: int) -> bool:
    """Whether an HTTP status may be gone on the next try."""
    return status in (408, 425, 429) or (500 <= status <= 599 and status not in _PERMANENT_5XX)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delay-seconds or an HTTP-date."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_error(feed: str, status: int, message: str, headers: Mapping[str, str]) -> FetchError:
    """The error an answer of ``status`` is: transient (with its ``Retry-After``)
    or final."""
    if transient(status):
        return TransientFetchError(feed, message, retry_after(headers.get("Retry-After")))
    return FetchError(feed, message)


def backoff(policy: FeedRetryConfig, failed: int, after: float | None) -> float:
    """The wait after the ``failed``-th attempt: half the exponential ceiling plus
    a random share of the other half (so that feeds failing together spread out),
    at least ``after``, at most ``max_delay``."""
    ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** (failed - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 -- jitter, not secrecy
    if after is not None:
        delay = max(delay, after)
    return min(delay, policy.max_delay)


async def retried(feed: str, policy: FeedRetryConfig, attempt: Callable[[], Awaitable[_T]]) -> _T:
    """``attempt()``, again after each TransientFetchError while the budget lasts."""
    loop = asyncio.get_running_loop()
    failed = 0
    while True:
        try:
            return await attempt()
        except TransientFetchError as exc:
            failed += 1
            if failed >= policy.attempts:
                tried = f" (tried {failed} times)" if failed > 1 else ""
                raise FetchError(feed, f"{exc.message}{tried}") from exc
            if exc.retry_after is not None and exc.retry_after > policy.max_delay:
                # Trying before the server's time would only be refused again.
                raise FetchError(
                    feed,
                    f"{exc.message}: the server asks for {exc.retry_after:g} s before a retry,"
                    f" longer than retry.max_delay ({policy.max_delay:g} s)",
                ) from exc
            delay = backoff(policy, failed, exc.retry_after)
            deadline = DEADLINE.get()
            if deadline is not None and loop.time() + delay >= deadline:
                raise FetchError(
                    feed,
                    f"{exc.message} (attempt {failed} of {policy.attempts}; the next would"
                    " start past the feed's timeout)",
                ) from exc
            log.warning(
                "feed.fetch_retry",
                feed=feed,
                attempt=failed,
                attempts=policy.attempts,
                delay=round(delay, 3),
                error=exc.message,
            )
            metrics.FEED_RETRIES.labels(feed).inc()
            await asyncio.sleep(delay)
