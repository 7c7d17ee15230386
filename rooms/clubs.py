"""A club: the people a series of stages belongs to, who may join them, and who runs them.

Pure state, like ``rooms/stage.py``: time (``now``) and invite codes come from the shell; a refused
command raises a ``DomainError`` with a code and leaves the club unchanged.

- A *public* club admits anyone who joins one of its stages by the stage's link: they become members
  (``via="link"``).
- A *private* club admits its members, and people holding a valid invite code: unexpired, not used up,
  not revoked. They become members (``via="invite"``) and the invite counts one more use. Anyone else
  is refused: ``ClubPrivate`` without a code, ``InviteInvalid`` with a bad one.
- A member removed from a private club is refused next time unless re-invited: only an invite issued
  *after* the removal admits them again (a still-valid older link does not). From a public club, a
  removed member comes back by the link, as anyone does.
- Club admins (``role="admin"``) manage members and invites; the last admin cannot be removed or
  demoted (the platform adds another first), so a club is never left without one.

``to_builtins``/``Club.from_builtins`` give the stored form (format ``FORMAT``), for msgpack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from rooms.errors import DomainError, InvalidMessage
from rooms.text import require_text

__all__ = [
    "FORMAT",
    "Club",
    "ClubError",
    "ClubExists",
    "ClubNotFound",
    "ClubPrivate",
    "InvalidClubState",
    "Invite",
    "InviteInvalid",
    "InviteNotFound",
    "LastAdmin",
    "Member",
    "MemberNotFound",
    "MemberRole",
    "Via",
]

FORMAT = 1  # bump on any change an older node would misread; a node refuses formats it does not know

MemberRole = Literal["admin", "member"]
Via = Literal["link", "invite", "added"]

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # club ids and invite codes: safe in a URL and a Redis key
_MAX_NAME = 200
_MAX_IDENTITY = 128  # a token's ``sub`` (server/auth.py)
MAX_RETENTION_DAYS = 36_500


# --- errors ---------------------------------------------------------------------------------------


class ClubError(DomainError):
    """Base of the club refusals (the HTTP API maps each code to a status)."""

    code = "club_error"


class ClubNotFound(ClubError):
    code = "club_not_found"


class ClubExists(ClubError):
    code = "club_exists"


class ClubPrivate(ClubError):
    """A non-member joining a private club's stage without an invite code."""

    code = "club_private"


class InviteInvalid(ClubError):
    """An invite code that does not admit this person: unknown or revoked, expired, used up, or issued
    before they were removed from the club."""

    code = "invite_invalid"


class InviteNotFound(ClubError):
    code = "invite_not_found"


class MemberNotFound(ClubError):
    code = "member_not_found"


class LastAdmin(ClubError):
    """Removing or demoting the club's only admin would leave nobody to run it."""

    code = "last_admin"


class InvalidClubState(ClubError):
    """A stored club this node cannot read: corrupt, or written in a format version it does not know."""

    code = "invalid_club_state"


# --- values ---------------------------------------------------------------------------------------


class Member(msgspec.Struct, frozen=True, kw_only=True):
    identity: str
    name: str
    role: MemberRole
    joined_at: float
    via: Via


