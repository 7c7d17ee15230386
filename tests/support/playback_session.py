"""A recorded session on disk for playback tests, written by the recorder's own parts: the consent
ledger (``recording.ledger.Ledger``), the timeline (``recording.timeline.TimelineWriter`` with
``redact``, as the recorder stores events) from real ``rooms.events`` structs, a manifest in the
recorder's format, and a composite export made by ffmpeg (test pattern + tone, H.264/AAC, faststart).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from recording.ledger import Ledger
from recording.timeline import TimelineWriter, redact
from rooms.consent import ConsentRecord
from rooms.events import Event

POLICY = "2026-11"


@dataclass(frozen=True)
class Person:
    participant_id: str
    identity: str
    name: str
    role: str
    scopes: tuple[str, ...]  # their last decision (``share`` decides what playback shows)


def make_mp4(path: Path, seconds: float) -> Path:
    """A real MP4 (H.264 320x180 25 fps, a keyframe a second; AAC 440 Hz), moov first (faststart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


def write_session(
    root: Path,
    stage: str,
    session_id: str,
    people: list[Person],
    events: list[Event],
    *,
    started_at: float,
    stopped_at: float,
    club_id: str | None = None,
    video_s: float | None = None,
    tracks: list[dict[str, Any]] | None = None,
) -> Path:
    """The session directory ``root/stage/session_id``; ``events`` are stored as the recorder stores
    them (redacted for who had no ``comments`` consent)."""
    directory = root / stage / session_id
    (directory / "tracks").mkdir(parents=True, exist_ok=True)
    ledger = Ledger(directory / "consent.jsonl")
    participants = []
    for n, person in enumerate(people):
        record = ConsentRecord(
            record_id=f"consent-{n}",
            stage_id=stage,
            session_id=session_id,
            participant_id=person.participant_id,
            identity=person.identity,
            name=person.name,
            scopes=tuple(sorted(person.scopes)),
            policy_version=POLICY,
            decision="granted" if person.scopes else "declined",
            at=started_at,
            method="join_prompt",
        )
        ledger.append(record)
        participants.append(
            {
                "participant_id": person.participant_id,
                "name": person.name,
                "role": person.role,
                "consent": msgspec.to_builtins(record),
            }
        )
    comments = {p.participant_id for p in people if "comments" in p.scopes}
    writer = TimelineWriter(directory / "timeline.msgpack")
    for seq, event in enumerate(events, 1):
        data = msgspec.to_builtins(msgspec.structs.replace(event, seq=seq))
        writer.append(redact(data, lambda pid: pid in comments))
    writer.close()
    manifest = {
        "version": 1,
        "stage_id": stage,
        "club_id": club_id,
        "title": "Grand rounds: heart failure",
        "session_id": session_id,
        "status": "complete",
        "started_at": started_at,
        "stopped_at": stopped_at,
        "policy_version": POLICY,
        "participants": participants,
        "tracks": tracks or [],
        "timeline": "timeline.msgpack",
        "timeline_json": "timeline.json",
        "ledger": "consent.jsonl",
        "ledger_count": ledger.count,
        "ledger_head": ledger.head,
        "ledger_heads": None,
        "ledger_key": None,
        "ledger_signature": None,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    if video_s is not None:
        make_mp4(directory / "exports" / "composite.mp4", video_s)
    return directory


# --- one session with a bit of everything -----------------------------------------------------------

HOST = Person("p-host", "id-host", "Dr Host", "host", ("comments", "media", "share"))
SPEAKER = Person("p-speaker", "id-speaker", "Dr Speaker", "speaker", ("comments", "media", "share"))
# Recorded (media, comments) but not to be shown to attendees: no ``share``.
QUIET = Person("p-quiet", "id-quiet", "Dr Quiet", "speaker", ("comments", "media"))
# Declined everything: their comments are placeholders in the timeline.
DECLINED = Person("p-declined", "id-declined", "Ms Declined", "audience", ())
AUDIENCE = Person("p-aud", "id-aud", "Mr Audience", "audience", ("comments", "media", "share"))
PEOPLE = [HOST, SPEAKER, QUIET, DECLINED, AUDIENCE]
VIDEO_S = 20.0
SESSION_S = 18.0


def _comment(cid: str, who: Person, text: str, at: float) -> Any:
    from rooms.views import CommentView

    return CommentView(id=cid, author_id=who.participant_id, author_name=who.name, text=text, at=at)


def _question(qid: str, who: Person, text: str, at: float, status: str = "open", votes: int = 0) -> Any:
    from rooms.views import QuestionView

    return QuestionView(
        id=qid,
        author_id=who.participant_id,
        author_name=who.name,
        text=text,
        votes=votes,
        status=status,
        at=at,
    )


def standard_events(stage: str, t0: float) -> list[Event]:
    """Speakers on and off stage, a screen share, comments (shared, not shared, redacted, deleted),
    questions, a named poll with its voters and results, a pinned comment; ``at`` = t0 + seconds."""
    from rooms import events as ev
    from rooms.views import PollResults, PollView

    def poll(status: str, results: PollResults | None = None) -> PollView:
        return PollView(
            id="poll-1",
            question="First-line drug?",
            options=("ACE inhibitor", "Beta blocker"),
            multiple=False,
            anonymous=False,
            public_results=True,
            quiz=False,
            status=status,
            duration_s=None,
            closes_at=None,
            results=results,
        )

    c1 = _comment("c-1", AUDIENCE, "Great case, thank you", t0 + 3.0)
    return [
        ev.PublishingStarted(
            stage=stage, at=t0 + 1.0, participant=SPEAKER.participant_id, kinds=("audio", "video")
        ),
        ev.PublishingStarted(
            stage=stage, at=t0 + 2.0, participant=QUIET.participant_id, kinds=("audio", "video")
        ),
        ev.CommentPosted(stage=stage, at=t0 + 3.0, comment=c1),
        ev.CommentPosted(
            stage=stage, at=t0 + 4.0, comment=_comment("c-2", QUIET, "not for attendees", t0 + 4)
        ),
        ev.CommentPosted(
            stage=stage, at=t0 + 4.5, comment=_comment("c-3", DECLINED, "never stored", t0 + 4.5)
        ),
        ev.QuestionAsked(
            stage=stage, at=t0 + 5.0, question=_question("q-1", AUDIENCE, "Which dose first?", t0 + 5)
        ),
        ev.QuestionAsked(
            stage=stage, at=t0 + 5.5, question=_question("q-2", QUIET, "quiet question", t0 + 5.5)
        ),
        ev.PollOpened(stage=stage, at=t0 + 6.0, poll=poll("open")),
        ev.PollVoters(
            stage=stage,
            at=t0 + 7.0,
            poll_id="poll-1",
            voters={AUDIENCE.participant_id: (0,), QUIET.participant_id: (1,), DECLINED.participant_id: (0,)},
        ),
        ev.PollClosed(stage=stage, at=t0 + 7.5, poll=poll("closed", PollResults(counts=(2, 1), ballots=3))),
        ev.CommentPinned(stage=stage, at=t0 + 8.0, comment=c1),
        ev.PublishingStarted(
            stage=stage, at=t0 + 9.0, participant=SPEAKER.participant_id, kinds=("video",), source="screen"
        ),
        ev.PublishingStopped(stage=stage, at=t0 + 12.0, participant=SPEAKER.participant_id, source="screen"),
        ev.QuestionUpdated(
            stage=stage,
            at=t0 + 12.5,
            question=_question("q-1", AUDIENCE, "Which dose first?", t0 + 5, "answered", 2),
        ),
        ev.CommentPosted(
            stage=stage, at=t0 + 13.0, comment=_comment("c-4", SPEAKER, "Slides follow by mail", t0 + 13)
        ),
        ev.CommentPosted(
            stage=stage, at=t0 + 13.5, comment=_comment("c-5", AUDIENCE, "oops wrong chat", t0 + 13.5)
        ),
        ev.CommentDeleted(stage=stage, at=t0 + 14.0, comment_id="c-5", by=HOST.participant_id),
        ev.PublishingStopped(stage=stage, at=t0 + 15.0, participant=QUIET.participant_id),
    ]


def standard_session(
    root: Path,
    stage: str,
    session_id: str,
    *,
    t0: float = 1_796_000_000.0,
    club_id: str | None = None,
    video_s: float | None = VIDEO_S,
) -> Path:
    return write_session(
        root,
        stage,
        session_id,
        PEOPLE,
        standard_events(stage, t0),
        started_at=t0,
        stopped_at=t0 + SESSION_S,
        club_id=club_id,
        video_s=video_s,
    )
