"""Playback of a session a real node recorded: the markers and comments come from what the recorder
wrote, only who granted ``share`` is shown, and the participants (by their identities in the ledger)
may watch while others with a token for the stage may not."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import RunningNode
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.tokens import admin_token, token
from tests.support.waiting import eventually

POLICY = "2026-11"


async def consent(client: MedstageClient, scopes: list[str]) -> None:
    await client.request(
        {"type": "consent.give", "scopes": scopes, "policy_version": POLICY, "method": "join_prompt"}
    )


async def playback(node: RunningNode, session_id: str, bearer: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{node.url}/api/recordings/{session_id}/playback", headers={"Authorization": f"Bearer {bearer}"}
        ) as response,
    ):
        return response.status, await response.json()


async def test_a_recorded_session_plays_back_only_what_was_shared(
    recording_node: RunningNode, rec_root: Path
) -> None:
    stage = "pb-" + uuid.uuid4().hex[:6]
    ids = {name: f"id-{name}-{uuid.uuid4().hex[:6]}" for name in ("host", "yes", "quiet")}
    clip = load_clip()
    async with (
        MedstageClient(recording_node.url) as host,
        MedstageClient(recording_node.url) as yes,
        MedstageClient(recording_node.url) as quiet,
    ):
        await host.join(stage, "Dr Host", "host", identity=ids["host"])
        await yes.join(stage, "Dr Yes", "speaker", identity=ids["yes"])
        await quiet.join(stage, "Dr Quiet", "audience", identity=ids["quiet"])
        await consent(host, ["comments", "media", "share"])
        await consent(yes, ["comments", "media", "share"])
        await consent(quiet, ["comments", "media"])  # recorded, not to be shown to attendees
        started = await host.request({"type": "recording.start"})
        session_id = started["session_id"]
        session = rec_root / stage / session_id
        await yes.wait_for("recording.started", timeout=5)
        await yes.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))

        def capturing() -> bool:  # both tracks have their first frame (the recorder notes it at once)
            tracks = json.loads((session / "manifest.json").read_text())["tracks"]
            return sum(t["first_frame_at"] is not None for t in tracks) == 2

        await eventually(capturing, 10)
        await yes.request({"type": "comment.post", "text": "shared: slides follow"})
        await quiet.request({"type": "comment.post", "text": "quiet: not for attendees"})
        asked = await yes.request({"type": "question.ask", "text": "Is the dose weight-based?"})
        await host.request({"type": "question.answer", "question_id": asked["question_id"]})
        await host.request({"type": "recording.stop"})
        await eventually(
            lambda: json.loads((session / "manifest.json").read_text())["status"] == "complete", 15
        )

    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["club_id"] is None and manifest["stage_id"] == stage

    status, data = await playback(recording_node, session_id, token(stage, "audience", ids["yes"]))
    assert status == 200, data
    texts = json.dumps(data)
    assert [c["text"] for c in data["comments"]] == ["shared: slides follow"]
    assert "not for attendees" not in texts and "Dr Quiet" not in texts
    kinds = {m["kind"]: m for m in data["markers"]}
    assert kinds["speaker.joined"]["label"] == "Dr Yes went on stage"
    assert kinds["question.asked"]["question"]["text"] == "Is the dose weight-based?"
    assert kinds["question.answered"]["t"] >= kinds["question.asked"]["t"]
    assert 0 <= kinds["speaker.joined"]["t"] <= data["duration_s"]
    firsts = [t["first_frame_at"] for t in manifest["tracks"] if t["participant_id"] == yes.participant_id]
    assert len(firsts) == 2 and data["origin_at"] == min(firsts) > manifest["started_at"], (data, manifest)

    # Who was there may watch (sharing or not); a token for the stage of someone who was not may not.
    assert (await playback(recording_node, session_id, token(stage, "audience", ids["quiet"])))[0] == 200
    refused = await playback(recording_node, session_id, token(stage, "audience", "id-never-there"))
    assert refused[0] == 403 and refused[1]["code"] == "not_a_viewer"
    assert (await playback(recording_node, session_id, admin_token()))[0] == 200
