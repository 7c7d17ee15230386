"""People's data rights over HTTP (issue 15): nominees, subject access, correction.

``POST /api/people/{identity}/nominees`` nominates, ``DELETE .../nominees/{nominee}`` withdraws,
``GET .../nominees`` lists the nominees in force. Who may: server/host/people.py (the person with a
person-level token, the platform; a nominee may list, and may withdraw themselves). Each change is an
entry of the people ledger and a ``person.nominee_changed`` webhook. docs/protocol.md, "People".

``GET .../export`` streams the person's subject access archive (a tar, docs/recording.md "Subject
access archive"); ``PATCH .../profile`` corrects their display name and profile fields. The person, a
nominee in force or the platform (server/host/rights.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from recording.ledger import Entry, LedgerError
from recording.people import Nomination
from server.api import spec
from server.api.bodies import BadBody, read_json
from server.api.common import answer, bearer, problem
from server.auth import Claims
from server.backend import BackendError
from server.host import rights
from server.host.node import Node
from server.host.people import PeopleError

log = logging.getLogger(__name__)

IdentityText = Annotated[str, Meta(min_length=1, max_length=128)]
ProfileText = Annotated[str, Meta(min_length=1, max_length=200)]


class NomineeCreate(Struct, kw_only=True):
    nominee: Annotated[IdentityText, Meta(description="The identity (token `sub`) to nominate")]


class NomineeInfo(Struct, kw_only=True):
    nominee: str
    granted_at: Annotated[float, Meta(description="Unix time, seconds")]
    granted_by: Annotated[
        str, Meta(description="The identity that nominated (the person, or the platform's)")
    ]
    ledger_index: Annotated[int, Meta(ge=0, description="The people ledger entry of the grant")]


class NomineeList(Struct, kw_only=True):
    identity: str
    nominees: list[NomineeInfo]


class NomineeChange(Struct, kw_only=True):
    identity: str
    nominee: str
    change: Literal["granted", "withdrawn"]
    at: Annotated[float, Meta(description="Unix time, seconds")]
    ledger_index: Annotated[int, Meta(ge=0)]
    ledger_hash: Annotated[str, Meta(description="SHA-256 of the entry (recording/ledger.py)")]


def _change(entry: Entry) -> NomineeChange:
    record = entry.record
    return NomineeChange(
        identity=record["identity"],
        nominee=record["nominee"],
        change="granted" if record["type"] == "nomination.granted" else "withdrawn",
        at=record["at"],
        ledger_index=entry.index,
        ledger_hash=entry.hash,
    )


def _info(nomination: Nomination) -> NomineeInfo:
    return NomineeInfo(
        nominee=nomination.nominee,
        granted_at=nomination.granted_at,
        granted_by=nomination.granted_by,
        ledger_index=nomination.index,
    )


class ProfileCorrection(Struct, kw_only=True, forbid_unknown_fields=True):
    """The fields to correct (at least one); those left out keep their value."""

    name: Annotated[str, Meta(min_length=1, max_length=64, description="The display name")] | None = None
    title: ProfileText | None = None
    affiliation: ProfileText | None = None
    pronouns: ProfileText | None = None
    locale: ProfileText | None = None


class ProfileCorrected(Struct, kw_only=True):
    identity: str
    fields: Annotated[list[str], Meta(description="The fields this correction changed, sorted")]
    profile: Annotated[dict[str, str], Meta(description="Every corrected field's current value")]
    at: Annotated[float, Meta(description="Unix time, seconds")]
    ledger_index: Annotated[int, Meta(ge=0, description="The people ledger entry of the correction")]
    ledger_hash: Annotated[str, Meta(description="SHA-256 of the entry (recording/ledger.py)")]


async def _refusals(work: Callable[[], Awaitable[web.Response]]) -> web.Response:
    """The people layer's refusals as problem documents (auth errors go to the app's middleware)."""
    try:
        return await work()
    except PeopleError as exc:
        return problem(exc.status, exc.code, exc.message)
    except BackendError as exc:
        return problem(503, "unavailable", f"the shared store is unreachable: {exc}")
    except LedgerError as exc:
        log.error("people ledger broken", extra={"error": str(exc)})
        return problem(503, "people_ledger_broken", "this node's people ledger failed verification")
    except OSError as exc:
        log.error("people ledger unwritable", extra={"error": repr(exc)})
        return problem(503, "people_ledger_unwritable", "this node cannot write its people ledger")


async def nominate(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    claims = bearer(request)
    identity = request.match_info["identity"]

    async def work() -> web.Response:
        try:
            body = await read_json(request, NomineeCreate)
        except BadBody as exc:
            return problem(400, exc.code, str(exc))
        entry = await node.people.nominate(claims, identity, body.nominee)
        return answer(_change(entry), 201)

    return await _refusals(work)


async def withdraw(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    claims = bearer(request)
    identity, nominee = request.match_info["identity"], request.match_info["nominee"]

    async def work() -> web.Response:
        return answer(_change(await node.people.withdraw(claims, identity, nominee)))

    return await _refusals(work)


async def list_nominees(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    claims = bearer(request)
    identity = request.match_info["identity"]

    async def work() -> web.Response:
        nominees = await node.people.list_nominees(claims, identity)
        listed = [_info(n) for n in sorted(nominees.values(), key=lambda n: n.index)]
        return answer(NomineeList(identity=identity, nominees=listed))

    return await _refusals(work)


async def correct_profile(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    claims = bearer(request)
    identity = request.match_info["identity"]

    async def work() -> web.Response:
        await rights.authorize(node, claims, identity)  # a stranger learns nothing of the body's rules
        try:
            body = await read_json(request, ProfileCorrection)
        except BadBody as exc:
            return problem(400, exc.code, str(exc))
        changes: dict[str, Any] = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
        if not changes:
            return problem(400, "invalid_profile", "a correction names at least one field")
        profile, entry = await rights.correct(node, claims, identity, changes)
        return answer(
            ProfileCorrected(
                identity=identity,
                fields=sorted(changes),
                profile=dict(profile.fields),
                at=entry.record["at"],
                ledger_index=entry.index,
                ledger_hash=entry.hash,
            )
        )

    return await _refusals(work)


async def export(request: web.Request) -> web.StreamResponse:
    """The archive, streamed as it is read (chunked); recorded once its last byte is written."""
    node: Node = request.app["node"]
    claims = bearer(request)
    identity = request.match_info["identity"]
    scope = request.query.get("scope", "all")
    if scope not in ("all", "node"):
        return problem(400, "invalid_query", "scope is all (every node's part) or node (this node's)")
    prepared: list[Any] = []

    async def work() -> web.Response:
        prepared.append(await rights.prepare_export(node, claims, identity, everywhere=scope == "all"))
        return web.Response(status=204)

    refused = await _refusals(work)
    if not prepared:
        return refused
    archive = prepared[0]
    try:
        return await _send(request, node, claims, archive)
    finally:
        rights.discard(archive)


async def _send(request: web.Request, node: Node, claims: Claims, archive: Any) -> web.StreamResponse:
    identity = archive.identity
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": f'attachment; filename="medstage-{archive.export_id}.tar"',
            "X-Export-Id": archive.export_id,
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    chunks = iter(archive)
    try:
        while batch := await asyncio.to_thread(rights.batches, chunks):
            await response.write(batch)
    except OSError as exc:  # a file went away under the archive: it ends short, and is not recorded
        log.error("access export cut short", extra={"identity": identity, "error": repr(exc)})
        raise
    if not rights.gathering(claims):  # a node's part of another node's archive: that one records it
        try:
            await rights.finish_export(node, claims, archive)
        except (PeopleError, BackendError, LedgerError, OSError) as exc:
            log.error("access export not recorded", extra={"identity": identity, "error": repr(exc)})
    await response.write_eof()
    return response


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/people/{identity}/nominees", nominate),
        web.get("/api/people/{identity}/nominees", list_nominees),
        web.delete("/api/people/{identity}/nominees/{nominee}", withdraw),
        web.get("/api/people/{identity}/export", export),
        web.patch("/api/people/{identity}/profile", correct_profile),
    ]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("people")
_IDENTITY = spec.path_param("identity", "The person: a token subject (`sub`)", maxLength=128)
_NOMINEE = spec.path_param("nominee", "The nominee's identity", maxLength=128)
_UNAVAILABLE = spec.refused(
    "The shared store is unreachable, or this node's people ledger cannot be used",
    "unavailable",
    "people_diverged",
    "people_busy",
    "people_ledger_broken",
    "people_ledger_unwritable",
)
_FORBIDDEN = spec.refused(
    "Not the person (with a person-level token), a nominee where allowed, or the platform",
    "not_allowed",
    "person_token_required",
    "identity_revoked",
)
OPENAPI.add(
    "post",
    "/api/people/{identity}/nominees",
    "nominate",
    "Nominate another identity to exercise the person's data rights",
    {
        "201": spec.ok(NomineeChange, "Nominated: the people ledger entry written"),
        "400": spec.refused(
            "The body or an identity is invalid",
            "invalid_body",
            "bad_text",
            "bad_identity",
            "self_nomination",
        ),
        "401": spec.UNAUTHORIZED,
        "403": _FORBIDDEN,
        "409": spec.refused("Already a nominee in force", "already_nominated"),
        "503": _UNAVAILABLE,
    },
    params=[_IDENTITY],
    request=spec.body(NomineeCreate, required=True),
    description="The person's own person-level token (its `sub` is the identity, no `stage` or `club`) "
    "or a platform token. Sends `person.nominee_changed` (docs/webhooks.md).",
)
OPENAPI.add(
    "get",
    "/api/people/{identity}/nominees",
    "listNominees",
    "The person's nominees in force",
    {
        "200": spec.ok(NomineeList, "The nominees, oldest grant first"),
        "400": spec.refused("The identity is invalid", "bad_identity"),
        "401": spec.UNAUTHORIZED,
        "403": _FORBIDDEN,
        "503": _UNAVAILABLE,
    },
    params=[_IDENTITY],
    description="The person, a nominee in force (person-level tokens) or the platform.",
)
OPENAPI.add(
    "delete",
    "/api/people/{identity}/nominees/{nominee}",
    "withdrawNominee",
    "Withdraw a nomination",
    {
        "200": spec.ok(NomineeChange, "Withdrawn: the people ledger entry written"),
        "400": spec.refused("An identity is invalid", "bad_identity"),
        "401": spec.UNAUTHORIZED,
        "403": _FORBIDDEN,
        "404": spec.refused("Not a nominee in force", "not_nominated"),
        "503": _UNAVAILABLE,
    },
    params=[_IDENTITY, _NOMINEE],
    description="The person, the platform, or the nominee stepping down (person-level tokens). Sends "
    "`person.nominee_changed`.",
)
OPENAPI.add(
    "get",
    "/api/people/{identity}/export",
    "exportPerson",
    "The person's subject access archive: everything this node holds about them",
    {
        "200": {
            "description": "A tar archive, streamed (chunked): the person's data in every session, "
            "club and ledger of this node, `index.json` last (every member with its size and SHA-256); "
            'docs/recording.md, "Subject access archive". Header `X-Export-Id`: the archive\'s id.',
            "content": {
                "application/x-tar": {"schema": {"type": "string", "contentMediaType": "application/x-tar"}}
            },
        },
        "400": spec.refused("The identity or the query is invalid", "bad_identity", "invalid_query"),
        "401": spec.UNAUTHORIZED,
        "403": _FORBIDDEN,
        "503": _UNAVAILABLE,
    },
    params=[
        _IDENTITY,
        {
            "name": "scope",
            "in": "query",
            "required": False,
            "description": "`all` (default): every live node's part (other nodes' as `nodes/<node id>.tar` "
            "members); `node`: this node's part only",
            "schema": {"type": "string", "enum": ["all", "node"], "default": "all"},
        },
    ],
    description="The person, a nominee in force (person-level tokens) or the platform. Once the archive "
    "was sent to its end: an `access` record in the people ledger (digests and counts, never content) "
    "and the `person.exported` webhook (docs/webhooks.md).",
)
OPENAPI.add(
    "patch",
    "/api/people/{identity}/profile",
    "correctProfile",
    "Correct the person's display name and profile fields",
    {
        "200": spec.ok(ProfileCorrected, "Corrected: the profile now, and the people ledger entry written"),
        "400": spec.refused(
            "The body, a field or the identity is invalid",
            "invalid_body",
            "invalid_profile",
            "bad_text",
            "bad_identity",
        ),
        "401": spec.UNAUTHORIZED,
        "403": _FORBIDDEN,
        "503": _UNAVAILABLE,
    },
    params=[_IDENTITY],
    request=spec.body(ProfileCorrection, required=True),
    description="The person, a nominee in force (person-level tokens) or the platform. The new name shows "
    "at once on every stage of this node the person is on (`participant.updated`), and in the reports and "
    "playback pages of existing recordings. A `correction` record in the people ledger (field names and "
    "hashes, never values) and the `person.corrected` webhook (docs/webhooks.md).",
)
