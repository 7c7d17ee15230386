"""Screen sharing in the domain: who may share, how many at once, the slots it takes, a moderator's
stop, and what ends a share (rooms/sharing.py)."""

from __future__ import annotations

from rooms.errors import (
    ConsentRequired,
    InvalidMessage,
    NotAllowed,
    NotPublishing,
    RateLimited,
    ShareBusy,
    StageFull,
)
from rooms.events import Audience, ModerationAudit, PublishingStarted, PublishingStopped, ShareStopped
from rooms.stage import Stage
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused, types

AV = ("audio", "video")


def stopped_sources(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.source for e in events if isinstance(e, PublishingStopped)]


def test_a_speaker_shares_beside_their_camera() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, AV, 1)
    (event,) = stage.start_sharing(SPEAKER, AV, 2)
    assert isinstance(event, PublishingStarted)
    assert (event.source, event.kinds) == ("screen", AV)
    snap = stage.participants[SPEAKER].snapshot()
    assert snap["publishing"] == {"audio": True, "video": True}
    assert snap["sharing"] == {"audio": True, "video": True}
    # stopping the share leaves the camera
    events = stage.stop_sharing(SPEAKER, 3)
    assert types(events) == ["publishing.stopped", "participant.updated"]
    assert stopped_sources(events) == ["screen"]
    snap = stage.participants[SPEAKER].snapshot()
    assert snap["sharing"] == {"audio": False, "video": False}
    assert snap["publishing"] == {"audio": True, "video": True}
    # and stopping the camera leaves a share
    stage.start_sharing(SPEAKER, ("video",), 4)
    assert stopped_sources(stage.stop_publishing(SPEAKER, 5)) == ["camera"]
    assert stage.participants[SPEAKER].sharing == {"video"}


def test_the_host_shares_the_audience_does_not() -> None:
    stage = populated()
    assert types(stage.start_sharing(HOST, ("video",), 1)) == ["publishing.started"]
    stage.stop_sharing(HOST, 2)
    refused(stage, NotAllowed, stage.start_sharing, ALICE, ("video",), 3)
    refused(stage, NotAllowed, stage.check_may_share, BOB)


def test_a_share_sends_video() -> None:
    stage = populated()
    error = refused(stage, InvalidMessage, stage.start_sharing, SPEAKER, ("audio",), 1)
    assert "video" in error.message
    refused(stage, InvalidMessage, stage.start_sharing, SPEAKER, ("video", "smell"), 1)


def test_one_share_at_a_time_by_default() -> None:
    stage = populated()
    stage.start_sharing(SPEAKER, ("video",), 1)
    error = refused(stage, ShareBusy, stage.start_sharing, HOST, ("video",), 2)
    assert error.code == "share_busy"
    # the sharer may offer again (a new share replaces theirs)
    stage.start_sharing(SPEAKER, AV, 3)
    stage.stop_sharing(SPEAKER, 4)
    assert types(stage.start_sharing(HOST, ("video",), 5)) == ["publishing.started"]


def test_the_stage_setting_allows_more_or_none() -> None:
    stage = populated(max_screen_shares=2)
    stage.start_sharing(SPEAKER, ("video",), 1)
    stage.start_sharing(HOST, ("video",), 2)
    assert {p.id for p in stage.sharers} == {SPEAKER, HOST}
    none = populated(max_screen_shares=0)
    error = refused(none, ShareBusy, none.start_sharing, SPEAKER, ("video",), 1)
    assert "does not allow" in error.message


def test_a_share_takes_a_slot_pair_like_a_camera() -> None:
    stage = populated(max_publishers=2, max_screen_shares=2)
    stage.start_publishing(SPEAKER, AV, 1)
    stage.start_sharing(SPEAKER, ("video",), 2)  # two pairs in use: the camera's and the share's
    refused(stage, StageFull, stage.start_publishing, HOST, AV, 3)
    refused(stage, StageFull, stage.start_sharing, HOST, ("video",), 3)
    stage.stop_sharing(SPEAKER, 4)
    assert types(stage.start_publishing(HOST, AV, 5)) == ["publishing.started"]


