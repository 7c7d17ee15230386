"""The session report: who attended and how long, polls and quizzes with answers and scores, questions.

A pure reading of one session directory (``manifest.json``, ``timeline.msgpack`` or ``timeline.json``,
``consent.jsonl``): :func:`build` gives a dict (the JSON of docs/recording.md, "Session report"),
:func:`to_csv` its tables. Nothing is written; the same session gives the same report.

Consent decides what appears under a name (docs/recording.md): a person is *named* when their last
decision in the ledger grants ``share`` (``SharePolicy``); their answers, scores and questions also
need to have been recorded under ``comments`` (the timeline keeps only placeholders otherwise).
Everyone else is counted, never named: every total covers everyone.

What the recorder sealed with a person's key (recording/items.py) is opened with the ``ring`` given;
a person whose key is gone (erased) is counted anonymously, never named, and their sealed answers
count only in the anonymous totals. ``names`` (identity -> current display name, a correction) is
preferred over the name the recording stored.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recording.items import Names, Opener
from recording.sharing import SharePolicy
from recording.timeline import read
from recording.vault import ERASED, KeyRing

__all__ = ["REPORT_VERSION", "TABLES", "ReportError", "build", "build_parts", "to_csv"]

REPORT_VERSION = 1
TABLES = ("attendees", "questions")


class ReportError(Exception):
    """The directory is not a session this can report on (no manifest, or an unreadable one)."""


@dataclass
class _Person:
    """One attendee: an identity when named, else the session's pseudonym (or a participant id)."""

    key: str
    named: bool
    name: str = ""
    role: str = ""
    participant_ids: list[str] = field(default_factory=list)
    intervals: list[list[Any]] = field(default_factory=list)  # [joined_at, left_at | None, pid]


def build(
    session_dir: str | Path, *, ring: KeyRing | None = None, names: Names | None = None
) -> dict[str, Any]:
    """The report of the session in ``session_dir``; raises ``ReportError`` when it has no manifest.
    ``ring``: the people's live keys (None: none, everything sealed reads as erased)."""
    root = Path(session_dir)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{root}: no readable manifest.json ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ReportError(f"{root}: manifest.json is not an object")
    ring = ring if ring is not None else KeyRing()
    try:
        policy = SharePolicy.of_session(root, ring=ring)
    except ValueError as exc:
        raise ReportError(f"{root}: the consent ledger is unreadable ({exc})") from exc
    opener = Opener(ring)
    events = [opener.event(e) for e in _events(root)]
    return _Report(manifest, policy, events, opener, names).build()


def build_parts(
    manifest: dict[str, Any],
    policy: SharePolicy,
    events: list[dict[str, Any]],
    *,
    names: Names | None = None,
) -> dict[str, Any]:
    """``build`` from a session already read and opened (the subject access export reads with its own
    policy and the person's key alone)."""
    return _Report(manifest, policy, events, Opener(KeyRing()), names).build()


def _events(root: Path) -> list[dict[str, Any]]:
    """The timeline as recorded (msgpack), else its JSON export; none after a deletion."""
    if (root / "timeline.msgpack").is_file():
        return [e for e in read(root / "timeline.msgpack") if isinstance(e, dict)]
    if (root / "timeline.json").is_file():
        data = json.loads((root / "timeline.json").read_text(encoding="utf-8"))
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    return []


