"""A stage in real browsers: a host publishes its fake camera and microphone, audiences watch.

Assertions are on what the pages' own RTCPeerConnections report (getStats) and on the DOM.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.conftest import check_errors, unexpected_errors, watch

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

LOOPBACK = "127.0.0.1"
LATE_JOIN_DELAY_S = 5.0


async def assert_loopback_pair(participant, pc: str) -> None:
    pair = await participant.selected_pair(pc)
    assert pair is not None, f"{participant.name}: {pc} has no selected candidate pair"
    assert (pair["local"], pair["remote"]) == (LOOPBACK, LOOPBACK), f"{participant.name} {pc}: {pair}"


async def test_the_join_dialog_shows_the_stage_title_read_with_a_token(open_stage, stage):
    """The page reads its stage (GET /api/stages/{id}) with a token, so no 401, and shows the title."""
    viewer = await open_stage(stage, "audience", "Viewer")
    await expect(viewer.page.get_by_test_id("join-stage")).to_have_text(f"E2E grand rounds · {stage}")
    await expect(viewer.page.locator("#stage-title")).to_have_text("E2E grand rounds")
    assert not viewer.unexpected_errors(), viewer.errors


async def test_audiences_decode_the_host_and_a_late_joiner_sees_video_within_2_s(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()

    viewers = [await open_stage(stage, "audience", f"Viewer {n}") for n in (1, 2)]
    first_join = time.monotonic()
    await asyncio.gather(*(viewer.join() for viewer in viewers))
    results = await asyncio.gather(*(viewer.wait_for_media(timeout_s=8) for viewer in viewers))
    for viewer, media in zip(viewers, results, strict=True):
        assert media["videoAt"] is not None and media["audio"] > 0, f"{viewer.name}: {media}"
        await expect(viewer.page.locator(viewer.tile_of(host_id))).to_be_visible()
        await assert_loopback_pair(viewer, "subscriberPc")
    await assert_loopback_pair(host, "publisherPc")

    # The scenario: a third viewer arrives 5 s after the first two, when the stream is well under way.
    await asyncio.sleep(max(0.0, LATE_JOIN_DELAY_S - (time.monotonic() - first_join)))
    late = await open_stage(stage, "audience", "Late viewer")
    await late.join()
    media = await late.wait_for_media(timeout_s=5)
    marks = await late.marks()
    assert media["videoAt"] is not None, f"late viewer decoded nothing: {media}, marks {marks}"
    since_click = (media["videoAt"] - marks["joinClicked"]) / 1000
    since_joined = (media["videoAt"] - marks["joined"]) / 1000
    timing = f"first frame {since_click:.3f} s after the join click ({since_joined:.3f} s after joined)"
    print(f"late viewer: {timing}")
    assert since_click < 2.0, timing
    assert media["audio"] > 0
    await expect(late.page.locator(late.tile_of(host_id))).to_be_visible()
    await assert_loopback_pair(late, "subscriberPc")
    # The audience hears the stage without a click (autoplay allowed): the tile is not muted.
    video = late.page.locator(f"{late.tile_of(host_id)} video")
    playback = await video.evaluate("(v) => ({muted: v.muted, paused: v.paused})")
    assert playback == {"muted": False, "paused": False}


@pytest.mark.parametrize("control", ["stop-button", "leave-button"])
async def test_the_hosts_tile_disappears_within_1_s_when_the_host_stops_or_leaves(open_stage, stage, control):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    media = await viewer.wait_for_media(timeout_s=8, need_audio=False)
    assert media["videoAt"] is not None, media
    tile = viewer.page.locator(viewer.tile_of(host_id))
    await expect(tile).to_be_visible()

    started = time.monotonic()
    await host.page.get_by_test_id(control).click()
    await tile.wait_for(state="detached", timeout=3000)
    elapsed = time.monotonic() - started
    print(f"{control}: tile removed after {elapsed:.3f} s")
    assert elapsed < 1.0, f"tile removed {elapsed:.2f} s after {control}"

    if control == "leave-button":
        await expect(host.page.get_by_test_id("rejoin-button")).to_be_visible()
        listed = viewer.page.locator(f'[data-testid="participant"][data-participant-id="{host_id}"]')
        await expect(listed).to_have_count(0, timeout=2000)
    else:
        await expect(host.page.get_by_test_id("publish-button")).to_be_visible()
        await expect(host.page.get_by_test_id("tile-self")).to_have_count(0)


async def test_muting_the_microphone_shows_on_the_audience_participant_list(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()

    mic = host.page.get_by_test_id("mic-button")
    await mic.click()
    await expect(mic).to_have_attribute("aria-pressed", "true")
    listed = viewer.page.locator(f'[data-testid="participant"][data-participant-id="{host_id}"]')
    await expect(listed.get_by_label("Microphone muted")).to_be_visible(timeout=2000)

    await mic.click()
    await expect(listed.get_by_label("Microphone muted")).to_have_count(0, timeout=2000)


# Makes the page behave like a browser whose autoplay policy wants a click before sound plays.
_AUTOPLAY_NEEDS_A_CLICK = """(() => {
  const play = HTMLMediaElement.prototype.play;
  let clicked = false;
  addEventListener('pointerdown', () => { clicked = true; }, true);
  HTMLMediaElement.prototype.play = function () {
    if (!this.muted && !clicked) {
      return Promise.reject(new DOMException('needs a gesture', 'NotAllowedError'));
    }
    return play.call(this);
  };
})()"""


async def test_when_autoplay_with_sound_is_refused_the_audience_can_enable_sound_with_a_click(
    open_stage, stage
):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer", init_script=_AUTOPLAY_NEEDS_A_CLICK)
    await viewer.page.get_by_test_id("join-name").fill("Viewer")
    # Submit with the keyboard, so the page has seen no pointer gesture yet.
    await viewer.page.get_by_test_id("join-name").press("Enter")
    await viewer.page.wait_for_function("window.medstage.state === 'joined'", timeout=10_000)

    video = viewer.page.locator(f"{viewer.tile_of(host_id)} video")
    sound = viewer.page.get_by_test_id("sound-button")
    await expect(sound).to_be_visible(timeout=5000)
    playback = await video.evaluate("(v) => ({muted: v.muted, paused: v.paused})")
    assert playback == {"muted": True, "paused": False}, "the tile must play muted until the click"

    await sound.click()
    await expect(sound).to_be_hidden()
    playback = await video.evaluate("(v) => ({muted: v.muted, paused: v.paused})")
    assert playback == {"muted": False, "paused": False}


async def test_joining_a_missing_stage_as_audience_shows_the_refusal(open_stage):
    viewer = await open_stage("no-such-stage", "audience", "Viewer")
    viewer.tolerate_unopened_stage("no-such-stage")
    await viewer.page.get_by_test_id("join-name").fill("Viewer")
    await viewer.page.get_by_test_id("join-button").click()
    await expect(viewer.page.get_by_test_id("join-error")).to_contain_text("not been opened")
    assert await viewer.page.evaluate("window.medstage.state") == "failed"


async def test_the_landing_page_creates_a_stage_and_opens_it_as_host(browser: Browser, node):
    context = await browser.new_context()
    unexpected = ["not checked"]
    try:
        page = await context.new_page()
        watched = watch(page, "landing")
        await page.goto(node.url)
        await page.get_by_test_id("create-title").fill("Cardiology grand rounds")
        await page.get_by_test_id("create-button").click()
        await page.wait_for_url("**/s/*?role=host", timeout=5000)
        await expect(page.get_by_test_id("join-role")).to_have_value("host")
        await expect(page.get_by_test_id("join-stage")).to_contain_text("Cardiology grand rounds")
        await page.get_by_test_id("join-name").fill("Dr Host")
        await page.get_by_test_id("join-button").click()
        await page.wait_for_function("window.medstage.state === 'joined'", timeout=10_000)
        await expect(page.locator("#stage-title")).to_have_text("Cardiology grand rounds")
        unexpected = unexpected_errors([watched])
    finally:
        await context.close()
    check_errors(unexpected)


async def test_a_lost_connection_offers_to_rejoin(open_stage, stage, node):
    viewer = await open_stage(stage, "audience", "Viewer")
    viewer.tolerate_node_down()
    await viewer.join()
    await asyncio.to_thread(node.stop)  # SIGTERM: the node closes every socket with 1001
    await expect(viewer.page.get_by_test_id("rejoin-button")).to_be_visible(timeout=5000)
    assert await viewer.page.evaluate("window.medstage.state") == "disconnected"


async def test_a_viewer_who_left_can_rejoin_and_watches_again(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    first_id = await viewer.join()
    await viewer.page.get_by_test_id("leave-button").click()
    await viewer.page.get_by_test_id("rejoin-button").click()
    await viewer.page.wait_for_function("window.medstage.state === 'joined'", timeout=10_000)
    assert await viewer.participant_id() != first_id
    media = await viewer.wait_for_media(timeout_s=5)
    assert media["videoAt"] is not None and media["audio"] > 0, media
    await expect(viewer.page.locator(viewer.tile_of(host_id))).to_be_visible()
    await expect(viewer.page.locator('[data-testid="participant"]')).to_have_count(2)


async def test_an_audience_that_joins_after_two_publishers_decodes_both_and_they_keep_decoding_each_other(
    open_stage, stage
):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    speaker = await open_stage(stage, "speaker", "Dr Speaker")
    speaker_id = await speaker.join()
    await speaker.go_on_stage()
    each_other = await asyncio.gather(host.wait_for_video_streams(1), speaker.wait_for_video_streams(1))
    assert all(result["ok"] for result in each_other), each_other

    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    both = await viewer.wait_for_video_streams(2, timeout_s=5)
    assert both["ok"], f"viewer decodes only {both}"
    for publisher_id in (host_id, speaker_id):
        await expect(viewer.page.locator(viewer.tile_of(publisher_id))).to_be_visible()
    # A newcomer must not disturb the publishers' views of each other.
    after = await asyncio.gather(
        host.wait_for_video_streams(1, frames=10), speaker.wait_for_video_streams(1, frames=10)
    )
    assert all(result["ok"] for result in after), after
