"""Connection quality on the stage: the level the node measured for each participant (media/quality.py
computes it, with hysteresis), in their participant object and in ``participant.updated`` only when it
changes, at most once per ``QUALITY_MIN_INTERVAL_S`` per participant and ``QUALITY_STAGE_PER_S``
changes a second on the stage (each goes to everyone: a network hiccup that changes a thousand
viewers' levels at once must not become a thousand broadcasts in one second; the rest follow at the
next samples)."""

from __future__ import annotations

from collections import deque

from rooms.errors import InvalidMessage
from rooms.events import Event
from rooms.stage_base import StageBase

__all__ = ["QUALITY_LEVELS", "QUALITY_MIN_INTERVAL_S", "QUALITY_STAGE_PER_S", "Quality"]

QUALITY_LEVELS = ("excellent", "good", "poor", "lost")
QUALITY_MIN_INTERVAL_S = 5.0
QUALITY_STAGE_PER_S = 20


class Quality(StageBase):
    def set_quality(self, participant_id: str, level: str, now: float) -> list[Event]:
        """The node measured ``level`` for a participant (no actor: nobody commands it). Nothing
        happens for someone who left, an unchanged level, or within ``QUALITY_MIN_INTERVAL_S`` of the
        participant's last change (the shell asks again on its next sample)."""
        if level not in QUALITY_LEVELS:
            raise InvalidMessage(f"quality is one of {', '.join(QUALITY_LEVELS)}")
        person = self.participants.get(participant_id)
        if person is None or person.quality == level:
            return []
        if person.quality_at is not None and now - person.quality_at < QUALITY_MIN_INTERVAL_S:
            return []
        recent: deque[float] = self.__dict__.setdefault("_quality_changes", deque())
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= QUALITY_STAGE_PER_S:
            return []
        recent.append(now)
        person.quality = level
        person.quality_at = now
        return self._emit([self._updated(person, now)])
