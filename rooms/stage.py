"""A stage: who is present, in which role, what they may do, and what they said, asked and voted.

Pure state. Every command checks its permissions here (through ``rooms.roles``), changes state only
on success, appends the events it caused to the stage's log and returns them numbered; a refused
command raises a ``DomainError`` and leaves the stage unchanged. Chat, questions and polls keep
their own rules in ``comments.py``, ``qa.py`` and ``polls.py``; this class decides who may use them.

``Stage`` is composed by concern, one module each, on the shared state and helpers of
``stage_base.py``: ``snapshots.py`` (what a person sees, history pages), ``speakers.py`` (roles,
hands, invitations, publishing), ``sharing.py`` (screen shares), ``moderation.py``, ``talk.py``
(comments, reactions, questions, polls) and ``recording_consent.py``. This module keeps who comes
and goes and the stage's life.
"""

from __future__ import annotations

from rooms.errors import Banned, InvalidMessage, NotAllowed, StageLocked
from rooms.events import (
    Event,
    ObserverJoined,
    ObserverLeft,
    ParticipantJoined,
    RecordingStopped,
    StageUpdated,
)
from rooms.events import StageEnded as StageEndedEvent
from rooms.moderation import Moderation
from rooms.participant import KINDS, Participant
from rooms.polls import PollSpec
from rooms.quality import Quality
from rooms.rates import RateClass
from rooms.recording_consent import RecordingConsent
from rooms.roles import Permission, Role
from rooms.roles import is_moderator as role_is_moderator
from rooms.settings import StageSettings
from rooms.sharing import Sharing
from rooms.snapshots import Snapshots
from rooms.stage_base import StageState
from rooms.talk import Talk
from rooms.text import require_text

__all__ = ["KINDS", "Participant", "PollSpec", "Stage", "StageSettings", "StageState"]


MAX_NAME = 64  # a display name, as a join's (server/wire.py DisplayName)


