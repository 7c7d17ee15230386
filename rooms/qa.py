"""Questions: apart from comments, one upvote per person, answered or dismissed by moderators,
listed by votes, then by time.

Bounded: at most ``max_open`` open questions on the stage and ``max_per_person`` per identity (beyond:
``too_many_questions``); of the answered and dismissed ones only the latest ``max_open`` are kept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rooms.comments import Author, check_text, page
from rooms.errors import AlreadyVoted, ChatMuted, InvalidMessage, NotAllowed, NotFound, TooManyQuestions
from rooms.events import Event, QuestionAsked, QuestionUpdated
from rooms.views import QuestionView


class QuestionStatus(enum.StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    DISMISSED = "dismissed"


@dataclass(slots=True)
class Question:
    id: str
    author_id: str
    author_name: str
    text: str
    at: float
    order: int  # ties in votes and time keep the order of asking
    status: QuestionStatus = QuestionStatus.OPEN
    voters: set[str] = field(default_factory=set)  # identities
    identity: str = ""  # of its author: bounds the open questions per person

    def view(self) -> QuestionView:
        return QuestionView(
            id=self.id,
            author_id=self.author_id,
            author_name=self.author_name,
            text=self.text,
            votes=len(self.voters),
            status=str(self.status),
            at=self.at,
        )


@dataclass(slots=True)
class Questions:
    stage_id: str
    max_chars: int
    max_open: int = 200
    max_per_person: int = 3
    questions: dict[str, Question] = field(default_factory=dict)  # in the order they were asked
    asked: int = 0  # questions ever asked: the next one's ``order``

    def ask(self, author: Author, question_id: str, text: str, now: float) -> list[Event]:
        check_text(text, self.max_chars, "question")
        if author.chat_muted and not author.exempt:
            raise ChatMuted("you are muted in the chat")
        if question_id in self.questions:
            raise InvalidMessage(f"question {question_id} already exists")
        open_ = [q for q in self.questions.values() if q.status is QuestionStatus.OPEN]
        if len(open_) >= self.max_open:
            raise TooManyQuestions(
                f"the stage has {len(open_)} open questions, as many as it takes: ask again once some "
                "are answered"
            )
        if sum(q.identity == author.identity for q in open_) >= self.max_per_person:
            raise TooManyQuestions(
                f"you have {self.max_per_person} open questions, as many as one person may: ask again "
                "once one is answered"
            )
        question = Question(
            question_id, author.id, author.name, text, now, self.asked, identity=author.identity
        )
        self.questions[question_id] = question
        self.asked += 1
        return [QuestionAsked(stage=self.stage_id, at=now, question=question.view())]

    def upvote(self, identity: str, question_id: str, now: float) -> list[Event]:
        question = self.get(question_id)
        if question.status is not QuestionStatus.OPEN:
            raise NotAllowed(f"question {question_id} is {question.status}")
        if identity in question.voters:
            raise AlreadyVoted("one upvote per person")
        question.voters.add(identity)
        return [QuestionUpdated(stage=self.stage_id, at=now, question=question.view())]

    def set_status(self, question_id: str, status: QuestionStatus, now: float) -> list[Event]:
        question = self.get(question_id)
        if question.status is status:
            return []
        question.status = status
        self._forget_old_closed()
        return [QuestionUpdated(stage=self.stage_id, at=now, question=question.view())]

    def _forget_old_closed(self) -> None:
        """Keep the latest ``max_open`` answered or dismissed questions (the stage's memory stays
        bounded; the recording's timeline has them all)."""
        closed = [qid for qid, q in self.questions.items() if q.status is not QuestionStatus.OPEN]
        for qid in closed[: max(0, len(closed) - self.max_open)]:
            del self.questions[qid]

    def get(self, question_id: str) -> Question:
        question = self.questions.get(question_id)
        if question is None:
            raise NotFound(f"no question {question_id}")
        return question

    def ordered(self, latest: int | None = None) -> list[Question]:
        """By votes (most first), then by time (oldest first); of the ``latest`` asked only, if given."""
        questions = list(self.questions.values())
        if latest is not None:
            questions = questions[-latest:] if latest else []
        return sorted(questions, key=lambda q: (-len(q.voters), q.at, q.order))

    def page(self, before: str | None, limit: int) -> tuple[list[Question], bool]:
        """Up to ``limit`` questions asked before ``before`` (None: the latest), in the order they were
        asked, and whether older ones are kept."""
        return page(self.questions, before, limit, "question")
