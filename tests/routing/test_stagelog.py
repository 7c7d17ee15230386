"""The stage log's writer on uvloop (the loop production runs on), and what happens when it fails."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from media import stats
from rooms.roles import Role
from rooms.stage import Stage
from server.backend import Backend, Lease, MemoryBackend
from server.config import Config
from server.routing import stagelog
from server.routing.stagelog import StageLog
from tests.support.waiting import eventually


@dataclass
class _Place:
    """This node's place, as a stage log sees it (``routing.ports.Place``), on a real MemoryBackend."""

    backend: Backend
    node_id: str = "n-test"
    url: str = "http://127.0.0.1:1"
    open_remote: Any = None
    config: Config = field(default_factory=Config)
    unavailable: int = 0
    host: Any = field(default=None)

    def set_unavailable(self) -> None:
        self.unavailable += 1


async def _hosted(backend: Backend, stage_id: str = "s1") -> tuple[Stage, StageLog]:
    lease = await backend.claim(stage_id, "n-test", "http://127.0.0.1:1", 10_000)
    assert isinstance(lease, Lease)
    stage = Stage(stage_id, "Cardiology", 0.0)
    return stage, StageLog(_Place(backend), stage, lease, lambda pid: None)


async def test_saves_due_in_under_half_a_millisecond_do_not_kill_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On uvloop, call_later with a delay that rounds to 0 ms returns a plain Handle (no .when()): the
    # writer once read .when() of its save timer and died there, leaving every later event unwritten.
    monkeypatch.setattr(stagelog, "SAVE_INTERVAL_S", 0.0004)
    backend = MemoryBackend()
    stage, log = await _hosted(backend)
    try:
        for i in range(200):
            log.push(stage.join(f"p-{i}", f"Dr {i}", Role.AUDIENCE, float(i)))
            await asyncio.sleep(0)
        await eventually(lambda: not log.pending and not log.dirty, timeout=5)
        assert log.written == stage.log.last_seq >= 200
        assert await backend.last_seq("s1") == stage.log.last_seq
        assert await backend.load_state("s1") is not None
    finally:
        await log.close(release=True)
        await backend.close()


class _FailsOnce(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def append(self, stage_id: str, seq: int, payload: bytes, *, lease: Lease | None = None) -> None:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("injected: a bug in the writer's path")
        await super().append(stage_id, seq, payload, lease=lease)


async def test_a_writer_that_fails_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    backend = _FailsOnce()
    caplog.set_level(logging.ERROR)
    before = stats.snapshot().get("task_failures", 0)
    stage, log = await _hosted(backend)
    try:
        events = stage.join("p-1", "Dr One", Role.AUDIENCE, 1.0)
        events += stage.join("p-2", "Dr Two", Role.AUDIENCE, 2.0)
        log.push(events)
        await eventually(lambda: not log.pending, timeout=5)
        assert backend.failures == 1
        assert await backend.last_seq("s1") == events[-1].seq
        assert stats.snapshot()["task_failures"] == before + 1
        failures = [r for r in caplog.records if "injected" in str(r.exc_info[1] if r.exc_info else "")]
        assert failures and failures[0].levelno == logging.ERROR
        assert getattr(failures[0], "stage", None) == "s1"
    finally:
        await log.close(release=True)
        await backend.close()
