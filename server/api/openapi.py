"""The OpenAPI 3.1 document of the node's HTTP API (server/api/), served at /api/openapi.json.

Built once, as plain dicts: a route added to server/api/stages.py needs its entry here too, and
tests/server/test_openapi.py fails until it has one (every documented operation must be a route of
the app, and every /api route must be documented). The refusals listed for an operation are the ones
its handler can actually give: problem documents (RFC 9457) with a stable ``code``.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from server.api import clubs

Schema = dict[str, Any]

_PROBLEM = "application/problem+json"
_ID_PATTERN = "^[A-Za-z0-9_-]+$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str, *codes: str) -> Schema:
    """A refusal: a problem document whose ``code`` is one of ``codes``."""
    listed = ", ".join(f"`{c}`" for c in codes)
    return {
        "description": f"{description} (code: {listed})" if codes else description,
        "content": {_PROBLEM: {"schema": _ref("Problem")}},
    }


def _nullable(kind: str, **more: Any) -> Schema:
    return {"type": [kind, "null"], **more}


_UNAUTHORIZED: Schema = {"$ref": "#/components/responses/Unauthorized"}
# Every token-bearing /api call: a revoked identity is refused (server/app.py's middleware).
_REVOKED = "identity_revoked"
_FORBIDDEN_STAGE = _problem(
    "The token is for another stage or club, or its identity is revoked", "token_wrong_stage", _REVOKED
)
_FORBIDDEN_GRANT = _problem(
    "The token is for another stage or club, lacks the grant, or its identity is revoked",
    "token_wrong_stage",
    "missing_grant",
    _REVOKED,
)
_FORBIDDEN_ADMIN = _problem(
    "This call needs a platform token (`admin: true`) whose identity is not revoked",
    "admin_required",
    _REVOKED,
)
_NOT_HOSTED = _problem(
    "This node does not host the stage (ask the node that does: `GET /api/stages/{stage_id}` names it)",
    "stage_not_hosted_by_this_node",
)
_NOT_FOUND_STAGE = _problem("No such stage on this node", "stage_not_found")
_NO_SESSION = _problem("No such recording session, or no such file in it", "not_found")
_OPEN: list[Schema] = []  # no authentication


def _param(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


_STAGE_ID = _param(
    "stage_id", "The stage", {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _ID_PATTERN}
)
_SESSION_ID = _param(
    "session_id",
    "A recording session of the stage",
    {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _ID_PATTERN},
)

_SCHEMAS: dict[str, Schema] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem document; `code` is stable (for programs), `detail` for people.",
        "required": ["type", "title", "status", "code", "detail"],
        "properties": {
            "type": {"type": "string", "const": "about:blank"},
            "title": {"type": "string", "examples": ["Forbidden"]},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "code": {"type": "string", "examples": ["stage_exists", "token_expired"]},
            "detail": {"type": "string"},
        },
    },
    "StageCreate": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _ID_PATTERN},
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "state": {
                "type": "string",
                "enum": ["live", "scheduled"],
                "default": "live",
                "description": "scheduled: the host starts it with `stage.start`; nobody publishes before",
            },
            "club": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _ID_PATTERN},
        },
        "description": "Every field is optional; a missing id is generated, a missing title is the id.",
    },
    "Stage": {
        "type": "object",
        "description": "A stage hosted by the node that answers.",
        "required": ["id", "title", "state", "locked", "participants", "publishers", "url"],
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "state": {"type": "string", "enum": ["scheduled", "live", "ended"]},
            "locked": {"type": "boolean"},
            "club_id": _nullable("string"),
            "node": {"type": "string", "description": "The hosting node's id"},
            "participants": {"type": "integer", "minimum": 0},
            "publishers": {"type": "integer", "minimum": 0},
            "url": {"type": "string", "format": "uri", "description": "The browser client's page"},
        },
    },
    "RemoteStage": {
        "type": "object",
        "description": "A stage hosted by another node of the deployment: which one.",
        "required": ["id", "node", "node_url", "participants", "url"],
        "properties": {
            "id": {"type": "string"},
            "node": {"type": "string"},
            "node_url": {"type": "string"},
            "participants": {"type": "integer", "minimum": 0},
            "url": {"type": "string", "format": "uri"},
        },
    },
    "StageList": {
        "type": "object",
        "required": ["node", "stages"],
        "properties": {"node": {"type": "string"}, "stages": {"type": "array", "items": _ref("Stage")}},
    },
    "Participant": {
        "type": "object",
        "description": "`identity` and `joined_at` only for callers with the `moderate` grant.",
        "required": ["id", "name", "role", "publishing", "muted"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["host", "moderator", "speaker", "audience"]},
            "publishing": _ref("KindFlags"),
            "muted": _ref("KindFlags"),
            "moderator_muted": _ref("KindFlags"),
            "chat_muted": {"type": "boolean"},
            "hand_raised": {"type": "boolean"},
            "identity": {"type": "string"},
            "joined_at": {"type": "number", "description": "Unix time, seconds"},
        },
    },
    "KindFlags": {
        "type": "object",
        "required": ["audio", "video"],
        "properties": {"audio": {"type": "boolean"}, "video": {"type": "boolean"}},
    },
    "ParticipantList": {
        "type": "object",
        "required": ["stage_id", "participants"],
        "properties": {
            "stage_id": {"type": "string"},
            "participants": {"type": "array", "items": _ref("Participant")},
        },
    },
    "RecordingSession": {
        "type": "object",
        "required": ["session_id", "status", "started_at", "stopped_at", "tracks"],
        "properties": {
            "session_id": {"type": "string"},
            "status": {"type": "string", "enum": ["recording", "complete", "failed"]},
            "started_at": {"type": "number"},
            "stopped_at": _nullable("number"),
            "tracks": {"type": "integer", "minimum": 0, "description": "Track files in the session"},
        },
    },
    "RecordingList": {
        "type": "object",
        "required": ["stage_id", "sessions"],
        "properties": {
            "stage_id": {"type": "string"},
            "sessions": {"type": "array", "items": _ref("RecordingSession")},
        },
    },
    "RecordingManifest": {
        "type": "object",
        "description": "The session's manifest.json as the recorder writes it (docs/recording.md).",
        "required": ["version", "stage_id", "session_id", "status", "started_at", "tracks"],
        "properties": {
            "version": {"type": "integer", "const": 1},
            "stage_id": {"type": "string"},
            "title": {"type": "string"},
            "session_id": {"type": "string"},
            "status": {"type": "string", "enum": ["recording", "complete", "failed"]},
            "started_at": {"type": "number"},
            "stopped_at": _nullable("number"),
            "policy_version": {"type": "string"},
            "participants": {"type": "array", "items": {"type": "object"}},
            "tracks": {"type": "array", "items": _ref("RecordingTrack")},
            "timeline": {"type": "string"},
            "timeline_json": {"type": "string"},
            "ledger": {"type": "string"},
            "ledger_count": {"type": "integer"},
            "ledger_head": _nullable("string"),
            "ledger_heads": _nullable("string"),
            "ledger_key": {
                "type": ["object", "null"],
                "description": "The node key that signs the ledger's heads (docs/recording.md)",
                "properties": {
                    "algorithm": {"type": "string", "const": "Ed25519"},
                    "key_id": {"type": "string"},
                    "public_key": {"type": "string", "description": "base64 of the raw 32-byte key"},
                },
            },
            "ledger_signature": {
                "type": ["object", "null"],
                "description": "The last signed head of the consent ledger",
                "properties": {
                    "stage_id": {"type": "string"},
                    "session_id": {"type": "string"},
                    "count": {"type": "integer"},
                    "head": {"type": "string"},
                    "signed_at": {"type": "number"},
                    "final": {"type": "boolean"},
                    "key_id": {"type": "string"},
                    "signature": {"type": "string"},
                },
            },
        },
    },
    "RecordingTrack": {
        "type": "object",
        "properties": {
            "participant_id": {"type": "string"},
            "kind": {"type": "string", "enum": ["audio", "video"]},
            "codec": {"type": "string", "enum": ["vp8", "h264", "opus"]},
            "file": {"type": "string", "description": "Relative to the session: the `{name}` of /files/"},
            "capture_started_at": {"type": "number"},
            "capture_ended_at": _nullable("number"),
            "first_frame_at": _nullable("number", description="Wall-clock time of pts 0"),
            "duration_s": {"type": "number"},
            "frames": {"type": "integer"},
            "bytes": {"type": "integer"},
            "dropped_frames": {"type": "integer"},
            "finalized": {"type": "boolean"},
            "error": _nullable("string"),
        },
    },
    "DevTokenRequest": {
        "type": "object",
        "description": "Claims of the token to mint (server/auth.py); all optional.",
        "properties": {
            "identity": {"type": "string", "maxLength": 64, "description": "Generated when missing"},
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["host", "moderator", "speaker", "audience"]},
            "stage": {"type": "string"},
            "club": {"type": "string"},
            "grants": {
                "type": "array",
                "items": {
                    "type": "string",
                    "enum": ["publish", "subscribe", "comment", "moderate", "record"],
                },
            },
            "admin": {"type": "boolean"},
        },
    },
    "DevToken": {
        "type": "object",
        "required": ["token", "identity"],
        "properties": {
            "token": {"type": "string", "description": "A JWT valid for 12 hours"},
            "identity": {"type": "string"},
        },
    },
    "Revocation": {
        "type": "object",
        "required": ["identity", "revoked", "disconnected"],
        "properties": {
            "identity": {"type": "string"},
            "revoked": {"type": "boolean", "const": True},
            "disconnected": {
                "type": "integer",
                "minimum": 0,
                "description": "Connections of the identity this node closed (4403)",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "const": "ok"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "reason", "node"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "not_ready"]},
            "reason": {"type": "string", "examples": ["ok", "backend unreachable"]},
            "node": {"type": "string"},
        },
    },
}

_PATHS: dict[str, Schema] = {
    "/api/stages": {
        "post": {
            "operationId": "createStage",
            "summary": "Create a stage (live, or scheduled) hosted by this node",
            "tags": ["stages"],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("StageCreate")}},
            },
            "responses": {
                "201": _json(_ref("Stage"), "Created"),
                "400": _problem("The body is not a valid stage", "invalid_body", "bad_text"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_ADMIN,
                "404": _problem("The body names a club that does not exist", "club_not_found"),
                "409": _problem("A stage with this id exists (here or on another node)", "stage_exists"),
                "503": {
                    **_problem(
                        "The shared store is unreachable: try again", "stage_unavailable", "unavailable"
                    ),
                    "headers": {
                        "Retry-After": {
                            "schema": {"type": "integer"},
                            "description": "Seconds (with `stage_unavailable`)",
                        }
                    },
                },
            },
        },
        "get": {
            "operationId": "listStages",
            "summary": "The stages this node hosts (ask each node, or each through its load balancer)",
            "tags": ["stages"],
            "responses": {
                "200": _json(_ref("StageList"), "The stages"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_ADMIN,
            },
        },
    },
    "/api/stages/{stage_id}": {
        "get": {
            "operationId": "getStage",
            "summary": "A stage, or, when another node hosts it, which node",
            "tags": ["stages"],
            "parameters": [_STAGE_ID],
            "responses": {
                "200": _json({"oneOf": [_ref("Stage"), _ref("RemoteStage")]}, "The stage"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_STAGE,
                "404": _problem("The stage is not live on any node", "stage_not_found"),
            },
        },
    },
    "/api/stages/{stage_id}/end": {
        "post": {
            "operationId": "endStage",
            "summary": "End a stage (needs the `moderate` grant, or a platform token)",
            "tags": ["stages"],
            "parameters": [_STAGE_ID],
            "responses": {
                "200": _json(_ref("Stage"), "The ended stage"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_GRANT,
                "404": _NOT_HOSTED,
                "409": _problem("The stage has already ended", "stage_ended"),
            },
        },
    },
    "/api/stages/{stage_id}/participants": {
        "get": {
            "operationId": "listParticipants",
            "summary": "Who is on the stage (identities only for moderators and the platform)",
            "tags": ["stages"],
            "parameters": [_STAGE_ID],
            "responses": {
                "200": _json(_ref("ParticipantList"), "The participants"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_STAGE,
                "404": _NOT_HOSTED,
            },
        },
    },
    "/api/stages/{stage_id}/recordings": {
        "get": {
            "operationId": "listRecordings",
            "summary": "The stage's recording sessions (needs the `record` grant)",
            "tags": ["recordings"],
            "parameters": [_STAGE_ID],
            "responses": {
                "200": _json(_ref("RecordingList"), "The sessions"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_GRANT,
                "404": _NOT_FOUND_STAGE,
            },
        },
    },
    "/api/stages/{stage_id}/recordings/{session_id}": {
        "get": {
            "operationId": "getRecording",
            "summary": "A session's manifest: participants, consent, tracks and their files",
            "tags": ["recordings"],
            "parameters": [_STAGE_ID, _SESSION_ID],
            "responses": {
                "200": _json(_ref("RecordingManifest"), "The manifest"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_GRANT,
                "404": _problem("No such stage or session", "stage_not_found", "not_found"),
            },
        },
    },
    "/api/stages/{stage_id}/recordings/{session_id}/files/{name}": {
        "get": {
            "operationId": "getRecordingFile",
            "summary": "Download a file of the session (a track, the timeline, the consent ledger)",
            "description": "`name` is a path relative to the session directory and may contain `/` "
            "(`tracks/p-1a2b-video-1.webm`); files still being written (`.partial`) are not served. "
            "Range requests are honoured.",
            "tags": ["recordings"],
            "parameters": [
                _STAGE_ID,
                _SESSION_ID,
                _param("name", "The file, as named in the manifest", {"type": "string"}),
            ],
            "responses": {
                "200": {
                    "description": "The file",
                    "content": {
                        "video/webm": {"schema": {"type": "string", "contentMediaType": "video/webm"}},
                        "video/x-matroska": {
                            "schema": {"type": "string", "contentMediaType": "video/x-matroska"}
                        },
                        "application/json": {"schema": {}},
                        "application/octet-stream": {"schema": {"type": "string"}},
                    },
                },
                "206": {"description": "Part of the file (a Range request)"},
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_GRANT,
                "404": _problem("No such stage, session or file", "stage_not_found", "not_found"),
            },
        },
    },
    "/api/dev/token": {
        "post": {
            "operationId": "devToken",
            "summary": "Development mode only: a token for whoever asks",
            "description": "Open while the node has no configured API keys (server/auth.py); "
            "refused once `MEDSTAGE_API_KEYS` is set.",
            "tags": ["tokens"],
            "security": _OPEN,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("DevTokenRequest")}},
            },
            "responses": {
                "200": _json(_ref("DevToken"), "The token"),
                "400": _problem("The body or a claim is invalid", "invalid_body", "bad_text"),
                "403": _problem("API keys are configured: tokens come from the platform", "dev_mode_off"),
            },
        },
    },
    "/api/identities/{identity}/revoke": {
        "post": {
            "operationId": "revokeIdentity",
            "summary": "Refuse an identity on every node from now on, and disconnect it here",
            "tags": ["tokens"],
            "parameters": [_param("identity", "The token subject (`sub`)", {"type": "string"})],
            "responses": {
                "200": _json(_ref("Revocation"), "Revoked"),
                "401": _UNAUTHORIZED,
                "403": _FORBIDDEN_ADMIN,
                "503": _problem("The shared store is unreachable", "unavailable"),
            },
        },
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["operations"],
            "security": _OPEN,
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
        },
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness: the process serves (a Redis outage does not change it)",
            "tags": ["operations"],
            "security": _OPEN,
            "responses": {"200": _json(_ref("Health"), "Alive")},
        },
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: whether the node should be given new clients",
            "tags": ["operations"],
            "security": _OPEN,
            "responses": {
                "200": _json(_ref("Readiness"), "Ready"),
                "503": _json(
                    _ref("Readiness"),
                    "Not ready: the shared store (Redis) is unreachable, or the relay inbox is not connected",
                ),
            },
        },
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format 0.0.4; docs/operations.md)",
            "tags": ["operations"],
            "security": _OPEN,
            "responses": {
                "200": {
                    "description": "The samples",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        },
    },
}

_DOCUMENT: Schema = {
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
        {"name": "operations", "description": "Open: for load balancers and scrapers"},
    ],
    "security": [{"bearer": []}, {"access_token": []}],
    "paths": _PATHS,
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
                **_problem(
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
        "schemas": _SCHEMAS,
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
