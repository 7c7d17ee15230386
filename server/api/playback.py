"""Watching a recorded session: the playback page ``/r/<session>``, its data and the composite export.

Who may watch (docs/recording.md, "Playback"): a platform token; or a token that opens the session's
stage (named by it, or by the stage's club) and whose holder hosts or moderates it (``record``), was
there (an identity of the session's consent ledger), is a member of the stage's club, or holds the
``watch`` grant. Nobody else: no valid token 401, a token that does not open it 403, and an unknown
session 404 only to a valid token (a stranger learns nothing, not even that an id exists).

A ``<video>`` element cannot send an Authorization header, and a token in a URL lands in logs, history
and Referer headers. So the page exchanges the token once (``POST /r/<session>/access``, the token in
the header) for a cookie: signed for this one session (``Authenticator.seal``, never a JWT), HttpOnly,
SameSite=Strict, its Path ``/r/<session>`` — sent with the page's own requests for the data and every
Range request of the video, and nowhere else. The platform's link carries the token in the fragment
(``/r/<session>#token=…``), which browsers never send; the page removes it from the address bar.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from recording import playback
from recording.items import Names
from recording.sharing import SharePolicy
from recording.vault import KeyRing
from rooms.clubs import ClubError
from server.api import spec
from server.api.common import problem
from server.auth import WATCH, AuthError, Claims, Forbidden, Unauthorized
from server.backend import BackendError
from server.host.node import Node
from server.host.readers import names_of, session_ring

COOKIE = "medstage_watch"
PURPOSE = "watch"  # the seal's purpose: a cookie made for anything else does not open a session
EXPORT = Path("exports") / "composite.mp4"
PAGE = Path(__file__).resolve().parent.parent / "static" / "playback.html"
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECURITY = {  # the page and its data: never cached by a shared cache, never a Referer to elsewhere
    "Cache-Control": "private, no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True, slots=True)
class Watched:
    """A session the caller may watch."""

    directory: Path
    manifest: dict[str, Any]
    identity: str
    basis: str = "cookie"  # on what ground (``_check_viewer``); "cookie": a cookie's, checked then
    club: str | None = None


# --- finding the session and deciding ---------------------------------------------------------------


def sessions_named(root: Path, session_id: str) -> list[Path]:
    """Every stage's session called ``session_id`` under ``root``, by stage id: session ids are unique
    within a stage only, so two stages may have one each (the caller's access picks, in this order)."""
    if not _SESSION_ID.fullmatch(session_id) or not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/{session_id}/manifest.json") if p.is_file())


def _manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("stage_id"), str) else None


def _club_of(node: Node, manifest: dict[str, Any]) -> str | None:
    """The stage's club as recorded; for a session recorded before manifests named it, the club of
    the stage if this node hosts it now."""
    club = manifest.get("club_id")
    if isinstance(club, str):
        return club
    live = node.stages.get(manifest["stage_id"])
    return live.stage.club_id if live is not None else None


async def _check_viewer(node: Node, claims: Claims, directory: Path, manifest: dict[str, Any]) -> str:
    """On what ground ``claims`` may watch this session (module docstring): ``admin``, ``record``,
    ``watch``, ``participant`` or ``member``; Forbidden when on none."""
    if claims.admin:
        return "admin"
    club = _club_of(node, manifest)
    claims.require_stage(manifest["stage_id"], club)
    if claims.has("record"):
        return "record"
    if claims.named(WATCH):
        return "watch"
    ring = await session_ring(node, directory)
    policy = await asyncio.to_thread(functools.partial(SharePolicy.of_session, directory, ring=ring))
    if claims.identity in policy.identities.values():
        return "participant"
    if club is not None and await _is_member(node, club, claims.identity):
        return "member"
    raise Forbidden(
        "not_a_viewer",
        "this token's holder was not in this session, is not a member of its club and has no 'watch' grant",
    )


async def _is_member(node: Node, club: str, identity: str) -> bool:
    try:
        return identity in (await node.clubs.get(club)).members
    except ClubError:
        return False  # a deleted or unreadable club has no members to let in


# A cookie given for club membership is checked against the club again, at most this often per
# (club, identity): the page's video is fetched in many Range requests, and a member removed from the
# club (or erased) must lose the recording within seconds, not when the cookie expires.
MEMBERSHIP_RECHECK_S = 2.0
_members_seen: dict[tuple[str, str], float] = {}


async def _still_member(node: Node, club: str, identity: str) -> bool:
    key, now = (club, identity), time.monotonic()
    seen = _members_seen.get(key)
    if seen is not None and now - seen < MEMBERSHIP_RECHECK_S:
        return True
    if not await _is_member(node, club, identity):
        _members_seen.pop(key, None)
        return False
    if len(_members_seen) >= 10_000:
        _members_seen.clear()
    _members_seen[key] = now
    return True


