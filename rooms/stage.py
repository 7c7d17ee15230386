"""A stage: who is present, in which role, and who publishes which kinds.

Pure state. Every method checks its permissions here, changes state only on success, and returns the
events it caused; a refused command raises a ``DomainError`` and leaves the stage unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rooms.errors import NotAllowed, NotPublishing, StageEnded, StageFull, UnknownParticipant
from rooms.events import (
    Event,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    PublishingStarted,
    PublishingStopped,
)
from rooms.roles import Permission, Role, require

KINDS = ("audio", "video")


class StageState(enum.StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"


@dataclass(slots=True)
class Participant:
    id: str
    name: str
    role: Role
    joined_at: float
    publishing: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)

    def snapshot(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "publishing": {k: k in self.publishing for k in KINDS},
            "muted": {k: k in self.muted for k in KINDS},
        }


@dataclass(slots=True)
class Stage:
    """One live talk. ``max_publishers`` mirrors the media slots every subscriber has."""

    id: str
    title: str
    created_at: float
    max_publishers: int = 6
    state: StageState = StageState.LIVE
    participants: dict[str, Participant] = field(default_factory=dict)

    def snapshot(self) -> dict[str, object]:
        return {"id": self.id, "title": self.title, "state": str(self.state)}

    @property
    def host(self) -> Participant | None:
        return next((p for p in self.participants.values() if p.role is Role.HOST), None)

    @property
    def publishers(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.publishing]

    def get(self, participant_id: str) -> Participant:
        try:
            return self.participants[participant_id]
        except KeyError:
            raise UnknownParticipant(f"no participant {participant_id} on stage {self.id}") from None

    def join(self, participant_id: str, name: str, role: Role, now: float) -> list[Event]:
        if self.state is StageState.ENDED:
            raise StageEnded(f"stage {self.id} has ended")
        if role is Role.HOST and self.host is not None:
            raise NotAllowed(f"stage {self.id} already has a host")
        if participant_id in self.participants:
            raise NotAllowed(f"{participant_id} is already on stage {self.id}")
        self.participants[participant_id] = Participant(participant_id, name, role, now)
        return [ParticipantJoined(self.id, now, participant_id)]

    def leave(self, participant_id: str, now: float) -> list[Event]:
        person = self.participants.pop(participant_id, None)
        if person is None:
            return []
        events: list[Event] = []
        if person.publishing:
            events.append(PublishingStopped(self.id, now, participant_id))
        events.append(ParticipantLeft(self.id, now, participant_id))
        return events

    def start_publishing(self, participant_id: str, kinds: tuple[str, ...], now: float) -> list[Event]:
        person = self.get(participant_id)
        require(person.role, Permission.PUBLISH)
        if not person.publishing and len(self.publishers) >= self.max_publishers:
            raise StageFull(f"stage {self.id} already has {self.max_publishers} publishers")
        person.publishing = set(kinds)
        person.muted &= person.publishing
        return [PublishingStarted(self.id, now, participant_id, tuple(sorted(kinds)))]

    def check_may_publish(self, participant_id: str) -> None:
        """The checks of ``start_publishing`` without the change (before costly media set-up)."""
        person = self.get(participant_id)
        require(person.role, Permission.PUBLISH)
        if not person.publishing and len(self.publishers) >= self.max_publishers:
            raise StageFull(f"stage {self.id} already has {self.max_publishers} publishers")

    def stop_publishing(self, participant_id: str, now: float) -> list[Event]:
        person = self.get(participant_id)
        if not person.publishing:
            raise NotPublishing(f"{participant_id} is not publishing")
        person.publishing = set()
        person.muted = set()
        return [PublishingStopped(self.id, now, participant_id)]

    def set_muted(self, participant_id: str, kind: str, muted: bool, now: float) -> list[Event]:
        person = self.get(participant_id)
        if kind not in person.publishing:
            raise NotPublishing(f"{participant_id} does not publish {kind}")
        if muted:
            person.muted.add(kind)
        else:
            person.muted.discard(kind)
        return [ParticipantUpdated(self.id, now, participant_id)]
