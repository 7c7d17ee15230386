"""The stage's rules for issue 2: joining, one host, who may publish, mute, leave."""

from __future__ import annotations

import pytest

from rooms.errors import NotAllowed, NotPublishing, StageEnded, StageFull, UnknownParticipant
from rooms.events import ParticipantJoined, ParticipantLeft, PublishingStarted, PublishingStopped
from rooms.roles import Permission, Role, allows
from rooms.stage import Stage, StageState


def stage(max_publishers: int = 2) -> Stage:
    return Stage("s1", "Grand rounds", created_at=0.0, max_publishers=max_publishers)


def test_join_emits_an_event_and_lists_the_person() -> None:
    s = stage()
    events = s.join("p1", "Dr A", Role.AUDIENCE, now=1.0)
    assert events == [ParticipantJoined(stage="s1", at=1.0, seq=1, participant="p1")]
    assert s.participants["p1"].snapshot() == {
        "id": "p1",
        "name": "Dr A",
        "role": "audience",
        "publishing": {"audio": False, "video": False},
        "muted": {"audio": False, "video": False},
        "moderator_muted": {"audio": False, "video": False},
        "sharing": {"audio": False, "video": False},
        "share_muted": {"audio": False, "video": False},
        "chat_muted": False,
        "hand_raised": False,
        "quality": None,
    }


def test_only_one_host() -> None:
    s = stage()
    s.join("h", "Host", Role.HOST, 0)
    with pytest.raises(NotAllowed):
        s.join("h2", "Other", Role.HOST, 0)
    assert list(s.participants) == ["h"]


def test_the_same_id_cannot_join_twice() -> None:
    s = stage()
    s.join("p", "A", Role.AUDIENCE, 0)
    with pytest.raises(NotAllowed):
        s.join("p", "A", Role.SPEAKER, 0)
    assert s.participants["p"].role is Role.AUDIENCE


def test_an_ended_stage_admits_nobody() -> None:
    s = stage()
    s.state = StageState.ENDED
    with pytest.raises(StageEnded):
        s.join("p", "A", Role.AUDIENCE, 0)


@pytest.mark.parametrize(
    ("role", "may"),
    [(Role.HOST, True), (Role.SPEAKER, True), (Role.AUDIENCE, False), (Role.MODERATOR, False)],
)
def test_who_may_publish(role: Role, may: bool) -> None:
    assert allows(role, Permission.PUBLISH) is may
    s = stage()
    s.join("p", "A", role, 0)
    if may:
        assert s.start_publishing("p", ("audio", "video"), 1) == [
            PublishingStarted(stage="s1", at=1, seq=2, participant="p", kinds=("audio", "video"))
        ]
    else:
        with pytest.raises(NotAllowed):
            s.start_publishing("p", ("video",), 1)
        assert not s.participants["p"].publishing


def test_publishers_are_capped_by_the_slots() -> None:
    s = stage(max_publishers=1)
    assert s.max_publishers == 1 and s.settings.max_publishers == 1
    s.join("a", "A", Role.HOST, 0)
    s.join("b", "B", Role.SPEAKER, 0)
    s.start_publishing("a", ("video",), 1)
    with pytest.raises(StageFull):
        s.check_may_publish("b")
    with pytest.raises(StageFull):
        s.start_publishing("b", ("video",), 1)
    s.start_publishing("a", ("audio", "video"), 2)  # republishing is not a new publisher


def test_mute_needs_a_published_kind_and_is_cleared_by_stopping() -> None:
    s = stage()
    s.join("a", "A", Role.SPEAKER, 0)
    with pytest.raises(NotPublishing):
        s.set_muted("a", "audio", True, 1)
    s.start_publishing("a", ("audio",), 1)
    with pytest.raises(NotPublishing):
        s.set_muted("a", "video", True, 1)
    s.set_muted("a", "audio", True, 2)
    assert s.participants["a"].snapshot()["muted"] == {"audio": True, "video": False}
    assert s.stop_publishing("a", 3) == [PublishingStopped(stage="s1", at=3, seq=4, participant="a")]
    assert s.participants["a"].muted == set()
    with pytest.raises(NotPublishing):
        s.stop_publishing("a", 4)


def test_leaving_while_publishing_stops_publishing_first() -> None:
    s = stage()
    s.join("a", "A", Role.SPEAKER, 0)
    s.start_publishing("a", ("audio", "video"), 1)
    assert s.leave("a", 2) == [
        PublishingStopped(stage="s1", at=2, seq=3, participant="a"),
        ParticipantLeft(stage="s1", at=2, seq=4, participant="a"),
    ]
    assert s.leave("a", 3) == []
    with pytest.raises(UnknownParticipant):
        s.get("a")
