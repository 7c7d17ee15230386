"""Remove (may rejoin), ban (the identity never rejoins) and chat mute."""

from __future__ import annotations

from rooms.errors import Banned, ChatMuted, NotAllowed, UnknownParticipant
from rooms.events import Audience, ParticipantLeft, ParticipantRemoved, ParticipantUpdated
from rooms.roles import Role
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused, types


def test_removing_takes_the_person_off_and_tells_them_and_everyone() -> None:
    stage = populated()
    events = stage.remove(MOD, BOB, "off topic", 1)
    assert types(events) == ["moderation.audit", "participant.removed", "participant.left"]
    _audit, removed, left = events
    assert removed == ParticipantRemoved(
        stage="s1", at=1, seq=removed.seq, participant_id=BOB, banned=False, reason="off topic", by=MOD
    )
    assert removed.audience() == Audience(everyone=True, persons=frozenset({BOB}))
    assert left == ParticipantLeft(stage="s1", at=1, seq=removed.seq + 1, participant=BOB)
    assert BOB not in stage.participants and not stage.banned_identities


def test_a_removed_person_may_rejoin() -> None:
    stage = populated()
    stage.remove(MOD, BOB, "", 1)
    assert types(stage.join(BOB, "Bob", Role.AUDIENCE, 2)) == ["participant.joined"]


def test_removing_a_publishing_speaker_with_a_raised_hand_cleans_up_first() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, ("audio",), 1)
    stage.raise_hand(BOB, 1)
    assert types(stage.remove(HOST, SPEAKER, "", 2)) == [
        "moderation.audit",
        "participant.removed",
        "publishing.stopped",
        "participant.left",
    ]
    assert types(stage.remove(HOST, BOB, "", 3)) == [
        "moderation.audit",
        "participant.removed",
        "hands.updated",
        "participant.left",
    ]
    assert stage.hands.queue() == ()


def test_a_ban_records_the_identity_and_refuses_it_for_good() -> None:
    stage = populated()
    stage.join("c", "Carol", Role.AUDIENCE, 1, identity="carol")
    events = stage.ban(MOD, "c", "abusive", 2)
    assert types(events) == ["moderation.audit", "participant.removed", "participant.left"]
    assert isinstance(events[1], ParticipantRemoved) and events[1].banned and events[1].reason == "abusive"
    assert stage.banned_identities == {"carol"}
    refused(stage, Banned, lambda: stage.join("c", "Carol", Role.AUDIENCE, 3, identity="carol"))
    refused(stage, Banned, lambda: stage.join("c9", "Not Carol", Role.HOST, 3, identity="carol"))


def test_a_ban_takes_every_connection_of_that_identity() -> None:
    stage = populated()
    stage.join("c1", "Carol", Role.AUDIENCE, 1, identity="carol")
    stage.join("c2", "Carol (phone)", Role.AUDIENCE, 1, identity="carol")
    events = stage.ban(MOD, "c2", "", 2)
    assert types(events) == ["moderation.audit"] + ["participant.removed", "participant.left"] * 2
    assert {e.participant_id for e in events if isinstance(e, ParticipantRemoved)} == {"c1", "c2"}
    assert not any(p.identity == "carol" for p in stage.participants.values())


def test_a_ban_is_refused_if_the_identity_is_also_a_moderator() -> None:
    stage = populated()
    stage.join("c1", "Carol", Role.AUDIENCE, 1, identity=MOD)
    refused(stage, NotAllowed, lambda: stage.ban(HOST, "c1", "", 2))
    stage.remove(HOST, "c1", "", 2)  # removing that one connection is fine


def test_the_host_and_moderators_may_not_be_removed_or_banned() -> None:
    stage = populated()
    stage.set_role(HOST, ALICE, Role.MODERATOR, 1)
    for target in (HOST, MOD, ALICE):
        refused(stage, NotAllowed, stage.remove, MOD, target, "", 2)
        refused(stage, NotAllowed, stage.ban, MOD, target, "", 2)
    stage.set_role(HOST, ALICE, Role.AUDIENCE, 3)
    stage.ban(MOD, ALICE, "", 4)


def test_removing_someone_absent_is_not_found() -> None:
    stage = populated()
    refused(stage, UnknownParticipant, lambda: stage.remove(MOD, "ghost", "", 1))
    refused(stage, UnknownParticipant, lambda: stage.ban(MOD, "ghost", "", 1))


def test_a_chat_muted_person_may_not_comment_ask_or_react_until_unmuted() -> None:
    stage = populated()
    (_audit, updated) = stage.chat_mute(MOD, BOB, True, 1)
    assert (
        isinstance(updated, ParticipantUpdated) and stage.participants[BOB].snapshot()["chat_muted"] is True
    )
    refused(stage, ChatMuted, lambda: stage.post_comment(BOB, "c", "hi", 2))
    refused(stage, ChatMuted, lambda: stage.ask_question(BOB, "q", "why?", 2))
    refused(stage, ChatMuted, lambda: stage.react(BOB, "👏", 2))
    stage.ask_question(ALICE, "q1", "how?", 2)
    stage.upvote_question(BOB, "q1", 2)  # upvoting is not chatting
    stage.chat_mute(HOST, BOB, False, 3)
    assert types(stage.post_comment(BOB, "c", "hi", 4)) == ["comment.posted"]


def test_moderators_and_the_host_are_not_subject_to_chat_mutes() -> None:
    stage = populated()
    for target in (HOST, MOD):
        refused(stage, NotAllowed, stage.chat_mute, MOD, target, True, 1)
    stage.chat_mute(MOD, SPEAKER, True, 1)
    refused(stage, ChatMuted, lambda: stage.post_comment(SPEAKER, "c", "hi", 2))
