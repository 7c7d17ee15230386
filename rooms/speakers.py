"""Who speaks on a stage: roles (``role.set``, ``speaker.demote``), raised hands, invitations to speak,
and publishing media with one's own mutes.

An audience member raises a hand or is invited; accepting makes them a speaker, who may publish up
to the stage's ``max_publishers`` (and, while recording with ``speaking_requires_consent``, only
with consent to record their media). Going back to the audience stops their media at once.
"""

from __future__ import annotations

from rooms.errors import (
    ConsentRequired,
    HandNotRaised,
    InvalidMessage,
    ModeratorMuted,
    NotAllowed,
    NotInvited,
    NotPublishing,
    StageFull,
    StageNotLive,
)
from rooms.events import Event, Invitation, InvitationAnswered, PublishingStarted
from rooms.participant import Participant, check_kind
from rooms.rates import RateClass
from rooms.roles import Permission, Role, require
from rooms.stage_base import StageBase, StageState
from rooms.views import InvitationView

__all__ = ["Speakers"]


class Speakers(StageBase):
    """Roles, hands, invitations and publishing of ``rooms.stage.Stage``."""

    def set_role(self, actor: str, target: str, role: Role, now: float) -> list[Event]:
        """The host makes an audience member moderator, or a moderator or speaker audience again."""
        me = self._moderator(actor, Permission.SET_ROLE, now)
        person = self.get(target)
        if person.observer:
            raise NotAllowed("a console's role comes from its access token")
        if role not in (Role.MODERATOR, Role.AUDIENCE) or person.role is Role.HOST:
            raise NotAllowed("the host may only make someone moderator or audience")
        if person.role is role:
            return []
        if role is Role.AUDIENCE:
            demoted = self._to_audience(person, now)
            return self._audited(me, "role.set", demoted, now, person=person, role=str(role))
        if person.role is not Role.AUDIENCE:
            raise NotAllowed("only an audience member can be made moderator")
        events = [*self._lower_hand(person, now), *self._drop_invitation(person, now)]
        person.role = Role.MODERATOR
        person.chat_muted = False
        events.append(self._updated(person, now))
        return self._audited(me, "role.set", events, now, person=person, role=str(role))

    def move_to_audience(self, actor: str, target: str, now: float) -> list[Event]:
        """``speaker.demote``: the speaker's media stops reaching anyone (``PublishingStopped``)."""
        me = self._moderator(actor, Permission.DEMOTE, now)
        person = self.get(target)
        if person.role is not Role.SPEAKER:
            raise NotAllowed(f"{target} is not a speaker")
        return self._audited(me, "speaker.demote", self._to_audience(person, now), now, person=person)

    def raise_hand(self, actor: str, now: float) -> list[Event]:
        person = self._actor(actor, Permission.RAISE_HAND)
        if person.hand_raised:
            return []
        self.rates.check(person.identity, RateClass.HAND, now)  # lowering is free: see rooms/rates.py
        person.hand_raised = True
        self.hands.raise_hand(person.id, now)
        self.rates.spend(person.identity, RateClass.HAND, now)
        return self._emit([self._hands_updated(now), self._updated(person, now)])

    def lower_hand(self, actor: str, target: str | None, now: float) -> list[Event]:
        """Lower one's own hand, or (moderators) someone else's."""
        me = self._actor(actor)
        person = me
        if target is not None and target != actor:
            require(me.role, Permission.LOWER_HANDS, me.grants)
            self.rates.check(me.identity, RateClass.MODERATION, now)
            person = self.get(target)
        if not person.hand_raised:
            raise HandNotRaised(f"{person.id} has no hand raised")
        events = [*self._lower_hand(person, now), self._updated(person, now)]
        if person is me:
            return self._emit(events)
        return self._audited(me, "hand.lower", events, now, person=person)

    def invite(self, actor: str, target: str, now: float) -> list[Event]:
        """Invite a raised hand or any audience member to speak."""
        me = self._moderator(actor, Permission.INVITE, now)
        person = self.get(target)
        if person.role is not Role.AUDIENCE:
            raise NotAllowed(f"{target} is not in the audience")
        self.invitations.add(InvitationView(participant_id=target, by=me.id, by_name=me.name, at=now))
        invitation = Invitation(stage=self.id, at=now, participant_id=target, by=me.id, by_name=me.name)
        return self._audited(me, "speaker.invite", [invitation], now, person=person)

    def accept_invitation(self, actor: str, now: float) -> list[Event]:
        """The invitee becomes a speaker (and may publish); their hand goes down."""
        person = self._actor(actor)
        if self.invitations.get(actor) is None:
            raise NotInvited("you have no pending invitation")
        require(person.role, Permission.ANSWER_INVITATION, person.grants)
        if self.settings.speaking_requires_consent and not self._covers_media(person):
            raise ConsentRequired("this stage lets people speak only with consent to record their media")
        self.invitations.pop(actor)
        events = self._lower_hand(person, now)
        person.role = Role.SPEAKER
        answered = InvitationAnswered(stage=self.id, at=now, participant_id=actor, accepted=True)
        return self._emit([answered, *events, self._updated(person, now)])

    def decline_invitation(self, actor: str, now: float) -> list[Event]:
        self._actor(actor)
        if self.invitations.pop(actor) is None:
            raise NotInvited("you have no pending invitation")
        return self._emit([InvitationAnswered(stage=self.id, at=now, participant_id=actor, accepted=False)])

    def start_publishing(self, participant_id: str, kinds: tuple[str, ...], now: float) -> list[Event]:
        person = self.get(participant_id)
        self._check_may_publish(person, now)
        if not kinds:
            raise InvalidMessage("publishing needs audio or video")
        for kind in kinds:
            check_kind(kind)
        person.publishing = set(kinds)
        person.muted &= person.publishing
        self.rates.spend(person.identity, RateClass.MEDIA, now)
        return self._emit(
            [PublishingStarted(stage=self.id, at=now, participant=participant_id, kinds=tuple(sorted(kinds)))]
        )

    def check_may_publish(self, participant_id: str, now: float | None = None) -> None:
        """The checks of ``start_publishing`` without the change (before costly media set-up); the
        rate (``media``) only with ``now``."""
        self._check_may_publish(self.get(participant_id), now)

    def _check_may_publish(self, person: Participant, now: float | None, *, camera: bool = True) -> None:
        """``camera`` False: a screen share's checks (its slot is counted by ``rooms/sharing.py``)."""
        self._require_not_ended()
        if person.observer:
            raise NotAllowed("a console does not publish")
        if self.state is not StageState.LIVE:
            raise StageNotLive(f"stage {self.id} has not started")
        require(person.role, Permission.PUBLISH, person.grants)
        if (
            self.settings.speaking_requires_consent
            and self.recording.active
            and not self._covers_media(person)
        ):
            raise ConsentRequired("the stage is recording: publishing needs consent to record your media")
        if camera and not person.publishing and self._pairs_in_use() >= self.max_publishers:
            raise StageFull(f"stage {self.id} already uses its {self.max_publishers} media slots")
        if now is not None:
            self.rates.check(person.identity, RateClass.MEDIA, now)

    def stop_publishing(self, participant_id: str, now: float) -> list[Event]:
        person = self.get(participant_id)
        if not person.publishing:
            raise NotPublishing(f"{participant_id} is not publishing")
        return self._emit(self._stop_camera(person, now))  # a screen share goes on (rooms/sharing.py)

    def set_muted(self, participant_id: str, kind: str, muted: bool, now: float) -> list[Event]:
        """One's own mute; unmuting what a moderator muted is refused. Muting is never limited,
        unmuting is (``media``); either emits nothing when it changes nothing."""
        person = self.get(participant_id)
        self._require_not_ended()
        if kind not in person.publishing:
            raise NotPublishing(f"{participant_id} does not publish {kind}")
        if not muted and kind in person.moderator_muted:
            raise ModeratorMuted(f"a moderator muted your {kind}")
        if muted == (kind in person.muted):
            return []
        if muted:
            person.muted.add(kind)
            return self._emit([self._updated(person, now)])
        self.rates.check(person.identity, RateClass.MEDIA, now)
        person.muted.discard(kind)
        return self._spent(person.identity, RateClass.MEDIA, now, self._emit([self._updated(person, now)]))
