"""Consent to recording and the recording switch: every rule, and every refusal leaves the stage as it was."""

from __future__ import annotations

import msgspec
import pytest

from rooms.consent import ConsentRecord, ConsentState
from rooms.errors import (
    AlreadyRecording,
    ConsentRequired,
    InvalidMessage,
    NoConsent,
    NotAllowed,
    NotRecording,
    PolicyMismatch,
    StageEnded,
    StageNotLive,
    UnknownParticipant,
)
from rooms.events import (
    Audience,
    ConsentRecorded,
    ConsentRequested,
    RecordingStarted,
    RecordingStopped,
    decode_event,
)
from rooms.roles import Role
from rooms.stage import Stage, StageSettings, StageState
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, last, populated, refused, types
from tests.rooms.test_events import protocol_stage_events

POLICY = "2026-11"
MEDIA, COMMENTS, SHARE = frozenset({"media"}), frozenset({"comments"}), frozenset({"share"})
ALL = MEDIA | COMMENTS | SHARE
NONE: frozenset[str] = frozenset()


def recording_stage(mode: str = "manual", **overrides: object) -> Stage:
    return populated(recording_mode=mode, **overrides)


def give(
    stage: Stage, actor: str, scopes: frozenset[str], now: float = 1.0, method: str = "join_prompt"
) -> ConsentRecord:
    record_id = f"cr-{len(stage.consent.record_ids) + 1}"
    (event,) = stage.give_consent(actor, scopes, POLICY, method, now, record_id)
    assert isinstance(event, ConsentRecorded)
    return event.record


# --- settings ----------------------------------------------------------------------------------------


def test_stages_do_not_record_by_default_and_name_the_policy_version() -> None:
    settings = StageSettings()
    assert settings.recording_mode == "off"
    assert settings.consent_policy_version == POLICY
    assert settings.speaking_requires_consent is False


