"""Events a stage emits. Immutable records; the shell turns them into wire messages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    stage: str
    at: float


@dataclass(frozen=True, slots=True)
class ParticipantJoined(Event):
    participant: str


@dataclass(frozen=True, slots=True)
class ParticipantLeft(Event):
    participant: str


@dataclass(frozen=True, slots=True)
class ParticipantUpdated(Event):
    participant: str


@dataclass(frozen=True, slots=True)
class PublishingStarted(Event):
    participant: str
    kinds: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PublishingStopped(Event):
    participant: str
