"""The HTTP API: stages, recordings, tokens, health, metrics. Errors are RFC 9457 problem documents
with a code. Every /api call needs ``Authorization: Bearer <access token>`` (server/auth.py): a
platform token (``admin``) for the platform's calls, a stage token for what a participant may see;
health, readiness and metrics are open (for load balancers and scrapers on the operator's network)."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from rooms.clubs import ClubNotFound
from rooms.errors import DomainError, StageExists, StageNotFound
from server import metrics
from server.api.bodies import BadBody, read_json
from server.api.common import bearer, problem
from server.auth import Claims
from server.backend import BackendError
from server.host.node import Node
from server.routing.errors import StageUnavailable
from server.wire import StageId

_STATUS = {StageNotFound: 404, StageExists: 409, StageUnavailable: 503}
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The body as a JSON object (empty: ``{}``), or the problem to answer."""
    try:
        body: dict[str, Any] = await read_json(request, dict[str, Any])
    except BadBody as exc:
        return problem(400, exc.code, str(exc))
    return body


def stage_caller(request: web.Request, live: Any, grant: str | None = None) -> Claims:
    """A platform token, or a token for this stage (with ``grant``)."""
    claims = bearer(request)
    claims.require_stage(live.stage.id, live.stage.club_id)
    if grant is not None:
        claims.require(grant)
    return claims


async def create_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    bearer(request).require_admin()
    body = await _json_object(request)
    if isinstance(body, web.Response):
        return body
    stage_id, title = body.get("id"), body.get("title")
    if stage_id is not None and not _valid_stage_id(stage_id):
        return problem(400, "invalid_body", "id: 1-64 characters of A-Z a-z 0-9 _ -")
    if title is not None and (not isinstance(title, str) or not 1 <= len(title) <= 200):
        return problem(400, "invalid_body", "title: a string of 1-200 characters")
    state = body.get("state", "live")
    if state not in ("live", "scheduled"):
        return problem(400, "invalid_body", "state: live or scheduled")
    club = body.get("club")
    if club is not None and not _valid_stage_id(club):
        return problem(400, "invalid_body", "club: 1-64 characters of A-Z a-z 0-9 _ -")
    if club is not None:
        try:
            await node.clubs.get(club)
        except ClubNotFound:
            return problem(404, "club_not_found", f"no club {club}: create it first (POST /api/clubs)")
        except BackendError as exc:
            return problem(503, "unavailable", f"the shared store is unreachable: {exc}")
    try:
        live = await node.create_stage(stage_id, title, scheduled=state == "scheduled", club_id=club)
    except DomainError as exc:
        response = problem(_STATUS.get(type(exc), 400), exc.code, exc.message)
        if isinstance(exc, StageUnavailable):
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    return web.json_response(node.stage_info(live), status=201)


async def get_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    stage_id = request.match_info["stage_id"]
    live = node.stages.get(stage_id)
    if live is not None:
        stage_caller(request, live)
        return web.json_response(node.stage_info(live))
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
    return web.json_response(
        {
            "id": stage_id,
            "node": owner.node_id,
            "node_url": owner.node_url,
            "participants": len(present),
            "url": f"{node.config.url}/s/{stage_id}",
        }
    )


async def list_stages(request: web.Request) -> web.Response:
    """The stages this node hosts (the platform asks each node, or its load balancer, in turn)."""
    node: Node = request.app["node"]
    bearer(request).require_admin()
    return web.json_response(
        {"node": node.cluster.node_id, "stages": [node.stage_info(live) for live in node.stages.values()]}
    )


async def end_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    live = _hosted(request)
    stage_caller(request, live, "moderate")
    try:
        live.apply(lambda stage, now: stage.end(None, now))
    except DomainError as exc:
        return problem(409, exc.code, exc.message)
    return web.json_response(node.stage_info(live))


async def list_participants(request: web.Request) -> web.Response:
    live = _hosted(request)
    claims = stage_caller(request, live)
    moderator = claims.has("moderate")
    people = [
        {**p.snapshot(), **({"identity": p.identity, "joined_at": p.joined_at} if moderator else {})}
        for p in live.stage.participants.values()
    ]
    return web.json_response({"stage_id": live.stage.id, "participants": people})


def _hosted(request: web.Request) -> Any:
    node: Node = request.app["node"]
    live = node.stages.get(request.match_info["stage_id"])
    if live is None:
        raise web.HTTPNotFound(reason="Stage not hosted by this node")
    return live


