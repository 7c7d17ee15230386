"""Events are their wire messages: tagged with the protocol's type, numbered by the log, addressed."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from rooms.events import (
    EVENT_TYPES,
    Audience,
    CommentPosted,
    CommentView,
    Event,
    EventLog,
    Invitation,
    ParticipantLeft,
    ParticipantRemoved,
    PollCounts,
    PollCreated,
    PollView,
    PollVoters,
    QuizResult,
    StageUpdated,
    StageView,
    decode_event,
)

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
INTERNAL = {"publishing.started", "publishing.stopped"}
PARTICIPANT_EVENTS = {"participant.joined", "participant.left", "participant.updated"}


def tag(event_type: type[Event]) -> str:
    return str(event_type.__struct_config__.tag)


def protocol_stage_events() -> dict[str, str]:
    """type -> the "to" column of the "Stage events" table of docs/protocol.md."""
    text = PROTOCOL.read_text()
    table = text.split("### Stage events", 1)[1].split("\n### ", 1)[0]
    return {m[1]: m[2].strip() for m in re.finditer(r"^\| `([a-z._]+)` \| ([^|]+) \|", table, re.M)}


def test_every_stage_event_of_the_protocol_has_a_type_and_no_type_is_unknown() -> None:
    documented = set(protocol_stage_events())
    tags = {tag(t) for t in EVENT_TYPES}
    assert documented <= tags
    assert tags - documented == INTERNAL | PARTICIPANT_EVENTS
    assert len(tags) == len(EVENT_TYPES)


def test_an_encoded_event_is_the_wire_message_with_seq_and_at() -> None:
    view = CommentView(id="c-1", author_id="p1", author_name="Dr A", text="Hi", at=5.0)
    event = CommentPosted(stage="s1", at=5.0, seq=42, comment=view)
    assert msgspec.json.decode(msgspec.json.encode(event)) == {
        "type": "comment.posted",
        "stage_id": "s1",
        "at": 5.0,
        "seq": 42,
        "comment": {"id": "c-1", "author_id": "p1", "author_name": "Dr A", "text": "Hi", "at": 5.0},
    }


def test_stage_updated_carries_the_stage_object_under_stage() -> None:
    view = StageView(id="s1", title="T", state="live", locked=True)
    wire = msgspec.to_builtins(StageUpdated(stage="s1", at=1.0, info=view))
    assert wire["stage"] == {"id": "s1", "title": "T", "state": "live", "locked": True}
    assert wire["stage_id"] == "s1"


def test_participant_left_names_the_participant_id_on_the_wire() -> None:
    wire = msgspec.to_builtins(ParticipantLeft(stage="s1", at=1.0, participant="p1"))
    assert wire["participant_id"] == "p1" and "participant" not in wire


def test_decode_gives_back_the_same_event() -> None:
    event = ParticipantRemoved(stage="s1", at=2.0, seq=3, participant_id="p", banned=True, reason="x", by="m")
    assert decode_event(msgspec.json.encode(event)) == event


def test_audiences_follow_the_protocol_table() -> None:
    table = protocol_stage_events()
    draft = PollView(
        id="p", question="Q", options=("A", "B"), multiple=False, anonymous=True, public_results=False,
        quiz=False, status="draft", duration_s=None, closes_at=None,
    )  # fmt: skip
    assert table["poll.created"] == "moderators"
    assert PollCreated(stage="s", at=0, poll=draft).audience() == Audience(moderators=True)
    assert table["poll.voters"] == "moderators"
    assert PollVoters(stage="s", at=0, poll_id="p", voters={}).audience() == Audience(moderators=True)
    invitation = Invitation(stage="s", at=0, participant_id="p1", by="m", by_name="M").audience()
    assert invitation == Audience(moderators=True, persons=frozenset({"p1"}))
    removed = ParticipantRemoved(stage="s", at=0, participant_id="p1", banned=False, reason="", by="m")
    assert removed.audience().everyone and removed.audience().persons == {"p1"}
    result = QuizResult(stage="s", at=0, participant_id="p1", poll_id="q", correct=True, score=1)
    assert result.audience() == Audience(persons=frozenset({"p1"}))


@pytest.mark.parametrize(("public", "everyone"), [(True, True), (False, False)])
def test_live_counts_go_to_everyone_only_with_public_results(public: bool, everyone: bool) -> None:
    counts = PollCounts(stage="s", at=0, poll_id="p", counts=(1, 0), ballots=1, public_results=public)
    assert counts.audience().everyone is everyone
    assert counts.audience().moderators is not everyone


def test_the_log_numbers_events_from_one_without_gaps() -> None:
    log = EventLog()
    assert log.last_seq == 0
    first = log.append([ParticipantLeft(stage="s", at=0, participant=p) for p in "ab"])
    second = log.append([ParticipantLeft(stage="s", at=1, participant="c")])
    assert [e.seq for e in first + second] == [1, 2, 3]
    assert [e.seq for e in log.events] == [1, 2, 3] and log.last_seq == 3
    assert log.append([]) == [] and log.last_seq == 3


def test_a_log_started_after_a_seq_continues_from_it() -> None:
    log = EventLog(start_seq=41)
    assert log.last_seq == 41
    assert [e.seq for e in log.append([ParticipantLeft(stage="s", at=0, participant="a")])] == [42]
    assert log.last_seq == 42 and log != EventLog()
    with pytest.raises(ValueError):
        EventLog(start_seq=-1)


def test_logged_events_are_copies_the_originals_stay_unnumbered() -> None:
    log = EventLog()
    original = ParticipantLeft(stage="s", at=0, participant="a")
    (numbered,) = log.append([original])
    assert original.seq == 0 and numbered.seq == 1
    with pytest.raises(AttributeError):
        numbered.seq = 5  # type: ignore[misc]
