"""The clubs' HTTP API: create clubs (the platform), and run them (the platform and club admins).

A *club admin* is a platform token (``admin: true``), or a token whose ``club`` claim is this club and
whose identity is an admin member of it (not revoked). Everyone else is refused: no valid token 401,
a token for another club, a member's token or a stage token 403, checked before the club is looked
up when the token names another club, so nothing is learnt about other clubs. Refusals are problem
documents (``server.api.common.problem``) with a code; the app's middleware turns ``AuthError`` into
401/403 as for every /api call.

Routes read ``request.app["node"]``: ``auth`` (through ``bearer``), ``clubs`` (a ``ClubStore``),
``check_not_revoked(identity)`` and ``club_stages(club_id)`` (see ``stages``). Bodies are decoded by
msgspec against the structs below, which also give ``OPENAPI_PATHS`` its schemas (server/api/spec.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from rooms.clubs import (
    Club,
    ClubExists,
    ClubNotFound,
    ClubPrivate,
    InvalidClubState,
    InviteInvalid,
    InviteNotFound,
    LastAdmin,
    Member,
    MemberNotFound,
)
from rooms.errors import DomainError
from server.api import spec
from server.api.bodies import BadBody, read_json
from server.api.club_bodies import (
    INVITE_URL_TEMPLATE,
    ClubCreate,
    ClubList,
    ClubPatch,
    ClubStage,
    ClubStages,
    ClubView,
    InviteCreate,
    InviteList,
    InviteView,
    MemberList,
    MemberPut,
    club_view,
    invite_view,
)
from server.api.common import answer, bearer, problem
from server.auth import Claims, Forbidden
from server.backend import BackendError, Conflict
from server.host.clubs import ClubStore

__all__ = [  # the bodies are club_bodies.py's, named here too: the API's structs
    "INVITE_URL_TEMPLATE",
    "OPENAPI_PATHS",
    "ClubCreate",
    "ClubList",
    "ClubPatch",
    "ClubStages",
    "ClubView",
    "InviteCreate",
    "InviteList",
    "InviteView",
    "MemberList",
    "MemberPut",
    "routes",
]

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


# --- plumbing -------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    club = await _store(request).create(body.id, body.name, body.private, body.recording_retention_days)
    return answer(club_view(club), 201)


@_refusals
async def list_clubs(request: web.Request) -> web.StreamResponse:
    bearer(request).require_admin()
    store = _store(request)
    views = []
    for club_id in await store.ids():
        try:
            views.append(club_view(await store.get(club_id)))
        except ClubNotFound:
            continue
    return answer(ClubList(clubs=views))


@_refusals
async def get_club(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    return answer(club_view(club))


@_refusals
async def patch_club(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    body: ClubPatch = await read_json(request, ClubPatch)
    if body.recording_retention_days is not msgspec.UNSET:
        days = body.recording_retention_days

        def change(c: Club) -> Club:
            c.set_retention(days)
            return c

        club = await _store(request).update(club.id, change)
    return answer(club_view(club))


@_refusals
async def list_members(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    return answer(MemberList(club_id=club.id, members=list(club.members.values())))


@_refusals
async def put_member(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    body: MemberPut = await read_json(request, MemberPut)
    identity = request.match_info["identity"]
    member, created = await _store(request).put_member(club.id, identity, body.name, body.role)
    return answer(member, 201 if created else 200)


@_refusals
async def remove_member(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    await _store(request).remove_member(club.id, request.match_info["identity"])
    return web.Response(status=204)


@_refusals
async def list_invites(request: web.Request) -> web.StreamResponse:
    club, _ = await _club_admin(request)
    invites = [invite_view(i) for i in sorted(club.invites.values(), key=lambda i: i.serial)]
    return answer(InviteList(club_id=club.id, invites=invites))


@_refusals
async def create_invite(request: web.Request) -> web.StreamResponse:
    club, claims = await _club_admin(request)
    body: InviteCreate = await read_json(request, InviteCreate)
    invite = await _store(request).create_invite(
        club.id, claims.identity, ttl_s=body.ttl_s, max_uses=body.max_uses
    )
    return answer(invite_view(invite), 201)


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
    return answer(ClubStages(club_id=club.id, stages=msgspec.convert(found, list[ClubStage])))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/clubs", create_club),
        web.get("/api/clubs", list_clubs),
        web.get("/api/clubs/{club_id}", get_club),
        web.patch("/api/clubs/{club_id}", patch_club),
        web.get("/api/clubs/{club_id}/members", list_members),
        web.put("/api/clubs/{club_id}/members/{identity}", put_member),
        web.delete("/api/clubs/{club_id}/members/{identity}", remove_member),
        web.get("/api/clubs/{club_id}/invites", list_invites),
        web.post("/api/clubs/{club_id}/invites", create_invite),
        web.delete("/api/clubs/{club_id}/invites/{code}", revoke_invite),
        web.get("/api/clubs/{club_id}/stages", stages),
    ]


# --- OpenAPI 3.1: the "paths" entries of these routes, for the node's document (server/api/openapi.py,
# which also holds the structs' schemas as components) --------------------------------------------

OPENAPI = spec.Paths("clubs")

_CLUB_ID = spec.path_param("club_id", "The club", maxLength=64, pattern=spec.ID_PATTERN)
_IDENTITY = spec.path_param("identity", "A person's identity (a token's `sub`)", maxLength=128)
_CODE = spec.path_param("code", "An invite code", maxLength=64, pattern=spec.ID_PATTERN)
_NOT_ADMIN = spec.refused(
    "Not a club admin: a token for another club, a member's or a stage token, or a revoked identity",
    "club_admin_required",
    "identity_revoked",
)
_PLATFORM_ONLY = spec.refused("This call needs a platform token (`admin: true`)", "admin_required")
_NO_CLUB = spec.refused("No such club", "club_not_found")
_UNAVAILABLE = spec.refused(
    "The shared store is unreachable, or the club is busy: try again",
    "unavailable",
    "club_busy",
    retry_after="Seconds",
)
_BAD_BODY = spec.refused("The body does not match the schema", "invalid_body", "bad_text")
_UNREADABLE = spec.refused(
    "A stored club this node cannot read (corrupt, or a newer format)", "invalid_club_state"
)
_LAST_ADMIN = spec.refused("That would leave the club without an admin", "last_admin")


def _admin_op(
    method: str,
    path: str,
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    params: list[Any],
    request: dict[str, Any] | None = None,
) -> None:
    """An operation for club admins: the refusals every such operation can give, and its own."""
    OPENAPI.add(
        method,
        path,
        operation_id,
        summary,
        {
            **responses,
            "401": spec.UNAUTHORIZED,
            "403": _NOT_ADMIN,
            "404": responses.get("404", _NO_CLUB),
            "500": _UNREADABLE,
            "503": _UNAVAILABLE,
        },
        params=params,
        request=request,
    )


OPENAPI.add(
    "post",
    "/api/clubs",
    "createClub",
    "Create a club, public or private (platform token)",
    {
        "201": spec.ok(ClubView, "Created"),
        "400": _BAD_BODY,
        "401": spec.UNAUTHORIZED,
        "403": _PLATFORM_ONLY,
        "409": spec.refused("A club with this id exists", "club_exists"),
        "503": _UNAVAILABLE,
    },
    request=spec.body(ClubCreate, required=True),
)
OPENAPI.add(
    "get",
    "/api/clubs",
    "listClubs",
    "Every club (platform token)",
    {
        "200": spec.ok(ClubList, "The clubs"),
        "401": spec.UNAUTHORIZED,
        "403": _PLATFORM_ONLY,
        "500": _UNREADABLE,
        "503": _UNAVAILABLE,
    },
)
_admin_op(
    "get",
    "/api/clubs/{club_id}",
    "getClub",
    "A club (club admins)",
    {"200": spec.ok(ClubView, "The club")},
    [_CLUB_ID],
)
_admin_op(
    "patch",
    "/api/clubs/{club_id}",
    "patchClub",
    "Change a club's settings: the retention of its stages' recordings (club admins)",
    {"200": spec.ok(ClubView, "The club, changed"), "400": _BAD_BODY},
    [_CLUB_ID],
    request=spec.body(ClubPatch, required=True),
)
_admin_op(
    "get",
    "/api/clubs/{club_id}/members",
    "listClubMembers",
    "The club's members: how and when each joined, and their role (club admins)",
    {"200": spec.ok(MemberList, "The members")},
    [_CLUB_ID],
)
_admin_op(
    "put",
    "/api/clubs/{club_id}/members/{identity}",
    "putClubMember",
    "Add a member, or change a member's role (club admins)",
    {
        "200": spec.ok(Member, "The member, changed"),
        "201": spec.ok(Member, "The member, added"),
        "400": spec.refused(
            "The body does not match the schema, or the identity is too long",
            "invalid_body",
            "bad_text",
            "invalid_message",
        ),
        "409": _LAST_ADMIN,
    },
    [_CLUB_ID, _IDENTITY],
    spec.body(MemberPut),
)
_admin_op(
    "delete",
    "/api/clubs/{club_id}/members/{identity}",
    "removeClubMember",
    "Remove a member; a private club then refuses them unless invited again (club admins)",
    {
        "204": {"description": "Removed"},
        "404": spec.refused("No such club, or no such member", "club_not_found", "member_not_found"),
        "409": _LAST_ADMIN,
    },
    [_CLUB_ID, _IDENTITY],
)
_admin_op(
    "get",
    "/api/clubs/{club_id}/invites",
    "listClubInvites",
    "The club's invites that have not been revoked (club admins)",
    {"200": spec.ok(InviteList, "The invites")},
    [_CLUB_ID],
)
_admin_op(
    "post",
    "/api/clubs/{club_id}/invites",
    "createClubInvite",
    "A new invite code: `/s/<stage>?invite=<code>` admits its holder to the club (club admins)",
    {"201": spec.ok(InviteView, "Created"), "400": _BAD_BODY},
    [_CLUB_ID],
    spec.body(InviteCreate),
)
_admin_op(
    "delete",
    "/api/clubs/{club_id}/invites/{code}",
    "revokeClubInvite",
    "Revoke an invite: it admits nobody from now on (club admins)",
    {
        "204": {"description": "Revoked"},
        "404": spec.refused("No such club, or no such invite", "club_not_found", "invite_not_found"),
    },
    [_CLUB_ID, _CODE],
)
_admin_op(
    "get",
    "/api/clubs/{club_id}/stages",
    "listClubStages",
    "The club's live stages and who is in each (club admins)",
    {"200": spec.ok(ClubStages, "The stages")},
    [_CLUB_ID],
)
OPENAPI_PATHS: dict[str, Any] = OPENAPI.paths
