"""Tokens over HTTP: development tokens for whoever asks (development mode only), and the revocation
of an identity on every node (the platform)."""

from __future__ import annotations

import secrets
from typing import Annotated

from aiohttp import web
from msgspec import Meta, Struct

from server.api import spec
from server.api.bodies import BadBody, read_json
from server.api.common import Grant, Role, answer, bearer, problem
from server.backend import BackendError
from server.host.node import Node


class DevTokenRequest(Struct, kw_only=True):
    """Claims of the token to mint (server/auth.py); all optional."""

    identity: Annotated[str, Meta(description="Generated when missing; cut to 64 characters")] | None = None
    name: str | None = None
    role: Role | None = None
    stage: str | None = None
    club: str | None = None
    grants: list[Grant] | None = None
    admin: bool = False


class DevToken(Struct, kw_only=True):
    token: Annotated[str, Meta(description="A JWT valid for 12 hours")]
    identity: str


class Revocation(Struct, kw_only=True):
    identity: str
    revoked: bool
    disconnected: Annotated[
        int, Meta(ge=0, description="Connections of the identity this node closed (4403)")
    ]


async def dev_token(request: web.Request) -> web.Response:
    """Development mode only: a token for whoever asks (the browser client uses it)."""
    node: Node = request.app["node"]
    if not node.auth.dev:
        return problem(403, "dev_mode_off", "API keys are configured: tokens come from the platform")
    try:
        body = await read_json(request, DevTokenRequest)
    except BadBody as exc:
        return problem(400, exc.code, str(exc))
    identity = (body.identity or "dev-" + secrets.token_hex(6))[:64]
    try:  # an empty text is no claim, as if absent
        token = node.auth.mint(
            identity,
            name=body.name or None,
            role=body.role,
            stage=body.stage or None,
            club=body.club or None,
            grants=body.grants,
            admin=body.admin,
            ttl_s=12 * 3600,
        )
    except (ValueError, TypeError) as exc:
        return problem(400, "invalid_body", str(exc))
    return answer(DevToken(token=token, identity=identity))


async def revoke_identity(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    bearer(request).require_admin()
    identity = request.match_info["identity"]
    try:
        closed = await node.revoke(identity)
    except BackendError as exc:
        return problem(503, "unavailable", f"the shared store is unreachable: {exc}")
    return answer(Revocation(identity=identity, revoked=True, disconnected=closed))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/dev/token", dev_token),
        web.post("/api/identities/{identity}/revoke", revoke_identity),
    ]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("tokens")
OPENAPI.add(
    "post",
    "/api/dev/token",
    "devToken",
    "Development mode only: a token for whoever asks",
    {
        "200": spec.ok(DevToken, "The token"),
        "400": spec.refused("The body or a claim is invalid", "invalid_body", "bad_text"),
        "403": spec.refused("API keys are configured: tokens come from the platform", "dev_mode_off"),
    },
    request=spec.body(DevTokenRequest, required=True),
    description="Open while the node has no configured API keys (server/auth.py); "
    "refused once `MEDSTAGE_API_KEYS` is set.",
    public=True,
)
OPENAPI.add(
    "post",
    "/api/identities/{identity}/revoke",
    "revokeIdentity",
    "Refuse an identity on every node from now on, and disconnect it here",
    {
        "200": spec.ok(Revocation, "Revoked"),
        "401": spec.UNAUTHORIZED,
        "403": spec.FORBIDDEN_ADMIN,
        "503": spec.refused("The shared store is unreachable", "unavailable"),
    },
    params=[spec.path_param("identity", "The token subject (`sub`)")],
)