class Invite(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    created_by: str  # the identity of the admin who made it
    created_at: float
    expires_at: float | None
    max_uses: Annotated[int, msgspec.Meta(ge=1)] | None
    uses: Annotated[int, msgspec.Meta(ge=0)]
    serial: Annotated[int, msgspec.Meta(ge=0)]  # its place among the club's invites and removals

    def refusal(self, now: float) -> str | None:
        """Why this invite admits nobody at ``now``, or None when it admits."""
        if self.expires_at is not None and now >= self.expires_at:
            return "this invite has expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "this invite has been used as many times as it may be"
        return None


class _State(msgspec.Struct, frozen=True, kw_only=True):
    """Format 1. Unknown fields are ignored, so adding one with a default needs no new version."""

    format: int
    id: str
    name: str
    private: bool
    created_at: float
    members: list[Member]
    invites: list[Invite]
    removed: dict[str, Annotated[int, msgspec.Meta(ge=0)]]
    serial: Annotated[int, msgspec.Meta(ge=0)]
    recording_retention_days: Annotated[int, msgspec.Meta(ge=0)] | None = None


# --- the club -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Club:
    """One club's members and invites. Commands check first and change state only on success."""

    id: str
    name: str
    private: bool
    created_at: float
    members: dict[str, Member] = field(default_factory=dict)  # identity -> member
    invites: dict[str, Invite] = field(default_factory=dict)  # code -> invite
    # identity -> ``serial`` when they were removed: only an invite with a higher serial admits them.
    removed: dict[str, int] = field(default_factory=dict)
    serial: int = 0  # counts invites issued and members removed (an order without trusting clocks)
    # Days the recordings of the club's stages are kept (0: forever; None: the node's default); a
    # stage's own setting overrides it. Read when a stage is created (docs/recording.md, "Retention").
    recording_retention_days: int | None = None

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise InvalidMessage("a club id is 1-64 characters of A-Z a-z 0-9 _ -")
        _check_name(self.name, "a club's name")
        _check_retention(self.recording_retention_days)

    def set_retention(self, days: int | None) -> None:
        """How long the recordings of the club's stages created from now on are kept (see the field)."""
        _check_retention(days)
        self.recording_retention_days = days

    # --- joining ------------------------------------------------------------------------------

    def admit(self, identity: str, name: str, now: float, invite_code: str | None = None) -> Member:
        """Someone joining one of the club's stages by its link: the member they are (now).

        Members pass (their name is updated). A public club makes anyone else a member; a private one
        only with a valid ``invite_code``, whose use is counted. Refused: ``ClubPrivate`` (no code),
        ``InviteInvalid`` (a code that does not admit them)."""
        _check_identity(identity)
        _check_name(name, "a member's name")
        member = self.members.get(identity)
        if member is not None:
            if member.name != name:
                member = self.members[identity] = msgspec.structs.replace(member, name=name)
            return member
        invite, why = self._invite_for(identity, invite_code, now)
        if invite is None and self.private:
            if invite_code is None:
                raise ClubPrivate(f"club {self.id} is private: joining its stages needs an invite link")
            raise InviteInvalid(why or "this invite is not valid")
        # A public club ignores a bad code: its link admits anyone anyway.
        if invite is not None:
            self.invites[invite.code] = msgspec.structs.replace(invite, uses=invite.uses + 1)
        self.removed.pop(identity, None)
        member = Member(
            identity=identity,
            name=name,
            role="member",
            joined_at=now,
            via="link" if invite is None else "invite",
        )
        self.members[identity] = member
        return member

    def _invite_for(self, identity: str, code: str | None, now: float) -> tuple[Invite | None, str | None]:
        """The invite that admits ``identity`` now, or None and why not."""
        if code is None:
            return None, None
        invite = self.invites.get(code)
        if invite is None:
            return None, "this invite does not exist or was revoked"
        why = invite.refusal(now)
        if why is not None:
            return None, why
        removed_at = self.removed.get(identity)
        if removed_at is not None and invite.serial <= removed_at:
            return None, "you were removed from this club after this invite was made: ask for a new one"
        return invite, None

    # --- invites ------------------------------------------------------------------------------

    def create_invite(
        self,
        by: str,
        now: float,
        ttl_s: float | None = None,
        max_uses: int | None = None,
        *,
        code: str,
    ) -> Invite:
        """A new invite code (random, made by the shell), valid for ``ttl_s`` seconds and ``max_uses``
        admissions (None: no limit)."""
        _check_identity(by)
        if not _ID.fullmatch(code):
            raise InvalidMessage("an invite code is 1-64 characters of A-Z a-z 0-9 _ -")
        if code in self.invites:
            raise InvalidMessage(f"invite code {code} is already in use")
        if ttl_s is not None and not ttl_s > 0:
            raise InvalidMessage("an invite's ttl_s must be above 0")
        if max_uses is not None and max_uses < 1:
            raise InvalidMessage("an invite's max_uses must be at least 1")
        self.serial += 1
        invite = Invite(
            code=code,
            created_by=by,
            created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s,
            max_uses=max_uses,
            uses=0,
            serial=self.serial,
        )
        self.invites[code] = invite
        return invite

    def revoke_invite(self, code: str) -> Invite:
        """The invite admits nobody from now on (members it admitted stay)."""
        invite = self.invites.pop(code, None)
        if invite is None:
            raise InviteNotFound(f"club {self.id} has no invite {code}")
        return invite

    # --- members ------------------------------------------------------------------------------

    def is_admin(self, identity: str) -> bool:
        member = self.members.get(identity)
        return member is not None and member.role == "admin"

    def add_member(self, identity: str, name: str, role: MemberRole, now: float) -> Member:
        """Make ``identity`` a member with ``role`` (``via="added"``); an existing member keeps how
        and when they joined and gets the new name and role."""
        _check_identity(identity)
        _check_name(name, "a member's name")
        _check_role(role)
        existing = self.members.get(identity)
        if existing is not None:
            self._check_keeps_an_admin(existing, role)
            member = msgspec.structs.replace(existing, name=name, role=role)
        else:
            member = Member(identity=identity, name=name, role=role, joined_at=now, via="added")
        self.members[identity] = member
        self.removed.pop(identity, None)
        return member

    def rename_member(self, identity: str, name: str) -> Member | None:
        """A correction of the person's display name (their data rights): the member shows it; None
        when they are not a member."""
        _check_name(name, "a member's name")
        member = self.members.get(identity)
        if member is None or member.name == name:
            return member
        member = self.members[identity] = msgspec.structs.replace(member, name=name)
        return member

    def set_role(self, identity: str, role: MemberRole) -> Member:
        _check_role(role)
        member = self._member(identity)
        self._check_keeps_an_admin(member, role)
        member = self.members[identity] = msgspec.structs.replace(member, role=role)
        return member

    def remove_member(self, identity: str) -> Member:
        """No longer a member. A private club refuses them next time unless an invite made after this
        admits them (or an admin adds them back)."""
        member = self._member(identity)
        self._check_keeps_an_admin(member, None)
        del self.members[identity]
        self.serial += 1
        self.removed[identity] = self.serial
        return member

    def _member(self, identity: str) -> Member:
        member = self.members.get(identity)
        if member is None:
            raise MemberNotFound(f"{identity} is not a member of club {self.id}")
        return member

    def _check_keeps_an_admin(self, member: Member, new_role: MemberRole | None) -> None:
        if member.role != "admin" or new_role == "admin":
            return
        if sum(1 for m in self.members.values() if m.role == "admin") == 1:
            raise LastAdmin(f"{member.identity} is club {self.id}'s only admin: make another admin first")

    # --- storage ------------------------------------------------------------------------------

    def to_builtins(self) -> dict[str, Any]:
        """The club as builtins msgpack can encode (read back by ``Club.from_builtins``)."""
        state = _State(
            format=FORMAT,
            id=self.id,
            name=self.name,
            private=self.private,
            created_at=self.created_at,
            members=sorted(self.members.values(), key=lambda m: (m.joined_at, m.identity)),
            invites=sorted(self.invites.values(), key=lambda i: i.serial),
            removed=dict(sorted(self.removed.items())),
            serial=self.serial,
            recording_retention_days=self.recording_retention_days,
        )
        return msgspec.to_builtins(state)  # type: ignore[no-any-return]

    @classmethod
    def from_builtins(cls, data: object) -> Club:
        """Raises ``InvalidClubState`` on input this node cannot read (corrupt, another format)."""
        if not isinstance(data, dict):
            raise InvalidClubState(f"a stored club is a map, not {type(data).__name__}")
        version = data.get("format")
        if version != FORMAT:
            raise InvalidClubState(f"club format {version!r} is not one this node reads ({FORMAT})")
        try:
            state = msgspec.convert(data, _State)
            club = cls(
                state.id,
                state.name,
                state.private,
                state.created_at,
                recording_retention_days=state.recording_retention_days,
            )
        except (msgspec.ValidationError, InvalidMessage) as error:
            raise InvalidClubState(f"stored club {data.get('id')!r} is invalid: {error}") from None
        club.members = {m.identity: m for m in state.members}
        club.invites = {i.code: i for i in state.invites}
        if len(club.members) != len(state.members) or len(club.invites) != len(state.invites):
            raise InvalidClubState(f"stored club {state.id!r} lists a member or an invite twice")
        club.removed = dict(state.removed)
        club.serial = state.serial
        return club


def _check_identity(identity: str) -> None:
    require_text(identity, "the identity")
    if not 0 < len(identity) <= _MAX_IDENTITY:
        raise InvalidMessage(f"an identity is 1-{_MAX_IDENTITY} characters")


def _check_name(name: str, what: str) -> None:
    require_text(name, what)
    if not 0 < len(name) <= _MAX_NAME or not name.strip():
        raise InvalidMessage(f"{what} is 1-{_MAX_NAME} characters, not only spaces")


def _check_retention(days: int | None) -> None:
    if days is not None and not 0 <= days <= MAX_RETENTION_DAYS:
        raise InvalidMessage(f"recording_retention_days is 0-{MAX_RETENTION_DAYS} (0: forever), or null")


def _check_role(role: str) -> None:
    if role not in ("admin", "member"):
        raise InvalidMessage("a member's role is admin or member")
