"""Who may watch a recorded session (docs/recording.md, "Playback"): the page, the composite export and
the markers, for every role, a club member, a ``watch`` grant, strangers and wrong tokens; the cookie
the page exchanges its token for; HTTP Range on the export."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recording.ledger import Ledger
from rooms.consent import ConsentRecord
from server.auth import Authenticator
from tests.conftest import RunningNode, start_node
from tests.support.playback_session import AUDIENCE, HOST, POLICY, SPEAKER, standard_session
from tests.support.tokens import admin_token, token

STAGE, OTHER, CLUB = "cardio-rounds", "neuro-rounds", "cardio-club"
SESSION = "20261203T080000Z-ab12"
SHARED_ID = "20261203T090000Z-cd34"  # in both stages: ids are unique per stage only
MEMBER = "id-club-member"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recordings")
    standard_session(root, STAGE, SESSION, club_id=CLUB, video_s=3)
    standard_session(root, OTHER, "20261203T083000Z-ef56", video_s=None)
    standard_session(root, STAGE, SHARED_ID, club_id=CLUB, video_s=None)
    standard_session(root, OTHER, SHARED_ID, video_s=None)
    return root


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Iterator[RunningNode]:
    running = start_node(tmp_path_factory.mktemp("node"), {"MEDSTAGE_RECORDINGS_DIR": str(root)})
    try:
        call(
            running, "POST", "/api/clubs", admin_token(), {"id": CLUB, "name": "Cardiology", "private": True}
        )
        call(running, "PUT", f"/api/clubs/{CLUB}/members/{MEMBER}", admin_token(), {"name": "Dr Member"})
        yield running
    finally:
        assert running.stop() == 0, running.log()[-3000:]


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    node: RunningNode,
    method: str,
    path: str,
    bearer: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    sent = dict(headers or {})
    if bearer:
        sent["Authorization"] = f"Bearer {bearer}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=sent)
        return Answer(connection.getresponse())
    finally:
        connection.close()


def expired() -> str:
    past = Authenticator({}, clock=lambda: time.time() - 7200)
    return past.mint(AUDIENCE.identity, role="audience", stage=STAGE, ttl_s=60)


# Who asks, and what they get for the page, the export and the markers alike.
MATRIX: dict[str, tuple[str | None, int, str | None]] = {
    "host": (token(STAGE, "host", HOST.identity), 200, None),
    "moderator, not in the session": (token(STAGE, "moderator", "id-mod-elsewhere"), 200, None),
    "speaker who was there": (token(STAGE, "speaker", SPEAKER.identity), 200, None),
    "audience who was there": (token(STAGE, "audience", AUDIENCE.identity), 200, None),
    "club member (club token)": (token(None, "audience", MEMBER, club=CLUB), 200, None),
    "watch grant": (token(STAGE, "audience", "id-latecomer", grants=["watch"]), 200, None),
    "platform": (admin_token(), 200, None),
    "audience who was not there": (token(STAGE, "audience", "id-latecomer"), 403, "not_a_viewer"),
    "club token, not a member": (token(None, "audience", "id-outsider", club=CLUB), 403, "not_a_viewer"),
    "token for another stage": (token(OTHER, "host", HOST.identity), 403, "token_wrong_stage"),
    "watch grant for another stage": (token(OTHER, None, "id-w", grants=["watch"]), 403, "token_wrong_stage"),
    "stranger without token": (None, 401, "token_missing"),
    "expired token": (expired(), 401, "token_expired"),
}
PATHS = {
    "page": f"/r/{SESSION}",
    "export": f"/r/{SESSION}/composite.mp4",
    "markers": f"/api/recordings/{SESSION}/playback",
    "page data": f"/r/{SESSION}/playback.json",
}


@pytest.mark.parametrize("who", list(MATRIX))
def test_access_matrix_for_the_page_the_export_and_the_markers(node: RunningNode, who: str) -> None:
    bearer, status, code = MATRIX[who]
    for what, path in PATHS.items():
        answer = call(node, "GET", path, bearer)
        assert answer.status == status, (who, what, answer.status, answer.body[:300])
        if what == "page":
            assert answer.headers["Content-Type"].startswith("text/html")
            assert answer.headers["Referrer-Policy"] == "no-referrer"
            continue
        if status == 200:
            if what == "export":
                assert answer.headers["Content-Type"] == "video/mp4" and answer.body[4:8] == b"ftyp"
            else:
                assert answer.json()["session_id"] == SESSION and answer.json()["video_ready"] is True
        else:
            assert answer.json()["code"] == code, (who, what, answer.body)
        if status == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_session_is_404_to_a_valid_token_and_401_to_a_stranger(node: RunningNode) -> None:
    for path in (f"/r/{SESSION}x", f"/r/{SESSION}x/composite.mp4", f"/api/recordings/{SESSION}x/playback"):
        assert call(node, "GET", path, admin_token()).status == 404, path
        assert call(node, "GET", path, token(STAGE, "audience")).status == 404, path
        assert call(node, "GET", path).status == 401, path  # nothing learnt without a token
    assert call(node, "GET", "/r/..%2F..%2Fetc", admin_token()).status == 404
    assert call(node, "GET", f"/r/{'x' * 65}", admin_token()).status == 404


def test_a_session_id_in_two_stages_opens_the_one_the_token_may_watch(node: RunningNode) -> None:
    mine = call(node, "GET", f"/api/recordings/{SHARED_ID}/playback", token(OTHER, "host", "id-o"))
    assert mine.status == 200 and mine.json()["stage_id"] == OTHER
    theirs = call(node, "GET", f"/api/recordings/{SHARED_ID}/playback", token(STAGE, "host", "id-s"))
    assert theirs.status == 200 and theirs.json()["stage_id"] == STAGE
    # Both: the first stage by id (deterministic).
    both = call(node, "GET", f"/api/recordings/{SHARED_ID}/playback", admin_token())
    assert both.json()["stage_id"] == min(STAGE, OTHER)


def cookie_of(answer: Answer) -> tuple[str, str]:
    header = answer.headers["Set-Cookie"]
    value = header.split(";")[0]
    return value, header


def test_the_page_exchanges_its_token_for_a_cookie_of_this_session_only(node: RunningNode) -> None:
    refused = call(node, "POST", f"/r/{SESSION}/access", token(STAGE, "audience", "id-latecomer"))
    assert refused.status == 403 and "Set-Cookie" not in refused.headers
    assert call(node, "POST", f"/r/{SESSION}/access").status == 401
    answer = call(node, "POST", f"/r/{SESSION}/access", token(STAGE, "audience", AUDIENCE.identity))
    assert answer.status == 204, answer.body
    cookie, header = cookie_of(answer)
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert attributes["path"] == f"Path=/r/{SESSION}"
    assert "httponly" in attributes and attributes["samesite"] == "SameSite=Strict"
    assert cookie.startswith("medstage_watch=") and "." in cookie  # not a JWT: two parts
    with_cookie = {"Cookie": cookie}
    for what in ("page", "export", "page data"):
        got = call(node, "GET", PATHS[what], headers=with_cookie)
        assert got.status == 200, (what, got.body[:200])
    # The cookie is no access token: not for the API, nor for another session, nor when altered.
    assert call(node, "GET", PATHS["markers"], headers=with_cookie).status == 401
    moved = call(node, "GET", f"/r/{SHARED_ID}/playback.json", headers=with_cookie)
    assert moved.status == 403 and moved.json()["code"] == "token_wrong_session"
    altered = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    bad = call(node, "GET", PATHS["page data"], headers={"Cookie": altered})
    assert bad.status == 401 and bad.json()["code"] == "token_invalid"
    assert call(node, "GET", PATHS["markers"], cookie.split("=", 1)[1]).status == 401  # nor a bearer


# --- HTTP Range on the export --------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(root: Path) -> bytes:
    return (root / STAGE / SESSION / "exports" / "composite.mp4").read_bytes()


def ranged(node: RunningNode, spec: str, extra: dict[str, str] | None = None) -> Answer:
    return call(node, "GET", PATHS["export"], admin_token(), headers={"Range": spec, **(extra or {})})


def test_range_requests_are_answered_206_with_the_right_bytes(node: RunningNode, export: bytes) -> None:
    size = len(export)
    full = call(node, "GET", PATHS["export"], admin_token())
    assert full.status == 200 and full.body == export and full.headers["Accept-Ranges"] == "bytes"
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=100-": (100, size - 1),
        "bytes=-500": (size - 500, size - 1),
        f"bytes={size - 1}-{size - 1}": (size - 1, size - 1),  # the last byte
        f"bytes={size // 2}-{size * 2}": (size // 2, size - 1),  # past the end: cut at it
    }
    for spec, (first, last) in cases.items():
        answer = ranged(node, spec)
        assert answer.status == 206, (spec, answer.status)
        assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{size}", spec
        assert answer.body == export[first : last + 1], spec
        assert int(answer.headers["Content-Length"]) == last - first + 1


def test_if_range_and_bad_ranges(node: RunningNode, export: bytes) -> None:
    size = len(export)
    etag = call(node, "GET", PATHS["export"], admin_token()).headers["ETag"]
    assert ranged(node, "bytes=0-9", {"If-Range": etag}).status == 206  # unchanged: the part
    stale = ranged(node, "bytes=0-9", {"If-Range": '"0-0"'})
    assert stale.status == 200 and stale.body == export  # changed: the whole file
    for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        answer = ranged(node, spec)
        assert answer.status == 416, (spec, answer.status)
        assert answer.headers["Content-Range"] == f"bytes */{size}", spec
    weak = ranged(node, "bytes=0-9", {"If-Range": "W/" + etag})
    assert weak.status == 200 and weak.body == export  # a weak tag never matches for If-Range
    # aiohttp refuses what it cannot parse, and several ranges (no multipart/byteranges), with 416
    # and the size: a player then asks again with one range.
    for spec in ("bytes=9-0", "bytes=abc", "lines=0-9", "bytes=0-9,20-29"):
        answer = ranged(node, spec)
        assert answer.status == 416, (spec, answer.status)
        assert answer.headers["Content-Range"] == f"bytes */{size}", spec


def test_the_export_is_404_until_it_exists(node: RunningNode) -> None:
    answer = call(node, "GET", f"/r/{SHARED_ID}/composite.mp4", admin_token())
    assert answer.status == 404 and answer.json()["code"] == "not_exported"
    data = call(node, "GET", f"/api/recordings/{SHARED_ID}/playback", admin_token()).json()
    assert data["video_ready"] is False and data["video_url"] == f"/r/{SHARED_ID}/composite.mp4"


def test_a_later_withdrawal_of_share_shows_at_the_next_load(node: RunningNode, root: Path) -> None:
    directory = standard_session(root, STAGE, "20261203T100000Z-aa00", club_id=CLUB, video_s=None)
    path = f"/api/recordings/{directory.name}/playback"
    before = call(node, "GET", path, admin_token()).json()
    assert call(node, "GET", path, admin_token()).body == json.dumps(before, separators=(",", ":")).encode()
    assert "c-1" in [c["id"] for c in before["comments"]]  # AUDIENCE's
    Ledger(directory / "consent.jsonl").append(
        ConsentRecord(
            record_id="consent-later",
            stage_id=STAGE,
            session_id=directory.name,
            participant_id=AUDIENCE.participant_id,
            identity=AUDIENCE.identity,
            name=AUDIENCE.name,
            scopes=("comments", "media"),
            policy_version=POLICY,
            decision="granted",
            at=time.time(),
            method="settings",
        )
    )
    after = call(node, "GET", path, admin_token()).json()
    assert [c["id"] for c in after["comments"]] == ["c-4"]
    assert AUDIENCE.name not in json.dumps(after)


def test_a_members_cookie_stops_opening_the_session_once_they_leave_the_club(node: RunningNode) -> None:
    leaver = "id-club-leaver"
    added = call(node, "PUT", f"/api/clubs/{CLUB}/members/{leaver}", admin_token(), {"name": "Dr Leaver"})
    assert added.status in (200, 201, 204), added.body
    answer = call(node, "POST", f"/r/{SESSION}/access", token(None, "audience", leaver, club=CLUB))
    assert answer.status == 204, answer.body
    with_cookie = {"Cookie": cookie_of(answer)[0]}
    assert call(node, "GET", PATHS["page data"], headers=with_cookie).status == 200
    removed = call(node, "DELETE", f"/api/clubs/{CLUB}/members/{leaver}", admin_token())
    assert removed.status in (200, 204), removed.body
    time.sleep(2.1)  # MEMBERSHIP_RECHECK_S: Range requests within it share one look at the club
    for what in ("page data", "export"):
        refused = call(node, "GET", PATHS[what], headers=with_cookie)
        assert refused.status == 403 and refused.json()["code"] == "not_a_viewer", (what, refused.body)
    # A participant's cookie does not depend on the club: it keeps working.
    kept = call(node, "POST", f"/r/{SESSION}/access", token(STAGE, "audience", AUDIENCE.identity))
    assert call(node, "GET", PATHS["page data"], headers={"Cookie": cookie_of(kept)[0]}).status == 200
