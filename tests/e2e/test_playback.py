"""The playback page in Chromium: it plays the composite export, a click on a marker seeks there, the
browser's Range requests are answered 206, and the comment list follows the playhead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, Response, expect

from recording.composite import CompositeExport, VideoSettings, read_state
from tests.conftest import RunningNode, start_node
from tests.e2e.conftest import check_errors, unexpected_errors, watch
from tests.support.playback_session import AUDIENCE, VIDEO_S, standard_session
from tests.support.session_maker import Capture, Speaker, make_session
from tests.support.tokens import token

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

STAGE, SESSION = "cardio-rounds", "20261203T080000Z-ab12"


@pytest.fixture(scope="module")
def playback_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """A node whose recordings hold one session with its composite export (the module's tests only
    read it)."""
    tmp_path = tmp_path_factory.mktemp("playback")
    root = tmp_path / "recordings"
    standard_session(root, STAGE, SESSION, video_s=VIDEO_S)
    running = start_node(tmp_path, {"MEDSTAGE_RECORDINGS_DIR": str(root)})
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()[-3000:]


_WAIT_TIME = """async ({above, timeoutMs}) => {
  const video = document.getElementById('playback-video');
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (video.currentTime > above && !video.seeking) return video.currentTime;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return null;
}"""


async def comment_ids(page: Any) -> list[str]:
    return await page.locator('[data-testid="playback-comment"]').evaluate_all(
        "(items) => items.map((item) => item.dataset.id)"
    )


async def click_marker(page: Any, kind: str) -> float:
    """Click the first marker of ``kind``; returns where the video landed once the seek is done."""
    marker = page.locator(f'[data-testid="playback-marker"][data-kind="{kind}"]').first
    target = float(await marker.get_attribute("data-t"))
    await marker.click()
    landed = await page.evaluate(_WAIT_TIME, {"above": target - 1, "timeoutMs": 5000})
    assert landed is not None, f"no seek to {kind} at {target}"
    assert abs(landed - target) < 1.0, (kind, target, landed)
    return target


async def test_the_page_plays_seeks_to_markers_and_replays_comments(
    browser: Browser, playback_node: RunningNode
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    viewer = watch(page, "viewer")
    # The first load has no cookie yet: the document is answered 401, and the page exchanges the
    # token of its fragment for the cookie.
    viewer.tolerate(
        r"status of 401 \(Unauthorized\) @ \S+/r/" + SESSION + "(#token=[^ ]*)?$", "the first load"
    )
    # Chromium's media player cancels the range request in flight when the viewer seeks elsewhere.
    viewer.tolerate(r"request failed: GET \S+/composite\.mp4: net::ERR_ABORTED$", "a seek cancels a read")
    videos: list[tuple[int, str | None]] = []

    def on_response(response: Response) -> None:
        if response.url.endswith("/composite.mp4"):
            videos.append((response.status, response.request.headers.get("range")))

    page.on("response", on_response)
    try:
        link = token(STAGE, "audience", AUDIENCE.identity, AUDIENCE.name)
        await page.goto(f"{playback_node.url}/r/{SESSION}#token={link}")
        await page.wait_for_function(
            "window.medstagePlayback?.data && document.getElementById('playback-video').readyState >= 2",
            timeout=10_000,
        )
        assert "#" not in page.url, "the token is removed from the address bar"
        assert await page.get_by_test_id("playback-title").inner_text() == "Grand rounds: heart failure"
        assert await comment_ids(page) == []  # nothing posted at 0 s

        await page.evaluate("document.getElementById('playback-video').play()")
        first = await page.evaluate(_WAIT_TIME, {"above": 0.3, "timeoutMs": 5000})
        later = await page.evaluate(_WAIT_TIME, {"above": (first or 0) + 0.3, "timeoutMs": 5000})
        assert first is not None and later is not None, "currentTime does not advance"

        await click_marker(page, "question.asked")  # 5 s: the comment of 3 s shows, not the one of 13 s
        await expect(page.locator('[data-testid="playback-comment"]')).to_have_count(1)
        assert await comment_ids(page) == ["c-1"]

        await click_marker(page, "question.answered")  # 12.5 s: playing on, 13 s's comment appears
        await page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"playback-comment\"]').length === 2", timeout=5000
        )
        assert await comment_ids(page) == ["c-1", "c-4"]
        now = await page.evaluate("document.getElementById('playback-video').currentTime")
        assert now >= 13.0

        await click_marker(page, "speaker.joined")  # back to 1 s: the list follows the playhead back
        await expect(page.locator('[data-testid="playback-comment"]')).to_have_count(0)

        assert videos, "the video was never requested"
        assert all(status == 206 for status, _ in videos), videos
        assert any(sent and sent.startswith("bytes=") for _, sent in videos), videos
        unexpected = unexpected_errors([viewer])
    finally:
        await context.close()
    check_errors(unexpected)


async def test_without_a_link_or_with_another_stages_token_nothing_plays(
    browser: Browser, playback_node: RunningNode
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    viewer = watch(page, "stranger")
    viewer.tolerate(r"status of 40[13] \([A-Za-z]+\) @ \S+/r/" + SESSION, "refused on purpose")
    media: list[str] = []
    page.on("request", lambda request: media.append(request.url) if "composite" in request.url else None)
    try:
        await page.goto(f"{playback_node.url}/r/{SESSION}")
        await expect(page.get_by_test_id("playback-message")).to_contain_text("needs an access link")
        assert await page.evaluate("window.medstagePlayback.error.status") == 401
        wrong = token("neuro-rounds", "host", "id-elsewhere")
        await page.goto(f"{playback_node.url}/r/{SESSION}#token={wrong}")
        await expect(page.get_by_test_id("playback-message")).to_contain_text("not shared with you")
        assert await page.evaluate("window.medstagePlayback.error.code") == "token_wrong_stage"
        await expect(page.get_by_test_id("playback-video")).to_be_hidden()
        assert await page.locator('[data-testid="playback-marker"]').count() == 0
        assert media == [], "no request for the video"
        unexpected = unexpected_errors([viewer])
    finally:
        await context.close()
    check_errors(unexpected)


async def test_a_real_composite_export_plays_on_the_page_from_end_to_end(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The chain of issue 14 in one go: tracks as the recorder writes them (two speakers, one
    without ``share``), the composite export made from them by recording/composite, and the page
    playing that file (not a stand-in) through a node: duration, playing, a seek, Range."""
    tmp_path = tmp_path_factory.mktemp("real-export")
    root = tmp_path / "recordings"
    session_id = "20261203T090000Z-real"
    session = root / "stage-x" / session_id
    make_session(
        session,
        [
            Speaker("p-shared", (200, 40, 40), captures=[Capture(0.0, 6.0)], beeps=[1.0]),
            Speaker("p-private", (40, 40, 200), share=False, captures=[Capture(0.0, 6.0)]),
        ],
        session_id,
    )
    CompositeExport(session, VideoSettings(width=320, height=180, fps=25, preset="ultrafast")).run()
    state = read_state(session)
    assert state is not None and state["status"] == "done", state
    node = start_node(tmp_path, {"MEDSTAGE_RECORDINGS_DIR": str(root)})
    context = await browser.new_context()
    page = await context.new_page()
    viewer = watch(page, "host")
    first_load = r"status of 401 \(Unauthorized\) @ \S+/r/" + session_id + "(#token=[^ ]*)?$"
    viewer.tolerate(first_load, "the first load")
    viewer.tolerate(r"request failed: GET \S+/composite\.mp4: net::ERR_ABORTED$", "a seek cancels a read")
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/composite.mp4") else None)
    try:
        await page.goto(f"{node.url}/r/{session_id}#token={token('stage-x', 'host', 'id-p-shared')}")
        await page.wait_for_function(
            "document.getElementById('playback-video').readyState >= 2", timeout=10_000
        )
        duration = await page.evaluate("document.getElementById('playback-video').duration")
        assert abs(duration - state["duration_s"]) < 0.5 and 5.0 < duration < 7.0, (duration, state)
        await page.evaluate("document.getElementById('playback-video').play()")
        assert await page.evaluate(_WAIT_TIME, {"above": 0.5, "timeoutMs": 5000}) is not None
        await page.evaluate("document.getElementById('playback-video').currentTime = 4.0")
        landed = await page.evaluate(_WAIT_TIME, {"above": 3.9, "timeoutMs": 5000})
        assert landed is not None and abs(landed - 4.0) < 1.0, landed
        assert statuses and all(status == 206 for status in statuses), statuses
        unexpected = unexpected_errors([viewer])
    finally:
        await context.close()
        assert node.stop() == 0, node.log()[-3000:]
    check_errors(unexpected)
