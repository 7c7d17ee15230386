"""Connection quality in Chromium: the node measures a speaker and a viewer, the level reaches the
browser in participant objects and shows as bars on the speaker's tile, on one's own chip, and, for a
moderator, as a link to the person's troubleshooting report."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

LEVELS_RE = re.compile(r"^(excellent|good)$")


async def test_the_quality_indicator_appears_for_a_speaker_and_for_oneself(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Dr Viewer")
    viewer_id = await viewer.join()
    await viewer.wait_for_video_of(host_id, timeout_s=10)

    # The viewer sees the speaker's level on the speaker's tile (from participant.updated).
    indicator = viewer.page.locator(viewer.tile_of(host_id)).get_by_test_id("tile-quality")
    await expect(indicator).to_have_attribute("data-level", LEVELS_RE, timeout=15_000)
    assert (await indicator.get_attribute("aria-label") or "").startswith("Connection: ")
    # Their own level, in the top bar; its tooltip gets their figures from their own report.
    own = viewer.page.get_by_test_id("self-quality")
    await expect(own).to_have_attribute("data-level", LEVELS_RE, timeout=15_000)
    await expect(own).to_have_attribute("title", re.compile(r"RTT \d+ ms"), timeout=15_000)

    # The host (a moderator) sees the viewer's level in the People tab, linked to the report.
    await host.open_tab("people")
    link = host.person(viewer_id).get_by_test_id("participant-report")
    await expect(link).to_be_visible(timeout=15_000)
    href = await link.get_attribute("href") or ""
    assert f"/participants/{viewer_id}/connection?access_token=" in href
    report = await host.page.evaluate("async (url) => (await fetch(url)).json()", href)
    assert report["participant_id"] == viewer_id and report["quality"] in ("excellent", "good")
    assert report["down"]["figures"]["rtt_ms"] is not None
