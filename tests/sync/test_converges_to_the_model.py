"""Model-based: random feed versions, faults and crashes; CyberTrace ends as the model says."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from feedsync.config import Config, parse
from feedsync.emulator import Emulator
from feedsync.emulator.faults import Faults
from feedsync.store import Store
from feedsync.sync import Cycle

FEEDS = {"alpha": "S1", "beta": "S1", "gamma": "S2"}
POOL = [f"v{i}.example" for i in range(6)]
CONFIG = """\
cybertrace:
  url: {url}
  username: u
  password: p
  max_batch_indicators: 3
  retry: {{attempts: 2, initial_delay: 0.001, max_delay: 0.002}}
state:
  path: {dir}/state.db
suppliers:
  S1: {{confidence: 10}}
  S2: {{confidence: 20}}
feeds:
"""
FEED = (
    "  - {{name: {name}, type: csv, url: {dir}/{name}.csv, supplier: {supplier}, header: false,"
    " indicator: 1, context: {{c: '2'}}, tags: [{name}], max_delete_ratio: 1.0}}\n"
)

Content = dict[str, str]


class SyncMachine(RuleBasedStateMachine):
    """Feeds change, CyberTrace misbehaves, feedsync crashes; after every clean
    cycle each supplier holds exactly the merge of its feeds (DESIGN invariant 4)."""

    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="feedsync-model-"))
        self.emulator = Emulator(user="u", password="p")
        url = self.loop.run_until_complete(self.emulator.start())
        text = CONFIG.format(url=url, dir=self.dir) + "".join(
            FEED.format(name=name, supplier=supplier, dir=self.dir)
            for name, supplier in FEEDS.items()
        )
        self.config: Config = parse(text)
        self.feeds: dict[str, Content] = {}
        self.ever_refused: set[str] = set()
        for name in FEEDS:
            self.write(name, {POOL[0]: "x"})
        self.store = Store.open(self.config.state.path)

    def write(self, name: str, content: Content) -> None:
        self.feeds[name] = content
        lines = "".join(f"{value},{context}\n" for value, context in sorted(content.items()))
        (self.dir / f"{name}.csv").write_text(lines)

    @rule(
        name=st.sampled_from(sorted(FEEDS)),
        values=st.sets(st.sampled_from(POOL), min_size=1, max_size=10),
        context=st.sampled_from(["x", "y", "z"]),
    )
    def change_feed(self, name: str, values: set[str], context: str) -> None:
        self.write(name, {value: context for value in values})

    @rule(seed=st.integers(0, 1000), rate=st.sampled_from([0.0, 0.3, 0.6]))
    def misbehave(self, seed: int, rate: float) -> None:
        self.emulator.faults = Faults(
            rate=rate,
            statuses=(500, 429, 503, 425),
            after_apply=rate / 3,
            reset=rate / 6,
            seed=seed,
        )

    @rule(bad=st.sets(st.sampled_from(POOL), max_size=2))
    def refuse(self, bad: set[str]) -> None:
        self.ever_refused |= bad
        self.emulator.faults = Faults(reject_values=frozenset(bad))

    @rule(steps=st.integers(0, 40))
    def crash(self, steps: int) -> None:
        """Kill a cycle at an await point, then restart (close and reopen the store)."""

        async def interrupted() -> None:
            task = asyncio.ensure_future(Cycle(self.config, self.store).run())
            for _ in range(steps):
                await asyncio.sleep(0)
                if task.done():
                    break
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.loop.run_until_complete(interrupted())
        self.store.close()
        self.store = Store.open(self.config.state.path)

    @rule()
    def sync(self) -> None:
        _, suppliers = self.loop.run_until_complete(Cycle(self.config, self.store).run())
        if all(not s.error and s.pending == 0 for s in suppliers):
            self.check()

    def check(self) -> None:
        for supplier in ("S1", "S2"):
            wanted: dict[str, tuple[dict[str, object], set[str]]] = {}
            for name, owner in FEEDS.items():
                if owner != supplier:
                    continue
                for value, context in self.feeds[name].items():
                    entry = wanted.setdefault(value, ({"c": context}, set()))
                    entry[1].add(name.upper())
            rejected = {v for v, _op, _r in self.store.rejected(supplier, 100)}
            # Invariant 5: a refusal stays recorded until the value's content changes.
            assert rejected <= self.ever_refused, "only refused values are recorded as rejected"
            held = {v: (i.context, i.tags) for v, i in self.emulator.indicators(supplier).items()}
            expected = {v: e for v, e in wanted.items() if v not in rejected}
            # A refused value may still hold what CyberTrace accepted earlier.
            assert {v: e for v, e in held.items() if v not in rejected} == expected

    def teardown(self) -> None:
        if not hasattr(self, "loop"):
            return
        self.emulator.faults = None
        try:
            for _ in range(3):
                _, suppliers = self.loop.run_until_complete(Cycle(self.config, self.store).run())
                if all(not s.error and s.pending == 0 for s in suppliers):
                    break
            self.check()
        finally:
            self.store.close()
            self.loop.run_until_complete(self.emulator.stop())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


SyncMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSyncModel = SyncMachine.TestCase
