"""Progress of a running cycle, per feed: which phase it is in and how far along.

A first sync of a 10-million-row feed takes minutes; this is what the terminal
(feedsync.terminal), ``/status``, ``feedsync status`` and systemd's ``STATUS=``
show meanwhile. The phases are ``queued`` (waiting for a fetch slot),
``fetch`` (bytes downloaded, of the Content-Length when the server sent one),
``parse`` (rows read into the snapshot), ``plan`` (operations planned) and
``upload`` (indicators CyberTrace settled, of those pending, and batches).
``plan`` and ``upload`` are a supplier's: each of its feeds in the cycle
shows them.

Counts come from the code doing the work, a batch or a chunk at a time, some
of it on the store's thread: each counter has one writer and is a plain int
(the GIL makes its update atomic), so no row pays for a lock. Readers copy.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from feedsync.errors import FeedsyncError

Phase = Literal["queued", "fetch", "parse", "plan", "upload"]
PHASES: tuple[Phase, ...] = ("queued", "fetch", "parse", "plan", "upload")
UNITS: dict[Phase, str] = {
    "queued": "",
    "fetch": "bytes",
    "parse": "rows",
    "plan": "operations",
    "upload": "indicators",
}


class Progress(Protocol):
    """Where a cycle reports what it is doing (``Board``, or a test's recorder)."""

    def enter(self, feeds: Sequence[str], phase: Phase, total: int | None = None) -> None:
        """``feeds`` are now in ``phase``, their count at 0 of ``total`` (None:
        not known). Entering the phase again (a download retried) starts over."""

    def add(self, feeds: Sequence[str], done: int, batches: int = 0) -> None:
        """``done`` more units of the phase, in ``batches`` more batches."""

    def leave(self, feeds: Sequence[str]) -> None:
        """The cycle is done with ``feeds``."""


@dataclass(frozen=True, slots=True)
class Meter:
    """``Progress`` bound to the feeds one piece of work is for."""

    progress: Progress
    feeds: tuple[str, ...]

    def enter(self, phase: Phase, total: int | None = None) -> None:
        self.progress.enter(self.feeds, phase, total)

    def __call__(self, done: int, batches: int = 0) -> None:
        self.progress.add(self.feeds, done, batches)


class Quiet:
    """Progress nobody watches."""

    def enter(self, feeds: Sequence[str], phase: Phase, total: int | None = None) -> None:
        pass

    def add(self, feeds: Sequence[str], done: int, batches: int = 0) -> None:
        pass

    def leave(self, feeds: Sequence[str]) -> None:
        pass


QUIET = Meter(Quiet(), ())

# The download under way on this task: the sources fetch through feedsync.sources.fetch
# without knowing which cycle asked (as feedsync.sources.retry's DEADLINE).
DOWNLOAD: contextvars.ContextVar[Meter] = contextvars.ContextVar("download", default=QUIET)


@dataclass(slots=True)
class Track:
    """One feed's progress in its running cycle (times are wall-clock seconds)."""

    feed: str
    started: float
    phase: Phase
    since: float
    done: int = 0
    total: int | None = None
    batches: int = 0

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "summary": self.text(),
            "done": self.done,
            "total": self.total,
            "unit": UNITS[self.phase],
            "batches": self.batches,
            "started": self.started,
            "phase_started": self.since,
            "seconds": round(max(0.0, now - self.started), 1),
        }

    def text(self) -> str:
        """``upload 120000/1000000 indicators (12 batches)``; ``queued``."""
        if self.phase == "queued":
            return "queued"
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        if self.phase == "fetch":
            count = _bytes(self.done) + (f"/{_bytes(self.total)}" if self.total else "")
            return f"fetch {count}"
        line = f"{self.phase} {count} {UNITS[self.phase]}"
        if self.batches:
            line += f" ({self.batches} batches)"
        return line


class Board:
    """The progress of every cycle running in this process, by feed (a feed is
    never in two cycles at once)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tracks: dict[str, Track] = {}

    def enter(self, feeds: Sequence[str], phase: Phase, total: int | None = None) -> None:
        now = self.clock()
        for feed in feeds:
            old = self._tracks.get(feed)
            started = old.started if old is not None else now
            # A new Track, not the old one changed: a reader never sees a phase
            # with the previous phase's count.
            self._tracks[feed] = Track(feed, started, phase, now, total=total)

    def add(self, feeds: Sequence[str], done: int, batches: int = 0) -> None:
        for feed in feeds:
            track = self._tracks.get(feed)
            if track is not None:
                track.done += done
                track.batches += batches

    def leave(self, feeds: Sequence[str]) -> None:
        for feed in feeds:
            self._tracks.pop(feed, None)

    def tracks(self) -> list[Track]:
        # A copy (atomic under the GIL): the cycle's threads go on changing the dict.
        return list(self._tracks.copy().values())

    def by_feed(self) -> dict[str, dict[str, Any]]:
        """What ``/status`` shows of each running feed."""
        now = self.clock()
        return {t.feed: t.as_dict(now) for t in self.tracks()}

    def line(self, limit: int = 3) -> str:
        """``first: upload 120000/1000000 indicators; second: parse 5000 rows``,
        the first ``limit`` feeds and how many more ("" when nothing runs)."""
        return summary(self.tracks(), limit)


def summary(tracks: Iterable[Track], limit: int = 3) -> str:
    return _joined([(t.feed, t.text()) for t in tracks], limit)


class Lined(Protocol):
    """What the terminal draws: one line of progress, "" when nothing runs."""

    def line(self) -> str: ...


class Relayed:
    """The progress of cycles that run in another process (the daemon, which
    a steered ``feedsync sync`` waits on), as its status snapshot tells it.

    ``read`` returns the snapshot (``/status``'s shape) or raises; it is called
    at most once per ``every`` seconds, and a failed read keeps the last line:
    a progress line is never a reason to fail a sync.
    """

    def __init__(
        self,
        read: Callable[[], Mapping[str, Any] | None],
        feeds: Sequence[str] = (),
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.feeds = frozenset(feeds)
        self.every = every
        self.clock = clock
        self._read_at: float | None = None
        self._line = ""

    def line(self, limit: int = 3) -> str:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.every:
            self._read_at = now
            try:
                snapshot = self.read()
            except FeedsyncError:
                snapshot = None
            if snapshot is not None:
                self._line = relayed_line(snapshot, self.feeds, limit)
        return self._line


def relayed_line(snapshot: Mapping[str, Any], feeds: frozenset[str], limit: int = 3) -> str:
    """The line of a status snapshot's running feeds (only ``feeds``, if any)."""
    shown = [
        (str(entry["feed"]), str(entry["progress"].get("summary", "")))
        for entry in snapshot.get("feeds", ())
        if isinstance(entry, Mapping)
        and isinstance(entry.get("progress"), Mapping)
        and (not feeds or entry.get("feed") in feeds)
    ]
    return _joined(shown, limit)


def _joined(shown: Sequence[tuple[str, str]], limit: int) -> str:
    parts = [f"{feed}: {text}" for feed, text in shown[:limit]]
    if len(shown) > limit:
        parts.append(f"{len(shown) - limit} more")
    return "; ".join(parts)


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"
