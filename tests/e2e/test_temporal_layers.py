"""VP8 temporal layers end to end: a Chromium speaker that does not simulcast (``?simulcast=0``) sends
one encoding with ``scalabilityMode: "L1T3"``; a Chromium viewer pinned to "Low" gets the base layer
(a quarter of the frames), then "High" the full rate. The node drops frames per viewer and rewrites
the rest (sequence numbers, picture ids): the viewer's decoder never stalls, never asks for a
keyframe at a switch, and nothing is decoded on the node. The viewer is an audience member, so its
connection lives in a media worker (the suite runs nodes with MEDSTAGE_MEDIA_WORKERS=2); a
moderator, whose connection lives in the node's process, is pinned Low beside it."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.test_simulcast import longest_stall

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

# The speaker's one video encoding.
_OUTBOUND = """async () => {
  let found = null;
  (await window.medstage.publisherPc.getStats()).forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      found = {mode: r.scalabilityMode || null, rid: r.rid || null, frames: r.framesEncoded || 0};
    }
  });
  return found;
}"""

# The viewer's inbound video of the speaker's slot.
_INBOUND_OF = """async (participantId) => {
  const slot = window.medstage.slots.find((s) => s.participantId === participantId && s.kind === 'video');
  const pc = window.medstage.subscriberPc;
  if (!slot || !pc) return null;
  let found = null;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && String(r.mid) === String(slot.mid)) {
      found = {decoded: r.framesDecoded || 0, keyframes: r.keyFramesDecoded || 0, pli: r.pliCount || 0,
               nack: r.nackCount || 0, freezes: r.freezeCount || 0, lost: r.packetsLost || 0,
               frozen: r.totalFreezesDuration || 0, width: r.frameWidth || 0,
               received: r.framesReceived || 0, packets: r.packetsReceived || 0,
               dropped: r.framesDropped || 0};
    }
  });
  return found;
}"""


async def rate_window(host, viewer, host_id: str, seconds: float, other=None):  # type: ignore[no-untyped-def]
    """Frames the viewer (and ``other``) decoded per frame the speaker encoded over ``seconds``;
    the viewer's samples."""
    sent0 = await host.page.evaluate(_OUTBOUND)
    first = await viewer.page.evaluate(_INBOUND_OF, host_id)
    other_first = None if other is None else await other.page.evaluate(_INBOUND_OF, host_id)
    samples = [(time.monotonic(), first)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        samples.append((time.monotonic(), await viewer.page.evaluate(_INBOUND_OF, host_id)))
    sent1 = await host.page.evaluate(_OUTBOUND)
    other_last = None if other is None else await other.page.evaluate(_INBOUND_OF, host_id)
    last = samples[-1][1]
    encoded = sent1["frames"] - sent0["frames"]
    assert encoded > 0, (sent0, sent1)
    if other is None:
        return (last["decoded"] - first["decoded"]) / encoded, samples
    return (
        (last["decoded"] - first["decoded"]) / encoded,
        samples,
        (other_last["decoded"] - other_first["decoded"]) / encoded,
    )


async def test_a_speaker_without_simulcast_sends_temporal_layers_and_a_low_viewer_gets_the_base_rate(
    open_stage, stage, node
):
    host = await open_stage(stage, "host", "Dr Host", query="simulcast=0")
    host_id = await host.join()
    await host.go_on_stage()
    offer = await host.page.evaluate("window.medstage.publisherPc.localDescription.sdp")
    assert "a=simulcast" not in offer and "a=rid:" not in offer, offer
    deadline = time.monotonic() + 10
    while (out := await host.page.evaluate(_OUTBOUND)) is None or out["frames"] == 0:
        assert time.monotonic() < deadline, out
        await asyncio.sleep(0.2)
    assert out["mode"] == "L1T3" and out["rid"] is None, out  # Chromium's libvpx honours it

    viewer = await open_stage(stage, "audience", "Viewer")
    moderator = await open_stage(stage, "moderator", "Dr Moderator")
    for page in (viewer, moderator):
        await page.join()
        await page.page.get_by_test_id("layer-select").select_option("low")
    for page in (viewer, moderator):
        video = await page.wait_for_video_of(host_id, frames=3, timeout_s=10)
        assert video["ok"], video
    await asyncio.sleep(1.0)  # the node's layer evaluation (every 0.25 s) has taken the base layer

    # Low: the base temporal layer, a quarter of the frames (TIDs 0, 2, 1, 2: one in four is TID 0),
    # in a media worker and in the node's process alike.
    start = await viewer.page.evaluate(_INBOUND_OF, host_id)
    low, low_samples, in_process = await rate_window(host, viewer, host_id, 3.0, moderator)
    print(f"low: {low:.2f} of the frames sent ({in_process:.2f} in-process); {low_samples[-1][1]}")
    assert 0.15 <= low <= 0.4, (low, low_samples)
    assert 0.15 <= in_process <= 0.4, in_process
    assert longest_stall(low_samples) < 1.0, low_samples

    # High: every frame, reached at the next sync point; no keyframe asked for, no stall.
    await viewer.page.get_by_test_id("layer-select").select_option("high")
    switched_at = time.monotonic()
    up, up_samples = await rate_window(host, viewer, host_id, 1.5)
    high, high_samples = await rate_window(host, viewer, host_id, 2.0)
    print(f"high: {up:.2f} in the 1.5 s after the choice, then {high:.2f}; {high_samples[-1][1]}")
    assert high >= 0.8, (high, high_samples)
    assert up > low, (up, low)
    samples = low_samples + up_samples + high_samples
    assert longest_stall(samples) < 1.0, samples
    end = samples[-1][1]
    assert end["pli"] == start["pli"], (start, end)
    assert end["keyframes"] == start["keyframes"], (start, end)  # switches needed no keyframe
    assert end["frozen"] - start["frozen"] < 1.0, (start, end)
    print(f"switched up within {time.monotonic() - switched_at:.1f} s")

    metrics = node.metrics()
    assert metrics["medstage_decoded_frames_total"] == 0, "the SFU decoded something"
    assert not host.unexpected_errors(), host.errors
    assert not viewer.unexpected_errors(), viewer.errors
    assert not moderator.unexpected_errors(), moderator.errors
