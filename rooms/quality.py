"""Connection quality on the stage: the level the node measured for each participant (media/quality.py
computes it, with hysteresis), in their participant object and in ``participant.updated`` only when it
changes, at most once per ``QUALITY_MIN_INTERVAL_S`` per participant (a flapping measurement cannot
flood everyone's sockets or the stage log)."""

from __future__ import annotations

from rooms.errors import InvalidMessage
from rooms.events import Event
from rooms.stage_base import StageBase

__all__ = ["QUALITY_LEVELS", "QUALITY_MIN_INTERVAL_S", "Quality"]

QUALITY_LEVELS = ("excellent", "good", "poor", "lost")
QUALITY_MIN_INTERVAL_S = 5.0


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
        person.quality = level
        person.quality_at = now
        return self._emit([self._updated(person, now)])
