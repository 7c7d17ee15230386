"""The session report and retention on a running node: a session recorded from real clients (a
reconnect, a named poll, a quiz, questions, people with and without ``share``), its report over HTTP
as JSON and CSV for exactly the roles that may read it, ``DELETE`` refused while recording and then
doing what the sweeper does, and the node's own sweeper deleting an expired session on its period."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from recording.signing import NodeKey, default_key_path
from server.api.recordings import RecordingManifest
from server.api.report_bodies import SessionReport
from tests.conftest import ROOT, RunningNode, start_node
from tests.recording.recorded import record_session
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.tokens import bearer, token
from tests.support.waiting import eventually

POLICY = "2026-11"
SWEEP_S = 0.3
HOOK_SECRET = "webhook-secret-for-retention"


class Hooks:
    """The node's webhooks, received by a plain HTTP server in a thread (the node outlives each
    test's event loop): every event body, in order of arrival."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, kind: str, session_id: str) -> list[dict[str, Any]]:
        found = [e["data"] for e in self.events if e["type"] == kind]
        return [d for d in found if d.get("session_id") == session_id]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retention") / "recordings"


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    received = Hooks()
    try:
        yield received
    finally:
        received.server.shutdown()


@pytest.fixture(scope="module")
def node(root: Path, hooks: Hooks) -> Iterator[RunningNode]:
    """A recording node that sweeps every 0.3 s with a default retention of 1 day. Its key is made
    here first, so that sessions written by the test are signed by the key the node signs with."""
    NodeKey.load_or_create(default_key_path(root))
    running = start_node(
        root.parent,
        {
            "MEDSTAGE_RECORDING_MODE": "manual",
            "MEDSTAGE_RECORDINGS_DIR": str(root),
            "MEDSTAGE_RECORDING_RETENTION_DAYS": "1",
            "MEDSTAGE_RECORDING_SWEEP_INTERVAL_S": str(SWEEP_S),
            "MEDSTAGE_MEDIA_WORKERS": "0",
            "MEDSTAGE_WEBHOOK_URLS": hooks.url,
            "MEDSTAGE_WEBHOOK_SECRET": HOOK_SECRET,
        },
    )
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


def verify(session: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recording", "verify", str(session)], cwd=ROOT, capture_output=True, text=True
    )


def manifest(session: Path) -> dict[str, Any]:
    return json.loads((session / "manifest.json").read_text())


async def consent(client: MedstageClient, scopes: list[str]) -> None:
    await client.request(
        {"type": "consent.give", "scopes": scopes, "policy_version": POLICY, "method": "join_prompt"}
    )


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


