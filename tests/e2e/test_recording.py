"""Consent and recording in real browsers, driven through the client's UI (issue 4).

The node records on demand (``MEDSTAGE_RECORDING_MODE=manual``) into a temporary folder. Each test
shows one thing a participant relies on: the consent prompt comes before the stage and its answer is a
consent record; everyone sees when the session is recorded; withdrawing in the Privacy panel shows
the new state at once, to the person and to the moderators.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.conftest import RunningNode, start_node
from tests.e2e.conftest import answer_consent, join_with_consent, wait_for_event

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

POLICY_VERSION = "2026-11"  # the node's default (MEDSTAGE_CONSENT_POLICY_VERSION)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """One node for this module that may record: the host or a moderator starts it (manual)."""
    tmp: Path = tmp_path_factory.mktemp("recording-node")
    running = start_node(
        tmp, {"MEDSTAGE_RECORDING_MODE": "manual", "MEDSTAGE_RECORDINGS_DIR": str(tmp / "recordings")}
    )
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


def sent(stage_page, type_: str) -> list[str]:
    """Frames of `type_` the page sent, as logged by the open_stage fixture."""
    return [line for line in stage_page.log if line.startswith("[ws →]") and f'"type":"{type_}"' in line]


async def test_the_consent_prompt_comes_before_the_stage_and_its_answer_is_recorded(open_stage, stage):
    viewer = await open_stage(stage, "audience", "Dr Viewer")
    await viewer.page.get_by_test_id("join-name").fill(viewer.name)
    await viewer.page.get_by_test_id("join-button").click()

    # The stage may record and this person has not decided: the prompt is there before the stage is.
    dialog = viewer.page.get_by_test_id("consent-dialog")
    await expect(dialog).to_be_visible(timeout=5000)
    await expect(dialog).to_have_attribute("data-method", "join_prompt")
    await expect(dialog.get_by_test_id("consent-policy-version")).to_have_text(f"Version {POLICY_VERSION}")
    await expect(dialog.get_by_test_id("consent-policy-text")).to_contain_text("This session may be recorded")
    for scope, words in [
        ("media", "Record my camera and microphone"),
        ("comments", "Record my comments, questions and votes"),
        ("share", "Share the recording with attendees"),
    ]:
        box = dialog.get_by_test_id(f"consent-scope-{scope}")
        await expect(box).not_to_be_checked()
        await expect(dialog.locator(f'label[data-scope="{scope}"]')).to_contain_text(words)
    # Nothing is decided for them: "Agree" needs a choice, and the stage behind is out of reach.
    await expect(dialog.get_by_test_id("consent-agree")).to_be_disabled()
    assert await viewer.page.evaluate("document.querySelector('.layout').inert") is True
    assert await viewer.page.evaluate("document.querySelector('.topbar').inert") is True
    assert sent(viewer, "consent.give") == []

    record = await answer_consent(viewer, ["media", "comments"])
    assert record["participant_id"] == await viewer.participant_id()
    assert record["scopes"] == ["comments", "media"]
    assert (record["decision"], record["method"], record["policy_version"]) == (
        "granted",
        "join_prompt",
        POLICY_VERSION,
    )
    assert record["session_id"] is None  # nothing records yet
    frames = sent(viewer, "consent.give")
    assert len(frames) == 1 and '"method":"join_prompt"' in frames[0], frames
    assert await viewer.page.evaluate("document.querySelector('.layout').inert") is False
    await expect(viewer.page.get_by_test_id("leave-button")).to_be_enabled()

    # "Decline all" is an answer too: a record with no scope.
    decliner = await open_stage(stage, "audience", "Dr Decliner")
    await decliner.join()
    record = await answer_consent(decliner, [])
    assert (record["decision"], record["scopes"], record["method"]) == ("declined", [], "join_prompt")

    # Consent is per identity: the same browser coming back is not asked again.
    await viewer.page.reload()
    await viewer.page.wait_for_function("window.medstage !== undefined")
    await viewer.join()
    await expect(viewer.page.get_by_test_id("privacy-button")).to_be_visible()
    await asyncio.sleep(0.3)
    await expect(viewer.page.get_by_test_id("consent-dialog")).to_have_count(0)
    mine = await viewer.page.evaluate("window.medstage.consent.mine")
    assert mine["scopes"] == ["comments", "media"] and mine["decision"] == "granted", mine


async def test_everyone_sees_the_recording_indicator_while_the_host_records(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    await join_with_consent(host)
    speaker = await open_stage(stage, "speaker", "Dr Speaker")
    audience = [await open_stage(stage, "audience", f"Viewer {n}") for n in (1, 2)]
    await asyncio.gather(
        join_with_consent(speaker, ["media", "comments"]),
        join_with_consent(audience[0], []),
        join_with_consent(audience[1], ["comments"]),
    )
    pages = [host, speaker, *audience]
    for page in pages:
        await expect(page.page.get_by_test_id("recording-indicator")).to_be_hidden()

    # Only the host and moderators have the recording card; it counts who consented.
    await host.open_tab("people")
    card = host.page.get_by_test_id("recording-controls")
    await expect(card).to_be_visible()
    await expect(card.get_by_test_id("consent-summary-granted")).to_contain_text("3")
    await expect(card.get_by_test_id("consent-summary-declined")).to_contain_text("1")
    await expect(card.get_by_test_id("consent-summary-none")).to_contain_text("0")
    for page in (speaker, *audience):
        await expect(page.page.get_by_test_id("recording-controls")).to_be_hidden()
        await expect(page.page.get_by_test_id("recording-start")).to_be_hidden()

    await host.page.get_by_test_id("recording-start").click()
    started = await wait_for_event(host, "recording.started")
    session_id = started["session_id"]
    assert started["by"] == await host.participant_id()
    for page in pages:
        indicator = page.page.get_by_test_id("recording-indicator")
        await expect(indicator).to_be_visible(timeout=3000)
        await expect(indicator).to_contain_text("REC")
        await expect(indicator).to_have_attribute("data-session-id", session_id)
        await expect(page.page.get_by_test_id("recording-elapsed")).to_have_text(re.compile(r"^00:0\d$"))
    # Everyone had decided already: nobody is asked again.
    for page in pages:
        await expect(page.page.get_by_test_id("consent-dialog")).to_have_count(0)
        asked = await page.page.evaluate(
            "window.medstage.events.filter((e) => e.type === 'consent.requested').length"
        )
        assert asked == 0, page.name
    # The elapsed time runs.
    await expect(host.page.get_by_test_id("recording-elapsed")).to_have_text(
        re.compile(r"^00:0[1-9]$"), timeout=3000
    )
    await expect(card).to_have_attribute("data-active", "true")

    await host.page.get_by_test_id("recording-stop").click()
    for page in pages:
        await expect(page.page.get_by_test_id("recording-indicator")).to_be_hidden(timeout=3000)
        stopped = await wait_for_event(page, "recording.stopped", session_id=session_id)
        assert stopped["reason"] is None
    await expect(host.page.get_by_test_id("recording-start")).to_be_visible()


async def test_withdrawing_in_the_privacy_panel_shows_the_new_state(open_stage, stage):
    moderator = await open_stage(stage, "moderator", "Dr Moderator")
    await join_with_consent(moderator, ["comments"])
    member = await open_stage(stage, "audience", "Dr Member")
    member_id = await join_with_consent(member, ["media", "comments", "share"])
    badge = moderator.person(member_id).get_by_test_id("consent-badge")
    await expect(badge).to_have_attribute("data-decision", "granted")

    await member.page.get_by_test_id("privacy-button").click()
    panel = member.page.get_by_test_id("privacy-panel")
    await expect(panel).to_be_visible()
    status = panel.get_by_test_id("consent-status")
    await expect(status).to_have_attribute("data-decision", "granted")
    await expect(panel.get_by_test_id("consent-status-label")).to_have_text("Consent given")
    await expect(panel.get_by_test_id("consent-status-text")).to_contain_text("camera and microphone")
    await expect(panel.get_by_test_id("privacy-policy-version")).to_have_text(f"Version {POLICY_VERSION}")
    for scope in ("media", "comments", "share"):
        await expect(panel.get_by_test_id(f"privacy-scope-{scope}")).to_be_checked()

    await panel.get_by_test_id("privacy-withdraw").click()
    record = (await wait_for_event(member, "consent.recorded", decision="withdrawn"))["record"]
    assert (record["scopes"], record["method"]) == ([], "withdrawal")
    await expect(status).to_have_attribute("data-decision", "withdrawn")
    await expect(panel.get_by_test_id("consent-status-label")).to_have_text("Withdrawn")
    await expect(panel.get_by_test_id("consent-status-text")).to_have_text(
        "You withdrew your consent: nothing more about you is recorded."
    )
    await expect(panel.get_by_test_id("privacy-withdraw")).to_be_disabled()  # nothing left to withdraw
    for scope in ("media", "comments", "share"):
        await expect(panel.get_by_test_id(f"privacy-scope-{scope}")).not_to_be_checked()
    toast = member.page.get_by_test_id("toast").filter(has_text="You withdrew your consent")
    await expect(toast).to_be_visible()
    # The moderators see it too, in the person's row and in the summary.
    await expect(badge).to_have_attribute("data-decision", "withdrawn")
    summary = moderator.page.get_by_test_id("consent-summary")
    await expect(summary.get_by_test_id("consent-summary-granted")).to_contain_text("1")
    await expect(summary.get_by_test_id("consent-summary-declined")).to_contain_text("1")

    # A new decision in the same panel is recorded as given in settings.
    await panel.get_by_test_id("privacy-scope-comments").check()
    await panel.get_by_test_id("privacy-save").click()
    record = (await wait_for_event(member, "consent.recorded", method="settings"))["record"]
    assert (record["scopes"], record["decision"]) == (["comments"], "granted")
    await expect(status).to_have_attribute("data-decision", "granted")
    await expect(panel.get_by_test_id("consent-status-text")).to_contain_text("comments, questions and votes")
    await expect(badge).to_have_attribute("data-decision", "granted")
    await panel.get_by_test_id("privacy-close").click()
    await expect(panel).to_have_count(0)
