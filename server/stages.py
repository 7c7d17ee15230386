"""The node's stages: each pairs the domain state (rooms.Stage) with its media (media.MediaRoom)
and the signalling connections of the people in it."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from media.room import MediaRoom
from rooms.errors import StageExists, StageNotFound
from rooms.events import (
    Event,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    PublishingStarted,
    PublishingStopped,
)
from rooms.stage import Stage
from server.config import Config

if TYPE_CHECKING:
    from server.signalling import Connection

log = logging.getLogger(__name__)


@dataclass
class LiveStage:
    stage: Stage
    media: MediaRoom
    connections: dict[str, Connection] = field(default_factory=dict)

    def send(self, participant_id: str, message: dict[str, Any]) -> None:
        conn = self.connections.get(participant_id)
        if conn is not None:
            conn.send(message)

    def broadcast(self, message: dict[str, Any], *, exclude: str | None = None) -> None:
        for pid, conn in list(self.connections.items()):
            if pid != exclude:
                conn.send(message)

    def publish_events(self, events: list[Event]) -> None:
        """Turn domain events into wire messages for the people who may see them."""
        for event in events:
            match event:
                case ParticipantJoined(participant=pid):
                    person = self.stage.participants.get(pid)
                    if person is not None:
                        self.broadcast(
                            {"type": "participant.joined", "participant": person.snapshot()}, exclude=pid
                        )
                case ParticipantLeft(participant=pid):
                    self.broadcast({"type": "participant.left", "participant_id": pid}, exclude=pid)
                case (
                    ParticipantUpdated(participant=pid)
                    | PublishingStarted(participant=pid)
                    | PublishingStopped(participant=pid)
                ):
                    person = self.stage.participants.get(pid)
                    if person is not None:
                        self.broadcast({"type": "participant.updated", "participant": person.snapshot()})


class Node:
    """All stages on this node (in memory: the embedded default)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.stages: dict[str, LiveStage] = {}

    def create_stage(self, stage_id: str | None, title: str | None) -> LiveStage:
        stage_id = stage_id or secrets.token_urlsafe(6).replace("_", "x").replace("-", "y")
        if stage_id in self.stages:
            raise StageExists(f"stage {stage_id} already exists")
        stage = Stage(stage_id, title or stage_id, self.clock(), max_publishers=self.config.media_slots)
        live: LiveStage

        def notify(participant_id: str, message: dict[str, Any]) -> None:
            live.send(participant_id, message)

        live = LiveStage(stage, MediaRoom(stage_id, self.config.media, notify))
        self.stages[stage_id] = live
        log.info("stage created", extra={"stage": stage_id})
        return live

    def get(self, stage_id: str) -> LiveStage:
        live = self.stages.get(stage_id)
        if live is None:
            raise StageNotFound(f"stage {stage_id} does not exist")
        return live

    def new_participant_id(self, live: LiveStage) -> str:
        while True:
            pid = "p-" + secrets.token_hex(4)
            if pid not in live.stage.participants:
                return pid

    def stage_info(self, live: LiveStage) -> dict[str, Any]:
        return {
            **live.stage.snapshot(),
            "participants": len(live.stage.participants),
            "publishers": len(live.stage.publishers),
            "url": f"{self.config.url}/s/{live.stage.id}",
        }

    async def close(self) -> None:
        for live in list(self.stages.values()):
            for conn in list(live.connections.values()):
                await conn.close(1001, "node shutting down")
            await live.media.close()