@pytest.mark.parametrize("overrides", [{"recording_mode": "sometimes"}, {"consent_policy_version": ""}])
def test_bad_recording_settings_fail_when_the_stage_is_configured(overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        StageSettings(**overrides)  # type: ignore[arg-type]


# --- giving consent ----------------------------------------------------------------------------------


def test_a_decision_is_a_record_about_the_actor_for_them_and_the_moderators() -> None:
    stage = recording_stage()
    stage.participants[ALICE].identity = "alice@example"
    events = stage.give_consent(ALICE, frozenset({"share", "media"}), POLICY, "join_prompt", 3.0, "cr-1")
    assert types(events) == ["consent.recorded"] and stage.log.events[-1:] == events
    assert events[0].record == ConsentRecord(
        record_id="cr-1",
        stage_id="s1",
        session_id=None,
        participant_id=ALICE,
        identity="alice@example",
        name="Alice",
        scopes=("media", "share"),
        policy_version=POLICY,
        decision="granted",
        at=3.0,
        method="join_prompt",
    )
    assert events[0].audience() == Audience(moderators=True, persons=frozenset({ALICE}))
    assert stage.consent_of(ALICE) == ConsentState(
        scopes=frozenset({"media", "share"}),
        policy_version=POLICY,
        decision="granted",
        at=3.0,
        method="join_prompt",
        record=events[0].record,
    )
    assert stage.consent_of(ALICE).record_id == "cr-1"  # type: ignore[union-attr]
    assert (
        stage.covers(ALICE, "media") and stage.covers(ALICE, "share") and not stage.covers(ALICE, "comments")
    )


@pytest.mark.parametrize("actor", [HOST, MOD, SPEAKER, ALICE])
def test_every_role_decides_for_itself(actor: str) -> None:
    stage = recording_stage()
    assert give(stage, actor, MEDIA).participant_id == actor
    assert [pid for pid in (HOST, MOD, SPEAKER, ALICE, BOB) if stage.covers(pid, "media")] == [actor]


def test_no_scope_is_declined_and_covers_nothing() -> None:
    stage = recording_stage()
    record = give(stage, BOB, NONE)
    assert (record.decision, record.scopes) == ("declined", ())
    assert not any(stage.covers(BOB, scope) for scope in ("media", "comments", "share"))


def test_decisions_are_granted_changed_declined_and_granted_again() -> None:
    stage = recording_stage()
    assert give(stage, ALICE, MEDIA).decision == "granted"
    assert give(stage, ALICE, MEDIA | COMMENTS).decision == "changed"
    assert give(stage, ALICE, MEDIA | COMMENTS).decision == "granted"  # the same answer again is evidence too
    assert give(stage, ALICE, NONE).decision == "declined"
    assert give(stage, ALICE, SHARE).decision == "granted"
    assert stage.consent_of(ALICE).scopes == SHARE  # type: ignore[union-attr]
    assert len([e for e in stage.log.events if isinstance(e, ConsentRecorded)]) == 5


@pytest.mark.parametrize("method", ["join_prompt", "recording_prompt", "settings", "invitation"])
def test_the_record_says_how_the_decision_was_given(method: str) -> None:
    stage = recording_stage()
    assert give(stage, ALICE, MEDIA, method=method).method == method


@pytest.mark.parametrize("scopes", [frozenset({"media", "camera"}), frozenset({"MEDIA"}), frozenset({""})])
def test_an_unknown_scope_is_an_invalid_message(scopes: frozenset[str]) -> None:
    stage = recording_stage()
    error = refused(stage, InvalidMessage, stage.give_consent, ALICE, scopes, POLICY, "settings", 1.0, "cr-1")
    assert error.code == "invalid_message"


@pytest.mark.parametrize("method", ["withdrawal", "email", ""])
def test_an_unknown_method_or_a_withdrawal_disguised_as_a_decision_is_refused(method: str) -> None:
    stage = recording_stage()
    refused(stage, InvalidMessage, stage.give_consent, ALICE, MEDIA, POLICY, method, 1.0, "cr-1")


@pytest.mark.parametrize("version", ["2025-01", "", "2026-11 "])
def test_a_decision_under_another_policy_version_is_refused(version: str) -> None:
    stage = recording_stage()
    give(stage, ALICE, COMMENTS)
    error = refused(stage, PolicyMismatch, stage.give_consent, ALICE, MEDIA, version, "settings", 2.0, "cr-9")
    assert error.code == "policy_mismatch" and POLICY in error.message
    assert stage.consent_of(ALICE).scopes == COMMENTS  # type: ignore[union-attr]


def test_the_stage_names_its_own_policy_version() -> None:
    stage = recording_stage(consent_policy_version="2027-02")
    refused(stage, PolicyMismatch, stage.give_consent, ALICE, MEDIA, POLICY, "settings", 1.0, "cr-1")
    stage.give_consent(ALICE, MEDIA, "2027-02", "settings", 1.0, "cr-1")
    assert stage.covers(ALICE, "media")
    assert stage.snapshot_for(ALICE)["consent"]["policy_version"] == "2027-02"  # type: ignore[index]


@pytest.mark.parametrize("record_id", ["cr-1", ""])
def test_a_record_id_is_never_empty_nor_reused(record_id: str) -> None:
    stage = recording_stage()
    stage.give_consent(BOB, MEDIA, POLICY, "settings", 1.0, "cr-1")
    refused(stage, InvalidMessage, stage.give_consent, ALICE, MEDIA, POLICY, "settings", 2.0, record_id)
    refused(stage, InvalidMessage, stage.withdraw_consent, BOB, 2.0, record_id)


def test_someone_not_on_the_stage_or_an_ended_stage_records_nothing() -> None:
    stage = recording_stage()
    error = refused(
        stage, UnknownParticipant, stage.give_consent, "ghost", MEDIA, POLICY, "settings", 1.0, "x"
    )
    assert error.code == "not_found"
    give(stage, ALICE, MEDIA)
    stage.end(HOST, 2.0)
    refused(stage, StageEnded, stage.give_consent, BOB, MEDIA, POLICY, "settings", 3.0, "cr-9")
    refused(stage, StageEnded, stage.withdraw_consent, ALICE, 3.0, "cr-9")


def test_consent_is_per_identity_so_a_reconnect_keeps_it() -> None:
    stage = recording_stage()
    stage.join("a2", "Alice (tab 2)", Role.AUDIENCE, 0.0, identity=ALICE)
    give(stage, ALICE, MEDIA)
    assert stage.covers("a2", "media")
    stage.leave(ALICE, 2.0)
    stage.leave("a2", 2.0)
    stage.join("a3", "Alice again", Role.AUDIENCE, 3.0, identity=ALICE)
    assert stage.covers("a3", "media") and stage.consent_of("a3") is not None
    stage.join("z", "Zed", Role.AUDIENCE, 3.0, identity="someone else")
    assert not stage.covers("z", "media") and stage.consent_of("z") is None
    # A record names the connection that made it; the identity ties the person's connections together.
    withdrawn = stage.withdraw_consent("a3", 4.0, "cr-9")[0].record  # type: ignore[attr-defined]
    assert (withdrawn.participant_id, withdrawn.identity) == ("a3", ALICE)


def test_covers_and_consent_of_answer_for_people_not_present_and_refuse_unknown_scopes() -> None:
    stage = recording_stage()
    assert stage.covers("ghost", "media") is False and stage.consent_of("ghost") is None
    assert stage.consent_of(ALICE) is None and stage.covers(ALICE, "comments") is False
    with pytest.raises(ValueError):
        stage.covers(ALICE, "camera")


# --- withdrawing -------------------------------------------------------------------------------------


def test_a_withdrawal_takes_back_every_scope_and_is_recorded() -> None:
    stage = recording_stage()
    give(stage, ALICE, ALL)
    stage.start_recording(MOD, "rec-1", 2.0)
    events = stage.withdraw_consent(ALICE, 5.0, "cr-2")
    record = events[0].record  # type: ignore[attr-defined]
    assert types(events) == ["consent.recorded"]
    assert (record.decision, record.scopes, record.method) == ("withdrawn", (), "withdrawal")
    assert (record.session_id, record.at, record.policy_version) == ("rec-1", 5.0, POLICY)
    assert not any(stage.covers(ALICE, scope) for scope in ALL)
    assert stage.consent_of(ALICE).decision == "withdrawn"  # type: ignore[union-attr]


def test_withdrawing_without_consent_is_refused() -> None:
    stage = recording_stage()
    error = refused(stage, NoConsent, stage.withdraw_consent, ALICE, 1.0, "cr-1")
    assert error.code == "no_consent"
    give(stage, ALICE, NONE)
    refused(stage, NoConsent, stage.withdraw_consent, ALICE, 2.0, "cr-9")
    give(stage, BOB, COMMENTS)
    stage.withdraw_consent(BOB, 3.0, "cr-10")
    refused(stage, NoConsent, stage.withdraw_consent, BOB, 4.0, "cr-11")


# --- starting and stopping the recording -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["manual", "auto"])
@pytest.mark.parametrize(("actor", "allowed"), [(HOST, True), (MOD, True), (SPEAKER, False), (ALICE, False)])
def test_the_host_and_moderators_start_and_stop_recording(mode: str, actor: str, allowed: bool) -> None:
    stage = recording_stage(mode)
    if not allowed:
        refused(stage, NotAllowed, stage.start_recording, actor, "rec-1", 1.0)
        stage.start_recording(HOST, "rec-1", 1.0)
        refused(stage, NotAllowed, stage.stop_recording, actor, 2.0)
        return
    started = stage.start_recording(actor, "rec-1", 1.0)
    assert types(started[:1]) == ["moderation.audit"]
    assert started[1] == RecordingStarted(
        stage="s1", at=1.0, seq=started[1].seq, session_id="rec-1", by=actor
    )
    assert started[1].audience().everyone
    assert stage.recording.active and stage.recording.session_id == "rec-1"
    stopped = stage.stop_recording(actor, 2.0)
    assert stopped[1:] == [
        RecordingStopped(stage="s1", at=2.0, seq=stopped[1].seq, session_id="rec-1", by=actor)
    ]
    assert types(stopped[:1]) == ["moderation.audit"] and stopped[1].audience().everyone
    assert not stage.recording.active and stage.recording.session_id is None


def test_a_stage_with_recording_off_refuses_to_record() -> None:
    stage = recording_stage("off")
    error = refused(stage, NotAllowed, stage.start_recording, HOST, "rec-1", 1.0)
    assert "off" in error.message
    refused(stage, NotAllowed, stage.stop_recording, HOST, 1.0)
    refused(stage, NotAllowed, stage.start_auto_recording, "rec-1", 1.0)
    assert not stage.recording_due


def test_starting_twice_or_stopping_when_not_recording_is_refused() -> None:
    stage = recording_stage()
    error = refused(stage, NotRecording, stage.stop_recording, HOST, 1.0)
    assert error.code == "not_recording"
    stage.start_recording(HOST, "rec-1", 1.0)
    error = refused(stage, AlreadyRecording, stage.start_recording, MOD, "rec-2", 2.0)
    assert error.code == "already_recording"


@pytest.mark.parametrize("session_id", ["", "a b", "../up", "x" * 65, "rec-1"])
def test_a_session_id_names_a_directory_and_is_never_reused(session_id: str) -> None:
    stage = recording_stage()
    stage.start_recording(HOST, "rec-1", 1.0)
    stage.stop_recording(HOST, 2.0)
    refused(stage, InvalidMessage, stage.start_recording, HOST, session_id, 3.0)
    stage.start_recording(HOST, "rec_2-B", 4.0)


def test_recording_needs_a_live_stage() -> None:
    stage = recording_stage(state=StageState.SCHEDULED)
    error = refused(stage, StageNotLive, stage.start_recording, HOST, "rec-1", 1.0)
    assert error.code == "stage_not_live"
    stage.start(HOST, 2.0)
    stage.start_recording(HOST, "rec-1", 3.0)


def test_recording_asks_everyone_present_who_has_not_decided() -> None:
    stage = recording_stage()
    give(stage, ALICE, MEDIA)
    give(stage, BOB, NONE)  # declining is a decision: Bob is not asked again
    events = stage.start_recording(MOD, "rec-1", 2.0)
    assert types(events) == ["moderation.audit", "recording.started"] + ["consent.requested"] * 3
    asked = [e for e in events if isinstance(e, ConsentRequested)]
    assert [e.participant_id for e in asked] == [HOST, MOD, SPEAKER]
    for event in asked:
        assert (event.policy_version, event.session_id) == (POLICY, "rec-1")
        assert event.audience() == Audience(persons=frozenset({event.participant_id}))
    # Decisions during the session carry it; after the stop, none.
    assert give(stage, HOST, ALL, 3.0, "recording_prompt").session_id == "rec-1"
    stage.stop_recording(MOD, 4.0)
    assert give(stage, HOST, MEDIA, 5.0).session_id is None


def test_ending_the_stage_stops_the_recording_before_the_end() -> None:
    stage = recording_stage()
    stage.start_publishing(SPEAKER, ("audio",), 1.0)
    stage.start_recording(HOST, "rec-1", 1.0)
    assert types(stage.end(HOST, 2.0)) == [
        "moderation.audit",
        "publishing.stopped",
        "recording.stopped",
        "stage.ended",
    ]
    assert last(stage, RecordingStopped).by == HOST and not stage.recording.active
    refused(stage, StageEnded, stage.start_recording, HOST, "rec-2", 3.0)
    assert types(recording_stage().end(HOST, 2.0)) == ["moderation.audit", "stage.ended"]


def test_a_recorder_that_fails_stops_the_recording_and_everyone_is_told() -> None:
    stage = recording_stage()
    stage.start_recording(HOST, "rec-1", 1.0)
    events = stage.recording_failed("rec-1", "disk full", 2.0)
    assert events == [
        RecordingStopped(
            stage="s1", at=2.0, seq=events[0].seq, session_id="rec-1", by=None, reason="disk full"
        )
    ]
    assert not stage.recording.active and stage.snapshot_for(ALICE)["recording"]["active"] is False  # type: ignore[index]
    assert stage.recording_failed("rec-1", "disk full", 3.0) == []  # already stopped: nothing more
    stage.start_recording(MOD, "rec-2", 4.0)
    assert stage.recording_failed("rec-1", "late news of the old session", 5.0) == []
    assert stage.recording.session_id == "rec-2"
    wire = msgspec.json.decode(msgspec.json.encode(events[0]))
    assert (wire["by"], wire["reason"]) == (None, "disk full")


# --- automatic recording -----------------------------------------------------------------------------


def test_an_auto_stage_created_live_is_due_to_record_once() -> None:
    stage = recording_stage("auto")
    assert stage.recording_due
    events = stage.start_auto_recording("rec-1", 1.0)
    assert types(events)[0] == "recording.started" and last(stage, RecordingStarted).by is None
    assert not stage.recording_due
    stage.stop_recording(MOD, 2.0)
    assert not stage.recording_due  # a moderator stopped it: it stays stopped
    refused(stage, NotAllowed, stage.start_auto_recording, "rec-2", 3.0)
    stage.start_recording(MOD, "rec-2", 4.0)  # by hand it may start again
    assert stage.recording.sessions == ["rec-1", "rec-2"]


def test_an_auto_stage_records_when_it_starts() -> None:
    stage = recording_stage("auto", state=StageState.SCHEDULED)
    assert not stage.recording_due
    refused(stage, StageNotLive, stage.start_auto_recording, "rec-1", 1.0)
    stage.start(HOST, 2.0)
    assert stage.recording_due
    stage.start_auto_recording("rec-1", 2.0)
    assert stage.recording.active


def test_only_an_auto_stage_records_by_itself() -> None:
    stage = recording_stage("manual")
    assert not stage.recording_due
    refused(stage, NotAllowed, stage.start_auto_recording, "rec-1", 1.0)
    stage.start_recording(HOST, "rec-1", 1.0)  # the manual stage records on demand


def test_an_auto_stage_recorded_by_hand_is_not_due() -> None:
    stage = recording_stage("auto")
    stage.start_recording(HOST, "rec-1", 1.0)
    assert not stage.recording_due
    refused(stage, AlreadyRecording, stage.start_auto_recording, "rec-2", 2.0)
    stage.stop_recording(HOST, 3.0)
    assert not stage.recording_due  # it has recorded: stopping by hand is final
    refused(stage, NotAllowed, stage.start_auto_recording, "rec-2", 4.0)


# --- speaking requires consent -----------------------------------------------------------------------


def test_accepting_an_invitation_needs_media_consent_when_the_stage_says_so() -> None:
    stage = recording_stage(speaking_requires_consent=True)
    stage.invite(MOD, ALICE, 1.0)
    error = refused(stage, ConsentRequired, stage.accept_invitation, ALICE, 2.0)
    assert error.code == "consent_required"
    give(stage, ALICE, COMMENTS | SHARE, 3.0, "invitation")
    refused(stage, ConsentRequired, stage.accept_invitation, ALICE, 4.0)
    give(stage, ALICE, MEDIA, 5.0, "invitation")
    assert types(stage.accept_invitation(ALICE, 6.0)) == ["invitation.answered", "participant.updated"]
    assert stage.participants[ALICE].role is Role.SPEAKER


def test_consent_is_required_even_on_a_stage_that_does_not_record_yet() -> None:
    stage = recording_stage("off", speaking_requires_consent=True)
    stage.invite(MOD, ALICE, 1.0)
    refused(stage, ConsentRequired, stage.accept_invitation, ALICE, 2.0)


def test_without_the_setting_an_invitee_speaks_without_consent() -> None:
    stage = recording_stage()
    stage.invite(MOD, ALICE, 1.0)
    stage.start_recording(HOST, "rec-1", 1.0)
    stage.accept_invitation(ALICE, 2.0)
    assert types(stage.start_publishing(ALICE, ("audio",), 3.0)) == ["publishing.started"]


def test_publishing_while_recording_needs_media_consent_when_the_stage_says_so() -> None:
    stage = recording_stage(speaking_requires_consent=True)
    stage.start_publishing(SPEAKER, ("audio",), 1.0)  # not recording: nothing to consent to
    stage.stop_publishing(SPEAKER, 1.0)
    stage.start_recording(HOST, "rec-1", 2.0)
    refused(stage, ConsentRequired, stage.check_may_publish, SPEAKER)
    refused(stage, ConsentRequired, stage.start_publishing, SPEAKER, ("audio", "video"), 3.0)
    refused(stage, ConsentRequired, stage.start_publishing, HOST, ("video",), 3.0)
    give(stage, SPEAKER, MEDIA, 4.0, "recording_prompt")
    stage.check_may_publish(SPEAKER)
    assert types(stage.start_publishing(SPEAKER, ("audio",), 5.0)) == ["publishing.started"]
    stage.stop_recording(HOST, 6.0)
    stage.start_publishing(HOST, ("video",), 7.0)


# --- what people see ---------------------------------------------------------------------------------


def test_the_snapshot_says_whether_the_stage_records_and_what_i_decided() -> None:
    stage = recording_stage()
    state = stage.snapshot_for(ALICE)
    assert state["recording"] == {"mode": "manual", "active": False, "session_id": None}
    assert state["consent"] == {"policy_version": POLICY, "mine": None}
    give(stage, ALICE, COMMENTS | MEDIA, 2.0)
    stage.start_recording(HOST, "rec-1", 3.0)
    state = stage.snapshot_for(ALICE)
    assert state["recording"] == {"mode": "manual", "active": True, "session_id": "rec-1"}
    assert state["consent"] == {
        "policy_version": POLICY,
        "mine": {"scopes": ("comments", "media"), "decision": "granted", "at": 2.0},
    }
    assert msgspec.json.decode(msgspec.json.encode(state))["consent"]["mine"]["scopes"] == [
        "comments",
        "media",
    ]


def test_moderators_see_how_many_people_granted_declined_or_have_not_decided() -> None:
    stage = recording_stage()
    stage.join("b2", "Bob (phone)", Role.AUDIENCE, 0.0, identity=BOB)  # one person, two connections
    give(stage, ALICE, MEDIA)
    give(stage, BOB, NONE)
    give(stage, SPEAKER, SHARE)
    stage.withdraw_consent(SPEAKER, 2.0, "cr-w")
    summary = {"granted": 1, "declined": 2, "none": 2}
    assert stage.snapshot_for(MOD)["consent"]["summary"] == summary  # type: ignore[index]
    assert stage.snapshot_for(HOST)["consent"]["summary"] == summary  # type: ignore[index]
    assert "summary" not in stage.snapshot_for(ALICE)["consent"]  # type: ignore[operator]
    assert stage.snapshot_for("b2")["consent"]["mine"]["decision"] == "declined"  # type: ignore[index]


def test_consent_and_recording_events_follow_the_protocol_table_and_decode_to_themselves() -> None:
    stage = recording_stage()
    give(stage, ALICE, MEDIA)
    stage.start_recording(HOST, "rec-1", 2.0)
    stage.withdraw_consent(ALICE, 3.0, "cr-9")
    stage.stop_recording(HOST, 4.0)
    table = protocol_stage_events()
    assert table["consent.recorded"] == "that person, moderators"
    assert table["consent.requested"] == "that person"
    assert table["recording.started"] == table["recording.stopped"] == "everyone"
    for event in stage.log.events:
        assert decode_event(msgspec.json.encode(event)) == event
    wire = msgspec.json.decode(msgspec.json.encode(last(stage, ConsentRecorded)))
    assert wire["type"] == "consent.recorded" and wire["stage_id"] == "s1"
    assert wire["record"]["scopes"] == [] and wire["record"]["decision"] == "withdrawn"
    started = msgspec.json.decode(msgspec.json.encode(last(stage, RecordingStarted)))
    assert {k: started[k] for k in ("type", "session_id", "by")} == {
        "type": "recording.started",
        "session_id": "rec-1",
        "by": HOST,
    }


def test_a_refused_consent_command_changes_nothing_even_mid_recording() -> None:
    stage = recording_stage()
    give(stage, ALICE, MEDIA)
    stage.start_recording(HOST, "rec-1", 2.0)
    refused(stage, PolicyMismatch, stage.give_consent, ALICE, NONE, "old", "settings", 3.0, "cr-x")
    refused(stage, NoConsent, stage.withdraw_consent, BOB, 3.0, "cr-x")
    refused(stage, AlreadyRecording, stage.start_recording, HOST, "rec-2", 3.0)
    assert stage.covers(ALICE, "media") and stage.recording.session_id == "rec-1"
