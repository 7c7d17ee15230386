"""Screen sharing in real browsers: the host shares Chromium's fake screen (1280x720, picked without a
prompt by --auto-select-desktop-capture-source) beside its camera; a viewer decodes the share at full
width and shows it large with the camera small beside it; the host stops it with the button, the
browser's own "stop sharing" ends it, and a moderator stops it from the People tab.

Assertions are on the pages' own getStats and on the DOM.
"""

from __future__ import annotations

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

# Polls the viewer's subscriber connection until the slot carrying `participantId`'s screen share
# decodes video; returns its inbound-rtp figures (framesDecoded, frameWidth, frameHeight) and the
# audio packets of the share's pair.
_WAIT_FOR_SHARE = """async ({participantId, frames, timeoutMs}) => {
  const deadline = performance.now() + timeoutMs;
  let last = null;
  for (;;) {
    const slots = window.medstage.slots.filter(
      (s) => s.participantId === participantId && s.source === 'screen');
    const video = slots.find((s) => s.kind === 'video');
    const audio = slots.find((s) => s.kind === 'audio');
    const pc = window.medstage.subscriberPc;
    if (video && pc) {
      last = {slot: video.slot, mid: video.mid, framesDecoded: 0, frameWidth: 0, frameHeight: 0,
              audioMid: audio ? audio.mid : null, audioPackets: 0};
      (await pc.getStats()).forEach((r) => {
        if (r.type !== 'inbound-rtp') return;
        if (r.kind === 'video' && String(r.mid) === String(video.mid)) {
          last.framesDecoded = r.framesDecoded || 0;
          last.frameWidth = r.frameWidth || 0;
          last.frameHeight = r.frameHeight || 0;
        }
        if (audio && r.kind === 'audio' && String(r.mid) === String(audio.mid)) {
          last.audioPackets = r.packetsReceived || 0;
        }
      });
      if (last.framesDecoded >= frames && last.frameWidth > 0) return {ok: true, ...last};
    }
    if (performance.now() > deadline) return {ok: false, last, slots: window.medstage.slots};
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}"""

_SCREEN_CONNECTED = "window.medstage.screenPc && window.medstage.screenPc.connectionState === 'connected'"


def share_tile(participant_id: str) -> str:
    return f'[data-testid="tile-share"][data-participant-id="{participant_id}"]'


def camera_tile(participant_id: str) -> str:
    return f'[data-testid="tile"][data-participant-id="{participant_id}"]'


async def test_a_shared_screen_is_decoded_at_full_size_shown_large_and_stopped_three_ways(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    mod = await open_stage(stage, "moderator", "Dr Mod")
    await mod.join()
    media = await viewer.wait_for_media(timeout_s=8)
    assert media["videoAt"] is not None, media

    # The host shares: a button, a connection of its own, contentHint "detail" for slides.
    button = host.page.get_by_test_id("share-button")
    await expect(button).to_be_visible()
    await expect(button).to_contain_text("Share screen")
    await button.click()
    await host.page.wait_for_function(_SCREEN_CONNECTED, timeout=10_000)
    await expect(button).to_contain_text("Stop sharing")
    track = await host.page.evaluate(
        """() => {
          const [video] = window.medstage.session.screen.stream.getVideoTracks();
          const settings = video.getSettings();
          return {hint: video.contentHint, width: settings.width, height: settings.height,
                  audio: window.medstage.session.screen.stream.getAudioTracks().length};
        }"""
    )
    assert track["hint"] == "detail", track
    assert (track["width"], track["height"]) == (1280, 720), track
    # The camera goes on beside it: its publisher connection is untouched.
    assert await host.page.evaluate("window.medstage.publisherPc.connectionState") == "connected"

    # The viewer decodes the share, in its own slot pair, at the capture's full width ...
    share = await viewer.page.evaluate(
        _WAIT_FOR_SHARE, {"participantId": host_id, "frames": 10, "timeoutMs": 10_000}
    )
    assert share["ok"], share
    assert share["frameWidth"] == 1280 and share["frameHeight"] == 720, share
    camera = await viewer.video_of(host_id)
    assert camera is not None and camera["slot"] != share["slot"], (camera, share)
    if track["audio"]:  # a tab's sound, when the fake capture has one, plays from the share's pair
        assert share["audioPackets"] > 0, share
    # ... and shows it large, the camera small beside it.
    big = viewer.page.locator(share_tile(host_id))
    small = viewer.page.locator(camera_tile(host_id))
    await expect(big).to_be_visible()
    await expect(small).to_be_visible()
    await expect(viewer.page.locator("#grid")).to_have_attribute("data-layout", "share")
    big_box, small_box = await big.bounding_box(), await small.bounding_box()
    assert big_box and small_box
    assert big_box["width"] > 3 * small_box["width"], (big_box, small_box)
    assert big_box["width"] * big_box["height"] > 8 * small_box["width"] * small_box["height"]
    playing = await big.locator("video").evaluate(
        "(v) => ({paused: v.paused, width: v.videoWidth, muted: v.muted})"
    )
    assert playing == {"paused": False, "width": 1280, "muted": False}, playing
    # Everyone's participant list says who shares.
    await mod.open_tab("people")
    await expect(mod.person(host_id).locator(".flag-share")).to_be_visible()

    # 1. The host's own button stops it: the viewer's share tile goes, the layout is a grid again.
    await button.click()
    await expect(viewer.page.locator(share_tile(host_id))).to_have_count(0, timeout=3_000)
    await expect(viewer.page.locator("#grid")).to_have_attribute("data-layout", "grid")
    await expect(small).to_be_visible()
    assert await host.page.evaluate("window.medstage.screenPc") is None

    # 2. The browser's own "Stop sharing" bar ends the captured track: the page stops the share.
    await button.click()
    await host.page.wait_for_function(_SCREEN_CONNECTED, timeout=10_000)
    await expect(viewer.page.locator(share_tile(host_id))).to_be_visible(timeout=10_000)
    await host.page.evaluate(
        """() => {
          const [video] = window.medstage.session.screen.stream.getVideoTracks();
          video.stop();
          video.dispatchEvent(new Event('ended'));  // what the browser fires when its bar is used
        }"""
    )
    await expect(viewer.page.locator(share_tile(host_id))).to_have_count(0, timeout=3_000)
    await expect(button).to_contain_text("Share screen")

    # 3. A moderator stops it from the People tab; the host is told and its button resets.
    await button.click()
    await host.page.wait_for_function(_SCREEN_CONNECTED, timeout=10_000)
    await expect(viewer.page.locator(share_tile(host_id))).to_be_visible(timeout=10_000)
    await mod.moderate(host_id, "stop-share")
    await expect(viewer.page.locator(share_tile(host_id))).to_have_count(0, timeout=3_000)
    await expect(host.page.get_by_text("A moderator stopped your screen share.")).to_be_visible()
    await expect(button).to_contain_text("Share screen")
    assert await host.page.evaluate("window.medstage.screenPc") is None
    # and the camera went on all along
    assert await host.page.evaluate("window.medstage.publisherPc.connectionState") == "connected"
    moving = await viewer.wait_for_video_of(host_id, frames=(camera["framesDecoded"] or 0) + 10)
    assert moving["ok"], moving
