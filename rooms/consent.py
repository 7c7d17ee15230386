"""Consent to recording, and whether the stage is recording.

A decision is a set of granted scopes under a policy version, given one way (``Method``). Consent is
per identity, like ballots: a reconnect keeps it. Every decision, change and withdrawal becomes a
``ConsentRecord``, always about the person who made it; the recorder appends those records to the
session's ledger (``recording/ledger.py``), and a person's effective consent is their last record.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import msgspec

from rooms.errors import AlreadyRecording, InvalidMessage, NoConsent, NotRecording, PolicyMismatch
from rooms.views import ConsentSummary, ConsentView

__all__ = [
    "SCOPES",
    "ConsentBook",
    "ConsentRecord",
    "ConsentState",
    "Decision",
    "Method",
    "Recording",
    "Scope",
    "Subject",
]


class Scope(enum.StrEnum):
    """What a person may allow: the value is the wire name."""

    MEDIA = "media"  # record my camera and microphone
    COMMENTS = "comments"  # record my comments, questions and votes
    SHARE = "share"  # share the recording with attendees


SCOPES = frozenset(Scope)


class Decision(enum.StrEnum):
    GRANTED = "granted"  # at least one scope, and not a change of a different earlier grant
    DECLINED = "declined"  # no scope
    CHANGED = "changed"  # a grant that replaces a different grant under the same policy
    WITHDRAWN = "withdrawn"  # ``consent.withdraw``: every scope taken back


class Method(enum.StrEnum):
    """How a decision was given (the client says which dialog it showed)."""

    JOIN_PROMPT = "join_prompt"
    RECORDING_PROMPT = "recording_prompt"
    SETTINGS = "settings"
    WITHDRAWAL = "withdrawal"  # only ``consent.withdraw`` records with it
    INVITATION = "invitation"


class ConsentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One decision, change or withdrawal, as the ledger stores it and ``consent.recorded`` carries it."""

    record_id: str
    stage_id: str
    session_id: str | None  # the recording session running when it was made, if any
    participant_id: str
    identity: str
    name: str
    scopes: tuple[str, ...]  # granted scopes, sorted
    policy_version: str
    decision: str  # a Decision
    at: float
    method: str  # a Method


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A person's effective consent: what their last record (``record``) says."""

    scopes: frozenset[str]
    policy_version: str
    decision: str
    at: float
    method: str
    record: ConsentRecord  # the last record about this person (a new session's ledger starts with it)

    @classmethod
    def of(cls, record: ConsentRecord) -> ConsentState:
        return cls(
            scopes=frozenset(record.scopes),
            policy_version=record.policy_version,
            decision=record.decision,
            at=record.at,
            method=record.method,
            record=record,
        )

    @property
    def record_id(self) -> str:
        return self.record.record_id

    def covers(self, scope: str, policy_version: str) -> bool:
        """Granted under ``policy_version`` (the stage's current one)."""
        return self.policy_version == policy_version and scope in self.scopes


@dataclass(frozen=True, slots=True)
class Subject:
    """The person a record is about: always the one who issued the command."""

    participant_id: str
    identity: str
    name: str


