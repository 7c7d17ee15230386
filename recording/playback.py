"""What the playback page shows beside the composite export: chapters, markers and the comment replay.

Built from a session's timeline, its manifest and its ``SharePolicy`` by a pure function (``build``):
no clock, no I/O but ``of_session``'s reading of the three files. Times are seconds from the export's
t=0 (``export_origin``), so a marker's ``t`` is a ``currentTime`` of the composite video.

Only what may be shown to attendees is kept (docs/recording.md, "Playback"): a comment, question or
named vote whose author's last decision does not grant ``share`` is left out; redacted placeholders
(no ``comments`` consent when it happened) are never shown; a poll's counts stay (they are anonymous).
People who did not grant ``share`` are not named: a marker says "A speaker".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from msgspec import Struct

from recording import timeline
from recording.profiles import Names
from recording.sharing import SharePolicy

__all__ = [
    "Chapter",
    "CommentItem",
    "Marker",
    "Playback",
    "PollSummary",
    "QuestionSummary",
    "Voter",
    "build",
    "export_origin",
    "load_events",
    "of_session",
]

UNNAMED = "A speaker"
# Changes of who is on stage closer than this to the chapter before merge into it: a panel going on
# stage one by one is one chapter, not four of a second each.
CHAPTER_MERGE_S = 2.0

MarkerKind = Literal[
    "speaker.joined",
    "speaker.left",
    "screen.started",
    "screen.stopped",
    "poll.opened",
    "poll.closed",
    "question.asked",
    "question.answered",
    "comment.pinned",
]


class CommentItem(Struct, kw_only=True):
    """A comment of the replay: shown once the video's ``currentTime`` reaches ``t``."""

    id: str
    t: float
    author_name: str
    text: str


class QuestionSummary(Struct, kw_only=True):
    id: str
    text: str
    author_name: str
    votes: int
    status: str  # open | answered | dismissed, as when the marker happened


class Voter(Struct, kw_only=True):
    """A named (non-anonymous) poll's voter who granted ``share``; choices are option indexes."""

    name: str
    choices: list[int]


class PollSummary(Struct, kw_only=True):
    id: str
    question: str
    options: list[str]
    quiz: bool
    anonymous: bool
    counts: list[int] | None = None  # the results, on ``poll.closed``
    ballots: int | None = None
    correct: list[int] | None = None  # a quiz's right options
    voters: list[Voter] = []  # named polls only, and only who granted ``share``
    withheld_voters: int = 0  # named voters not shown (no ``share``, or no ``comments`` consent)


class Marker(Struct, kw_only=True, omit_defaults=True):
    """A point of the video worth jumping to; clicking it seeks to ``t``."""

    t: float
    kind: MarkerKind
    label: str
    participant_id: str | None = None  # who, for speaker and screen markers (only when named)
    poll: PollSummary | None = None
    question: QuestionSummary | None = None
    comment: CommentItem | None = None


class Chapter(Struct, kw_only=True):
    """A stretch of the video with the same people on stage (and the same screen share)."""

    t: float
    end: float | None
    title: str


class Playback(Struct, kw_only=True):
    """The playback page's data for one session (``GET /api/recordings/{session}/playback``)."""

    session_id: str
    stage_id: str
    title: str | None
    origin_at: float  # the wall-clock time of the export's t=0 (``export_origin``)
    duration_s: float | None  # of the export (its state), else from the origin to the session's stop
    video_url: str | None = None  # filled in by the server: where the page loads the export
    video_ready: bool = False
    chapters: list[Chapter] = []
    markers: list[Marker] = []
    comments: list[CommentItem] = []


def export_origin(manifest: Mapping[str, Any], policy: SharePolicy) -> float:
    """The wall-clock time of the composite export's t=0: the earliest ``first_frame_at`` of the
    tracks it shows (their owner granted ``share``, and they hold frames), else the session's
    ``started_at``. The export places each track at ``first_frame_at - origin``
    (recording/composite/plan.py); one definition for the export and the page."""
    firsts = [
        float(track["first_frame_at"])
        for track in manifest.get("tracks") or ()
        if isinstance(track.get("first_frame_at"), int | float)
        and track.get("frames")
        and policy.track_shared(track)
    ]
    return min(firsts) if firsts else float(manifest["started_at"])


