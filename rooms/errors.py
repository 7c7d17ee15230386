"""Typed domain errors: a stable ``code`` for programs, a ``message`` for people.

Each code is listed in docs/protocol.md ("error"); the wire turns a ``DomainError`` into an error frame.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refused command. The wire maps ``code`` to an error frame; the stage is unchanged."""

    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAllowed(DomainError):
    """The role may not do that, or the target is not one it may be done to."""

    code = "not_allowed"


class NotFound(DomainError):
    """No such participant, comment, question or poll."""

    code = "not_found"


class UnknownParticipant(NotFound):
    """No such participant on this stage."""


class InvalidMessage(DomainError):
    """A value the domain refuses (text length, option count, duplicate id...)."""

    code = "invalid_message"


class BadText(InvalidMessage):
    """Text that is not valid Unicode (a lone UTF-16 surrogate): it could not be encoded as UTF-8
    (``rooms/text.py``)."""

    code = "bad_text"


class StageNotFound(DomainError):
    code = "stage_not_found"


class StageExists(DomainError):
    code = "stage_exists"


class StageEnded(DomainError):
    code = "stage_ended"


class StageLocked(DomainError):
    code = "stage_locked"


class StageNotLive(DomainError):
    code = "stage_not_live"


class StageFull(DomainError):
    code = "stage_full"


class NotPublishing(DomainError):
    code = "not_publishing"


class ShareBusy(DomainError):
    """The stage already has ``max_screen_shares`` screen shares (rooms/sharing.py)."""

    code = "share_busy"


class Banned(DomainError):
    code = "banned"


class NotInvited(DomainError):
    code = "not_invited"


class HandNotRaised(DomainError):
    code = "hand_not_raised"


class AlreadyVoted(DomainError):
    code = "already_voted"


class PollClosed(DomainError):
    """The poll is not open (voting or closing), or is closed (opening)."""

    code = "poll_closed"


class InvalidChoice(DomainError):
    code = "invalid_choice"


class ChatMuted(DomainError):
    code = "chat_muted"


class ModeratorMuted(DomainError):
    code = "moderator_muted"


class _RetryLater(DomainError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SlowMode(_RetryLater):
    """Too soon after this person's last comment; ``retry_after`` seconds until the next may go."""

    code = "slow_mode"


class RateLimited(_RetryLater):
    """Over one person's rate for this class of command (``rooms/rates.py``); ``retry_after`` seconds
    until the window has room."""

    code = "rate_limited"


class TooManyQuestions(DomainError):
    """The stage has as many open questions as it takes, or the asker as many as one person may have."""

    code = "too_many_questions"


# --- consent and recording (issue 4) -------------------------------------------------------------


class ConsentRequired(DomainError):
    """The stage requires consent to record one's media for this (accepting an invitation, publishing
    while recording)."""

    code = "consent_required"


class PolicyMismatch(DomainError):
    """The decision was given under another consent policy version than the stage's current one."""

    code = "policy_mismatch"


class NoConsent(DomainError):
    """A withdrawal without any granted scope to withdraw."""

    code = "no_consent"


class AlreadyRecording(DomainError):
    code = "already_recording"


class NotRecording(DomainError):
    code = "not_recording"


# --- several nodes (issue 5) ---------------------------------------------------------------------


class InvalidDurableState(DomainError):
    """A stage's saved state (``rooms/durable.py``) that this node cannot read: corrupt, or written in
    a format version it does not know. The stage cannot be taken over from it."""

    code = "invalid_durable_state"