def test_stopping_a_share_that_is_not_there_is_refused() -> None:
    stage = populated()
    refused(stage, NotPublishing, stage.stop_sharing, SPEAKER, 1)
    refused(stage, NotPublishing, stage.moderator_stop_share, MOD, SPEAKER, 1)


def test_a_moderator_stops_a_share_and_the_sharer_is_told() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, AV, 1)
    stage.start_sharing(SPEAKER, AV, 2)
    events = stage.moderator_stop_share(MOD, SPEAKER, 3)
    assert types(events) == [
        "moderation.audit",
        "publishing.stopped",
        "share.stopped",
        "participant.updated",
    ]
    assert stopped_sources(events) == ["screen"]
    told = next(e for e in events if isinstance(e, ShareStopped))
    assert (told.participant_id, told.by) == (SPEAKER, MOD)
    assert told.audience() == Audience(persons=frozenset({SPEAKER}))
    audit = next(e for e in events if isinstance(e, ModerationAudit))
    assert audit.action == "moderation.stop_share"
    person = stage.participants[SPEAKER]
    assert not person.sharing and person.publishing == set(AV)  # the camera goes on
    # only moderators
    stage.start_sharing(SPEAKER, ("video",), 4)
    refused(stage, NotAllowed, stage.moderator_stop_share, ALICE, SPEAKER, 5)
    refused(stage, NotAllowed, stage.moderator_stop_share, SPEAKER, SPEAKER, 5)
    assert types(stage.moderator_stop_share(HOST, SPEAKER, 6))[1] == "publishing.stopped"


def test_demoting_removing_or_banning_ends_the_share() -> None:
    for end in (
        lambda s: s.move_to_audience(MOD, SPEAKER, 3),
        lambda s: s.remove(MOD, SPEAKER, "off topic", 3),
        lambda s: s.ban(MOD, SPEAKER, "spam", 3),
        lambda s: s.leave(SPEAKER, 3),
        lambda s: s.end(HOST, 3),
    ):
        stage = populated()
        stage.start_publishing(SPEAKER, AV, 1)
        stage.start_sharing(SPEAKER, AV, 2)
        events = end(stage)
        assert sorted(stopped_sources(events)) == ["camera", "screen"]
        assert not stage.sharers


def test_the_share_mutes_on_its_own() -> None:
    stage = populated()
    stage.start_publishing(SPEAKER, AV, 1)
    stage.start_sharing(SPEAKER, AV, 2)
    assert types(stage.set_share_muted(SPEAKER, "audio", True, 3)) == ["participant.updated"]
    snap = stage.participants[SPEAKER].snapshot()
    assert snap["share_muted"] == {"audio": True, "video": False}
    assert snap["muted"] == {"audio": False, "video": False}
    assert stage.set_share_muted(SPEAKER, "audio", True, 4) == []
    stage.set_share_muted(SPEAKER, "audio", False, 5)
    refused(stage, NotPublishing, stage.set_share_muted, HOST, "video", True, 6)


def test_sharing_while_recording_needs_media_consent() -> None:
    stage = populated(recording_mode="manual", speaking_requires_consent=True)
    stage.start_recording(HOST, "rec-1", 1.0)
    error = refused(stage, ConsentRequired, stage.start_sharing, SPEAKER, ("video",), 2.0)
    assert error.code == "consent_required"
    stage.give_consent(SPEAKER, frozenset({"media"}), "2026-11", "settings", 3.0, "cr-1")
    assert types(stage.start_sharing(SPEAKER, ("video",), 4.0)) == ["publishing.started"]


def test_sharing_starts_count_against_the_media_rate() -> None:
    stage: Stage = populated()
    limit = stage.settings.rates.media.count
    for i in range(limit):
        stage.start_sharing(SPEAKER, ("video",), 1.0 + i * 0.001)
    error = refused(stage, RateLimited, stage.start_sharing, SPEAKER, ("video",), 1.5)
    assert error.code == "rate_limited"
