"""Speaking needs consent (issue 4): on a stage with ``speaking_requires_consent`` the server refuses an
invitation's acceptance, or publishing while recording, with ``consent_required``; the client then asks
for consent in its own prompt and, once camera and microphone may be recorded, tries again by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.conftest import RunningNode, start_node
from tests.e2e.conftest import join_with_consent, wait_for_event

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    tmp: Path = tmp_path_factory.mktemp("consent-node")
    running = start_node(
        tmp,
        {
            "MEDSTAGE_RECORDING_MODE": "manual",
            "MEDSTAGE_RECORDINGS_DIR": str(tmp / "recordings"),
            "MEDSTAGE_SPEAKING_REQUIRES_CONSENT": "true",
        },
    )
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


async def test_accepting_an_invitation_asks_for_consent_then_goes_on_stage(open_stage, stage):
    moderator = await open_stage(stage, "moderator", "Dr Moderator")
    await join_with_consent(moderator, ["comments"])
    guest = await open_stage(stage, "audience", "Dr Guest")
    shy = await open_stage(stage, "audience", "Dr Shy")
    guest_id = await join_with_consent(guest, [])  # declined everything when joining
    shy_id = await join_with_consent(shy, [])

    await moderator.moderate(guest_id, "invite")
    await guest.page.get_by_test_id("invitation-accept").click()
    # Refused with consent_required: the consent prompt, for this reason, and camera and microphone
    # are what speaking needs (nothing is ticked for the person).
    dialog = guest.page.get_by_test_id("consent-dialog")
    await expect(dialog).to_be_visible(timeout=3000)
    await expect(dialog).to_have_attribute("data-method", "invitation")
    await expect(dialog.locator('label[data-scope="media"]')).to_contain_text("Needed to speak")
    await expect(dialog.get_by_test_id("consent-scope-media")).not_to_be_checked()
    await dialog.get_by_test_id("consent-scope-media").check()
    await dialog.get_by_test_id("consent-agree").click()
    record = (await wait_for_event(guest, "consent.recorded", method="invitation"))["record"]
    assert (record["scopes"], record["decision"]) == (["media"], "granted")
    # Accepted again by itself: a speaker now, publishing.
    await guest.page.wait_for_function("window.medstage.role === 'speaker'", timeout=5000)
    await guest.page.wait_for_function(
        "window.medstage.publisherPc && window.medstage.publisherPc.connectionState === 'connected'",
        timeout=10_000,
    )
    await expect(moderator.person(guest_id).get_by_test_id("consent-badge")).to_have_attribute(
        "data-decision", "granted"
    )

    # Declining camera and microphone in that prompt leaves the invitation open, to be declined.
    await moderator.moderate(shy_id, "invite")
    await shy.page.get_by_test_id("invitation-accept").click()
    dialog = shy.page.get_by_test_id("consent-dialog")
    await expect(dialog).to_have_attribute("data-method", "invitation", timeout=3000)
    await dialog.get_by_test_id("consent-decline").click()
    await expect(shy.page.get_by_test_id("toast").filter(has_text="needs your consent")).to_be_visible()
    await expect(shy.page.get_by_test_id("invitation-dialog")).to_be_visible()
    await shy.page.get_by_test_id("invitation-decline").click()
    await expect(shy.page.get_by_test_id("invitation-dialog")).to_have_count(0)
    assert await shy.page.evaluate("window.medstage.role") == "audience"


async def test_going_on_stage_while_recording_asks_for_consent_first(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    await join_with_consent(host)
    speaker = await open_stage(stage, "speaker", "Dr Speaker")
    await join_with_consent(speaker, ["comments"])
    await host.open_tab("people")
    await host.page.get_by_test_id("recording-start").click()
    await expect(speaker.page.get_by_test_id("recording-indicator")).to_be_visible(timeout=3000)

    await speaker.page.get_by_test_id("publish-button").click()
    dialog = speaker.page.get_by_test_id("consent-dialog")
    await expect(dialog).to_have_attribute("data-method", "recording_prompt", timeout=5000)
    await expect(dialog).to_contain_text("Recording has started")
    await dialog.get_by_test_id("consent-scope-media").check()
    await dialog.get_by_test_id("consent-scope-comments").check()
    await dialog.get_by_test_id("consent-agree").click()
    record = (await wait_for_event(speaker, "consent.recorded", method="recording_prompt"))["record"]
    assert (record["scopes"], record["decision"]) == (["comments", "media"], "changed")
    assert record["session_id"] == (await wait_for_event(speaker, "recording.started"))["session_id"]
    await speaker.page.wait_for_function(
        "window.medstage.publisherPc && window.medstage.publisherPc.connectionState === 'connected'",
        timeout=10_000,
    )
