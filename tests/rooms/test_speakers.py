"""Getting on and off the stage: hands, invitations, demotion, roles, and the moderator's mute."""

from __future__ import annotations

import pytest

from rooms.errors import (
    HandNotRaised,
    InvalidMessage,
    ModeratorMuted,
    NotAllowed,
    NotInvited,
    NotPublishing,
    UnknownParticipant,
)
from rooms.events import Audience, HandsUpdated, Invitation, InvitationAnswered, ParticipantUpdated
from rooms.roles import Role
from rooms.stage import Stage
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, last, populated, refused, types


def roles(stage: Stage) -> dict[str, Role]:
    return {pid: p.role for pid, p in stage.participants.items()}


# --- hands -------------------------------------------------------------------------------------------


def test_hands_queue_in_the_order_they_went_up() -> None:
    stage = populated()
    assert types(stage.raise_hand(BOB, 1)) == ["hands.updated", "participant.updated"]
    stage.raise_hand(ALICE, 2)
    assert last(stage, HandsUpdated).hands == (BOB, ALICE)
    assert stage.participants[BOB].snapshot()["hand_raised"] is True
    assert stage.snapshot_for(HOST)["hands"] == [BOB, ALICE]


def test_raising_a_raised_hand_changes_nothing() -> None:
    stage = populated()
    stage.raise_hand(BOB, 1)
    stage.raise_hand(ALICE, 2)
    assert stage.raise_hand(BOB, 3) == []
    assert stage.hands.queue() == (BOB, ALICE)


def test_a_person_lowers_their_own_hand_and_a_moderator_anyones() -> None:
    stage = populated()
    stage.raise_hand(BOB, 1)
    stage.raise_hand(ALICE, 1)
    assert types(stage.lower_hand(BOB, None, 2)) == ["hands.updated", "participant.updated"]
    stage.lower_hand(MOD, ALICE, 3)
    assert stage.hands.queue() == ()
    assert not stage.participants[ALICE].hand_raised


def test_lowering_a_hand_that_is_not_raised_is_refused() -> None:
    stage = populated()
    refused(stage, HandNotRaised, lambda: stage.lower_hand(BOB, None, 1))
    refused(stage, HandNotRaised, lambda: stage.lower_hand(MOD, ALICE, 1))
    refused(stage, HandNotRaised, lambda: stage.lower_hand(BOB, BOB, 1))


def test_audience_may_not_lower_someone_elses_hand() -> None:
    stage = populated()
    stage.raise_hand(BOB, 1)
    refused(stage, NotAllowed, lambda: stage.lower_hand(ALICE, BOB, 2))


def test_only_the_audience_raises_hands() -> None:
    stage = populated()
    for pid in (HOST, MOD, SPEAKER):
        refused(stage, NotAllowed, stage.raise_hand, pid, 1)


def test_an_unknown_participant_is_not_found() -> None:
    stage = populated()
    error = refused(stage, UnknownParticipant, lambda: stage.lower_hand(MOD, "ghost", 1))
    assert error.code == "not_found"
    refused(stage, UnknownParticipant, lambda: stage.raise_hand("ghost", 1))


# --- invitations -------------------------------------------------------------------------------------


def test_a_moderator_invites_a_raised_hand_who_accepts_and_becomes_a_speaker() -> None:
    stage = populated()
    stage.raise_hand(BOB, 1)
    (_audit, invited) = stage.invite(MOD, BOB, 2)
    assert isinstance(invited, Invitation) and (invited.participant_id, invited.by) == (BOB, MOD)
    assert invited.by_name == "Dr Mod"
    assert invited.audience() == Audience(moderators=True, persons=frozenset({BOB}))
    events = stage.accept_invitation(BOB, 3)
    assert types(events) == ["invitation.answered", "hands.updated", "participant.updated"]
    assert events[0] == InvitationAnswered(
        stage="s1", at=3, seq=events[0].seq, participant_id=BOB, accepted=True
    )
    assert stage.participants[BOB].role is Role.SPEAKER and not stage.participants[BOB].hand_raised
    assert stage.hands.queue() == ()
    assert types(stage.start_publishing(BOB, ("audio",), 4)) == ["publishing.started"]


