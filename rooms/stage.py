"""A stage: who is present, in which role, what they may do, and what they said, asked and voted.

Pure state. Every command checks its permissions here (through ``rooms.roles``), changes state only
on success, appends the events it caused to the stage's log and returns them numbered; a refused
command raises a ``DomainError`` and leaves the stage unchanged. Chat, questions and polls keep
their own rules in ``comments.py``, ``qa.py`` and ``polls.py``; this class decides who may use them.
"""

from __future__ import annotations

from rooms.consent import SCOPES, ConsentState, Subject
from rooms.errors import Banned, ChatMuted, NotAllowed, StageLocked, StageNotLive
from rooms.events import (
    ConsentRecorded,
    ConsentRequested,
    Event,
    ObserverJoined,
    ObserverLeft,
    ParticipantJoined,
    Reactions,
    RecordingStarted,
    RecordingStopped,
    StageUpdated,
)
from rooms.events import StageEnded as StageEndedEvent
from rooms.moderation import Moderation
from rooms.participant import KINDS, Participant
from rooms.polls import PollSpec
from rooms.qa import QuestionStatus
from rooms.rates import RateClass
from rooms.reactions import normalise
from rooms.roles import Permission, Role, allows
from rooms.roles import is_moderator as role_is_moderator
from rooms.settings import StageSettings
from rooms.snapshots import Snapshots
from rooms.speakers import Speakers
from rooms.stage_base import StageState
from rooms.text import require_text

__all__ = ["KINDS", "Participant", "PollSpec", "Stage", "StageSettings", "StageState"]


