"""What every API route shares: problem documents (RFC 9457, with a stable ``code``), answers encoded
from structs, and the caller's verified bearer token."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from server.auth import Claims
from server.host.node import Node

# server/auth.py's ROLES and GRANTS, spelled out for the schemas and the type checker (a test compares).
Role = Literal["host", "moderator", "speaker", "audience"]
Grant = Literal["comment", "moderate", "publish", "record", "subscribe", "watch"]


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem document; `code` is stable (for programs), `detail` for people."""

    type: Literal["about:blank"]
    title: Annotated[str, Meta(examples=["Forbidden"])]
    status: Annotated[int, Meta(ge=400, le=599)]
    code: Annotated[str, Meta(examples=["stage_exists", "token_expired"])]
    detail: str


def problem(status: int, code: str, detail: str) -> web.Response:
    title = HTTPStatus(status).phrase
    body = Problem(type="about:blank", title=title, status=status, code=code, detail=detail)
    return answer(body, status, "application/problem+json")


def answer(value: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    """``value`` (a struct, or builtins made of structs) as a JSON response."""
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type=content_type, charset="utf-8"
    )


def bearer(request: web.Request) -> Claims:
    """The caller's verified token (AuthError otherwise: the middleware makes it a 401/403)."""
    node: Node = request.app["node"]
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
    return node.auth.verify(token or request.query.get("access_token"))


def stage_caller(request: web.Request, live: Any, grant: str | None = None) -> Claims:
    """A platform token, or a token for this stage (with ``grant``)."""
    claims = bearer(request)
    claims.require_stage(live.stage.id, live.stage.club_id)
    if grant is not None:
        claims.require(grant)
    return claims
