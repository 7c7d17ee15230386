"""Roles and the permission matrix: the only place that decides who may do what."""

from __future__ import annotations

import enum

from rooms.errors import NotAllowed


class Role(enum.StrEnum):
    HOST = "host"
    MODERATOR = "moderator"
    SPEAKER = "speaker"
    AUDIENCE = "audience"


class Permission(enum.StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


_MATRIX: dict[Role, frozenset[Permission]] = {
    Role.HOST: frozenset({Permission.PUBLISH, Permission.SUBSCRIBE}),
    Role.MODERATOR: frozenset({Permission.SUBSCRIBE}),
    Role.SPEAKER: frozenset({Permission.PUBLISH, Permission.SUBSCRIBE}),
    Role.AUDIENCE: frozenset({Permission.SUBSCRIBE}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in _MATRIX[role]


def require(role: Role, permission: Permission) -> None:
    if not allows(role, permission):
        raise NotAllowed(f"role {role} may not {permission}")
