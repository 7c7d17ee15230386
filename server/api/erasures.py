"""Erasure over HTTP (issue 15): ``POST /api/people/{identity}/erase`` erases the person on every node
and answers with the proof (200: done synchronously; a session being recorded is erased when it
stops, and the proof says ``pending`` until then), ``GET /api/people/{identity}/erasures/{id}`` gives
the proof again. Who may: the person (person-level token), a nominee in force, the platform
(server/host/people.py). server/host/erasure.py has the steps; docs/protocol.md, "People".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from server.api import spec
from server.api.common import answer, bearer, problem
from server.api.people import _IDENTITY, _UNAVAILABLE, _refusals
from server.host.node import Node


class ErasedKeys(Struct, kw_only=True):
    destroyed: Annotated[list[str], Meta(description="The live key destroyed now (empty: none was live)")]
    erased_key_ids: Annotated[
        list[str], Meta(description="Every key id of the person: their files were deleted")
    ]
    tombstone: Annotated[
        dict[str, Any] | None, Meta(description="The key's tombstone (null: another node destroyed it)")
    ]


class ErasedSession(Struct, kw_only=True):
    stage_id: str
    session_id: str
    participant_ids: list[str]
    files_deleted: Annotated[list[str], Meta(description="Relative to the session directory")]
    files_rewritten: list[str]
    timeline_items: Annotated[int, Meta(ge=0, description="Timeline events changed")]
    ledger_redacted: Annotated[list[int], Meta(description="Consent ledger indexes made `redacted`")]
    ledger_record: Annotated[
        dict[str, Any] | None, Meta(description="The session ledger's `erasure` record: index, hash")
    ]
    exports_deleted: bool
    needs_export: bool
    remains: Annotated[dict[str, int], Meta(description="The person's items kept as anonymous counts")]
    skipped: Annotated[
        str | None,
        Meta(
            description="`recording` (erased once it stops), `unfinished` (repair it, erase again), "
            "`no_key` (signed by another node), `busy`, `damaged`, `io_error`"
        ),
    ]


class LedgerProof(Struct, kw_only=True):
    index: Annotated[int, Meta(ge=0, description="The people ledger entry of the erasure")]
    hash: str
    record: dict[str, Any]


class ErasureProof(Struct, kw_only=True):
    version: int
    erasure_id: str
    identity: str
    by: str
    as_: Literal["person", "nominee", "platform"] = msgspec.field(name="as")
    at: Annotated[float, Meta(description="Unix time, seconds")]
    status: Annotated[
        Literal["done", "pending", "incomplete"],
        Meta(
            description="`pending`: a session waits for its recording to stop; `incomplete`: a "
            "session's `skipped` says why it could not be erased (erase again once fixed)"
        ),
    ]
    keys: ErasedKeys
    connections_closed: int
    nodes_told: int
    clubs_left: list[str]
    sessions: list[ErasedSession]
    exports_queued: list[dict[str, Any]]
    ledger: Annotated[
        LedgerProof | None,
        Meta(description="The people ledger's erasure entry (null: not yet on this node's copy)"),
    ]
    remains: dict[str, Any]


async def erase(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    claims = bearer(request)
    identity = request.match_info["identity"]

    async def work() -> web.Response:
        proof = await node.erasure.erase(claims, identity)
        return answer(msgspec.convert(proof, ErasureProof))

    return await _refusals(work)


async def proof(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    claims = bearer(request)
    identity, erasure_id = request.match_info["identity"], request.match_info["erasure_id"]

    async def work() -> web.Response:
        found = await node.erasure.proof(claims, identity, erasure_id)
        try:
            return answer(msgspec.convert(found, ErasureProof))
        except msgspec.ValidationError as exc:
            return problem(500, "proof_damaged", f"the proof {erasure_id} on this node is not a proof: {exc}")

    return await _refusals(work)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/people/{identity}/erase", erase),
        web.get("/api/people/{identity}/erasures/{erasure_id}", proof),
    ]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("people")
_ERASURE_ID = spec.path_param("erasure_id", "The erasure (`er-` and 16 hex digits)", maxLength=64)
_FORBIDDEN = spec.refused(
    "Not the person (with a person-level token), a nominee in force, or the platform",
    "not_allowed",
    "person_token_required",
    "identity_revoked",
)
OPENAPI.add(
    "post",
    "/api/people/{identity}/erase",
    "erasePerson",
    "Erase the person: their key, files, recorded content, memberships and connections",
    {
        "200": spec.ok(ErasureProof, "Erased; the proof (also at /api/people/{identity}/erasures/{id})"),
        "400": spec.refused("The identity is invalid", "bad_identity"),
        "401": spec.UNAUTHORIZED,
        "403": _FORBIDDEN,
        "503": spec.refused(
            "The shared store is unreachable, this node's people ledger or signing key cannot be used",
            "unavailable",
            "people_diverged",
            "people_busy",
            "people_ledger_broken",
            "people_ledger_unwritable",
            "no_signing_key",
        ),
    },
    params=[_IDENTITY],
    description="The person's own person-level token, a nominee's, or a platform token. Synchronous: "
    "the answer is the proof; sessions being recorded are erased when they stop (`status: pending` "
    "until then), composite exports are queued again. Erasing again changes nothing that is done. "
    "Sends `person.erased` (docs/webhooks.md); closes the person's sockets with 4005.",
)
OPENAPI.add(
    "get",
    "/api/people/{identity}/erasures/{erasure_id}",
    "erasureProof",
    "The proof of an erasure made on this node",
    {
        "200": spec.ok(ErasureProof, "The proof"),
        "400": spec.refused("The identity is invalid", "bad_identity"),
        "401": spec.UNAUTHORIZED,
        "403": _FORBIDDEN,
        "404": spec.refused("No such erasure of this person on this node", "erasure_not_found"),
        "500": spec.refused("The proof file on this node was damaged", "proof_damaged"),
        "503": _UNAVAILABLE,
    },
    params=[_IDENTITY, _ERASURE_ID],
    description="The person, a nominee in force (person-level tokens) or the platform.",
)
