"""Loop health for bench tables: a node's event-loop lag and GC pauses, from its /metrics.

Scrape before and after a bench's window; ``window(before, after)`` gives the window's lag p99,
its longest stall and the time spent in GC (docs/benchmarks.md, "Loop health in every table").

    python bench/loopstats.py http://127.0.0.1:8080          # since the node started
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

LAG = "medstage_event_loop_lag_seconds"
GC = "medstage_gc_pause_seconds"


@dataclass(frozen=True)
class LoopStats:
    buckets: tuple[tuple[float, float], ...] = ()  # the lag histogram: (le, cumulative count)
    lag_max_s: float = 0.0  # since the node started
    gc_pause_s: dict[str, float] = field(default_factory=dict)  # by generation: total time
    gc_collections: dict[str, float] = field(default_factory=dict)

    @property
    def ticks(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def quantile(self, q: float) -> float:
        """As PromQL's histogram_quantile: linear within the bucket that holds the q-th tick."""
        if not self.ticks:
            return math.nan
        rank, low, below = q * self.ticks, 0.0, 0.0
        for le, count in self.buckets:
            if count >= rank:
                if math.isinf(le):
                    return low  # beyond the last bound: its lower edge is all we know
                return low + (le - low) * (rank - below) / (count - below) if count > below else le
            low, below = le, count
        return low

    @property
    def lag_p99_s(self) -> float:
        return self.quantile(0.99)

    @property
    def gc_total_s(self) -> float:
        return sum(self.gc_pause_s.values())

    @property
    def gc_full_s(self) -> float:
        return self.gc_pause_s.get("2", 0.0)


def parse(text: str) -> LoopStats:
    buckets: list[tuple[float, float]] = []
    lag_max, pauses, collections = 0.0, {}, {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == LAG + "_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == LAG.replace("_seconds", "_max_seconds"):
                lag_max = s.value
            elif s.name == GC + "_sum":
                pauses[s.labels["generation"]] = s.value
            elif s.name == GC + "_count":
                collections[s.labels["generation"]] = s.value
    buckets.sort()
    return LoopStats(tuple(buckets), lag_max, pauses, collections)


def window(before: LoopStats, after: LoopStats) -> LoopStats:
    """What happened between two scrapes. The longest stall is exact when it happened in the window
    (the node's maximum grew); otherwise it is the bound of the highest bucket the window reached."""
    counts = dict(before.buckets)
    buckets = tuple((le, n - counts.get(le, 0.0)) for le, n in after.buckets)
    if after.lag_max_s > before.lag_max_s:
        longest = after.lag_max_s
    else:
        below, reached = 0.0, 0.0
        for le, n in buckets:
            if n > below:
                reached = le
            below = n
        longest = min(before.lag_max_s, reached)
    return LoopStats(
        buckets,
        longest,
        {g: s - before.gc_pause_s.get(g, 0.0) for g, s in after.gc_pause_s.items()},
        {g: n - before.gc_collections.get(g, 0.0) for g, n in after.gc_collections.items()},
    )


async def scrape(session: aiohttp.ClientSession, base: str) -> LoopStats:
    async with session.get(base + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as response:
        response.raise_for_status()
        return parse(await response.text())


async def read(base: str) -> LoopStats:
    """One scrape of the node at ``base`` (``http://127.0.0.1:PORT``), with its own HTTP session."""
    async with aiohttp.ClientSession() as session:
        return await scrape(session, base)


def cell(stats: LoopStats | None) -> str:
    """A compact table cell: lag p99 / longest stall, GC time in the window (ms)."""
    if stats is None or not stats.ticks:
        return "n/a"
    return f"{stats.lag_p99_s * 1e3:.0f} / {stats.lag_max_s * 1e3:.0f} ms, GC {stats.gc_total_s * 1e3:.0f} ms"


def summary(stats: LoopStats) -> str:
    """One table cell: lag p99 / longest stall; GC time (of which full collections)."""
    return (
        f"lag p99 {stats.lag_p99_s * 1e3:.0f} ms, longest {stats.lag_max_s * 1e3:.0f} ms; "
        f"GC {stats.gc_total_s * 1e3:.0f} ms ({stats.gc_full_s * 1e3:.0f} ms full)"
    )


async def _main(base: str) -> None:
    print(summary(await read(base.rstrip("/"))))


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"))
