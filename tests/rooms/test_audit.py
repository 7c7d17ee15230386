"""The audit trail: every moderator action leaves exactly one ``moderation.audit`` record, in the batch
of its effects; a refused or idle command leaves none. And the consoles it serves: observers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from rooms import durable
from rooms.audit import ACTIONS, record, trail
from rooms.errors import Banned, NotAllowed, StageEnded
from rooms.events import MODERATORS, Event, ModerationAudit, ObserverJoined, ObserverLeft, decode_event
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage, StageState
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused, types

CAROL = "c"  # an audience member with an explicit identity, "carol"
POLL = PollSpec(question="Best?", options=("A", "B"))


def stage_for_audits(state: StageState = StageState.LIVE) -> Stage:
    """``populated`` plus Carol (audience, identity "carol", hand raised, one comment "c1"), Alice's
    comment "c2", a question "q1", a draft poll "p1", an open poll "p2", and a publishing speaker."""
    stage = populated(state=state, recording_mode="manual")
    stage.join(CAROL, "Carol", Role.AUDIENCE, 0.0, identity="carol")
    if state is StageState.LIVE:
        stage.start_publishing(SPEAKER, ("audio",), 0.0)
    stage.raise_hand(CAROL, 0.0)
    stage.post_comment(CAROL, "c1", "hello", 0.0)
    stage.post_comment(ALICE, "c2", "hi", 0.0)
    stage.ask_question(ALICE, "q1", "why?", 0.0)
    stage.create_poll(HOST, "p1", POLL, 0.0)
    stage.create_poll(HOST, "p2", POLL, 0.0)
    stage.open_poll(HOST, "p2", 0.0)
    return stage


@dataclass
class Case:
    action: str
    command: Callable[[Stage], list[Event]]
    actor: str = MOD
    target: str | None = None
    person: tuple[str, str] | None = None  # (identity, name) of a targeted person
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    state: StageState = StageState.LIVE


CASES = [
    Case("stage.start", lambda s: s.start(HOST, 5.0), HOST, state=StageState.SCHEDULED),
    Case("stage.end", lambda s: s.end(HOST, 5.0), HOST),
    Case("stage.lock", lambda s: s.lock(MOD, True, 5.0), details={"locked": True}),
    Case("role.set", lambda s: s.set_role(HOST, CAROL, Role.MODERATOR, 5.0), HOST, CAROL, ("carol", "Carol"),
         details={"role": "moderator"}),
    Case("role.set", lambda s: s.set_role(HOST, SPEAKER, Role.AUDIENCE, 5.0), HOST, SPEAKER,
         (SPEAKER, "Dr Speaker"), details={"role": "audience"}),
    Case("speaker.invite", lambda s: s.invite(MOD, CAROL, 5.0), target=CAROL, person=("carol", "Carol")),
    Case("speaker.demote", lambda s: s.move_to_audience(MOD, SPEAKER, 5.0), target=SPEAKER,
         person=(SPEAKER, "Dr Speaker")),
    Case("hand.lower", lambda s: s.lower_hand(MOD, CAROL, 5.0), target=CAROL, person=("carol", "Carol")),
    Case("moderation.mute", lambda s: s.moderator_mute(MOD, SPEAKER, "audio", True, 5.0), target=SPEAKER,
         person=(SPEAKER, "Dr Speaker"), details={"kind": "audio", "muted": True}),
    Case("moderation.remove", lambda s: s.remove(MOD, CAROL, "off topic", 5.0), target=CAROL,
         person=("carol", "Carol"), reason="off topic"),
    Case("moderation.ban", lambda s: s.ban(HOST, CAROL, "abuse", 5.0), HOST, CAROL, ("carol", "Carol"),
         reason="abuse"),
    Case("moderation.ban", lambda s: s.ban(MOD, BOB, "", 5.0), target=BOB, person=(BOB, "Bob")),
    Case("chat.mute", lambda s: s.chat_mute(MOD, CAROL, True, 5.0), target=CAROL, person=("carol", "Carol"),
         details={"muted": True}),
    Case("chat.slow_mode", lambda s: s.set_slow_mode(MOD, 30, 5.0), details={"seconds": 30}),
    Case("comment.delete", lambda s: s.delete_comment(MOD, "c1", 5.0), target="c1"),
    Case("comment.pin", lambda s: s.pin_comment(MOD, "c2", 5.0), target="c2"),
    Case("question.answer", lambda s: s.answer_question(MOD, "q1", 5.0), target="q1"),
    Case("question.dismiss", lambda s: s.dismiss_question(HOST, "q1", 5.0), HOST, "q1"),
    Case("poll.create", lambda s: s.create_poll(MOD, "p9", POLL, 5.0), target="p9",
         details={"question": "Best?"}),
    Case("poll.open", lambda s: s.open_poll(MOD, "p1", 5.0), target="p1"),
    Case("poll.close", lambda s: s.close_poll(MOD, "p2", 5.0), target="p2"),
    Case("recording.start", lambda s: s.start_recording(MOD, "rec-1", 5.0), target="rec-1"),
]  # fmt: skip


def actor_name(pid: str) -> str:
    return {HOST: "Dr Host", MOD: "Dr Mod"}[pid]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.action)
def test_each_moderator_action_leaves_exactly_one_audit_record_before_its_effects(case: Case) -> None:
    stage = stage_for_audits(case.state)
    before = stage.log.last_seq
    events = case.command(stage)
    records = trail(events)
    assert len(records) == 1 and events[0] is records[0], types(events)
    assert len(events) > 1, "the effects are in the same batch"
    assert [e.seq for e in events] == list(range(before + 1, before + 1 + len(events)))
    identity, name = case.person or (None, None)
    assert records[0] == ModerationAudit(
        stage="s1",
        at=5.0,
        seq=before + 1,
        actor=case.actor,
        actor_identity=case.actor,  # populated() gives no explicit identities
        actor_name=actor_name(case.actor),
        action=case.action,
        target=case.target,
        target_identity=identity,
        target_name=name,
        reason=case.reason,
        details=case.details,
    )
    assert records[0].audience() == MODERATORS
    assert trail(e for e in stage.log.events if e.seq > before) == records, "it is in the stage's log"


def test_stopping_a_recording_is_audited_with_its_session() -> None:
    stage = stage_for_audits()
    stage.start_recording(HOST, "rec-1", 1.0)
    events = stage.stop_recording(MOD, 2.0)
    assert types(events) == ["moderation.audit", "recording.stopped"]
    assert (events[0].action, events[0].target) == ("recording.stop", "rec-1")  # type: ignore[attr-defined]


def test_unpinning_is_audited_with_a_null_target() -> None:
    stage = stage_for_audits()
    stage.pin_comment(MOD, "c2", 1.0)
    (record_, _unpinned) = stage.pin_comment(MOD, None, 2.0)
    assert isinstance(record_, ModerationAudit) and (record_.action, record_.target) == ("comment.pin", None)


def test_a_ban_of_several_connections_is_one_record() -> None:
    stage = stage_for_audits()
    stage.join("c-phone", "Carol (phone)", Role.AUDIENCE, 1.0, identity="carol")
    events = stage.ban(MOD, CAROL, "", 2.0)
    assert types(events).count("participant.removed") == 2 and len(trail(events)) == 1


@pytest.mark.parametrize(
    ("error", "command"),
    [
        (NotAllowed, lambda s: s.remove(ALICE, BOB, "", 5.0)),  # audience may not moderate
        (NotAllowed, lambda s: s.ban(MOD, HOST, "", 5.0)),  # nor may a moderator ban the host
        (NotAllowed, lambda s: s.set_role(MOD, CAROL, Role.MODERATOR, 5.0)),  # host only
        (NotAllowed, lambda s: s.end(MOD, 5.0)),
        (NotAllowed, lambda s: s.delete_comment(BOB, "c1", 5.0)),
        (NotAllowed, lambda s: s.moderator_mute(MOD, ALICE, "audio", True, 5.0)),  # not a speaker
        (NotAllowed, lambda s: s.set_slow_mode(SPEAKER, 10, 5.0)),
        (NotAllowed, lambda s: s.lower_hand(ALICE, CAROL, 5.0)),
    ],
)
def test_a_refused_command_leaves_no_record(
    error: type[NotAllowed], command: Callable[[Stage], object]
) -> None:
    stage = stage_for_audits()
    seq = stage.log.last_seq
    refused(stage, error, command, stage)  # the stage, its log included, is as it was
    assert stage.log.last_seq == seq


def test_acting_on_ones_own_things_and_repeating_a_command_leave_no_record() -> None:
    stage = stage_for_audits()
    seq = stage.log.last_seq
    assert trail(stage.delete_comment(CAROL, "c1", 1.0)) == []  # her own comment
    assert trail(stage.lower_hand(CAROL, None, 1.0)) == []  # her own hand
    stage.answer_question(MOD, "q1", 2.0)
    assert stage.answer_question(MOD, "q1", 3.0) == []  # already answered: nothing happens
    assert stage.set_role(HOST, MOD, Role.MODERATOR, 3.0) == []
    assert [r.action for r in trail(e for e in stage.log.events if e.seq > seq)] == ["question.answer"]


def test_the_platform_ending_a_stage_is_not_a_moderator_action() -> None:
    stage = stage_for_audits()
    assert trail(stage.end(None, 1.0)) == []


def test_an_audit_record_survives_the_wire_and_the_shared_log() -> None:
    stage = stage_for_audits()
    (audit_record, *_) = stage.remove(MOD, CAROL, "spam", 1.0)
    wire = msgspec.to_builtins(audit_record)
    assert wire == {
        "type": "moderation.audit",
        "stage_id": "s1",
        "at": 1.0,
        "seq": audit_record.seq,
        "actor": MOD,
        "actor_identity": MOD,
        "actor_name": "Dr Mod",
        "action": "moderation.remove",
        "target": CAROL,
        "target_identity": "carol",
        "target_name": "Carol",
        "reason": "spam",
        "details": {},
    }
    assert decode_event(msgspec.json.encode(audit_record)) == audit_record


def test_only_moderator_actions_are_recorded() -> None:
    stage = populated()
    with pytest.raises(ValueError):
        record("s1", stage.get(MOD), "comment.post", 1.0)
    assert "moderation.ban" in ACTIONS and "poll.vote" not in ACTIONS


# --- observers (moderator consoles) --------------------------------------------------------------


def test_an_observer_is_not_on_the_stage_and_only_moderators_hear_of_it() -> None:
    stage = populated()
    events = stage.join("o", "Console: Dr Mod", Role.MODERATOR, 1.0, identity="mod-id", observer=True)
    assert events == [
        ObserverJoined(stage="s1", at=1.0, seq=events[0].seq, participant_id="o", name="Console: Dr Mod",
                       role="moderator")
    ]  # fmt: skip
    assert events[0].audience() == MODERATORS
    assert "o" not in stage.participants and stage.observers["o"].observer
    assert stage.is_moderator("o") and stage.get("o").snapshot()["observer"] is True
    assert "observer" not in stage.get(ALICE).snapshot()
    summary: Any = stage.snapshot_for(HOST)["consent"]
    assert summary["summary"]["none"] == 5, "the console is nobody whose consent counts"
    (left,) = stage.leave("o", 2.0)
    assert left == ObserverLeft(stage="s1", at=2.0, seq=left.seq, participant_id="o")
    assert left.audience() == MODERATORS and not stage.observers
    assert stage.remembered.role_for("mod-id", Role.AUDIENCE, host_present=True) is Role.AUDIENCE


def test_an_observer_moderates_and_its_records_name_it() -> None:
    stage = populated()
    stage.join("o", "Console", Role.MODERATOR, 1.0, identity="mod-id", observer=True)
    (audit_record, *_) = stage.remove("o", BOB, "", 2.0)
    assert isinstance(audit_record, ModerationAudit)
    assert (audit_record.actor, audit_record.actor_identity) == ("o", "mod-id")
    assert audit_record.actor_name == "Console"


def test_a_host_console_sits_beside_the_present_host_and_a_locked_stage_admits_it() -> None:
    stage = populated()
    stage.lock(HOST, True, 1.0)
    stage.join("o", "Console", Role.HOST, 2.0, identity=HOST, observer=True)
    host = stage.host
    assert host is not None and host.id == HOST
    assert types(stage.end("o", 3.0))[0] == "moderation.audit", "with the host's powers"


def test_an_observer_never_publishes_nor_gets_a_role_from_the_stage() -> None:
    stage = populated()
    stage.join("o", "Console", Role.HOST, 1.0, observer=True)
    refused(stage, NotAllowed, stage.check_may_publish, "o")
    refused(stage, NotAllowed, stage.set_role, HOST, "o", Role.AUDIENCE, 2.0)
    refused(stage, NotAllowed, stage.remove, MOD, "o", "", 2.0)


def test_only_the_host_or_a_moderator_may_observe_and_bans_and_the_end_still_hold() -> None:
    stage = populated()
    refused(stage, NotAllowed, stage.join, "o", "Console", Role.AUDIENCE, 1.0, None, None, True)
    refused(stage, NotAllowed, stage.join, "o", "Console", Role.SPEAKER, 1.0, None, None, True)
    refused(stage, NotAllowed, stage.join, BOB, "Console", Role.MODERATOR, 1.0, None, None, True)  # id taken
    stage.ban(MOD, BOB, "", 1.0)
    refused(stage, Banned, stage.join, "o", "Console", Role.MODERATOR, 2.0, BOB, None, True)
    stage.end(HOST, 3.0)
    refused(stage, StageEnded, stage.join, "o", "Console", Role.MODERATOR, 4.0, None, None, True)


def test_a_stage_saved_with_an_observer_comes_back_without_it() -> None:
    stage = populated()
    stage.join("o", "Console", Role.MODERATOR, 1.0, identity="mod-id", observer=True)
    restored = durable.restore(durable.durable_state(stage), last_seq=stage.log.last_seq, now=2.0)
    assert not restored.observers and "mod-id" not in restored.remembered.people
