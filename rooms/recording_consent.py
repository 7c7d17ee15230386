"""Consent and recording on a stage: each person's own consent decisions, and recording sessions
started by a moderator or by the stage itself (``recording_mode == "auto"``), stopped by a moderator
or by the recorder's failure. ``consent.py`` keeps the records; starting asks everyone present who
has not decided under the current policy.
"""

from __future__ import annotations

from rooms.consent import SCOPES, ConsentState, Subject
from rooms.errors import NotAllowed, StageNotLive
from rooms.events import ConsentRecorded, ConsentRequested, Event, RecordingStarted, RecordingStopped
from rooms.rates import RateClass
from rooms.roles import Permission
from rooms.stage_base import StageBase, StageState

__all__ = ["RecordingConsent"]


class RecordingConsent(StageBase):
    """Consent and recording of ``rooms.stage.Stage``."""

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