def exported_origin(session_dir: Path) -> tuple[float, float | None] | None:
    """The origin (and duration) the export wrote into ``exports/composite.json``: the t=0 of the file
    actually served, which a consent decision made since may have moved (until it is exported again)."""
    try:
        state = json.loads((session_dir / "exports" / "composite.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    origin = state.get("origin") if isinstance(state, dict) else None
    if isinstance(origin, bool) or not isinstance(origin, int | float):
        return None
    duration = state.get("duration_s")
    return float(origin), float(duration) if isinstance(duration, int | float) else None


def load_events(session_dir: Path) -> list[dict[str, Any]]:
    """The session's timeline: ``timeline.msgpack`` (complete while recording, and after a crash),
    else ``timeline.json``."""
    packed = session_dir / "timeline.msgpack"
    if packed.is_file():
        return [e for e in timeline.read(packed) if isinstance(e, dict)]
    exported = session_dir / "timeline.json"
    if exported.is_file():
        data = json.loads(exported.read_text(encoding="utf-8"))
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    return []


def of_session(
    session_dir: Path, manifest: Mapping[str, Any] | None = None, *, names: Names | None = None
) -> Playback:
    """``build`` from the session's files, in seconds of its export when there is one."""
    if manifest is None:
        manifest = json.loads((session_dir / "manifest.json").read_text(encoding="utf-8"))
    exported = exported_origin(session_dir)
    origin, duration = exported if exported is not None else (None, None)
    policy = SharePolicy.of_session(session_dir)
    return build(manifest, load_events(session_dir), policy, origin=origin, duration_s=duration, names=names)


def build(
    manifest: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    policy: SharePolicy,
    *,
    origin: float | None = None,
    duration_s: float | None = None,
    names: Names | None = None,
) -> Playback:
    """Chapters, markers and comments of a session, filtered by ``policy`` (module docstring).
    ``origin``: the export's t=0 if known (else ``export_origin``); ``duration_s``: the export's;
    ``names``: people's corrected display names (recording/profiles.py), preferred to the stored ones."""
    return _Builder(manifest, policy, origin, duration_s, names).run(events)


class _Builder:
    def __init__(
        self,
        manifest: Mapping[str, Any],
        policy: SharePolicy,
        origin: float | None,
        duration: float | None,
        names: Names | None = None,
    ) -> None:
        self.policy = policy
        self.corrected = names
        self.origin = export_origin(manifest, policy) if origin is None else origin
        stopped = manifest.get("stopped_at")
        if duration is None and isinstance(stopped, int | float):
            duration = max(0.0, float(stopped) - self.origin)
        self.duration = None if duration is None else round(duration, 3)
        self.manifest = manifest
        self.names: dict[str, str] = {}
        for person in manifest.get("participants") or ():
            pid, name = person.get("participant_id"), person.get("name")
            if isinstance(pid, str) and isinstance(name, str):
                self.names[pid] = name
        self.markers: list[Marker] = []
        self.comments: dict[str, CommentItem] = {}
        self.polls: dict[str, PollSummary] = {}
        self.voters: dict[str, dict[str, list[int]]] = {}  # poll -> participant -> choices
        self.withheld: dict[str, int] = {}  # poll -> named voters redacted when recorded
        self.answered: set[str] = set()
        self.on_stage: list[str] = []  # in the order they went on
        self.sharing: str | None = None
        self.chapters: list[Chapter] = []

    # --- helpers ---------------------------------------------------------------------------------

    def t(self, at: Any) -> float:
        try:
            return round(max(0.0, float(at) - self.origin), 3)
        except (TypeError, ValueError):
            return 0.0

    def shown(self, pid: Any) -> bool:
        return isinstance(pid, str) and self.policy.shared(pid)

    def name(self, pid: str) -> str:
        return self.stored_or_corrected(pid, self.names.get(pid, UNNAMED)) if self.shown(pid) else UNNAMED

    def stored_or_corrected(self, pid: Any, stored: str) -> str:
        """The person's corrected name if they have one, else the name stored with the recording."""
        identity = self.policy.identity(pid) if isinstance(pid, str) else None
        corrected = self.corrected(identity) if self.corrected is not None and identity is not None else None
        return corrected or stored

    def item(self, data: Any) -> Mapping[str, Any] | None:
        """A comment's or question's object, if it may be shown: not a placeholder, author sharing."""
        if not isinstance(data, Mapping) or data.get("redacted") or not self.shown(data.get("author_id")):
            return None
        return data

    # --- the run -----------------------------------------------------------------------------------

    def run(self, events: Iterable[Mapping[str, Any]]) -> Playback:
        self._initial_stage(events := list(events))
        self._chapter(0.0)
        for event in events:
            handler = getattr(self, "_" + str(event.get("type", "")).replace(".", "_"), None)
            if handler is not None:
                handler(event, self.t(event.get("at")))
        if self.chapters and self.duration is not None:
            self.chapters[-1].end = self.duration
        markers = sorted(self.markers, key=lambda m: m.t)  # stable: same-time markers keep log order
        return Playback(
            session_id=str(self.manifest.get("session_id", "")),
            stage_id=str(self.manifest.get("stage_id", "")),
            title=self.manifest.get("title"),
            origin_at=self.origin,
            duration_s=self.duration,
            chapters=self.chapters,
            markers=markers,
            comments=sorted(self.comments.values(), key=lambda c: c.t),
        )

    def _initial_stage(self, events: list[Mapping[str, Any]]) -> None:
        """Who was on stage when recording started: their camera tracks are captured from the start,
        with no ``publishing.started`` in the timeline before the capture."""
        went_on = {
            e.get("participant")
            for e in events
            if e.get("type") == "publishing.started" and e.get("source", "camera") == "camera"
        }
        for track in self.manifest.get("tracks") or ():
            pid = track.get("participant_id")
            start = track.get("capture_started_at")
            if (
                isinstance(pid, str)
                and track.get("source", "camera") == "camera"
                and pid not in went_on
                and pid not in self.on_stage
                and isinstance(start, int | float)
                and start - self.origin < 1.0
            ):
                self.on_stage.append(pid)

    def _chapter(self, t: float) -> None:
        if self.sharing is not None:
            title = f"{self.name(self.sharing)} shares the screen"
        elif self.on_stage:
            names = [self.name(pid) for pid in self.on_stage]
            title = ", ".join(dict.fromkeys(names))  # several unnamed speakers: "A speaker" once
        else:
            title = "Nobody on stage"
        last = self.chapters[-1] if self.chapters else None
        if last is not None and last.title == title:
            return
        if last is not None and t - last.t < CHAPTER_MERGE_S:
            last.title = title  # the change before was a step of this one
            if len(self.chapters) > 1 and self.chapters[-2].title == title:
                self.chapters.pop()
                self.chapters[-1].end = None
            return
        if last is not None:
            last.end = t
        self.chapters.append(Chapter(t=t, end=None, title=title))

    def _person_marker(self, kind: MarkerKind, pid: str, t: float, label: str) -> None:
        shown = self.shown(pid)
        self.markers.append(Marker(t=t, kind=kind, label=label, participant_id=pid if shown else None))

    # --- one method per event type (the timeline's ``type``, dots as underscores) -----------------

    def _publishing_started(self, event: Mapping[str, Any], t: float) -> None:
        pid = event.get("participant")
        if not isinstance(pid, str):
            return
        if event.get("source", "camera") == "screen":
            self.sharing = pid
            self._person_marker("screen.started", pid, t, f"{self.name(pid)} shares the screen")
        elif pid not in self.on_stage:
            self.on_stage.append(pid)
            self._person_marker("speaker.joined", pid, t, f"{self.name(pid)} went on stage")
        else:
            return
        self._chapter(t)

    def _publishing_stopped(self, event: Mapping[str, Any], t: float) -> None:
        pid = event.get("participant")
        if not isinstance(pid, str):
            return
        if event.get("source", "camera") == "screen":
            if self.sharing != pid:
                return
            self.sharing = None
            self._person_marker("screen.stopped", pid, t, f"{self.name(pid)} stopped sharing")
        elif pid in self.on_stage:
            self.on_stage.remove(pid)
            self._person_marker("speaker.left", pid, t, f"{self.name(pid)} left the stage")
        else:
            return
        self._chapter(t)

    def _comment_posted(self, event: Mapping[str, Any], t: float) -> None:
        data = self.item(event.get("comment"))
        if data is None:
            return
        self.comments[str(data.get("id"))] = CommentItem(
            id=str(data.get("id")),
            t=t,
            author_name=self.stored_or_corrected(data.get("author_id"), str(data.get("author_name", ""))),
            text=str(data.get("text", "")),
        )

    def _comment_deleted(self, event: Mapping[str, Any], t: float) -> None:
        """A moderator took it down live: it is not replayed either (nor its pin)."""
        comment_id = str(event.get("comment_id"))
        self.comments.pop(comment_id, None)
        self.markers = [m for m in self.markers if m.comment is None or m.comment.id != comment_id]

    def _comment_pinned(self, event: Mapping[str, Any], t: float) -> None:
        data = self.item(event.get("comment"))
        if data is None:
            return
        comment = self.comments.get(str(data.get("id"))) or CommentItem(
            id=str(data.get("id")),
            t=t,
            author_name=self.stored_or_corrected(data.get("author_id"), str(data.get("author_name", ""))),
            text=str(data.get("text", "")),
        )
        self.markers.append(
            Marker(t=t, kind="comment.pinned", label=f"Pinned: {comment.text}", comment=comment)
        )

    def _question(self, data: Mapping[str, Any]) -> QuestionSummary:
        return QuestionSummary(
            id=str(data.get("id")),
            text=str(data.get("text", "")),
            author_name=self.stored_or_corrected(data.get("author_id"), str(data.get("author_name", ""))),
            votes=int(data.get("votes") or 0),
            status=str(data.get("status", "open")),
        )

    def _question_asked(self, event: Mapping[str, Any], t: float) -> None:
        data = self.item(event.get("question"))
        if data is not None:
            question = self._question(data)
            self.markers.append(
                Marker(t=t, kind="question.asked", label=f"Q: {question.text}", question=question)
            )

    def _question_updated(self, event: Mapping[str, Any], t: float) -> None:
        data = self.item(event.get("question"))
        if data is None or data.get("status") != "answered" or str(data.get("id")) in self.answered:
            return
        self.answered.add(str(data.get("id")))
        question = self._question(data)
        self.markers.append(
            Marker(t=t, kind="question.answered", label=f"Answered: {question.text}", question=question)
        )

    def _poll(self, data: Any) -> PollSummary | None:
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            return None
        summary = PollSummary(
            id=data["id"],
            question=str(data.get("question", "")),
            options=[str(o) for o in data.get("options") or ()],
            quiz=bool(data.get("quiz")),
            anonymous=bool(data.get("anonymous", True)),
        )
        self.polls[summary.id] = summary
        return summary

    def _poll_opened(self, event: Mapping[str, Any], t: float) -> None:
        poll = self._poll(event.get("poll"))
        if poll is not None:
            self.markers.append(Marker(t=t, kind="poll.opened", label=f"Poll: {poll.question}", poll=poll))

    def _poll_voters(self, event: Mapping[str, Any], t: float) -> None:
        poll_id = event.get("poll_id")
        voters = event.get("voters")
        if isinstance(poll_id, str) and isinstance(voters, Mapping):
            self.voters[poll_id] = {str(p): list(c) for p, c in voters.items() if isinstance(c, list | tuple)}
            self.withheld[poll_id] = int(event.get("redacted_voters") or 0)

    def _poll_closed(self, event: Mapping[str, Any], t: float) -> None:
        data = event.get("poll")
        poll = self._poll(data)
        if poll is None or not isinstance(data, Mapping):
            return
        results = data.get("results")
        if isinstance(results, Mapping):
            poll.counts = [int(c) for c in results.get("counts") or ()]
            poll.ballots = int(results.get("ballots") or 0)
            correct = results.get("correct")
            poll.correct = [int(c) for c in correct] if isinstance(correct, list | tuple) else None
        if not poll.anonymous:
            named = self.voters.get(poll.id, {})
            shown = {pid: choices for pid, choices in named.items() if self.shown(pid)}
            poll.voters = [
                Voter(name=self.name(pid), choices=[int(c) for c in choices])
                for pid, choices in shown.items()
            ]
            poll.withheld_voters = self.withheld.get(poll.id, 0) + len(named) - len(shown)
        self.markers.append(Marker(t=t, kind="poll.closed", label=f"Results: {poll.question}", poll=poll))


def encode(playback: Playback) -> bytes:
    return msgspec.json.encode(playback)
