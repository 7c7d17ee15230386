"""A viewer's video quality choice in Chromium: "Audio only" stops the video (framesDecoded stops
rising) while the sound goes on (audio packets keep rising); "Auto" brings the video back. And
Chromium's REMB reaches the node (the viewer's bandwidth estimate, media/bwe.py).

The node runs its viewers in media workers (the suite's default, MEDSTAGE_MEDIA_WORKERS=2)."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_audio_only_stops_the_video_keeps_the_sound_and_auto_brings_it_back(open_stage, stage, node):
    host = await open_stage(stage, "host", "Dr Host")
    await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    media = await viewer.wait_for_media(timeout_s=8)
    assert media["videoAt"] is not None and media["audio"] > 0, media

    select = viewer.page.get_by_test_id("layer-select")
    await expect(select).to_be_visible()
    await expect(select).to_have_value("auto")

    # Chromium sends REMB for what it receives (goog-remb is offered; the media carries no
    # transport-wide number, only probes' padding does): its estimate is valid after about 5 s.
    for _ in range(100):
        if node.metrics()["medstage_remb_received_total"] > 0:
            break
        await asyncio.sleep(0.1)
    assert node.metrics()["medstage_remb_received_total"] > 0

    await select.select_option("audio")
    await expect(viewer.page.get_by_test_id("layer-choice")).to_have_attribute("data-preference", "audio")
    await asyncio.sleep(0.5)  # what was in flight is decoded
    before = await viewer.inbound()
    await asyncio.sleep(1.5)
    after = await viewer.inbound()
    assert after["video"]["framesDecoded"] == before["video"]["framesDecoded"], (before, after)
    assert after["video"]["packetsReceived"] == before["video"]["packetsReceived"], (before, after)
    assert after["audio"]["packetsReceived"] >= before["audio"]["packetsReceived"] + 50, (before, after)

    await select.select_option("auto")
    resumed = await viewer.wait_for_video_streams(count=1, frames=10, timeout_s=5)
    assert resumed["ok"], resumed
    await expect(select).to_have_value("auto")
