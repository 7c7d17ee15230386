"""GC policy: long-lived objects frozen out of the collector, and the passes that keep that honest.

Issue 12 measured full collections at 35-40 % of a node's CPU during a join wave: each one walks
every live peer connection (aiortc's objects are full of cycles) to find the little garbage the wave
made. ``gc.freeze()`` moves every object into the permanent generation, which no collection walks.

The trap: a frozen object that later becomes cyclic garbage (a viewer who left: its peer connection,
transports and tasks reference each other) is never collected while frozen. So:
- as a wave of joins goes (every ``wave`` joins, sampled once a second): a young collection
  (generations 0 and 1), then ``gc.freeze()``. Cheap (bounded by the thresholds, ~10 ms), and it
  keeps what the full collections during the wave walk small: a join leaves about 8,500 objects on
  the node, and without it Python ran 7 full collections during a wave of 80 viewers, 1 s of GC, which
  freed 29 objects in all (measured: joins make next to no cyclic garbage, so little is frozen with
  the survivors; the next full pass frees it);
- after a wave of leaves (quiet again) of at least ``leave_share`` of the peak, and at least every
  ``full_interval_s`` if anyone left: ``gc.unfreeze()``, a full ``gc.collect()``, ``gc.freeze()``.
  This walks the whole heap (about 0.2 µs per live object, 0.4 µs per one freed, measured: a pause the
  lag figures show), which is why it waits for a quiet moment and for a share of the audience worth
  it; 25 % is CPython's own rule for full collections (long-lived objects pending > 25 % of total).

``GcPolicy`` decides (plain calls, no clock, no GC); ``GcKeeper`` is the shell that samples the
population once a second and runs the passes. No aiohttp: a media worker process can keep one too.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from media.tasks import OwnedTasks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GcSettings:
    freeze: bool = True
    gen0_threshold: int = 0  # 0: keep Python's (700)
    wave: int = 20  # joins between two freeze passes; the least number of leaves for a full pass
    leave_share: float = 0.25  # a full pass after leaves: at least this share of the peak left
    quiet_s: float = 5.0  # no join or leave for this long: a wave of leaves is over
    full_interval_s: float = 900.0  # a full pass at least this often (frozen garbage stays bounded)


class Pass(enum.Enum):
    NONE = "none"
    FREEZE = "freeze"  # collect the young generations, freeze what is left
    FULL = "full"  # unfreeze, collect everything, freeze again


class GcPolicy:
    """When to pass, from samples of the population (connections, peers: whatever the process holds)."""

    def __init__(self, settings: GcSettings, now: float, population: int = 0) -> None:
        self.settings = settings
        self.population = population
        self.joins = 0  # since the last pass
        self.leaves = 0  # since the last full pass
        self.peak = population  # the largest population since the last full pass
        self.last_change = now
        self.last_full = now

    def observe(self, population: int, now: float) -> Pass:
        delta = population - self.population
        if delta:
            self.population = population
            self.last_change = now
            if delta > 0:
                self.joins += delta
                self.peak = max(self.peak, population)
            else:
                self.leaves -= delta
        quiet = now - self.last_change >= self.settings.quiet_s
        if self.leaves and now - self.last_full >= self.settings.full_interval_s:
            return Pass.FULL
        enough = max(self.settings.wave, self.settings.leave_share * self.peak)
        if quiet and self.leaves >= enough:
            return Pass.FULL
        if self.joins >= self.settings.wave:
            return Pass.FREEZE
        return Pass.NONE

    def passed(self, kind: Pass, now: float) -> None:
        self.joins = 0
        if kind is Pass.FULL:
            self.leaves = 0
            self.peak = self.population
            self.last_full = now


# Read by server.metrics at scrape time.
passes = {Pass.FREEZE: 0, Pass.FULL: 0}


def run_pass(kind: Pass) -> int:
    """Run one pass now; the number of unreachable objects found."""
    if kind is Pass.NONE:
        return 0
    if kind is Pass.FULL:
        gc.unfreeze()
    found = gc.collect(2 if kind is Pass.FULL else 1)
    gc.freeze()
    passes[kind] += 1
    return found


class GcKeeper:
    """Owns the sampling task: ``start()`` after start-up (freezes what start-up made), ``close()``."""

    SAMPLE_S = 1.0

    def __init__(self, settings: GcSettings, population: Callable[[], int]) -> None:
        self.settings = settings
        self.population = population
        self._tasks = OwnedTasks(log, "gc keeper")
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        if self.settings.gen0_threshold:
            gc.set_threshold(self.settings.gen0_threshold, *self._thresholds[1:])
        if not self.settings.freeze:
            return
        run_pass(Pass.FULL)  # start-up's modules, app, routes, configuration: alive until the end
        # The population now is the baseline: whoever comes before the first sample is a join.
        policy = GcPolicy(self.settings, asyncio.get_running_loop().time(), self.population())
        self._tasks.supervise("sampler", lambda: self._run(policy))

    async def close(self) -> None:
        """Stop sampling; give Python its thresholds back and unfreeze (a test process goes on)."""
        await self._tasks.cancel_all()
        gc.set_threshold(*self._thresholds)
        if self.settings.freeze:
            gc.unfreeze()

    async def _run(self, policy: GcPolicy) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.SAMPLE_S)
            kind = policy.observe(self.population(), loop.time())
            if kind is Pass.NONE:
                continue
            started = time.perf_counter()
            found = run_pass(kind)
            policy.passed(kind, loop.time())
            log.info(
                "gc pass",
                extra={
                    "kind": kind.value,
                    "unreachable": found,
                    "frozen": gc.get_freeze_count(),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
