"""Moderation, chat and quizzes in real browsers, driven through the client's UI.

Each test shows one behaviour a moderator or an audience member relies on: removal and ban end
screens, a moderator's mute the speaker cannot lift, the chat rules (slow mode, pin, delete, chat mute,
reactions), and quiz feedback with the leaderboard.
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


# A comment sent through the session object, past the composer's own checks: the refusal, or null.
_POST_DIRECTLY = """async (text) => {
  try {
    await window.medstage.session.command('comment.post', {text});
    return null;
  } catch (err) {
    return {code: err.code, retryAfter: err.retryAfter};
  }
}"""


async def test_removed_and_banned_people_see_why_and_only_the_removed_may_rejoin(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    await host.join()
    removed = await open_stage(stage, "audience", "Off topic")
    banned = await open_stage(stage, "audience", "Troll")
    stays = await open_stage(stage, "audience", "Attentive")
    removed_id, banned_id, _ = await asyncio.gather(removed.join(), banned.join(), stays.join())

    await host.moderate(removed_id, "remove")
    await host.page.get_by_test_id("remove-dialog-input").fill("Please stay on topic")
    await host.page.get_by_test_id("remove-dialog-confirm").click()
    screen = removed.page.get_by_test_id("ended-screen")
    await expect(screen).to_be_visible(timeout=3000)
    await expect(screen).to_have_attribute("data-reason", "removed")
    await expect(removed.page.get_by_test_id("ended-reason")).to_have_text("Reason: Please stay on topic")
    await expect(host.person(removed_id)).to_have_count(0)

    # A ban needs a reason: the dialog refuses an empty one.
    await host.moderate(banned_id, "ban")
    await host.page.get_by_test_id("ban-dialog-confirm").click()
    await expect(host.page.get_by_test_id("ban-dialog")).to_contain_text("Please give a reason")
    await host.page.get_by_test_id("ban-dialog-input").fill("Abusive comments")
    await host.page.get_by_test_id("ban-dialog-confirm").click()
    screen = banned.page.get_by_test_id("ended-screen")
    await expect(screen).to_have_attribute("data-reason", "banned", timeout=3000)
    await expect(banned.page.get_by_test_id("ended-reason")).to_have_text("Reason: Abusive comments")
    await expect(banned.page.get_by_test_id("rejoin-button")).to_be_hidden()
    assert await banned.page.evaluate("window.medstage.session.closeCode") == 4004

    # The removed person rejoins; the banned one (same browser, same identity) is refused.
    await removed.page.get_by_test_id("rejoin-button").click()
    await removed.page.wait_for_function("window.medstage.state === 'joined'", timeout=10_000)
    await banned.page.reload()
    await banned.page.get_by_test_id("join-name").fill("Troll")
    await banned.page.get_by_test_id("join-button").click()
    await expect(banned.page.get_by_test_id("join-error")).to_have_text(
        "You have been banned from this stage."
    )

    # The host ends the stage: everyone left sees the end screen, without a way back in.
    await host.open_tab("people")
    await host.page.get_by_test_id("stage-end").click()
    await host.page.get_by_test_id("end-dialog-confirm").click()
    for page in (stays, removed):
        screen = page.page.get_by_test_id("ended-screen")
        await expect(screen).to_have_attribute("data-reason", "ended", timeout=3000)
        await expect(page.page.get_by_test_id("ended-heading")).to_have_text("The stage has ended")
        await expect(page.page.get_by_test_id("rejoin-button")).to_be_hidden()


async def test_a_speaker_cannot_lift_a_moderators_mute_and_viewers_see_it(open_stage, stage):
    moderator = await open_stage(stage, "moderator", "Dr Moderator")
    await moderator.join()
    speaker = await open_stage(stage, "speaker", "Dr Speaker")
    speaker_id = await speaker.join()
    await speaker.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    tile = viewer.page.locator(viewer.tile_of(speaker_id))
    await expect(tile).to_be_visible(timeout=5000)

    await moderator.moderate(speaker_id, "mute-audio")
    mic = speaker.page.get_by_test_id("mic-button")
    await expect(mic).to_have_attribute("aria-disabled", "true", timeout=3000)
    await expect(mic).to_have_attribute("aria-pressed", "true")
    await expect(mic).to_have_attribute(
        "title", "A moderator muted your microphone. Only a moderator can allow it again."
    )
    await expect(tile.get_by_test_id("tile-moderator-muted")).to_be_visible()
    await expect(moderator.person(speaker_id).get_by_label("Muted by a moderator")).to_be_visible()

    # Clicking anyway explains instead of sending an unmute the server would refuse.
    await mic.click(force=True)
    await expect(speaker.page.get_by_test_id("toast").filter(has_text="Only a moderator")).to_be_visible()
    sent = [line for line in speaker.log if '"publish.mute"' in line and "[ws →]" in line]
    assert sent == [], sent

    # The menu now offers to allow it again; afterwards the speaker may unmute.
    await moderator.moderate(speaker_id, "unmute-audio")
    await expect(mic).not_to_have_attribute("aria-disabled", "true", timeout=3000)
    await expect(tile.get_by_test_id("tile-moderator-muted")).to_have_count(0)
    await expect(mic).to_have_attribute("aria-pressed", "false")


async def test_chat_refusals_slow_mode_pin_delete_mute_and_reactions(open_stage, stage):
    moderator = await open_stage(stage, "moderator", "Dr Moderator")
    member = await open_stage(stage, "audience", "Member")
    chatty = await open_stage(stage, "audience", "Chatty")
    _, member_id, _ = await asyncio.gather(moderator.join(), member.join(), chatty.join())

    # Over the rate limit (5 comments per 10 s by default) the server's refusal shows inline, with
    # the time to wait; the draft is kept and sending is disabled until then.
    for n in range(5):
        await chatty.post_comment(f"Comment {n}")
    await chatty.page.get_by_test_id("comment-input").fill("One too many")
    await chatty.page.get_by_test_id("comment-send").click()
    error = chatty.page.get_by_test_id("comment-error")
    await expect(error).to_contain_text("You are posting quickly: try again in")
    await expect(error).to_have_attribute("data-code", "rate_limited")
    await expect(chatty.page.get_by_test_id("comment-input")).to_have_value("One too many")
    await expect(chatty.page.get_by_test_id("comment-send")).to_be_disabled()

    # Slow mode from the stage controls: the member sees the indicator; after a comment the client
    # counts down instead of sending one bound to be refused.
    await moderator.open_tab("people")
    await moderator.page.get_by_test_id("slow-mode-select").select_option("30")
    await member.open_tab("chat")
    indicator = member.page.get_by_test_id("slow-mode-indicator")
    await expect(indicator).to_contain_text("one comment every 30 s", timeout=3000)
    await member.post_comment("First!")
    await expect(member.page.get_by_test_id("comment-error")).to_contain_text("next comment in")
    await expect(member.page.get_by_test_id("comment-send")).to_be_disabled()
    # The server agrees, and says how long to wait.
    refused = await member.page.evaluate(_POST_DIRECTLY, "Too soon")
    assert refused is not None and refused["code"] == "slow_mode", refused
    assert 0 < refused["retryAfter"] <= 30, refused

    # Pin: the banner shows on the member's stage; delete: the comment vanishes everywhere.
    await moderator.open_tab("chat")
    comment = moderator.page.locator('[data-testid="comment"]').filter(has_text="First!")
    await comment.hover()
    await comment.get_by_test_id("comment-pin").click()
    await expect(member.page.get_by_test_id("pinned-text")).to_have_text("First!", timeout=3000)
    await comment.hover()
    await comment.get_by_test_id("comment-delete").click()
    await expect(member.page.get_by_test_id("comment-text").filter(has_text="First!")).to_have_count(
        0, timeout=3000
    )
    await expect(member.page.get_by_test_id("pinned-comment")).to_be_hidden()

    # Chat mute: the member's composer is disabled and says why.
    await moderator.moderate(member_id, "chat-mute")
    await expect(member.page.get_by_test_id("comment-input")).to_be_disabled(timeout=3000)
    await expect(member.page.get_by_test_id("comment-error")).to_have_text(
        "A moderator has muted you in the chat."
    )
    await moderator.moderate(member_id, "chat-unmute")
    await expect(member.page.get_by_test_id("comment-input")).to_be_enabled(timeout=3000)

    # Reactions: three applause from the moderator float up on the member's stage, aggregated.
    for _ in range(3):
        await moderator.page.get_by_test_id("reaction-0").click()
    await member.page.wait_for_function("(window.medstage.reactions['👏'] || 0) >= 3", timeout=4000)
    await expect(
        member.page.locator('[data-testid="reaction-float"][data-emoji="👏"]').first
    ).to_be_attached()


async def test_a_quiz_tells_each_voter_whether_they_were_right_and_shows_the_leaderboard(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    right = await open_stage(stage, "audience", "Right answer")
    wrong = await open_stage(stage, "audience", "Wrong answer")
    _, right_id, _ = await asyncio.gather(host.join(), right.join(), wrong.join())

    page = host.page
    await host.open_tab("polls")
    await page.get_by_test_id("poll-new").click()
    await page.get_by_test_id("poll-question-input").fill("Drug of choice in anaphylaxis?")
    options = page.get_by_test_id("poll-option-input")
    await options.nth(0).fill("Adrenaline")
    await options.nth(1).fill("Antihistamine")
    await page.get_by_test_id("poll-quiz").check()
    await page.get_by_test_id("poll-create-open").click()
    await expect(page.get_by_test_id("poll-form-error")).to_have_text(
        "Mark at least one correct answer for the quiz."
    )
    await page.get_by_test_id("poll-correct").nth(0).check()
    await page.get_by_test_id("poll-public-results").check()
    await page.get_by_test_id("poll-create-open").click()
    await expect(page.locator('[data-testid="poll"][data-status="open"]')).to_be_visible(timeout=3000)

    for voter, choice in ((right, 0), (wrong, 1)):
        await voter.open_tab("polls")
        card = voter.page.locator('[data-testid="poll"][data-status="open"]')
        await card.locator(f'[data-testid="poll-choice"][data-option="{choice}"]').check()
        await card.get_by_test_id("poll-vote").click()
        await expect(card.get_by_test_id("poll-voted")).to_be_visible(timeout=3000)
    # Public results: the voters watch the live count too.
    await expect(right.page.get_by_test_id("poll-ballots")).to_have_attribute(
        "data-ballots", "2", timeout=3000
    )

    await page.get_by_test_id("poll-close").click()
    verdict = right.page.get_by_test_id("poll-quiz-result")
    await expect(verdict).to_have_attribute("data-correct", "true", timeout=3000)
    await expect(verdict).to_contain_text("Correct! Your score: 1")
    await expect(wrong.page.get_by_test_id("poll-quiz-result")).to_have_attribute("data-correct", "false")
    correct_row = wrong.page.locator('[data-testid="poll-result"].is-correct')
    await expect(correct_row).to_have_attribute("data-option", "0")
    for participant in (host, right, wrong):
        entries = participant.page.get_by_test_id("leaderboard-entry")
        await expect(entries.first).to_have_attribute("data-participant-id", right_id, timeout=3000)
        await expect(entries.first).to_have_attribute("data-score", "1")


async def test_a_moderator_made_by_the_host_can_lock_the_stage_against_newcomers(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    colleague = await open_stage(stage, "audience", "Dr Colleague")
    _, colleague_id = await asyncio.gather(host.join(), colleague.join())
    controls = colleague.page.get_by_test_id("stage-controls")
    await expect(controls).to_be_hidden()

    await host.moderate(colleague_id, "make-moderator")
    await expect(colleague.page.get_by_test_id("role-chip")).to_have_text("You: Moderator", timeout=3000)
    await expect(controls).to_be_visible()
    await expect(colleague.page.get_by_test_id("stage-end")).to_be_hidden()  # the host's alone
    await expect(colleague.page.get_by_test_id("hand-button")).to_be_hidden()

    lock = colleague.page.get_by_test_id("stage-lock")
    await lock.click()
    await expect(lock).to_have_attribute("aria-pressed", "true", timeout=3000)
    await expect(host.page.get_by_test_id("stage-locked-chip")).to_be_visible()
    newcomer = await open_stage(stage, "audience", "Newcomer")
    await newcomer.page.get_by_test_id("join-name").fill("Newcomer")
    await newcomer.page.get_by_test_id("join-button").click()
    await expect(newcomer.page.get_by_test_id("join-error")).to_contain_text("The stage is locked")

    await lock.click()
    await expect(lock).to_have_attribute("aria-pressed", "false", timeout=3000)
    await newcomer.page.get_by_test_id("join-button").click()
    await newcomer.page.wait_for_function("window.medstage.state === 'joined'", timeout=10_000)
