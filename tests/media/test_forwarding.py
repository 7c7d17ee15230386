"""The SFU with real aiortc peers on a running node: fan-out, keyframes, slots, and no decoding."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.conftest import RunningNode
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


def stage_id() -> str:
    return "fwd-" + uuid.uuid4().hex[:8]


async def test_one_publisher_twenty_subscribers_keyframe_first_decodable_and_nothing_decoded(
    node: RunningNode, clip
) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with MedstageClient(node.url) as speaker:
        await speaker.join(stage, "Dr Speaker", "host")
        video = EncodedVideoTrack(clip)
        await speaker.publish(EncodedAudioTrack(clip), video)

        viewers = [MedstageClient(node.url, decode=(i == 0)) for i in range(20)]
        try:
            await asyncio.gather(*(v.connect() for v in viewers))
            await asyncio.gather(
                *(v.join(stage, f"Dr Viewer {i}", "audience") for i, v in enumerate(viewers))
            )
            firsts = await asyncio.gather(*(v.wait_media(kind="video", timeout=20) for v in viewers))
            for i, stats in enumerate(firsts):
                assert stats.first_frame_keyframe is True, f"viewer {i} started on a delta frame"
            await asyncio.gather(*(v.wait_media(kind="audio", timeout=10) for v in viewers))

            # Let media flow, then judge the checking viewer's video.
            checker = viewers[0]
            await eventually(lambda: checker.received("video").frames_complete >= 120, 20)
            seen = checker.received("video")
            assert seen.decodable_ratio is not None and seen.decodable_ratio >= 0.95, seen
            for v in viewers:
                assert v.received("audio").packets > 0
                assert v.received("video").frames_complete > 0

            metrics = node.metrics()
            assert metrics["medstage_decoded_frames_total"] == 0, "the SFU decoded something"
            assert metrics["medstage_rtp_packets_sent_total"] > 20 * 100
            # 20 joiners in a burst: upstream PLIs coalesced, not one per viewer.
            assert video.keyframe_requests <= 10, video.keyframe_requests
        finally:
            await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)


async def test_a_viewer_who_joined_first_receives_a_speaker_who_starts_later(node: RunningNode, clip) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as viewer:
        await host.join(stage, "Dr Host", "host")
        await viewer.join(stage, "Dr Early", "audience")
        async with MedstageClient(node.url) as speaker:
            await speaker.join(stage, "Dr Late", "speaker")
            await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
            assigned = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video", timeout=10)
            assert assigned["participant_id"] == speaker.participant_id
            stats = await viewer.wait_media(assigned["mid"], keyframe=True, timeout=10)
            assert stats.first_frame_keyframe is True


async def test_a_speaker_who_stops_disappears_within_a_second(node: RunningNode, clip) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        assigned = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        await viewer.wait_media(assigned["mid"], timeout=10)

        stopped_at = time.monotonic()
        await speaker.request({"type": "publish.stop"})
        released = await viewer.wait_for("slot.released", lambda m: m["mid"] == assigned["mid"], timeout=1.0)
        assert time.monotonic() - stopped_at < 1.0
        assert released["participant_id"] == speaker.participant_id
        # And no more media on that slot once released.
        stats = viewer.stats(assigned["mid"])
        packets_then = stats.packets
        await asyncio.sleep(0.5)
        assert stats.packets - packets_then <= 2  # at most what was in flight


async def test_a_speaker_who_leaves_disappears_and_the_slot_is_reused(node: RunningNode, clip) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as viewer:
        await host.join(stage, "Dr Host", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        first = MedstageClient(node.url)
        await first.connect()
        await first.join(stage, "Dr First", "speaker")
        await first.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        a = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        await viewer.wait_media(a["mid"], timeout=10)
        left_at = time.monotonic()
        await first.close()
        await viewer.wait_for("slot.released", lambda m: m["mid"] == a["mid"], timeout=1.0)
        assert time.monotonic() - left_at < 1.0
        await viewer.wait_for("participant.left", timeout=1.0)
        await asyncio.sleep(0.2)  # packets in flight land
        # Watched before the second speaker exists: nothing of theirs can slip past the watch.
        first_of_second = viewer.watch_next_frame(a["mid"])

        async with MedstageClient(node.url) as second:
            await second.join(stage, "Dr Second", "speaker")
            # Mid-GOP and slow to answer PLI: delta frames come first, the next keyframe ~0.8 s later.
            video = EncodedVideoTrack(clip, start_index=5, answer_requests=False)
            await second.publish(EncodedAudioTrack(clip), video)
            b = await viewer.wait_for(
                "slot.assigned",
                lambda m: m["kind"] == "video" and m["participant_id"] == second.participant_id,
            )
            assert b["mid"] == a["mid"], "the freed slot is reused"
            await eventually(lambda: first_of_second.done, 10)
            assert first_of_second.starts_on_keyframe, first_of_second


async def test_mute_stops_forwarding_and_unmute_restarts_on_a_keyframe(node: RunningNode, clip) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        a = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        await viewer.wait_media(a["mid"], timeout=10)

        await speaker.mute("video", True)
        updated = await viewer.wait_for(
            "participant.updated", lambda m: m["participant"]["muted"]["video"], timeout=2
        )
        assert updated["participant"]["id"] == speaker.participant_id
        await asyncio.sleep(0.2)  # in-flight packets land
        stats = viewer.stats(a["mid"])
        frozen = stats.packets
        await asyncio.sleep(0.5)
        assert stats.packets == frozen, "a muted track is not forwarded"

        first_after = viewer.watch_next_frame(a["mid"])
        await speaker.mute("video", False)
        await eventually(lambda: first_after.done, 5)
        assert first_after.starts_on_keyframe, first_after


async def test_sigterm_closes_peers_and_sockets_and_exits_cleanly(node: RunningNode, clip) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await viewer.wait_media(kind="video", timeout=10)
        started = time.monotonic()
        code = await asyncio.to_thread(node.stop)
        assert code == 0
        assert time.monotonic() - started < 5
        assert await viewer.wait_closed(timeout=5) == 1001
        assert "stopped" in node.log()


async def test_h264_is_forwarded_when_the_publisher_prefers_it(node: RunningNode) -> None:
    from aiortc.mediastreams import VideoStreamTrack

    stage = stage_id()
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url, decode=True) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        # aiortc encodes H264 in this test process; the node only forwards it.
        await speaker.publish(None, VideoStreamTrack(), video_codecs=("H264",))
        a = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        stats = await viewer.wait_media(a["mid"], keyframe=True, timeout=10)
        assert stats.codec is not None and stats.codec.lower() == "h264", stats.codec
        assert stats.first_frame_keyframe is True
        await eventually(lambda: stats.decoded_ok >= 20, 10)
        assert stats.decodable_ratio is not None and stats.decodable_ratio >= 0.95
        assert node.metrics()["medstage_decoded_frames_total"] == 0


async def test_a_late_viewer_gets_every_publisher_and_earlier_viewers_keep_theirs(
    node: RunningNode, clip
) -> None:  # type: ignore[no-untyped-def]
    """Regression: a slot started before aiortc configured its sender broke the whole keyframe."""
    stage = stage_id()
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as speaker:
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await host.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        on_host = await host.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        await host.wait_media(on_host["mid"], timeout=10)
        for _ in range(3):
            async with MedstageClient(node.url) as viewer:
                await viewer.join(stage, "Dr Late", "audience")
                mids = set()
                async with asyncio.timeout(10):
                    while len(mids) < 2:
                        m = await viewer.wait_for(
                            "slot.assigned",
                            lambda m, mids=mids: m["kind"] == "video" and m["mid"] not in mids,
                        )
                        mids.add(m["mid"])
                for mid in mids:
                    stats = await viewer.wait_media(mid, keyframe=True, timeout=10)
                    assert stats.first_frame_keyframe is True
                frames = host.stats(on_host["mid"]).frames_complete
                await eventually(
                    lambda frames=frames: host.stats(on_host["mid"]).frames_complete >= frames + 10, 5
                )
        assert "forwarding failed" not in node.log()


async def test_a_moderator_mute_stops_forwarding_and_the_speaker_cannot_undo_it(
    node: RunningNode, clip
) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with (
        MedstageClient(node.url) as host,
        MedstageClient(node.url) as speaker,
        MedstageClient(node.url) as viewer,
    ):
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await viewer.join(stage, "Dr Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        a = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "audio")
        await viewer.wait_media(a["mid"], kind="audio", timeout=10)

        await host.request(
            {
                "type": "moderation.mute",
                "participant_id": speaker.participant_id,
                "kind": "audio",
                "muted": True,
            }
        )
        await asyncio.sleep(0.2)  # packets in flight land
        stats = viewer.stats(a["mid"])
        frozen = stats.packets
        await asyncio.sleep(0.5)
        assert stats.packets == frozen, "a moderator-muted track is not forwarded"

        reply = await speaker.request({"type": "publish.mute", "kind": "audio", "muted": False}, check=False)
        assert reply["type"] == "error" and reply["code"] == "moderator_muted", reply

        await host.request(
            {
                "type": "moderation.mute",
                "participant_id": speaker.participant_id,
                "kind": "audio",
                "muted": False,
            }
        )
        await eventually(lambda: stats.packets > frozen + 10, 5)


async def test_a_demoted_speaker_disappears_from_viewers_within_a_second(node: RunningNode, clip) -> None:  # type: ignore[no-untyped-def]
    stage = stage_id()
    async with (
        MedstageClient(node.url) as mod,
        MedstageClient(node.url) as speaker,
        MedstageClient(node.url) as viewer,
    ):
        await mod.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "audience")
        await viewer.join(stage, "Dr Viewer", "audience")
        refused = await speaker.request({"type": "publish.offer", "sdp": "v=0\r\n"}, check=False)
        assert refused["code"] in ("not_allowed", "bad_sdp")

        await speaker.request({"type": "hand.raise"})
        await mod.request({"type": "speaker.invite", "participant_id": speaker.participant_id})
        await speaker.wait_for("invitation", timeout=5)
        await speaker.request({"type": "invitation.accept"})
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        v = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        await viewer.wait_media(v["mid"], timeout=10)

        demoted_at = time.monotonic()
        await mod.request({"type": "speaker.demote", "participant_id": speaker.participant_id})
        await viewer.wait_for("slot.released", lambda m: m["mid"] == v["mid"], timeout=1.0)
        assert time.monotonic() - demoted_at < 1.0
        await asyncio.sleep(0.2)
        stats = viewer.stats(v["mid"])
        packets = stats.packets
        await asyncio.sleep(0.5)
        assert stats.packets == packets, "no media from a demoted speaker"
