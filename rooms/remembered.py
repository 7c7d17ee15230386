"""People who left and may come back: by identity, the role and display name they had.

A dropped connection, or a node that dies and whose stage another node takes over, must not turn a
promoted speaker back into audience, nor let a demoted one come back promoted: on rejoin with the same
role in the token, the stage gives the remembered role. A token with another role than the one the
person joined with is the platform's new decision: it wins (a host the platform made audience is not
host again because the stage remembered them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rooms.roles import Role

__all__ = ["RememberedPeople", "RememberedPerson"]


@dataclass(frozen=True, slots=True)
class RememberedPerson:
    role: Role
    name: str  # as they were last seen (the durable state keeps it for the next host)
    joined_as: Role | None = None  # the role their token gave when they joined; None: unknown


@dataclass(slots=True)
class RememberedPeople:
    """Identity -> how they were last seen. Only explicit identities are kept: a participant without
    one is known by a random participant id that never rejoins, so remembering it would only grow."""

    people: dict[str, RememberedPerson] = field(default_factory=dict)

    def __contains__(self, identity: str) -> bool:
        return identity in self.people

    def get(self, identity: str) -> RememberedPerson | None:
        return self.people.get(identity)

    def remember(self, identity: str, role: Role, name: str, joined_as: Role | None = None) -> None:
        self.people[identity] = RememberedPerson(role, name, joined_as)

    def forget(self, identity: str) -> None:
        self.people.pop(identity, None)

    def role_for(self, identity: str, requested: Role, *, host_present: bool) -> Role:
        """The role ``identity`` gets on joining: the remembered one, except a remembered host while the
        stage has another host (then the requested one, which the stage checks as for anyone)."""
        known = self.people.get(identity)
        if known is None or (known.role is Role.HOST and host_present):
            return requested
        if known.joined_as is not None and known.joined_as is not requested:
            return requested  # the platform gave this person another role since
        return known.role
