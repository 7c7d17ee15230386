"""What people say on a stage: comments and reactions, questions, polls. ``comments.py``, ``qa.py``,
``polls.py`` and ``reactions.py`` keep their rules; this decides who may use them (roles, grants,
chat mutes) and counts each command against its rate.
"""

from __future__ import annotations

from rooms.comments import Author
from rooms.errors import ChatMuted
from rooms.events import Event, QuestionUpdated, Reactions
from rooms.polls import Ballot, PollSpec, Score
from rooms.qa import QuestionStatus
from rooms.rates import RateClass
from rooms.reactions import normalise
from rooms.roles import Permission, allows
from rooms.roles import is_moderator as role_is_moderator
from rooms.stage_base import StageBase, StageState

__all__ = ["Talk"]


class Talk(StageBase):
    """Comments, reactions, questions and polls of ``rooms.stage.Stage``."""

    # --- comments and reactions ----------------------------------------------------------------

    def post_comment(self, actor: str, comment_id: str, text: str, now: float) -> list[Event]:
        person = self._actor(actor, Permission.COMMENT)
        self.rates.check(person.identity, RateClass.COMMENT, now)
        posted = self._emit(self.chat.post(person.author(), comment_id, text, now))
        return self._spent(person.identity, RateClass.COMMENT, now, posted)

    def delete_comment(self, actor: str, comment_id: str, now: float) -> list[Event]:
        """By its author (the same identity) or a moderator; gone for everyone, history and pin included."""
        person = self._actor(actor)
        own = self._author_identity(comment_id) == person.identity
        may_delete_any = allows(person.role, Permission.DELETE_COMMENTS, person.grants)
        if not own and may_delete_any:  # one's own deletions are bounded by one's comments
            self.rates.check(person.identity, RateClass.MODERATION, now)
        events = self.chat.delete(person.author(), comment_id, may_delete_any, now)
        if own:
            return self._emit(events)
        return self._audited(person, "comment.delete", events, now, target=comment_id)

    def _author_identity(self, comment_id: str) -> str | None:
        """Whose comment this is (None: no such comment; ``chat.delete`` says so)."""
        comment = self.chat.comments.get(comment_id)
        pinned = self.chat.pinned
        if comment is None and pinned is not None and pinned.view.id == comment_id:
            comment = pinned
        return None if comment is None else comment.identity

    def erase_person(self, identity: str, now: float) -> list[Event]:
        """The person was erased (issue 15; the platform's decision, no actor): their comments are
        deleted for everyone, their questions keep their place and votes but lose text and author, and
        their upvotes on others' questions stay as anonymous counts."""
        nobody = Author("", "", "", exempt=True)
        theirs = [c.view.id for c in self.chat.comments.values() if c.identity == identity]
        pinned = self.chat.pinned
        if pinned is not None and pinned.identity == identity and pinned.view.id not in theirs:
            theirs.append(pinned.view.id)
        events: list[Event] = []
        for comment_id in theirs:
            events += self.chat.delete(nobody, comment_id, True, now)
        for n, question in enumerate(self.questions.questions.values()):
            changed = False
            if question.identity == identity and (question.text or question.author_name):
                question.text, question.author_name, question.identity = "", "", ""
                changed = True
            if identity in question.voters:
                question.voters.discard(identity)
                question.voters.add(f"erased:{now}:{n}")  # the count stays, not who
            if changed:
                events.append(QuestionUpdated(stage=self.id, at=now, question=question.view()))
        # Ballots and quiz scores stay in the counts and the leaderboard, without a name.
        anonymous = f"erased:{now}"
        for poll in self.polls.polls.values():
            ballot = poll.ballots.get(identity)
            if ballot is not None:
                poll.ballots = {
                    (anonymous if who == identity else who): (
                        Ballot(b.participant_id, "", b.choices) if who == identity else b
                    )
                    for who, b in poll.ballots.items()
                }  # the voting order kept
        score = self.polls.scores.pop(identity, None)
        if score is not None:
            self.polls.scores[anonymous] = Score(score.participant_id, "", score.points)
        return self._emit(events)

    def pin_comment(self, actor: str, comment_id: str | None, now: float) -> list[Event]:
        """Pin a comment, or unpin (``comment_id`` None: the audit record's target is null)."""
        me = self._moderator(actor, Permission.PIN_COMMENTS, now)
        return self._audited(me, "comment.pin", self.chat.pin(comment_id, now), now, target=comment_id)

    def react(self, actor: str, emoji: str, now: float) -> list[Event]:
        """Counted, not sent: ``flush_reactions`` sends the counts once per window."""
        person = self._actor(actor, Permission.REACT)
        emoji = normalise(emoji)
        if person.chat_muted and not role_is_moderator(person.role):
            raise ChatMuted("you are muted in the chat")
        self.rates.check(person.identity, RateClass.REACTION, now)
        self.reactions.add(emoji)
        return self._spent(person.identity, RateClass.REACTION, now, [])

    def flush_reactions(self, now: float) -> list[Event]:
        """One ``reactions`` event with the counts since the last flush, or nothing (no reactions, or
        less than ``reaction_window_s`` since the last one: the counts keep accumulating)."""
        counts = self.reactions.flush(now)
        if not counts:
            return []
        return self._emit([Reactions(stage=self.id, at=now, counts=counts)])

    # --- questions -----------------------------------------------------------------------------

    def ask_question(self, actor: str, question_id: str, text: str, now: float) -> list[Event]:
        person = self._actor(actor, Permission.ASK)
        self.rates.check(person.identity, RateClass.QUESTION, now)
        asked = self._emit(self.questions.ask(person.author(), question_id, text, now))
        return self._spent(person.identity, RateClass.QUESTION, now, asked)

    def upvote_question(self, actor: str, question_id: str, now: float) -> list[Event]:
        person = self._actor(actor, Permission.UPVOTE)
        self.rates.check(person.identity, RateClass.VOTE, now)
        upvoted = self._emit(self.questions.upvote(person.identity, question_id, now))
        return self._spent(person.identity, RateClass.VOTE, now, upvoted)

    def answer_question(self, actor: str, question_id: str, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.ANSWER_QUESTIONS, now)
        events = self.questions.set_status(question_id, QuestionStatus.ANSWERED, now)
        return self._audited(me, "question.answer", events, now, target=question_id)

    def dismiss_question(self, actor: str, question_id: str, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.ANSWER_QUESTIONS, now)
        events = self.questions.set_status(question_id, QuestionStatus.DISMISSED, now)
        return self._audited(me, "question.dismiss", events, now, target=question_id)

    # --- polls ---------------------------------------------------------------------------------

    def create_poll(self, actor: str, poll_id: str, spec: PollSpec, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.MANAGE_POLLS, now)
        events = self.polls.create(poll_id, spec, now)
        return self._audited(me, "poll.create", events, now, target=poll_id, question=spec.question)

    def open_poll(self, actor: str, poll_id: str, now: float) -> list[Event]:
        """Opens a draft; a duration starts counting now."""
        me = self._moderator(actor, Permission.MANAGE_POLLS, now)
        return self._audited(me, "poll.open", self.polls.open(poll_id, now), now, target=poll_id)

    def vote(self, actor: str, poll_id: str, choices: list[int], now: float) -> list[Event]:
        person = self._actor(actor, Permission.VOTE)
        self.rates.check(person.identity, RateClass.VOTE, now)
        voted = self._emit(self.polls.vote(person.identity, person.id, person.name, poll_id, choices, now))
        return self._spent(person.identity, RateClass.VOTE, now, voted)

    def close_poll(self, actor: str, poll_id: str, now: float) -> list[Event]:
        me = self._moderator(actor, Permission.MANAGE_POLLS, now)
        return self._audited(me, "poll.close", self.polls.close(poll_id, now), now, target=poll_id)

    def tick(self, now: float) -> list[Event]:
        """What time alone causes: polls whose duration ran out close."""
        if self.state is StageState.ENDED:
            return []
        return self._emit(self.polls.expire(now))
