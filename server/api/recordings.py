"""Recordings over HTTP: a stage's sessions, their manifests, files and reports, and deleting one, for
the platform and for hosts and moderators of the stage (the ``record`` grant). The files are the
recorder's (docs/recording.md): served as written, never a ``.partial`` one, nothing outside the
session's directory. A session's composite export is started and followed here too (``/export``;
server/host/exports.py runs it)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta, Struct

from recording.composite import ExportError, VideoSettings, is_up_to_date, read_state
from recording.report import TABLES, ReportError, build, to_csv
from recording.retention import NotDeletable
from recording.sealed import key_id_of
from rooms.errors import StageNotFound
from server.api import spec
from server.api.bodies import BadBody, read_json
from server.api.common import answer, problem, stage_caller
from server.api.report_bodies import SessionReport
from server.api.sealedfiles import serve_sealed
from server.backend import BackendError
from server.host.exports import ExportJob, ExportQueueFull
from server.host.node import Node
from server.host.readers import names_of, session_ring

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# interrupted: a crash cut it short and `repair` finished it; deleted: its media is gone (retention).
Status = Literal["recording", "complete", "failed", "interrupted", "deleted"]


class RecordingSession(Struct, kw_only=True):
    """A session of the stage, from its manifest."""

    session_id: str
    status: Status
    started_at: float
    stopped_at: float | None
    tracks: Annotated[int, Meta(ge=0, description="Track files in the session")]


class RecordingList(Struct, kw_only=True):
    stage_id: str
    sessions: list[RecordingSession]


class RecordingTrack(Struct, kw_only=True):
    """A track file of the session (recording/session.py writes it)."""

    participant_id: str
    kind: Literal["audio", "video"]
    # A camera's (and microphone's) track, or a screen share's; sessions before sharing have none.
    source: Literal["camera", "screen"] = "camera"
    codec: Literal["vp8", "h264", "opus"]
    file: Annotated[str, Meta(description="Relative to the session: the `{name}` of /files/")]
    capture_started_at: float
    capture_ended_at: float | None
    first_frame_at: Annotated[float, Meta(description="Wall-clock time of pts 0")] | None
    duration_s: float
    frames: int
    bytes: int
    dropped_frames: int
    finalized: bool
    error: str | None
    # Sealed with the publisher's key (docs/recording.md, "Sealed track files"); served decrypted.
    sealed: bool = False
    key_id: str | None = None


class LedgerKey(Struct, kw_only=True):
    """The node key that signs a session's ledger heads."""

    algorithm: Literal["Ed25519"]
    key_id: str
    public_key: str  # base64 of the raw 32-byte key


class LedgerSignature(Struct, kw_only=True):
    """A signed head of the consent ledger (recording/signing.py)."""

    stage_id: str
    session_id: str
    count: int
    head: str
    signed_at: float
    final: bool
    key_id: str
    signature: str


class RecordingManifest(Struct, kw_only=True):
    """The session's manifest.json as the recorder writes it (docs/recording.md)."""

    version: Literal[1]
    stage_id: str
    club_id: str | None = None  # the stage's club when it was recorded
    title: str | None = None
    session_id: str
    status: Status
    started_at: float
    stopped_at: float | None = None
    policy_version: str | None = None
    retention_days: Annotated[
        int | None,
        Meta(description="Days kept after the stop (0: forever), as recorded; null: the node's default"),
    ] = None
    participants: list[dict[str, Any]] = []
    # Who was there when recording started: participant_id, person (a per-session pseudonym), joined_at.
    present_at_start: list[dict[str, Any]] = []
    tracks: list[RecordingTrack]
    timeline: str | None = None
    timeline_json: str | None = None
    ledger: str | None = None
    ledger_count: int | None = None
    ledger_head: str | None = None
    ledger_heads: str | None = None  # the file of signed heads
    ledger_key: LedgerKey | None = None  # the node key that signs them (docs/recording.md)
    ledger_signature: LedgerSignature | None = None  # the last signed head
    # After a deletion (recording/retention.py): the status before, when, and the deletion's details.
    previous_status: str | None = None
    deleted_at: float | None = None
    deletion: dict[str, Any] | None = None


