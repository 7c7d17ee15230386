"""Polls and quizzes: draft -> open -> closed (by hand or by timer), one ballot per person, results to
everyone at the close; live counts to moderators (to everyone with ``public_results``); quizzes score
one point per exactly-correct ballot into a leaderboard that lasts the whole session."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rooms.errors import AlreadyVoted, InvalidChoice, InvalidMessage, NotFound, PollClosed
from rooms.events import (
    Event,
    PollCounts,
    PollCreated,
    PollOpened,
    PollVoters,
    QuizLeaderboard,
    QuizResult,
)
from rooms.events import (
    PollClosed as PollClosedEvent,
)
from rooms.text import require_text
from rooms.views import LeaderboardEntry, PollResults, PollView

MIN_OPTIONS, MAX_OPTIONS = 2, 10
OPTION_MAX_CHARS = 200
QUESTION_MAX_CHARS = 500
MIN_DURATION_S, MAX_DURATION_S = 5, 3600


class PollStatus(enum.StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PollSpec:
    """What a moderator asks for in ``poll.create``."""

    question: str
    options: tuple[str, ...]
    multiple: bool = False
    anonymous: bool = True
    duration_s: int | None = None
    public_results: bool = False
    quiz: bool = False
    correct: tuple[int, ...] = ()

    def validate(self) -> None:
        """The rules of docs/protocol.md (``poll.create``); raises ``InvalidMessage``."""
        require_text(self.question, "the question")
        require_text(list(self.options), "options")
        if not self.question.strip() or len(self.question) > QUESTION_MAX_CHARS:
            raise InvalidMessage(f"the question needs 1-{QUESTION_MAX_CHARS} characters")
        if not MIN_OPTIONS <= len(self.options) <= MAX_OPTIONS:
            raise InvalidMessage(f"a poll has {MIN_OPTIONS}-{MAX_OPTIONS} options")
        if any(not o.strip() or len(o) > OPTION_MAX_CHARS for o in self.options):
            raise InvalidMessage(f"each option needs 1-{OPTION_MAX_CHARS} characters")
        if self.duration_s is not None and not MIN_DURATION_S <= self.duration_s <= MAX_DURATION_S:
            raise InvalidMessage(f"duration_s is {MIN_DURATION_S}-{MAX_DURATION_S} seconds, or absent")
        if self.quiz != bool(self.correct):
            raise InvalidMessage("a quiz needs its correct options, and only a quiz has them")
        if len(set(self.correct)) != len(self.correct) or any(
            not 0 <= i < len(self.options) for i in self.correct
        ):
            raise InvalidMessage("correct options must be distinct option indexes")
        if self.quiz and not self.multiple and len(self.correct) != 1:
            raise InvalidMessage("a single-choice quiz has exactly one correct option")


@dataclass(frozen=True, slots=True)
class Ballot:
    participant_id: str
    name: str
    choices: tuple[int, ...]


@dataclass(slots=True)
class Poll:
    id: str
    spec: PollSpec
    created_at: float
    status: PollStatus = PollStatus.DRAFT
    closes_at: float | None = None
    ballots: dict[str, Ballot] = field(default_factory=dict)  # identity -> ballot, in voting order

    def counts(self) -> tuple[int, ...]:
        counts = [0] * len(self.spec.options)
        for ballot in self.ballots.values():
            for i in ballot.choices:
                counts[i] += 1
        return tuple(counts)

    def results(self) -> PollResults:
        correct = self.spec.correct if self.spec.quiz and self.status is PollStatus.CLOSED else None
        return PollResults(counts=self.counts(), ballots=len(self.ballots), correct=correct)

    def view(self, *, moderator: bool) -> PollView:
        """The poll as a moderator or anyone else may see it now."""
        spec = self.spec
        closed = self.status is PollStatus.CLOSED
        show_results = closed or (self.status is PollStatus.OPEN and (moderator or spec.public_results))
        return PollView(
            id=self.id,
            question=spec.question,
            options=spec.options,
            multiple=spec.multiple,
            anonymous=spec.anonymous,
            public_results=spec.public_results,
            quiz=spec.quiz,
            status=str(self.status),
            duration_s=spec.duration_s,
            closes_at=self.closes_at,
            results=self.results() if show_results else None,
            correct=spec.correct if spec.quiz and (moderator or closed) else None,
        )

    def voters(self) -> dict[str, tuple[int, ...]]:
        return {b.participant_id: b.choices for b in self.ballots.values()}

    def is_correct(self, ballot: Ballot) -> bool:
        return set(ballot.choices) == set(self.spec.correct)


@dataclass(slots=True)
class Score:
    participant_id: str
    name: str
    points: int = 0


@dataclass(slots=True)
class Polls:
    stage_id: str
    leaderboard_size: int
    polls: dict[str, Poll] = field(default_factory=dict)  # in creation order
    scores: dict[str, Score] = field(default_factory=dict)  # identity -> quiz score of the session

    def create(self, poll_id: str, spec: PollSpec, now: float) -> list[Event]:
        spec.validate()
        if poll_id in self.polls:
            raise InvalidMessage(f"poll {poll_id} already exists")
        poll = Poll(poll_id, spec, now)
        self.polls[poll_id] = poll
        return [PollCreated(stage=self.stage_id, at=now, poll=poll.view(moderator=True))]

    def open(self, poll_id: str, now: float) -> list[Event]:
        poll = self.get(poll_id)
        if poll.status is PollStatus.CLOSED:
            raise PollClosed(f"poll {poll_id} is closed")
        if poll.status is PollStatus.OPEN:
            return []
        poll.status = PollStatus.OPEN
        poll.closes_at = now + poll.spec.duration_s if poll.spec.duration_s is not None else None
        return [PollOpened(stage=self.stage_id, at=now, poll=poll.view(moderator=False))]

    def vote(
        self, identity: str, participant_id: str, name: str, poll_id: str, choices: list[int], now: float
    ) -> list[Event]:
        poll = self.get(poll_id)
        if poll.status is not PollStatus.OPEN or (poll.closes_at is not None and now >= poll.closes_at):
            raise PollClosed(f"poll {poll_id} is not open")
        n = len(poll.spec.options)
        if not choices or len(set(choices)) != len(choices) or any(not 0 <= c < n for c in choices):
            raise InvalidChoice(f"choices are distinct indexes 0-{n - 1}")
        if not poll.spec.multiple and len(choices) != 1:
            raise InvalidChoice("this poll takes exactly one choice")
        if identity in poll.ballots:
            raise AlreadyVoted("one ballot per person")
        poll.ballots[identity] = Ballot(participant_id, name, tuple(sorted(choices)))
        return [
            PollCounts(
                stage=self.stage_id,
                at=now,
                poll_id=poll_id,
                counts=poll.counts(),
                ballots=len(poll.ballots),
                public_results=poll.spec.public_results,
            )
        ]

    def close(self, poll_id: str, now: float) -> list[Event]:
        poll = self.get(poll_id)
        if poll.status is not PollStatus.OPEN:
            raise PollClosed(f"poll {poll_id} is not open")
        return self._close(poll, now)

    def expire(self, now: float) -> list[Event]:
        """Close the open polls whose time has run out."""
        events: list[Event] = []
        for poll in list(self.polls.values()):
            if poll.status is PollStatus.OPEN and poll.closes_at is not None and now >= poll.closes_at:
                events += self._close(poll, now)
        return events

    def close_all(self, now: float) -> list[Event]:
        events: list[Event] = []
        for poll in list(self.polls.values()):
            if poll.status is PollStatus.OPEN:
                events += self._close(poll, now)
        return events

    def _close(self, poll: Poll, now: float) -> list[Event]:
        poll.status = PollStatus.CLOSED
        sid = self.stage_id
        events: list[Event] = [PollClosedEvent(stage=sid, at=now, poll=poll.view(moderator=False))]
        if not poll.spec.anonymous:
            events.append(PollVoters(stage=sid, at=now, poll_id=poll.id, voters=poll.voters()))
        if poll.spec.quiz:
            for identity, ballot in poll.ballots.items():
                score = self.scores.setdefault(identity, Score(ballot.participant_id, ballot.name))
                score.participant_id, score.name = ballot.participant_id, ballot.name
                right = poll.is_correct(ballot)
                score.points += right
                events.append(
                    QuizResult(
                        stage=sid,
                        at=now,
                        participant_id=ballot.participant_id,
                        poll_id=poll.id,
                        correct=right,
                        score=score.points,
                    )
                )
            events.append(QuizLeaderboard(stage=sid, at=now, entries=self.leaderboard()))
        return events

    def get(self, poll_id: str) -> Poll:
        poll = self.polls.get(poll_id)
        if poll is None:
            raise NotFound(f"no poll {poll_id}")
        return poll

    def leaderboard(self) -> tuple[LeaderboardEntry, ...]:
        """The top ``leaderboard_size`` quiz scores, best first; ties by name."""
        ranked = sorted(self.scores.values(), key=lambda s: (-s.points, s.name, s.participant_id))
        return tuple(
            LeaderboardEntry(participant_id=s.participant_id, name=s.name, score=s.points)
            for s in ranked[: self.leaderboard_size]
        )
