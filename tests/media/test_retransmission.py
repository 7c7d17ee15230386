"""A subscriber's NACKs answered from the forwarding ring, under loss induced at a real aiortc receiver."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from tests.conftest import RunningNode
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.loss import drop_incoming
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


async def test_packets_a_subscriber_lost_are_resent_from_the_ring_on_its_nack(
    node: RunningNode, clip
) -> None:  # type: ignore[no-untyped-def]
    stage = "nack-" + uuid.uuid4().hex[:8]
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url, decode=True) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        video = EncodedVideoTrack(clip)
        await speaker.publish(EncodedAudioTrack(clip), video)
        slot = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        stats = await viewer.wait_media(slot["mid"], keyframe=True, timeout=10)
        assert viewer.subscriber_pc is not None
        receiver = next(t.receiver for t in viewer.subscriber_pc.getTransceivers() if t.mid == slot["mid"])

        resent_before = node.metrics()["medstage_retransmissions_total"]
        loss = drop_incoming(receiver, every=15)  # ≈ 7 % of the video packets, each lost once
        await eventually(lambda: len(loss.dropped) >= 20, 15)
        loss.active = False
        with contextlib.suppress(TimeoutError):
            await eventually(lambda: loss.intact, 3)
        frames = stats.frames_complete
        await eventually(lambda: stats.frames_complete >= frames + 15, 5)  # and video goes on

    # The lost packets came back, byte for byte, as RTX (the slots negotiate it). All of them, but
    # for what a loaded machine may really lose besides (a NACK or an RTX packet: asked only once).
    assert all(loss.dropped[seq] == payload for seq, payload in loss.recovered.items())
    assert len(loss.recovered) >= 0.9 * len(loss.dropped), (sorted(loss.dropped), sorted(loss.recovered))
    assert loss.rtx_packets >= len(loss.recovered), (loss.rtx_packets, len(loss.recovered))
    # They were resent by the node from its ring, on the viewer's NACK (aiortc NACKs at the next
    # packet after a gap), promptly: the ring is not a keyframe wait...
    resent = node.metrics()["medstage_retransmissions_total"] - resent_before
    assert resent >= len(loss.recovered), (resent, len(loss.recovered))
    assert sorted(loss.delays)[len(loss.delays) // 2] < 0.1, sorted(loss.delays)
    assert max(loss.delays) < 1.0, sorted(loss.delays)
    # ...and what the viewer assembled decodes.
    assert stats.decodable_ratio is not None and stats.decodable_ratio >= 0.98, stats
