"""The HTTP API of stages (and ``routes()``: the node's HTTP API but the clubs and the document, with
the modules beside this one: recordings.py, tokens.py, health.py). Errors are RFC 9457 problem
documents with a code. Every /api call needs ``Authorization: Bearer <access token>`` (server/auth.py):
a platform token (``admin``) for the platform's calls, a stage token for what a participant may see.
Bodies are the structs below, decoded by ``bodies.read_json`` and encoded by ``common.answer``; they
also make this module's entries of /api/openapi.json (``OPENAPI``, server/api/spec.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, Struct, UnsetType

from rooms.clubs import ClubNotFound
from rooms.errors import DomainError, StageExists, StageNotFound
from server.api import health, quality, recordings, spec, tokens
from server.api.bodies import BadBody, read_json
from server.api.common import Role, answer, bearer, problem, stage_caller
from server.backend import BackendError
from server.host.node import Node
from server.routing.errors import StageUnavailable
from server.wire import StageId

_STATUS: dict[type[DomainError], int] = {StageNotFound: 404, StageExists: 409, StageUnavailable: 503}

Count = Annotated[int, Meta(ge=0)]


# --- bodies -------------------------------------------------------------------------------------------


class StageCreate(Struct, kw_only=True):
    """Every field is optional; a missing id is generated, a missing title is the id."""

    id: StageId | None = None
    title: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    state: Annotated[
        Literal["live", "scheduled"],
        Meta(description="scheduled: the host starts it with `stage.start`; nobody publishes before"),
    ] = "live"
    club: StageId | None = None
    recording_retention_days: (
        Annotated[
            int,
            Meta(
                ge=0,
                le=36_500,
                description="Days this stage's recordings are kept after they stop (0: forever); absent: "
                "its club's, else the node's `recording_retention_days`",
            ),
        ]
        | None
    ) = None


# --- responses ----------------------------------------------------------------------------------------


class Stage(Struct, kw_only=True):
    """A stage hosted by the node that answers."""

    id: str
    title: str
    state: Literal["scheduled", "live", "ended"]
    locked: bool
    club_id: str | None
    node: Annotated[str, Meta(description="The hosting node's id")]
    participants: Count
    publishers: Count
    url: Annotated[str, Meta(description="The browser client's page")]


class RemoteStage(Struct, kw_only=True):
    """A stage hosted by another node of the deployment: which one."""

    id: str
    node: str
    node_url: str
    participants: Count
    url: str


class StageList(Struct, kw_only=True):
    node: str
    stages: list[Stage]


class KindFlags(Struct, kw_only=True):
    audio: bool
    video: bool


class Participant(Struct, kw_only=True, omit_defaults=True):
    """`identity` and `joined_at` only for callers with the `moderate` grant."""

    id: str
    name: str
    role: Role
    publishing: KindFlags
    muted: KindFlags
    moderator_muted: KindFlags
    sharing: KindFlags
    share_muted: KindFlags
    chat_muted: bool
    hand_raised: bool
    quality: Annotated[
        Literal["excellent", "good", "poor", "lost"] | None,
        Meta(description="Connection quality measured by the node; null until measured"),
    ]
    observer: bool = False
    identity: str | UnsetType = UNSET
    joined_at: Annotated[float, Meta(description="Unix time, seconds")] | UnsetType = UNSET


class ParticipantList(Struct, kw_only=True):
    stage_id: str
    participants: list[Participant]


# --- handlers -----------------------------------------------------------------------------------------


def _stage(node: Node, live: Any) -> Stage:
    return msgspec.convert(node.stage_info(live), Stage)


def _hosted(request: web.Request) -> Any:
    node: Node = request.app["node"]
    live = node.stages.get(request.match_info["stage_id"])
    if live is None:
        raise web.HTTPNotFound(reason="Stage not hosted by this node")
    return live


async def create_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    bearer(request).require_admin()
    try:
        body = await read_json(request, StageCreate)
    except BadBody as exc:
        return problem(400, exc.code, str(exc))
    if body.club is not None:
        try:
            await node.clubs.get(body.club)
        except ClubNotFound:
            return problem(404, "club_not_found", f"no club {body.club}: create it first (POST /api/clubs)")
        except BackendError as exc:
            return problem(503, "unavailable", f"the shared store is unreachable: {exc}")
    try:
        live = await node.create_stage(
            body.id,
            body.title,
            scheduled=body.state == "scheduled",
            club_id=body.club,
            retention_days=body.recording_retention_days,
        )
    except DomainError as exc:
        response = problem(_STATUS.get(type(exc), 400), exc.code, exc.message)
        if isinstance(exc, StageUnavailable):
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    return answer(_stage(node, live), 201)


async def get_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    stage_id = request.match_info["stage_id"]
    live = node.stages.get(stage_id)
    if live is not None:
        stage_caller(request, live)
        return answer(_stage(node, live))
    claims = bearer(request)
    if not claims.admin and claims.stage != stage_id:
        claims.require_stage(stage_id, None)
    try:  # hosted by another node: say which (its clients may join through any node)
        owner = await node.cluster.backend.owner(stage_id)
        present = await node.cluster.backend.presence(stage_id) if owner is not None else {}
    except BackendError:
        owner = None
    if owner is None:
        return problem(404, "stage_not_found", f"stage {stage_id} is not live on any node")
    return answer(
        RemoteStage(
            id=stage_id,
            node=owner.node_id,
            node_url=owner.node_url,
            participants=len(present),
            url=f"{node.config.url}/s/{stage_id}",
        )
    )


async def list_stages(request: web.Request) -> web.Response:
    """The stages this node hosts (the platform asks each node, or its load balancer, in turn)."""
    node: Node = request.app["node"]
    bearer(request).require_admin()
    stages = [_stage(node, live) for live in node.stages.values()]
    return answer(StageList(node=node.cluster.node_id, stages=stages))


async def end_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    live = _hosted(request)
    stage_caller(request, live, "moderate")
    try:
        live.apply(lambda stage, now: stage.end(None, now))
    except DomainError as exc:
        return problem(409, exc.code, exc.message)
    return answer(_stage(node, live))


async def list_participants(request: web.Request) -> web.Response:
    live = _hosted(request)
    moderator = stage_caller(request, live).has("moderate")
    people = []
    for person in live.stage.participants.values():
        view = msgspec.convert(person.snapshot(), Participant)
        if moderator:
            view.identity, view.joined_at = person.identity, person.joined_at
        people.append(view)
    return answer(ParticipantList(stage_id=live.stage.id, participants=people))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/stages", create_stage),
        web.get("/api/stages", list_stages),
        web.get("/api/stages/{stage_id}", get_stage),
        web.post("/api/stages/{stage_id}/end", end_stage),
        web.get("/api/stages/{stage_id}/participants", list_participants),
        *quality.routes(),
        *recordings.routes(),
        *tokens.routes(),
        *health.routes(),
    ]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("stages")
_NOT_HOSTED = spec.refused(
    "This node does not host the stage (ask the node that does: `GET /api/stages/{stage_id}` names it)",
    "stage_not_hosted_by_this_node",
)
_ADMIN = {"401": spec.UNAUTHORIZED, "403": spec.FORBIDDEN_ADMIN}

OPENAPI.add(
    "post",
    "/api/stages",
    "createStage",
    "Create a stage (live, or scheduled) hosted by this node",
    {
        "201": spec.ok(Stage, "Created"),
        "400": spec.refused("The body is not a valid stage", "invalid_body", "bad_text"),
        **_ADMIN,
        "404": spec.refused("The body names a club that does not exist", "club_not_found"),
        "409": spec.refused("A stage with this id exists (here or on another node)", "stage_exists"),
        "503": spec.refused(
            "The shared store is unreachable: try again",
            "stage_unavailable",
            "unavailable",
            retry_after="Seconds (with `stage_unavailable`)",
        ),
    },
    request=spec.body(StageCreate),
)
OPENAPI.add(
    "get",
    "/api/stages",
    "listStages",
    "The stages this node hosts (ask each node, or each through its load balancer)",
    {"200": spec.ok(StageList, "The stages"), **_ADMIN},
)
OPENAPI.add(
    "get",
    "/api/stages/{stage_id}",
    "getStage",
    "A stage, or, when another node hosts it, which node",
    {
        "200": spec.ok(spec.one_of(Stage, RemoteStage), "The stage"),
        "401": spec.UNAUTHORIZED,
        "403": spec.FORBIDDEN_STAGE,
        "404": spec.refused("The stage is not live on any node", "stage_not_found"),
    },
    params=[spec.STAGE_ID],
)
OPENAPI.add(
    "post",
    "/api/stages/{stage_id}/end",
    "endStage",
    "End a stage (needs the `moderate` grant, or a platform token)",
    {
        "200": spec.ok(Stage, "The ended stage"),
        "401": spec.UNAUTHORIZED,
        "403": spec.FORBIDDEN_GRANT,
        "404": _NOT_HOSTED,
        "409": spec.refused("The stage has already ended", "stage_ended"),
    },
    params=[spec.STAGE_ID],
)
OPENAPI.add(
    "get",
    "/api/stages/{stage_id}/participants",
    "listParticipants",
    "Who is on the stage (identities only for moderators and the platform)",
    {
        "200": spec.ok(ParticipantList, "The participants"),
        "401": spec.UNAUTHORIZED,
        "403": spec.FORBIDDEN_STAGE,
        "404": _NOT_HOSTED,
    },
    params=[spec.STAGE_ID],
)