class _Summary(Struct):
    """What the list shows of a manifest (its other fields are not read)."""

    session_id: str
    status: Status
    started_at: float
    stopped_at: float | None = None
    tracks: list[Any] | None = None


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
        try:  # a manifest this node cannot read (or not a manifest) is not listed
            head = msgspec.json.decode(manifest.read_bytes(), type=_Summary)
        except (OSError, msgspec.DecodeError):
            continue
        sessions.append(
            RecordingSession(
                session_id=head.session_id,
                status=head.status,
                started_at=head.started_at,
                stopped_at=head.stopped_at,
                tracks=len(head.tracks or []),
            )
        )
    return answer(RecordingList(stage_id=live.stage.id, sessions=sessions))


def _session(request: web.Request) -> Path | web.Response:
    """The session directory the caller may read, or the problem to answer."""
    live, refusal = _authorized(request)
    if refusal is not None:
        return refusal
    directory = _session_dir(request, live)
    if directory is None:
        return problem(404, "not_found", "no such recording session")
    return directory


async def get_recording(request: web.Request) -> web.StreamResponse:
    directory = _session(request)
    if isinstance(directory, web.Response):
        return directory
    return web.FileResponse(directory / "manifest.json")


async def get_recording_file(request: web.Request) -> web.StreamResponse:
    directory = _session(request)
    if isinstance(directory, web.Response):
        return directory
    target = _file_in(directory, request.match_info["name"])
    if target is None:
        return problem(404, "not_found", "no such file in this session")
    if key_id_of(target) is not None:  # sealed with its publisher's key: decrypted as it is sent
        return await serve_sealed(request, request.app["node"], target)
    return web.FileResponse(target)


