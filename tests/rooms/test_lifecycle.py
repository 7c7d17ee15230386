"""A stage's life: scheduled -> live -> ended, the lock, and who may (re)join."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rooms.errors import Banned, NotAllowed, StageEnded, StageLocked, StageNotLive
from rooms.events import (
    ParticipantJoined,
    PollClosed,
    PublishingStopped,
    StageUpdated,
    StageView,
)
from rooms.events import StageEnded as StageEndedEvent
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage, StageSettings, StageState
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused, types


def test_a_new_stage_is_live_unlocked_with_default_settings() -> None:
    stage = Stage("s1", "T", 0.0)
    assert stage.state is StageState.LIVE and not stage.locked
    assert stage.settings == StageSettings()
    assert stage.snapshot() == {"id": "s1", "title": "T", "state": "live", "locked": False}


def test_max_publishers_keyword_and_settings_agree() -> None:
    assert Stage("s", "T", 0, max_publishers=3).settings.max_publishers == 3
    assert Stage("s", "T", 0, settings=StageSettings(max_publishers=4)).max_publishers == 4


def test_the_host_starts_a_scheduled_stage_and_everyone_is_told() -> None:
    stage = populated(state=StageState.SCHEDULED)
    events = stage.start(HOST, 5.0)
    view = StageView(id="s1", title="Grand rounds", state="live", locked=False)
    assert types(events[:1]) == ["moderation.audit"]
    assert events[1:] == [StageUpdated(stage="s1", at=5.0, seq=stage.log.last_seq, info=view)]
    assert events[1].audience().everyone
    assert stage.state is StageState.LIVE


def test_a_live_stage_cannot_be_started_again() -> None:
    stage = populated()
    refused(stage, NotAllowed, lambda: stage.start(HOST, 1))


def test_publishing_needs_a_live_stage() -> None:
    stage = populated(state=StageState.SCHEDULED)
    refused(stage, StageNotLive, lambda: stage.check_may_publish(SPEAKER))
    refused(stage, StageNotLive, lambda: stage.start_publishing(SPEAKER, ("audio",), 1))
    stage.start(HOST, 2)
    stage.check_may_publish(SPEAKER)
    assert types(stage.start_publishing(SPEAKER, ("audio",), 3)) == ["publishing.started"]


def test_a_locked_stage_admits_nobody_new_until_unlocked() -> None:
    stage = populated()
    assert stage.lock(MOD, True, 1)[1].info.locked  # type: ignore[attr-defined]
    refused(stage, StageLocked, lambda: stage.join("c", "Carol", Role.AUDIENCE, 2))
    stage.lock(HOST, False, 3)
    assert types(stage.join("c", "Carol", Role.AUDIENCE, 4)) == ["participant.joined"]


def test_ending_closes_open_polls_stops_media_then_says_ended() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, ("audio", "video"), 1)
    stage.create_poll(HOST, "p", PollSpec(question="Q", options=("A", "B")), 1)
    stage.open_poll(HOST, "p", 1)
    events = stage.end(HOST, 2)
    assert types(events) == ["moderation.audit", "poll.closed", "publishing.stopped", "stage.ended"]
    assert isinstance(events[1], PollClosed) and events[1].poll.status == "closed"
    assert events[2] == PublishingStopped(stage="s1", at=2, seq=events[2].seq, participant=SPEAKER)
    assert isinstance(events[-1], StageEndedEvent)
    assert stage.state is StageState.ENDED and not stage.publishers


COMMANDS_AFTER_END: list[Callable[[Stage], object]] = [
    lambda s: s.join("c", "Carol", Role.AUDIENCE, 9),
    lambda s: s.end(HOST, 9),
    lambda s: s.start(HOST, 9),
    lambda s: s.lock(HOST, True, 9),
    lambda s: s.raise_hand(ALICE, 9),
    lambda s: s.invite(MOD, ALICE, 9),
    lambda s: s.post_comment(ALICE, "c", "hi", 9),
    lambda s: s.react(ALICE, "👏", 9),
    lambda s: s.ask_question(ALICE, "q", "?", 9),
    lambda s: s.create_poll(HOST, "p2", PollSpec(question="Q", options=("A", "B")), 9),
    lambda s: s.ban(MOD, BOB, "", 9),
    lambda s: s.check_may_publish(SPEAKER),
    lambda s: s.start_publishing(SPEAKER, ("audio",), 9),
]


@pytest.mark.parametrize("command", COMMANDS_AFTER_END)
def test_an_ended_stage_refuses_every_command(command: Callable[[Stage], object]) -> None:
    stage = populated()
    stage.end(HOST, 1)
    refused(stage, StageEnded, lambda: command(stage))


def test_after_the_end_time_and_reactions_cause_nothing_but_people_may_leave() -> None:
    stage = populated()
    stage.end(HOST, 1)
    assert stage.tick(100) == [] and stage.flush_reactions(100) == []
    assert types(stage.leave(ALICE, 2)) == ["participant.left"]


def test_the_identity_defaults_to_the_participant_id() -> None:
    stage = populated()
    stage.join("c", "Carol", Role.AUDIENCE, 1, identity="carol-browser")
    assert stage.participants["c"].identity == "carol-browser"
    assert stage.participants[ALICE].identity == ALICE


def test_a_banned_identity_is_refused_whatever_its_connection_name_or_role() -> None:
    stage = populated()
    stage.join("c", "Carol", Role.AUDIENCE, 1, identity="carol")
    stage.ban(MOD, "c", "abusive", 2)
    for pid, role in [("c", Role.AUDIENCE), ("c2", Role.SPEAKER), ("c3", Role.MODERATOR)]:
        refused(stage, Banned, stage.join, pid, "Someone", role, 3, "carol")
    assert types(stage.join("c", "Carol", Role.AUDIENCE, 4, identity="other")) == ["participant.joined"]


def test_a_ban_is_reported_before_a_lock() -> None:
    stage = populated()
    stage.ban(MOD, BOB, "", 1)
    stage.lock(MOD, True, 2)
    refused(stage, Banned, lambda: stage.join("b2", "Bob", Role.AUDIENCE, 3, identity=BOB))


def test_joining_is_logged_with_the_next_seq() -> None:
    stage = populated()
    seq = stage.log.last_seq
    assert stage.join("c", "Carol", Role.AUDIENCE, 1) == [
        ParticipantJoined(stage="s1", at=1, seq=seq + 1, participant="c")
    ]
