"""The clubs' request and response bodies (server/api/clubs.py): msgspec structs that decode what
comes in, encode what goes out, and give the clubs' OpenAPI entries their schemas."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from rooms.clubs import Club, Invite, Member

INVITE_URL_TEMPLATE = "/s/{stage}?invite="  # + the code: valid for every stage of the club

ClubId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Name = Annotated[str, Meta(min_length=1, max_length=200)]


# --- bodies ---------------------------------------------------------------------------------------


RetentionDays = Annotated[
    int,
    Meta(
        ge=0,
        le=36_500,
        description="Days a recording of the club's stages is kept after it stops (0: forever); "
        "null: the node's `recording_retention_days`. A stage's own setting overrides it",
    ),
]


class ClubCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    """A new club; without ``id``, the node makes one."""

    id: ClubId | None = None
    name: Name
    private: bool = False
    recording_retention_days: RetentionDays | None = None


class ClubPatch(Struct, kw_only=True, forbid_unknown_fields=True):
    """Change a club's settings; a field left out is left as it is (null resets the retention to the
    node's default). Applies to stages created afterwards."""

    recording_retention_days: RetentionDays | UnsetType | None = UNSET


class MemberPut(Struct, kw_only=True, forbid_unknown_fields=True):
    """Add a member, or change one's role (and name). Without ``name``, a new member is shown by identity."""

    role: Literal["admin", "member"] = "member"
    name: Name | None = None


class InviteCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    """An invite valid for ``ttl_s`` seconds and ``max_uses`` admissions (absent: no limit)."""

    ttl_s: Annotated[float, Meta(gt=0, le=366 * 86400)] | None = None
    max_uses: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None


# --- responses ------------------------------------------------------------------------------------


class ClubView(Struct, kw_only=True):
    """A club: its settings and how many members and live invites it has."""

    id: str
    name: str
    private: bool
    created_at: float
    members: int
    admins: int
    invites: int
    recording_retention_days: int | None = None


class ClubList(Struct, kw_only=True):
    clubs: list[ClubView]


class MemberList(Struct, kw_only=True):
    club_id: str
    members: list[Member]


class InviteView(Struct, kw_only=True):
    """An invite code. A link to any stage of the club with ``?invite=<code>`` admits its holder
    (``invite_url``: the link's form; replace ``{stage}``)."""

    code: str
    created_by: str
    created_at: float
    expires_at: float | None
    max_uses: int | None
    uses: int
    invite_url: str


class InviteList(Struct, kw_only=True):
    club_id: str
    invites: list[InviteView]


class StageParticipant(Struct, kw_only=True):
    id: str
    name: str
    role: str
    identity: str | None = None


class ClubStage(Struct, kw_only=True):
    """A live stage of the club and who is in it."""

    id: str
    title: str
    participants: list[StageParticipant]


class ClubStages(Struct, kw_only=True):
    club_id: str
    stages: list[ClubStage]


def club_view(club: Club) -> ClubView:
    return ClubView(
        id=club.id,
        name=club.name,
        private=club.private,
        created_at=club.created_at,
        members=len(club.members),
        admins=sum(1 for m in club.members.values() if m.role == "admin"),
        invites=len(club.invites),
        recording_retention_days=club.recording_retention_days,
    )


def invite_view(invite: Invite) -> InviteView:
    return InviteView(
        code=invite.code,
        created_by=invite.created_by,
        created_at=invite.created_at,
        expires_at=invite.expires_at,
        max_uses=invite.max_uses,
        uses=invite.uses,
        invite_url=INVITE_URL_TEMPLATE + invite.code,
    )
