"""recording/report.py on a session the recorder wrote from a real domain stage (tests/recording/recorded.py):
attendance with a reconnect, a named poll, an anonymous quiz, questions; only people whose last
decision grants ``share`` are named, everyone is counted; the CSV read back says the same."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from media.peer import MediaConfig
from media.room import MediaRoom
from recording.report import ReportError, build, to_csv
from recording.session import SessionRecorder
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage, StageSettings
from tests.conftest import ROOT
from tests.recording.recorded import T0, Recorded, record_session


@pytest.fixture
async def recorded(tmp_path: Path) -> Recorded:
    return await record_session(tmp_path / "recordings", None)


def people(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["identity"]: p for p in report["attendance"]["people"]}


async def test_attendance_names_who_shared_and_counts_everyone(recorded: Recorded) -> None:
    report = build(recorded.session)
    attendance = report["attendance"]
    # Host, Alice (two connections, one person), Bob, Carol, Dave.
    assert (attendance["attendees"], attendance["named"], attendance["anonymous"]) == (5, 2, 3)
    named = people(report)
    assert set(named) == {"host@x", "alice@x"}
    alice = named["alice@x"]
    assert [(i["joined_at"] - T0, i["left_at"] - T0) for i in alice["intervals"]] == [(0, 20), (30, 60)]
    assert alice["participant_ids"] == ["p-alice", "p-alice-2"] and alice["total_s"] == 50
    assert named["host@x"]["total_s"] == 60 and named["host@x"]["role"] == "host"
    # Bob 60 s, Carol 50 s, Dave 55 s: counted, not named; the totals hold everyone.
    assert attendance["anonymous_total_s"] == 60 + 50 + 55
    assert attendance["total_s"] == 60 + 50 + 165
    text = json.dumps(report)
    for hidden in ("bob@x", "carol@x", "dave@x", "Bob", "Carol", "Dave", "p-bob", "p-carol", "p-dave"):
        assert hidden not in text, hidden


async def test_polls_quiz_and_questions_name_only_shared_answers(recorded: Recorded) -> None:
    report = build(recorded.session)
    polls = {p["poll_id"]: p for p in report["polls"]}
    poll = polls["poll-1"]
    assert poll["counts"] == [1, 2] and poll["ballots"] == 3 and not poll["quiz"]
    assert [(a["identity"], a["choices"]) for a in poll["answers"]] == [("alice@x", [1])]
    assert poll["anonymous_answers"] == 2

    quiz = polls["quiz-1"]
    assert quiz["quiz"] and quiz["anonymous"] and quiz["correct"] == [1]
    assert quiz["correct_ballots"] == 2  # Alice and Bob right, Carol (a placeholder) wrong
    assert [(a["identity"], a["choices"], a["correct"]) for a in quiz["answers"]] == [("alice@x", None, True)]
    assert report["quiz"] == {
        "quizzes": 1,
        "answers": 3,
        "correct": 2,
        "scores": [{"identity": "alice@x", "name": "Alice", "answered": 1, "correct": 1}],
        "anonymous_answers": 2,
        "anonymous_correct": 1,
    }

    questions = report["questions"]
    assert (questions["asked"], questions["answered"], questions["open"]) == (2, 1, 1)
    assert (questions["named"], questions["anonymous"]) == (1, 1)
    first, second = questions["items"]
    assert (first["identity"], first["text"], first["status"]) == (
        "alice@x",
        "What about beta blockers?",
        "answered",
    )
    assert first["answered_at"] == T0 + 16
    assert (second["identity"], second["text"], second["status"]) == (None, None, "open")
    assert "secret" not in json.dumps(report)


async def test_the_csv_reads_back_with_the_same_totals(recorded: Recorded) -> None:
    report = build(recorded.session)
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [r["name"] for r in rows] == ["Alice", "Dr Host", "(anonymous)"]
    assert sum(int(r["people"]) for r in rows) == 5
    assert sum(float(r["total_s"]) for r in rows) == report["attendance"]["total_s"]
    alice = rows[0]
    assert alice["identity"] == "alice@x" and alice["intervals"].count(";") == 1
    assert alice["first_joined_at"] == "2026-11-26T14:23:20Z"  # T0 in UTC, to the second
    assert (alice["poll poll-1"], alice["quiz quiz-1"]) == ("B", "correct")
    assert (alice["quiz_answered"], alice["quiz_correct"]) == ("1", "1")
    anonymous = rows[-1]
    assert (anonymous["people"], anonymous["poll poll-1"], anonymous["quiz_correct"]) == ("3", "2", "1")

    questions = list(csv.DictReader(io.StringIO(to_csv(report, "questions"))))
    assert [(q["question_id"], q["name"], q["text"]) for q in questions] == [
        ("q-a", "Alice", "What about beta blockers?"),
        ("q-b", "", ""),
    ]
    with pytest.raises(ValueError):
        to_csv(report, "people")


async def test_the_command_line_prints_json_and_csv(recorded: Recorded) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recording", "report", *args], cwd=ROOT, capture_output=True, text=True
        )

    out = run(str(recorded.session))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == build(recorded.session)
    out = run(str(recorded.session), "--format", "csv", "--table", "questions")
    assert out.returncode == 0 and out.stdout.startswith("question_id,"), out.stderr
    out = run(str(recorded.session.parent / "nope"))
    assert out.returncode == 2 and "no session directory" in out.stderr


def test_a_directory_without_a_manifest_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError):
        build(tmp_path)


async def test_a_poll_still_open_at_the_stop_reports_its_live_counts(tmp_path: Path) -> None:
    stage = Stage("cardio", "Cardiology", T0, settings=StageSettings(recording_mode="manual"))
    stage.join("p-host", "Dr Host", Role.HOST, T0, identity="host@x")
    stage.join("p-a", "A", Role.AUDIENCE, T0, identity="a@x")
    media = MediaRoom("cardio", MediaConfig(), lambda pid, message: None)
    events = stage.start_recording("p-host", "rec-open", T0)
    recorder = SessionRecorder(tmp_path, stage, media, "rec-open", T0, lambda reason: None)
    recorder.on_events(events)
    for batch in (
        stage.create_poll("p-host", "poll-open", PollSpec("Still open?", ("yes", "no")), T0 + 1),
        stage.open_poll("p-host", "poll-open", T0 + 1),
        stage.vote("p-a", "poll-open", [0], T0 + 2),
        stage.stop_recording("p-host", T0 + 3),
    ):
        recorder.on_events(batch)
    await recorder.stop(T0 + 3)
    (poll,) = build(recorder.dir)["polls"]
    assert (poll["counts"], poll["ballots"], poll["closed_at"]) == ([1, 0], 1, None)
    assert poll["answers"] == [] and poll["anonymous_answers"] == 1  # nobody shared anything
