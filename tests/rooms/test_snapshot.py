"""The late joiner's ``state`` and the log of a whole session."""

from __future__ import annotations

from dataclasses import replace

import msgspec

from rooms.events import decode_event
from rooms.polls import PollSpec
from rooms.stage import Stage
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated

POLL = PollSpec(question="Q?", options=("A", "B"))


def session() -> Stage:
    """A stage that went through a bit of everything."""
    stage = populated()
    stage.start_publishing(SPEAKER, ("audio", "video"), 1)
    stage.post_comment(ALICE, "c1", "Welcome", 2)
    stage.post_comment(BOB, "c2", "spam", 2)
    stage.delete_comment(MOD, "c2", 3)
    stage.pin_comment(MOD, "c1", 3)
    stage.set_slow_mode(MOD, 5, 3)
    stage.ask_question(BOB, "q1", "How?", 4)
    stage.upvote_question(ALICE, "q1", 4)
    stage.raise_hand(BOB, 5)
    stage.invite(MOD, ALICE, 5)
    stage.react(ALICE, "🎉", 5)
    stage.flush_reactions(6)
    stage.create_poll(MOD, "draft", POLL, 6)
    stage.create_poll(MOD, "open", replace(POLL, duration_s=60), 6)
    stage.open_poll(MOD, "open", 6)
    stage.vote(BOB, "open", [1], 7)
    stage.create_poll(MOD, "quiz", replace(POLL, quiz=True, correct=(0,), anonymous=False), 7)
    stage.open_poll(MOD, "quiz", 7)
    stage.vote(BOB, "quiz", [0], 8)
    stage.close_poll(MOD, "quiz", 8)
    stage.moderator_mute(MOD, SPEAKER, "audio", True, 9)
    stage.chat_mute(MOD, BOB, True, 9)
    return stage


def test_a_late_joiner_gets_the_stage_as_they_may_see_it() -> None:
    stage = session()
    state = stage.snapshot_for(ALICE)
    assert list(state) == [
        "seq", "comments", "pinned", "slow_mode_s", "questions", "more_comments", "more_questions", "hands",
        "invitation", "polls", "leaderboard", "recording", "consent",
    ]  # fmt: skip
    assert state["seq"] == stage.log.last_seq
    assert state["comments"] == [
        {"id": "c1", "author_id": ALICE, "author_name": "Alice", "text": "Welcome", "at": 2}
    ]
    assert state["pinned"] == {
        "id": "c1",
        "author_id": ALICE,
        "author_name": "Alice",
        "text": "Welcome",
        "at": 2,
    }
    assert state["slow_mode_s"] == 5
    question = {
        "id": "q1",
        "author_id": BOB,
        "author_name": "Bob",
        "text": "How?",
        "votes": 1,
        "status": "open",
    }
    assert state["questions"] == [{**question, "at": 4, "voted": True}]
    assert state["hands"] == [BOB]
    assert state["invitation"] == {"participant_id": ALICE, "by": MOD, "by_name": "Dr Mod", "at": 5}
    assert state["leaderboard"] == [{"participant_id": BOB, "name": "Bob", "score": 1}]


def test_polls_in_the_snapshot_follow_the_visibility_rules() -> None:
    stage = session()
    mine = {p["id"]: p for p in stage.snapshot_for(BOB)["polls"]}  # type: ignore[attr-defined]
    theirs = {p["id"]: p for p in stage.snapshot_for(MOD)["polls"]}  # type: ignore[attr-defined]
    assert list(mine) == ["open", "quiz"] and list(theirs) == ["draft", "open", "quiz"]
    assert mine["open"]["results"] is None and theirs["open"]["results"] == {"counts": (0, 1), "ballots": 1}
    assert mine["open"]["my_choices"] == [1] and theirs["open"]["my_choices"] is None
    assert mine["open"]["closes_at"] == 66
    assert mine["quiz"]["results"] == {"counts": (1, 0), "ballots": 1, "correct": (0,)}
    assert "voters" not in mine["quiz"] and theirs["quiz"]["voters"] == {BOB: [0]}


def test_the_snapshot_and_participants_encode_as_json() -> None:
    stage = session()
    for pid in stage.participants:
        msgspec.json.encode(stage.snapshot_for(pid))
        msgspec.json.encode(stage.participants[pid].snapshot())
    assert stage.participants[SPEAKER].snapshot()["moderator_muted"] == {"audio": True, "video": False}
    assert stage.participants[BOB].snapshot()["chat_muted"] is True
    assert stage.participants[BOB].snapshot()["hand_raised"] is True


def test_every_event_of_a_session_is_logged_in_order_and_decodes_to_itself() -> None:
    stage = session()
    stage.remove(MOD, BOB, "", 10)
    stage.tick(1000)
    stage.end(HOST, 1001)
    assert [e.seq for e in stage.log.events] == list(range(1, len(stage.log.events) + 1))
    for event in stage.log.events:
        assert decode_event(msgspec.json.encode(event)) == event


def test_returned_events_are_the_logged_ones() -> None:
    stage = populated()
    before = len(stage.log.events)
    returned = stage.post_comment(ALICE, "c", "hi", 1) + stage.raise_hand(BOB, 2)
    assert stage.log.events[before:] == returned
    assert all(e.seq > 0 for e in returned)


def test_is_moderator_is_true_for_host_and_moderators_only() -> None:
    stage = populated()
    assert [pid for pid in (HOST, MOD, SPEAKER, ALICE, "ghost") if stage.is_moderator(pid)] == [HOST, MOD]
