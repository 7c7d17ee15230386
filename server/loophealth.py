"""Loop health: event-loop lag and GC pauses as plain numbers, read by /metrics at scrape time.

One timer per process (not a task per connection): it asks to run every ``interval`` seconds and
records how late it ran; a callback that holds the loop for D seconds shows as a lag of D minus the
part of the interval already elapsed (it under-reports a stall by at most ``interval``). GC pauses
come from ``gc.callbacks``: the time between a collection's start and stop, by generation.

No aiohttp and no prometheus-client here (server.metrics turns a ``snapshot()`` into families), so a
media worker process can ``start(loop)`` the same monitor and ship its snapshot.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import time
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (seconds, "le"): 1 ms to 10 s for the loop (a ping every 20 ms that waits 3 s is the
# issue-12 figure), 100 µs to 10 s for GC pauses (a young collection takes tens of µs).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0)
INTERVAL_S = 0.05


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf), their sum and the largest value."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    largest: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        if value > self.largest:
            self.largest = value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count)`` pairs, ``le`` = inf last, as Prometheus exposes them."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.largest)


@dataclass(slots=True)
class Snapshot:
    lag: Histogram
    gc_pauses: dict[int, Histogram]  # by generation 0, 1, 2
    gc_collected: dict[int, int]  # objects the collections of that generation freed


class LagMonitor:
    """A timer on ``loop`` every ``interval`` s; each run records how late it was into ``histogram``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, histogram: Histogram, interval: float) -> None:
        self.loop = loop
        self.histogram = histogram
        self.interval = interval
        self.ticks = 0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        # Measured on time.monotonic, not loop.time(): uvloop's clock is in whole milliseconds.
        self._due = time.monotonic() + self.interval
        self._handle = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        # uvloop rounds timers to the millisecond: a tick up to 1 ms early is on time.
        self.histogram.observe(max(0.0, time.monotonic() - self._due))
        self.ticks += 1
        self._schedule()


# Process-wide figures since start, like media.stats: one loop per process, one GC per process.
_lag = Histogram(LAG_BUCKETS)
_gc_pauses = {generation: Histogram(GC_BUCKETS) for generation in range(3)}
_gc_collected = dict.fromkeys(range(3), 0)
_gc_started = 0.0
_monitor: LagMonitor | None = None
_users = 0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    generation = info["generation"]
    _gc_pauses[generation].observe(time.perf_counter() - _gc_started)
    _gc_collected[generation] += info["collected"]


def start(loop: asyncio.AbstractEventLoop, interval: float = INTERVAL_S) -> LagMonitor:
    """Watch ``loop`` (and the process's GC) until as many ``stop()`` calls as ``start()`` calls;
    a second node on the same loop shares the monitor; a new loop (a test's next one) replaces it."""
    global _monitor, _users
    if _monitor is not None and _monitor.loop is not loop:
        _monitor.stop()
        _monitor, _users = None, 0
    if _monitor is None:
        _monitor = LagMonitor(loop, _lag, interval)
        _monitor.start()
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    _users += 1
    return _monitor


def stop() -> None:
    global _monitor, _users
    _users = max(0, _users - 1)
    if _users or _monitor is None:
        return
    _monitor.stop()
    _monitor = None
    if _on_gc in gc.callbacks:
        gc.callbacks.remove(_on_gc)


def snapshot() -> Snapshot:
    """Copies of the figures since the process started (a collection in another thread, a recording
    writer's, may land between two of the copies: a scrape is off by one collection at most)."""
    return Snapshot(
        lag=_lag.copy(),
        gc_pauses={g: h.copy() for g, h in _gc_pauses.items()},
        gc_collected=dict(_gc_collected),
    )
