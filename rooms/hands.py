"""Raised hands, in the order they went up, and the invitations to speak that are pending."""

from __future__ import annotations

from dataclasses import dataclass, field

from rooms.views import InvitationView


@dataclass(slots=True)
class Hands:
    """The queue of raised hands (participant id -> when it went up; dicts keep insertion order)."""

    raised: dict[str, float] = field(default_factory=dict)

    def __contains__(self, participant_id: str) -> bool:
        return participant_id in self.raised

    def raise_hand(self, participant_id: str, now: float) -> None:
        self.raised.setdefault(participant_id, now)

    def lower(self, participant_id: str) -> None:
        self.raised.pop(participant_id, None)

    def queue(self) -> tuple[str, ...]:
        return tuple(self.raised)


@dataclass(slots=True)
class Invitations:
    """At most one pending invitation per invitee; a newer one replaces it."""

    pending: dict[str, InvitationView] = field(default_factory=dict)

    def get(self, participant_id: str) -> InvitationView | None:
        return self.pending.get(participant_id)

    def add(self, invitation: InvitationView) -> None:
        self.pending[invitation.participant_id] = invitation

    def pop(self, participant_id: str) -> InvitationView | None:
        return self.pending.pop(participant_id, None)