class _Report:
    def __init__(
        self,
        manifest: dict[str, Any],
        policy: SharePolicy,
        events: list[dict[str, Any]],
        opener: Opener,
        names: Names | None,
    ) -> None:
        self.manifest = manifest
        self.names = names
        self.policy = policy
        self.events = events
        self.started_at = float(manifest.get("started_at") or 0.0)
        stopped = manifest.get("stopped_at")
        last = max((float(e.get("at") or 0.0) for e in events), default=self.started_at)
        # A session a crash cut short ends, for attendance, with the last thing it recorded.
        self.ended_at = float(stopped) if stopped is not None else max(last, self.started_at)
        self.info: dict[str, dict[str, Any]] = {}
        for p in manifest.get("participants") or []:
            if isinstance(p, dict):
                name = opener.value(p.get("name"), "name")
                self.info[str(p.get("participant_id"))] = {**p, "name": None if name is ERASED else name}
        self.pseudonyms: dict[str, str] = {}  # participant id -> person pseudonym, from the timeline
        self.people: dict[str, _Person] = {}

    # --- who is who ------------------------------------------------------------------------------

    def named(self, pid: str) -> bool:
        return self.policy.shared(pid) and self.policy.identity(pid) is not None

    def person(self, pid: str) -> _Person:
        identity = self.policy.identity(pid)
        if identity is not None and self.named(pid):
            key, named = "id:" + identity, True
        else:
            pseudonym = self.pseudonyms.get(pid) or self.info.get(pid, {}).get("person")
            key, named = ("anon:" + str(pseudonym or "pid:" + pid)), False
        person = self.people.get(key)
        if person is None:
            person = self.people[key] = _Person(key, named)
        info = self.info.get(pid, {})
        corrected = self.names(identity) if named and identity is not None and self.names else None
        person.name = str(corrected or info.get("name") or person.name)
        person.role = str(info.get("role") or person.role)
        if pid not in person.participant_ids:
            person.participant_ids.append(pid)
        return person

    # --- the report ------------------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        m = self.manifest
        attendance = self.attendance()  # first: it learns the pseudonyms the rest uses
        polls = self.polls()
        return {
            "version": REPORT_VERSION,
            "stage_id": m.get("stage_id"),
            "session_id": m.get("session_id"),
            "title": m.get("title"),
            "status": m.get("status"),
            "started_at": self.started_at,
            "stopped_at": m.get("stopped_at"),
            "policy_version": m.get("policy_version"),
            "media_deleted": m.get("status") == "deleted",
            "attendance": attendance,
            "polls": polls,
            "quiz": self.quiz(polls),
            "questions": self.questions(),
        }

    def attendance(self) -> dict[str, Any]:
        open_: dict[str, list[Any]] = {}  # pid -> its open interval
        for entry in self.manifest.get("present_at_start") or [] if self.events else []:
            pid = str(entry.get("participant_id"))
            if entry.get("person"):
                self.pseudonyms[pid] = str(entry["person"])
            if pid not in open_:
                open_[pid] = self._open(pid, self.started_at)
        for event in self.events:
            type_, at = event.get("type"), float(event.get("at") or 0.0)
            if type_ == "participant.joined":
                pid = str(event.get("participant") or event.get("participant_id"))
                if pid not in open_:
                    open_[pid] = self._open(pid, at)
            elif type_ == "participant.left":
                pid = str(event.get("participant_id") or event.get("participant"))
                interval = open_.pop(pid, None)
                if interval is None:  # present at the start of a session recorded without present_at_start
                    interval = self._open(pid, self.started_at)
                interval[1] = at
        for pid in self.info if self.events else ():  # noted, no event: there all along (older sessions)
            if not any(pid in person.participant_ids for person in self.people.values()):
                open_[pid] = self._open(pid, self.started_at)
        for interval in open_.values():
            interval[1] = self.ended_at
        people = sorted(self.people.values(), key=lambda p: (p.name.casefold(), p.key))
        named = [self._attendee(p) for p in people if p.named]
        anonymous = [p for p in people if not p.named]
        total = sum(_seconds(p) for p in people)
        return {
            "attendees": len(people),
            "named": len(named),
            "anonymous": len(anonymous),
            "total_s": round(total, 3),
            "anonymous_total_s": round(sum(_seconds(p) for p in anonymous), 3),
            "people": named,
        }

    def _open(self, pid: str, at: float) -> list[Any]:
        interval: list[Any] = [at, None, pid]
        self.person(pid).intervals.append(interval)
        return interval

    def _attendee(self, p: _Person) -> dict[str, Any]:
        intervals = sorted(p.intervals, key=lambda i: i[0])
        return {
            "identity": p.key.removeprefix("id:"),
            "name": p.name,
            "role": p.role,
            "participant_ids": p.participant_ids,
            "intervals": [
                {"participant_id": pid, "joined_at": start, "left_at": end} for start, end, pid in intervals
            ],
            "total_s": round(_seconds(p), 3),
        }

    def _who(self, pid: str) -> dict[str, str] | None:
        """Name and identity of a participant whose recorded content may appear under their name."""
        if not self.named(pid):
            return None
        person = self.person(pid)
        return {"identity": person.key.removeprefix("id:"), "name": person.name}

    def polls(self) -> list[dict[str, Any]]:
        polls: dict[str, dict[str, Any]] = {}
        for event in self.events:
            type_ = event.get("type")
            if type_ in ("poll.created", "poll.opened", "poll.closed"):
                view = event.get("poll") or {}
                poll = polls.setdefault(str(view.get("id")), _poll(view))
                for name in ("question", "options", "multiple", "anonymous", "quiz"):
                    if name in view:
                        poll[name] = view[name]
                if view.get("correct") is not None:
                    poll["correct"] = list(view["correct"])
                if type_ == "poll.opened":
                    poll["opened_at"] = event.get("at")
                if type_ == "poll.closed":
                    poll["closed_at"] = event.get("at")
                    results = view.get("results") or {}
                    poll["ballots"] = int(results.get("ballots") or 0)
                    poll["counts"] = list(results.get("counts") or [])
                    if results.get("correct") is not None:
                        poll["correct"] = list(results["correct"])
            elif type_ == "poll.counts":  # live counts: what a poll still open at the stop had
                poll = polls.setdefault(str(event.get("poll_id")), _poll({"id": event.get("poll_id")}))
                if poll["closed_at"] is None:
                    poll["ballots"] = int(event.get("ballots") or 0)
                    poll["counts"] = list(event.get("counts") or [])
            elif type_ == "poll.voters":
                poll = polls.setdefault(str(event.get("poll_id")), _poll({"id": event.get("poll_id")}))
                for pid, choices in (event.get("voters") or {}).items():
                    who = self._who(pid)
                    if who is not None:
                        poll["answers"].append({**who, "participant_id": pid, "choices": list(choices)})
            elif type_ == "quiz.result":
                poll = polls.setdefault(str(event.get("poll_id")), _poll({"id": event.get("poll_id")}))
                poll["results"].append(event)
        for poll in polls.values():
            results = poll.pop("results")
            correct_by_pid = {
                str(r.get("participant_id")): bool(r.get("correct"))
                for r in results
                if not r.get("redacted") and not r.get("erased")
            }
            for answer in poll["answers"]:
                answer["correct"] = correct_by_pid.get(answer["participant_id"]) if poll["quiz"] else None
            named = {a["participant_id"] for a in poll["answers"]}
            if poll["quiz"]:
                poll["correct_ballots"] = sum(bool(r.get("correct")) for r in results)
                for pid, right in correct_by_pid.items():  # an anonymous quiz: scores, never choices
                    who = self._who(pid)
                    if who is not None and pid not in named:
                        poll["answers"].append(
                            {**who, "participant_id": pid, "choices": None, "correct": right}
                        )
            poll["anonymous_answers"] = max(0, poll["ballots"] - len(poll["answers"]))
        return list(polls.values())

    def quiz(self, polls: list[dict[str, Any]]) -> dict[str, Any]:
        scores: dict[str, dict[str, Any]] = {}
        quizzes = answered = correct = 0
        for poll in polls:
            if not poll["quiz"] or poll.get("closed_at") is None:
                continue
            quizzes += 1
            answered += poll["ballots"]
            correct += poll["correct_ballots"]
            for answer in poll["answers"]:
                score = scores.setdefault(
                    answer["identity"],
                    {"identity": answer["identity"], "name": answer["name"], "answered": 0, "correct": 0},
                )
                score["answered"] += 1
                score["correct"] += bool(answer["correct"])
        named = sorted(scores.values(), key=lambda s: (-s["correct"], s["name"].casefold(), s["identity"]))
        return {
            "quizzes": quizzes,
            "answers": answered,
            "correct": correct,
            "scores": named,
            "anonymous_answers": answered - sum(s["answered"] for s in named),
            "anonymous_correct": correct - sum(s["correct"] for s in named),
        }

    def questions(self) -> dict[str, Any]:
        """Every question with its time, status and votes; author and text only under a name."""
        questions: dict[str, dict[str, Any]] = {}
        authors: dict[str, tuple[str, Any]] = {}
        for event in self.events:
            if event.get("type") not in ("question.asked", "question.updated"):
                continue
            q = event.get("question") or {}
            qid = str(q.get("id"))
            entry = questions.setdefault(
                qid,
                {"question_id": q.get("id"), "asked_at": q.get("at"), "status": "open", "votes": 0,
                 "answered_at": None, "identity": None, "name": None, "text": None},
            )  # fmt: skip
            entry["status"] = q.get("status", entry["status"])
            entry["votes"] = q.get("votes", entry["votes"])
            if event.get("type") == "question.updated" and q.get("status") == "answered":
                entry["answered_at"] = entry["answered_at"] or event.get("at")
            if not q.get("redacted") and q.get("author_id") is not None:
                authors[qid] = (str(q["author_id"]), q.get("text"))
        for qid, (pid, text) in authors.items():
            who = self._who(pid)
            if who is not None:
                questions[qid].update(who, text=text)
        items = sorted(questions.values(), key=lambda q: (q["asked_at"] or 0.0, str(q["question_id"])))
        statuses = [q["status"] for q in items]
        named = sum(q["identity"] is not None for q in items)
        return {
            "asked": len(items),
            "answered": statuses.count("answered"),
            "dismissed": statuses.count("dismissed"),
            "open": statuses.count("open"),
            "named": named,
            "anonymous": len(items) - named,
            "items": items,
        }


