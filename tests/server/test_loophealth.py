"""Loop health (server/loophealth.py): a blocked loop shows as lag, a collection as a GC pause; and
the figures reach /metrics' text as prometheus-client's parser reads it."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import loophealth, metrics
from tests.support.waiting import eventually


@pytest.fixture
async def monitor() -> AsyncIterator[loophealth.LagMonitor]:
    watched = loophealth.start(asyncio.get_running_loop(), interval=0.05)
    try:
        yield watched
    finally:
        loophealth.stop()


def _in(histogram: loophealth.Histogram, low: float, high: float) -> int:
    """Observations in (low, high]; both must be bucket bounds (or 0 and inf)."""
    counts = dict(histogram.cumulative())
    return counts[high] - (counts[low] if low else 0)


async def test_a_200_ms_block_shows_in_the_lag_histogram_and_the_longest_stall(
    monitor: loophealth.LagMonitor,
) -> None:
    await eventually(lambda: monitor.ticks >= 3, 5, interval=0.001)
    before = loophealth.snapshot()
    ticks = monitor.ticks
    await eventually(lambda: monitor.ticks > ticks, 5, interval=0.001)
    time.sleep(0.2)  # noqa: ASYNC251 - the point: a callback that holds the loop, right after the timer ran
    ticks = monitor.ticks
    await eventually(lambda: monitor.ticks > ticks, 5, interval=0.001)
    after = loophealth.snapshot()

    # Due 50 ms after the last run, run 200 ms after it: about 150 ms late (more on a loaded machine).
    assert after.lag.largest >= 0.14, after.lag.largest
    assert _in(after.lag, 0.1, 0.5) - _in(before.lag, 0.1, 0.5) >= 1
    assert after.lag.total - before.lag.total >= 0.14
    assert after.lag.count > before.lag.count


async def test_the_monitor_is_one_timer_not_a_task() -> None:
    tasks = len(asyncio.all_tasks())
    watched = loophealth.start(asyncio.get_running_loop(), interval=0.01)
    try:
        await eventually(lambda: watched.ticks >= 5, 5, interval=0.005)
        assert len(asyncio.all_tasks()) == tasks
        again = loophealth.start(asyncio.get_running_loop())
        assert again is watched, "a second node on the same loop shares the timer"
        loophealth.stop()
        ticks = watched.ticks
        await eventually(lambda: watched.ticks > ticks, 5, interval=0.005)
    finally:
        loophealth.stop()
    ticks = watched.ticks
    await asyncio.sleep(0.05)
    assert watched.ticks == ticks, "the last stop() stops the timer"


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_collections_are_counted_and_timed_by_generation(monitor: loophealth.LagMonitor) -> None:
    before = loophealth.snapshot()
    for _ in range(100):
        _Cycle()
    gc.collect(0)
    gc.collect(2)
    after = loophealth.snapshot()
    for generation in (0, 2):
        assert after.gc_pauses[generation].count >= before.gc_pauses[generation].count + 1
        assert after.gc_pauses[generation].total > before.gc_pauses[generation].total
    collected = sum(after.gc_collected.values()) - sum(before.gc_collected.values())
    assert collected >= 100, collected


async def test_the_figures_parse_as_prometheus_families(monitor: loophealth.LagMonitor) -> None:
    await eventually(lambda: monitor.ticks >= 2, 5, interval=0.005)
    gc.collect()
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    lag = families["medstage_event_loop_lag_seconds"]
    assert lag.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in lag.samples}
    assert (
        samples[("medstage_event_loop_lag_seconds_bucket", "+Inf")]
        == samples[("medstage_event_loop_lag_seconds_count", None)]
        >= 2
    )
    assert {s.labels["le"] for s in lag.samples if "le" in s.labels} >= {"0.001", "10.0", "+Inf"}
    assert families["medstage_event_loop_lag_max_seconds"].type == "gauge"
    pauses = families["medstage_gc_pause_seconds"]
    assert pauses.type == "histogram"
    full = [s for s in pauses.samples if s.name.endswith("_count") and s.labels["generation"] == "2"]
    assert full and full[0].value >= 1
    collections = families["medstage_gc_collections"]
    assert collections.type == "counter"
    assert {s.labels["generation"] for s in collections.samples} == {"0", "1", "2"}
    assert families["medstage_gc_frozen_objects"].type == "gauge"
    assert {s.labels["kind"] for s in families["medstage_gc_passes"].samples} == {"freeze", "full"}


async def test_the_bench_scraper_reads_the_window_p99_and_longest_stall(
    monitor: loophealth.LagMonitor,
) -> None:
    """bench/loopstats.py on this process's own exposition: what every bench table prints."""
    from bench import loopstats

    await eventually(lambda: monitor.ticks >= 2, 5, interval=0.005)
    before = loopstats.parse(metrics.render().decode())
    ticks = monitor.ticks
    await eventually(lambda: monitor.ticks > ticks, 5, interval=0.001)
    time.sleep(0.6)  # noqa: ASYNC251 - a stall inside the window, longer than the other tests' ones
    await eventually(lambda: monitor.ticks >= ticks + 10, 5, interval=0.005)
    after = loopstats.parse(metrics.render().decode())
    window = loopstats.window(before, after)
    assert window.ticks >= 10 and window.ticks == after.ticks - before.ticks
    assert 0.5 <= window.lag_max_s <= after.lag_max_s
    if after.lag_max_s > before.lag_max_s:  # this window's stall is the process's longest: exact
        assert window.lag_max_s == after.lag_max_s
    # else a longer stall came earlier (a loaded machine): the window says its stall's bucket bound
    assert 0.5 <= window.quantile(1.0) <= 1.0, "the stall's bucket"
    assert window.quantile(0.5) < 0.05, "most ticks were on time"
    assert window.gc_total_s >= 0 and set(window.gc_collections) == {"0", "1", "2"}
