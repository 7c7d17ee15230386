"""A screen share is recorded as its own tracks (``<participant>-screen-<kind>-<n>``), under the
sharer's media consent like their camera (docs/recording.md); files judged by ffprobe and PyAV."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningNode
from tests.recording.test_recording_node import assert_decodable, consent, recording_cli, wait_status
from tests.server.test_screen_share import share
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip


@pytest.fixture
def node(recording_node: RunningNode) -> RunningNode:
    return recording_node


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


async def test_a_share_is_its_own_track_and_only_with_media_consent(
    node: RunningNode, rec_root: Path, clip: Any
) -> None:
    stage = "rsh-" + uuid.uuid4().hex[:6]
    pcs = []
    async with (
        MedstageClient(node.url) as host,
        MedstageClient(node.url) as yes,
        MedstageClient(node.url) as no,
    ):
        await host.join(stage, "Dr Host", "host")
        await yes.join(stage, "Dr Yes", "speaker")
        await no.join(stage, "Dr No", "speaker")
        await consent(yes, ["media"])
        await consent(no, ["comments"])  # not media: neither camera nor share may be written
        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]
        await yes.wait_for("recording.started", timeout=5)

        # Who has no media consent shares first: seen by everyone, written nowhere.
        pc, reply = await share(no, clip)
        pcs.append(pc)
        assert reply["type"] == "publish.answer", reply
        await host.wait_for("slot.assigned", lambda m: m["participant_id"] == no.participant_id)
        await asyncio.sleep(1.5)
        await no.request({"type": "publish.stop", "source": "screen"})

        # Then the consenting speaker: camera and share (with a tab's sound) side by side.
        await yes.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        pc, reply = await share(yes, clip)
        pcs.append(pc)
        assert reply["type"] == "publish.answer", reply
        await host.wait_for(
            "slot.assigned", lambda m: m["participant_id"] == yes.participant_id and m["source"] == "screen"
        )
        await asyncio.sleep(3)
        await yes.request({"type": "publish.stop", "source": "screen"})
        await asyncio.sleep(0.5)
        await host.request({"type": "recording.stop"})
        done = await wait_status(session, "complete")
        for pc in pcs:
            await pc.close()

    tracks = {(t["participant_id"], t["source"], t["kind"]): t for t in done["tracks"]}
    pid = yes.participant_id
    assert set(tracks) == {
        (pid, "camera", "audio"),
        (pid, "camera", "video"),
        (pid, "screen", "audio"),
        (pid, "screen", "video"),
    }, done["tracks"]
    assert not list((session / "tracks").glob(f"{no.participant_id}*")), "nothing of who did not consent"
    for kind in ("video", "audio"):
        entry = tracks[(pid, "screen", kind)]
        assert entry["file"] == f"tracks/{pid}-screen-{kind}-1.webm.sealed" and entry["sealed"]
        path = session / entry["file"]
        seen = assert_decodable(path, kind)
        assert seen.duration > 2.0, (kind, seen)
        assert entry["frames"] == seen.packets
        assert entry["capture_ended_at"] is not None  # ended with the share, before the recording
        assert entry["capture_ended_at"] < done["stopped_at"]
    assert tracks[(pid, "camera", "video")]["file"] == f"tracks/{pid}-video-1.webm.sealed"

    timeline = json.loads((session / "timeline.json").read_text())
    shares = [
        (e["type"], e["participant"])
        for e in timeline
        if e["type"] in ("publishing.started", "publishing.stopped") and e.get("source") == "screen"
    ]
    assert shares == [
        ("publishing.started", no.participant_id),
        ("publishing.stopped", no.participant_id),
        ("publishing.started", pid),
        ("publishing.stopped", pid),
    ], shares
    result = recording_cli("verify", str(session))
    assert result.returncode == 0, result.stdout + result.stderr
