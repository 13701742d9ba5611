"""Progress of long work: phases and counters a cycle reports while it runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from conftest import ConfigFactory, FeedServer

from feedsync import report
from feedsync.config import Config
from feedsync.emulator import Emulator
from feedsync.progress import Board, Phase
from feedsync.store import Store
from feedsync.sync import Cycle

ROWS = 20_000
BATCH = 500
FEED = """\
- {{name: big, type: csv, url: {url}, supplier: Big}}
- {{name: small, type: csv, url: {small}, supplier: Small}}
"""


class Recorder:
    """The progress seam as a test sees it: every report, in order, by feed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int, int | None]] = []
        self.totals: dict[str, int] = {}
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def enter(self, feeds: Sequence[str], phase: Phase, total: int | None = None) -> None:
        with self._lock:
            for feed in feeds:
                self.totals[feed] = 0
                self.events.append((feed, phase, 0, total))

    def add(self, feeds: Sequence[str], done: int, batches: int = 0) -> None:
        assert done >= 0 and batches >= 0
        with self._lock:
            self.threads.add(threading.current_thread().name)
            for feed in feeds:
                self.totals[feed] += done
                self.events.append((feed, "+", self.totals[feed], batches))

    def leave(self, feeds: Sequence[str]) -> None:
        with self._lock:
            self.events.extend((feed, "left", 0, None) for feed in feeds)

    def phases(self, feed: str) -> list[str]:
        seen: list[str] = []
        for name, phase, _done, _total in self.events:
            if name == feed and phase != "+" and (not seen or seen[-1] != phase):
                seen.append(phase)
        return seen

    def counts(self, feed: str, phase: str) -> list[int]:
        """The running counts within the feed's last entry into ``phase``."""
        out: list[int] = []
        current = None
        for name, kind, done, _total in self.events:
            if name != feed:
                continue
            if kind != "+":
                current = kind
                if kind == phase:
                    out = []
            elif current == phase:
                out.append(done)
        return out

    def total(self, feed: str, phase: str) -> int | None:
        entries = [t for n, k, _d, t in self.events if n == feed and k == phase]
        return entries[-1]


def rows(count: int) -> str:
    return "".join(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(count))


async def test_a_large_feed_reports_each_phase_with_counters_that_only_grow(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    body = rows(ROWS)
    url = feed_server.set("big.txt", body)
    small = feed_server.set("small.txt", "a.example\n")
    loaded = make_config(
        emulator.url,
        FEED.format(url=url, small=small),
        cybertrace=f"max_batch_indicators: {BATCH}\n",
    )
    recorder = Recorder()
    feeds, suppliers = await Cycle(loaded, open_store(loaded), progress=recorder).run()
    assert [f.result for f in feeds] == ["ok", "ok"]
    assert len(emulator.indicators("Big")) == ROWS

    assert recorder.phases("big") == ["queued", "fetch", "parse", "plan", "upload", "left"]
    fetched = recorder.counts("big", "fetch")
    assert fetched == sorted(fetched)
    assert fetched[-1] == len(body) == recorder.total("big", "fetch")
    read = recorder.counts("big", "parse")
    assert read == sorted(read) and len(read) > 1 and read[-1] == ROWS
    assert recorder.counts("big", "plan") == [ROWS]
    sent = recorder.counts("big", "upload")
    assert sent == sorted(sent) and len(sent) == ROWS // BATCH and sent[-1] == ROWS
    assert recorder.total("big", "upload") == ROWS
    batches = [b for n, k, _d, b in recorder.events if n == "big" and k == "+" and b]
    assert sum(batches) == ROWS // BATCH
    # The rows are counted where they are read: on the store's thread, off the loop.
    assert any(name.startswith("feedsync-store") for name in recorder.threads)
    # Another supplier's feed has its own track, left when its supplier is done.
    assert recorder.phases("small")[-1] == "left"
    assert suppliers[0].sent.add == ROWS


async def test_the_board_shows_a_running_feed_and_forgets_it_after(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url = feed_server.set("big.txt", rows(50))
    small = feed_server.set("small.txt", "a.example\n")
    loaded = make_config(emulator.url, FEED.format(url=url, small=small))
    board = Board()
    board.enter(["big"], "upload", 1000)
    board.add(["big"], 120, 3)
    assert board.line() == "big: upload 120/1000 indicators (3 batches)"
    assert board.by_feed()["big"]["done"] == 120
    board.leave(["big"])
    await Cycle(loaded, open_store(loaded), progress=board).run()
    assert board.line() == "" and board.by_feed() == {}


async def test_a_dry_run_says_how_many_more_its_lists_leave_out(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[[Config], Store],
) -> None:
    url = feed_server.set("big.txt", rows(25))
    small = feed_server.set("small.txt", "a.example\n")
    loaded = make_config(emulator.url, FEED.format(url=url, small=small))
    feeds, suppliers = await Cycle(loaded, open_store(loaded), dry_run=True).run()
    text = report.cycle(feeds, suppliers, dry_run=True)
    assert "  add ... and 15 more" in text, text
    assert text.count("  add 10.") == 10
    # A list that is whole says nothing more.
    assert "  add a.example" in text and text.count("more") == 1