async def get_report(request: web.Request) -> web.StreamResponse:
    directory = _session(request)
    if isinstance(directory, web.Response):
        return directory
    fmt, table = request.query.get("format", "json"), request.query.get("table", "attendees")
    if fmt not in ("json", "csv") or table not in TABLES:
        return problem(400, "invalid_query", f"format is json or csv; table is {' or '.join(TABLES)}")
    node: Node = request.app["node"]
    try:
        ring = await session_ring(node, directory)
    except (BackendError, OSError) as exc:
        return problem(503, "keys_unavailable", f"the people's keys cannot be read now: {exc}")
    await node.fresh_profiles()  # corrected names (issue 15), any node's
    try:
        report = await asyncio.to_thread(build, directory, ring=ring, names=names_of(node))
    except (ReportError, OSError, ValueError) as exc:
        return problem(409, "report_unavailable", f"this session cannot be reported on: {exc}")
    if fmt == "json":
        return answer(report)
    name = f"{report['stage_id']}-{report['session_id']}-{table}.csv"
    return web.Response(
        text=to_csv(report, table),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def delete_recording(request: web.Request) -> web.StreamResponse:
    live, refusal = _authorized(request)
    if refusal is not None:
        return refusal
    claims = stage_caller(request, live, "record")
    directory = _session_dir(request, live)
    if directory is None:
        return problem(404, "not_found", "no such recording session")
    node: Node = request.app["node"]
    try:
        await node.delete_recording(directory, by="platform" if claims.admin else claims.identity)
    except NotDeletable as exc:
        return problem(500 if exc.code == "io_error" else 409, exc.code, exc.message)
    return web.Response(status=204)


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


# --- the composite export -----------------------------------------------------------------------------

ExportState = Literal["queued", "running", "done", "failed", "interrupted"]
_QUEUE_FULL_RETRY_S = 60


class ExportRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Start the session's composite export (`exports/composite.mp4`)."""

    force: Annotated[bool, Meta(description="Start over even if an export from these inputs is done")] = False


class ExportStatus(Struct, kw_only=True):
    """Where the session's composite export stands."""

    stage_id: str
    session_id: str
    status: Annotated[
        ExportState,
        Meta(description="`interrupted`: a run stopped half way (a restart); asking again resumes it"),
    ]
    progress: Annotated[float, Meta(ge=0, le=1)]
    position: Annotated[int | None, Meta(description="Place in the node's queue (1: next)")] = None
    file: Annotated[str | None, Meta(description="When done: the file, relative to the session")] = None
    url: Annotated[str | None, Meta(description="When done: where to download it (Range requests)")] = None
    duration_s: float | None = None
    bytes: int | None = None
    tracks: Annotated[int | None, Meta(description="Shared tracks in it")] = None
    excluded_tracks: Annotated[int | None, Meta(description="Tracks left out: not shared")] = None
    error: str | None = None
    updated_at: float | None = None


def _export_status(
    stage_id: str, session_id: str, job: ExportJob | None, position: int | None, state: dict[str, Any] | None
) -> ExportStatus | None:
    state = state or {}
    base = f"/api/stages/{stage_id}/recordings/{session_id}"
    status: str | None
    if job is not None and job.status in ("queued", "running"):
        status = job.status
    elif state.get("status") in ("done", "failed"):
        status = state["status"]
    elif state.get("status") == "running":
        status = "interrupted"  # no child of this node runs it (the node restarted, or a CLI run died)
    else:
        status = job.status if job is not None else None
    if status is None:
        return None
    done = status == "done"
    return ExportStatus(
        stage_id=stage_id,
        session_id=session_id,
        status=status,  # type: ignore[arg-type]
        progress=1.0 if done else (0.0 if status == "queued" else float(state.get("progress") or 0.0)),
        position=position,
        file=state.get("file") if done else None,
        url=f"{base}/files/{state['file']}" if done and state.get("file") else None,
        duration_s=state.get("duration_s"),
        bytes=state.get("bytes") if done else None,
        tracks=len(state["tracks"]) if state.get("tracks") is not None else None,
        excluded_tracks=state.get("excluded_tracks"),
        error=_failure(job, state) if status == "failed" else None,
        updated_at=state.get("updated_at"),
    )


def _failure(job: ExportJob | None, state: dict[str, Any]) -> str | None:
    """Why it failed: the export's own words (the state file), else what its process said."""
    return state.get("error") or (job.error if job is not None else None)


def _export_settings(request: web.Request) -> VideoSettings:
    width, _, height = request.app["config"].export_size.lower().partition("x")
    return VideoSettings(width=int(width), height=int(height))


async def start_export(request: web.Request) -> web.Response:
    directory = _session(request)
    if isinstance(directory, web.Response):
        return directory
    try:
        body = await read_json(request, ExportRequest)
    except BadBody as exc:
        return problem(400, exc.code, str(exc))
    node: Node = request.app["node"]
    stage_id, session_id = directory.parent.name, directory.name
    job = node.exports.job(stage_id, session_id)
    code = 202
    if job is None or job.status not in ("queued", "running"):
        try:
            ring = await node.session_keys(directory)  # sealed tracks: an erased one is left out
            current = await asyncio.to_thread(is_up_to_date, directory, _export_settings(request), ring)
        except ExportError as exc:
            return problem(422, "nothing_to_export", str(exc))
        if current and not body.force:
            code = 200
        else:
            try:
                job = node.exports.request(stage_id, session_id, directory, force=body.force)
            except ExportQueueFull as exc:
                response = problem(503, "export_queue_full", str(exc))
                response.headers["Retry-After"] = str(_QUEUE_FULL_RETRY_S)
                return response
    state = await asyncio.to_thread(read_state, directory)
    status = _export_status(stage_id, session_id, job if code == 202 else None, _position(node, job), state)
    assert status is not None
    response = answer(status, code)
    response.headers["Location"] = f"/api/stages/{stage_id}/recordings/{session_id}/export"
    return response


def _position(node: Node, job: ExportJob | None) -> int | None:
    return None if job is None else node.exports.position(job)


async def get_export(request: web.Request) -> web.Response:
    directory = _session(request)
    if isinstance(directory, web.Response):
        return directory
    node: Node = request.app["node"]
    stage_id, session_id = directory.parent.name, directory.name
    job = node.exports.job(stage_id, session_id)
    state = await asyncio.to_thread(read_state, directory)
    status = _export_status(stage_id, session_id, job, _position(node, job), state)
    if status is None:
        return problem(404, "not_exported", "this session has not been exported: POST to start")
    return answer(status)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/stages/{stage_id}/recordings", list_recordings),
        web.get("/api/stages/{stage_id}/recordings/{session_id}", get_recording),
        web.delete("/api/stages/{stage_id}/recordings/{session_id}", delete_recording),
        web.get("/api/stages/{stage_id}/recordings/{session_id}/report", get_report),
        web.get("/api/stages/{stage_id}/recordings/{session_id}/files/{name:.+}", get_recording_file),
        web.post("/api/stages/{stage_id}/recordings/{session_id}/export", start_export),
        web.get("/api/stages/{stage_id}/recordings/{session_id}/export", get_export),
    ]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("recordings")