@dataclass(slots=True)
class ConsentBook:
    """Every identity's last record; the full history is in the stage's event log."""

    stage_id: str
    last: dict[str, ConsentRecord] = field(default_factory=dict)  # identity -> latest record
    record_ids: set[str] = field(default_factory=set)  # ids the shell may not reuse

    def state(self, identity: str) -> ConsentState | None:
        record = self.last.get(identity)
        return None if record is None else ConsentState.of(record)

    def decided(self, identity: str, policy_version: str) -> bool:
        """Whether this person has made any decision (even a withdrawal) under ``policy_version``."""
        record = self.last.get(identity)
        return record is not None and record.policy_version == policy_version

    def covers(self, identity: str, scope: str, policy_version: str) -> bool:
        state = self.state(identity)
        return state is not None and state.covers(scope, policy_version)

    def give(
        self,
        who: Subject,
        scopes: frozenset[str],
        policy_version: str,
        method: str,
        *,
        current_policy: str,
        session_id: str | None,
        record_id: str,
        now: float,
    ) -> ConsentRecord:
        """Record a decision; ``scopes`` may be empty (declined). Raises before changing anything."""
        try:
            how = Method(method)
        except ValueError:
            raise InvalidMessage(f"method is one of {_names(Method)}") from None
        if how is Method.WITHDRAWAL:
            raise InvalidMessage("a withdrawal is consent.withdraw, not a decision")
        unknown = scopes - SCOPES
        if unknown:
            raise InvalidMessage(f"unknown scope {sorted(unknown)[0]!r}: scopes are {_names(Scope)}")
        if policy_version != current_policy:
            raise PolicyMismatch(f"the consent policy is {current_policy}, not {policy_version}")
        previous = self.last.get(who.identity)
        if not scopes:
            decision = Decision.DECLINED
        elif (
            previous is not None
            and previous.policy_version == policy_version
            and previous.scopes
            and frozenset(previous.scopes) != scopes
        ):
            decision = Decision.CHANGED
        else:
            decision = Decision.GRANTED
        return self._add(who, scopes, policy_version, decision, how, session_id, record_id, now)

    def withdraw(
        self, who: Subject, *, current_policy: str, session_id: str | None, record_id: str, now: float
    ) -> ConsentRecord:
        """Take back every scope; refused when nothing is granted under the current policy."""
        state = self.state(who.identity)
        if state is None or state.policy_version != current_policy or not state.scopes:
            raise NoConsent("you have not consented to anything to withdraw")
        decision, method = Decision.WITHDRAWN, Method.WITHDRAWAL
        return self._add(who, frozenset(), current_policy, decision, method, session_id, record_id, now)

    def mine(self, identity: str, policy_version: str) -> ConsentView | None:
        """This person's decision under ``policy_version``, as their snapshot shows it."""
        record = self.last.get(identity)
        if record is None or record.policy_version != policy_version:
            return None
        return ConsentView(scopes=record.scopes, decision=record.decision, at=record.at)

    def summary(self, identities: set[str], policy_version: str) -> ConsentSummary:
        """How many of these people granted something, declined (or withdrew), or have not decided."""
        granted = declined = 0
        for identity in identities:
            record = self.last.get(identity)
            if record is None or record.policy_version != policy_version:
                continue
            if record.scopes:
                granted += 1
            else:
                declined += 1
        return ConsentSummary(granted=granted, declined=declined, none=len(identities) - granted - declined)

    def _add(
        self,
        who: Subject,
        scopes: frozenset[str],
        policy_version: str,
        decision: Decision,
        method: Method,
        session_id: str | None,
        record_id: str,
        now: float,
    ) -> ConsentRecord:
        if not record_id or record_id in self.record_ids:
            raise InvalidMessage(f"record id {record_id!r} is empty or already used")
        record = ConsentRecord(
            record_id=record_id,
            stage_id=self.stage_id,
            session_id=session_id,
            participant_id=who.participant_id,
            identity=who.identity,
            name=who.name,
            scopes=tuple(sorted(str(s) for s in scopes)),
            policy_version=policy_version,
            decision=str(decision),
            at=now,
            method=str(method),
        )
        self.record_ids.add(record_id)
        self.last[who.identity] = record
        return record


SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it names the session's directory


@dataclass(slots=True)
class Recording:
    """Whether the stage is recording now, and every session it has recorded (ids are never reused)."""

    session_id: str | None = None
    sessions: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.session_id is not None

    def start(self, session_id: str) -> None:
        if self.session_id is not None:
            raise AlreadyRecording(f"already recording (session {self.session_id})")
        if not SESSION_ID.fullmatch(session_id):
            raise InvalidMessage("a session id is 1-64 characters [A-Za-z0-9_-]")
        if session_id in self.sessions:
            raise InvalidMessage(f"session id {session_id} was already used on this stage")
        self.session_id = session_id
        self.sessions.append(session_id)

    def stop(self) -> str:
        """End the session; returns its id."""
        if self.session_id is None:
            raise NotRecording("the stage is not recording")
        session_id, self.session_id = self.session_id, None
        return session_id


def _names(values: type[enum.StrEnum]) -> str:
    return ", ".join(str(v) for v in values)