def _poll(view: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "poll_id": view.get("id"),
        "question": view.get("question"),
        "options": list(view.get("options") or []),
        "multiple": bool(view.get("multiple")),
        "anonymous": bool(view.get("anonymous", True)),
        "quiz": bool(view.get("quiz")),
        "correct": None,
        "opened_at": None,
        "closed_at": None,
        "ballots": 0,
        "counts": [],
        "answers": [],
        "anonymous_answers": 0,
        "correct_ballots": None,
        "results": [],
    }


def _seconds(person: _Person) -> float:
    return float(sum(max(0.0, (end or start) - start) for start, end, _ in person.intervals))


# --- CSV ---------------------------------------------------------------------------------------------


def to_csv(report: Mapping[str, Any], table: str = "attendees") -> str:
    """One table of the report as CSV: ``attendees`` (a row per named attendee, then one row for everyone
    counted anonymously; a column per poll and quiz) or ``questions`` (a row per question)."""
    if table not in TABLES:
        raise ValueError(f"table is one of {', '.join(TABLES)}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if table == "questions":
        writer.writerow(
            ["question_id", "asked_at", "status", "votes", "answered_at", "identity", "name", "text"]
        )
        for q in report["questions"]["items"]:
            writer.writerow(
                [q["question_id"], _iso(q["asked_at"]), q["status"], q["votes"], _iso(q["answered_at"]),
                 q["identity"] or "", q["name"] or "", q["text"] or ""]
            )  # fmt: skip
        return out.getvalue()
    polls = report["polls"]
    header = ["identity", "name", "role", "people", "first_joined_at", "last_left_at", "total_s", "intervals"]
    header += ["quiz_answered", "quiz_correct"]
    header += [f"{'quiz' if p['quiz'] else 'poll'} {p['poll_id']}" for p in polls]
    writer.writerow(header)
    scores = {s["identity"]: s for s in report["quiz"]["scores"]}
    answers = {p["poll_id"]: {a["identity"]: a for a in p["answers"]} for p in polls}
    attendance = report["attendance"]
    for person in attendance["people"]:
        intervals = person["intervals"]
        score = scores.get(person["identity"], {"answered": 0, "correct": 0})
        row = [
            person["identity"],
            person["name"],
            person["role"],
            1,
            _iso(intervals[0]["joined_at"]) if intervals else "",
            _iso(intervals[-1]["left_at"]) if intervals else "",
            person["total_s"],
            "; ".join(f"{_iso(i['joined_at'])}/{_iso(i['left_at'])}" for i in intervals),
            score["answered"],
            score["correct"],
        ]
        row += [_answer(p, answers[p["poll_id"]].get(person["identity"])) for p in polls]
        writer.writerow(row)
    quiz = report["quiz"]
    writer.writerow(
        ["", "(anonymous)", "", attendance["anonymous"], "", "", attendance["anonymous_total_s"], "",
         quiz["anonymous_answers"], quiz["anonymous_correct"]]
        + [p["anonymous_answers"] for p in polls]
    )  # fmt: skip
    return out.getvalue()


def _answer(poll: Mapping[str, Any], answer: Mapping[str, Any] | None) -> str:
    """A named attendee's cell for one poll: the options chosen (labels), ``correct``/``wrong`` for a quiz."""
    if answer is None:
        return ""
    parts = []
    if answer.get("choices") is not None:
        options = poll["options"]
        parts.append(" | ".join(options[i] if 0 <= i < len(options) else str(i) for i in answer["choices"]))
    if poll["quiz"] and answer.get("correct") is not None:
        parts.append("correct" if answer["correct"] else "wrong")
    return ": ".join(parts)


def _iso(at: Any) -> str:
    if not isinstance(at, int | float):
        return ""
    return datetime.fromtimestamp(float(at), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
