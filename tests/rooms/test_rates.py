"""Floods (issue 11, item 5): every repeatable command is rate-limited per identity, open questions are
bounded, and a late joiner's state is bounded with older history paged on request."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rooms.errors import InvalidMessage, NotFound, RateLimited, TooManyQuestions
from rooms.polls import PollSpec
from rooms.rates import Rate, RateClass, RateLimiter, RateLimits
from rooms.roles import Role
from rooms.stage import Stage, StageSettings
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused, types

# --- the limiter ------------------------------------------------------------------------------------

rates = st.builds(Rate, st.integers(1, 6), st.floats(0.5, 60, allow_nan=False))
gaps = st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=60)


def attempts(limiter: RateLimiter, times: list[float], identity: str = "a") -> list[float]:
    """Try at each time; the times that were accepted."""
    accepted = []
    for now in times:
        try:
            limiter.check(identity, RateClass.QUESTION, now)
        except RateLimited:
            continue
        limiter.spend(identity, RateClass.QUESTION, now)
        accepted.append(now)
    return accepted


def clock(steps: list[float]) -> list[float]:
    now, times = 0.0, []
    for step in steps:
        now += step
        times.append(now)
    return times


@given(rate=rates, steps=gaps)
@settings(max_examples=300, deadline=None)
def test_no_window_ever_holds_more_than_the_rate(rate: Rate, steps: list[float]) -> None:
    limiter = RateLimiter({RateClass.QUESTION: rate})
    accepted = attempts(limiter, clock(steps))
    for t in accepted:
        assert sum(t - rate.window_s < u <= t for u in accepted) <= rate.count


@given(rate=rates, steps=gaps)
@settings(max_examples=300, deadline=None)
def test_a_refusal_says_exactly_when_the_next_one_goes(rate: Rate, steps: list[float]) -> None:
    """Refused at ``now``: still refused a little before ``now + retry_after``, accepted just after."""
    limiter = RateLimiter({RateClass.QUESTION: rate})
    for now in clock(steps):
        try:
            limiter.check("a", RateClass.QUESTION, now)
        except RateLimited as error:
            assert 0 < error.retry_after <= rate.window_s + 1e-6
            if error.retry_after > 1e-3:
                with pytest.raises(RateLimited):
                    limiter.check("a", RateClass.QUESTION, now + error.retry_after - 1e-3)
            limiter.check("a", RateClass.QUESTION, now + error.retry_after + 1e-6)
            continue
        limiter.spend("a", RateClass.QUESTION, now)


@given(steps=gaps, identities=st.lists(st.sampled_from("abc"), min_size=60, max_size=60))
@settings(max_examples=200, deadline=None)
def test_identities_and_classes_do_not_share_a_limit(steps: list[float], identities: list[str]) -> None:
    """Interleaving others' commands changes nothing for anyone."""
    rate = Rate(2, 5.0)
    shared = RateLimiter({RateClass.QUESTION: rate, RateClass.HAND: rate})
    alone = {i: RateLimiter({RateClass.QUESTION: rate}) for i in "abc"}
    for now, identity in zip(clock(steps), identities, strict=False):
        shared.spend(identity, RateClass.HAND, now)  # another class, spent freely
        expected = attempts(alone[identity], [now], identity)
        assert attempts(shared, [now], identity) == expected


def test_memory_stays_bounded_by_who_was_active_within_a_window() -> None:
    limiter = RateLimiter({RateClass.JOIN: Rate(3, 10.0)})
    for i in range(100_000):  # a new identity every 10 ms for 1,000 s
        limiter.spend(f"id-{i}", RateClass.JOIN, i / 100)
    assert len(limiter.recent) <= 2 * 1_000 + 256  # about one window's worth (10 s x 100/s), doubled


def test_a_rate_is_at_least_one_per_a_positive_window() -> None:
    for count, window in [(0, 1.0), (1, 0.0), (1, -1.0)]:
        with pytest.raises(ValueError):
            Rate(count, window)


# --- on the stage -----------------------------------------------------------------------------------


def limited(**rates: Rate) -> Stage:
    return populated(settings=StageSettings(rates=replace(RateLimits(), **rates)))


def test_a_question_flood_stops_after_the_rate_and_a_refusal_changes_nothing() -> None:
    stage = limited(question=Rate(3, 30.0))
    for i in range(3):
        assert types(stage.ask_question(ALICE, f"q{i}", "Dose?", 1.0 + i)) == ["question.asked"]
    seq = stage.log.last_seq
    error = refused(stage, RateLimited, lambda: stage.ask_question(ALICE, "q9", "Dose?", 5.0))
    assert isinstance(error, RateLimited) and error.retry_after == pytest.approx(26.0)
    assert error.code == "rate_limited" and "3 questions per 30 s" in error.message
    assert stage.log.last_seq == seq
    stage.ask_question(BOB, "b1", "Bob is not limited by Alice", 5.0)


