"""Screen sharing over the wire, with real aiortc peers and a node whose audience lives in two media
workers (the suite's default): a speaker publishes a camera and a screen share side by side, each
viewer gets two slot pairs that say their ``source``, media flows on both; a second share is refused
with ``share_busy``; a moderator's ``moderation.stop_share`` ends the share (not the camera) and tells
the sharer; demoting the speaker ends both (docs/protocol.md, "Screen sharing")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from tests.conftest import RunningNode, start_node
from tests.support.client import MedstageClient, _codec_preferences
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, attach_keyframe_requests, load_clip
from tests.support.waiting import eventually

Message = dict[str, Any]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    running = start_node(tmp_path_factory.mktemp("share"), {"MEDSTAGE_MEDIA_WORKERS": "2"})
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


async def share(
    client: MedstageClient, clip: Any, *, audio: bool = True
) -> tuple[RTCPeerConnection, Message]:
    """Open a screen share's own publisher connection (video, and a tab's audio) as a browser does;
    returns it and the reply (``publish.answer``, or the error: ``check`` is off)."""
    pc = RTCPeerConnection(client._configuration())
    tracks: list[Any] = [EncodedVideoTrack(clip)] + ([EncodedAudioTrack(clip)] if audio else [])
    video_sender = None
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if track.kind == "video":
            transceiver.setCodecPreferences(_codec_preferences(["VP8"]))
            video_sender = transceiver.sender
    await pc.setLocalDescription(await pc.createOffer())
    reply = await client.request(
        {"type": "publish.offer", "source": "screen", "sdp": pc.localDescription.sdp}, check=False
    )
    if reply["type"] == "publish.answer":
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        assert video_sender is not None
        attach_keyframe_requests(video_sender, tracks[0])
    return pc, reply


def stage_id() -> str:
    return "shr-" + uuid.uuid4().hex[:8]


async def assigned(viewer: MedstageClient, pid: str, count: int) -> list[Message]:
    return [
        await viewer.wait_for("slot.assigned", lambda m: m["participant_id"] == pid) for _ in range(count)
    ]


async def participant_update(client: MedstageClient, pid: str, check: Any) -> Message:
    return await client.wait_for(
        "participant.updated", lambda m: m["participant"]["id"] == pid and check(m["participant"])
    )


async def test_camera_and_share_side_by_side_a_second_share_refused_a_moderator_stops_it(
    node: RunningNode, clip: Any
) -> None:
    stage = stage_id()
    speaker, host, mod, viewer = (MedstageClient(node.url, decode=True) for _ in range(4))
    pcs: list[RTCPeerConnection] = []
    try:
        for c in (speaker, host, mod, viewer):
            await c.connect()
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await mod.join(stage, "Dr Mod", "moderator")
        await viewer.join(stage, "Dr Viewer", "audience")
        sid = speaker.participant_id
        assert sid is not None

        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        camera = await assigned(viewer, sid, 2)
        pc, reply = await share(speaker, clip)
        pcs.append(pc)
        assert reply["type"] == "publish.answer", reply
        screen = await assigned(viewer, sid, 2)

        # Two slot pairs: the camera's, and the share's own (its audio in that pair's audio slot).
        assert {(m["source"], m["kind"]) for m in camera} == {("camera", "audio"), ("camera", "video")}
        assert {(m["source"], m["kind"]) for m in screen} == {("screen", "audio"), ("screen", "video")}
        assert len({m["slot"] for m in camera}) == 1 and len({m["slot"] for m in screen}) == 1
        assert camera[0]["slot"] != screen[0]["slot"]
        assert camera[0]["stream"] != screen[0]["stream"]
        screen_video = next(m["mid"] for m in screen if m["kind"] == "video")
        camera_video = next(m["mid"] for m in camera if m["kind"] == "video")
        screen_audio = next(m["mid"] for m in screen if m["kind"] == "audio")
        # Both forward to the viewer (through its media worker), from a keyframe, decodable.
        for mid in (screen_video, camera_video):
            stats = await viewer.wait_media(mid, keyframe=True, timeout=20)
            assert stats.first_frame_keyframe is True
        await viewer.wait_media(screen_audio, kind="audio", timeout=10)
        await asyncio.sleep(0.3)
        assert viewer.stats(screen_video).decoded_ok > 0
        assert viewer.stats(screen_video).decode_failed == 0
        # Everyone sees what the share sends; the speaker's own camera is unchanged.
        person = (await participant_update(mod, sid, lambda p: p["sharing"]["video"]))["participant"]
        assert person["sharing"] == {"audio": True, "video": True}
        assert person["publishing"] == {"audio": True, "video": True}

        # One share at a time (the default): the host's is refused, with the typed error.
        host_pc, refused = await share(host, clip, audio=False)
        pcs.append(host_pc)
        assert (refused["type"], refused["code"]) == ("error", "share_busy"), refused
        assert refused["message"]

        # The moderator ends the share: released at once, the sharer told, the camera goes on.
        reply = await mod.request({"type": "moderation.stop_share", "participant_id": sid})
        assert reply["type"] == "ok"
        released = [
            await viewer.wait_for("slot.released", lambda m: m["participant_id"] == sid) for _ in range(2)
        ]
        assert {(m["source"], m["mid"]) for m in released} == {
            ("screen", screen_video),
            ("screen", screen_audio),
        }
        told = await speaker.wait_for("share.stopped")
        assert (told["participant_id"], told["by"]) == (sid, mod.participant_id)
        person = (await participant_update(viewer, sid, lambda p: not p["sharing"]["video"]))["participant"]
        assert person["publishing"] == {"audio": True, "video": True}
        before = viewer.stats(camera_video).frames_complete
        await eventually(lambda: viewer.stats(camera_video).frames_complete > before + 5, 5)

        # Now the host may share; it takes the freed pair.
        host_pc2, reply = await share(host, clip, audio=False)
        pcs.append(host_pc2)
        assert reply["type"] == "publish.answer", reply
        (again,) = await assigned(viewer, host.participant_id or "", 1)
        assert (again["source"], again["kind"]) == ("screen", "video")
        await viewer.wait_media(again["mid"], keyframe=True, timeout=20)
        # ... and stops it on its own (the browser's "stop sharing"): its camera-less publication ends.
        stop = await host.request({"type": "publish.stop", "source": "screen"})
        assert stop["type"] == "ok"
        gone = await viewer.wait_for("slot.released", lambda m: m["participant_id"] == host.participant_id)
        assert gone["source"] == "screen"
        error = await host.request({"type": "publish.stop", "source": "screen"}, check=False)
        assert error["code"] == "not_publishing"
    finally:
        for pc in pcs:
            await pc.close()
        for c in (speaker, host, mod, viewer):
            await c.close()


async def test_demoting_a_sharing_speaker_ends_camera_and_share(node: RunningNode, clip: Any) -> None:
    stage = stage_id()
    speaker, host, viewer = (MedstageClient(node.url) for _ in range(3))
    pcs: list[RTCPeerConnection] = []
    try:
        for c in (speaker, host, viewer):
            await c.connect()
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await viewer.join(stage, "Dr Viewer", "audience")
        sid = speaker.participant_id or ""
        await speaker.publish(None, EncodedVideoTrack(clip))
        pc, reply = await share(speaker, clip, audio=False)
        pcs.append(pc)
        assert reply["type"] == "publish.answer", reply
        got = await assigned(viewer, sid, 2)
        assert sorted(m["source"] for m in got) == ["camera", "screen"]
        # Muting the share's video is the share's own mute, apart from the camera's.
        await speaker.request({"type": "publish.mute", "source": "screen", "kind": "video", "muted": True})
        person = (await participant_update(viewer, sid, lambda p: p["share_muted"]["video"]))["participant"]
        assert person["muted"]["video"] is False

        await host.request({"type": "speaker.demote", "participant_id": sid})
        released = [
            await viewer.wait_for("slot.released", lambda m: m["participant_id"] == sid) for _ in range(2)
        ]
        assert sorted(m["source"] for m in released) == ["camera", "screen"]
        person = (await participant_update(viewer, sid, lambda p: p["role"] == "audience"))["participant"]
        assert person["sharing"] == {"audio": False, "video": False}
        assert person["publishing"] == {"audio": False, "video": False}
        # an audience member may not share
        again, refused = await share(speaker, clip, audio=False)
        pcs.append(again)
        assert refused["code"] == "not_allowed", refused
    finally:
        for pc in pcs:
            await pc.close()
        for c in (speaker, host, viewer):
            await c.close()


async def test_a_share_must_send_video(node: RunningNode) -> None:
    stage = stage_id()
    async with MedstageClient(node.url) as host:
        await host.join(stage, "Dr Host", "host")
        pc = RTCPeerConnection(host._configuration())
        try:
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            reply = await host.request(
                {"type": "publish.offer", "source": "screen", "sdp": pc.localDescription.sdp}, check=False
            )
            assert (reply["type"], reply["code"]) == ("error", "invalid_message"), reply
            # nothing of it is kept: no share, the host may share properly afterwards
            bad = await host.request({"type": "publish.offer", "source": "window", "sdp": "v=0"}, check=False)
            assert bad["code"] == "invalid_message"
            stop = await host.request({"type": "publish.stop", "source": "screen"}, check=False)
            assert stop["code"] == "not_publishing"
        finally:
            await pc.close()