async def dev_token(request: web.Request) -> web.Response:
    """Development mode only: a token for whoever asks (the browser client uses it)."""
    node: Node = request.app["node"]
    if not node.auth.dev:
        return problem(403, "dev_mode_off", "API keys are configured: tokens come from the platform")
    body = await _json_object(request)
    if isinstance(body, web.Response):
        return body
    identity = body.get("identity") or "dev-" + secrets.token_hex(6)
    try:
        token = node.auth.mint(
            str(identity)[:64],
            name=body.get("name") or None,
            role=body.get("role") or None,
            stage=body.get("stage") or None,
            club=body.get("club") or None,
            grants=body.get("grants"),
            admin=body.get("admin") is True,
            ttl_s=12 * 3600,
        )
    except (ValueError, TypeError) as exc:
        return problem(400, "invalid_body", str(exc))
    return web.json_response({"token": token, "identity": identity})


async def revoke_identity(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    bearer(request).require_admin()
    identity = request.match_info["identity"]
    try:
        closed = await node.revoke(identity)
    except BackendError as exc:
        return problem(503, "unavailable", f"the shared store is unreachable: {exc}")
    return web.json_response({"identity": identity, "revoked": True, "disconnected": closed})


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving (a Redis outage does not make it unhealthy)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Whether this node can take new work: the backend answers, its relay inbox is open, and no
    events wait to be written. A load balancer sends new clients elsewhere while this is 503."""
    node: Node = request.app["node"]
    ready, reason = await node.cluster.readiness()
    body = {"status": "ready" if ready else "not_ready", "reason": reason, "node": node.cluster.node_id}
    return web.json_response(body, status=200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(
        body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def _valid_stage_id(value: Any) -> bool:
    import msgspec

    try:
        msgspec.convert(value, StageId)
    except msgspec.ValidationError:
        return False
    return True


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/stages", create_stage),
        web.get("/api/stages", list_stages),
        web.get("/api/stages/{stage_id}", get_stage),
        web.post("/api/stages/{stage_id}/end", end_stage),
        web.get("/api/stages/{stage_id}/participants", list_participants),
        web.post("/api/dev/token", dev_token),
        web.post("/api/identities/{identity}/revoke", revoke_identity),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_handler),
        *recording_routes(),
    ]


# --- recordings: the platform, and hosts and moderators of the stage (the "record" grant) ---------


def _authorized(request: web.Request) -> tuple[Any, web.Response | None]:
    node: Node = request.app["node"]
    try:
        live = node.get(request.match_info["stage_id"])
    except StageNotFound as exc:
        return None, problem(404, exc.code, exc.message)
    stage_caller(request, live, "record")
    return live, None


def _session_dir(request: web.Request, live: Any) -> Path | None:
    session_id = request.match_info["session_id"]
    if not _SESSION_ID.fullmatch(session_id):
        return None
    path = Path(request.app["config"].recordings_dir) / live.stage.id / session_id
    return path if (path / "manifest.json").is_file() else None


async def list_recordings(request: web.Request) -> web.Response:
    live, refusal = _authorized(request)
    if refusal is not None:
        return refusal
    root = Path(request.app["config"].recordings_dir) / live.stage.id
    sessions = []
    for manifest in sorted(root.glob("*/manifest.json")):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        sessions.append(
            {k: data.get(k) for k in ("session_id", "status", "started_at", "stopped_at")}
            | {"tracks": len(data.get("tracks") or [])}
        )
    return web.json_response({"stage_id": live.stage.id, "sessions": sessions})


async def get_recording(request: web.Request) -> web.StreamResponse:
    live, refusal = _authorized(request)
    if refusal is not None:
        return refusal
    directory = _session_dir(request, live)
    if directory is None:
        return problem(404, "not_found", "no such recording session")
    return web.FileResponse(directory / "manifest.json")


async def get_recording_file(request: web.Request) -> web.StreamResponse:
    live, refusal = _authorized(request)
    if refusal is not None:
        return refusal
    directory = _session_dir(request, live)
    if directory is None:
        return problem(404, "not_found", "no such recording session")
    target = _file_in(directory, request.match_info["name"])
    if target is None:
        return problem(404, "not_found", "no such file in this session")
    return web.FileResponse(target)


def _file_in(directory: Path, name: str) -> Path | None:
    """The session's finished file called ``name``: nothing outside the session, and no name the file
    system refuses (a NUL byte, a name too long, one that cannot be encoded) is a 500."""
    if "\x00" in name or len(name) > 1024:
        return None
    try:
        target = (directory / name).resolve()
        found = directory.resolve() in target.parents and target.is_file() and target.suffix != ".partial"
    except (OSError, ValueError):  # ENAMETOOLONG for a component over 255 bytes, UnicodeEncodeError
        return None
    return target if found else None


def recording_routes() -> list[web.RouteDef]:
    return [
        web.get("/api/stages/{stage_id}/recordings", list_recordings),
        web.get("/api/stages/{stage_id}/recordings/{session_id}", get_recording),
        web.get("/api/stages/{stage_id}/recordings/{session_id}/files/{name:.+}", get_recording_file),
    ]