def test_any_audience_member_may_be_invited_without_a_raised_hand() -> None:
    stage = populated()
    stage.invite(HOST, ALICE, 1)
    assert types(stage.accept_invitation(ALICE, 2)) == ["invitation.answered", "participant.updated"]
    assert stage.participants[ALICE].role is Role.SPEAKER


def test_declining_keeps_the_person_in_the_audience() -> None:
    stage = populated()
    stage.invite(MOD, ALICE, 1)
    assert stage.snapshot_for(ALICE)["invitation"] == {
        "participant_id": ALICE,
        "by": MOD,
        "by_name": "Dr Mod",
        "at": 1,
    }
    (answered,) = stage.decline_invitation(ALICE, 2)
    assert isinstance(answered, InvitationAnswered) and not answered.accepted
    assert stage.participants[ALICE].role is Role.AUDIENCE
    assert stage.snapshot_for(ALICE)["invitation"] is None
    refused(stage, NotInvited, lambda: stage.accept_invitation(ALICE, 3))


def test_answering_without_an_invitation_is_refused() -> None:
    stage = populated()
    stage.invite(MOD, BOB, 1)
    for pid in (ALICE, SPEAKER, MOD):
        refused(stage, NotInvited, stage.accept_invitation, pid, 2)
        refused(stage, NotInvited, stage.decline_invitation, pid, 2)


def test_only_audience_members_are_invited() -> None:
    stage = populated()
    for pid in (HOST, MOD, SPEAKER):
        refused(stage, NotAllowed, stage.invite, MOD, pid, 1)
    refused(stage, UnknownParticipant, lambda: stage.invite(MOD, "ghost", 1))


def test_leaving_clears_a_pending_invitation_and_tells_the_moderators() -> None:
    stage = populated()
    stage.raise_hand(BOB, 1)
    stage.invite(MOD, BOB, 1)
    assert types(stage.leave(BOB, 2)) == ["hands.updated", "invitation.answered", "participant.left"]
    assert stage.invitations.get(BOB) is None
    stage.join(BOB, "Bob", Role.AUDIENCE, 3)
    refused(stage, NotInvited, lambda: stage.accept_invitation(BOB, 4))


def test_moderators_see_no_invitation_of_their_own_in_the_snapshot() -> None:
    stage = populated()
    stage.invite(MOD, BOB, 1)
    assert stage.snapshot_for(MOD)["invitation"] is None
    assert stage.snapshot_for(ALICE)["invitation"] is None


# --- demotion ----------------------------------------------------------------------------------------


def test_moving_a_publishing_speaker_to_the_audience_stops_their_media_first() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, ("audio", "video"), 1)
    stage.set_muted(SPEAKER, "video", True, 1)
    events = stage.move_to_audience(MOD, SPEAKER, 2)
    assert types(events) == ["moderation.audit", "publishing.stopped", "participant.updated"]
    person = stage.participants[SPEAKER]
    assert person.role is Role.AUDIENCE and not person.publishing and not person.muted
    refused(stage, NotAllowed, lambda: stage.start_publishing(SPEAKER, ("audio",), 3))


def test_a_silent_speaker_moved_to_the_audience_emits_only_the_update() -> None:
    stage = populated()
    assert types(stage.move_to_audience(HOST, SPEAKER, 1)) == ["moderation.audit", "participant.updated"]


def test_only_speakers_are_moved_to_the_audience() -> None:
    stage = populated()
    for pid in (HOST, MOD, ALICE):
        refused(stage, NotAllowed, stage.move_to_audience, MOD, pid, 1)


# --- role.set ----------------------------------------------------------------------------------------


def test_the_host_makes_an_audience_member_moderator_and_back() -> None:
    stage = populated()
    stage.raise_hand(BOB, 1)
    stage.invite(MOD, BOB, 1)
    stage.chat_mute(MOD, BOB, True, 1)
    events = stage.set_role(HOST, BOB, Role.MODERATOR, 2)
    assert types(events) == [
        "moderation.audit",
        "hands.updated",
        "invitation.answered",
        "participant.updated",
    ]
    bob = stage.participants[BOB]
    assert (bob.role, bob.hand_raised, bob.chat_muted) == (Role.MODERATOR, False, False)
    assert stage.is_moderator(BOB)
    assert types(stage.set_role(HOST, BOB, Role.AUDIENCE, 3)) == ["moderation.audit", "participant.updated"]
    assert stage.participants[BOB].role == Role.AUDIENCE and not stage.is_moderator(BOB)


