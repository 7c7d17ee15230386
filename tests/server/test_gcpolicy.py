"""GC policy (server/gcpolicy.py): when it passes, and that what it freezes is still collected once
it becomes garbage (the permanent generation's trap: a viewer who left is full of cycles)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from server import gcpolicy
from server.gcpolicy import GcKeeper, GcPolicy, GcSettings, Pass
from tests.support.waiting import eventually

SETTINGS = GcSettings(wave=10, quiet_s=5.0, full_interval_s=600.0)


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """Each test starts and ends with nothing frozen, Python's thresholds and no stray garbage."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    gc.collect()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()


def test_a_join_wave_is_frozen_as_it_grows() -> None:
    """Every ``wave`` joins, without waiting for the wave to end: what is frozen, no full collection
    during the rest of the wave walks."""
    policy = GcPolicy(SETTINGS, now=0.0)
    kinds = []
    for second in range(1, 31):  # 3 joins a second
        kind = policy.observe(3 * second, float(second))
        kinds.append(kind)
        if kind is not Pass.NONE:
            policy.passed(kind, float(second))
    assert [s + 1 for s, k in enumerate(kinds) if k is Pass.FREEZE] == [4, 8, 12, 16, 20, 24, 28]
    assert Pass.FULL not in kinds
    assert policy.observe(90, 100.0) is Pass.NONE, "nothing happened since"


def test_few_joins_make_no_wave() -> None:
    policy = GcPolicy(SETTINGS, now=0.0, population=100)
    assert policy.observe(109, 1.0) is Pass.NONE
    assert policy.observe(109, 60.0) is Pass.NONE


def test_a_leave_wave_gets_a_full_pass_once_it_is_quiet() -> None:
    policy = GcPolicy(SETTINGS, now=0.0, population=50)
    assert policy.observe(30, 1.0) is Pass.NONE
    assert policy.observe(30, 6.0) is Pass.FULL
    policy.passed(Pass.FULL, 6.0)
    assert policy.observe(30, 20.0) is Pass.NONE


def test_leaves_mixed_with_joins_still_count_as_leaves() -> None:
    """Joins do not cancel leaves: 10 left and 10 others came, the leavers' cycles are frozen garbage."""
    policy = GcPolicy(SETTINGS, now=0.0, population=50)
    policy.observe(30, 1.0)
    policy.observe(50, 2.0)
    assert policy.observe(50, 7.0) is Pass.FULL


def test_a_few_leaves_from_a_large_audience_wait_for_the_interval() -> None:
    """A full pass walks every viewer still there: 100 of 1,000 leaving is not worth it at once."""
    policy = GcPolicy(SETTINGS, now=0.0, population=1000)
    assert policy.observe(900, 1.0) is Pass.NONE
    assert policy.observe(900, 300.0) is Pass.NONE
    assert policy.observe(749, 301.0) is Pass.NONE, "251 left: a quarter, once it is quiet"
    assert policy.observe(749, 306.0) is Pass.FULL
    policy.passed(Pass.FULL, 306.0)
    assert policy.observe(700, 307.0) is Pass.NONE
    assert policy.observe(700, 906.0) is Pass.FULL, "the interval: 49 left since the last full pass"


def test_no_full_pass_when_nobody_left() -> None:
    policy = GcPolicy(SETTINGS, now=0.0, population=1000)
    assert policy.observe(1000, 601.0) is Pass.NONE
    assert policy.observe(1000, 6000.0) is Pass.NONE


def test_a_full_pass_comes_at_the_interval_even_when_it_is_never_quiet() -> None:
    """Constant churn: never quiet, but frozen garbage must not grow without bound."""
    policy = GcPolicy(SETTINGS, now=0.0, population=100)
    for second in range(1, 600):
        kind = policy.observe(100 + second % 2, float(second))
        assert kind is not Pass.FULL, second
        if kind is Pass.FREEZE:  # the joins among the churn
            policy.passed(kind, float(second))
    assert policy.observe(100, 600.0) is Pass.FULL


class Viewer:
    """Like a peer connection: objects that reference each other, so only the collector frees them."""

    def __init__(self) -> None:
        self.transport = {"owner": self, "buffers": [bytearray(64) for _ in range(4)]}


def test_frozen_viewers_who_left_are_collected_by_the_full_pass() -> None:
    viewers = [Viewer() for _ in range(200)]
    refs = [weakref.ref(v) for v in viewers]
    gcpolicy.run_pass(Pass.FREEZE)  # after the join wave
    assert gc.get_freeze_count() >= 200 * 3
    del viewers  # they left: cyclic garbage, in the permanent generation

    gc.collect()
    assert all(r() is not None for r in refs), "the trap: a collection does not look at frozen objects"
    gcpolicy.run_pass(Pass.FREEZE)
    assert all(r() is not None for r in refs), "a freeze pass does not either"

    full = gcpolicy.passes[Pass.FULL]
    found = gcpolicy.run_pass(Pass.FULL)
    assert [r for r in refs if r() is not None] == []
    assert found >= 200 * 3 and gcpolicy.passes[Pass.FULL] == full + 1
    assert gc.get_freeze_count() > 0, "the survivors are frozen again"


def test_a_freeze_pass_frees_young_garbage_before_it_freezes() -> None:
    """Garbage the wave just made (young) is collected, not frozen."""
    refs = [weakref.ref(Viewer()) for _ in range(100)]
    gcpolicy.run_pass(Pass.FREEZE)
    assert [r for r in refs if r() is not None] == []


async def test_the_keeper_freezes_after_joins_and_frees_the_viewers_who_left() -> None:
    """The shell end to end: population sampled, passes run, no leak after a join and leave wave."""
    present: list[Viewer] = []
    keeper = GcKeeper(GcSettings(gen0_threshold=5000, wave=10, quiet_s=0.05), lambda: len(present))
    keeper.SAMPLE_S = 0.01
    frozen, full = gcpolicy.passes[Pass.FREEZE], gcpolicy.passes[Pass.FULL]
    keeper.start()
    try:
        assert gc.get_threshold()[0] == 5000
        assert gcpolicy.passes[Pass.FULL] == full + 1, "start-up is frozen at once"
        present.extend(Viewer() for _ in range(50))
        refs = [weakref.ref(v) for v in present]
        await eventually(lambda: gcpolicy.passes[Pass.FREEZE] == frozen + 1, 5, interval=0.01)
        assert gc.get_freeze_count() >= 50 * 3
        present.clear()
        await eventually(lambda: gcpolicy.passes[Pass.FULL] == full + 2, 5, interval=0.01)
        assert [r for r in refs if r() is not None] == []
    finally:
        await keeper.close()
    assert gc.get_threshold()[0] != 5000, "close() gives Python's thresholds back"
    assert gc.get_freeze_count() == 0, "and unfreezes: the process may go on without the node"