class Stage(Snapshots, Speakers, Moderation):
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

    # --- comments and reactions ----------------------------------------------------------------

    def post_comment(self, actor: str, comment_id: str, text: str, now: float) -> list[Event]:
        person = self._actor(actor, Permission.COMMENT)
        self.rates.check(person.identity, RateClass.COMMENT, now)
        posted = self._emit(self.chat.post(person.author(), comment_id, text, now))
        return self._spent(person.identity, RateClass.COMMENT, now, posted)

    def delete_comment(self, actor: str, comment_id: str, now: float) -> list[Event]:
        """By its author (the same identity) or a moderator; gone for everyone, history and pin included."""
        person = self._actor(actor)
        own = self._author_identity(comment_id) == person.identity
        may_delete_any = allows(person.role, Permission.DELETE_COMMENTS, person.grants)
        if not own and may_delete_any:  # one's own deletions are bounded by one's comments
            self.rates.check(person.identity, RateClass.MODERATION, now)
        events = self.chat.delete(person.author(), comment_id, may_delete_any, now)
        if own:
            return self._emit(events)
        return self._audited(person, "comment.delete", events, now, target=comment_id)

    def _author_identity(self, comment_id: str) -> str | None:
        """Whose comment this is (None: no such comment; ``chat.delete`` says so)."""
        comment = self.chat.comments.get(comment_id)
        pinned = self.chat.pinned
        if comment is None and pinned is not None and pinned.view.id == comment_id:
            comment = pinned
        return None if comment is None else comment.identity

    def pin_comment(self, actor: str, comment_id: str | None, now: float) -> list[Event]:
        """Pin a comment, or unpin (``comment_id`` None: the audit record's target is null)."""
        me = self._moderator(actor, Permission.PIN_COMMENTS, now)
        return self._audited(me, "comment.pin", self.chat.pin(comment_id, now), now, target=comment_id)

    def react(self, actor: str, emoji: str, now: float) -> list[Event]:
        """Counted, not sent: ``flush_reactions`` sends the counts once per window."""
        person = self._actor(actor, Permission.REACT)
        emoji = normalise(emoji)
        if person.chat_muted and not role_is_moderator(person.role):
            raise ChatMuted("you are muted in the chat")
        self.rates.check(person.identity, RateClass.REACTION, now)
        self.reactions.add(emoji)
        return self._spent(person.identity, RateClass.REACTION, now, [])

    def flush_reactions(self, now: float) -> list[Event]:
        """One ``reactions`` event with the counts since the last flush, or nothing (no reactions, or
        less than ``reaction_window_s`` since the last one: the counts keep accumulating)."""
        counts = self.reactions.flush(now)
        if not counts:
            return []
        return self._emit([Reactions(stage=self.id, at=now, counts=counts)])

    # --- questions -----------------------------------------------------------------------------

    def ask_question(self, actor: str, question_id: str, text: str, now: float) -> list[Event]:
        person = self._actor(actor, Permission.ASK)
        self.rates.check(person.identity, RateClass.QUESTION, now)
        asked = self._emit(self.questions.ask(person.author(), question_id, text, now))
        return self._spent(person.identity, RateClass.QUESTION, now, asked)

    def upvote_question(self, actor: str, question_id: str, now: float) -> list[Event]:
        person = self._actor(actor, Permission.UPVOTE)
        self.rates.check(person.identity, RateClass.VOTE, now)
        upvoted = self._emit(self.questions.upvote(person.identity, question_id, now))
        return self._spent(person.identity, RateClass.VOTE, now, upvoted)

    def answer_question(self, actor: str, question_id: str, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.ANSWER_QUESTIONS, now)
        events = self.questions.set_status(question_id, QuestionStatus.ANSWERED, now)
        return self._audited(me, "question.answer", events, now, target=question_id)

    def dismiss_question(self, actor: str, question_id: str, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.ANSWER_QUESTIONS, now)
        events = self.questions.set_status(question_id, QuestionStatus.DISMISSED, now)
        return self._audited(me, "question.dismiss", events, now, target=question_id)

    # --- polls ---------------------------------------------------------------------------------

    def create_poll(self, actor: str, poll_id: str, spec: PollSpec, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.MANAGE_POLLS, now)
        events = self.polls.create(poll_id, spec, now)
        return self._audited(me, "poll.create", events, now, target=poll_id, question=spec.question)

    def open_poll(self, actor: str, poll_id: str, now: float) -> list[Event]:
        """Opens a draft; a duration starts counting now."""
        me = self._moderator(actor, Permission.MANAGE_POLLS, now)
        return self._audited(me, "poll.open", self.polls.open(poll_id, now), now, target=poll_id)

    def vote(self, actor: str, poll_id: str, choices: list[int], now: float) -> list[Event]:
        person = self._actor(actor, Permission.VOTE)
        self.rates.check(person.identity, RateClass.VOTE, now)
        voted = self._emit(self.polls.vote(person.identity, person.id, person.name, poll_id, choices, now))
        return self._spent(person.identity, RateClass.VOTE, now, voted)

    def close_poll(self, actor: str, poll_id: str, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.MANAGE_POLLS, now)
        return self._audited(me, "poll.close", self.polls.close(poll_id, now), now, target=poll_id)

    def tick(self, now: float) -> list[Event]:
        """What time alone causes: polls whose duration ran out close."""
        if self.state is StageState.ENDED:
            return []
        return self._emit(self.polls.expire(now))

    # --- consent and recording -----------------------------------------------------------------

    def consent_of(self, participant_id: str) -> ConsentState | None:
        """This person's effective consent (their identity's last record), or None (no decision, or
        not present)."""
        person = self.participants.get(participant_id)
        return None if person is None else self.consent.state(person.identity)

    def covers(self, participant_id: str, scope: str) -> bool:
        """Whether this person's current consent, under the stage's policy, grants ``scope``."""
        if scope not in SCOPES:
            raise ValueError(f"unknown consent scope {scope!r}")
        person = self.participants.get(participant_id)
        return person is not None and self.consent.covers(
            person.identity, scope, self.settings.consent_policy_version
        )

    def give_consent(
        self,
        actor: str,
        scopes: frozenset[str],
        policy_version: str,
        method: str,
        now: float,
        record_id: str,
    ) -> list[Event]:
        """Record the actor's own decision (no scope: declined). A record is always about the actor."""
        person = self._actor(actor)
        self.rates.check(person.identity, RateClass.CONSENT, now)
        record = self.consent.give(
            Subject(person.id, person.identity, person.name),
            scopes,
            policy_version,
            method,
            current_policy=self.settings.consent_policy_version,
            session_id=self.recording.session_id,
            record_id=record_id,
            now=now,
        )
        recorded = self._emit([ConsentRecorded(stage=self.id, at=now, record=record)])
        return self._spent(person.identity, RateClass.CONSENT, now, recorded)

    def withdraw_consent(self, actor: str, now: float, record_id: str) -> list[Event]:
        """Take back every scope the actor granted (``no_consent`` when there is none)."""
        person = self._actor(actor)
        record = self.consent.withdraw(
            Subject(person.id, person.identity, person.name),
            current_policy=self.settings.consent_policy_version,
            session_id=self.recording.session_id,
            record_id=record_id,
            now=now,
        )
        return self._emit([ConsentRecorded(stage=self.id, at=now, record=record)])

    @property
    def recording_due(self) -> bool:
        """``recording_mode == "auto"``, the stage is live and has never recorded: the shell should call
        ``start_auto_recording`` with a fresh session id (after creating or starting the stage)."""
        return (
            self.settings.recording_mode == "auto"
            and self.state is StageState.LIVE
            and not self.recording.sessions
        )

    def start_recording(self, actor: str, session_id: str, now: float) -> list[Event]:
        """The host or a moderator starts a recording session (``session_id`` comes from the shell)."""
        me = self._moderator(actor, Permission.RECORD, now)
        events = self._start_recording(session_id, me.id, now)
        return self._audited(me, "recording.start", events, now, target=session_id)

    def start_auto_recording(self, session_id: str, now: float) -> list[Event]:
        """The stage starts recording by itself (``recording_mode == "auto"``); ``by`` is null."""
        self._require_not_ended()
        if self.settings.recording_mode != "auto":
            raise NotAllowed(f"stage {self.id} does not record by itself")
        if self.recording.sessions and not self.recording.active:
            raise NotAllowed(f"stage {self.id} has recorded already: only a moderator restarts it")
        return self._emit(self._start_recording(session_id, None, now))

    def _start_recording(self, session_id: str, by: str | None, now: float) -> list[Event]:
        """Start, and ask everyone present who has not decided under the current policy."""
        if self.settings.recording_mode == "off":
            raise NotAllowed(f"recording is off on stage {self.id}")
        if self.state is not StageState.LIVE:
            raise StageNotLive(f"stage {self.id} has not started")
        self.recording.start(session_id)
        policy = self.settings.consent_policy_version
        asks = [
            ConsentRequested(
                stage=self.id, at=now, participant_id=p.id, policy_version=policy, session_id=session_id
            )
            for p in self.participants.values()
            if not self.consent.decided(p.identity, policy)
        ]
        return [RecordingStarted(stage=self.id, at=now, session_id=session_id, by=by), *asks]

    def stop_recording(self, actor: str, now: float) -> list[Event]:
        """The host or a moderator ends the recording session."""
        me = self._moderator(actor, Permission.RECORD, now)
        if self.settings.recording_mode == "off":
            raise NotAllowed(f"recording is off on stage {self.id}")
        session_id = self.recording.stop()
        stopped = RecordingStopped(stage=self.id, at=now, session_id=session_id, by=me.id)
        return self._audited(me, "recording.stop", [stopped], now, target=session_id)

    def recording_failed(self, session_id: str, reason: str, now: float) -> list[Event]:
        """The recorder had to stop by itself (a full disk...): the stage stops recording and everyone
        is told (``by`` null, ``reason``). Nothing happens if that session is not the one running."""
        if self.recording.session_id != session_id:
            return []
        self.recording.stop()
        stopped = RecordingStopped(stage=self.id, at=now, session_id=session_id, by=None, reason=reason)
        return self._emit([stopped])
