"""Stage.erase_person (issue 15): the erased person's comments are deleted for everyone, their
questions keep their place and votes without text or author, their upvotes stay as counts."""

from __future__ import annotations

from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage


def test_the_persons_comments_go_and_their_questions_become_anonymous() -> None:
    stage = Stage("s", "S", 0.0)
    stage.join("p-a", "Alice", Role.AUDIENCE, 0.0, identity="alice")
    stage.join("p-b", "Bob", Role.AUDIENCE, 0.0, identity="bob")
    stage.post_comment("p-a", "c-1", "alice says", 1.0)
    stage.post_comment("p-b", "c-2", "bob says", 2.0)
    stage.ask_question("p-a", "q-1", "alice asks", 3.0)
    stage.ask_question("p-b", "q-2", "bob asks", 4.0)
    stage.upvote_question("p-a", "q-2", 5.0)
    stage.upvote_question("p-b", "q-1", 5.0)

    events = stage.erase_person("alice", 6.0)

    kinds = [type(e).__name__ for e in events]
    assert kinds.count("CommentDeleted") == 1 and kinds.count("QuestionUpdated") == 1  # q-2 looks the same
    assert [c.view.id for c in stage.chat.comments.values()] == ["c-2"]
    q1, q2 = stage.questions.questions["q-1"], stage.questions.questions["q-2"]
    assert (q1.text, q1.author_name, len(q1.voters)) == ("", "", 1)
    assert (q2.text, len(q2.voters)) == ("bob asks", 1) and "alice" not in q2.voters
    assert stage.erase_person("alice", 7.0) == [], "again: nothing left to do"


def test_the_persons_ballots_and_quiz_score_stay_counted_without_a_name() -> None:
    stage = Stage("s", "S", 0.0)
    stage.join("p-h", "Host", Role.HOST, 0.0, identity="host")
    stage.join("p-a", "Alice", Role.AUDIENCE, 0.0, identity="alice")
    stage.join("p-b", "Bob", Role.AUDIENCE, 0.0, identity="bob")
    stage.create_poll("p-h", "quiz", PollSpec("2+2?", ("3", "4"), quiz=True, correct=(1,)), 1.0)
    stage.open_poll("p-h", "quiz", 1.0)
    stage.vote("p-a", "quiz", [1], 2.0)
    stage.vote("p-b", "quiz", [0], 2.0)
    stage.close_poll("p-h", "quiz", 3.0)
    before = stage.polls.polls["quiz"].counts()

    stage.erase_person("alice", 4.0)

    poll = stage.polls.polls["quiz"]
    assert poll.counts() == before and "alice" not in poll.ballots
    assert [b.name for b in poll.ballots.values()] == ["", "Bob"]
    board = stage.polls.leaderboard()
    assert all(e.name != "Alice" for e in board) and any(e.name == "" for e in board)
    assert "alice" not in stage.polls.scores
