"""The moderators' audit trail: who did what to whom, why and when.

Every moderator action is logged as a ``moderation.audit`` event (``rooms.events.ModerationAudit``)
in the same batch as its effects, just before them. Being an event of the stage's log, it reaches the
shared log, the other nodes and the recording's timeline like any other; only moderators see it live.
An action that changes nothing (repeating it) emits nothing and is not recorded; a refused one neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from rooms.events import AuditDetail, Event, ModerationAudit

__all__ = ["ACTIONS", "Person", "record", "trail"]

# The wire command types that are moderator actions (``hand.lower`` and ``comment.delete`` only when
# they are about someone else's hand or comment).
ACTIONS = frozenset(
    {
        "stage.start",
        "stage.end",
        "stage.lock",
        "role.set",
        "speaker.invite",
        "speaker.demote",
        "hand.lower",
        "moderation.mute",
        "moderation.stop_share",
        "moderation.remove",
        "moderation.ban",
        "chat.mute",
        "chat.slow_mode",
        "comment.delete",
        "comment.pin",
        "question.answer",
        "question.dismiss",
        "poll.create",
        "poll.open",
        "poll.close",
        "recording.start",
        "recording.stop",
    }
)


class Person(Protocol):
    """Who acts or is acted upon (``rooms.stage.Participant``)."""

    @property
    def id(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def name(self) -> str: ...


def record(
    stage_id: str,
    actor: Person,
    action: str,
    now: float,
    *,
    target: str | None = None,
    person: Person | None = None,
    reason: str | None = None,
    details: Mapping[str, AuditDetail] | None = None,
) -> ModerationAudit:
    """The audit record of ``actor`` doing ``action`` to ``person`` (a participant) or ``target`` (any
    other id: a comment, a question, a poll, a recording session; None: the stage). An empty reason
    is no reason (null)."""
    if action not in ACTIONS:
        raise ValueError(f"{action!r} is not a moderator action")
    return ModerationAudit(
        stage=stage_id,
        at=now,
        actor=actor.id,
        actor_identity=actor.identity,
        actor_name=actor.name,
        action=action,
        target=person.id if person is not None else target,
        target_identity=person.identity if person is not None else None,
        target_name=person.name if person is not None else None,
        reason=reason or None,
        details=dict(details or {}),
    )


def trail(events: Iterable[Event]) -> list[ModerationAudit]:
    """The audit records among ``events`` (a stage's log, a batch), in order."""
    return [e for e in events if isinstance(e, ModerationAudit)]