def test_setting_a_speaker_to_audience_is_a_demotion() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, ("audio",), 1)
    assert types(stage.set_role(HOST, SPEAKER, Role.AUDIENCE, 2)) == [
        "moderation.audit",
        "publishing.stopped",
        "participant.updated",
    ]
    assert stage.participants[SPEAKER].role is Role.AUDIENCE


def test_setting_the_current_role_changes_nothing() -> None:
    stage = populated()
    seq = stage.log.last_seq
    assert stage.set_role(HOST, MOD, Role.MODERATOR, 1) == []
    assert stage.log.last_seq == seq


@pytest.mark.parametrize(
    ("target", "role"),
    [
        (HOST, Role.AUDIENCE),  # the host stays host
        (BOB, Role.HOST),  # one host
        (BOB, Role.SPEAKER),  # speakers come through invitations
        (SPEAKER, Role.MODERATOR),  # a speaker goes to the audience first
    ],
)
def test_role_set_refuses_other_changes(target: str, role: Role) -> None:
    stage = populated()
    refused(stage, NotAllowed, lambda: stage.set_role(HOST, target, role, 1))


def test_one_role_per_person() -> None:
    stage = populated()
    stage.invite(MOD, BOB, 1)
    stage.accept_invitation(BOB, 2)
    stage.set_role(HOST, ALICE, Role.MODERATOR, 3)
    assert stage.participants[BOB].role is Role.SPEAKER
    assert sorted(map(str, (p.role for p in stage.participants.values()))) == [
        "host", "moderator", "moderator", "speaker", "speaker"
    ]  # fmt: skip


# --- moderator mute ----------------------------------------------------------------------------------


def test_a_moderator_mute_cannot_be_undone_by_the_speaker() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, ("audio", "video"), 1)
    (_audit, updated) = stage.moderator_mute(MOD, SPEAKER, "audio", True, 2)
    assert isinstance(updated, ParticipantUpdated) and updated.participant == SPEAKER
    snapshot = stage.participants[SPEAKER].snapshot()
    assert snapshot["moderator_muted"] == {"audio": True, "video": False}
    error = refused(stage, ModeratorMuted, lambda: stage.set_muted(SPEAKER, "audio", False, 3))
    assert error.code == "moderator_muted"
    stage.set_muted(SPEAKER, "audio", True, 4)  # muting oneself as well is fine
    stage.set_muted(SPEAKER, "video", False, 4)  # the other kind is untouched
    stage.moderator_mute(HOST, SPEAKER, "audio", False, 5)
    stage.set_muted(SPEAKER, "audio", False, 6)
    assert stage.participants[SPEAKER].snapshot()["muted"] == {"audio": False, "video": False}


def test_a_moderator_mute_survives_republishing_and_lapses_with_demotion() -> None:
    stage = populated()
    stage.moderator_mute(MOD, SPEAKER, "video", True, 1)  # before publishing: holds from the start
    stage.start_publishing(SPEAKER, ("video",), 2)
    stage.stop_publishing(SPEAKER, 3)
    stage.start_publishing(SPEAKER, ("video",), 4)
    refused(stage, ModeratorMuted, lambda: stage.set_muted(SPEAKER, "video", False, 5))
    stage.move_to_audience(MOD, SPEAKER, 6)
    assert stage.participants[SPEAKER].moderator_muted == set()


def test_moderator_mute_is_for_speakers_and_known_kinds() -> None:
    stage = populated()
    for pid in (HOST, MOD, ALICE):
        refused(stage, NotAllowed, stage.moderator_mute, MOD, pid, "audio", True, 1)
    refused(stage, InvalidMessage, lambda: stage.moderator_mute(MOD, SPEAKER, "screen", True, 1))


def test_own_mute_still_needs_a_publication() -> None:
    stage = populated()
    stage.moderator_mute(MOD, SPEAKER, "audio", True, 1)
    refused(stage, NotPublishing, lambda: stage.set_muted(SPEAKER, "audio", False, 2))


def test_publishing_refuses_unknown_or_no_kinds() -> None:
    stage = populated()
    refused(stage, InvalidMessage, lambda: stage.start_publishing(SPEAKER, (), 1))
    refused(stage, InvalidMessage, lambda: stage.start_publishing(SPEAKER, ("audio", "screen"), 1))
