"""The clubs' HTTP API: create clubs (the platform), and run them (the platform and club admins).

A *club admin* is a platform token (``admin: true``), or a token whose ``club`` claim is this club and
whose identity is an admin member of it (not revoked). Everyone else is refused: no valid token 401,
a token for another club, a member's token or a stage token 403, checked before the club is looked
up when the token names another club, so nothing is learnt about other clubs. Refusals are problem
documents (``server.api.stages.problem``) with a code; the app's middleware turns ``AuthError`` into
401/403 as for every /api call.

Routes read ``request.app["node"]``: ``auth`` (through ``bearer``), ``clubs`` (a ``ClubStore``),
``check_not_revoked(identity)`` and ``club_stages(club_id)`` (see ``stages``). Bodies are decoded by
msgspec against the structs below, which also give ``OPENAPI_PATHS`` its schemas.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from rooms.clubs import (
    Club,
    ClubExists,
    ClubNotFound,
    ClubPrivate,
    InvalidClubState,
    Invite,
    InviteInvalid,
    InviteNotFound,
    LastAdmin,
    Member,
    MemberNotFound,
)
from rooms.errors import DomainError
from server.api.bodies import BadBody, read_json
from server.api.common import bearer, problem
from server.auth import Claims, Forbidden
from server.backend import BackendError, Conflict
from server.host.clubs import ClubStore

__all__ = ["INVITE_URL_TEMPLATE", "OPENAPI_PATHS", "routes"]

INVITE_URL_TEMPLATE = "/s/{stage}?invite="  # + the code: valid for every stage of the club

ClubId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Name = Annotated[str, Meta(min_length=1, max_length=200)]

_STATUS: dict[type[DomainError], int] = {
    ClubNotFound: 404,
    MemberNotFound: 404,
    InviteNotFound: 404,
    ClubExists: 409,
    LastAdmin: 409,
    ClubPrivate: 403,
    InviteInvalid: 403,
    InvalidClubState: 500,
}


# --- bodies ---------------------------------------------------------------------------------------


class ClubCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    """A new club; without ``id``, the node makes one."""

    id: ClubId | None = None
    name: Name
    private: bool = False


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


def _club_view(club: Club) -> ClubView:
    return ClubView(
        id=club.id,
        name=club.name,
        private=club.private,
        created_at=club.created_at,
        members=len(club.members),
        admins=sum(1 for m in club.members.values() if m.role == "admin"),
        invites=len(club.invites),
    )


def _invite_view(invite: Invite) -> InviteView:
    return InviteView(
        code=invite.code,
        created_by=invite.created_by,
        created_at=invite.created_at,
        expires_at=invite.expires_at,
        max_uses=invite.max_uses,
        uses=invite.uses,
        invite_url=INVITE_URL_TEMPLATE + invite.code,
    )


# --- plumbing -------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status, content_type="application/json")


def _refusals(handler: Handler) -> Handler:
    """Domain refusals and store failures become problem documents (auth errors: the middleware)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadBody as exc:
            return problem(400, exc.code, str(exc))
        except DomainError as exc:
            return problem(_STATUS.get(type(exc), 400), exc.code, exc.message)
        except Conflict:
            response = problem(503, "club_busy", "the club is being changed by others: try again")
            response.headers["Retry-After"] = "1"
            return response
        except BackendError as exc:
            response = problem(503, "unavailable", f"the shared store is unreachable: {exc}")
            response.headers["Retry-After"] = "1"
            return response

    return wrapped


def _store(request: web.Request) -> ClubStore:
    store: ClubStore = request.app["node"].clubs
    return store


async def _club_admin(request: web.Request) -> tuple[Club, Claims]:
    """The club of the path and its admin's verified token (see the module docstring)."""
    claims = bearer(request)
    club_id = request.match_info["club_id"]
    if not claims.admin and claims.club != club_id:
        raise Forbidden("club_admin_required", f"this call needs a club admin's token for club {club_id}")
    club = await _store(request).get(club_id)
    if not claims.admin:
        if not club.is_admin(claims.identity):
            raise Forbidden("club_admin_required", f"{claims.identity} is not an admin of club {club_id}")
        await request.app["node"].check_not_revoked(claims.identity)
    return club, claims


# --- handlers -------------------------------------------------------------------------------------


@_refusals
async def create_club(request: web.Request) -> web.StreamResponse:
    bearer(request).require_admin()
    body: ClubCreate = await read_json(request, ClubCreate)
    club = await _store(request).create(body.id, body.name, body.private)
    return _json(_club_view(club), 201)


