"""A hosted stage's connection quality: every ``SAMPLE_S`` it samples each participant's figures (down
and up, ``MediaRoom.figures``: here, or as a media worker last reported them), keeps their level with
hysteresis (``media.quality.LevelTracker``) and a bounded timeline, and feeds a changed level to the
domain (``Stage.set_quality``), which emits ``participant.updated``. The troubleshooting report
(server/api/quality.py) reads what was last sampled; it never samples itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from media.figures import ConnectionDirection
from media.quality import Level, LevelTracker, Timeline
from rooms.events import Event
from rooms.stage import Stage

if TYPE_CHECKING:
    from server.host.live import LiveStage

log = logging.getLogger(__name__)

SAMPLE_S = 2.0  # a media worker reports every 2 s too (media/worker.py QUALITY_S)
BATCH = 100  # participants sampled per event-loop pass (a large audience does not stall the loop)


@dataclass(slots=True)
class Connection:
    """What the node last measured of one participant."""

    tracker: LevelTracker = field(default_factory=LevelTracker)
    timeline: Timeline = field(default_factory=Timeline)
    down: ConnectionDirection | None = None
    up: ConnectionDirection | None = None
    sampled_at: float | None = None  # Unix time

    @property
    def level(self) -> Level | None:
        return self.tracker.level


def _set_quality(pid: str, level: str) -> Callable[[Stage, float], list[Event]]:
    return lambda stage, now: stage.set_quality(pid, level, now)


class QualityMonitor:
    def __init__(
        self,
        live: LiveStage,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.live = live
        self.people: dict[str, Connection] = {}
        self._clock = clock
        self._wall = wall

    def sample(self, pids: list[str] | None = None) -> None:
        """QualityFigures, level and timeline of ``pids`` (everyone by default); changed levels go to the
        domain."""
        live = self.live
        stage = live.stage
        now, at = self._clock(), self._wall()
        for pid in list(stage.participants) if pids is None else pids:
            if pid not in stage.participants:
                continue
            conn = self.people.get(pid)
            if conn is None:
                conn = self.people[pid] = Connection()
            down, up = live.media.figures(pid)
            conn.down, conn.up, conn.sampled_at = down, up, at
            level = conn.tracker.update([d.figures for d in (down, up) if d is not None], now)
            conn.timeline.maybe_add(
                at, level, down.figures if down is not None else None, up.figures if up is not None else None
            )
            person = stage.participants.get(pid)
            if level is not None and person is not None and person.quality != level:
                live.apply(_set_quality(pid, level.value))
        if pids is None:
            self.forget_gone()

    def forget_gone(self) -> None:
        stage = self.live.stage
        for pid in [p for p in self.people if p not in stage.participants]:
            del self.people[pid]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            pids = list(self.live.stage.participants)
            for start in range(0, len(pids), BATCH):
                try:
                    self.sample(pids[start : start + BATCH])
                except Exception:  # figures are a convenience: never the stage's end
                    log.exception("quality sampling failed", extra={"stage": self.live.stage.id})
                await asyncio.sleep(0)
            self.forget_gone()
