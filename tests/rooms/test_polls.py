"""Polls and quizzes: draft -> open -> ballots -> closed by hand or timer; results, voters, scores."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from rooms.errors import AlreadyVoted, InvalidChoice, InvalidMessage, NotFound, PollClosed
from rooms.events import (
    MODERATORS,
    Audience,
    PollCounts,
    PollCreated,
    PollOpened,
    PollResults,
    PollVoters,
    QuizLeaderboard,
    QuizResult,
)
from rooms.events import PollClosed as PollClosedEvent
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, last, populated, refused, types

POLL = PollSpec(question="First-line therapy?", options=("ACE inhibitor", "Beta blocker", "Diuretic"))
QUIZ = replace(POLL, quiz=True, correct=(0,))


def opened(spec: PollSpec = POLL, **settings: Any) -> Stage:
    stage = populated(**settings)
    stage.create_poll(MOD, "p", spec, 1)
    stage.open_poll(MOD, "p", 2)
    return stage


def polls(stage: Stage, reader: str) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in stage.snapshot_for(reader)["polls"]}  # type: ignore[attr-defined]


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        replace(POLL, options=("only one",)),
        replace(POLL, options=tuple("abcdefghijk")),
        replace(POLL, options=("A", "")),
        replace(POLL, options=("A", "x" * 201)),
        replace(POLL, question=""),
        replace(POLL, question="x" * 501),
        replace(POLL, duration_s=4),
        replace(POLL, duration_s=3601),
        replace(POLL, quiz=True),  # a quiz without its answers
        replace(POLL, correct=(0,)),  # answers without a quiz
        replace(QUIZ, correct=(3,)),  # out of range
        replace(QUIZ, correct=(0, 1)),  # two answers to a single-choice quiz
        replace(QUIZ, multiple=True, correct=(1, 1)),
    ],
)
def test_invalid_polls_are_refused(spec: PollSpec) -> None:
    stage = populated()
    refused(stage, InvalidMessage, lambda: stage.create_poll(MOD, "p", spec, 1))


def test_valid_edge_polls_are_accepted() -> None:
    stage = populated()
    stage.create_poll(MOD, "p1", replace(POLL, options=tuple("abcdefghij"), duration_s=5), 1)
    stage.create_poll(MOD, "p2", replace(QUIZ, multiple=True, correct=(0, 2), duration_s=3600), 1)
    refused(stage, InvalidMessage, lambda: stage.create_poll(MOD, "p1", POLL, 1))  # the id is taken


# --- draft and open ---------------------------------------------------------------------------------


def test_a_draft_is_for_moderators_only() -> None:
    stage = populated()
    (_audit, created) = stage.create_poll(MOD, "p", QUIZ, 1)
    assert isinstance(created, PollCreated) and created.audience() == MODERATORS
    assert created.poll.status == "draft" and created.poll.correct == (0,)
    assert "p" in polls(stage, HOST) and "p" not in polls(stage, ALICE)
    refused(stage, PollClosed, lambda: stage.vote(ALICE, "p", [0], 2))
    refused(stage, PollClosed, lambda: stage.close_poll(MOD, "p", 2))


def test_opening_shows_the_poll_to_everyone_without_the_answers() -> None:
    stage = populated()
    stage.create_poll(MOD, "p", replace(QUIZ, duration_s=60), 1)
    (_audit, event) = stage.open_poll(MOD, "p", 10)
    assert isinstance(event, PollOpened) and event.audience().everyone
    assert event.poll.status == "open" and event.poll.closes_at == 70
    assert event.poll.correct is None and event.poll.results is None
    assert polls(stage, ALICE)["p"]["correct"] is None
    assert polls(stage, MOD)["p"]["correct"] == (0,)
    assert stage.open_poll(MOD, "p", 11) == []  # already open


def test_a_closed_poll_cannot_be_reopened_or_closed_again() -> None:
    stage = opened()
    stage.close_poll(MOD, "p", 3)
    refused(stage, PollClosed, lambda: stage.open_poll(MOD, "p", 4))
    refused(stage, PollClosed, lambda: stage.close_poll(MOD, "p", 4))
    refused(stage, PollClosed, lambda: stage.vote(ALICE, "p", [0], 4))


def test_unknown_polls_are_not_found() -> None:
    stage = populated()
    refused(stage, NotFound, lambda: stage.open_poll(MOD, "nope", 1))
    refused(stage, NotFound, lambda: stage.close_poll(MOD, "nope", 1))
    refused(stage, NotFound, lambda: stage.vote(ALICE, "nope", [0], 1))


# --- ballots ----------------------------------------------------------------------------------------


def test_each_ballot_updates_the_live_counts_for_moderators() -> None:
    stage = opened()
    (counts,) = stage.vote(ALICE, "p", [1], 3)
    assert counts == PollCounts(
        stage="s1", at=3, seq=counts.seq, poll_id="p", counts=(0, 1, 0), ballots=1, public_results=False
    )
    assert counts.audience() == MODERATORS
    stage.vote(SPEAKER, "p", [1], 3)
    stage.vote(MOD, "p", [0], 3)  # moderators vote too
    assert last(stage, PollCounts).counts == (1, 2, 0)
    assert polls(stage, HOST)["p"]["results"] == {"counts": (1, 2, 0), "ballots": 3}
    assert polls(stage, BOB)["p"]["results"] is None


def test_public_results_show_live_counts_to_everyone() -> None:
    stage = opened(replace(POLL, public_results=True))
    (counts,) = stage.vote(ALICE, "p", [2], 3)
    assert counts.audience() == Audience(everyone=True)
    assert polls(stage, BOB)["p"]["results"] == {"counts": (0, 0, 1), "ballots": 1}


def test_one_ballot_per_person_even_across_rejoins() -> None:
    stage = opened()
    stage.vote(ALICE, "p", [0], 3)
    refused(stage, AlreadyVoted, lambda: stage.vote(ALICE, "p", [1], 4))
    stage.leave(ALICE, 5)
    stage.join("a2", "Alice", Role.AUDIENCE, 6, identity=ALICE)
    refused(stage, AlreadyVoted, lambda: stage.vote("a2", "p", [1], 7))
    assert polls(stage, "a2")["p"]["my_choices"] == [0]


@pytest.mark.parametrize("choices", [[], [3], [-1], [0, 1], [0, 0]])
def test_single_choice_ballots_take_exactly_one_valid_option(choices: list[int]) -> None:
    stage = opened()
    refused(stage, InvalidChoice, lambda: stage.vote(ALICE, "p", choices, 3))


def test_multiple_choice_ballots_take_distinct_valid_options() -> None:
    stage = opened(replace(POLL, multiple=True))
    refused(stage, InvalidChoice, lambda: stage.vote(ALICE, "p", [1, 1], 3))
    refused(stage, InvalidChoice, lambda: stage.vote(ALICE, "p", [0, 9], 3))
    stage.vote(ALICE, "p", [2, 0], 3)
    assert last(stage, PollCounts).counts == (1, 0, 1)
    assert polls(stage, ALICE)["p"]["my_choices"] == [0, 2]


# --- closing ----------------------------------------------------------------------------------------


def test_closing_gives_everyone_the_results() -> None:
    stage = opened()
    stage.vote(ALICE, "p", [0], 3)
    stage.vote(BOB, "p", [2], 3)
    (_audit, closed) = stage.close_poll(MOD, "p", 4)
    assert isinstance(closed, PollClosedEvent) and closed.audience().everyone
    assert closed.poll.status == "closed"
    assert closed.poll.results == PollResults(counts=(1, 0, 1), ballots=2)
    assert polls(stage, SPEAKER)["p"]["results"] == {"counts": (1, 0, 1), "ballots": 2}


def test_a_named_poll_reveals_its_voters_to_moderators_only() -> None:
    stage = opened(replace(POLL, anonymous=False))
    stage.vote(ALICE, "p", [0], 3)
    stage.vote(BOB, "p", [1], 3)
    events = stage.close_poll(MOD, "p", 4)
    assert types(events) == ["moderation.audit", "poll.closed", "poll.voters"]
    voters = events[2]
    assert isinstance(voters, PollVoters) and voters.audience() == MODERATORS
    assert voters.voters == {ALICE: (0,), BOB: (1,)}
    assert polls(stage, MOD)["p"]["voters"] == {ALICE: [0], BOB: [1]}
    assert "voters" not in polls(stage, ALICE)["p"]


def test_an_anonymous_poll_reveals_no_voters() -> None:
    stage = opened()
    stage.vote(ALICE, "p", [0], 3)
    assert types(stage.close_poll(MOD, "p", 4)) == ["moderation.audit", "poll.closed"]
    assert "voters" not in polls(stage, MOD)["p"]


def test_the_timer_closes_a_poll_when_its_duration_from_opening_runs_out() -> None:
    stage = populated()
    stage.create_poll(MOD, "p", replace(POLL, duration_s=30), 0)
    assert stage.tick(100) == []  # a draft's timer has not started
    stage.open_poll(MOD, "p", 100)
    stage.vote(ALICE, "p", [0], 129.9)
    assert stage.tick(129.9) == []
    refused(stage, PollClosed, lambda: stage.vote(BOB, "p", [0], 130.0))  # due, though not yet ticked
    assert types(stage.tick(130.0)) == ["poll.closed"]
    assert stage.tick(131) == []


def test_a_poll_without_duration_stays_open_until_closed() -> None:
    stage = opened()
    assert stage.tick(10_000) == []
    stage.vote(ALICE, "p", [0], 10_000)


# --- quizzes ----------------------------------------------------------------------------------------


def test_a_quiz_tells_each_voter_whether_they_were_right_and_ranks_everyone() -> None:
    stage = opened(QUIZ)
    stage.vote(ALICE, "p", [0], 3)
    stage.vote(BOB, "p", [1], 3)
    events = stage.close_poll(MOD, "p", 4)
    assert types(events) == [
        "moderation.audit",
        "poll.closed",
        "quiz.result",
        "quiz.result",
        "quiz.leaderboard",
    ]
    closed = events[1]
    assert isinstance(closed, PollClosedEvent) and closed.poll.results is not None
    assert closed.poll.results.correct == (0,)
    results = {e.participant_id: e for e in events if isinstance(e, QuizResult)}
    assert (results[ALICE].correct, results[ALICE].score) == (True, 1)
    assert (results[BOB].correct, results[BOB].score) == (False, 0)
    assert results[ALICE].audience() == Audience(persons=frozenset({ALICE}))
    board = events[-1]
    assert isinstance(board, QuizLeaderboard) and board.audience().everyone
    assert [(e.participant_id, e.name, e.score) for e in board.entries] == [
        (ALICE, "Alice", 1),
        (BOB, "Bob", 0),
    ]


def test_a_multiple_choice_quiz_scores_only_exactly_correct_ballots() -> None:
    stage = opened(replace(QUIZ, multiple=True, correct=(0, 2)))
    stage.vote(ALICE, "p", [2, 0], 3)
    stage.vote(BOB, "p", [0], 3)
    stage.vote(SPEAKER, "p", [0, 1, 2], 3)
    stage.close_poll(MOD, "p", 4)
    assert {e.participant_id: e.correct for e in stage.log.events if isinstance(e, QuizResult)} == {
        ALICE: True, BOB: False, SPEAKER: False
    }  # fmt: skip


def test_the_leaderboard_spans_the_session_best_first_ties_by_name_top_n() -> None:
    stage = populated(leaderboard_size=3)
    stage.join("z", "Zed", Role.AUDIENCE, 0)
    for n, answers in enumerate([{ALICE: 0, BOB: 0, "z": 0, SPEAKER: 1}, {BOB: 0, "z": 0, ALICE: 1}]):
        stage.create_poll(MOD, f"q{n}", QUIZ, 1)
        stage.open_poll(MOD, f"q{n}", 1)
        for pid, choice in answers.items():
            stage.vote(pid, f"q{n}", [choice], 2)
        stage.close_poll(MOD, f"q{n}", 3)
    board = [(e["name"], e["score"]) for e in stage.snapshot_for(SPEAKER)["leaderboard"]]  # type: ignore[attr-defined]
    assert board == [("Bob", 2), ("Zed", 2), ("Alice", 1)]  # Dr Speaker (0) is fourth: off the board


def test_a_quiz_score_follows_the_identity_across_rejoins() -> None:
    stage = opened(QUIZ)
    stage.vote(ALICE, "p", [0], 3)
    stage.close_poll(MOD, "p", 4)
    stage.leave(ALICE, 5)
    stage.join("a2", "Alice B.", Role.AUDIENCE, 6, identity=ALICE)
    stage.create_poll(MOD, "p2", QUIZ, 7)
    stage.open_poll(MOD, "p2", 7)
    stage.vote("a2", "p2", [0], 8)
    stage.close_poll(MOD, "p2", 9)
    assert last(stage, QuizResult).score == 2
    assert [(e.participant_id, e.name, e.score) for e in last(stage, QuizLeaderboard).entries] == [
        ("a2", "Alice B.", 2)
    ]
