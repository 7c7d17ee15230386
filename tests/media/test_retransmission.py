"""A subscriber's NACKs answered from the forwarding ring, under loss induced at a real aiortc receiver."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.loss import IncomingLog, drop_incoming, log_incoming, send_nack
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

        before = node.metrics()
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
    metrics = node.metrics()
    resent = metrics["medstage_retransmissions_total"] - before["medstage_retransmissions_total"]
    # Once the viewer's reports show lasting loss, the node also sends a copy of each frame's last
    # packet (media/redundancy.py): some losses are repaired by a copy before any NACK.
    copies = metrics["medstage_redundant_copies_total"] - before["medstage_redundant_copies_total"]
    assert metrics["medstage_link_datagrams_sent_total"] > 0, "the viewer was served by a media worker"
    assert resent > 0, "NACKed packets were resent"
    assert resent + copies >= len(loss.recovered), (resent, copies, len(loss.recovered))
    assert sorted(loss.delays)[len(loss.delays) // 2] < 0.1, sorted(loss.delays)
    assert max(loss.delays) < 1.0, sorted(loss.delays)
    # ...and what the viewer assembled decodes.
    assert stats.decodable_ratio is not None and stats.decodable_ratio >= 0.98, stats


# The limits the guarded node runs with (docs/configuration.md): a packet goes to a slot at most
# twice, 100 ms apart; the slot's resends beyond a burst of 40 are at most 10 % of what it was sent.
MAX_RESENDS = 2
BURST = 40
BUDGET_PERCENT = 10


@pytest.fixture
def guarded_node(tmp_path: Path) -> Iterator[RunningNode]:
    running = start_node(
        tmp_path,
        {
            "MEDSTAGE_NACK_HOLD_OFF_MS": "100",
            "MEDSTAGE_NACK_MAX_RESENDS": str(MAX_RESENDS),
            "MEDSTAGE_NACK_BURST_PACKETS": str(BURST),
            "MEDSTAGE_NACK_BUDGET_PERCENT": str(BUDGET_PERCENT),
        },
    )
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


@contextlib.asynccontextmanager
async def watched_viewer(
    node: RunningNode, clip: Any, packets: int
) -> AsyncIterator[tuple[Any, IncomingLog, Any]]:
    """A speaker publishing and a viewer whose video receiver is watched, once it got ``packets``;
    yields the receiver, what it got since, and its slot's stats (every packet since the start)."""
    stage = "nack-" + uuid.uuid4().hex[:8]
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        slot = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        stats = await viewer.wait_media(slot["mid"], keyframe=True, timeout=10)
        assert viewer.subscriber_pc is not None
        receiver = next(t.receiver for t in viewer.subscriber_pc.getTransceivers() if t.mid == slot["mid"])
        seen = log_incoming(receiver)
        await eventually(lambda: len(seen.media) >= packets, 20)
        yield receiver, seen, stats


def _answered(node: RunningNode, before: dict[str, float]) -> tuple[float, float]:
    """Resent and suppressed since ``before`` (the second is 0 on a node that does not count it)."""
    now = node.metrics()
    resent = now["medstage_retransmissions_total"] - before["medstage_retransmissions_total"]
    suppressed = now.get("medstage_retransmissions_suppressed_total", 0) - before.get(
        "medstage_retransmissions_suppressed_total", 0
    )
    return resent, suppressed


async def test_the_same_nack_fifty_times_in_a_burst_is_resent_at_most_max_resends_times(
    guarded_node: RunningNode, clip
) -> None:  # type: ignore[no-untyped-def]
    node = guarded_node
    async with watched_viewer(node, clip, 50) as (receiver, seen, _):
        assert seen.ssrc is not None
        seq = seen.media[-5]  # received moments ago: in the ring
        before = node.metrics()
        for _ in range(50):
            await send_nack(receiver, seen.ssrc, [seq])
        await eventually(lambda: sum(_answered(node, before)) >= 50, 10)
        await asyncio.sleep(0.5)  # RTX copies still on their way

    assert 1 <= seen.rtx.get(seq, 0) <= MAX_RESENDS, seen.rtx
    resent, suppressed = _answered(node, before)
    assert suppressed >= 50 - MAX_RESENDS, (resent, suppressed)


async def test_a_nack_for_a_thousand_old_packets_is_capped_by_the_slots_budget(
    guarded_node: RunningNode, clip
) -> None:  # type: ignore[no-untyped-def]
    node = guarded_node
    async with watched_viewer(node, clip, 300) as (receiver, seen, stats):
        assert seen.ssrc is not None
        last = seen.media[-1]
        wanted = [(last - back) & 0xFFFF for back in range(999, -1, -1)]  # oldest first
        # aiortc packs a NACK's list as given: ascending, so split where the 16-bit numbers wrap.
        cut = next((i for i in range(1, len(wanted)) if wanted[i] < wanted[i - 1]), len(wanted))
        in_ring = len(set(wanted) & set(seen.media))  # received moments ago (and older ones maybe)
        before = node.metrics()
        for part in (wanted[:cut], wanted[cut:]):
            if part:
                await send_nack(receiver, seen.ssrc, part)
        await eventually(lambda: sum(_answered(node, before)) >= in_ring, 10)
        await asyncio.sleep(0.5)
        # Every media packet the slot got since it started (aiortc counts an RTX copy as one more
        # packet of the track), and a few that loopback may have lost on a loaded machine.
        forwarded = stats.packets - seen.rtx_packets + 10

    resent, suppressed = _answered(node, before)
    bound = BURST + BUDGET_PERCENT / 100 * forwarded
    assert in_ring > 2 * bound, (in_ring, bound)  # else the budget would not be what is tested
    assert 0 < resent <= bound, (resent, bound, forwarded, in_ring)
    assert seen.rtx_packets <= bound, (seen.rtx_packets, bound)
    assert suppressed >= in_ring - bound, (resent, suppressed, in_ring)
