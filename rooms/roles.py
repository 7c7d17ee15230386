"""Roles and the permission matrix: the only place that decides who may do what.

The matrix is the table in docs/protocol.md ("Stages, roles and permissions").
"""

from __future__ import annotations

import enum

from rooms.errors import NotAllowed


class Role(enum.StrEnum):
    HOST = "host"
    MODERATOR = "moderator"
    SPEAKER = "speaker"
    AUDIENCE = "audience"


class Permission(enum.StrEnum):
    """One thing a role may do; the value reads in a sentence ("role audience may not <value>")."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    START_STAGE = "start the stage"
    END_STAGE = "end the stage"
    SET_ROLE = "set roles"
    LOCK_STAGE = "lock the stage"
    INVITE = "invite speakers"
    DEMOTE = "move speakers to the audience"
    LOWER_HANDS = "lower someone else's hand"
    MODERATE = "moderate participants"
    DELETE_COMMENTS = "delete someone else's comment"
    PIN_COMMENTS = "pin comments"
    SLOW_MODE = "set slow mode"
    ANSWER_QUESTIONS = "answer or dismiss questions"
    MANAGE_POLLS = "create, open or close polls"
    RECORD = "record"
    RAISE_HAND = "raise a hand"
    ANSWER_INVITATION = "answer an invitation"
    COMMENT = "comment"
    REACT = "react"
    ASK = "ask questions"
    UPVOTE = "upvote questions"
    VOTE = "vote"


_EVERYONE = frozenset(
    {
        Permission.SUBSCRIBE,
        Permission.COMMENT,
        Permission.REACT,
        Permission.ASK,
        Permission.UPVOTE,
        Permission.VOTE,
    }
)
_MODERATION = frozenset(
    {
        Permission.LOCK_STAGE,
        Permission.INVITE,
        Permission.DEMOTE,
        Permission.LOWER_HANDS,
        Permission.MODERATE,
        Permission.DELETE_COMMENTS,
        Permission.PIN_COMMENTS,
        Permission.SLOW_MODE,
        Permission.ANSWER_QUESTIONS,
        Permission.MANAGE_POLLS,
        Permission.RECORD,
    }
)

_HOST_ONLY = frozenset({Permission.START_STAGE, Permission.END_STAGE, Permission.SET_ROLE})

_MATRIX: dict[Role, frozenset[Permission]] = {
    Role.HOST: _EVERYONE | _MODERATION | _HOST_ONLY | {Permission.PUBLISH},
    Role.MODERATOR: _EVERYONE | _MODERATION,
    Role.SPEAKER: _EVERYONE | {Permission.PUBLISH},
    Role.AUDIENCE: _EVERYONE | {Permission.RAISE_HAND, Permission.ANSWER_INVITATION},
}

MODERATOR_ROLES = frozenset({Role.HOST, Role.MODERATOR})

# An access token's grants narrow what its role allows (server/auth.py): each permission needs one.
GRANT_OF: dict[Permission, str] = {
    **{p: "comment" for p in (Permission.COMMENT, Permission.REACT, Permission.ASK, Permission.UPVOTE)},
    Permission.VOTE: "comment",
    Permission.SUBSCRIBE: "subscribe",
    Permission.PUBLISH: "publish",
    Permission.RAISE_HAND: "publish",  # asking to speak
    Permission.ANSWER_INVITATION: "publish",
    **{p: "moderate" for p in _MODERATION | _HOST_ONLY},
    Permission.RECORD: "record",
}


def allows(role: Role, permission: Permission, grants: frozenset[str] | None = None) -> bool:
    """``grants`` None: everything the role allows (no token, e.g. tests of the domain)."""
    return permission in _MATRIX[role] and (grants is None or GRANT_OF[permission] in grants)


def require(role: Role, permission: Permission, grants: frozenset[str] | None = None) -> None:
    if permission not in _MATRIX[role]:
        raise NotAllowed(f"role {role} may not {permission}")
    if grants is not None and GRANT_OF[permission] not in grants:
        raise NotAllowed(f"your access token has no {GRANT_OF[permission]!r} grant: you may not {permission}")


def is_moderator(role: Role) -> bool:
    """Host or moderator: sees moderator-only events, is exempt from chat mutes and slow mode, and
    may not be removed, banned or muted by a moderator."""
    return role in MODERATOR_ROLES
