"""What every part of a stage shares: its state, the people on it, and the helpers through which a
command finds who acts, checks and counts their rate, audits a moderator's action and logs the events.

``rooms.stage.Stage`` is this base and one mixin per concern, each in a module named after it
(``speakers.py``, ``moderation.py``, ``talk.py``, ``recording_consent.py``, ``snapshots.py``). The
mixins build on this base, never on each other: what two concerns need (a speaker's media stopping,
a hand going down, taking someone off the stage) lives here.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rooms import audit
from rooms.comments import Chat
from rooms.consent import ConsentBook, Recording, Scope
from rooms.errors import StageEnded, UnknownParticipant
from rooms.events import (
    AuditDetail,
    Event,
    EventLog,
    HandsUpdated,
    InvitationAnswered,
    ParticipantLeft,
    ParticipantUpdated,
    PublishingStopped,
)
from rooms.hands import Hands, Invitations
from rooms.participant import Participant
from rooms.polls import Polls
from rooms.qa import Questions
from rooms.rates import RateClass, RateLimiter
from rooms.reactions import ReactionCounter
from rooms.remembered import RememberedPeople
from rooms.roles import Permission, Role, require
from rooms.roles import is_moderator as role_is_moderator
from rooms.settings import StageSettings
from rooms.text import require_text
from rooms.views import StageView

__all__ = ["DEFAULT_SETTINGS", "StageBase", "StageState"]

DEFAULT_SETTINGS = StageSettings()


class StageState(enum.StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"


@dataclass(init=False, repr=False)
class StageBase:
    """The state of one stage (see ``rooms.stage.Stage``) and the helpers its commands share."""

    id: str
    title: str
    created_at: float
    club_id: str | None
    settings: StageSettings
    state: StageState
    locked: bool
    participants: dict[str, Participant]
    observers: dict[str, Participant]
    banned_identities: set[str]
    remembered: RememberedPeople
    log: EventLog
    hands: Hands
    invitations: Invitations
    chat: Chat
    reactions: ReactionCounter
    questions: Questions
    polls: Polls
    consent: ConsentBook
    recording: Recording
    rates: RateLimiter

    def __init__(
        self,
        id: str,
        title: str,
        created_at: float,
        *,
        settings: StageSettings = DEFAULT_SETTINGS,
        state: StageState = StageState.LIVE,
        max_publishers: int | None = None,
        club_id: str | None = None,
    ) -> None:
        if max_publishers is not None:  # the keyword of issue 2, kept for callers that use it
            settings = replace(settings, max_publishers=max_publishers)
        require_text(title, "the stage's title")
        self.id, self.title, self.created_at = id, title, created_at
        self.settings, self.state, self.locked = settings, state, False
        self.club_id = club_id  # the club the stage belongs to (its members' tokens may open it)
        self.participants = {}
        self.observers = {}
        self.banned_identities = set()
        self.remembered = RememberedPeople()
        self.log = EventLog()
        self.hands = Hands()
        self.invitations = Invitations()
        self.chat = Chat(id, settings)
        self.reactions = ReactionCounter(settings.reaction_window_s)
        self.questions = Questions(
            id, settings.comment_max_chars, settings.question_max_open, settings.question_max_per_person
        )
        self.polls = Polls(id, settings.leaderboard_size)
        self.consent = ConsentBook(id)
        self.recording = Recording()
        self.rates = RateLimiter(settings.rate_rules())

    def __repr__(self) -> str:
        return f"Stage({self.id!r}, {self.state}, {len(self.participants)} participants)"

    @property
    def max_publishers(self) -> int:
        """The media slots every subscriber has (``settings.max_publishers``)."""
        return self.settings.max_publishers

    # --- reading -------------------------------------------------------------------------------

    def _view(self) -> StageView:
        return StageView(id=self.id, title=self.title, state=str(self.state), locked=self.locked)

    @property
    def host(self) -> Participant | None:
        return next((p for p in self.participants.values() if p.role is Role.HOST), None)

    @property
    def publishers(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.publishing]

    def get(self, participant_id: str) -> Participant:
        """A participant or an observer."""
        person = self.participants.get(participant_id) or self.observers.get(participant_id)
        if person is None:
            raise UnknownParticipant(f"no participant {participant_id} on stage {self.id}")
        return person

    def is_moderator(self, participant_id: str) -> bool:
        """Host or moderator, observers included (sees moderator-only events)."""
        person = self.participants.get(participant_id) or self.observers.get(participant_id)
        return person is not None and role_is_moderator(person.role)

    # --- helpers -------------------------------------------------------------------------------

    def _emit(self, events: list[Event]) -> list[Event]:
        return self.log.append(events)

    def _require_not_ended(self) -> None:
        if self.state is StageState.ENDED:
            raise StageEnded(f"stage {self.id} has ended")

    def _actor(self, participant_id: str, permission: Permission | None = None) -> Participant:
        """The person issuing a command on a stage that has not ended, with ``permission``."""
        self._require_not_ended()
        person = self.get(participant_id)
        if permission is not None:
            require(person.role, permission, person.grants)
        return person

    def _moderator(self, actor: str, permission: Permission, now: float) -> Participant:
        """``_actor`` for a moderator command, within the moderators' rate (``_audited`` counts it)."""
        me = self._actor(actor, permission)
        self.rates.check(me.identity, RateClass.MODERATION, now)
        return me

    def check_rate(self, actor: str, kind: RateClass, now: float) -> None:
        """The rate of a command the stage does not carry out itself (``layer.set``: the media side
        does): raises ``RateLimited``; ``spend_rate`` counts it once it was accepted."""
        self.rates.check(self._actor(actor).identity, kind, now)

    def spend_rate(self, actor: str, kind: RateClass, now: float) -> None:
        self.rates.spend(self._actor(actor).identity, kind, now)

    def _spent(self, identity: str, kind: RateClass, now: float, events: list[Event]) -> list[Event]:
        """Count an accepted command against its rate (checked before it ran); returns ``events``."""
        self.rates.spend(identity, kind, now)
        return events

    def _audited(
        self,
        actor: Participant,
        action: str,
        effects: Sequence[Event],
        now: float,
        *,
        target: str | None = None,
        person: Participant | None = None,
        reason: str | None = None,
        **details: AuditDetail,
    ) -> list[Event]:
        """Log ``effects`` after the audit record of the moderator action that caused them, in one
        batch. An action that changed nothing emits nothing and is not recorded."""
        if not effects:
            return []
        self.rates.spend(actor.identity, RateClass.MODERATION, now)
        entry = audit.record(
            self.id, actor, action, now, target=target, person=person, reason=reason, details=details
        )
        return self._emit([entry, *effects])

    def _updated(self, person: Participant, now: float) -> ParticipantUpdated:
        return ParticipantUpdated(stage=self.id, at=now, participant=person.id)

    def _hands_updated(self, now: float) -> HandsUpdated:
        return HandsUpdated(stage=self.id, at=now, hands=self.hands.queue())

    def _lower_hand(self, person: Participant, now: float) -> list[Event]:
        if not person.hand_raised:
            return []
        person.hand_raised = False
        self.hands.lower(person.id)
        return [self._hands_updated(now)]

    def _drop_invitation(self, person: Participant, now: float) -> list[Event]:
        """A pending invitation lapses (the invitee left or changed role); moderators are told."""
        if self.invitations.pop(person.id) is None:
            return []
        return [InvitationAnswered(stage=self.id, at=now, participant_id=person.id, accepted=False)]

    def _stop_media(self, person: Participant, now: float) -> list[Event]:
        """Camera and screen share stop."""
        return [*self._stop_share(person, now), *self._stop_camera(person, now)]

    def _stop_camera(self, person: Participant, now: float) -> list[Event]:
        if not person.publishing:
            return []
        person.publishing = set()
        person.muted = set()
        return [PublishingStopped(stage=self.id, at=now, participant=person.id)]

    def _stop_share(self, person: Participant, now: float) -> list[Event]:
        if not person.sharing:
            return []
        person.sharing = set()
        person.share_muted = set()
        return [PublishingStopped(stage=self.id, at=now, participant=person.id, source="screen")]

    @property
    def sharers(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.sharing]

    def _pairs_in_use(self) -> int:
        """Slot pairs every subscriber gives to publications: one per camera, one per share."""
        return sum(bool(p.publishing) + bool(p.sharing) for p in self.participants.values())

    def _to_audience(self, person: Participant, now: float) -> list[Event]:
        """A speaker (or moderator) becomes audience: media stops at once, moderator mutes lapse."""
        events = self._stop_media(person, now)
        person.role = Role.AUDIENCE
        person.moderator_muted = set()
        person.muted = set()
        return [*events, self._updated(person, now)]

    def _drop(self, person: Participant, now: float) -> list[Event]:
        """Take ``person`` off the stage: media, hand and invitation first, then ``participant.left``."""
        events = [
            *self._stop_media(person, now),
            *self._lower_hand(person, now),
            *self._drop_invitation(person, now),
        ]
        del self.participants[person.id]
        if person.identity != person.id:  # explicit: they may come back (``_remove`` forgets them)
            self.remembered.remember(person.identity, person.role, person.name, person.joined_as)
        return [*events, ParticipantLeft(stage=self.id, at=now, participant=person.id)]

    def _covers_media(self, person: Participant) -> bool:
        return self.consent.covers(person.identity, Scope.MEDIA, self.settings.consent_policy_version)