def test_the_rate_follows_the_identity_across_reconnections() -> None:
    stage = limited(hand=Rate(1, 60.0))
    stage.join("c1", "Carol", Role.AUDIENCE, 0, identity="carol")
    stage.raise_hand("c1", 1)
    stage.leave("c1", 2)
    stage.join("c2", "Carol", Role.AUDIENCE, 2, identity="carol")
    refused(stage, RateLimited, lambda: stage.raise_hand("c2", 3))


def test_hand_toggles_are_bounded_and_lowering_is_never_refused() -> None:
    stage = limited(hand=Rate(2, 30.0))
    sent = []
    for i in range(20):  # a script toggling its hand
        try:
            sent += stage.raise_hand(ALICE, i * 0.01)
        except RateLimited:
            pass
        if stage.get(ALICE).hand_raised:
            sent += stage.lower_hand(ALICE, None, i * 0.01)
    assert types(sent).count("hands.updated") == 4  # two raises, two lowers


def test_unmuting_is_limited_muting_is_not_and_a_no_op_emits_nothing() -> None:
    stage = limited(media=Rate(2, 10.0))
    stage.start_publishing(SPEAKER, ("audio",), 0)  # one of the two
    assert stage.set_muted(SPEAKER, "audio", False, 1) == []  # not muted: nothing to say
    stage.set_muted(SPEAKER, "audio", True, 1)
    assert stage.set_muted(SPEAKER, "audio", True, 1) == []
    stage.set_muted(SPEAKER, "audio", False, 2)
    stage.set_muted(SPEAKER, "audio", True, 3)
    refused(stage, RateLimited, lambda: stage.set_muted(SPEAKER, "audio", False, 4))
    refused(stage, RateLimited, lambda: stage.check_may_publish(SPEAKER, 4))
    stage.set_muted(SPEAKER, "audio", False, 10.5)  # the publication at 0 left the window


def test_reactions_votes_and_consent_have_their_rates() -> None:
    stage = limited(reaction=Rate(2, 10.0), vote=Rate(1, 10.0), consent=Rate(1, 60.0))
    stage.react(ALICE, "👏", 1)
    stage.react(ALICE, "👏", 1)
    refused(stage, RateLimited, lambda: stage.react(ALICE, "👏", 1))
    stage.ask_question(BOB, "q1", "One", 1)
    stage.ask_question(BOB, "q2", "Two", 1)
    stage.upvote_question(ALICE, "q1", 1)
    refused(stage, RateLimited, lambda: stage.upvote_question(ALICE, "q2", 2))
    stage.create_poll(MOD, "p1", PollSpec("Which?", ("A", "B")), 2)
    stage.open_poll(MOD, "p1", 2)
    refused(stage, RateLimited, lambda: stage.vote(ALICE, "p1", [0], 3))
    stage.vote(ALICE, "p1", [0], 11.5)
    policy = stage.settings.consent_policy_version
    stage.give_consent(ALICE, frozenset({"comments"}), policy, "settings", 1, "r1")
    give = stage.give_consent
    refused(stage, RateLimited, lambda: give(ALICE, frozenset(), policy, "settings", 2, "r2"))
    stage.withdraw_consent(ALICE, 2, "r3")  # taking it back is never refused


def test_moderator_actions_have_a_generous_rate_of_their_own() -> None:
    stage = limited(moderation=Rate(3, 10.0))
    stage.chat_mute(MOD, BOB, True, 1)
    stage.chat_mute(MOD, BOB, False, 1)
    stage.set_slow_mode(MOD, 5, 1)
    refused(stage, RateLimited, lambda: stage.lock(MOD, True, 2))
    stage.lock(HOST, True, 2)  # the host is someone else


def test_a_join_flood_of_one_identity_is_limited() -> None:
    stage = limited(join=Rate(2, 60.0))
    stage.join("x1", "X", Role.AUDIENCE, 1, identity="x")
    stage.leave("x1", 1)
    stage.join("x2", "X", Role.AUDIENCE, 1, identity="x")
    stage.leave("x2", 1)
    refused(stage, RateLimited, lambda: stage.join("x3", "X", Role.AUDIENCE, 2, identity="x"))


def test_a_refused_command_costs_nothing() -> None:
    stage = limited(question=Rate(1, 30.0))
    refused(stage, InvalidMessage, lambda: stage.ask_question(ALICE, "q1", "x" * 501, 1))
    stage.ask_question(ALICE, "q1", "Now a real one", 1)


# --- questions are bounded ----------------------------------------------------------------------------


