"""The session report's JSON (recording/report.py) as msgspec structs: the schema of
``GET /api/stages/{stage_id}/recordings/{session_id}/report`` in /api/openapi.json, and what the tests
convert the report into, so the document and the report cannot drift apart."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

Count = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)]


class AttendanceInterval(Struct, kw_only=True):
    """One connection of the person, clipped to the session (Unix times, seconds)."""

    participant_id: str
    joined_at: float
    left_at: float


class Attendee(Struct, kw_only=True):
    """A person whose last consent decision grants `share`: named, with every connection."""

    identity: str
    name: str
    role: str
    participant_ids: list[str]
    intervals: list[AttendanceInterval]
    total_s: Seconds


class Attendance(Struct, kw_only=True):
    """Everyone is counted (`attendees`, `total_s`); only `named` people are listed."""

    attendees: Count
    named: Count
    anonymous: Count
    total_s: Seconds
    anonymous_total_s: Seconds
    people: list[Attendee]


class PollAnswer(Struct, kw_only=True):
    """A named answer: `choices` for a named (non-anonymous) poll, `correct` for a quiz."""

    identity: str
    name: str
    participant_id: str
    choices: list[int] | None
    correct: bool | None


class ReportPoll(Struct, kw_only=True):
    poll_id: str
    question: str | None
    options: list[str]
    multiple: bool
    anonymous: bool
    quiz: bool
    correct: Annotated[list[int] | None, Meta(description="A quiz's correct options")]
    opened_at: float | None
    closed_at: float | None
    ballots: Count
    counts: list[int]
    answers: list[PollAnswer]
    anonymous_answers: Count
    correct_ballots: Annotated[Count | None, Meta(description="A quiz's exactly-right ballots")]


class QuizScore(Struct, kw_only=True):
    identity: str
    name: str
    answered: Count
    correct: Count


class QuizSummary(Struct, kw_only=True):
    quizzes: Count
    answers: Count
    correct: Count
    scores: list[QuizScore]
    anonymous_answers: Count
    anonymous_correct: Count


class ReportQuestion(Struct, kw_only=True):
    """Every question; `identity`, `name` and `text` only when its author may be named."""

    question_id: str
    asked_at: float | None
    status: Literal["open", "answered", "dismissed"]
    votes: Count
    answered_at: float | None
    identity: str | None
    name: str | None
    text: str | None


class ReportQuestions(Struct, kw_only=True):
    asked: Count
    answered: Count
    dismissed: Count
    open: Count
    named: Count
    anonymous: Count
    items: list[ReportQuestion]


class SessionReport(Struct, kw_only=True):
    """A recording session's report (docs/recording.md, "Session report")."""

    version: Literal[1]
    stage_id: str
    session_id: str
    title: str | None
    status: str
    started_at: float
    stopped_at: float | None
    policy_version: str | None
    media_deleted: bool
    attendance: Attendance
    polls: list[ReportPoll]
    quiz: QuizSummary
    questions: ReportQuestions
