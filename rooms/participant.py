"""A person on a stage, or watching it from a moderator console: their role, what they publish (camera
and screen share), their mutes, their hand, and how they appear in the protocol's participant object."""

from __future__ import annotations

from dataclasses import dataclass, field

from rooms.comments import Author
from rooms.errors import InvalidMessage
from rooms.roles import Role
from rooms.roles import is_moderator as role_is_moderator

__all__ = ["KINDS", "Participant", "check_kind"]

KINDS = ("audio", "video")


@dataclass(slots=True)
class Participant:
    id: str
    name: str
    role: Role
    joined_at: float
    publishing: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)  # by the participant (publish.mute)
    identity: str = ""  # who this is across connections (bans apply to it); defaults to ``id``
    moderator_muted: set[str] = field(default_factory=set)  # by a moderator: only one may lift it
    chat_muted: bool = False
    hand_raised: bool = False
    grants: frozenset[str] | None = None  # from the access token; None: all the role allows
    joined_as: Role | None = None  # the role asked for at join (the token's), before any promotion
    observer: bool = False  # a moderator console: watches and moderates, is not on the stage
    sharing: set[str] = field(default_factory=set)  # the kinds of their screen share (rooms/sharing.py)
    share_muted: set[str] = field(default_factory=set)  # of the share, by the participant
    quality: str | None = None  # measured by the node (rooms/quality.py); None until measured
    quality_at: float | None = None  # when it last changed

    def __post_init__(self) -> None:
        self.identity = self.identity or self.id

    def snapshot(self) -> dict[str, object]:
        """The participant object of docs/protocol.md ("Participants"); an observer's (which only
        moderators see) says ``"observer": true``."""
        extra: dict[str, object] = {"observer": True} if self.observer else {}
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "publishing": {k: k in self.publishing for k in KINDS},
            "muted": {k: k in self.muted for k in KINDS},
            "moderator_muted": {k: k in self.moderator_muted for k in KINDS},
            "sharing": {k: k in self.sharing for k in KINDS},
            "share_muted": {k: k in self.share_muted for k in KINDS},
            "chat_muted": self.chat_muted,
            "hand_raised": self.hand_raised,
            "quality": self.quality,
            **extra,
        }

    def author(self) -> Author:
        return Author(self.id, self.name, self.identity, role_is_moderator(self.role), self.chat_muted)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidMessage(f"kind is one of {', '.join(KINDS)}")