class Stage(Snapshots, Sharing, Moderation, Talk, RecordingConsent, Quality):
    """One live talk: participants and their roles, hands, invitations, moderation, chat, questions,
    polls, consent and recording, and the ordered log of everything that happened.

    It remembers, by identity, the role and name of people who left (not removed or banned) and, when
    restored on another node (``rooms/durable.py``), of everyone who was present: an identity it
    remembers gets that role back on joining instead of the requested one, unless it was host and the
    stage has another host now. Only explicit identities are remembered (``rooms/remembered.py``).

    Observers (moderator consoles) are kept apart, in ``observers``: they act with their role's
    permissions and see what moderators see, but they are not on the stage: not in ``participants``
    (nor its counts, lists, consent or recordings), never publish, and only moderators hear of them
    (``observer.joined``/``observer.left``). Every moderator action is audited (``rooms/audit.py``).
    """

    # --- joining and leaving -------------------------------------------------------------------

    def join(
        self,
        participant_id: str,
        name: str,
        role: Role,
        now: float,
        identity: str | None = None,
        grants: frozenset[str] | None = None,
        observer: bool = False,
    ) -> list[Event]:
        """Join as ``role``; with ``observer``, as a moderator console (see the class)."""
        self._require_not_ended()
        identity = identity or participant_id
        require_text(name, "the name")
        require_text(identity, "the identity")
        if identity in self.banned_identities:
            raise Banned(f"this identity is banned from stage {self.id}")
        if participant_id in self.participants or participant_id in self.observers:
            raise NotAllowed(f"{participant_id} is already on stage {self.id}")
        self.rates.check(identity, RateClass.JOIN, now)
        if observer:
            joined = self._join_observer(participant_id, name, role, now, identity, grants)
            return self._spent(identity, RateClass.JOIN, now, joined)
        if self.locked:
            raise StageLocked(f"stage {self.id} is locked")
        # Someone coming back with the same role in their token gets the role they had on the stage
        # (a promoted speaker speaks again, a demoted person stays demoted); a token with another role
        # is the platform's new decision and wins.
        joined_as = role
        role = self.remembered.role_for(identity, role, host_present=self.host is not None)
        if role is Role.HOST and self.host is not None:
            raise NotAllowed(f"stage {self.id} already has a host")
        # Present again, their current role is the truth: a second tab must not get a stale one.
        self.remembered.forget(identity)
        self.participants[participant_id] = Participant(
            participant_id, name, role, now, identity=identity, grants=grants, joined_as=joined_as
        )
        self.rates.spend(identity, RateClass.JOIN, now)
        return self._emit([ParticipantJoined(stage=self.id, at=now, participant=participant_id)])

    def _join_observer(
        self, pid: str, name: str, role: Role, now: float, identity: str, grants: frozenset[str] | None
    ) -> list[Event]:
        """A console: the host's or a moderator's, admitted to a locked stage too (it is not on the
        stage), beside a present host (its role comes from its token, not from the stage)."""
        if not role_is_moderator(role):
            raise NotAllowed("only the host or a moderator may watch a stage from a console")
        person = Participant(pid, name, role, now, identity=identity, grants=grants, observer=True)
        self.observers[pid] = person
        joined = ObserverJoined(stage=self.id, at=now, participant_id=pid, name=name, role=str(role))
        return self._emit([joined])

    def leave(self, participant_id: str, now: float) -> list[Event]:
        """Leaving always succeeds (an unknown participant causes nothing)."""
        if self.observers.pop(participant_id, None) is not None:
            return self._emit([ObserverLeft(stage=self.id, at=now, participant_id=participant_id)])
        person = self.participants.get(participant_id)
        if person is None:
            return []
        return self._emit(self._drop(person, now))

    def rename(self, identity: str, name: str, now: float) -> list[Event]:
        """A correction of a person's display name (their data rights, not a moderator's action):
        each of their connections here shows it from now on (``participant.updated``), a console too."""
        require_text(name, "the name")
        if not 0 < len(name) <= MAX_NAME or not name.strip():
            raise InvalidMessage(f"a name is 1-{MAX_NAME} characters, not only spaces")
        events: list[Event] = []
        for person in self.participants.values():
            if person.identity == identity and person.name != name:
                person.name = name
                events.append(self._updated(person, now))
        for person in self.observers.values():
            if person.identity == identity:
                person.name = name
        return self._emit(events)

    # --- the stage's life ----------------------------------------------------------------------

    def start(self, actor: str, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.START_STAGE, now)
        if self.state is not StageState.SCHEDULED:
            raise NotAllowed(f"stage {self.id} is already {self.state}")
        self.state = StageState.LIVE
        return self._audited(me, "stage.start", [StageUpdated(stage=self.id, at=now, info=self._view())], now)

    def lock(self, actor: str, locked: bool, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.LOCK_STAGE, now)
        self.locked = locked
        updated = StageUpdated(stage=self.id, at=now, info=self._view())
        return self._audited(me, "stage.lock", [updated], now, locked=locked)

    def end(self, actor: str | None, now: float) -> list[Event]:
        """Final: open polls close (results go out), media stops, then ``stage.ended``.
        ``actor`` None: the platform ends it (its API checked the caller; no audit record)."""
        me = None
        if actor is None:
            self._require_not_ended()
        else:
            me = self._moderator(actor, Permission.END_STAGE, now)
        events = self.polls.close_all(now)
        for person in self.participants.values():
            events += self._stop_media(person, now)
        if self.recording.active:
            events.append(RecordingStopped(stage=self.id, at=now, session_id=self.recording.stop(), by=actor))
        self.reactions.clear()
        self.state = StageState.ENDED
        events.append(StageEndedEvent(stage=self.id, at=now))
        # The record comes first: once ``stage.ended`` is delivered, sockets close.
        return self._emit(events) if me is None else self._audited(me, "stage.end", events, now)