@_refusals
async def list_clubs(request: web.Request) -> web.StreamResponse:
    bearer(request).require_admin()
    store = _store(request)
    views = []
    for club_id in await store.ids():
        try:
            views.append(_club_view(await store.get(club_id)))
        except ClubNotFound:
            continue
    return _json(ClubList(clubs=views))


@_refusals
async def get_club(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    return _json(_club_view(club))


@_refusals
async def list_members(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    return _json(MemberList(club_id=club.id, members=list(club.members.values())))


@_refusals
async def put_member(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    body: MemberPut = await read_json(request, MemberPut)
    identity = request.match_info["identity"]
    member, created = await _store(request).put_member(club.id, identity, body.name, body.role)
    return _json(member, 201 if created else 200)


@_refusals
async def remove_member(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    await _store(request).remove_member(club.id, request.match_info["identity"])
    return web.Response(status=204)


@_refusals
async def list_invites(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    invites = [_invite_view(i) for i in sorted(club.invites.values(), key=lambda i: i.serial)]
    return _json(InviteList(club_id=club.id, invites=invites))


@_refusals
async def create_invite(request: web.Request) -> web.StreamResponse:
    club, claims = await _club_admin(request)
    body: InviteCreate = await read_json(request, InviteCreate)
    invite = await _store(request).create_invite(
        club.id, claims.identity, ttl_s=body.ttl_s, max_uses=body.max_uses
    )
    return _json(_invite_view(invite), 201)


@_refusals
async def revoke_invite(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    await _store(request).revoke_invite(club.id, request.match_info["code"])
    return web.Response(status=204)


@_refusals
async def stages(request: web.Request) -> web.StreamResponse:
    """``node.club_stages(club_id)`` (plain or async) lists the club's live stages as dicts
    ``{id, title, participants: [{id, name, role, identity}]}``; only those fields are passed on."""
    club, _ = await _club_admin(request)
    found = request.app["node"].club_stages(club.id)
    if inspect.isawaitable(found):
        found = await found
    return _json(ClubStages(club_id=club.id, stages=msgspec.convert(found, list[ClubStage])))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/clubs", create_club),
        web.get("/api/clubs", list_clubs),
        web.get("/api/clubs/{club_id}", get_club),
        web.get("/api/clubs/{club_id}/members", list_members),
        web.put("/api/clubs/{club_id}/members/{identity}", put_member),
        web.delete("/api/clubs/{club_id}/members/{identity}", remove_member),
        web.get("/api/clubs/{club_id}/invites", list_invites),
        web.post("/api/clubs/{club_id}/invites", create_invite),
        web.delete("/api/clubs/{club_id}/invites/{code}", revoke_invite),
        web.get("/api/clubs/{club_id}/stages", stages),
    ]


# --- OpenAPI 3.1: the "paths" entries of these routes, for the node's document ------------------
# Schemas are made from the structs above (inlined: no components of our own); refusals refer to the
# node document's ``Problem`` schema and ``Unauthorized`` response (server/openapi.py).


def _schema(kind: Any) -> dict[str, Any]:
    """``kind``'s JSON Schema with its ``$defs`` inlined (a path entry cannot carry its own $defs)."""
    schema = msgspec.json.schema(kind)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def _ok(kind: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _schema(kind)}}}


def _refused(description: str, *codes: str) -> dict[str, Any]:
    listed = ", ".join(f"`{c}`" for c in codes)
    return {
        "description": f"{description} (code: {listed})",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _body_of(kind: Any, required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _schema(kind)}}}


def _path_param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, **schema},
    }


_CLUB_ID = _path_param("club_id", "The club", maxLength=64, pattern="^[A-Za-z0-9_-]+$")
_IDENTITY = _path_param("identity", "A person's identity (a token's `sub`)", maxLength=128)
_CODE = _path_param("code", "An invite code", maxLength=64, pattern="^[A-Za-z0-9_-]+$")
_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_NOT_ADMIN = _refused(
    "Not a club admin: a token for another club, a member's or a stage token, or a revoked identity",
    "club_admin_required",
    "identity_revoked",
)
_PLATFORM_ONLY = _refused("This call needs a platform token (`admin: true`)", "admin_required")
_NO_CLUB = _refused("No such club", "club_not_found")
_UNAVAILABLE = {
    **_refused("The shared store is unreachable, or the club is busy: try again", "unavailable", "club_busy"),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds"}},
}
_BAD_BODY = _refused("The body does not match the schema", "invalid_body", "bad_text")
_UNREADABLE = _refused(
    "A stored club this node cannot read (corrupt, or a newer format)", "invalid_club_state"
)


