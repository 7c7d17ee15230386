"""The playback page's data (recording/playback.py) from a session written by the recorder's parts."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from recording import playback
from recording.ledger import Ledger
from recording.sharing import SharePolicy
from rooms.consent import ConsentRecord
from tests.support.playback_session import (
    AUDIENCE,
    POLICY,
    QUIET,
    SESSION_S,
    SPEAKER,
    Person,
    standard_events,
    standard_session,
    write_session,
)

T0 = 1_796_000_000.0


def build(tmp_path: Path) -> tuple[Path, playback.Playback]:
    directory = standard_session(tmp_path, "cardio", "20261203T080000Z-ab12", t0=T0, video_s=None)
    return directory, playback.of_session(directory)


def test_without_a_shared_track_times_are_seconds_from_the_session_start(tmp_path: Path) -> None:
    directory, data = build(tmp_path)
    manifest = msgspec.json.decode((directory / "manifest.json").read_bytes())
    policy = SharePolicy.of_session(directory)
    assert playback.export_origin(manifest, policy) == manifest["started_at"] == data.origin_at == T0
    assert data.duration_s == SESSION_S
    by_kind: dict[str, float] = {}
    for marker in data.markers:
        by_kind.setdefault(marker.kind, marker.t)
    assert by_kind["speaker.joined"] == 1.0  # the first: SPEAKER at t0 + 1
    assert by_kind["poll.closed"] == 7.5 and by_kind["screen.started"] == 9.0
    assert [m.t for m in data.markers] == sorted(m.t for m in data.markers)


def test_what_a_person_without_share_wrote_is_left_out_and_placeholders_never_shown(tmp_path: Path) -> None:
    _, data = build(tmp_path)
    text = playback.encode(data).decode()
    assert [c.id for c in data.comments] == ["c-1", "c-4"]  # AUDIENCE, SPEAKER: both granted share
    assert "not for attendees" not in text and "quiet question" not in text  # QUIET: no share
    assert "never stored" not in text and '"redacted"' not in text  # DECLINED: placeholders
    assert "oops wrong chat" not in text  # deleted by a moderator while live
    assert QUIET.name not in text and QUIET.participant_id not in text  # not named anywhere
    joined = [m for m in data.markers if m.kind == "speaker.joined"]
    assert [(m.label, m.participant_id) for m in joined] == [
        ("Dr Speaker went on stage", SPEAKER.participant_id),
        ("A speaker went on stage", None),
    ]


def test_poll_results_keep_every_vote_and_name_only_who_shares(tmp_path: Path) -> None:
    _, data = build(tmp_path)
    closed = next(m.poll for m in data.markers if m.kind == "poll.closed")
    assert closed is not None
    assert closed.counts == [2, 1] and closed.ballots == 3  # QUIET's and DECLINED's ballots counted
    assert [(v.name, v.choices) for v in closed.voters] == [(AUDIENCE.name, [0])]
    assert closed.withheld_voters == 2


def test_questions_answers_pins_and_screen_shares_are_markers(tmp_path: Path) -> None:
    _, data = build(tmp_path)
    kinds = [(m.kind, m.t) for m in data.markers]
    assert ("question.asked", 5.0) in kinds and ("question.answered", 12.5) in kinds
    assert ("comment.pinned", 8.0) in kinds
    assert ("screen.started", 9.0) in kinds and ("screen.stopped", 12.0) in kinds
    assert [m.kind for m in data.markers].count("question.asked") == 1  # QUIET's is not shown
    answered = next(m for m in data.markers if m.kind == "question.answered")
    assert answered.question is not None and answered.question.votes == 2
    assert [(c.t, c.end, c.title) for c in data.chapters] == [
        (0.0, 2.0, "Dr Speaker"),  # SPEAKER went on at 1 s: merged into the start
        (2.0, 9.0, "Dr Speaker, A speaker"),
        (9.0, 12.0, "Dr Speaker shares the screen"),
        (12.0, 15.0, "Dr Speaker, A speaker"),
        (15.0, SESSION_S, "Dr Speaker"),
    ]


def test_a_later_withdrawal_of_share_takes_the_person_out(tmp_path: Path) -> None:
    directory, before = build(tmp_path)
    assert any(c.author_name == SPEAKER.name for c in before.comments)
    Ledger(directory / "consent.jsonl").append(
        ConsentRecord(
            record_id="consent-later",
            stage_id="cardio",
            session_id=directory.name,
            participant_id=SPEAKER.participant_id,
            identity=SPEAKER.identity,
            name=SPEAKER.name,
            scopes=("comments", "media"),
            policy_version=POLICY,
            decision="granted",
            at=T0 + 100,
            method="settings",
        )
    )
    after = playback.of_session(directory)
    text = playback.encode(after).decode()
    assert SPEAKER.name not in text and "Slides follow by mail" not in text
    assert [c.id for c in after.comments] == ["c-1"]


def test_who_was_on_stage_when_recording_started_opens_the_first_chapter(tmp_path: Path) -> None:
    track = {
        "participant_id": SPEAKER.participant_id,
        "kind": "video",
        "source": "camera",
        "capture_started_at": T0 + 0.2,
        "first_frame_at": T0 + 0.25,
    }
    directory = write_session(
        tmp_path, "cardio", "s-1", [SPEAKER], [], started_at=T0, stopped_at=T0 + 5, tracks=[track]
    )
    data = playback.build(
        msgspec.json.decode((directory / "manifest.json").read_bytes()),
        playback.load_events(directory),
        SharePolicy.of_session(directory),
    )
    assert [(c.t, c.title) for c in data.chapters] == [(0.0, "Dr Speaker")]
    assert data.markers == []  # already there: no "went on stage"


def track(who: Person, first: float, frames: int = 50, kind: str = "video") -> dict[str, object]:
    return {
        "participant_id": who.participant_id,
        "kind": kind,
        "source": "camera",
        "frames": frames,
        "file": f"tracks/{who.participant_id}-{kind}-1.webm",
        "capture_started_at": first - 0.05,
        "first_frame_at": first,
    }


def test_the_origin_is_the_first_frame_the_export_shows(tmp_path: Path) -> None:
    tracks = [
        track(QUIET, T0 + 0.4),  # no share: not in the export, so not its t=0
        track(AUDIENCE, T0 + 0.6, frames=0),  # nothing written
        track(SPEAKER, T0 + 1.25, kind="audio"),
        track(SPEAKER, T0 + 1.5),
    ]
    directory = write_session(
        tmp_path,
        "cardio",
        "s-2",
        [SPEAKER, QUIET, AUDIENCE],
        standard_events("cardio", T0),
        started_at=T0,
        stopped_at=T0 + SESSION_S,
        tracks=tracks,
    )
    data = playback.of_session(directory)
    assert data.origin_at == T0 + 1.25
    assert data.duration_s == SESSION_S - 1.25
    assert [c.t for c in data.comments] == [3.0 - 1.25, 13.0 - 1.25]


def test_the_origin_the_export_wrote_wins(tmp_path: Path) -> None:
    """The file served is the judge: its state names the t=0 it was made with (a consent decision
    made since may move export_origin until the session is exported again)."""
    directory, _ = build(tmp_path)
    (directory / "exports").mkdir()
    state = {"version": 1, "status": "done", "origin": T0 + 2.0, "duration_s": 15.5}
    (directory / "exports" / "composite.json").write_text(json.dumps(state))
    data = playback.of_session(directory)
    assert (data.origin_at, data.duration_s) == (T0 + 2.0, 15.5)
    assert [c.t for c in data.comments] == [1.0, 11.0]
    (directory / "exports" / "composite.json").write_text("{not json")  # a torn state: ignored
    assert playback.of_session(directory).origin_at == T0
