"""What every API route shares: problem documents (RFC 9457, with a stable ``code``) and the caller's
verified bearer token."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from server.auth import Claims
from server.host.node import Node


def problem(status: int, code: str, detail: str) -> web.Response:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
    }
    return web.json_response(body, status=status, content_type="application/problem+json")


def bearer(request: web.Request) -> Claims:
    """The caller's verified token (AuthError otherwise: the middleware makes it a 401/403)."""
    node: Node = request.app["node"]
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
    return node.auth.verify(token or request.query.get("access_token"))
