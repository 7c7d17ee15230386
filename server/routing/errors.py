"""What routing refuses with: the stage cannot be reached right now (its host died and its lease
has not run out yet, or the shared store is unreachable). The wire turns it into ``stage_unavailable``
with ``retry_after``."""

from __future__ import annotations

from rooms.errors import DomainError


class StageUnavailable(DomainError):
    """The stage's host is gone and its lease has not expired yet, or the backend is unreachable."""

    code = "stage_unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
