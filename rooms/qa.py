"""Questions: apart from comments, one upvote per person, answered or dismissed by moderators,
listed by votes, then by time."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rooms.comments import Author, check_text
from rooms.errors import AlreadyVoted, ChatMuted, InvalidMessage, NotAllowed, NotFound
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
    questions: dict[str, Question] = field(default_factory=dict)

    def ask(self, author: Author, question_id: str, text: str, now: float) -> list[Event]:
        check_text(text, self.max_chars, "question")
        if author.chat_muted and not author.exempt:
            raise ChatMuted("you are muted in the chat")
        if question_id in self.questions:
            raise InvalidMessage(f"question {question_id} already exists")
        question = Question(question_id, author.id, author.name, text, now, len(self.questions))
        self.questions[question_id] = question
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
        return [QuestionUpdated(stage=self.stage_id, at=now, question=question.view())]

    def get(self, question_id: str) -> Question:
        question = self.questions.get(question_id)
        if question is None:
            raise NotFound(f"no question {question_id}")
        return question

    def ordered(self) -> list[Question]:
        """By votes (most first), then by time (oldest first)."""
        return sorted(self.questions.values(), key=lambda q: (-len(q.voters), q.at, q.order))