async def test_a_recorded_sessions_report_and_deletion_over_http(  # type: ignore[no-untyped-def]
    node: RunningNode, root: Path, hooks: Hooks, clip
) -> None:
    stage = "rep-" + uuid.uuid4().hex[:6]
    alice_id = "alice-" + uuid.uuid4().hex[:6]
    async with (
        MedstageClient(node.url) as host,
        MedstageClient(node.url) as alice,
        MedstageClient(node.url) as bob,
        aiohttp.ClientSession(node.url) as http,
    ):
        await host.join(stage, "Dr Host", "host")
        await alice.join(stage, "Alice", "audience", identity=alice_id)
        await bob.join(stage, "Bob", "audience")
        await consent(host, ["media", "comments", "share"])
        await consent(alice, ["comments", "share"])
        await consent(bob, ["comments"])  # recorded, never named
        await host.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        started = await host.request({"type": "recording.start"})
        session_id = started["session_id"]
        session = root / stage / session_id

        def written() -> int:
            if not (session / "manifest.json").is_file():
                return 0
            return sum(t["first_frame_at"] is not None for t in manifest(session)["tracks"])

        await eventually(lambda: written() == 2, 15)  # the host's camera and microphone
        recording = f"/api/stages/{stage}/recordings/{session_id}"

        async with http.delete(recording, headers=bearer(token(stage, "host"))) as r:
            assert r.status == 409 and (await r.json())["code"] == "recording", "never while recording"

        await alice.request({"type": "question.ask", "text": "Is the dose weight-based?"})
        await bob.request({"type": "question.ask", "text": "bob's own question"})
        poll = await host.request(
            {"type": "poll.create", "question": "First-line?", "options": ["ACE", "BB"], "anonymous": False}
        )
        quiz = await host.request(
            {"type": "poll.create", "question": "2 + 2?", "options": ["3", "4"], "quiz": True, "correct": [1]}
        )
        for p in (poll["poll_id"], quiz["poll_id"]):
            await host.request({"type": "poll.open", "poll_id": p})
        await alice.request({"type": "poll.vote", "poll_id": poll["poll_id"], "choices": [1]})
        await bob.request({"type": "poll.vote", "poll_id": poll["poll_id"], "choices": [0]})
        await alice.request({"type": "poll.vote", "poll_id": quiz["poll_id"], "choices": [1]})
        await bob.request({"type": "poll.vote", "poll_id": quiz["poll_id"], "choices": [0]})
        for p in (poll["poll_id"], quiz["poll_id"]):
            await host.request({"type": "poll.close", "poll_id": p})
        await alice.close()
        async with MedstageClient(node.url) as again:  # the same person, a new connection
            await again.join(stage, "Alice", "audience", identity=alice_id)
            await host.request({"type": "recording.stop"})
        await eventually(lambda: manifest(session)["status"] == "complete", 15)

        report_url = recording + "/report"
        # Who may read it: the platform, the stage's host and moderators (the record grant).
        matrix = {
            "platform": (bearer(), 200),
            "host": (bearer(token(stage, "host")), 200),
            "moderator": (bearer(token(stage, "moderator")), 200),
            "speaker": (bearer(token(stage, "speaker")), 403),
            "audience": (bearer(token(stage, "audience")), 403),
            "another stage's host": (bearer(token("elsewhere", "host")), 403),
            "no token": ({}, 401),
        }
        for who, (headers, status) in matrix.items():
            async with http.get(report_url, headers=headers) as r:
                assert r.status == status, who
                if status != 200:
                    assert (await r.json(content_type=None))["code"], who

        async with http.get(report_url, headers=bearer(token(stage, "moderator"))) as r:
            report = msgspec.convert(await r.json(), SessionReport)  # the documented schema
        attendance = report.attendance
        assert (attendance.attendees, attendance.named, attendance.anonymous) == (3, 2, 1)
        alice_row = next(p for p in attendance.people if p.identity == alice_id)
        assert len(alice_row.intervals) == 2, "the reconnect is a second interval of the same person"
        polls = {p.poll_id: p for p in report.polls}
        assert [(a.identity, a.choices) for a in polls[poll["poll_id"]].answers] == [(alice_id, [1])]
        assert polls[poll["poll_id"]].anonymous_answers == 1
        assert polls[quiz["poll_id"]].correct_ballots == 1
        assert [(s.identity, s.correct) for s in report.quiz.scores] == [(alice_id, 1)]
        assert (report.questions.asked, report.questions.named, report.questions.anonymous) == (2, 1, 1)
        assert "bob" not in json.dumps(msgspec.to_builtins(report)).lower()

        async with http.get(report_url + "?format=csv", headers=bearer()) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await r.text())))
        assert [r["name"] for r in rows] == ["Alice", "Dr Host", "(anonymous)"]
        assert rows[0][f"poll {poll['poll_id']}"] == "BB" and rows[0][f"quiz {quiz['poll_id']}"] == "correct"
        async with http.get(report_url + "?format=csv&table=questions", headers=bearer()) as r:
            questions = list(csv.DictReader(io.StringIO(await r.text())))
        assert sorted(q["text"] for q in questions) == ["", "Is the dose weight-based?"]
        async with http.get(report_url + "?format=xml", headers=bearer()) as r:
            assert r.status == 400 and (await r.json(content_type=None))["code"] == "invalid_query"

        # Deleting by hand: the record grant or the platform, as reading.
        for refused in (token(stage, "speaker"), token(stage, "audience"), token("elsewhere", "host")):
            async with http.delete(recording, headers=bearer(refused)) as r:
                assert r.status == 403
        async with http.delete(recording, headers={}) as r:
            assert r.status == 401
        tracks = [session / t["file"] for t in manifest(session)["tracks"]]
        assert len(tracks) == 2 and all(t.stat().st_size > 0 for t in tracks)
        assert (session / "timeline.msgpack").is_file()
        async with http.delete(recording, headers=bearer(token(stage, "moderator", "dr-deleter"))) as r:
            assert r.status == 204
        assert not any(t.exists() for t in tracks), "the media is gone"
        assert sorted(p.name for p in session.iterdir()) == [
            "consent.heads.jsonl",
            "consent.jsonl",
            "manifest.json",
        ]
        async with http.get(recording, headers=bearer()) as r:
            gone = msgspec.convert(await r.json(), RecordingManifest)
        assert gone.status == "deleted" and gone.deletion and gone.deletion["reason"] == "by hand"
        async with http.delete(recording, headers=bearer()) as r:
            assert r.status == 204, "deleting again changes nothing"
        # Announced once, by whom and what went (the second DELETE did nothing, said nothing).
        await eventually(lambda: hooks.of("recording.deleted", session_id), 10)
        await asyncio.sleep(0.3)
        [deleted] = hooks.of("recording.deleted", session_id)
        assert deleted["stage_id"] == stage and deleted["reason"] == "by hand", deleted
        assert deleted["by"] == "dr-deleter", deleted
        assert deleted["retention_days"] is None and "tracks" in deleted["deleted"], deleted
        assert deleted["manifest"] == recording
        async with http.get(f"/api/stages/{stage}/recordings", headers=bearer()) as r:
            listed = (await r.json())["sessions"]
        assert [(s["session_id"], s["status"]) for s in listed] == [(session_id, "deleted")]

    verified = verify(session)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "were deleted at" in verified.stdout and "by hand" in verified.stdout
    entries = (session / "consent.jsonl").read_text().splitlines()
    assert json.loads(entries[-1])["record"]["type"] == "deletion"


