"""Q&A: one upvote per person, answered or dismissed by moderators, listed by votes then time."""

from __future__ import annotations

from typing import Any

from rooms.errors import AlreadyVoted, InvalidMessage, NotAllowed, NotFound
from rooms.events import QuestionAsked, QuestionUpdated, QuestionView
from rooms.roles import Role
from rooms.stage import Stage
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused


def listed(stage: Stage, reader: str) -> list[dict[str, Any]]:
    return stage.snapshot_for(reader)["questions"]  # type: ignore[return-value]


def test_a_question_is_asked_to_everyone_with_no_votes() -> None:
    stage = populated()
    (asked,) = stage.ask_question(ALICE, "q1", "Is the dose weight-based?", 2)
    view = QuestionView(
        id="q1",
        author_id=ALICE,
        author_name="Alice",
        text="Is the dose weight-based?",
        votes=0,
        status="open",
        at=2,
    )
    assert asked == QuestionAsked(stage="s1", at=2, seq=asked.seq, question=view)


def test_question_text_and_ids_are_checked() -> None:
    stage = populated()
    refused(stage, InvalidMessage, lambda: stage.ask_question(ALICE, "q", " ", 1))
    refused(stage, InvalidMessage, lambda: stage.ask_question(ALICE, "q", "x" * 501, 1))
    stage.ask_question(ALICE, "q", "fine", 1)
    refused(stage, InvalidMessage, lambda: stage.ask_question(BOB, "q", "again", 1))


def test_one_upvote_per_person_even_across_rejoins() -> None:
    stage = populated()
    stage.ask_question(ALICE, "q1", "why?", 1)
    (updated,) = stage.upvote_question(BOB, "q1", 2)
    assert isinstance(updated, QuestionUpdated) and updated.question.votes == 1
    refused(stage, AlreadyVoted, lambda: stage.upvote_question(BOB, "q1", 3))
    stage.leave(BOB, 4)
    stage.join("b2", "Bob", Role.AUDIENCE, 5, identity=BOB)
    refused(stage, AlreadyVoted, lambda: stage.upvote_question("b2", "q1", 6))
    stage.upvote_question(ALICE, "q1", 7)  # the author may upvote too
    assert listed(stage, ALICE)[0]["votes"] == 2


def test_the_snapshot_says_whether_the_reader_voted() -> None:
    stage = populated()
    stage.ask_question(ALICE, "q1", "why?", 1)
    stage.upvote_question(BOB, "q1", 2)
    assert listed(stage, BOB)[0]["voted"] is True
    assert listed(stage, ALICE)[0]["voted"] is False


def test_questions_are_ordered_by_votes_then_time() -> None:
    stage = populated()
    for i, (pid, t) in enumerate([(ALICE, 1), (BOB, 2), (SPEAKER, 3), (MOD, 3)]):
        stage.ask_question(pid, f"q{i}", "?", t)
    stage.upvote_question(HOST, "q2", 4)
    stage.upvote_question(ALICE, "q2", 4)
    stage.upvote_question(HOST, "q1", 4)
    assert [q["id"] for q in listed(stage, HOST)] == ["q2", "q1", "q0", "q3"]


def test_moderators_answer_or_dismiss_and_upvotes_stop() -> None:
    stage = populated()
    stage.ask_question(ALICE, "q1", "why?", 1)
    stage.ask_question(ALICE, "q2", "spam", 1)
    (_audit, answered) = stage.answer_question(MOD, "q1", 2)
    assert isinstance(answered, QuestionUpdated) and answered.question.status == "answered"
    (_audit, dismissed) = stage.dismiss_question(HOST, "q2", 2)
    assert isinstance(dismissed, QuestionUpdated) and dismissed.question.status == "dismissed"
    assert stage.answer_question(MOD, "q1", 3) == []  # already answered: nothing changes
    refused(stage, NotAllowed, lambda: stage.upvote_question(BOB, "q1", 3))
    assert {q["id"]: q["status"] for q in listed(stage, BOB)} == {"q1": "answered", "q2": "dismissed"}


def test_unknown_questions_are_not_found() -> None:
    stage = populated()
    for command in (stage.upvote_question, stage.answer_question, stage.dismiss_question):
        refused(stage, NotFound, command, MOD, "nope", 1)
