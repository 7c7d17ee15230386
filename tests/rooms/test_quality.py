"""rooms/quality.py: the measured level in participant objects, an event only on a change, at most one
per participant every QUALITY_MIN_INTERVAL_S; bad levels refused; nobody but present participants."""

from __future__ import annotations

import pytest

from rooms.errors import InvalidMessage
from rooms.events import ParticipantUpdated
from rooms.quality import QUALITY_MIN_INTERVAL_S
from rooms.roles import Role
from rooms.stage import Stage


def test_a_level_change_is_one_participant_updated_and_bounded_in_rate() -> None:
    stage = Stage("s1", "Grand rounds", created_at=0.0)
    stage.join("p1", "Dr A", Role.AUDIENCE, now=1.0)
    assert stage.participants["p1"].snapshot()["quality"] is None

    events = stage.set_quality("p1", "good", now=2.0)
    assert [type(e) for e in events] == [ParticipantUpdated]
    assert events[0].participant == "p1" and events[0].seq > 0
    assert stage.participants["p1"].snapshot()["quality"] == "good"

    assert stage.set_quality("p1", "good", now=30.0) == []  # unchanged: nothing
    # Within the interval a change waits (the shell asks again at its next sample).
    assert stage.set_quality("p1", "poor", now=2.0 + QUALITY_MIN_INTERVAL_S - 0.1) == []
    assert stage.participants["p1"].quality == "good"
    assert len(stage.set_quality("p1", "poor", now=2.0 + QUALITY_MIN_INTERVAL_S)) == 1
    assert stage.participants["p1"].quality == "poor"


def test_unknown_levels_and_people() -> None:
    stage = Stage("s1", "Grand rounds", created_at=0.0)
    stage.join("p1", "Dr A", Role.AUDIENCE, now=1.0)
    with pytest.raises(InvalidMessage):
        stage.set_quality("p1", "superb", now=2.0)
    assert stage.set_quality("nobody", "good", now=2.0) == []
    stage.leave("p1", now=3.0)
    assert stage.set_quality("p1", "lost", now=9.0) == []


def test_the_stage_bounds_quality_broadcasts_per_second() -> None:
    from rooms.quality import QUALITY_STAGE_PER_S

    stage = Stage("s1", "Grand rounds", created_at=0.0)
    people = [f"p{i}" for i in range(QUALITY_STAGE_PER_S + 5)]
    for i, pid in enumerate(people):
        stage.join(pid, f"Dr {i}", Role.AUDIENCE, now=1.0)
    changed = [pid for pid in people if stage.set_quality(pid, "poor", now=10.0)]
    assert len(changed) == QUALITY_STAGE_PER_S
    # A second later the others get theirs.
    late = [pid for pid in people if pid not in changed and stage.set_quality(pid, "poor", now=11.0)]
    assert len(late) == 5