async def test_the_nodes_sweeper_deletes_what_expired_and_keeps_the_rest(
    node: RunningNode, root: Path, hooks: Hooks
) -> None:
    key = NodeKey.load_or_create(default_key_path(root))
    # Recorded on 2026-11-26 (a week before this test's clock): one with the node's default (1 day),
    # one its stage keeps forever.
    old = await record_session(root, key, session_id="old-" + uuid.uuid4().hex[:6])
    kept = await record_session(root, key, session_id="kept-" + uuid.uuid4().hex[:6])
    data = manifest(kept.session)
    data["retention_days"] = 0
    (kept.session / "manifest.json").write_text(json.dumps(data))

    await eventually(lambda: manifest(old.session)["status"] == "deleted", 10 * SWEEP_S + 10)
    assert not (old.session / "tracks").exists() and not (old.session / "timeline.msgpack").exists()
    assert manifest(old.session)["deletion"]["reason"] == "retention"
    assert manifest(kept.session)["status"] == "complete" and (kept.session / "timeline.msgpack").is_file()
    verified = verify(old.session)
    assert verified.returncode == 0 and "retention, by sweeper" in verified.stdout, verified.stdout
    await eventually(lambda: hooks.of("recording.deleted", old.session.name), 10)
    [deleted] = hooks.of("recording.deleted", old.session.name)
    assert (deleted["reason"], deleted["by"]) == ("retention", "sweeper"), deleted
    assert deleted["retention_days"] == 1, deleted
    assert not hooks.of("recording.deleted", kept.session.name)


async def test_a_sessions_retention_is_its_stages_else_its_clubs(node: RunningNode, root: Path) -> None:
    club = "club-" + uuid.uuid4().hex[:6]
    inherits, own = "inh-" + uuid.uuid4().hex[:6], "own-" + uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession(node.url) as http:
        body = {"id": club, "name": "Cardiology", "recording_retention_days": 30}
        async with http.post("/api/clubs", json=body, headers=bearer()) as r:
            assert r.status == 201 and (await r.json())["recording_retention_days"] == 30
        async with http.patch(
            f"/api/clubs/{club}", json={"recording_retention_days": 45}, headers=bearer()
        ) as r:
            assert r.status == 200 and (await r.json())["recording_retention_days"] == 45
        async with http.patch(
            f"/api/clubs/{club}", json={"recording_retention_days": -1}, headers=bearer()
        ) as r:
            assert r.status == 400
        for stage, extra in ((inherits, {}), (own, {"recording_retention_days": 7})):
            async with http.post(
                "/api/stages", json={"id": stage, "club": club, **extra}, headers=bearer()
            ) as r:
                assert r.status == 201, await r.text()
    sessions = {}
    for stage in (inherits, own):
        async with MedstageClient(node.url) as host:
            await host.join(stage, "Dr Host", "host")
            started = await host.request({"type": "recording.start"})
            await host.request({"type": "recording.stop"})
        sessions[stage] = root / stage / started["session_id"]
        await eventually(lambda s=sessions[stage]: manifest(s)["status"] == "complete", 15)
    assert (manifest(sessions[inherits])["retention_days"], manifest(sessions[inherits])["club_id"]) == (
        45,
        club,
    )
    assert manifest(sessions[own])["retention_days"] == 7