async def _watched(request: web.Request, *, cookie: bool = True) -> Watched:
    """The session of the path, if the caller may watch it: its cookie, else its bearer token.
    Raises ``AuthError`` (401/403) or ``web.HTTPNotFound``."""
    node: Node = request.app["node"]
    session_id = request.match_info["session_id"]
    root = Path(request.app["config"].recordings_dir)
    sealed = request.cookies.get(COOKIE) if cookie else None
    header = request.headers.get("Authorization", "")
    if sealed and not header:
        seal = node.auth.unseal(PURPOSE, sealed)
        stage = seal.get("stage")
        directory = root / str(stage) / session_id
        if (
            seal.get("session") != session_id
            or not isinstance(stage, str)
            or not _SESSION_ID.fullmatch(stage)
        ):
            raise Forbidden("token_wrong_session", "this access cookie is for another session")
        manifest = _manifest(directory)
        if manifest is None:
            raise web.HTTPNotFound()
        identity = str(seal.get("sub", ""))
        await node.check_not_revoked(identity)
        club = seal.get("club")
        if seal.get("basis") == "member" and (
            not isinstance(club, str) or not await _still_member(node, club, identity)
        ):
            raise Forbidden(
                "not_a_viewer", "this cookie was given to a club member, and its holder no longer is one"
            )
        return Watched(directory, manifest, identity)
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
    claims = node.auth.verify(token)  # no query-string token here: it would end up in logs
    await node.check_not_revoked(claims.identity)
    refusal: AuthError | None = None
    for directory in sessions_named(root, session_id):
        manifest = _manifest(directory)
        if manifest is None:
            continue
        try:
            basis = await _check_viewer(node, claims, directory, manifest)
        except AuthError as exc:
            refusal = refusal or exc
            continue
        return Watched(directory, manifest, claims.identity, basis, _club_of(node, manifest))
    if refusal is not None:
        raise refusal
    raise web.HTTPNotFound()


async def _resolve(request: web.Request, *, cookie: bool = True) -> Watched | web.Response:
    """``_watched``, or the problem document that refuses the caller."""
    try:
        return await _watched(request, cookie=cookie)
    except AuthError as exc:
        response = problem(exc.status, exc.code, exc.message)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="{exc.code}"'
            )
        return response
    except web.HTTPNotFound:
        return problem(404, "not_found", "no such recording session")
    except BackendError as exc:  # the club's members could not be read
        response = problem(503, "unavailable", f"the shared store is unreachable: {exc}")
        response.headers["Retry-After"] = "1"
        return response


# --- handlers --------------------------------------------------------------------------------------


async def page(request: web.Request) -> web.Response:
    """The page, with the status its caller's access gives: the same bytes for every session and
    every status (it holds no data), so a 401 page can still exchange a token from its fragment."""
    found = await _resolve(request)
    status = found.status if isinstance(found, web.Response) else 200
    response = web.Response(body=_page(), status=status, content_type="text/html", charset="utf-8")
    response.headers.update(_SECURITY)
    # Its cookie is SameSite=Strict, so a page framed by another site would not play anyway: say so.
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@functools.cache
def _page() -> bytes:
    return PAGE.read_bytes()


async def access(request: web.Request) -> web.Response:
    """Exchange a bearer token for the session's cookie (204)."""
    watched = await _resolve(request, cookie=False)
    if isinstance(watched, web.Response):
        return watched
    node: Node = request.app["node"]
    ttl = request.app["config"].playback_cookie_ttl_s
    session_id = request.match_info["session_id"]
    grant = {"stage": watched.manifest["stage_id"], "session": session_id, "sub": watched.identity}
    if watched.basis == "member":  # re-checked at every use (``_still_member``)
        grant |= {"basis": "member", "club": watched.club}
    value = node.auth.seal(PURPOSE, grant, ttl)
    response = web.Response(status=204, headers=_SECURITY)
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(ttl),
        path=f"/r/{session_id}",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def playback_data(request: web.Request) -> web.Response:
    """Chapters, markers and comments (recording/playback.py) and where the video is."""
    watched = await _resolve(request, cookie=request.path.startswith("/r/"))
    if isinstance(watched, web.Response):
        return watched
    # A long session's timeline is megabytes (20,000 events: 0.23 s to build, bench/playback_data.py):
    # read and built off the event loop, once for all its viewers until one of its files changes.
    node: Node = request.app["node"]
    try:
        ring = await session_ring(node, watched.directory)
    except (BackendError, OSError) as exc:
        response = problem(503, "keys_unavailable", f"the people's keys cannot be read now: {exc}")
        response.headers["Retry-After"] = "1"
        return response
    await node.fresh_profiles()  # corrected names (issue 15), any node's
    body = await asyncio.to_thread(_CACHE.get, watched, ring, names_of(node), node.profiles.version)
    response = web.Response(body=body, content_type="application/json", charset="utf-8")
    response.headers.update(_SECURITY)
    return response


