"""What a stage shows: its public snapshot, the ``state`` of ``joined`` as one person may see it, and
the pages of older comments and questions (``history.get``).

Reading changes nothing on the stage except the rate of ``history.get``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from rooms.errors import InvalidMessage
from rooms.participant import Participant
from rooms.polls import PollStatus
from rooms.qa import Question
from rooms.rates import RateClass
from rooms.roles import is_moderator as role_is_moderator
from rooms.stage_base import StageBase
from rooms.views import RecordingView

__all__ = ["Snapshots"]


class Snapshots(StageBase):
    """The reading side of ``rooms.stage.Stage``: snapshots and history pages."""

    def snapshot(self) -> dict[str, object]:
        return msgspec.to_builtins(self._view())  # type: ignore[no-any-return]

    def snapshot_for(self, participant_id: str) -> dict[str, object]:
        """The ``state`` of ``joined``: the stage as this person may see it (docs/protocol.md)."""
        person = self.get(participant_id)
        moderator = role_is_moderator(person.role)
        latest = self.settings.question_history
        questions = [self._question_for(person, q) for q in self.questions.ordered(latest)]
        polls: list[dict[str, Any]] = []
        for poll in self.polls.polls.values():
            if poll.status is PollStatus.DRAFT and not moderator:
                continue
            ballot = poll.ballots.get(person.identity)
            item: dict[str, Any] = msgspec.to_builtins(poll.view(moderator=moderator))
            item["my_choices"] = list(ballot.choices) if ballot else None
            if moderator and poll.status is PollStatus.CLOSED and not poll.spec.anonymous:
                item["voters"] = {pid: list(c) for pid, c in poll.voters().items()}
            polls.append(item)
        invitation = None if moderator else self.invitations.get(participant_id)
        return {
            "seq": self.log.last_seq,
            "comments": msgspec.to_builtins(self.chat.history()),
            "pinned": msgspec.to_builtins(self.chat.pinned_view()),
            "slow_mode_s": self.chat.slow_mode_s,
            "questions": questions,
            "more_comments": self.chat.more(),
            "more_questions": len(self.questions.questions) > latest,
            "hands": list(self.hands.queue()),
            "invitation": msgspec.to_builtins(invitation),
            "polls": polls,
            "leaderboard": msgspec.to_builtins(list(self.polls.leaderboard())),
            "recording": msgspec.to_builtins(self._recording_view()),
            "consent": self._consent_snapshot(person, moderator),
        }

    def _question_for(self, person: Participant, question: Question) -> dict[str, Any]:
        return {**msgspec.to_builtins(question.view()), "voted": person.identity in question.voters}

    def history(self, actor: str, kind: str, before: str | None, limit: int, now: float) -> dict[str, object]:
        """``history.get``: up to ``limit`` comments or questions older than ``before`` (an id; None:
        the latest), oldest first, and ``more``: whether older ones are kept. ``joined`` carries only
        the latest (``comment_history``, ``question_history``); this pages back through the rest."""
        person = self._actor(actor)
        self.rates.check(person.identity, RateClass.HISTORY, now)
        items: list[Any]
        if kind == "comments":
            comments, more = self.chat.page(before, limit)
            items = msgspec.to_builtins(comments)
        elif kind == "questions":
            questions, more = self.questions.page(before, limit)
            items = [self._question_for(person, q) for q in questions]
        else:
            raise InvalidMessage("history is of comments or questions")
        self.rates.spend(person.identity, RateClass.HISTORY, now)
        return {"kind": kind, "items": items, "more": more}

    def _recording_view(self) -> RecordingView:
        mode, session_id = self.settings.recording_mode, self.recording.session_id
        return RecordingView(mode=mode, active=session_id is not None, session_id=session_id)

    def _consent_snapshot(self, person: Participant, moderator: bool) -> dict[str, object]:
        policy = self.settings.consent_policy_version
        snapshot: dict[str, object] = {
            "policy_version": policy,
            "mine": self.consent.mine(person.identity, policy),
        }
        if moderator:
            present = {p.identity for p in self.participants.values()}
            snapshot["summary"] = self.consent.summary(present, policy)
        return msgspec.to_builtins(snapshot)  # type: ignore[no-any-return]
