"""The OpenAPI 3.1 document of the node's HTTP API (server/api/), served at /api/openapi.json.

Assembled from the route modules' ``OPENAPI`` entries (server/api/spec.py): their operations, and
the JSON Schemas of the structs their handlers decode and encode as ``components/schemas``. What is
written here is only what no struct says: the info, the security schemes, the 401 answer.
tests/server/test_openapi.py checks that every documented operation is a route of the app, every
/api route is documented, and a real node answers as documented.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from server.api import clubs, erasures, health, people, playback, quality, recordings, spec, stages, tokens
from server.api.common import Problem

_OWN = spec.Paths("operations")
_OWN.add(
    "get",
    "/api/openapi.json",
    "openapi",
    "This document",
    {"200": spec.ok({"type": "object"}, "The OpenAPI document")},
    public=True,
)
# The node's document; the clubs' paths are merged in when served (``document(clubs.OPENAPI_PATHS)``),
# their schemas are here already.
_MODULES = (
    stages.OPENAPI,
    quality.OPENAPI,
    recordings.OPENAPI,
    playback.OPENAPI,
    tokens.OPENAPI,
    people.OPENAPI,
    erasures.OPENAPI,
    health.OPENAPI,
    _OWN,
)

_DOCUMENT: spec.Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "medstage node HTTP API",
        "version": "1",
        "description": "Stages, participants, recordings and tokens on a medstage node; health, "
        "readiness and metrics for operators. The participant protocol (WebSocket /ws) is in "
        "docs/protocol.md. Errors are RFC 9457 problem documents with a stable `code`.",
    },
    "tags": [
        {"name": "stages"},
        {"name": "recordings"},
        {"name": "tokens"},
        {"name": "clubs"},
        {
            "name": "people",
            "description": "Data rights: nominees, access, correction, erasure (docs/protocol.md, People)",
        },
        {"name": "operations", "description": "Open: for load balancers and scrapers"},
    ],
    "security": [{"bearer": []}, {"access_token": []}],
    "paths": {path: item for module in _MODULES for path, item in module.paths.items()},
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token (HS256, `kid` names the API key): a platform token "
                "(`admin: true`) for the platform's calls, a stage or club token for what a "
                "participant may see (docs/protocol.md, Access tokens).",
            },
            "access_token": {
                "type": "apiKey",
                "in": "query",
                "name": "access_token",
                "description": "The same token as a query parameter, for links (downloads) that "
                "cannot carry a header.",
            },
        },
        "responses": {
            "Unauthorized": {
                **spec.refused(
                    "No valid token: missing, malformed, forged, unknown key, or expired",
                    "token_missing",
                    "token_invalid",
                    "token_expired",
                ),
                "headers": {
                    "WWW-Authenticate": {
                        "schema": {"type": "string"},
                        "description": 'Bearer error="invalid_token", error_description="<code>"',
                    }
                },
            },
        },
        "schemas": spec.components(
            [Problem, *(kind for module in (*_MODULES, clubs.OPENAPI) for kind in module.types)]
        ),
    },
}


def document(extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document, with ``extra_paths`` (path -> operations by method) merged in: a fresh copy that
    the caller may change."""
    doc = copy.deepcopy(_DOCUMENT)
    for path, operations in (extra_paths or {}).items():
        doc["paths"][path] = {**doc["paths"].get(path, {}), **copy.deepcopy(operations)}
    return doc


async def openapi_document(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document: public documentation, no token. The clubs' paths are declared
    beside their handlers (server/api/clubs.py)."""
    return web.json_response(document(clubs.OPENAPI_PATHS))


def routes() -> list[web.RouteDef]:
    return [web.get("/api/openapi.json", openapi_document)]