class _Built:
    """The encoded playback data of the last sessions asked for, each with the state of the files it
    was built from (a later consent decision, the export appearing, a repair: built again)."""

    SIZE = 32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[Path, tuple[tuple[object, ...], bytes]] = OrderedDict()

    def get(
        self, watched: Watched, ring: KeyRing, names: Names | None = None, names_version: int = 0
    ) -> bytes:
        """``names``: current display names (corrections); ``names_version`` changes when they do."""
        directory = watched.directory
        # A key destroyed since (an erasure) changes what the same files say: it is part of the state;
        # so does a correction (the profiles' version).
        files = tuple(_stamp(directory / name) for name in _SOURCES)
        stamp = (*files, ring.key_ids(), names_version)
        with self._lock:
            entry = self._entries.get(directory)
            if entry is not None and entry[0] == stamp:
                self._entries.move_to_end(directory)
                return entry[1]
        data = playback.of_session(directory, watched.manifest, ring=ring, names=names)
        data.video_url = f"/r/{directory.name}/composite.mp4"
        data.video_ready = files[-1] is not None
        body = msgspec.json.encode(data)
        with self._lock:
            self._entries[directory] = (stamp, body)
            self._entries.move_to_end(directory)
            while len(self._entries) > self.SIZE:
                self._entries.popitem(last=False)
        return body


_SOURCES = (
    "manifest.json",
    "timeline.msgpack",
    "timeline.json",
    "consent.jsonl",
    "exports/composite.json",  # the export's origin
    str(EXPORT),  # last: video_ready
)
_CACHE = _Built()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


async def video(request: web.Request) -> web.StreamResponse:
    """The composite export; Range requests are answered 206 (aiohttp's FileResponse: single ranges,
    If-Range, 416 for a range outside the file)."""
    watched = await _resolve(request)
    if isinstance(watched, web.Response):
        return watched
    path = watched.directory / EXPORT
    if not path.is_file():
        return problem(404, "not_exported", "this session has no composite export yet")
    response = _ExportResponse(
        path, headers={"Cache-Control": "private, no-cache", "Referrer-Policy": "no-referrer"}
    )
    response.content_type = "video/mp4"
    return response


class _ExportResponse(web.FileResponse):
    """aiohttp's FileResponse, with If-Range by entity tag honoured: aiohttp reads If-Range as a date
    only, and served the range whatever the tag said. An export rebuilt since the client cached its
    first part (a later withdrawal of ``share`` rebuilds it) must come whole (RFC 9110, 13.1.5)."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        tag = request.headers.get("If-Range", "")
        if tag.startswith(('"', "W/")) and "Range" in request.headers:
            try:
                st = await asyncio.to_thread(os.stat, self._path)
                current = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'  # aiohttp's own ETag of the file
            except OSError:
                current = None
            if tag != current:  # a weak tag never matches for If-Range (RFC 9110, 8.8.3.2)
                headers = CIMultiDict(request.headers)
                del headers["Range"]
                del headers["If-Range"]
                request = request.clone(headers=headers)
        return await super().prepare(request)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/r/{session_id}", page),
        web.post("/r/{session_id}/access", access),
        web.get("/r/{session_id}/playback.json", playback_data),
        web.get("/r/{session_id}/composite.mp4", video),
        web.get("/api/recordings/{session_id}/playback", playback_data),
    ]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("recordings")
_SESSION = spec.path_param(
    "session_id", "A recording session (of any stage)", maxLength=64, pattern=spec.ID_PATTERN
)
_REFUSALS = {
    "401": spec.UNAUTHORIZED,
    "403": spec.refused(
        "The token does not open this session: another stage or club, not a participant, member or "
        "`watch` holder; a revoked identity; a cookie of another session",
        "token_wrong_stage",
        "not_a_viewer",
        "identity_revoked",
        "token_wrong_session",
    ),
}
OPENAPI.add(
    "get",
    "/api/recordings/{session_id}/playback",
    "getPlayback",
    "A session's chapters, markers and comment replay, as far as each person's `share` consent allows",
    {
        "200": spec.ok(playback.Playback, "The playback data"),
        **_REFUSALS,
        "404": spec.refused("No such session (said to valid tokens only)", "not_found"),
    },
    params=[_SESSION],
    description="Times (`t`) are seconds of the composite export (`origin_at` is its t=0). "
    "`/r/{session_id}/playback.json` answers the same to the playback page's cookie.",
)
OPENAPI.add(
    "post",
    "/r/{session_id}/access",
    "openPlayback",
    "Exchange a bearer token for the playback page's cookie (HttpOnly, Path `/r/{session_id}`)",
    {
        "204": {
            "description": "The cookie is set",
            "headers": {"Set-Cookie": {"schema": {"type": "string"}, "description": "`medstage_watch`"}},
        },
        **_REFUSALS,
        "404": spec.refused("No such session", "not_found"),
    },
    params=[_SESSION],
)
OPENAPI.add(
    "get",
    "/r/{session_id}/composite.mp4",
    "getPlaybackVideo",
    "The session's composite export (H.264/AAC MP4), for the cookie or a bearer token",
    {
        "200": {
            "description": "The video",
            "content": {"video/mp4": {"schema": {"type": "string", "contentMediaType": "video/mp4"}}},
        },
        "206": {"description": "Part of the video (a Range request)"},
        **_REFUSALS,
        "404": spec.refused("No such session, or not exported yet", "not_found", "not_exported"),
        "416": {"description": "The range is outside the file"},
    },
    params=[_SESSION],
)