def _admin_op(operation_id: str, summary: str, params: list[Any], responses: dict[str, Any]) -> Any:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["clubs"],
        "parameters": params,
        "responses": {
            **responses,
            "401": _UNAUTHORIZED,
            "403": _NOT_ADMIN,
            "404": responses.get("404", _NO_CLUB),
            "500": _UNREADABLE,
            "503": _UNAVAILABLE,
        },
    }


OPENAPI_PATHS: dict[str, Any] = {
    "/api/clubs": {
        "post": {
            "operationId": "createClub",
            "summary": "Create a club, public or private (platform token)",
            "tags": ["clubs"],
            "requestBody": _body_of(ClubCreate, True),
            "responses": {
                "201": _ok(ClubView, "Created"),
                "400": _BAD_BODY,
                "401": _UNAUTHORIZED,
                "403": _PLATFORM_ONLY,
                "409": _refused("A club with this id exists", "club_exists"),
                "503": _UNAVAILABLE,
            },
        },
        "get": {
            "operationId": "listClubs",
            "summary": "Every club (platform token)",
            "tags": ["clubs"],
            "responses": {
                "200": _ok(ClubList, "The clubs"),
                "401": _UNAUTHORIZED,
                "403": _PLATFORM_ONLY,
                "500": _UNREADABLE,
                "503": _UNAVAILABLE,
            },
        },
    },
    "/api/clubs/{club_id}": {
        "get": _admin_op("getClub", "A club (club admins)", [_CLUB_ID], {"200": _ok(ClubView, "The club")}),
    },
    "/api/clubs/{club_id}/members": {
        "get": _admin_op(
            "listClubMembers",
            "The club's members: how and when each joined, and their role (club admins)",
            [_CLUB_ID],
            {"200": _ok(MemberList, "The members")},
        ),
    },
    "/api/clubs/{club_id}/members/{identity}": {
        "put": {
            **_admin_op(
                "putClubMember",
                "Add a member, or change a member's role (club admins)",
                [_CLUB_ID, _IDENTITY],
                {
                    "200": _ok(Member, "The member, changed"),
                    "201": _ok(Member, "The member, added"),
                    "400": _refused(
                        "The body does not match the schema, or the identity is too long",
                        "invalid_body",
                        "bad_text",
                        "invalid_message",
                    ),
                    "409": _refused("That would leave the club without an admin", "last_admin"),
                },
            ),
            "requestBody": _body_of(MemberPut, False),
        },
        "delete": _admin_op(
            "removeClubMember",
            "Remove a member; a private club then refuses them unless invited again (club admins)",
            [_CLUB_ID, _IDENTITY],
            {
                "204": {"description": "Removed"},
                "404": _refused("No such club, or no such member", "club_not_found", "member_not_found"),
                "409": _refused("That would leave the club without an admin", "last_admin"),
            },
        ),
    },
    "/api/clubs/{club_id}/invites": {
        "get": _admin_op(
            "listClubInvites",
            "The club's invites that have not been revoked (club admins)",
            [_CLUB_ID],
            {"200": _ok(InviteList, "The invites")},
        ),
        "post": {
            **_admin_op(
                "createClubInvite",
                "A new invite code: `/s/<stage>?invite=<code>` admits its holder to the club (club admins)",
                [_CLUB_ID],
                {"201": _ok(InviteView, "Created"), "400": _BAD_BODY},
            ),
            "requestBody": _body_of(InviteCreate, False),
        },
    },
    "/api/clubs/{club_id}/invites/{code}": {
        "delete": _admin_op(
            "revokeClubInvite",
            "Revoke an invite: it admits nobody from now on (club admins)",
            [_CLUB_ID, _CODE],
            {
                "204": {"description": "Revoked"},
                "404": _refused("No such club, or no such invite", "club_not_found", "invite_not_found"),
            },
        ),
    },
    "/api/clubs/{club_id}/stages": {
        "get": _admin_op(
            "listClubStages",
            "The club's live stages and who is in each (club admins)",
            [_CLUB_ID],
            {"200": _ok(ClubStages, "The stages")},
        ),
    },
}
