"""Typed domain errors: a stable ``code`` for programs, a ``message`` for people."""

from __future__ import annotations


class DomainError(Exception):
    """A refused command. The wire maps ``code`` to an error frame."""

    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAllowed(DomainError):
    code = "not_allowed"


class StageNotFound(DomainError):
    code = "stage_not_found"


class StageExists(DomainError):
    code = "stage_exists"


class StageEnded(DomainError):
    code = "stage_ended"


class StageFull(DomainError):
    code = "stage_full"


class NotPublishing(DomainError):
    code = "not_publishing"


class UnknownParticipant(DomainError):
    code = "unknown_participant"
