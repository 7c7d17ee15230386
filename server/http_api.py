"""The HTTP API: stages, health, metrics. Errors are RFC 9457 problem documents with a code."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import web

from rooms.errors import DomainError, StageExists, StageNotFound
from server import metrics
from server.stages import Node
from server.wire import StageId

_STATUS = {StageNotFound: 404, StageExists: 409}


def problem(status: int, code: str, detail: str) -> web.Response:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
    }
    return web.json_response(body, status=status, content_type="application/problem+json")


async def create_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    body: Any = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return problem(400, "invalid_body", "the body must be a JSON object")
    if not isinstance(body, dict):
        return problem(400, "invalid_body", "the body must be a JSON object")
    stage_id, title = body.get("id"), body.get("title")
    if stage_id is not None and not _valid_stage_id(stage_id):
        return problem(400, "invalid_body", "id: 1-64 characters of A-Z a-z 0-9 _ -")
    if title is not None and (not isinstance(title, str) or not 1 <= len(title) <= 200):
        return problem(400, "invalid_body", "title: a string of 1-200 characters")
    state = body.get("state", "live")
    if state not in ("live", "scheduled"):
        return problem(400, "invalid_body", "state: live or scheduled")
    try:
        live = node.create_stage(stage_id, title, scheduled=state == "scheduled")
    except DomainError as exc:
        return problem(_STATUS.get(type(exc), 400), exc.code, exc.message)
    return web.json_response(node.stage_info(live), status=201)


async def get_stage(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    try:
        live = node.get(request.match_info["stage_id"])
    except StageNotFound as exc:
        return problem(404, exc.code, exc.message)
    return web.json_response(node.stage_info(live))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


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
        web.get("/api/stages/{stage_id}", get_stage),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics_handler),
    ]
