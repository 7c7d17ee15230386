"""Moderation on a stage: a moderator's mute of a speaker's media, removing and banning people,
chat mutes and slow mode. Every action is audited (``rooms/audit.py``) and counted against the
moderators' rate. The host and moderators cannot be removed, banned or muted in the chat.
"""

from __future__ import annotations

from rooms.errors import NotAllowed
from rooms.events import ChatUpdated, Event, ParticipantRemoved
from rooms.participant import check_kind
from rooms.roles import Permission, Role
from rooms.roles import is_moderator as role_is_moderator
from rooms.stage_base import StageBase
from rooms.text import require_text

__all__ = ["Moderation"]


class Moderation(StageBase):
    """The moderators' commands of ``rooms.stage.Stage``."""

    def moderator_mute(self, actor: str, target: str, kind: str, muted: bool, now: float) -> list[Event]:
        """Server-side mute of a speaker's kind; the speaker cannot lift it, a moderator can. It holds
        across republishing and lapses when the speaker goes back to the audience."""
        check_kind(kind)
        me = self._moderator(actor, Permission.MODERATE, now)
        person = self.get(target)
        if person.role is not Role.SPEAKER:
            raise NotAllowed(f"{target} is not a speaker")
        if muted:
            person.moderator_muted.add(kind)
        else:
            person.moderator_muted.discard(kind)
        updated = [self._updated(person, now)]
        return self._audited(me, "moderation.mute", updated, now, person=person, kind=kind, muted=muted)

    def remove(self, actor: str, target: str, reason: str, now: float) -> list[Event]:
        """Disconnect someone; they may rejoin."""
        return self._remove(actor, target, reason, False, now)

    def ban(self, actor: str, target: str, reason: str, now: float) -> list[Event]:
        """Disconnect someone and refuse their identity for the stage's lifetime (every connection of
        that identity goes)."""
        return self._remove(actor, target, reason, True, now)

    def _remove(self, actor: str, target: str, reason: str, banned: bool, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.MODERATE, now)
        require_text(reason, "the reason")
        person = self.get(target)
        victims = [person]
        if banned:
            others = self.participants.values()
            victims += [p for p in others if p.identity == person.identity and p is not person]
        if any(role_is_moderator(p.role) for p in victims):
            raise NotAllowed("the host and moderators may not be removed (make them audience first)")
        if banned:
            self.banned_identities.add(person.identity)
        events: list[Event] = []
        for victim in victims:
            events.append(
                ParticipantRemoved(
                    stage=self.id, at=now, participant_id=victim.id, banned=banned, reason=reason, by=actor
                )
            )
            events += self._drop(victim, now)
        self.remembered.forget(person.identity)  # removed or banned: a rejoin starts afresh
        action = "moderation.ban" if banned else "moderation.remove"
        return self._audited(me, action, events, now, person=person, reason=reason)

    def chat_mute(self, actor: str, target: str, muted: bool, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.MODERATE, now)
        person = self.get(target)
        if role_is_moderator(person.role):
            raise NotAllowed("the host and moderators are not subject to chat mutes")
        person.chat_muted = muted
        return self._audited(me, "chat.mute", [self._updated(person, now)], now, person=person, muted=muted)

    def set_slow_mode(self, actor: str, seconds: int, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.SLOW_MODE, now)
        self.chat.set_slow_mode(seconds)
        updated = ChatUpdated(stage=self.id, at=now, slow_mode_s=seconds)
        return self._audited(me, "chat.slow_mode", [updated], now, seconds=seconds)