_SESSION = spec.path_param(
    "session_id", "A recording session of the stage", maxLength=64, pattern=spec.ID_PATTERN
)
_AUTH = {"401": spec.UNAUTHORIZED, "403": spec.FORBIDDEN_GRANT}

OPENAPI.add(
    "get",
    "/api/stages/{stage_id}/recordings",
    "listRecordings",
    "The stage's recording sessions (needs the `record` grant)",
    {
        "200": spec.ok(RecordingList, "The sessions"),
        **_AUTH,
        "404": spec.refused("No such stage on this node", "stage_not_found"),
    },
    params=[spec.STAGE_ID],
)
OPENAPI.add(
    "get",
    "/api/stages/{stage_id}/recordings/{session_id}",
    "getRecording",
    "A session's manifest: participants, consent, tracks and their files",
    {
        "200": spec.ok(RecordingManifest, "The manifest"),
        **_AUTH,
        "404": spec.refused("No such stage or session", "stage_not_found", "not_found"),
    },
    params=[spec.STAGE_ID, _SESSION],
)
_FILE: spec.Schema = {
    "description": "The file",
    "content": {
        "video/webm": {"schema": {"type": "string", "contentMediaType": "video/webm"}},
        "video/x-matroska": {"schema": {"type": "string", "contentMediaType": "video/x-matroska"}},
        "application/json": {"schema": {}},
        "application/octet-stream": {"schema": {"type": "string"}},
    },
}
OPENAPI.add(
    "get",
    "/api/stages/{stage_id}/recordings/{session_id}/files/{name}",
    "getRecordingFile",
    "Download a file of the session (a track, the timeline, the consent ledger)",
    {
        "200": _FILE,
        "206": {"description": "Part of the file (a Range request)"},
        **_AUTH,
        "404": spec.refused("No such stage, session or file", "stage_not_found", "not_found"),
        "410": spec.refused("A sealed track whose key was destroyed (the person was erased)", "erased"),
        "416": spec.refused("A Range outside a sealed track", "range_not_satisfiable"),
        "500": spec.refused("A sealed track file that is damaged", "damaged"),
    },
    params=[spec.STAGE_ID, _SESSION, spec.path_param("name", "The file, as named in the manifest")],
    description="`name` is a path relative to the session directory and may contain `/` "
    "(`tracks/p-1a2b-video-1.webm`); files still being written (`.partial`) are not served. "
    "Range requests are honoured. A sealed track (`….webm.sealed`) is sent decrypted, as the WebM "
    "or Matroska file it holds.",
)
_REPORT = spec.ok(SessionReport, "The report (JSON), or one of its tables (CSV)")
_REPORT["content"]["text/csv"] = {"schema": {"type": "string"}}
OPENAPI.add(
    "get",
    "/api/stages/{stage_id}/recordings/{session_id}/report",
    "getRecordingReport",
    "The session's report: attendance, polls and quizzes with answers and scores, questions",
    {
        "200": _REPORT,
        "400": spec.refused("`format` or `table` is not one of theirs", "invalid_query"),
        **_AUTH,
        "404": spec.refused("No such stage or session", "stage_not_found", "not_found"),
        "409": spec.refused("The session's files cannot be read", "report_unavailable"),
    },
    params=[
        spec.STAGE_ID,
        _SESSION,
        {
            "name": "format",
            "in": "query",
            "required": False,
            "description": "json (default) or csv",
            "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
        },
        {
            "name": "table",
            "in": "query",
            "required": False,
            "description": "With csv: `attendees` (a row per named attendee, a last row for everyone "
            "counted anonymously, a column per poll and quiz) or `questions` (a row per question)",
            "schema": {"type": "string", "enum": list(TABLES), "default": "attendees"},
        },
    ],
    description="Only people whose last consent decision grants `share` appear under their name; "
    'everyone else is counted (docs/recording.md, "Session report").',
)
OPENAPI.add(
    "delete",
    "/api/stages/{stage_id}/recordings/{session_id}",
    "deleteRecording",
    "Delete a session's media, timeline and exports now, as the retention sweeper does",
    {
        "204": {"description": "Deleted (or deleted already); the ledger and manifest say so"},
        **_AUTH,
        "404": spec.refused("No such stage or session", "stage_not_found", "not_found"),
        "409": spec.refused(
            "The session is still recording or being exported, or its ledger cannot take the "
            "deletion record",
            "recording",
            "exporting",
            "no_key",
            "ledger_damaged",
        ),
        "500": spec.refused(
            "The disk refused to delete the files; the ledger may record the intent", "io_error"
        ),
    },
    params=[spec.STAGE_ID, _SESSION],
    description="The consent ledger and the manifest stay as evidence: a `deletion` record is appended "
    "to the ledger (signed like every record) and the manifest says `status: deleted`, when and why.",
)
_EXPORT = "/api/stages/{stage_id}/recordings/{session_id}/export"
OPENAPI.add(
    "post",
    _EXPORT,
    "startExport",
    "Start the session's composite export (one MP4 of what its people shared)",
    {
        "200": spec.ok(ExportStatus, "Already exported from the session as it is now: nothing to do"),
        "202": spec.ok(ExportStatus, "Queued or running (asking again gets the same job); follow `Location`"),
        "400": spec.refused("The body is not a valid request", "invalid_body", "bad_text"),
        **_AUTH,
        "404": spec.refused("No such stage or session", "stage_not_found", "not_found"),
        "422": spec.refused("No recorded track's owner granted share", "nothing_to_export"),
        "503": spec.refused(
            "The node's export queue is full",
            "export_queue_full",
            retry_after="Seconds to wait before asking again",
        ),
    },
    params=[spec.STAGE_ID, _SESSION],
    request=spec.body(ExportRequest),
    description="The export runs in a child process of the node at low priority, one at a time per "
    "node; when it ends the node sends the `recording.exported` webhook. Only tracks whose owner's "
    "last consent decision granted `share` are in it (docs/recording.md, Composite export).",
)
OPENAPI.add(
    "get",
    _EXPORT,
    "getExport",
    "Progress of the session's composite export",
    {
        "200": spec.ok(ExportStatus, "Its state; when `done`, `url` downloads it"),
        **_AUTH,
        "404": spec.refused(
            "No such stage or session, or never exported", "stage_not_found", "not_found", "not_exported"
        ),
    },
    params=[spec.STAGE_ID, _SESSION],
)