def roomy(**overrides: object) -> Stage:
    """A stage whose rates do not get in the way (rates are tested above)."""
    free = Rate(10_000, 1.0)
    fields = {f: free for f in ("question", "vote", "moderation", "history")}
    return populated(settings=StageSettings(rates=replace(RateLimits(), **fields), **overrides))  # type: ignore[arg-type]


def test_one_person_has_at_most_so_many_open_questions() -> None:
    stage = roomy(question_max_per_person=2)
    stage.ask_question(ALICE, "q1", "One", 1)
    stage.ask_question(ALICE, "q2", "Two", 1)
    error = refused(stage, TooManyQuestions, lambda: stage.ask_question(ALICE, "q3", "Three", 1))
    assert error.code == "too_many_questions" and "2 open questions" in error.message
    stage.ask_question(BOB, "b1", "Bob may", 1)
    stage.answer_question(MOD, "q1", 2)
    stage.ask_question(ALICE, "q3", "Three, now that one is answered", 3)


def test_a_stage_has_at_most_so_many_open_questions() -> None:
    stage = roomy(question_max_open=3, question_max_per_person=3)
    for i in range(3):
        stage.ask_question(ALICE if i < 2 else BOB, f"q{i}", "?", 1)
    refused(stage, TooManyQuestions, lambda: stage.ask_question(SPEAKER, "q9", "?", 1))
    stage.dismiss_question(MOD, "q0", 2)
    stage.ask_question(SPEAKER, "q9", "?", 3)


def test_answered_questions_are_forgotten_beyond_the_bound() -> None:
    stage = roomy(question_max_open=2, question_max_per_person=2)
    for i in range(6):
        stage.ask_question(ALICE, f"q{i}", "?", i)
        stage.answer_question(MOD, f"q{i}", i)
    assert list(stage.questions.questions) == ["q4", "q5"]


# --- a late joiner's state is bounded; older history is paged --------------------------------------------


def test_joined_carries_the_latest_questions_and_says_there_are_more() -> None:
    stage = roomy(question_history=3, question_max_per_person=10)
    for i in range(5):
        stage.ask_question(ALICE, f"q{i}", f"#{i}", i)
    stage.upvote_question(BOB, "q3", 6)
    state: Any = stage.snapshot_for(BOB)
    assert [q["id"] for q in state["questions"]] == ["q3", "q2", "q4"]
    assert state["more_questions"] is True and state["more_comments"] is False


def test_history_pages_back_through_comments_and_questions() -> None:
    stage = roomy(question_max_per_person=10, comment_rate=100, comment_history=2)
    for i in range(5):
        stage.post_comment(ALICE, f"c{i}", f"#{i}", i)
        stage.ask_question(ALICE, f"q{i}", f"#{i}", i)
    stage.upvote_question(BOB, "q1", 6)
    page: Any = stage.history(BOB, "comments", None, 2, 7)
    assert [c["id"] for c in page["items"]] == ["c3", "c4"] and page["more"] is True
    page = stage.history(BOB, "comments", "c3", 10, 7)  # the chat keeps 2 x comment_history: c0 is gone
    assert [c["id"] for c in page["items"]] == ["c1", "c2"] and page["more"] is False
    page = stage.history(BOB, "questions", "q3", 2, 7)
    assert page["kind"] == "questions" and page["more"] is True
    assert [(q["id"], q["voted"]) for q in page["items"]] == [("q1", True), ("q2", False)]
    refused(stage, NotFound, lambda: stage.history(BOB, "comments", "nope", 2, 7))
    refused(stage, InvalidMessage, lambda: stage.history(BOB, "polls", None, 2, 7))


def test_history_requests_have_a_rate() -> None:
    stage = limited(history=Rate(1, 10.0))
    stage.history(ALICE, "comments", None, 10, 1)
    refused(stage, RateLimited, lambda: stage.history(ALICE, "questions", None, 10, 2))


def test_layer_preferences_have_a_rate_counted_only_once_accepted() -> None:
    stage = limited(layer=Rate(2, 10.0))
    for now in (1, 2, 3):  # checked, never spent (the media side refused, say): never refused
        stage.check_rate(ALICE, RateClass.LAYER, now)
    stage.spend_rate(ALICE, RateClass.LAYER, 4)
    stage.spend_rate(ALICE, RateClass.LAYER, 5)
    with pytest.raises(RateLimited) as limited_at:
        stage.check_rate(ALICE, RateClass.LAYER, 6)
    assert limited_at.value.retry_after == pytest.approx(8.0)
    stage.check_rate(BOB, RateClass.LAYER, 6)  # per identity
    stage.check_rate(ALICE, RateClass.LAYER, 14.5)  # the window moved on
